//! [`PgMemory`]: the memory's records in PostgreSQL (cargo feature `postgres`), so that the
//! nodes of a cluster keep their memories in the database they share.
//!
//! The schema has numbered migrations of its own (`memory_schema`, applied under an
//! advisory lock as aura-store's are), beside the store's tables in the same database.
//! Writers take a transaction-level advisory lock before they draw the next number of the
//! counter `seq` and `version` share, so numbers become visible in the order they were
//! drawn and a node reading "what changed after v" never misses another node's write.
//!
//! [`crate::Memory`] is synchronous; the client is not. A `PgMemory` runs its client on a
//! thread of its own with a single-threaded tokio runtime, and each call sends that thread
//! a job and blocks until the answer comes back. Calling it from anywhere, an async task
//! included, can therefore never panic on nested runtimes. A lost connection is made again
//! on the next call; the call that found it lost reports [`Error::Unavailable`].

use std::sync::mpsc as sync_mpsc;

use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::store::{Persist, from_blob, to_blob};
use crate::{Error, Record};

/// Serialises migrations ("AUMM").
const MIGRATION_LOCK: i64 = 0x4155_4d4d;
/// Serialises writers, so that counter numbers become visible in order ("AUMW").
const WRITE_LOCK: i64 = 0x4155_4d57;

/// Each migration is applied in the same transaction as its `memory_schema` row; an
/// applied one is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the records and the counter their `seq` and `version` share.
    r"
    CREATE SEQUENCE memory_version;
    CREATE TABLE memory_items (
        seq       BIGINT  PRIMARY KEY,
        namespace TEXT    NOT NULL,
        id        TEXT    NOT NULL,
        kind      TEXT    NOT NULL,
        text      TEXT    NOT NULL,
        vector    BYTEA   NOT NULL,
        forgotten BOOLEAN NOT NULL DEFAULT FALSE,
        version   BIGINT  NOT NULL
    );
    CREATE INDEX memory_items_version ON memory_items (version);
    CREATE UNIQUE INDEX memory_items_live ON memory_items (namespace, id) WHERE NOT forgotten;
    ",
];

type Reply<T> = sync_mpsc::SyncSender<Result<T, Error>>;

enum Job {
    Insert(Box<Record>, Reply<u64>),
    Forget(String, String, Reply<bool>),
    Since(u64, Reply<Vec<Record>>),
}

/// Memories in a PostgreSQL database. Dropping it stops its thread.
#[derive(Debug)]
pub struct PgMemory {
    jobs: mpsc::UnboundedSender<Job>,
}

fn pg(e: &tokio_postgres::Error) -> Error {
    // The database's own words: they name the statement's problem, never a secret (the
    // connection string is not in them).
    Error::Unavailable(e.to_string())
}

fn gone() -> Error {
    Error::Unavailable("the memory's database thread stopped".into())
}

