//! Owns the diesel implementation of the audit log in [`Store`](crate::storage::Store).

use diesel::prelude::*;

use super::super::schema::audit_events;
use super::super::{AuditQuery, AuditRecord, StorageError};
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct NewAuditRow<'a> {
    at: i64,
    kind: &'a str,
    user_id: Option<&'a str>,
    client_id: Option<&'a str>,
    sid: Option<&'a str>,
    ip: Option<&'a str>,
    upstream: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> NewAuditRow<'a> {
    fn from_record(r: &'a AuditRecord) -> Self {
        Self {
            at: r.at,
            kind: &r.kind,
            user_id: r.user_id.as_deref(),
            client_id: r.client_id.as_deref(),
            sid: r.sid.as_deref(),
            ip: r.ip.as_deref(),
            upstream: r.upstream.as_deref(),
            reason: r.reason.as_deref(),
        }
    }
}

type AuditTuple = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn audit_from_tuple(t: AuditTuple) -> AuditRecord {
    let (id, at, kind, user_id, client_id, sid, ip, upstream, reason) = t;
    AuditRecord {
        id,
        at,
        kind,
        user_id,
        client_id,
        sid,
        ip,
        upstream,
        reason,
    }
}

impl DieselStore {
    pub(super) fn insert_audit_events(&self, events: &[AuditRecord]) -> Result<(), StorageError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<NewAuditRow<'_>> = events.iter().map(NewAuditRow::from_record).collect();
        with_conn!(write self, |c| {
            c.transaction(|c| {
                // Bounded statements: SQLite allows at most 32,766 bound values per statement.
                for chunk in rows.chunks(500) {
                    diesel::insert_into(audit_events::table)
                        .values(chunk)
                        .execute(c)?;
                }
                Ok(())
            })
            .map_err(query_err)
        })
    }

    pub(super) fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        let rows: Vec<AuditTuple> = with_conn!(self, |c| {
            let mut query = audit_events::table.into_boxed();
            if let Some(u) = &q.user_id {
                query = query.filter(audit_events::user_id.eq(u.clone()));
            }
            if let Some(k) = &q.kind {
                query = query.filter(audit_events::kind.eq(k.clone()));
            }
            if let Some(t) = q.since {
                query = query.filter(audit_events::at.ge(t));
            }
            if let Some(t) = q.until {
                query = query.filter(audit_events::at.lt(t));
            }
            if let Some(id) = q.before_id {
                query = query.filter(audit_events::id.lt(id));
            }
            query
                .order(audit_events::id.desc())
                .limit(q.limit)
                .load::<AuditTuple>(c)
                .map_err(query_err)
        })?;
        Ok(rows.into_iter().map(audit_from_tuple).collect())
    }

    pub(super) fn delete_audit_events_before(&self, before: UnixTime) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(audit_events::table.filter(audit_events::at.lt(before)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }
}
