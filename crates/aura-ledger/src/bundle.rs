//! The export bundle: a whole ledger in one file, verifiable offline.
//!
//! ```text
//! [8]   magic       "AURALDGR"
//! u8    version     = 3 (1 and 2 are still read)
//! [32]  node key    the Ed25519 public key that signed the checkpoints
//! frames, in commit order:
//!   u8 1, u32+ entry encoding, [32] entry hash     an entry
//!   u8 3, u32+ stub encoding, [32] entry hash      an entry whose body was pruned
//!   u8 2, signed checkpoint (129 bytes)             a checkpoint
//!   u8 4, u16+ signature line                       a witness's cosignature of the
//!                                                   checkpoint just before it
//!   u8 0, u64 entries, u64 checkpoints,             the trailer; nothing may follow
//!         u64 cosignatures (version 3 only)
//! ```
//!
//! Version 2 added the pruned-entry frame (type 3, carrying a
//! [`PrunedEntry`](crate::entry::PrunedEntry) stub); a version 1 bundle holding one is
//! refused. Pruned entries count as entries in the trailer. Version 3 added the
//! cosignature frame (type 4: a c2sp.org/signed-note signature line, without its
//! newline, of a cosignature over the checkpoint note of the checkpoint before it; see
//! [`crate::note`]) and the trailer's third count; a version 1 or 2 bundle holding one
//! is refused.
//!
//! The trailer's counts make a truncated or shortened file detectable even when it ends
//! on a frame boundary. They are not signed: a bundle cut back to an earlier checkpoint,
//! with its trailer rewritten, is a valid bundle (of the shorter ledger); only a newer
//! tree head from elsewhere shows that it was cut back (see [`crate::verify`]). The key in
//! the header is informational: a verifier must be told which key to trust and refuses a
//! bundle signed by any other.

use std::io::{self, Read, Write};

use aura_core::PublicKey;
use aura_core::encoding::Decoder;
use aura_core::hash::Hash;

use crate::checkpoint::{self, SignedCheckpoint};
use crate::entry;
use crate::note::{NoteSignature, VerifierKey};
use crate::verify::{Failure, KnownHead, Location, Reason, Summary, Verifier};

pub const MAGIC: &[u8; 8] = b"AURALDGR";
pub const VERSION: u8 = 3;
/// The first version, without pruned entries; still read.
pub const VERSION_1: u8 = 1;
/// The second version, without cosignatures; still read.
pub const VERSION_2: u8 = 2;
const FRAME_END: u8 = 0;
const FRAME_ENTRY: u8 = 1;
const FRAME_CHECKPOINT: u8 = 2;
const FRAME_PRUNED: u8 = 3;
const FRAME_COSIGNATURE: u8 = 4;
/// The longest cosignature line: room for an ML-DSA-44 cosignature (2,432 bytes, 3,244
/// in base64) and a long name.
pub const MAX_COSIGNATURE_LINE: usize = 8192;
const MAX_STUB_LEN: usize = entry::PRUNED_FIXED_LEN + entry::MAX_KIND_LEN;
const MAX_ENTRY_LEN: usize = entry::FIXED_LEN + entry::MAX_KIND_LEN + entry::MAX_BODY_LEN;

/// Writes a bundle frame by frame.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    out: W,
    entries: u64,
    checkpoints: u64,
    cosignatures: u64,
    /// Whether the last frame was a checkpoint or a cosignature (a cosignature must be).
    after_checkpoint: bool,
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
            cosignatures: 0,
            after_checkpoint: false,
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
        self.after_checkpoint = false;
        Ok(())
    }

    pub fn checkpoint(&mut self, cp: &SignedCheckpoint) -> io::Result<()> {
        self.out.write_all(&[FRAME_CHECKPOINT])?;
        self.out.write_all(&cp.encode())?;
        self.checkpoints += 1;
        self.after_checkpoint = true;
        Ok(())
    }

    /// A witness's cosignature of the checkpoint just written.
    pub fn cosignature(&mut self, sig: &NoteSignature) -> io::Result<()> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
        if !self.after_checkpoint {
            return Err(invalid("a cosignature must follow its checkpoint"));
        }
        let line = sig.line();
        if line.len() > MAX_COSIGNATURE_LINE {
            return Err(invalid("the cosignature line is too long"));
        }
        self.out.write_all(&[FRAME_COSIGNATURE])?;
        self.out.write_all(&(line.len() as u16).to_be_bytes())?;
        self.out.write_all(line.as_bytes())?;
        self.cosignatures += 1;
        Ok(())
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[FRAME_END])?;
        self.out.write_all(&self.entries.to_be_bytes())?;
        self.out.write_all(&self.checkpoints.to_be_bytes())?;
        self.out.write_all(&self.cosignatures.to_be_bytes())?;
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
    /// A witness's cosignature of the checkpoint before it.
    Cosignature(NoteSignature),
}

