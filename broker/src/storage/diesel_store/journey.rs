//! Owns the diesel implementation of [`JourneyStore`] for both backends.

use diesel::prelude::*;

use super::super::schema::login_transactions as lt;
use super::super::{JourneyStore, LoginTransactionRow, StorageError};
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

type Row = (
    Vec<u8>,
    i64,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
);

impl JourneyStore for DieselStore {
    fn finish_login_transactions_of(
        &self,
        binding_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<usize, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(
                lt::table
                    .filter(lt::binding_hash.eq(&binding_hash[..]))
                    .filter(lt::finished_at.is_null()),
            )
            .set((
                lt::version.eq(lt::version + 1),
                lt::finished_at.eq(Some(now)),
                lt::updated_at.eq(now),
            ))
            .execute(c)
            .map_err(query_err)
        })
    }

    fn insert_login_transaction(&self, row: &LoginTransactionRow) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(lt::table)
                .values((
                    lt::id_hash.eq(&row.id_hash[..]),
                    lt::version.eq(row.version),
                    lt::state.eq(&row.state),
                    lt::created_at.eq(row.created_at),
                    lt::updated_at.eq(row.updated_at),
                    lt::expires_at.eq(row.expires_at),
                    lt::finished_at.eq(row.finished_at),
                    lt::binding_hash.eq(row.binding_hash.as_ref().map(|h| &h[..])),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn login_transaction(
        &self,
        id_hash: &[u8; 32],
    ) -> Result<Option<LoginTransactionRow>, StorageError> {
        let row: Option<Row> = with_conn!(self, |c| {
            lt::table
                .find(&id_hash[..])
                .select((
                    lt::id_hash,
                    lt::version,
                    lt::state,
                    lt::created_at,
                    lt::updated_at,
                    lt::expires_at,
                    lt::finished_at,
                    lt::binding_hash,
                ))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(row.map(
            |(_, version, state, created_at, updated_at, expires_at, finished_at, binding)| {
                LoginTransactionRow {
                    id_hash: *id_hash,
                    version,
                    state,
                    created_at,
                    updated_at,
                    expires_at,
                    finished_at,
                    binding_hash: binding.and_then(|b| <[u8; 32]>::try_from(b).ok()),
                }
            },
        ))
    }

    fn update_login_transaction(
        &self,
        id_hash: &[u8; 32],
        expected: i64,
        state: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        // One conditional UPDATE: the row lock (PostgreSQL) or the single writer (SQLite) makes
        // the version check and the write one step, so of racing writers exactly one matches.
        let n = with_conn!(write self, |c| {
            diesel::update(
                lt::table
                    .find(&id_hash[..])
                    .filter(lt::version.eq(expected))
                    .filter(lt::finished_at.is_null()),
            )
            .set((
                lt::version.eq(expected.saturating_add(1)),
                lt::state.eq(state),
                lt::updated_at.eq(now),
                lt::expires_at.eq(expires_at),
            ))
            .execute(c)
            .map_err(query_err)
        })?;
        Ok(n == 1)
    }

    fn finish_login_transaction(
        &self,
        id_hash: &[u8; 32],
        expected: i64,
        state: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        let n = with_conn!(write self, |c| {
            let target = lt::table
                .find(&id_hash[..])
                .filter(lt::version.eq(expected))
                .filter(lt::finished_at.is_null());
            let done = (
                lt::version.eq(expected.saturating_add(1)),
                lt::finished_at.eq(Some(now)),
                lt::updated_at.eq(now),
            );
            match state {
                Some(s) => diesel::update(target)
                    .set((done, lt::state.eq(s)))
                    .execute(c),
                None => diesel::update(target).set(done).execute(c),
            }
            .map_err(query_err)
        })?;
        Ok(n == 1)
    }

    fn rekey_login_transaction(
        &self,
        id_hash: &[u8; 32],
        expected: i64,
        new_hash: &[u8; 32],
        state: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        let n = with_conn!(write self, |c| {
            diesel::update(
                lt::table
                    .find(&id_hash[..])
                    .filter(lt::version.eq(expected))
                    .filter(lt::finished_at.is_null()),
            )
            .set((
                lt::id_hash.eq(&new_hash[..]),
                lt::state.eq(state),
                lt::version.eq(expected.saturating_add(1)),
                lt::updated_at.eq(now),
            ))
            .execute(c)
            .map_err(query_err)
        })?;
        Ok(n == 1)
    }
}
