//! Owns the diesel implementation of [`MfaStore`] for both backends.

use diesel::prelude::*;

use super::super::schema::{
    control_signals, mfa_enrollments, mfa_recovery_codes, mfa_state, sessions, webauthn_credentials,
};
use super::super::{
    AttestedModel, CredentialUse, MfaEnrollment, MfaStateRow, MfaStore, StorageError,
    WebAuthnCredential,
};
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use crate::domain::UserId;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

impl MfaStore for DieselStore {
    fn mfa_state(&self, plugin: &str, user: &UserId) -> Result<Option<MfaStateRow>, StorageError> {
        let row: Option<(i64, Vec<u8>)> = with_conn!(self, |c| {
            mfa_state::table
                .find((plugin, user.as_str()))
                .select((mfa_state::version, mfa_state::data))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(row.map(|(version, data)| MfaStateRow { version, data }))
    }

    fn put_mfa_state(
        &self,
        plugin: &str,
        user: &UserId,
        expected: Option<i64>,
        data: &[u8],
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            let n = match expected {
                None => diesel::insert_into(mfa_state::table)
                    .values((
                        mfa_state::plugin_id.eq(plugin),
                        mfa_state::user_id.eq(user.as_str()),
                        mfa_state::version.eq(1i64),
                        mfa_state::data.eq(data),
                        mfa_state::updated_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c),
                Some(v) => diesel::update(
                    mfa_state::table
                        .find((plugin, user.as_str()))
                        .filter(mfa_state::version.eq(v)),
                )
                .set((
                    mfa_state::version.eq(v.saturating_add(1)),
                    mfa_state::data.eq(data),
                    mfa_state::updated_at.eq(now),
                ))
                .execute(c),
            }
            .map_err(query_err)?;
            Ok(n == 1)
        })
    }

    fn mfa_enrollments(&self, user: &UserId) -> Result<Vec<MfaEnrollment>, StorageError> {
        let rows: Vec<(String, i64, Option<i64>)> = with_conn!(self, |c| {
            mfa_enrollments::table
                .filter(mfa_enrollments::user_id.eq(user.as_str()))
                .order(mfa_enrollments::plugin_id)
                .select((
                    mfa_enrollments::plugin_id,
                    mfa_enrollments::created_at,
                    mfa_enrollments::last_used_at,
                ))
                .load(c)
                .map_err(query_err)
        })?;
        Ok(rows
            .into_iter()
            .map(|(plugin_id, created_at, last_used_at)| MfaEnrollment {
                plugin_id,
                created_at,
                last_used_at,
            })
            .collect())
    }

    fn insert_mfa_enrollment(
        &self,
        user: &UserId,
        plugin: &str,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(mfa_enrollments::table)
                .values((
                    mfa_enrollments::user_id.eq(user.as_str()),
                    mfa_enrollments::plugin_id.eq(plugin),
                    mfa_enrollments::created_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn touch_mfa_enrollment(
        &self,
        user: &UserId,
        plugin: &str,
        at: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::update(mfa_enrollments::table.find((user.as_str(), plugin)))
                .set(mfa_enrollments::last_used_at.eq(Some(at)))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn delete_mfa_enrollment(&self, user: &UserId, plugin: &str) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                diesel::delete(mfa_state::table.find((plugin, user.as_str()))).execute(c)?;
                diesel::delete(mfa_enrollments::table.find((user.as_str(), plugin))).execute(c)
            })
            .map(|n| n > 0)
            .map_err(query_err)
        })
    }