impl PgMemory {
    /// Connects to the database at `url` (`postgres://...`) and applies the memory's
    /// migrations it lacks. Blocks until it is ready.
    pub fn open(url: &str) -> Result<PgMemory, Error> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Unavailable(format!("not a PostgreSQL connection string: {e}")))?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = sync_mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("aura-memory-pg".into())
            .spawn(move || worker(&config, rx, &ready_tx))
            .map_err(|e| Error::Unavailable(format!("cannot start the database thread: {e}")))?;
        ready_rx.recv().map_err(|_| gone())??;
        Ok(PgMemory { jobs })
    }

    fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, Error> {
        let (tx, rx) = sync_mpsc::sync_channel(1);
        self.jobs.send(job(tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl Persist for PgMemory {
    fn insert(&self, record: &Record) -> Result<u64, Error> {
        let record = Box::new(record.clone());
        self.ask(|reply| Job::Insert(record, reply))
    }

    fn forget(&self, namespace: &str, id: &str) -> Result<bool, Error> {
        self.ask(|reply| Job::Forget(namespace.to_owned(), id.to_owned(), reply))
    }

    fn since(&self, after: u64) -> Result<Vec<Record>, Error> {
        self.ask(|reply| Job::Since(after, reply))
    }

    fn shared(&self) -> bool {
        true
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, Error> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| pg(&e))?;
    tokio::spawn(async move {
        // It ends with an error when the server goes away; the next job reconnects.
        let _ = connection.await;
    });
    Ok(client)
}

/// The database thread: connects, migrates, says it is ready, then answers jobs until
/// every sender is gone.
fn worker(
    config: &tokio_postgres::Config,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    ready: &sync_mpsc::SyncSender<Result<(), Error>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(Error::Unavailable(format!(
                "cannot start the database runtime: {e}"
            ))));
            return;
        }
    };
    rt.block_on(async move {
        let mut client = match connect(config).await {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        if let Err(e) = migrate(&mut client).await {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        while let Some(job) = jobs.recv().await {
            if client.is_closed() {
                match connect(config).await {
                    Ok(c) => client = c,
                    Err(e) => {
                        fail(job, &e);
                        continue;
                    }
                }
            }
            match job {
                Job::Insert(record, reply) => {
                    let _ = reply.send(insert(&mut client, &record).await);
                }
                Job::Forget(namespace, id, reply) => {
                    let _ = reply.send(forget(&mut client, &namespace, &id).await);
                }
                Job::Since(after, reply) => {
                    let _ = reply.send(since(&client, after).await);
                }
            }
        }
    });
}

fn fail(job: Job, e: &Error) {
    let message = e.to_string();
    let again = || Error::Unavailable(message.clone());
    match job {
        Job::Insert(_, reply) => {
            let _ = reply.send(Err(again()));
        }
        Job::Forget(_, _, reply) => {
            let _ = reply.send(Err(again()));
        }
        Job::Since(_, reply) => {
            let _ = reply.send(Err(again()));
        }
    }
}

/// Applies the migrations the database lacks; refuses a database migrated by a newer Aura.
async fn migrate(client: &mut Client) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| pg(&e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS memory_schema (version INT PRIMARY KEY)")
        .await
        .map_err(|e| pg(&e))?;
    let version: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM memory_schema",
            &[],
        )
        .await
        .map_err(|e| pg(&e))?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Corrupt(format!(
            "the memory schema is version {version}, newer than this aura knows ({known}); upgrade aura"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await.map_err(|e| pg(&e))?;
        tx.execute(
            "INSERT INTO memory_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(|e| pg(&e))?;
    }
    tx.commit().await.map_err(|e| pg(&e))
}

/// The next number of the shared counter, under the writers' lock (held until commit).
async fn next_version(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .await
        .map_err(|e| pg(&e))?;
    Ok(tx
        .query_one("SELECT nextval('memory_version')", &[])
        .await
        .map_err(|e| pg(&e))?
        .get(0))
}

async fn insert(client: &mut Client, r: &Record) -> Result<u64, Error> {
    let tx = client.transaction().await.map_err(|e| pg(&e))?;
    let v = next_version(&tx).await?;
    let inserted = tx
        .execute(
            "INSERT INTO memory_items (seq, namespace, id, kind, text, vector, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $1)",
            &[
                &v,
                &r.namespace,
                &r.id,
                &r.kind,
                &r.text,
                &to_blob(&r.vector),
            ],
        )
        .await;
    match inserted {
        Ok(_) => {
            tx.commit().await.map_err(|e| pg(&e))?;
            Ok(v as u64)
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(Error::Exists(r.id.clone())),
        Err(e) => Err(pg(&e)),
    }
}

async fn forget(client: &mut Client, namespace: &str, id: &str) -> Result<bool, Error> {
    let tx = client.transaction().await.map_err(|e| pg(&e))?;
    let v = next_version(&tx).await?;
    let n = tx
        .execute(
            "UPDATE memory_items SET forgotten = TRUE, text = '', vector = ''::BYTEA, version = $3 \
             WHERE namespace = $1 AND id = $2 AND NOT forgotten",
            &[&namespace, &id, &v],
        )
        .await
        .map_err(|e| pg(&e))?;
    tx.commit().await.map_err(|e| pg(&e))?;
    Ok(n == 1)
}

async fn since(client: &Client, after: u64) -> Result<Vec<Record>, Error> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT seq, namespace, id, kind, text, vector, forgotten, version \
             FROM memory_items WHERE version > $1 ORDER BY seq",
            &[&after],
        )
        .await
        .map_err(|e| pg(&e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.get(0);
        let version: i64 = row.get(7);
        let vector: &[u8] = row.get(5);
        out.push(Record {
            seq: seq as u64,
            version: version as u64,
            namespace: row.get(1),
            id: row.get(2),
            kind: row.get(3),
            text: row.get(4),
            vector: from_blob(vector)?,
            forgotten: row.get(6),
        });
    }
    Ok(out)
}
