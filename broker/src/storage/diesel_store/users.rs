//! Owns the diesel implementation of the user accounts part of [`Store`](crate::storage::Store):
//! insert, look up by email or id, password hash and disabled flag.

use diesel::prelude::*;

use super::super::schema::users;
use super::super::{StorageError, User};
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use crate::domain::{Email, UserId};
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

#[derive(Queryable, Insertable)]
#[diesel(table_name = users)]
pub(super) struct UserRow {
    id: String,
    email: String,
    name: String,
    password_hash: Option<String>,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
    tokens_valid_after: i64,
}

impl UserRow {
    pub(super) fn from_user(u: &User) -> Self {
        Self {
            id: u.id.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
            tokens_valid_after: u.tokens_valid_after,
        }
    }
    fn into_user(self) -> Result<User, StorageError> {
        Ok(User {
            email: Email::parse(&self.email)
                .map_err(|e| StorageError::Corrupt(format!("users.email: {e}")))?,
            id: UserId::from_stored(self.id),
            name: self.name,
            password_hash: self.password_hash,
            disabled: self.disabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
            tokens_valid_after: self.tokens_valid_after,
        })
    }
}

impl DieselStore {
    pub(super) fn insert_user(&self, user: &User) -> Result<(), StorageError> {
        let row = UserRow::from_user(user);
        with_conn!(write self, |c| {
            diesel::insert_into(users::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(|e| match query_err(e) {
                    StorageError::Conflict(_) => StorageError::Conflict("a user with this email"),
                    other => other,
                })
        })
    }

    pub(super) fn user_by_email(&self, email: &Email) -> Result<Option<User>, StorageError> {
        let row: Option<UserRow> = with_conn!(self, |c| {
            users::table
                .filter(users::email.eq(email.as_str()))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(UserRow::into_user).transpose()
    }

    pub(super) fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StorageError> {
        let row: Option<UserRow> = with_conn!(self, |c| {
            users::table
                .find(id.as_str())
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(UserRow::into_user).transpose()
    }

    pub(super) fn set_password_hash(
        &self,
        id: &UserId,
        hash: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(users::table.find(id.as_str()))
                .set((
                    users::password_hash.eq(Some(hash)),
                    users::updated_at.eq(now),
                ))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    pub(super) fn set_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(users::table.find(id.as_str()))
                .set((users::disabled.eq(disabled), users::updated_at.eq(now)))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }
}
