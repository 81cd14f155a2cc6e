//! Owns the diesel implementation of signing keys (first key, rotation, retirement) and named
//! secrets in [`Store`](crate::storage::Store).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::super::schema::{secrets, signing_keys};
use super::super::{SigningKeyRecord, StorageError};
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
}
