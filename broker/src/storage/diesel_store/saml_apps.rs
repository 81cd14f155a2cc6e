//! Owns the diesel implementation of the SAML service providers registered at run time in
//! [`Store`](crate::storage::Store) (`saml_apps`).

use diesel::prelude::*;

use super::super::schema::saml_apps;
use super::super::{SamlAppRecord, StorageError};
use super::{DieselStore, Pools, checkout, query_err};
use crate::clock::UnixTime;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

type Row = (String, String, String, Option<String>, i64, i64);

fn record(
    (entity_id, config, metadata, metadata_url, fetched_at, created_at): Row,
) -> SamlAppRecord {
    SamlAppRecord {
        entity_id,
        config,
        metadata,
        metadata_url,
        fetched_at,
        created_at,
    }
}

const COLUMNS: (
    saml_apps::entity_id,
    saml_apps::config,
    saml_apps::metadata,
    saml_apps::metadata_url,
    saml_apps::fetched_at,
    saml_apps::created_at,
) = (
    saml_apps::entity_id,
    saml_apps::config,
    saml_apps::metadata,
    saml_apps::metadata_url,
    saml_apps::fetched_at,
    saml_apps::created_at,
);

impl DieselStore {
    pub(super) fn insert_saml_app(&self, app: &SamlAppRecord) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(saml_apps::table)
                .values((
                    saml_apps::entity_id.eq(&app.entity_id),
                    saml_apps::config.eq(&app.config),
                    saml_apps::metadata.eq(&app.metadata),
                    saml_apps::metadata_url.eq(app.metadata_url.as_deref()),
                    saml_apps::fetched_at.eq(app.fetched_at),
                    saml_apps::created_at.eq(app.created_at),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(|e| match query_err(e) {
                    StorageError::Conflict(_) => {
                        StorageError::Conflict("a SAML service provider with this entity ID")
                    }
                    other => other,
                })
        })
    }

    pub(super) fn saml_app(&self, entity_id: &str) -> Result<Option<SamlAppRecord>, StorageError> {
        with_conn!(self, |c| {
            saml_apps::table
                .find(entity_id)
                .select(COLUMNS)
                .first::<Row>(c)
                .optional()
                .map(|r| r.map(record))
                .map_err(query_err)
        })
    }

    pub(super) fn list_saml_apps(&self) -> Result<Vec<SamlAppRecord>, StorageError> {
        with_conn!(self, |c| {
            saml_apps::table
                .order(saml_apps::entity_id.asc())
                .select(COLUMNS)
                .load::<Row>(c)
                .map(|rows| rows.into_iter().map(record).collect())
                .map_err(query_err)
        })
    }

    pub(super) fn delete_saml_app(&self, entity_id: &str) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(saml_apps::table.find(entity_id))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    pub(super) fn update_saml_app_metadata(
        &self,
        entity_id: &str,
        metadata: &str,
        fetched_at: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(saml_apps::table.find(entity_id))
                .set((
                    saml_apps::metadata.eq(metadata),
                    saml_apps::fetched_at.eq(fetched_at),
                ))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }
}
