//! Owns the diesel implementation of grants in [`Store`](crate::storage::Store): authorization
//! codes, refresh token families and rotation, revoked token ids, token state and the expiry sweep.

use diesel::prelude::*;

use super::super::schema::{
    auth_codes, logout_continuations, refresh_tokens, revoked_tokens, saml_assertions, sessions,
    upstream_requests, users,
};
use super::super::{
    AuthCodeRecord, CodeUse, RefreshRecord, Rotation, SessionKey, SessionLiveness, StorageError,
    TokenState,
};
use super::{DieselStore, Pools, checkout, hash32, query_err, split_amr};
use crate::clock::UnixTime;
use crate::domain::UserId;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

#[derive(Queryable, Insertable)]
#[diesel(table_name = auth_codes)]
struct AuthCodeRow {
    code_hash: Vec<u8>,
    client_id: String,
    redirect_uri: String,
    user_id: String,
    sid: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: String,
    auth_time: i64,
    acr: Option<String>,
    amr: String,
    expires_at: i64,
    consumed_at: Option<i64>,
}

impl AuthCodeRow {
    fn from_record(c: &AuthCodeRecord) -> Self {
        Self {
            code_hash: c.code_hash.to_vec(),
            client_id: c.client_id.clone(),
            redirect_uri: c.redirect_uri.clone(),
            user_id: c.user_id.as_str().to_owned(),
            sid: c.sid.clone(),
            scope: c.scope.clone(),
            nonce: c.nonce.clone(),
            code_challenge: c.code_challenge.clone(),
            auth_time: c.auth_time,
            acr: c.acr.clone(),
            amr: c.amr.join(" "),
            expires_at: c.expires_at,
            consumed_at: c.consumed_at,
        }
    }
    fn into_record(self) -> Result<AuthCodeRecord, StorageError> {
        Ok(AuthCodeRecord {
            code_hash: hash32(self.code_hash, "auth_codes.code_hash")?,
            client_id: self.client_id,
            redirect_uri: self.redirect_uri,
            user_id: UserId::from_stored(self.user_id),
            sid: self.sid,
            scope: self.scope,
            nonce: self.nonce,
            code_challenge: self.code_challenge,
            auth_time: self.auth_time,
            acr: self.acr,
            amr: split_amr(&self.amr),
            expires_at: self.expires_at,
            consumed_at: self.consumed_at,
        })
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = refresh_tokens)]
struct RefreshRow {
    token_hash: Vec<u8>,
    family_id: String,
    client_id: String,
    user_id: String,
    sid: String,
    scope: String,
    auth_time: i64,
    acr: Option<String>,
    amr: String,
    created_at: i64,
    idle_expires_at: i64,
    expires_at: i64,
    used_at_ms: Option<i64>,
}

impl RefreshRow {
    fn from_record(r: &RefreshRecord) -> Self {
        Self {
            token_hash: r.token_hash.to_vec(),
            family_id: r.family_id.clone(),
            client_id: r.client_id.clone(),
            user_id: r.user_id.as_str().to_owned(),
            sid: r.sid.clone(),
            scope: r.scope.clone(),
            auth_time: r.auth_time,
            acr: r.acr.clone(),
            amr: r.amr.join(" "),
            created_at: r.created_at,
            idle_expires_at: r.idle_expires_at,
            expires_at: r.expires_at,
            used_at_ms: r.used_at_ms,
        }
    }
    fn into_record(self) -> Result<RefreshRecord, StorageError> {
        Ok(RefreshRecord {
            token_hash: hash32(self.token_hash, "refresh_tokens.token_hash")?,
            family_id: self.family_id,
            client_id: self.client_id,
            user_id: UserId::from_stored(self.user_id),
            sid: self.sid,
            scope: self.scope,
            auth_time: self.auth_time,
            acr: self.acr,
            amr: split_amr(&self.amr),
            created_at: self.created_at,
            idle_expires_at: self.idle_expires_at,
            expires_at: self.expires_at,
            used_at_ms: self.used_at_ms,
        })
    }
}