/// Reads a bundle frame by frame, reporting format errors with the entry they concern.
#[derive(Debug)]
pub struct BundleReader<R: Read> {
    input: R,
    key: PublicKey,
    version: u8,
    entries: u64,
    checkpoints: u64,
    cosignatures: u64,
    after_checkpoint: bool,
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
        if ![VERSION, VERSION_2, VERSION_1].contains(&header[8]) {
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
            cosignatures: 0,
            after_checkpoint: false,
            done: false,
        })
    }

    /// The bundle's format version.
    pub fn version(&self) -> u8 {
        self.version
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
        let after_checkpoint = std::mem::replace(&mut self.after_checkpoint, false);
        match tag[0] {
            FRAME_ENTRY => {
                let (encoded, hash) = self.read_entry_frame(MAX_ENTRY_LEN)?;
                Ok(Some(Frame::Entry { encoded, hash }))
            }
            FRAME_PRUNED if self.version != VERSION_1 => {
                let (stub, hash) = self.read_entry_frame(MAX_STUB_LEN)?;
                Ok(Some(Frame::Pruned { stub, hash }))
            }
            FRAME_COSIGNATURE if self.version >= VERSION => {
                let location = Location::Checkpoint {
                    after_entries: self.entries,
                    tree_size: None,
                };
                let fail = |why: String| Failure {
                    location: location.clone(),
                    reason: Reason::Other(why),
                };
                if !after_checkpoint {
                    return Err(fail("a cosignature follows no checkpoint".into()));
                }
                let mut len = [0u8; 2];
                self.input
                    .read_exact(&mut len)
                    .map_err(|e| io_failure(location.clone(), &e))?;
                let len = u16::from_be_bytes(len) as usize;
                if len > MAX_COSIGNATURE_LINE {
                    return Err(fail(format!(
                        "a cosignature line of {len} bytes is over the limit"
                    )));
                }
                let mut line = vec![0u8; len];
                self.input
                    .read_exact(&mut line)
                    .map_err(|e| io_failure(location.clone(), &e))?;
                let sig = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| NoteSignature::parse_line(l).ok())
                    .ok_or_else(|| fail("a cosignature line is malformed".into()))?;
                self.cosignatures += 1;
                self.after_checkpoint = true;
                Ok(Some(Frame::Cosignature(sig)))
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
                self.after_checkpoint = true;
                Ok(Some(Frame::Checkpoint(cp)))
            }
            FRAME_END => {
                let location = Location::End {
                    entries: self.entries,
                };
                let mut counts = [0u8; 24];
                let counted = if self.version >= VERSION { 24 } else { 16 };
                self.input
                    .read_exact(&mut counts[..counted])
                    .map_err(|e| io_failure(location.clone(), &e))?;
                let mut d = Decoder::new(&counts);
                let (entries, checkpoints, cosignatures) = (
                    d.u64("entries").unwrap_or_default(),
                    d.u64("checkpoints").unwrap_or_default(),
                    d.u64("cosignatures").unwrap_or_default(),
                );
                if entries != self.entries
                    || checkpoints != self.checkpoints
                    || cosignatures != self.cosignatures
                {
                    return Err(Failure {
                        location,
                        reason: Reason::Other(format!(
                            "the trailer counts {entries} entries, {checkpoints} checkpoints and \
                             {cosignatures} cosignatures, but the bundle holds {}, {} and {}",
                            self.entries, self.checkpoints, self.cosignatures
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
    verify_bundle_with(input, trusted, &Expect::default())
}

/// What a verifier knows besides the node's key.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Witnesses whose cosignatures in the bundle are verified (others are ignored).
    pub witnesses: Vec<VerifierKey>,
    /// Tree heads from elsewhere that the bundle must agree with and reach.
    pub heads: Vec<KnownHead>,
}

/// Verifies a whole bundle against the trusted node key, the cosignatures of the trusted
/// witnesses in it, and tree heads known from elsewhere.
pub fn verify_bundle_with<R: Read>(
    input: R,
    trusted: &PublicKey,
    expect: &Expect,
) -> Result<Summary, Failure> {
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
    let mut verifier = Verifier::new(*trusted)
        .with_witnesses(expect.witnesses.clone())
        .expect_heads(expect.heads.clone());
    while let Some(frame) = reader.next_frame()? {
        match frame {
            Frame::Entry { encoded, hash } => verifier.entry(&encoded, Some(&hash), |_, _| {})?,
            Frame::Pruned { stub, hash } => verifier.pruned_entry(&stub, &hash, |_, _| {})?,
            Frame::Checkpoint(cp) => verifier.checkpoint(&cp)?,
            Frame::Cosignature(sig) => verifier.cosignature(&sig)?,
        }
    }
    verifier.finish()
}
