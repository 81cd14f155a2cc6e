//! Owns the diesel implementation of first-party sessions in [`Store`](crate::storage::Store):
//! capped insert, look-ups, touch, expiry, the token epoch and the upstream claims of a session.

use diesel::prelude::*;

use super::super::schema::{refresh_tokens, session_clients, sessions, upstream_links, users};
use super::super::{
    CappedInsert, SessionCap, SessionKey, SessionRecord, StorageError, UpstreamClaims,
};
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use crate::domain::{Channel, UserId};
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

#[derive(Queryable, Insertable)]
#[diesel(table_name = sessions)]
struct SessionRow {
    id_hash: Vec<u8>,
    user_id: String,
    channel: String,
    user_agent: String,
    ip: String,
    upstream: String,
    amr: String,
    auth_time: i64,
    last_seen: i64,
    idle_timeout: i64,
    expires_at: i64,
    sid: String,
    upstream_acr: Option<String>,
}

impl SessionRow {
    /// [`SessionRecord::is_live`] on the stored fields.
    fn is_live(&self, now: UnixTime) -> bool {
        now < self.expires_at && now.saturating_sub(self.last_seen) < self.idle_timeout
    }
    fn from_record(s: &SessionRecord) -> Self {
        Self {
            id_hash: s.key.to_vec(),
            user_id: s.user_id.as_str().to_owned(),
            channel: s.channel.as_str().to_owned(),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            upstream: s.upstream.clone(),
            amr: s.amr.join(" "),
            auth_time: s.auth_time,
            last_seen: s.last_seen,
            idle_timeout: s.idle_timeout,
            expires_at: s.expires_at,
            sid: s.sid.clone(),
            upstream_acr: s.upstream_acr.clone(),
        }
    }
    fn into_record(self) -> Result<SessionRecord, StorageError> {
        let key: SessionKey = self
            .id_hash
            .as_slice()
            .try_into()
            .map_err(|_| StorageError::Corrupt("sessions.id_hash is not 32 bytes".into()))?;
        Ok(SessionRecord {
            key,
            sid: self.sid,
            user_id: UserId::from_stored(self.user_id),
            channel: Channel::parse(&self.channel)
                .map_err(|e| StorageError::Corrupt(format!("sessions.channel: {e}")))?,
            user_agent: self.user_agent,
            ip: self.ip,
            upstream: self.upstream,
            amr: self.amr.split_whitespace().map(str::to_owned).collect(),
            auth_time: self.auth_time,
            last_seen: self.last_seen,
            idle_timeout: self.idle_timeout,
            expires_at: self.expires_at,
            upstream_acr: self.upstream_acr,
        })
    }
}

