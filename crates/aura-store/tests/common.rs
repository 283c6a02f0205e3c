//! Shared helpers for the store's tests.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::Path;
use std::sync::Arc;

use aura_core::door::{SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_ledger::entry::Kind;
use aura_store::sqlite::Options;
use aura_store::{NewEntry, Seq, SqliteStore};

pub(crate) fn signer(seed: u64) -> Arc<Signer> {
    Arc::new(Signer::ephemeral("node", &SeededEntropy::new(seed)).unwrap())
}

pub(crate) fn open(path: &Path, signer: &Arc<Signer>) -> SqliteStore {
    SqliteStore::open(
        path,
        signer.clone(),
        Arc::new(SystemClock),
        Options::default(),
    )
    .unwrap()
}

pub(crate) fn note(agent: AgentId, seq: Seq, body: &str) -> NewEntry {
    NewEntry {
        agent,
        seq,
        kind: Kind::new("note").unwrap(),
        recorded_at: Timestamp::from_secs(1_800_000_000),
        body: body.as_bytes().to_vec(),
    }
}

pub(crate) fn agent(n: u8) -> AgentId {
    let mut b = [0u8; 16];
    b[15] = n;
    b[0] = 1;
    AgentId::from_bytes(b)
}
