//! Where memories persist: the [`Persist`] trait (what the memory needs of a database)
//! and [`SqliteMemory`], its SQLite implementation. A PostgreSQL one can follow beside it
//! without the index changing: the index is rebuilt from [`Persist::load`], in insertion
//! order, which makes it the same graph.

use std::path::Path;
use std::sync::Mutex;

use crate::{Error, Record};

/// What the memory needs of a database: append records, mark them forgotten, read them
/// all back in the order they were written.
pub trait Persist: Send + Sync + std::fmt::Debug {
    /// Stores a record; its `seq` is assigned here and returned.
    fn insert(&self, record: &Record) -> Result<u64, Error>;
    /// Marks the record `id` of `namespace` forgotten (its text and vector are erased);
    /// false if there is no such live record.
    fn forget(&self, namespace: &str, id: &str) -> Result<bool, Error>;
    /// Every record, forgotten ones included (without text or vector), in `seq` order.
    fn load(&self) -> Result<Vec<Record>, Error>;
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
    UNIQUE (namespace, id)
);
";

impl SqliteMemory {
    /// Opens (creating if needed) the memory tables in the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteMemory, Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteMemory {
            conn: Mutex::new(conn),
        })
    }

    /// A database in memory, for tests and benchmarks.
    pub fn in_memory() -> Result<SqliteMemory, Error> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteMemory {
            conn: Mutex::new(conn),
        })
    }
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Result<Vec<f32>, Error> {
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

impl Persist for SqliteMemory {
    fn insert(&self, r: &Record) -> Result<u64, Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let result = conn.execute(
            "INSERT INTO memory_items (namespace, id, kind, text, vector) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![r.namespace, r.id, r.kind, r.text, to_blob(&r.vector)],
        );
        match result {
            Ok(_) => Ok(conn.last_insert_rowid() as u64),
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
        let n = conn.execute(
            "UPDATE memory_items SET forgotten = 1, text = '', vector = x'' WHERE namespace = ?1 AND id = ?2 AND forgotten = 0",
            rusqlite::params![namespace, id],
        )?;
        Ok(n == 1)
    }

    fn load(&self) -> Result<Vec<Record>, Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare(
            "SELECT seq, namespace, id, kind, text, vector, forgotten FROM memory_items ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Vec<u8>>(5)?,
                row.get::<_, bool>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, namespace, id, kind, text, vector, forgotten) = row?;
            out.push(Record {
                seq: seq as u64,
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
