//! The published checkpoint: the node's latest signed checkpoint, as a C2SP signed note,
//! kept in a file outside the database, and the check that the database has not fallen
//! behind it.
//!
//! A ledger is its own evidence, so a database restored from an older copy (cut back to
//! an earlier checkpoint) verifies: every entry and checkpoint in it is genuine. What
//! catches it is a newer checkpoint kept somewhere the copy did not come from. The store
//! writes one after its commits and, when it opens for writing, refuses a database whose
//! tree is smaller than the published checkpoint or whose root at that size differs.
//!
//! Writing costs no fsync per append: a thread of its own takes the latest checkpoint
//! from the writer and writes it at most once per [`INTERVAL`] (and once more when the
//! store closes), each time to a temporary file that is fsync'd and renamed over the
//! last, so the file is always one whole signed note. The writer only hands the
//! checkpoint over after its commit is durable, so the file is never ahead of the
//! database. The price is that the last second of commits before a crash may not be
//! published yet; a database cut back by less than that goes unnoticed locally.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aura_core::PublicKey;
use aura_core::keystore::Signer;
use aura_ledger::SignedCheckpoint;
use aura_ledger::note;
use rusqlite::Connection;

use super::{State, range_hash};
use crate::Error;

/// The most often the published checkpoint is rewritten.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Checks the store's state against the checkpoint published at `file`, if there is one.
pub(crate) fn check(
    conn: &Connection,
    db: &Path,
    file: &Path,
    key: &PublicKey,
    state: &State,
) -> Result<(), Error> {
    let bytes = match read_limited(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                context: format!("cannot read the published checkpoint {}", file.display()),
                source,
            });
        }
    };
    let bad = |detail: String| Error::BadPublished {
        path: file.to_owned(),
        detail,
    };
    let published = note::open_checkpoint(&bytes, key).map_err(|e| bad(e.to_string()))?;
    let size = published.head.size;
    if state.size < size {
        return Err(Error::CutBack {
            entries: state.size,
            published: size,
            path: file.to_owned(),
        });
    }
    if size > 0 && range_hash(conn, db, 0, size)? != published.head.root {
        return Err(Error::Forked {
            size,
            path: file.to_owned(),
        });
    }
    Ok(())
}

fn read_limited(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    File::open(file)?
        .take(note::MAX_NOTE_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What the writer holds: hands each committed checkpoint to the publishing thread.
#[derive(Debug)]
pub(crate) struct Publisher {
    tx: Option<mpsc::Sender<SignedCheckpoint>>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the publishing thread; `current` is published at once if it is newer than
    /// what the file holds, so a store upgraded to publishing is covered from the start.
    pub(crate) fn spawn(
        file: PathBuf,
        signer: Arc<Signer>,
        current: Option<SignedCheckpoint>,
    ) -> Result<Publisher, Error> {
        let (tx, rx) = mpsc::channel::<SignedCheckpoint>();
        let thread = std::thread::Builder::new()
            .name("aura-store-publish".into())
            .spawn(move || run(&file, &signer, &rx))
            .map_err(|source| Error::Io {
                context: "cannot start the store's publishing thread".into(),
                source,
            })?;
        if let Some(cp) = current {
            let _ = tx.send(cp);
        }
        Ok(Publisher {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A checkpoint that is durable in the database.
    pub(crate) fn committed(&self, cp: SignedCheckpoint) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(cp);
        }
    }
}

impl Drop for Publisher {
    /// Publishes the last checkpoint handed over, and waits for it.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(file: &Path, signer: &Signer, rx: &mpsc::Receiver<SignedCheckpoint>) {
    let mut written = published_size(file, &signer.public_key());
    let mut pending: Option<SignedCheckpoint> = None;
    let mut next_write = Instant::now();
    loop {
        let received = match pending {
            // Something waits to be written: wait for newer ones until it is due.
            Some(_) => {
                match rx.recv_timeout(next_write.saturating_duration_since(Instant::now())) {
                    Ok(cp) => Some(cp),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        if let Some(cp) = pending.take() {
                            let _ = write(file, signer, &cp);
                        }
                        return;
                    }
                }
            }
            None => match rx.recv() {
                Ok(cp) => Some(cp),
                Err(_) => return,
            },
        };
        if let Some(cp) = received {
            // Sizes only grow; an older one (never sent, but cheap to guard) is dropped.
            if cp.checkpoint.tree_size > written
                && pending.is_none_or(|p| p.checkpoint.tree_size < cp.checkpoint.tree_size)
            {
                pending = Some(cp);
            }
        }
        if pending.is_some() && Instant::now() >= next_write {
            if let Some(cp) = pending.take() {
                // A failed write leaves the last published checkpoint in place, which is
                // older and so still safe; the next checkpoint tries again.
                if write(file, signer, &cp).is_ok() {
                    written = cp.checkpoint.tree_size;
                }
            }
            next_write = Instant::now() + INTERVAL;
        }
    }
}

/// The size of the checkpoint already in the file (0 if none or unreadable).
fn published_size(file: &Path, key: &PublicKey) -> u64 {
    read_limited(file)
        .ok()
        .and_then(|b| note::open_checkpoint(&b, key).ok())
        .map_or(0, |p| p.head.size)
}

/// Writes the note to a temporary file, fsyncs it, renames it over `file` and fsyncs
/// the directory, so that the file is always one whole note, old or new.
fn write(file: &Path, signer: &Signer, cp: &SignedCheckpoint) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let note = note::checkpoint_note(cp, signer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
        .encode();
    let dir = file.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = file.with_extension("partial");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(note.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, file)?;
    File::open(dir)?.sync_all()
}
