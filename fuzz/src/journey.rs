//! Owns the oracle of the journey target: whatever journey JSON the (sealed, versioned)
//! `login_transactions.state` column holds, loading it as a [`Journey`] through
//! [`Journeys::load`] (the broker's own decode, so a change of the stored form is followed) never
//! panics; and a journey that loads is saved and loaded again to the same JSON (the round trip is
//! stable). The input is the journey's JSON; the harness wraps it in the envelope of
//! [`concierge::flow::journey::FORMAT`] and seals it as the broker does (every other stored form
//! is refused as outdated before any JSON is read).

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use concierge::clock::{ManualClock, SeededEntropy};
use concierge::domain::kek::KeyEncryptionKey;
use concierge::flow::journey::{FORMAT, JourneyId, Journeys};
use concierge::flow::machine::Journey;
use concierge::storage::LoginTransactionRow;

const NOW: i64 = 1_700_000_000;

struct Fixture {
    journeys: Journeys,
    id: JourneyId,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let store = crate::store::store();
        let id = JourneyId::parse(&"A".repeat(43)).expect("a well-formed journey id");
        store
            .insert_login_transaction(&LoginTransactionRow {
                id_hash: id.key().0,
                version: 1,
                state: "{}".into(),
                created_at: NOW,
                updated_at: NOW,
                expires_at: NOW + 3600,
                finished_at: None,
                binding_hash: None,
            })
            .expect("insert the journey row");
        let journeys = Journeys::new(
            store,
            Arc::new(ManualClock::new(NOW)),
            Arc::new(SeededEntropy::new(1)),
            3600,
            KeyEncryptionKey::new([7; 32]),
        );
        Fixture { journeys, id }
    })
}

thread_local! {
    /// The row's version (only this process writes it).
    static VERSION: Cell<i64> = const { Cell::new(1) };
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let Ok(state) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let f = fixture();
    let store = crate::store::store();
    let version = VERSION.get();
    let envelope = format!("{{\"v\":{FORMAT},\"s\":{state}}}");
    let sealed = f
        .journeys
        .seal_raw(&f.id, envelope.as_bytes())
        .map_err(|e| format!("harness: cannot seal: {e}"))?;
    let written = store
        .update_login_transaction(&f.id.key().0, version, &sealed, NOW + 3600, NOW)
        .map_err(|e| format!("harness: cannot write the row: {e}"))?;
    if !written {
        return Err("harness: the row's version moved".into());
    }
    VERSION.set(version + 1);
    let loaded = match f.journeys.load::<Journey>(&f.id) {
        Ok(l) => l,
        Err(e) => {
            crate::debug(|| format!("not a journey: {e}"));
            return Ok(());
        }
    };
    crate::debug(|| "a journey: loaded".into());
    let first = serde_json::to_string(&loaded.state).map_err(|e| format!("serialise: {e}"))?;
    let saved = f
        .journeys
        .save(&f.id, &loaded)
        .map_err(|e| format!("save a loaded journey: {e}"))?;
    VERSION.set(saved);
    let again = f
        .journeys
        .load::<Journey>(&f.id)
        .map_err(|e| format!("a saved journey does not load: {e}"))?;
    let second = serde_json::to_string(&again.state).map_err(|e| format!("serialise: {e}"))?;
    if first != second {
        return Err(format!(
            "round trip changed the journey: {first} -> {second}"
        ));
    }
    Ok(())
}
