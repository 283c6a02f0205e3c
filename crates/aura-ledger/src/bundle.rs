//! The export bundle: a whole ledger in one file, verifiable offline.
//!
//! ```text
//! [8]   magic       "AURALDGR"
//! u8    version     = 2 (1 is still read)
//! [32]  node key    the Ed25519 public key that signed the checkpoints
//! frames, in commit order:
//!   u8 1, u32+ entry encoding, [32] entry hash     an entry
//!   u8 3, u32+ stub encoding, [32] entry hash      an entry whose body was pruned
//!   u8 2, signed checkpoint (129 bytes)             a checkpoint
//!   u8 0, u64 entries, u64 checkpoints              the trailer; nothing may follow
//! ```
//!
//! Version 2 added the pruned-entry frame (type 3, carrying a
//! [`PrunedEntry`](crate::entry::PrunedEntry) stub); a version 1 bundle holding one is
//! refused. Pruned entries count as entries in the trailer.
//!
//! The trailer's counts make a truncated or shortened file detectable even when it ends
//! on a frame boundary. The key in the header is informational: a verifier must be told
//! which key to trust and refuses a bundle signed by any other.

use std::io::{self, Read, Write};

use aura_core::PublicKey;
use aura_core::encoding::Decoder;
use aura_core::hash::Hash;

use crate::checkpoint::{self, SignedCheckpoint};
use crate::entry;
use crate::verify::{Failure, Location, Reason, Summary, Verifier};

pub const MAGIC: &[u8; 8] = b"AURALDGR";
pub const VERSION: u8 = 2;
/// The first version, without pruned entries; still read.
pub const VERSION_1: u8 = 1;
const FRAME_END: u8 = 0;
const FRAME_ENTRY: u8 = 1;
const FRAME_CHECKPOINT: u8 = 2;
const FRAME_PRUNED: u8 = 3;
const MAX_STUB_LEN: usize = entry::PRUNED_FIXED_LEN + entry::MAX_KIND_LEN;
const MAX_ENTRY_LEN: usize = entry::FIXED_LEN + entry::MAX_KIND_LEN + entry::MAX_BODY_LEN;

/// Writes a bundle frame by frame.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    out: W,
    entries: u64,
    checkpoints: u64,
}

impl<W: Write> BundleWriter<W> {
    pub fn new(mut out: W, key: &PublicKey) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        out.write_all(&key.to_bytes())?;
        Ok(BundleWriter {
            out,
            entries: 0,
            checkpoints: 0,
        })
    }

    pub fn entry(&mut self, encoded: &[u8], hash: &Hash) -> io::Result<()> {
        self.frame(FRAME_ENTRY, encoded, hash)
    }

    /// An entry whose body was pruned: its stub encoding and the entry hash it keeps.
    pub fn pruned(&mut self, stub: &[u8], hash: &Hash) -> io::Result<()> {
        self.frame(FRAME_PRUNED, stub, hash)
    }

    fn frame(&mut self, tag: u8, encoded: &[u8], hash: &Hash) -> io::Result<()> {
        let len = u32::try_from(encoded.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry too large"))?;
        self.out.write_all(&[tag])?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(encoded)?;
        self.out.write_all(&hash.0)?;
        self.entries += 1;
        Ok(())
    }

    pub fn checkpoint(&mut self, cp: &SignedCheckpoint) -> io::Result<()> {
        self.out.write_all(&[FRAME_CHECKPOINT])?;
        self.out.write_all(&cp.encode())?;
        self.checkpoints += 1;
        Ok(())
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[FRAME_END])?;
        self.out.write_all(&self.entries.to_be_bytes())?;
        self.out.write_all(&self.checkpoints.to_be_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One frame of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Entry {
        encoded: Vec<u8>,
        hash: Hash,
    },
    /// An entry whose body was pruned: its stub encoding and its entry hash.
    Pruned {
        stub: Vec<u8>,
        hash: Hash,
    },
    Checkpoint(SignedCheckpoint),
}

/// Reads a bundle frame by frame, reporting format errors with the entry they concern.
#[derive(Debug)]
pub struct BundleReader<R: Read> {
    input: R,
    key: PublicKey,
    version: u8,
    entries: u64,
    checkpoints: u64,
    done: bool,
}

fn io_failure(location: Location, e: &io::Error) -> Failure {
    let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
        Reason::Other("the bundle ends early (truncated?)".into())
    } else {
        Reason::Other(format!("read error: {e}"))
    };
    Failure { location, reason }
}

impl<R: Read> BundleReader<R> {
    /// Reads the header.
    pub fn new(mut input: R) -> Result<Self, Failure> {
        let at_start = Location::Entry {
            position: 0,
            agent: None,
            seq: None,
        };
        let mut header = [0u8; 8 + 1 + 32];
        input
            .read_exact(&mut header)
            .map_err(|e| io_failure(at_start.clone(), &e))?;
        if &header[..8] != MAGIC {
            return Err(Failure {
                location: at_start,
                reason: Reason::Other("not an Aura ledger bundle".into()),
            });
        }
        if header[8] != VERSION && header[8] != VERSION_1 {
            return Err(Failure {
                location: at_start,
                reason: Reason::Other(format!("unsupported bundle version {}", header[8])),
            });
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&header[9..]);
        let key = PublicKey::from_bytes(&key).map_err(|_| Failure {
            location: at_start,
            reason: Reason::Other("the header's node key is not a valid ed25519 key".into()),
        })?;
        Ok(BundleReader {
            input,
            key,
            version: header[8],
            entries: 0,
            checkpoints: 0,
            done: false,
        })
    }