    fn webauthn_credentials(&self, user: &UserId) -> Result<Vec<WebAuthnCredential>, StorageError> {
        type Row = (
            Vec<u8>,
            String,
            String,
            i64,
            Option<i64>,
            i64,
            bool,
            bool,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = with_conn!(self, |c| {
            webauthn_credentials::table
                .filter(webauthn_credentials::user_id.eq(user.as_str()))
                .order((
                    webauthn_credentials::created_at,
                    webauthn_credentials::credential_id,
                ))
                .select((
                    webauthn_credentials::credential_id,
                    webauthn_credentials::passkey,
                    webauthn_credentials::name,
                    webauthn_credentials::created_at,
                    webauthn_credentials::last_used_at,
                    webauthn_credentials::sign_count,
                    webauthn_credentials::backup_eligible,
                    webauthn_credentials::backup_state,
                    webauthn_credentials::attested_aaguid,
                    webauthn_credentials::authenticator,
                ))
                .load(c)
                .map_err(query_err)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| WebAuthnCredential {
                credential_id: r.0,
                passkey: r.1,
                name: r.2,
                created_at: r.3,
                last_used_at: r.4,
                sign_count: r.5,
                backup_eligible: r.6,
                backup_state: r.7,
                attested: r
                    .8
                    .zip(r.9)
                    .map(|(aaguid, name)| AttestedModel { aaguid, name }),
            })
            .collect())
    }

    fn insert_webauthn_credential(
        &self,
        user: &UserId,
        credential: &WebAuthnCredential,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(webauthn_credentials::table)
                .values((
                    webauthn_credentials::credential_id.eq(credential.credential_id.as_slice()),
                    webauthn_credentials::user_id.eq(user.as_str()),
                    webauthn_credentials::passkey.eq(&credential.passkey),
                    webauthn_credentials::name.eq(&credential.name),
                    webauthn_credentials::created_at.eq(credential.created_at),
                    webauthn_credentials::last_used_at.eq(credential.last_used_at),
                    webauthn_credentials::sign_count.eq(credential.sign_count),
                    webauthn_credentials::backup_eligible.eq(credential.backup_eligible),
                    webauthn_credentials::backup_state.eq(credential.backup_state),
                    webauthn_credentials::attested_aaguid
                        .eq(credential.attested.as_ref().map(|m| m.aaguid.as_str())),
                    webauthn_credentials::authenticator
                        .eq(credential.attested.as_ref().map(|m| m.name.as_str())),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map(|n| n == 1)
                .map_err(query_err)
        })
    }

    fn use_webauthn_credential(
        &self,
        user: &UserId,
        credential_id: &[u8],
        passkey: &str,
        sign_count: i64,
        backup_state: bool,
        now: UnixTime,
    ) -> Result<CredentialUse, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                let mine = webauthn_credentials::table
                    .filter(webauthn_credentials::credential_id.eq(credential_id))
                    .filter(webauthn_credentials::user_id.eq(user.as_str()));
                let values = (
                    webauthn_credentials::passkey.eq(passkey),
                    webauthn_credentials::sign_count.eq(sign_count),
                    webauthn_credentials::backup_state.eq(backup_state),
                    webauthn_credentials::last_used_at.eq(Some(now)),
                );
                // Forward only; an authenticator that keeps no counter says 0 every time.
                let n = if sign_count == 0 {
                    diesel::update(mine.filter(webauthn_credentials::sign_count.eq(0i64)))
                        .set(values)
                        .execute(c)?
                } else {
                    diesel::update(mine.filter(webauthn_credentials::sign_count.lt(sign_count)))
                        .set(values)
                        .execute(c)?
                };
                if n == 1 {
                    return Ok(CredentialUse::Recorded);
                }
                let exists: i64 = mine.count().get_result(c)?;
                Ok(if exists > 0 {
                    CredentialUse::CounterRegressed
                } else {
                    CredentialUse::Unknown
                })
            })
            .map_err(query_err)
        })
    }

    fn webauthn_credential_owner(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<UserId>, StorageError> {
        let owner: Option<String> = with_conn!(self, |c| {
            webauthn_credentials::table
                .filter(webauthn_credentials::credential_id.eq(credential_id))
                .select(webauthn_credentials::user_id)
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(owner.map(UserId::from_stored))
    }

    fn rename_webauthn_credential(
        &self,
        user: &UserId,
        credential_id: &[u8],
        name: &str,
    ) -> Result<bool, StorageError> {
        let n = with_conn!(write self, |c| {
            diesel::update(
                webauthn_credentials::table
                    .filter(webauthn_credentials::credential_id.eq(credential_id))
                    .filter(webauthn_credentials::user_id.eq(user.as_str())),
            )
            .set(webauthn_credentials::name.eq(name))
            .execute(c)
            .map_err(query_err)
        })?;
        Ok(n == 1)
    }

    fn delete_webauthn_credential(
        &self,
        user: &UserId,
        credential_id: &[u8],
    ) -> Result<Option<usize>, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                let n = diesel::delete(
                    webauthn_credentials::table
                        .filter(webauthn_credentials::credential_id.eq(credential_id))
                        .filter(webauthn_credentials::user_id.eq(user.as_str())),
                )
                .execute(c)?;
                if n == 0 {
                    return Ok(None);
                }
                let left: i64 = webauthn_credentials::table
                    .filter(webauthn_credentials::user_id.eq(user.as_str()))
                    .count()
                    .get_result(c)?;
                Ok(Some(usize::try_from(left).unwrap_or(0)))
            })
            .map_err(query_err)
        })
    }

    fn delete_webauthn_credentials(&self, user: &UserId) -> Result<usize, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(
                webauthn_credentials::table.filter(webauthn_credentials::user_id.eq(user.as_str())),
            )
            .execute(c)
            .map_err(query_err)
        })
    }

    fn replace_recovery_codes(
        &self,
        user: &UserId,
        hashes: &[[u8; 32]],
        now: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                diesel::delete(
                    mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user.as_str())),
                )
                .execute(c)?;
                for h in hashes {
                    diesel::insert_into(mfa_recovery_codes::table)
                        .values((
                            mfa_recovery_codes::user_id.eq(user.as_str()),
                            mfa_recovery_codes::code_hash.eq(h.as_slice()),
                            mfa_recovery_codes::created_at.eq(now),
                        ))
                        .on_conflict_do_nothing()
                        .execute(c)?;
                }
                Ok(())
            })
            .map_err(query_err)
        })
    }

    fn use_recovery_code(
        &self,
        user: &UserId,
        hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(
                mfa_recovery_codes::table
                    .find((user.as_str(), hash.as_slice()))
                    .filter(mfa_recovery_codes::used_at.is_null()),
            )
            .set(mfa_recovery_codes::used_at.eq(Some(now)))
            .execute(c)
            .map(|n| n == 1)
            .map_err(query_err)
        })
    }

    fn recovery_codes_left(&self, user: &UserId) -> Result<i64, StorageError> {
        with_conn!(self, |c| {
            mfa_recovery_codes::table
                .filter(mfa_recovery_codes::user_id.eq(user.as_str()))
                .filter(mfa_recovery_codes::used_at.is_null())
                .count()
                .get_result(c)
                .map_err(query_err)
        })
    }

    fn set_session_amr(&self, sid: &str, amr: &[String]) -> Result<bool, StorageError> {
        let amr = amr.join(" ");
        with_conn!(write self, |c| {
            diesel::update(sessions::table.filter(sessions::sid.eq(sid)))
                .set(sessions::amr.eq(&amr))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    fn signal_generation(&self, name: &str) -> Result<i64, StorageError> {
        let g: Option<i64> = with_conn!(self, |c| {
            control_signals::table
                .find(name)
                .select(control_signals::generation)
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(g.unwrap_or(0))
    }

    fn raise_signal(&self, name: &str, now: UnixTime) -> Result<i64, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                diesel::insert_into(control_signals::table)
                    .values((
                        control_signals::name.eq(name),
                        control_signals::generation.eq(0i64),
                        control_signals::updated_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)?;
                diesel::update(control_signals::table.find(name))
                    .set((
                        control_signals::generation.eq(control_signals::generation + 1),
                        control_signals::updated_at.eq(now),
                    ))
                    .execute(c)?;
                control_signals::table
                    .find(name)
                    .select(control_signals::generation)
                    .first(c)
            })
            .map_err(query_err)
        })
    }
}
