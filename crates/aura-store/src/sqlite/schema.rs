//! The SQLite schema and its numbered migrations.
//!
//! `PRAGMA user_version` holds the number of the last migration applied. Migrations only
//! ever get appended to [`MIGRATIONS`]; an applied one is never edited.

use rusqlite::{Connection, OptionalExtension as _, params};

/// Identifies an Aura store among SQLite files (`PRAGMA application_id`, "AURA").
pub(crate) const APPLICATION_ID: i32 = 0x4155_5241;

/// Each migration is applied in its own transaction, in order.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the ledger.
    r"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;

    -- One row per entry. `idx` is the entry's position in the ledger and its leaf index in
    -- the Merkle tree; `raw` is its canonical encoding and `hash` the entry hash.
    CREATE TABLE entries (
        idx   INTEGER PRIMARY KEY,
        agent BLOB    NOT NULL,
        seq   INTEGER NOT NULL,
        hash  BLOB    NOT NULL,
        raw   BLOB    NOT NULL
    );
    CREATE UNIQUE INDEX entries_by_agent ON entries (agent, seq);

    -- The last entry of every agent, so a writer need not search for it.
    CREATE TABLE heads (
        agent BLOB    PRIMARY KEY,
        seq   INTEGER NOT NULL,
        hash  BLOB    NOT NULL
    ) WITHOUT ROWID;

    -- Signed checkpoints, one per commit, by tree size; `signed` is the canonical signed
    -- checkpoint encoding.
    CREATE TABLE checkpoints (
        tree_size INTEGER PRIMARY KEY,
        signed    BLOB    NOT NULL
    );

    -- Roots of complete Merkle subtrees at levels 8, 16, 24, ...: with these, any subtree
    -- hash is at most 128 rows away, so proofs cost a few small reads at any size.
    CREATE TABLE merkle_tiles (
        level INTEGER NOT NULL,
        idx   INTEGER NOT NULL,
        hash  BLOB    NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    ",
    // 2: pruned bodies. A pruned row keeps its `hash` and holds the entry's stub encoding
    // (aura_ledger::entry::PrunedEntry) in `raw`; the flag says which of the two encodings
    // `raw` holds, so that neither is ever read as the other. Adding a column with a
    // constant default rewrites nothing, so the migration is instant on any size.
    r"
    ALTER TABLE entries ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
    ",
];

/// Applies the migrations this file lacks. Refuses a file from a newer Aura.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        // A brand-new file is empty; anything else without our id is not ours.
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        if tables != 0 {
            return Err(MigrationError::NotAuraStore);
        }
    } else if app_id != APPLICATION_ID {
        return Err(MigrationError::NotAuraStore);
    }
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(MigrationError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema version of an open connection, after checking it is ours.
pub(crate) fn check_version(conn: &Connection) -> Result<(), MigrationError> {
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if app_id != APPLICATION_ID || version == 0 {
        return Err(MigrationError::NotAuraStore);
    }
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(MigrationError::TooNew {
            found: version,
            known,
        });
    }
    if version < known {
        return Err(MigrationError::NeedsMigration {
            found: version,
            known,
        });
    }
    Ok(())
}

pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
        r.get(0)
    })
    .optional()
}

pub(crate) fn meta_set(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![key, value],
    )?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrationError {
    #[error("the file is not an Aura store")]
    NotAuraStore,
    #[error(
        "the store has schema version {found}, newer than this aura knows ({known}); upgrade aura"
    )]
    TooNew { found: i64, known: i64 },
    #[error(
        "the store has schema version {found} and needs migrating to {known}; open it for writing once"
    )]
    NeedsMigration { found: i64, known: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}
