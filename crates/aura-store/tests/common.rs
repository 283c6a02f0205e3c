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

/// Which backend a test of both runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A ledger for a test, on either backend: a SQLite file in a temporary directory, or a
/// fresh database on the test process's throwaway PostgreSQL server, holding a cluster
/// whose key enrolled the node.
pub(crate) struct Ledger {
    pub(crate) backend: Backend,
    pub(crate) signer: Arc<Signer>,
    /// The key the whole ledger verifies with (the node's, or the cluster's).
    pub(crate) trusted: aura_core::PublicKey,
    dir: tempfile::TempDir,
    url: Option<String>,
}

impl Ledger {
    /// `None` when the backend is PostgreSQL and it is not installed (the harness printed
    /// why; with AURA_REQUIRE_POSTGRES=1 it fails instead).
    pub(crate) async fn new(backend: Backend, seed: u64) -> Option<Ledger> {
        let signer = signer(seed);
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Some(Ledger {
                backend,
                trusted: signer.public_key(),
                signer,
                dir,
                url: None,
            }),
            Backend::Postgres => {
                let cluster = aura_store::postgres::testing::TestCluster::get()?;
                let url = cluster.database().await;
                let key = Arc::new(
                    Signer::ephemeral("cluster", &SeededEntropy::new(seed + 100_000)).unwrap(),
                );
                aura_store::postgres::PgStore::init_cluster(&url, key.public_key())
                    .await
                    .unwrap();
                aura_store::postgres::PgStore::enroll(
                    &url,
                    key.clone(),
                    signer.public_key(),
                    "test",
                    Arc::new(SystemClock),
                )
                .await
                .unwrap();
                Some(Ledger {
                    backend,
                    trusted: key.public_key(),
                    signer,
                    dir,
                    url: Some(url),
                })
            }
        }
    }

    /// Entries the ledger holds before the test appends anything (a cluster's log starts
    /// with the node's enrollment).
    pub(crate) fn base(&self) -> u64 {
        match self.backend {
            Backend::Sqlite => 0,
            Backend::Postgres => 1,
        }
    }

    pub(crate) async fn open(&self) -> Arc<dyn aura_store::Store> {
        self.open_as(&self.signer).await
    }

    /// Opens the ledger as the node whose key `signer` holds (PostgreSQL: it must be
    /// enrolled).
    pub(crate) async fn open_as(&self, signer: &Arc<Signer>) -> Arc<dyn aura_store::Store> {
        match &self.url {
            None => Arc::new(open(&self.dir.path().join("ledger.db"), signer)),
            Some(url) => Arc::new(
                aura_store::postgres::PgStore::open(
                    url,
                    signer.clone(),
                    Arc::new(SystemClock),
                    aura_store::postgres::Options::default(),
                )
                .await
                .unwrap(),
            ),
        }
    }

    pub(crate) fn url(&self) -> &str {
        self.url.as_deref().unwrap()
    }
}

/// Runs an async test function against both backends: `mod name { sqlite, postgres }`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                if let Some(l) = super::common::Ledger::new(super::common::Backend::Sqlite, 1).await {
                    super::$name(l).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(l) = super::common::Ledger::new(super::common::Backend::Postgres, 1).await {
                    super::$name(l).await
                }
            }
        }
    )*};
}
