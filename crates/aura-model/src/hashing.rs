//! Streamed SHA-256 of files: bounded memory (one buffer per file being read), progress
//! reported as bytes go by, parallel across files (the callers hand files to rayon).
//!
//! SHA-256 of one file is inherently sequential, so the parallelism is across the shards
//! of a package; the `sha2` crate picks the CPU's SHA extensions at run time where there
//! are any.

use std::io::{self, Read, Write};
use std::path::Path;

use aura_core::hash::Hash;
use sha2::{Digest, Sha256};

/// Bytes read per call. Large enough that syscalls cost nothing next to hashing, small
/// enough that hashing many files at once stays within a few MiB.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// Reports progress in bytes; called from several threads at once.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// A progress callback that ignores everything.
pub fn no_progress(_: u64) {}

/// Hashes everything `reader` yields, up to `limit` bytes (reading one byte past it, to
/// tell a file that grew from one that matches). Returns the bytes hashed and the digest.
pub(crate) fn hash_reader(
    mut reader: impl Read,
    limit: u64,
    progress: Progress<'_>,
) -> io::Result<(u64, Hash)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let want = (limit.saturating_add(1) - total).min(CHUNK as u64) as usize;
        if want == 0 {
            break;
        }
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(n as u64);
    }
    Ok((total, Hash(hasher.finalize().into())))
}

/// Copies `reader` into the new file `dest` (which must not exist), hashing the bytes
/// as they are written, then syncs it. Refuses more than `limit` bytes.
pub(crate) fn copy_and_hash(
    mut reader: impl Read,
    dest: &Path,
    limit: u64,
    progress: Progress<'_>,
) -> io::Result<(u64, Hash)> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the source holds more than the {limit} bytes it declared"),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        progress(n as u64);
    }
    out.sync_all()?;
    Ok((total, Hash(hasher.finalize().into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn streams_match_one_shot_hashing_and_report_progress() {
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let seen = AtomicU64::new(0);
        let progress = |n| {
            seen.fetch_add(n, Ordering::Relaxed);
        };
        let (n, h) = hash_reader(&data[..], u64::MAX - 1, &progress).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(h, Hash::sha256(&data));
        assert_eq!(seen.load(Ordering::Relaxed), data.len() as u64);
    }

    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        let data = [7u8; 100];
        let (n, _) = hash_reader(&data[..], 10, &no_progress).unwrap();
        assert_eq!(n, 11);
    }

    #[test]
    fn copies_refuse_more_than_declared() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        let (n, h) = copy_and_hash(&b"hello"[..], &ok, 5, &no_progress).unwrap();
        assert_eq!((n, h), (5, Hash::sha256(b"hello")));
        assert_eq!(std::fs::read(&ok).unwrap(), b"hello");
        assert!(
            copy_and_hash(&b"hello"[..], &ok, 5, &no_progress).is_err(),
            "no overwrite"
        );
        let big = dir.path().join("big");
        assert!(copy_and_hash(&b"hello!"[..], &big, 5, &no_progress).is_err());
    }
}
