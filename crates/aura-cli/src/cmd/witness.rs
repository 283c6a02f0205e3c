//! `aura ledger witness`: cosign other nodes' checkpoints as a witness
//! (c2sp.org/tlog-witness), and, on a log node, ask for and keep cosignatures.
//!
//! ```text
//! witness side                          log side
//! init, key, add-log, logs              request --old N  -> add-checkpoint request
//! cosign REQUEST -> cosigned note       attach COSIGNED  -> kept for exports
//! latest ORIGIN  -> last cosigned note
//! ```
//!
//! The witness's state is `<home>/witness/state.json`: its name and, per log it follows,
//! the log's verifier key and the head it last cosigned (with the cosigned note). A
//! cosignature is only made after the new head is durably recorded, and the check and
//! the update run under a lock, so two requests can never both extend the same head
//! (tlog-witness's rollback race).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aura_core::door::{Clock as _, OsEntropy, SystemClock};
use aura_core::hash::Hash;
use aura_core::keystore::KeyName;
use aura_ledger::merkle;
use aura_ledger::note::{self, KeyType, Note, VerifierKey};
use aura_ledger::witness::{self, AddCheckpoint, Log, Refusal};
use aura_store::Store as _;
use serde::{Deserialize, Serialize};

use crate::home::Home;
use crate::output::Output;
use crate::{VerificationFailed, hinted};

const KEY: &str = "witness";
/// The largest request or note read from a file.
const MAX_INPUT: u64 = 1 << 20;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make this node a witness: create its key `witness` and print its verifier key
    Init {
        /// The witness's name, a schema-less URL [default: aura.witness/<key fingerprint>]
        #[arg(long)]
        name: Option<String>,
        /// Seal the witness key with a passphrase
        #[arg(long)]
        encrypt: bool,
    },
    /// Print this witness's verifier key, for those who check its cosignatures
    Key,
    /// Follow a log: cosign its checkpoints from now on
    AddLog {
        /// The log is an Aura node with this public key (hex, from `aura key show`)
        #[arg(
            long,
            value_name = "KEY",
            conflicts_with = "vkey",
            required_unless_present = "vkey"
        )]
        public_key: Option<String>,
        /// The log's signed-note verifier key, <name>+<key id>+<base64 key>
        #[arg(long, value_name = "VKEY")]
        vkey: Option<String>,
        /// The log's origin line [default: the key's name]
        #[arg(long)]
        origin: Option<String>,
    },
    /// List the logs this witness follows and what it last cosigned for each
    Logs,
    /// Cosign a log's checkpoint if it extends the last one cosigned for that log
    ///
    /// The input is a c2sp.org/tlog-witness add-checkpoint request, as `aura ledger witness
    /// request` writes it: `old <size>`, consistency proof lines, an empty line, the
    /// checkpoint note. Prints the cosigned note.
    #[command(verbatim_doc_comment)]
    Cosign {
        /// The request (`-` for stdin)
        file: PathBuf,
        /// Print only the cosignature line (tlog-witness's response body)
        #[arg(long)]
        lines: bool,
        /// Write the cosigned note to this file instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the last checkpoint this witness cosigned for a log (a head to check the
    /// log's exports against, with `aura ledger verify --checkpoint`)
    Latest {
        /// The log's origin (see `aura ledger witness logs`)
        origin: String,
    },
    /// On a log node: write a request for a witness, for the latest checkpoint with a
    /// consistency proof from the size the witness last cosigned
    Request {
        /// The tree size the witness last cosigned for this node (0 the first time)
        #[arg(long, default_value_t = 0)]
        old: u64,
        /// Write the request to this file instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// On a log node: keep a witness's cosignatures of one of this node's checkpoints, so
    /// that exports carry them
    Attach {
        /// The cosigned note the witness returned (`-` for stdin)
        file: PathBuf,
    },
}

pub(crate) async fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    home.require_init()?;
    match cmd {
        Command::Init { name, encrypt } => init(home, out, name, encrypt),
        Command::Key => {
            let key = witness_key(home)?;
            out.print(&Shown::of(&key), || format!("{key}\n"))
        }
        Command::AddLog {
            public_key,
            vkey,
            origin,
        } => add_log(home, out, public_key, vkey, origin),
        Command::Logs => logs(home, out),
        Command::Cosign {
            file,
            lines,
            output,
        } => cosign(home, out, &file, lines, output),
        Command::Latest { origin } => latest(home, out, &origin),
        Command::Request { old, output } => request(home, out, old, output).await,
        Command::Attach { file } => attach(home, out, &file).await,
    }
}

