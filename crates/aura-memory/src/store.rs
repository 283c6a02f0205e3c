//! Where memories persist: the [`Persist`] trait (what the memory needs of a database)
//! and [`SqliteMemory`], its SQLite implementation ([`crate::postgres::PgMemory`] is the
//! PostgreSQL one). The index is built from [`Persist::since`], in insertion order, which
//! makes it the same graph whichever database holds the records.

use std::path::Path;
use std::sync::Mutex;

use crate::{Error, Record};

/// What the memory needs of a database: append records, mark them forgotten, read back
/// what changed, in the order it was written.
///
/// `seq` and `version` share one counter: a record's `version` is its `seq` when stored
/// and a fresh number when forgotten. An implementation must never let a lower number
/// become visible after a higher one (writers are serialised), so that reading "what
/// changed after `version` v" never misses a change.
pub trait Persist: Send + Sync + std::fmt::Debug {
    /// Stores a record; its `seq` (and `version`) are assigned here, and `seq` returned.
    fn insert(&self, record: &Record) -> Result<u64, Error>;
    /// Marks the record `id` of `namespace` forgotten (its text and vector are erased);
    /// false if there is no such live record.
    fn forget(&self, namespace: &str, id: &str) -> Result<bool, Error>;
    /// Every record whose `version` is above `after`, forgotten ones included (without
    /// text or vector), in `seq` order.
    fn since(&self, after: u64) -> Result<Vec<Record>, Error>;
    /// Every record, forgotten ones included, in `seq` order.
    fn load(&self) -> Result<Vec<Record>, Error> {
        self.since(0)
    }
    /// Whether other processes write the same records (a cluster's database), so that the
    /// memory must read back changes before every search, not only after its own writes.
    fn shared(&self) -> bool {
        false
    }
}

/// Memories in a SQLite database (its own tables; `synchronous=FULL`, so a stored memory
/// is on disk before the caller hears so).
#[derive(Debug)]
pub struct SqliteMemory {
    conn: Mutex<rusqlite::Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS memory_items (
    seq INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    forgotten INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0
);
";

/// Brings a database to the current schema: the table, (for a table made before
/// forgetting had versions) the `version` column, each record's being its `seq`, and the
/// indexes. Only live memories must have unique names, so a forgotten name can be used
/// again (a table made before this kept names unique among tombstones too).
fn migrate(conn: &rusqlite::Connection) -> Result<(), Error> {
    conn.execute_batch(SCHEMA)?;
    let has_version = conn
        .prepare("SELECT 1 FROM pragma_table_info('memory_items') WHERE name = 'version'")?
        .exists([])?;
    if !has_version {
        conn.execute_batch(
            "ALTER TABLE memory_items ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
             UPDATE memory_items SET version = seq;",
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS memory_items_version ON memory_items (version);
         CREATE UNIQUE INDEX IF NOT EXISTS memory_items_live ON memory_items (namespace, id) WHERE forgotten = 0;",
    )?;
    Ok(())
}

impl SqliteMemory {
    /// Opens (creating if needed) the memory tables in the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteMemory, Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&conn)?;
        Ok(SqliteMemory {
            conn: Mutex::new(conn),
        })
    }

    /// A database in memory, for tests and benchmarks.
    pub fn in_memory() -> Result<SqliteMemory, Error> {
        let conn = rusqlite::Connection::open_in_memory()?;
        migrate(&conn)?;
        Ok(SqliteMemory {
            conn: Mutex::new(conn),
        })
    }
}

/// A vector as stored: its f32s, little-endian.
pub(crate) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_blob(b: &[u8]) -> Result<Vec<f32>, Error> {
    if !b.len().is_multiple_of(4) {
        return Err(Error::Corrupt(format!(
            "a stored vector is {} bytes, not a whole number of f32",
            b.len()
        )));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The next number of the counter `seq` and `version` share. The connection's mutex is
/// held by the caller, so no other writer takes the same number.
fn next_version(conn: &rusqlite::Connection) -> Result<i64, Error> {
    let (seq, version): (i64, i64) = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(version), 0) FROM memory_items",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(seq.max(version) + 1)
}

impl Persist for SqliteMemory {
    fn insert(&self, r: &Record) -> Result<u64, Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let v = next_version(&conn)?;
        let result = conn.execute(
            "INSERT INTO memory_items (seq, namespace, id, kind, text, vector, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?1)",
            rusqlite::params![v, r.namespace, r.id, r.kind, r.text, to_blob(&r.vector)],
        );
        match result {
            Ok(_) => Ok(v as u64),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(r.id.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn forget(&self, namespace: &str, id: &str) -> Result<bool, Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let v = next_version(&conn)?;
        let n = conn.execute(
            "UPDATE memory_items SET forgotten = 1, text = '', vector = x'', version = ?3 WHERE namespace = ?1 AND id = ?2 AND forgotten = 0",
            rusqlite::params![namespace, id, v],
        )?;
        Ok(n == 1)
    }

    fn since(&self, after: u64) -> Result<Vec<Record>, Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare(
            "SELECT seq, namespace, id, kind, text, vector, forgotten, version FROM memory_items WHERE version > ?1 ORDER BY seq",
        )?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = stmt.query_map([after], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Vec<u8>>(5)?,
                row.get::<_, bool>(6)?,
                row.get::<_, i64>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, namespace, id, kind, text, vector, forgotten, version) = row?;
            out.push(Record {
                seq: seq as u64,
                version: version as u64,
                namespace,
                id,
                kind,
                text,
                vector: from_blob(&vector)?,
                forgotten,
            });
        }
        Ok(out)
    }
}
