//! Owns the diesel implementation of signing keys (first key, rotation, retirement), named
//! secrets, and the listing and compare-and-set re-sealing of every sealed value (`keys rewrap`)
//! in [`Store`](crate::storage::Store).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::super::schema::{mfa_state, secrets, signing_keys};
use super::super::{SealedRef, SealedValue, SigningKeyRecord, StorageError};
use super::{DieselStore, KEYS_LOCK_ID, Pools, checkout, query_err};
use crate::clock::UnixTime;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

#[derive(Queryable, Insertable)]
#[diesel(table_name = signing_keys)]
struct SigningKeyRow {
    kid: String,
    alg: String,
    private_key_enc: Vec<u8>,
    public_jwk: String,
    created_at: i64,
    active_at: i64,
    retired_at: Option<i64>,
}

impl SigningKeyRow {
    fn from_record(key: &SigningKeyRecord) -> Self {
        Self {
            kid: key.kid.clone(),
            alg: key.alg.clone(),
            private_key_enc: key.private_key_enc.clone(),
            public_jwk: key.public_jwk.clone(),
            created_at: key.created_at,
            active_at: key.active_at,
            retired_at: key.retired_at,
        }
    }
}

impl DieselStore {
    pub(super) fn insert_first_signing_key(
        &self,
        key: &SigningKeyRecord,
    ) -> Result<bool, StorageError> {
        let row = SigningKeyRow::from_record(key);
        // The check and the insert, for either connection type.
        macro_rules! first_key {
            ($c:expr) => {{
                let active = signing_keys::table
                    .filter(signing_keys::alg.eq(&row.alg))
                    .filter(signing_keys::retired_at.is_null())
                    .filter(signing_keys::active_at.le(row.active_at))
                    .count()
                    .get_result::<i64>($c)?;
                if active > 0 {
                    Ok(false)
                } else {
                    diesel::insert_into(signing_keys::table)
                        .values(&row)
                        .execute($c)
                        .map(|_| true)
                }
            }};
        }
        match &self.pools {
            Pools::Sqlite(pool) => {
                let _writer = self.writer.as_ref().map(|m| match m.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                });
                let mut c = checkout(&self.health, pool, None)?;
                // IMMEDIATE: the write lock is taken before the check (other processes, e.g. the CLI).
                c.immediate_transaction(|c| first_key!(c))
                    .map_err(query_err)
            }
            Pools::Postgres(pool) => {
                let mut c = checkout(&self.health, pool, None)?;
                c.transaction(|c| {
                    c.batch_execute(&format!("SELECT pg_advisory_xact_lock({KEYS_LOCK_ID})"))?;
                    first_key!(c)
                })
                .map_err(query_err)
            }
        }
    }

    pub(super) fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StorageError> {
        let row = SigningKeyRow::from_record(key);
        with_conn!(write self, |c| {
            diesel::insert_into(signing_keys::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StorageError> {
        let rows: Vec<SigningKeyRow> = with_conn!(self, |c| {
            signing_keys::table
                .order((signing_keys::active_at.asc(), signing_keys::kid.asc()))
                .load(c)
                .map_err(query_err)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| SigningKeyRecord {
                kid: r.kid,
                alg: r.alg,
                private_key_enc: r.private_key_enc,
                public_jwk: r.public_jwk,
                created_at: r.created_at,
                active_at: r.active_at,
                retired_at: r.retired_at,
            })
            .collect())
    }

    pub(super) fn retire_signing_keys(
        &self,
        alg: &str,
        except_kid: &str,
        at: UnixTime,
    ) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(
                signing_keys::table
                    .filter(signing_keys::alg.eq(alg))
                    .filter(signing_keys::kid.ne(except_kid))
                    .filter(signing_keys::retired_at.is_null()),
            )
            .set(signing_keys::retired_at.eq(Some(at)))
            .execute(c)
            .map(|n| n as u64)
            .map_err(query_err)
        })
    }

    pub(super) fn delete_signing_keys_retired_before(
        &self,
        before: UnixTime,
    ) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(signing_keys::table.filter(signing_keys::retired_at.lt(before)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    pub(super) fn secret_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: UnixTime,
    ) -> Result<Vec<u8>, StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(secrets::table)
                .values((
                    secrets::name.eq(name),
                    secrets::value.eq(candidate),
                    secrets::created_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map_err(query_err)?;
            secrets::table
                .find(name)
                .select(secrets::value)
                .first::<Vec<u8>>(c)
                .map_err(query_err)
        })
    }

    pub(super) fn replace_secret(
        &self,
        name: &str,
        value: &[u8],
        now: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(secrets::table)
                .values((
                    secrets::name.eq(name),
                    secrets::value.eq(value),
                    secrets::created_at.eq(now),
                ))
                .on_conflict(secrets::name)
                .do_update()
                .set((secrets::value.eq(value), secrets::created_at.eq(now)))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    pub(super) fn secret(&self, name: &str) -> Result<Option<(Vec<u8>, UnixTime)>, StorageError> {
        with_conn!(self, |c| {
            secrets::table
                .find(name)
                .select((secrets::value, secrets::created_at))
                .first::<(Vec<u8>, i64)>(c)
                .optional()
                .map_err(query_err)
        })
    }

    pub(super) fn sealed_values(&self) -> Result<Vec<SealedValue>, StorageError> {
        let (secret_rows, key_rows, state_rows) = with_conn!(self, |c| {
            let secret_rows = secrets::table
                .select((secrets::name, secrets::value))
                .order(secrets::name.asc())
                .load::<(String, Vec<u8>)>(c)
                .map_err(query_err)?;
            let key_rows = signing_keys::table
                .select((signing_keys::kid, signing_keys::private_key_enc))
                .order(signing_keys::kid.asc())
                .load::<(String, Vec<u8>)>(c)
                .map_err(query_err)?;
            let state_rows = mfa_state::table
                .select((mfa_state::plugin_id, mfa_state::user_id, mfa_state::data))
                .order((mfa_state::plugin_id.asc(), mfa_state::user_id.asc()))
                .load::<(String, String, Vec<u8>)>(c)
                .map_err(query_err)?;
            Ok::<_, StorageError>((secret_rows, key_rows, state_rows))
        })?;
        let secrets = secret_rows.into_iter().map(|(name, value)| SealedValue {
            at: SealedRef::Secret { name },
            value,
        });
        let keys = key_rows.into_iter().map(|(kid, value)| SealedValue {
            at: SealedRef::SigningKey { kid },
            value,
        });
        let states = state_rows
            .into_iter()
            .map(|(plugin, user, value)| SealedValue {
                at: SealedRef::MfaState { plugin, user },
                value,
            });
        Ok(secrets.chain(keys).chain(states).collect())
    }

    pub(super) fn reseal_value(
        &self,
        at: &SealedRef,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            match at {
                SealedRef::Secret { name } => diesel::update(
                    secrets::table
                        .filter(secrets::name.eq(name))
                        .filter(secrets::value.eq(expected)),
                )
                .set(secrets::value.eq(value))
                .execute(c),
                SealedRef::SigningKey { kid } => diesel::update(
                    signing_keys::table
                        .filter(signing_keys::kid.eq(kid))
                        .filter(signing_keys::private_key_enc.eq(expected)),
                )
                .set(signing_keys::private_key_enc.eq(value))
                .execute(c),
                SealedRef::MfaState { plugin, user } => diesel::update(
                    mfa_state::table
                        .filter(mfa_state::plugin_id.eq(plugin))
                        .filter(mfa_state::user_id.eq(user))
                        .filter(mfa_state::data.eq(expected)),
                )
                .set(mfa_state::data.eq(value))
                .execute(c),
            }
            .map(|n| n == 1)
            .map_err(query_err)
        })
    }
}