#[derive(Serialize)]
struct Shown {
    name: String,
    vkey: String,
    public_key: String,
}

impl Shown {
    fn of(key: &VerifierKey) -> Shown {
        Shown {
            name: key.name.clone(),
            vkey: key.to_string(),
            public_key: key.key.to_hex(),
        }
    }
}

/// The witness's state file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// The witness's name (the key name of its cosignatures).
    name: String,
    /// Per log origin.
    logs: BTreeMap<String, LogState>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogState {
    /// The log's verifier key.
    vkey: String,
    /// The last cosigned head: size, root (hex), when, and the cosigned note.
    size: u64,
    root: String,
    cosigned_at: Option<u64>,
    note: Option<String>,
}

fn dir(home: &Home) -> PathBuf {
    home.dir().join("witness")
}

fn state_path(home: &Home) -> PathBuf {
    dir(home).join("state.json")
}

fn load(home: &Home) -> anyhow::Result<State> {
    let path = state_path(home);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(hinted(
                "this node is not a witness yet",
                "run `aura ledger witness init` first",
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_str(&text).map_err(|e| {
        hinted(
            format!("the witness state {} is damaged: {e}", path.display()),
            "restore it from a backup; a witness that forgets what it cosigned can be fooled",
        )
    })
}

fn save(home: &Home, state: &State) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(state)?;
    json.push(b'\n');
    write_atomically(&state_path(home), &json)
}

/// Holds the witness's lock until dropped: one request at a time checks and updates.
fn lock(home: &Home) -> anyhow::Result<File> {
    let path = dir(home).join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(f)
}

/// Writes `bytes` to `path` so that it is always old or new, never half: a temporary
/// file, fsync'd, renamed over it, and the directory fsync'd.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a file (or stdin for `-`), at most `MAX_INPUT` bytes.
pub(crate) fn read_input(file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
    } else {
        File::open(file)
            .and_then(|f| f.take(MAX_INPUT + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    if bytes.len() as u64 > MAX_INPUT {
        return Err(hinted(
            format!("{} is larger than 1 MiB", file.display()),
            "give a request or a checkpoint note, nothing else",
        ));
    }
    Ok(bytes)
}

fn witness_key(home: &Home) -> anyhow::Result<VerifierKey> {
    let state = load(home)?;
    let key = home.keystore().public_key(&KeyName::new(KEY)?)?;
    Ok(VerifierKey::new(&state.name, KeyType::Cosignature, key)?)
}

fn init(home: &Home, out: &Output, name: Option<String>, encrypt: bool) -> anyhow::Result<()> {
    let ks = home.keystore();
    let key_name = KeyName::new(KEY)?;
    let key = if ks.path_of(&key_name).exists() {
        ks.public_key(&key_name)?
    } else {
        let pass = encrypt.then(|| home.passphrase(KEY, true)).transpose()?;
        ks.create(&key_name, pass.as_ref(), &OsEntropy)?
    };
    let existing = match fs::metadata(state_path(home)) {
        Ok(_) => Some(load(home)?),
        Err(_) => None,
    };
    let name = match (existing.as_ref(), name) {
        (Some(s), Some(n)) if s.name != n => {
            return Err(hinted(
                format!("this node is already the witness `{}`", s.name),
                "a witness keeps its name: its cosignatures carry it",
            ));
        }
        (Some(s), _) => s.name.clone(),
        (None, Some(n)) => n,
        (None, None) => format!("aura.witness/{}", key.fingerprint()),
    };
    let vkey = VerifierKey::new(&name, KeyType::Cosignature, key).map_err(|e| {
        hinted(
            e.to_string(),
            "name the witness like a URL without a scheme, e.g. witness.example.org/w1",
        )
    })?;
    if existing.is_none() {
        fs::create_dir_all(dir(home))?;
        save(
            home,
            &State {
                name,
                logs: BTreeMap::new(),
            },
        )?;
    }
    out.print(&Shown::of(&vkey), || {
        format!(
            "witness {}\nverifier key {vkey}\ngive the verifier key to those who check its cosignatures (aura ledger verify --witness-key)\n",
            vkey.name
        )
    })
}

fn add_log(
    home: &Home,
    out: &Output,
    public_key: Option<String>,
    vkey: Option<String>,
    origin: Option<String>,
) -> anyhow::Result<()> {
    let key = match (public_key, vkey) {
        (Some(hex), _) => VerifierKey::aura_node(hex.parse().map_err(|_| {
            hinted(
                format!("`{hex}` is not an ed25519 public key"),
                "give the 64 hex digits `aura key show` prints on the log's node",
            )
        })?),
        (None, Some(v)) => VerifierKey::parse(&v).map_err(|e| {
            hinted(
                format!("`{v}` is not a verifier key: {e}"),
                "a verifier key reads <name>+<8 hex digits>+<base64>",
            )
        })?,
        (None, None) => unreachable!("clap requires one"),
    };
    if key.kind != KeyType::Ed25519 {
        return Err(hinted(
            "that is a witness's key (type 0x04), not a log's",
            "give the log's checkpoint-signing key (type 0x01)",
        ));
    }
    let origin = origin.unwrap_or_else(|| key.name.clone());
    let _guard = lock(home)?;
    let mut state = load(home)?;
    if let Some(existing) = state.logs.get(&origin) {
        if existing.vkey == key.to_string() {
            return out.print(&Shown::of(&key), || format!("already following {origin}\n"));
        }
        return Err(hinted(
            format!("this witness already follows {origin} with another key"),
            "a log's key does not change; a new key is a new log with a new origin",
        ));
    }
    state.logs.insert(
        origin.clone(),
        LogState {
            vkey: key.to_string(),
            size: 0,
            root: merkle::empty_root().to_hex(),
            cosigned_at: None,
            note: None,
        },
    );
    save(home, &state)?;
    out.print(&Shown::of(&key), || {
        format!("following {origin}; nothing cosigned yet (the first request is `old 0`)\n")
    })
}

#[derive(Serialize)]
struct LogView<'a> {
    origin: &'a str,
    vkey: &'a str,
    size: u64,
    root: &'a str,
    cosigned_at: Option<u64>,
}

fn logs(home: &Home, out: &Output) -> anyhow::Result<()> {
    let state = load(home)?;
    let views: Vec<LogView<'_>> = state
        .logs
        .iter()
        .map(|(origin, l)| LogView {
            origin,
            vkey: &l.vkey,
            size: l.size,
            root: &l.root,
            cosigned_at: l.cosigned_at,
        })
        .collect();
    out.print(&views, || {
        if views.is_empty() {
            return "this witness follows no log yet (aura ledger witness add-log)\n".into();
        }
        views
            .iter()
            .map(|v| match v.cosigned_at {
                Some(t) => format!(
                    "{}  cosigned {} (root {}) at {}\n",
                    v.origin,
                    crate::output::count(v.size, "entry", "entries"),
                    &v.root[..12],
                    aura_core::Timestamp::from_secs(t).to_rfc3339_millis()
                ),
                None => format!("{}  nothing cosigned yet\n", v.origin),
            })
            .collect()
    })
}

/// A refusal as the CLI reports it: the log misbehaving is a verification failure (exit
/// code 3); a request out of step gets a hint.
fn refusal(r: &Refusal) -> anyhow::Error {
    match r {
        Refusal::Conflict { latest, .. } => hinted(
            format!("refused: {r}"),
            format!(
                "make the request from size {latest}: `aura ledger witness request --old {latest}` on the log's node"
            ),
        ),
        Refusal::UnknownLog(_) => hinted(
            format!("refused: {r}"),
            "follow it first: `aura ledger witness add-log`",
        ),
        Refusal::Malformed(_) | Refusal::OldTooLarge { .. } => hinted(
            format!("refused: {r}"),
            "give the request `aura ledger witness request` writes",
        ),
        Refusal::NotSigned(_) | Refusal::Fork { .. } | Refusal::Inconsistent { .. } => {
            VerificationFailed(format!("refused to cosign: {r}")).into()
        }
    }
}

#[derive(Serialize)]
struct Cosigned<'a> {
    origin: &'a str,
    tree_size: u64,
    root: String,
    cosigned_at: u64,
    cosigned_note: &'a str,
}

fn cosign(
    home: &Home,
    out: &Output,
    file: &Path,
    lines: bool,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let request = AddCheckpoint::parse(&read_input(file)?).map_err(|e| refusal(&e))?;
    let signer = home.signer(&KeyName::new(KEY)?)?;
    let _guard = lock(home)?;
    let mut state = load(home)?;
    let origin = note::TreeHead::parse(request.note.text())
        .map_err(|e| refusal(&Refusal::Malformed(e.to_string())))?
        .origin;
    let Some(log_state) = state.logs.get(&origin) else {
        return Err(refusal(&Refusal::UnknownLog(origin)));
    };
    let log = Log {
        origin: origin.clone(),
        key: VerifierKey::parse(&log_state.vkey)
            .with_context(|| format!("the witness state's key for {origin} is damaged"))?,
    };
    let last = match log_state.cosigned_at {
        None => None,
        Some(_) => {
            let root: Hash = log_state.root.parse().map_err(|_| {
                hinted(
                    format!("the witness state's last root for {origin} is damaged"),
                    "restore the witness state from a backup",
                )
            })?;
            Some((log_state.size, root))
        }
    };
    let head = witness::check(&log, last, &request).map_err(|e| refusal(&e))?;
    let now = SystemClock.now().as_secs();
    let sig = note::cosign(request.note.text(), now, &state.name, &signer)?;
    let mut cosigned = request.note;
    cosigned.add_signature(sig.clone());
    let cosigned = cosigned.encode();
    // Recorded before the cosignature leaves: a witness that signed and then forgot
    // could be made to cosign a smaller tree next.
    state.logs.insert(
        origin.clone(),
        LogState {
            vkey: log_state.vkey.clone(),
            size: head.size,
            root: head.root.to_hex(),
            cosigned_at: Some(now),
            note: Some(cosigned.clone()),
        },
    );
    save(home, &state)?;
    let text = if lines {
        format!("{}\n", sig.line())
    } else {
        cosigned.clone()
    };
    let view = Cosigned {
        origin: &origin,
        tree_size: head.size,
        root: head.root.to_hex(),
        cosigned_at: now,
        cosigned_note: &cosigned,
    };
    match output {
        Some(path) => {
            write_atomically(&path, text.as_bytes())?;
            out.print(&view, || {
                format!(
                    "cosigned {origin} at {}; wrote {}\n",
                    crate::output::count(head.size, "entry", "entries"),
                    path.display()
                )
            })
        }
        None => out.print(&view, || text),
    }
}

fn latest(home: &Home, out: &Output, origin: &str) -> anyhow::Result<()> {
    let state = load(home)?;
    let Some(l) = state.logs.get(origin) else {
        return Err(hinted(
            format!("this witness follows no log `{origin}`"),
            "see `aura ledger witness logs`",
        ));
    };
    let Some(n) = &l.note else {
        return Err(hinted(
            format!("this witness has cosigned nothing for {origin} yet"),
            "cosign a request first: `aura ledger witness cosign`",
        ));
    };
    #[derive(Serialize)]
    struct Latest<'a> {
        origin: &'a str,
        tree_size: u64,
        cosigned_note: &'a str,
    }
    out.print(
        &Latest {
            origin,
            tree_size: l.size,
            cosigned_note: n,
        },
        || n.clone(),
    )
}