impl DieselStore {
    pub(super) fn insert_session(&self, session: &SessionRecord) -> Result<(), StorageError> {
        let row = SessionRow::from_record(session);
        with_conn!(write self, |c| {
            diesel::insert_into(sessions::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn insert_session_within(
        &self,
        session: &SessionRecord,
        cap: &SessionCap,
    ) -> Result<CappedInsert, StorageError> {
        let row = SessionRow::from_record(session);
        let channel = cap.channel.map(|c| c.as_str().to_owned());
        let max = cap.max.max(1);
        // Count, end the oldest and insert under one lock per user: `Ok(None)` is "inserted",
        // `Err` carries the evicted rows (oldest first) or, when full, the live ones.
        macro_rules! capped {
            ($c:expr) => {{
                let live: Vec<SessionRow> = sessions::table
                    .filter(sessions::user_id.eq(&row.user_id))
                    .order((sessions::auth_time.asc(), sessions::sid.asc()))
                    .load::<SessionRow>($c)?
                    .into_iter()
                    .filter(|r| r.is_live(cap.now))
                    .filter(|r| channel.as_ref().is_none_or(|ch| &r.channel == ch))
                    .collect();
                if live.len() < max {
                    diesel::insert_into(sessions::table)
                        .values(&row)
                        .execute($c)?;
                    Ok((true, Vec::new()))
                } else if !cap.evict_oldest {
                    Ok((false, live))
                } else {
                    let excess = live.len() + 1 - max;
                    let evicted: Vec<SessionRow> = live.into_iter().take(excess).collect();
                    let keys: Vec<&[u8]> = evicted.iter().map(|r| r.id_hash.as_slice()).collect();
                    let sids: Vec<&str> = evicted.iter().map(|r| r.sid.as_str()).collect();
                    diesel::delete(sessions::table.filter(sessions::id_hash.eq_any(&keys)))
                        .execute($c)?;
                    diesel::delete(refresh_tokens::table.filter(refresh_tokens::sid.eq_any(&sids)))
                        .execute($c)?;
                    diesel::insert_into(sessions::table)
                        .values(&row)
                        .execute($c)?;
                    Ok((true, evicted))
                }
            }};
        }
        let (inserted, rows): (bool, Vec<SessionRow>) = match &self.pools {
            Pools::Sqlite(pool) => {
                let _writer = self.writer.as_ref().map(|m| match m.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                });
                let mut c = checkout(&self.health, pool, None)?;
                // IMMEDIATE: the write lock is taken before the count (other processes too).
                c.immediate_transaction(|c| capped!(c)).map_err(query_err)?
            }
            Pools::Postgres(pool) => {
                let mut c = checkout(&self.health, pool, None)?;
                c.transaction(|c| {
                    // Sign-ins of one user queue here until this one commits.
                    users::table
                        .find(&row.user_id)
                        .select(users::id)
                        .for_update()
                        .first::<String>(c)
                        .optional()?;
                    capped!(c)
                })
                .map_err(query_err)?
            }
        };
        let records = rows
            .into_iter()
            .map(SessionRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if inserted {
            CappedInsert::Inserted { evicted: records }
        } else {
            CappedInsert::Full(records)
        })
    }

    pub(super) fn session(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StorageError> {
        let row: Option<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .find(&key[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(SessionRow::into_record).transpose()
    }

    pub(super) fn sessions_of_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<SessionRecord>, StorageError> {
        let rows: Vec<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .filter(sessions::user_id.eq(user.as_str()))
                .order(sessions::auth_time.asc())
                .load(c)
                .map_err(query_err)
        })?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    pub(super) fn touch_sessions(
        &self,
        touches: &[(SessionKey, UnixTime)],
    ) -> Result<(), StorageError> {
        if touches.is_empty() {
            return Ok(());
        }
        match &self.pools {
            // One statement per chunk: a round trip per session made a busy instance's flush
            // slower than the touches it records (BENCHMARKS.md, sessions at scale), and held
            // every row lock of the batch for that long. Chunks are their own transactions.
            Pools::Postgres(pool) => {
                use diesel::sql_types::{Array, BigInt, Binary};
                let mut c = checkout(&self.health, pool, None)?;
                for chunk in touches.chunks(1_000) {
                    let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, _)| k.to_vec()).collect();
                    let times: Vec<i64> = chunk.iter().map(|(_, t)| *t).collect();
                    diesel::sql_query(
                        "UPDATE sessions AS s SET last_seen = t.at \
                         FROM unnest($1::bytea[], $2::bigint[]) AS t(key, at) \
                         WHERE s.id_hash = t.key AND s.last_seen < t.at",
                    )
                    .bind::<Array<Binary>, _>(keys)
                    .bind::<Array<BigInt>, _>(times)
                    .execute(&mut c)
                    .map_err(query_err)?;
                }
                Ok(())
            }
            Pools::Sqlite(_) => with_conn!(write self, |c| {
                c.transaction(|c| {
                    for (key, at) in touches {
                        diesel::update(
                            sessions::table
                                .filter(sessions::id_hash.eq(&key[..]))
                                .filter(sessions::last_seen.lt(*at)),
                        )
                        .set(sessions::last_seen.eq(*at))
                        .execute(c)?;
                    }
                    Ok(())
                })
                .map_err(query_err)
            }),
        }
    }

    pub(super) fn delete_session(&self, key: &SessionKey) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(sessions::table.find(&key[..]))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    pub(super) fn delete_user_sessions(&self, user: &UserId) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(sessions::table.filter(sessions::user_id.eq(user.as_str())))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    pub(super) fn sessions_of_client(
        &self,
        client_id: &str,
    ) -> Result<Vec<SessionRecord>, StorageError> {
        let rows: Vec<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .filter(
                    sessions::sid.eq_any(
                        session_clients::table
                            .filter(session_clients::client_id.eq(client_id))
                            .select(session_clients::sid),
                    ),
                )
                .order(sessions::auth_time.asc())
                .load(c)
                .map_err(query_err)
        })?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    pub(super) fn all_sessions(&self, limit: i64) -> Result<Vec<SessionRecord>, StorageError> {
        let rows: Vec<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .order(sessions::auth_time.asc())
                .limit(limit)
                .load(c)
                .map_err(query_err)
        })?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    pub(super) fn set_tokens_valid_after(
        &self,
        user: &UserId,
        at: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            let exists = users::table
                .find(user.as_str())
                .select(users::id)
                .first::<String>(c)
                .optional()
                .map_err(query_err)?
                .is_some();
            diesel::update(users::table.find(user.as_str()).filter(users::tokens_valid_after.lt(at)))
                .set(users::tokens_valid_after.eq(at))
                .execute(c)
                .map_err(query_err)?;
            Ok(exists)
        })
    }

    pub(super) fn delete_expired_sessions(
        &self,
        now: UnixTime,
        grace_secs: i64,
    ) -> Result<u64, StorageError> {
        let idle_cutoff = now.saturating_sub(grace_secs);
        with_conn!(write self, |c| {
            diesel::delete(
                sessions::table.filter(
                    sessions::expires_at
                        .le(now)
                        .or((sessions::last_seen + sessions::idle_timeout).le(idle_cutoff)),
                ),
            )
            .execute(c)
            .map(|n| n as u64)
            .map_err(query_err)
        })
    }

    pub(super) fn take_expired_sessions(
        &self,
        now: UnixTime,
        grace_secs: i64,
        limit: i64,
    ) -> Result<Vec<SessionRecord>, StorageError> {
        let idle_cutoff = now.saturating_sub(grace_secs);
        // Read the expired ones, then delete each by key under the same condition: a session is
        // this call's only if its delete removed it (another instance's sweep, or the request
        // that found it expired, deletes nothing then). Keys in order: no lock cycles.
        macro_rules! take {
            ($c:expr) => {{
                let expired = || {
                    sessions::expires_at
                        .le(now)
                        .or((sessions::last_seen + sessions::idle_timeout).le(idle_cutoff))
                };
                let rows: Vec<SessionRow> = sessions::table
                    .filter(expired())
                    .order(sessions::id_hash.asc())
                    .limit(limit)
                    .load($c)?;
                let mut taken = Vec::new();
                for row in rows {
                    let deleted = diesel::delete(
                        sessions::table
                            .filter(sessions::id_hash.eq(&row.id_hash))
                            .filter(expired()),
                    )
                    .execute($c)?;
                    if deleted == 1 {
                        taken.push(row);
                    }
                }
                Ok::<_, diesel::result::Error>(taken)
            }};
        }
        let rows: Vec<SessionRow> = write_transaction!(self, |c| take!(c)).map_err(query_err)?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    pub(super) fn session_by_sid(&self, sid: &str) -> Result<Option<SessionRecord>, StorageError> {
        let row: Option<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .filter(sessions::sid.eq(sid))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(SessionRow::into_record).transpose()
    }

    pub(super) fn set_upstream_claims(
        &self,
        upstream: &str,
        subject: &str,
        claims: &UpstreamClaims,
    ) -> Result<(), StorageError> {
        let corrupt = |e: serde_json::Error| StorageError::Corrupt(e.to_string());
        let groups = serde_json::to_string(&claims.groups).map_err(corrupt)?;
        let kept = serde_json::to_string(&claims.kept).map_err(corrupt)?;
        with_conn!(write self, |c| {
            diesel::update(upstream_links::table.find((upstream, subject)))
                .set((
                    upstream_links::groups.eq(&groups),
                    upstream_links::verified_email.eq(claims.verified_email.as_deref()),
                    upstream_links::kept_claims.eq(&kept),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn upstream_claims(
        &self,
        upstream: &str,
        user: &UserId,
    ) -> Result<UpstreamClaims, StorageError> {
        let row: Option<(String, Option<String>, String)> = with_conn!(self, |c| {
            upstream_links::table
                .filter(upstream_links::upstream.eq(upstream))
                .filter(upstream_links::user_id.eq(user.as_str()))
                .select((
                    upstream_links::groups,
                    upstream_links::verified_email,
                    upstream_links::kept_claims,
                ))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        let Some((groups, verified_email, kept)) = row else {
            return Ok(UpstreamClaims::default());
        };
        let corrupt = |e: serde_json::Error| StorageError::Corrupt(e.to_string());
        Ok(UpstreamClaims {
            groups: serde_json::from_str(&groups).map_err(corrupt)?,
            verified_email,
            kept: serde_json::from_str(&kept).map_err(corrupt)?,
        })
    }
}