    /// The key named in the header (not by itself trusted).
    pub fn header_key(&self) -> PublicKey {
        self.key
    }

    fn here(&self) -> Location {
        Location::Entry {
            position: self.entries,
            agent: None,
            seq: None,
        }
    }

    /// The next frame, or `None` after a valid trailer.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Failure> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.input
            .read_exact(&mut tag)
            .map_err(|e| io_failure(self.here(), &e))?;
        match tag[0] {
            FRAME_ENTRY => {
                let (encoded, hash) = self.read_entry_frame(MAX_ENTRY_LEN)?;
                Ok(Some(Frame::Entry { encoded, hash }))
            }
            FRAME_PRUNED if self.version != VERSION_1 => {
                let (stub, hash) = self.read_entry_frame(MAX_STUB_LEN)?;
                Ok(Some(Frame::Pruned { stub, hash }))
            }
            FRAME_CHECKPOINT => {
                let location = Location::Checkpoint {
                    after_entries: self.entries,
                    tree_size: None,
                };
                let mut buf = [0u8; checkpoint::SIGNED_LEN];
                self.input
                    .read_exact(&mut buf)
                    .map_err(|e| io_failure(location.clone(), &e))?;
                let mut d = Decoder::new(&buf);
                let cp = SignedCheckpoint::decode_from(&mut d).map_err(|e| Failure {
                    location,
                    reason: Reason::Malformed(e),
                })?;
                self.checkpoints += 1;
                Ok(Some(Frame::Checkpoint(cp)))
            }
            FRAME_END => {
                let location = Location::End {
                    entries: self.entries,
                };
                let mut counts = [0u8; 16];
                self.input
                    .read_exact(&mut counts)
                    .map_err(|e| io_failure(location.clone(), &e))?;
                let mut d = Decoder::new(&counts);
                let (entries, checkpoints) = (
                    d.u64("entries").unwrap_or_default(),
                    d.u64("checkpoints").unwrap_or_default(),
                );
                if entries != self.entries || checkpoints != self.checkpoints {
                    return Err(Failure {
                        location,
                        reason: Reason::Other(format!(
                            "the trailer counts {entries} entries and {checkpoints} checkpoints, \
                             but the bundle holds {} and {}",
                            self.entries, self.checkpoints
                        )),
                    });
                }
                let mut extra = [0u8; 1];
                match self.input.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) => {
                        return Err(Failure {
                            location,
                            reason: Reason::Other("bytes follow the trailer".into()),
                        });
                    }
                    Err(e) => return Err(io_failure(location, &e)),
                }
                self.done = true;
                Ok(None)
            }
            other => Err(Failure {
                location: self.here(),
                reason: Reason::Other(format!(
                    "unknown frame type {other} where entry #{} or a checkpoint should start",
                    self.entries
                )),
            }),
        }
    }
}

impl<R: Read> BundleReader<R> {
    /// The rest of an entry or pruned-entry frame after its tag: length, bytes, hash.
    fn read_entry_frame(&mut self, max_len: usize) -> Result<(Vec<u8>, Hash), Failure> {
        let mut len = [0u8; 4];
        self.input
            .read_exact(&mut len)
            .map_err(|e| io_failure(self.here(), &e))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max_len {
            return Err(Failure {
                location: self.here(),
                reason: Reason::Other(format!("entry frame of {len} bytes is over the limit")),
            });
        }
        let mut encoded = vec![0u8; len];
        self.input
            .read_exact(&mut encoded)
            .map_err(|e| io_failure(self.here(), &e))?;
        let mut hash = [0u8; 32];
        self.input
            .read_exact(&mut hash)
            .map_err(|e| io_failure(self.here(), &e))?;
        self.entries += 1;
        Ok((encoded, Hash(hash)))
    }
}

/// Verifies a whole bundle against the trusted node key.
pub fn verify_bundle<R: Read>(input: R, trusted: &PublicKey) -> Result<Summary, Failure> {
    let mut reader = BundleReader::new(input)?;
    if reader.header_key() != *trusted {
        return Err(Failure {
            location: Location::Entry {
                position: 0,
                agent: None,
                seq: None,
            },
            reason: Reason::Other(format!(
                "the bundle is from the node with key {}, not the trusted key {}",
                reader.header_key().fingerprint(),
                trusted.fingerprint()
            )),
        });
    }
    let mut verifier = Verifier::new(*trusted);
    while let Some(frame) = reader.next_frame()? {
        match frame {
            Frame::Entry { encoded, hash } => verifier.entry(&encoded, Some(&hash), |_, _| {})?,
            Frame::Pruned { stub, hash } => verifier.pruned_entry(&stub, &hash, |_, _| {})?,
            Frame::Checkpoint(cp) => verifier.checkpoint(&cp)?,
        }
    }
    verifier.finish()
}