async fn request(
    home: &Home,
    out: &Output,
    old: u64,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let signer = home.signer(&KeyName::node())?;
    let store = home.open_store_read_only()?;
    let Some(cp) = store.latest_checkpoint().await? else {
        return Err(hinted(
            "the ledger is empty: nothing has been signed yet",
            "append an entry with `aura ledger append`",
        ));
    };
    let size = cp.checkpoint.tree_size;
    if old > size {
        return Err(hinted(
            format!("the ledger has {size} entries, fewer than --old {old}"),
            "give the size the witness last cosigned; a witness ahead of its log has seen a cut-back or a fork",
        ));
    }
    let proof = if old == 0 {
        Vec::new()
    } else {
        store
            .consistency_proof(old, Some(size))
            .await
            .map_err(|e| {
                hinted(
                    format!("cannot prove consistency from {old} entries: {e}"),
                    "give the size of a checkpoint this node signed (the witness's last cosigned size)",
                )
            })?
            .path
    };
    let req = AddCheckpoint {
        old,
        proof,
        note: note::checkpoint_note(&cp, &signer)?,
    };
    let text = req.encode();
    #[derive(Serialize)]
    struct Request<'a> {
        old: u64,
        tree_size: u64,
        request: &'a str,
    }
    let view = Request {
        old,
        tree_size: size,
        request: &text,
    };
    match output {
        Some(path) => {
            write_atomically(&path, text.as_bytes())?;
            out.print(&view, || {
                format!(
                    "wrote the request for the checkpoint of {} (proof from {old}) to {}\nhave the witness run: aura ledger witness cosign {}\n",
                    crate::output::count(size, "entry", "entries"),
                    path.display(),
                    path.display()
                )
            })
        }
        None => out.print(&view, || text.clone()),
    }
}

