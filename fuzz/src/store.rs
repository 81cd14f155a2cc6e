//! Owns the one SQLite store a fuzz process uses (the query target's client registry and the
//! journey target's journeys need a real `Store`): a fresh file under the temp dir, migrated.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use concierge::config::DatabaseUrl;
use concierge::storage::DieselStore;
use concierge::storage::Store;

/// The process's store, created on first use.
pub fn store() -> Arc<dyn Store> {
    static STORE: OnceLock<Arc<dyn Store>> = OnceLock::new();
    Arc::clone(STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("concierge-fuzz-{}", std::process::id()));
        // A leftover from an earlier process of the same id is not ours to keep.
        let _ = std::fs::remove_dir_all(&dir);
        let url = DatabaseUrl::Sqlite(dir.join("fuzz.sqlite"));
        let store = DieselStore::open(&url, 2, Duration::from_secs(5)).expect("open the store");
        store.migrate().expect("migrate the store");
        Arc::new(store)
    }))
}
