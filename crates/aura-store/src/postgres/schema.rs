//! The PostgreSQL schema and its numbered migrations.
//!
//! `aura_schema` holds one row per migration applied. Migrations only ever get appended to
//! [`MIGRATIONS`]; an applied one is never edited. Nodes starting together migrate under a
//! transaction-level advisory lock, so exactly one of them applies each migration.

use aura_ledger::merkle::{Frontier, encode_frontier};
use tokio_postgres::Client;

/// The advisory lock that serialises migrations ("AURA").
const MIGRATION_LOCK: i64 = 0x4155_5241;

/// Each migration is applied in the same transaction as its `aura_schema` row.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the log.
    r"
    CREATE TABLE meta (
        key   TEXT  PRIMARY KEY,
        value BYTEA NOT NULL
    );

    -- The one-row sequencer. Every append locks this row (SELECT ... FOR UPDATE) in the
    -- same transaction as its entries, so leaf indices are assigned by one writer at a
    -- time across all nodes, and the frontier and the last checkpoint's time move with
    -- them (Trillian's and Tessera's SQL drivers work the same way).
    CREATE TABLE log (
        id        SMALLINT PRIMARY KEY CHECK (id = 1),
        tree_size BIGINT   NOT NULL,
        frontier  BYTEA    NOT NULL,
        last_time BIGINT   NOT NULL
    );

    -- One row per entry: `idx` is its leaf index, `raw` its canonical encoding, `hash`
    -- the entry hash. (agent, seq) is unique: a second fence against two writers of one
    -- agent.
    CREATE TABLE entries (
        idx    BIGINT  PRIMARY KEY,
        agent  BYTEA   NOT NULL,
        seq    BIGINT  NOT NULL,
        hash   BYTEA   NOT NULL,
        raw    BYTEA   NOT NULL,
        pruned BOOLEAN NOT NULL DEFAULT false,
        UNIQUE (agent, seq)
    );

    -- The last entry of every agent.
    CREATE TABLE heads (
        agent BYTEA  PRIMARY KEY,
        seq   BIGINT NOT NULL,
        hash  BYTEA  NOT NULL
    );

    -- Signed checkpoints, one per commit, by tree size, with the node that signed it.
    CREATE TABLE checkpoints (
        tree_size BIGINT PRIMARY KEY,
        signed    BYTEA  NOT NULL,
        node      BYTEA  NOT NULL
    );

    -- Roots of complete Merkle subtrees at levels 8, 16, 24, ... (as in the SQLite store).
    CREATE TABLE merkle_tiles (
        level SMALLINT NOT NULL,
        idx   BIGINT   NOT NULL,
        hash  BYTEA    NOT NULL,
        PRIMARY KEY (level, idx)
    );
    ",
    // 2: shard leases. Agents hash to SHARDS shards; a shard is leased to one node at a
    // time. `epoch` grows by one each time the shard changes hands; `expires_at` is on
    // the database's clock, so nodes' clocks never decide who owns a shard.
    r"
    CREATE TABLE shards (
        shard      INT         PRIMARY KEY,
        owner      BYTEA,
        epoch      BIGINT      NOT NULL DEFAULT 0,
        expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
    );
    INSERT INTO shards (shard) SELECT generate_series(0, 63);
    ",
    // 3: the nodes serving the cluster, as each last said in its heartbeat: where it
    // answers (its advertised URL, where other nodes send an agent's writes), its
    // region, the models it holds and its load. `heartbeat_at` is on the database's
    // clock: a node is live while its heartbeat is younger than a lease.
    r"
    CREATE TABLE nodes (
        node         BYTEA       PRIMARY KEY,
        url          TEXT        NOT NULL,
        region       TEXT        NOT NULL,
        models       TEXT[]      NOT NULL,
        agents       BIGINT      NOT NULL,
        missions     BIGINT      NOT NULL,
        started_at   TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL
    );
    ",
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrationError {
    #[error("the database holds tables that are not Aura's")]
    NotAuraStore,
    #[error(
        "the database has schema version {found}, newer than this aura knows ({known}); upgrade aura"
    )]
    TooNew { found: i64, known: i64 },
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Applies the migrations the database lacks. Refuses a database from a newer Aura, and
/// one that holds other tables (a database that is not Aura's is never taken over).
pub(crate) async fn migrate(client: &mut Client) -> Result<(), MigrationError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let ours: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'aura_schema')",
            &[],
        )
        .await?
        .get(0);
    if !ours {
        let others: i64 = tx
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                &[],
            )
            .await?
            .get(0);
        if others != 0 {
            return Err(MigrationError::NotAuraStore);
        }
        tx.batch_execute("CREATE TABLE aura_schema (version INT PRIMARY KEY)")
            .await?;
    }
    let version: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM aura_schema",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(MigrationError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO aura_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
        if i == 0 {
            tx.execute(
                "INSERT INTO log (id, tree_size, frontier, last_time) VALUES (1, 0, $1, 0)",
                &[&encode_frontier(&Frontier::new())],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