/// Where a log node keeps the cosigned notes of its checkpoints.
pub(crate) fn cosignatures_dir(home: &Home) -> PathBuf {
    home.dir().join("cosignatures")
}

async fn attach(home: &Home, out: &Output, file: &Path) -> anyhow::Result<()> {
    let key = home.node_public_key()?;
    let bytes = read_input(file)?;
    let opened = note::open_checkpoint(&bytes, &key).map_err(|e| {
        VerificationFailed(format!(
            "{} is not a checkpoint note of this node: {e}",
            file.display()
        ))
    })?;
    let store = home.open_store_read_only()?;
    let size = opened.head.size;
    match store.checkpoint(size).await? {
        Some(cp) if cp.checkpoint.root == opened.head.root => {}
        _ => {
            return Err(VerificationFailed(format!(
                "the cosigned checkpoint of {size} entries is not one of this ledger's checkpoints (another history?)"
            ))
            .into());
        }
    }
    let origin = VerifierKey::aura_node(key).name;
    let path = cosignatures_dir(home).join(format!("{size}.note"));
    // Join the cosignatures already kept for this checkpoint (a kept file that no longer
    // opens is replaced: what it held is not evidence any more).
    let mut kept = match fs::read(&path) {
        Ok(b) => note::open_checkpoint(&b, &key).ok().map(|o| o.note),
        Err(_) => None,
    }
    .unwrap_or_else(|| {
        let mut own = opened.note.clone();
        own.signatures.retain(|s| s.name == origin);
        own
    });
    let mut added = 0;
    for sig in opened.note.signatures.iter().filter(|s| s.name != origin) {
        if !kept.signatures.contains(sig) {
            kept.add_signature(sig.clone());
            added += 1;
        }
    }
    let witnesses: Vec<String> = kept
        .signatures
        .iter()
        .filter(|s| s.name != origin)
        .map(|s| s.name.clone())
        .collect();
    if witnesses.is_empty() {
        return Err(hinted(
            format!("{} carries no cosignature", file.display()),
            "attach the note `aura ledger witness cosign` printed on the witness",
        ));
    }
    write_atomically(&path, kept.encode().as_bytes())?;
    #[derive(Serialize)]
    struct Attached<'a> {
        tree_size: u64,
        added: u64,
        witnesses: &'a [String],
    }
    out.print(
        &Attached {
            tree_size: size,
            added,
            witnesses: &witnesses,
        },
        || {
            format!(
                "kept {} of the checkpoint of {} (now by {}); exports carry them\n",
                crate::output::count(added, "new cosignature", "new cosignatures"),
                crate::output::count(size, "entry", "entries"),
                witnesses.join(", ")
            )
        },
    )
}

