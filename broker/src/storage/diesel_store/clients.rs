//! Owns the diesel implementation of the registered clients in [`Store`](crate::storage::Store).

use diesel::prelude::*;

use super::super::StorageError;
use super::super::schema::clients;
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

impl DieselStore {
    pub(super) fn insert_client(
        &self,
        id: &str,
        config_json: &str,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(clients::table)
                .values((
                    clients::id.eq(id),
                    clients::config.eq(config_json),
                    clients::created_at.eq(now),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(|e| match query_err(e) {
                    StorageError::Conflict(_) => StorageError::Conflict("a client with this id"),
                    other => other,
                })
        })
    }

    pub(super) fn client_config(&self, id: &str) -> Result<Option<String>, StorageError> {
        with_conn!(self, |c| {
            clients::table
                .find(id)
                .select(clients::config)
                .first::<String>(c)
                .optional()
                .map_err(query_err)
        })
    }

    pub(super) fn list_clients(&self) -> Result<Vec<(String, String)>, StorageError> {
        with_conn!(self, |c| {
            clients::table
                .order(clients::id.asc())
                .select((clients::id, clients::config))
                .load::<(String, String)>(c)
                .map_err(query_err)
        })
    }

    pub(super) fn delete_client(&self, id: &str) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(clients::table.find(id))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }
}
