//! Owns the diesel implementation of the upstream part of [`Store`](crate::storage::Store): account
//! links, pending upstream requests, spent SAML assertions and upstream sessions.

use diesel::prelude::*;

use super::super::schema::{
    saml_assertions, upstream_links, upstream_requests, upstream_sessions, users,
};
use super::super::{StorageError, UpstreamRequest, UpstreamSessionRecord, User};
use super::users::UserRow;
use super::{DieselStore, Pools, checkout, hash32, query_err};
use crate::clock::UnixTime;
use crate::domain::UserId;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

impl DieselStore {
    pub(super) fn upstream_link(
        &self,
        upstream: &str,
        subject: &str,
    ) -> Result<Option<UserId>, StorageError> {
        let id: Option<String> = with_conn!(self, |c| {
            upstream_links::table
                .find((upstream, subject))
                .select(upstream_links::user_id)
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(id.map(UserId::from_stored))
    }

    pub(super) fn insert_upstream_link(
        &self,
        upstream: &str,
        subject: &str,
        user: &UserId,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(upstream_links::table)
                .values((
                    upstream_links::upstream.eq(upstream),
                    upstream_links::subject.eq(subject),
                    upstream_links::user_id.eq(user.as_str()),
                    upstream_links::created_at.eq(now),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn insert_user_with_link(
        &self,
        user: &User,
        upstream: &str,
        subject: &str,
    ) -> Result<(), StorageError> {
        let row = UserRow::from_user(user);
        with_conn!(write self, |c| {
            c.transaction(|c| {
                diesel::insert_into(users::table).values(&row).execute(c)?;
                diesel::insert_into(upstream_links::table)
                    .values((
                        upstream_links::upstream.eq(upstream),
                        upstream_links::subject.eq(subject),
                        upstream_links::user_id.eq(user.id.as_str()),
                        upstream_links::created_at.eq(user.created_at),
                    ))
                    .execute(c)
                    .map(|_| ())
            })
            .map_err(query_err)
        })
    }

    pub(super) fn insert_upstream_request(&self, r: &UpstreamRequest) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(upstream_requests::table)
                .values((
                    upstream_requests::state_hash.eq(&r.state_hash[..]),
                    upstream_requests::upstream.eq(&r.upstream),
                    upstream_requests::binding_hash.eq(&r.binding_hash[..]),
                    upstream_requests::journey_hash.eq(&r.journey_hash[..]),
                    upstream_requests::pending.eq(&r.pending),
                    upstream_requests::expires_at.eq(r.expires_at),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError> {
        let row: Option<RequestRow> = with_conn!(self, |c| {
            upstream_requests::table
                .find(&state_hash[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        live_request(row, now)
    }

    pub(super) fn take_upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError> {
        // Read, then delete by key: the row is this call's only if its delete removed it (a
        // concurrent taker that read it too deletes nothing: READ COMMITTED waits for the first
        // delete, then finds the row gone).
        macro_rules! take {
            ($c:expr) => {{
                let row: Option<RequestRow> = upstream_requests::table
                    .find(&state_hash[..])
                    .first($c)
                    .optional()?;
                match row {
                    Some(r) => {
                        let deleted =
                            diesel::delete(upstream_requests::table.find(&state_hash[..]))
                                .execute($c)?;
                        Ok((deleted == 1).then_some(r))
                    }
                    None => Ok(None),
                }
            }};
        }
        let row: Option<RequestRow> = write_transaction!(self, |c| take!(c)).map_err(query_err)?;
        live_request(row, now)
    }

    pub(super) fn use_saml_assertion(
        &self,
        upstream: &str,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                // A record past its expiry no longer blocks (the sweeper may not have run yet).
                diesel::delete(
                    saml_assertions::table
                        .find((upstream, assertion_id))
                        .filter(saml_assertions::expires_at.le(now)),
                )
                .execute(c)?;
                diesel::insert_into(saml_assertions::table)
                    .values((
                        saml_assertions::upstream.eq(upstream),
                        saml_assertions::assertion_id.eq(assertion_id),
                        saml_assertions::expires_at.eq(expires_at),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)
                    .map(|n| n == 1)
            })
            .map_err(query_err)
        })
    }

    pub(super) fn insert_upstream_session(
        &self,
        s: &UpstreamSessionRecord,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(upstream_sessions::table)
                .values(s)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn upstream_session(
        &self,
        sid: &str,
    ) -> Result<Option<UpstreamSessionRecord>, StorageError> {
        with_conn!(self, |c| {
            upstream_sessions::table
                .find(sid)
                .first(c)
                .optional()
                .map_err(query_err)
        })
    }

    pub(super) fn upstream_sessions_by_name_id(
        &self,
        upstream: &str,
        name_id: &str,
    ) -> Result<Vec<UpstreamSessionRecord>, StorageError> {
        with_conn!(self, |c| {
            upstream_sessions::table
                .filter(upstream_sessions::upstream.eq(upstream))
                .filter(upstream_sessions::name_id.eq(name_id))
                .load(c)
                .map_err(query_err)
        })
    }
}

/// A pending upstream login as stored.
type RequestRow = (Vec<u8>, String, Vec<u8>, Vec<u8>, String, i64);

/// The pending login of `row`, unless it expired by `now`.
fn live_request(
    row: Option<RequestRow>,
    now: UnixTime,
) -> Result<Option<UpstreamRequest>, StorageError> {
    let Some((sh, upstream, bh, jh, pending, expires_at)) = row else {
        return Ok(None);
    };
    if now >= expires_at {
        return Ok(None);
    }
    Ok(Some(UpstreamRequest {
        state_hash: hash32(sh, "upstream_requests.state_hash")?,
        upstream,
        binding_hash: hash32(bh, "upstream_requests.binding_hash")?,
        journey_hash: hash32(jh, "upstream_requests.journey_hash")?,
        pending,
        expires_at,
    }))
}
