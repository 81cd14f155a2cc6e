//! Owns the diesel implementation of logout in [`Store`](crate::storage::Store): the clients of a
//! session, the back-channel delivery outbox, and logout continuations.

use diesel::prelude::*;

use super::super::schema::{logout_continuations, logout_deliveries, session_clients};
use super::super::{LogoutContinuation, LogoutDelivery, StorageError};
use super::{DieselStore, Pools, checkout, hash32, query_err};
use crate::clock::UnixTime;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

impl DieselStore {
    pub(super) fn add_session_client(
        &self,
        sid: &str,
        client_id: &str,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(session_clients::table)
                .values((
                    session_clients::sid.eq(sid),
                    session_clients::client_id.eq(client_id),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn session_clients(&self, sid: &str) -> Result<Vec<String>, StorageError> {
        with_conn!(self, |c| {
            session_clients::table
                .filter(session_clients::sid.eq(sid))
                .select(session_clients::client_id)
                .order(session_clients::client_id)
                .load::<String>(c)
                .map_err(query_err)
        })
    }

    pub(super) fn take_session_clients(&self, sid: &str) -> Result<Vec<String>, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                let ids = session_clients::table
                    .filter(session_clients::sid.eq(sid))
                    .select(session_clients::client_id)
                    .load::<String>(c)?;
                diesel::delete(session_clients::table.filter(session_clients::sid.eq(sid)))
                    .execute(c)?;
                Ok(ids)
            })
            .map_err(query_err)
        })
    }

    pub(super) fn enqueue_logout(&self, delivery: &LogoutDelivery) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(logout_deliveries::table)
                .values(delivery)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn due_logouts(
        &self,
        now: UnixTime,
        limit: i64,
    ) -> Result<Vec<LogoutDelivery>, StorageError> {
        with_conn!(self, |c| {
            logout_deliveries::table
                .filter(logout_deliveries::next_attempt_at.le(now))
                .order(logout_deliveries::next_attempt_at.asc())
                .limit(limit)
                .load::<LogoutDelivery>(c)
                .map_err(query_err)
        })
    }

    pub(super) fn claim_logout(
        &self,
        id: &str,
        seen: UnixTime,
        lease_until: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(
                logout_deliveries::table
                    .filter(logout_deliveries::id.eq(id))
                    .filter(logout_deliveries::next_attempt_at.eq(seen)),
            )
            .set(logout_deliveries::next_attempt_at.eq(lease_until))
            .execute(c)
            .map(|n| n == 1)
            .map_err(query_err)
        })
    }

    pub(super) fn delete_logout(&self, id: &str) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(logout_deliveries::table.find(id))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn reschedule_logout(
        &self,
        id: &str,
        attempts: i64,
        next_attempt_at: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::update(logout_deliveries::table.find(id))
                .set((
                    logout_deliveries::attempts.eq(attempts),
                    logout_deliveries::next_attempt_at.eq(next_attempt_at),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn insert_logout_continuation(
        &self,
        l: &LogoutContinuation,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(logout_continuations::table)
                .values((
                    logout_continuations::relay_hash.eq(&l.relay_hash[..]),
                    logout_continuations::upstream.eq(&l.upstream),
                    logout_continuations::request_id.eq(&l.request_id),
                    logout_continuations::then_url.eq(&l.then),
                    logout_continuations::expires_at.eq(l.expires_at),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn take_logout_continuation(
        &self,
        relay_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<LogoutContinuation>, StorageError> {
        type Row = (Vec<u8>, String, String, String, i64);
        // As take_upstream_request: read, then delete by key; the row is this call's only if
        // its delete removed it.
        macro_rules! take {
            ($c:expr) => {{
                let row: Option<Row> = logout_continuations::table
                    .find(&relay_hash[..])
                    .first($c)
                    .optional()?;
                match row {
                    Some(r) => {
                        let deleted =
                            diesel::delete(logout_continuations::table.find(&relay_hash[..]))
                                .execute($c)?;
                        Ok((deleted == 1).then_some(r))
                    }
                    None => Ok(None),
                }
            }};
        }
        let row: Option<Row> = write_transaction!(self, |c| take!(c)).map_err(query_err)?;
        let Some((rh, upstream, request_id, then, expires_at)) = row else {
            return Ok(None);
        };
        if now >= expires_at {
            return Ok(None);
        }
        Ok(Some(LogoutContinuation {
            relay_hash: hash32(rh, "logout_continuations.relay_hash")?,
            upstream,
            request_id,
            then,
            expires_at,
        }))
    }
}