/// The cosigned notes kept for exports, as files and their bytes.
pub(crate) fn kept_notes(home: &Home) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = cosignatures_dir(home);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        if path.extension().and_then(|x| x.to_str()) == Some("note") {
            let bytes = read_input(&path)?;
            out.push((path, bytes));
        }
    }
    out.sort();
    Ok(out)
}

/// The cosignatures kept for exports, by tree size. A kept note that no longer opens is
/// an error: it was damaged, and exporting without it would hide that.
pub(crate) fn kept_cosignatures(home: &Home) -> anyhow::Result<aura_store::sqlite::Cosignatures> {
    let key = home.node_public_key()?;
    let origin = VerifierKey::aura_node(key).name;
    let mut out = aura_store::sqlite::Cosignatures::new();
    for (path, bytes) in kept_notes(home)? {
        let opened: Note = note::open_checkpoint(&bytes, &key)
            .map_err(|e| {
                hinted(
                    format!("the kept cosignatures {} are damaged: {e}", path.display()),
                    "attach the witness's cosigned note again, or move the file away",
                )
            })?
            .note;
        let head = note::TreeHead::parse(opened.text())?;
        let sigs = opened
            .signatures
            .into_iter()
            .filter(|s| s.name != origin)
            .collect();
        out.insert(head.size, (head.root, sigs));
    }
    Ok(out)
}
