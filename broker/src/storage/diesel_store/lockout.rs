//! Owns the diesel implementation of login lockout in [`Store`](crate::storage::Store): failure
//! counts and locks.

use diesel::prelude::*;

use super::super::schema::login_failures;
use super::super::{LoginLock, StorageError};
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

impl DieselStore {
    pub(super) fn login_lock(&self, account: &str) -> Result<Option<LoginLock>, StorageError> {
        let row: Option<(i64, i64, i64)> = with_conn!(self, |c| {
            login_failures::table
                .find(account)
                .select((
                    login_failures::failures,
                    login_failures::last_failure_at,
                    login_failures::locked_until,
                ))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(
            row.map(|(failures, last_failure_at, locked_until)| LoginLock {
                failures,
                last_failure_at,
                locked_until,
            }),
        )
    }

    pub(super) fn record_login_failure(
        &self,
        account: &str,
        now: UnixTime,
        window_start: UnixTime,
        lock_until: &dyn Fn(i64) -> UnixTime,
    ) -> Result<LoginLock, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                diesel::insert_into(login_failures::table)
                    .values((
                        login_failures::account.eq(account),
                        login_failures::failures.eq(0i64),
                        login_failures::last_failure_at.eq(now),
                        login_failures::locked_until.eq(0i64),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)?;
                // The row lock taken by the first update serialises concurrent failures.
                diesel::update(
                    login_failures::table
                        .find(account)
                        .filter(login_failures::last_failure_at.lt(window_start)),
                )
                .set(login_failures::failures.eq(0i64))
                .execute(c)?;
                diesel::update(login_failures::table.find(account))
                    .set((
                        login_failures::failures.eq(login_failures::failures + 1i64),
                        login_failures::last_failure_at.eq(now),
                    ))
                    .execute(c)?;
                let (failures, locked_until): (i64, i64) = login_failures::table
                    .find(account)
                    .select((login_failures::failures, login_failures::locked_until))
                    .first(c)?;
                let locked_until = locked_until.max(lock_until(failures));
                diesel::update(login_failures::table.find(account))
                    .set(login_failures::locked_until.eq(locked_until))
                    .execute(c)?;
                Ok(LoginLock {
                    failures,
                    last_failure_at: now,
                    locked_until,
                })
            })
            .map_err(query_err)
        })
    }

    pub(super) fn clear_login_failures(&self, account: &str) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(login_failures::table.find(account))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn delete_login_failures_before(
        &self,
        before: UnixTime,
    ) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(
                login_failures::table
                    .filter(login_failures::last_failure_at.lt(before))
                    .filter(login_failures::locked_until.lt(before)),
            )
            .execute(c)
            .map(|n| n as u64)
            .map_err(query_err)
        })
    }
}