impl DieselStore {
    pub(super) fn insert_code(&self, code: &AuthCodeRecord) -> Result<(), StorageError> {
        let row = AuthCodeRow::from_record(code);
        with_conn!(write self, |c| {
            diesel::insert_into(auth_codes::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn consume_code(
        &self,
        code_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<CodeUse, StorageError> {
        let (marked, row): (usize, Option<AuthCodeRow>) = with_conn!(write self, |c| {
            let marked = diesel::update(
                auth_codes::table
                    .filter(auth_codes::code_hash.eq(&code_hash[..]))
                    .filter(auth_codes::consumed_at.is_null()),
            )
            .set(auth_codes::consumed_at.eq(Some(now)))
            .execute(c)
            .map_err(query_err)?;
            let row = auth_codes::table
                .find(&code_hash[..])
                .first::<AuthCodeRow>(c)
                .optional()
                .map_err(query_err)?;
            Ok::<_, StorageError>((marked, row))
        })?;
        Ok(match (marked, row) {
            (_, None) => CodeUse::Unknown,
            (1, Some(r)) => CodeUse::First(r.into_record()?),
            (_, Some(r)) => CodeUse::Replayed(r.into_record()?),
        })
    }

    pub(super) fn code(
        &self,
        code_hash: &[u8; 32],
    ) -> Result<Option<AuthCodeRecord>, StorageError> {
        let row: Option<AuthCodeRow> = with_conn!(self, |c| {
            auth_codes::table
                .find(&code_hash[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(AuthCodeRow::into_record).transpose()
    }

    pub(super) fn redeem_code(
        &self,
        code_hash: &[u8; 32],
        now: UnixTime,
        refresh: Option<&RefreshRecord>,
    ) -> Result<CodeUse, StorageError> {
        let refresh = refresh.map(RefreshRow::from_record);
        let (marked, row): (usize, Option<AuthCodeRow>) = with_conn!(write self, |c| {
            c.transaction(|c| {
                let marked = diesel::update(
                    auth_codes::table
                        .filter(auth_codes::code_hash.eq(&code_hash[..]))
                        .filter(auth_codes::consumed_at.is_null()),
                )
                .set(auth_codes::consumed_at.eq(Some(now)))
                .execute(c)?;
                if marked == 1
                    && let Some(r) = &refresh
                {
                    diesel::insert_into(refresh_tokens::table)
                        .values(r)
                        .execute(c)?;
                }
                let row = auth_codes::table
                    .find(&code_hash[..])
                    .first::<AuthCodeRow>(c)
                    .optional()?;
                Ok::<_, diesel::result::Error>((marked, row))
            })
            .map_err(query_err)
        })?;
        Ok(match (marked, row) {
            (_, None) => CodeUse::Unknown,
            (1, Some(r)) => CodeUse::First(r.into_record()?),
            (_, Some(r)) => CodeUse::Replayed(r.into_record()?),
        })
    }

    pub(super) fn insert_refresh(&self, token: &RefreshRecord) -> Result<(), StorageError> {
        let row = RefreshRow::from_record(token);
        with_conn!(write self, |c| {
            diesel::insert_into(refresh_tokens::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn refresh_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, StorageError> {
        let row: Option<RefreshRow> = with_conn!(self, |c| {
            refresh_tokens::table
                .find(&token_hash[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(RefreshRow::into_record).transpose()
    }

    pub(super) fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::family_id.eq(family_id)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    pub(super) fn rotate_refresh(
        &self,
        old: &[u8; 32],
        now_ms: i64,
        reuse_cutoff_ms: i64,
        new: &RefreshRecord,
        touch: SessionKey,
    ) -> Result<Rotation, StorageError> {
        let row = RefreshRow::from_record(new);
        let now = now_ms.div_euclid(1000);
        with_conn!(write self, |c| {
            c.transaction(|c| {
                let spent_now = diesel::update(
                    refresh_tokens::table
                        .filter(refresh_tokens::token_hash.eq(&old[..]))
                        .filter(refresh_tokens::used_at_ms.is_null()),
                )
                .set(refresh_tokens::used_at_ms.eq(Some(now_ms)))
                .execute(c)?;
                if spent_now == 0 {
                    let Some((family, used_at)) = refresh_tokens::table
                        .find(&old[..])
                        .select((refresh_tokens::family_id, refresh_tokens::used_at_ms))
                        .first::<(String, Option<i64>)>(c)
                        .optional()?
                    else {
                        return Ok(Rotation::Gone);
                    };
                    if used_at.is_some_and(|t| t <= reuse_cutoff_ms) {
                        diesel::delete(
                            refresh_tokens::table.filter(refresh_tokens::family_id.eq(family)),
                        )
                        .execute(c)?;
                        return Ok(Rotation::ReuseDetected);
                    }
                }
                diesel::insert_into(refresh_tokens::table)
                    .values(&row)
                    .execute(c)?;
                diesel::update(
                    sessions::table
                        .filter(sessions::id_hash.eq(&touch[..]))
                        .filter(sessions::last_seen.lt(now)),
                )
                .set(sessions::last_seen.eq(now))
                .execute(c)?;
                Ok(Rotation::Rotated)
            })
            .map_err(query_err)
        })
    }

    pub(super) fn delete_refresh_for_sid(&self, sid: &str) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::sid.eq(sid)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    pub(super) fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(revoked_tokens::table)
                .values((
                    revoked_tokens::jti.eq(jti),
                    revoked_tokens::expires_at.eq(expires_at),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn token_state(
        &self,
        jti: &str,
        grant: Option<&str>,
        sid: Option<&str>,
    ) -> Result<TokenState, StorageError> {
        let keys: Vec<&str> = std::iter::once(jti).chain(grant).collect();
        with_conn!(self, |c| {
            let revoked = revoked_tokens::table
                .filter(revoked_tokens::jti.eq_any(&keys))
                .select(revoked_tokens::jti)
                .first::<String>(c)
                .optional()
                .map_err(query_err)?
                .is_some();
            let session = match sid {
                Some(sid) => sessions::table
                    .inner_join(users::table)
                    .filter(sessions::sid.eq(sid))
                    .select((
                        sessions::expires_at,
                        sessions::last_seen,
                        sessions::idle_timeout,
                        users::tokens_valid_after,
                    ))
                    .first::<(i64, i64, i64, i64)>(c)
                    .optional()
                    .map_err(query_err)?
                    .map(
                        |(expires_at, last_seen, idle_timeout, tokens_valid_after)| {
                            SessionLiveness {
                                expires_at,
                                last_seen,
                                idle_timeout,
                                tokens_valid_after,
                            }
                        },
                    ),
                None => None,
            };
            Ok(TokenState { revoked, session })
        })
    }

    pub(super) fn delete_expired_grants(&self, now: UnixTime) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            let codes = diesel::delete(auth_codes::table.filter(auth_codes::expires_at.le(now)))
                .execute(c)
                .map_err(query_err)?;
            let refresh = diesel::delete(
                refresh_tokens::table.filter(
                    refresh_tokens::expires_at
                        .le(now)
                        .or(refresh_tokens::idle_expires_at.le(now)),
                ),
            )
            .execute(c)
            .map_err(query_err)?;
            let revoked =
                diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.le(now)))
                    .execute(c)
                    .map_err(query_err)?;
            let pending = diesel::delete(
                upstream_requests::table.filter(upstream_requests::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            let logouts = diesel::delete(
                logout_continuations::table.filter(logout_continuations::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            let assertions = diesel::delete(
                saml_assertions::table.filter(saml_assertions::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            let journeys = diesel::delete(
                super::super::schema::login_transactions::table
                    .filter(super::super::schema::login_transactions::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            Ok((codes + refresh + revoked + pending + logouts + assertions + journeys) as u64)
        })
    }
}
