//! `aura ledger`: append to, read, verify, export and prove the signed ledger.

use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use aura_core::door::{Clock as _, SystemClock};
use aura_core::{AgentId, PublicKey};
use aura_engine::audit::{SignaturesChecked, check_entry_signatures};
use aura_ledger::SignedCheckpoint;
use aura_ledger::bundle::{BundleReader, Expect, Frame, verify_bundle_with};
use aura_ledger::entry::{Kind, MAX_BODY_LEN};
use aura_ledger::note::{KeyType, VerifierKey};
use aura_ledger::proof::{ConsistencyProof, InclusionProof, Proof};
use aura_ledger::verify::KnownHead;
use aura_store::{AppendReceipt, EntryRef, NewEntry, Seq, Store as _, StoredEntry, Verification};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::home::Home;
use crate::output::{Output, count};
use crate::{VerificationFailed, hinted};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Append entries given as JSON lines on stdin
    ///
    /// Each line is an object: {"agent": "node" | "agent_…", "kind": "note", "body": <any JSON>}.
    /// Optional: "seq" (refused unless it is exactly the agent's next number) and
    /// "body_base64" (raw bytes instead of "body"). Without --stream every line is checked
    /// first and all are appended atomically, or none is.
    #[command(verbatim_doc_comment)]
    Append {
        /// Append as lines arrive, in batches, acknowledging each entry once it is durable
        #[arg(long)]
        stream: bool,
        /// In --stream mode, the most entries to append at once
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
    },
    /// Show entries, or one entry in full
    Show {
        /// One entry: #INDEX, INDEX or AGENT:SEQ (like node:1)
        entry: Option<String>,
        /// Only this agent's entries (`node` for the node's own)
        #[arg(long)]
        agent: Option<String>,
        /// Start at this index (or, with --agent, this seq)
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Show at most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show the last entries, and with --follow new ones as they arrive
    Tail {
        /// How many entries
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        lines: u64,
        /// Keep printing new entries until interrupted
        #[arg(short, long)]
        follow: bool,
        /// Only this agent's entries
        #[arg(long)]
        agent: Option<String>,
    },
    /// Verify every entry, chain, checkpoint and signature, of this node or of a bundle
    Verify {
        /// Verify this exported bundle instead of the local ledger
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
        /// Trust checkpoints signed by this key (hex) [default: this node's key]
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
        /// Check the cosignatures of this witness (its verifier key, from `aura ledger
        /// witness key`); repeatable
        #[arg(long, value_name = "VKEY")]
        witness_key: Vec<String>,
        /// A checkpoint note of this node from elsewhere (a witness's `latest`, a copy
        /// kept aside): the ledger must reach it and agree with it; repeatable
        #[arg(long, value_name = "FILE")]
        checkpoint: Vec<PathBuf>,
    },
    /// Export the whole ledger as a bundle file that anyone can verify offline
    Export {
        /// Where to write the bundle (`-` for stdout)
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Prove that an entry is in the signed ledger
    Proof {
        /// The entry: #INDEX, INDEX or AGENT:SEQ
        entry: String,
        /// Prove it against the checkpoint of this tree size [default: the latest]
        #[arg(long)]
        size: Option<u64>,
        /// Write the proof to this file instead of printing it as base64
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Prove that the signed ledger of OLD entries is a prefix of a later one
    Consistency {
        /// Tree size of the older checkpoint
        old: u64,
        /// Tree size of the newer checkpoint [default: the latest]
        new: Option<u64>,
        /// Write the proof to this file instead of printing it as base64
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check a proof offline, with only the node's public key
    CheckProof {
        /// The proof file (binary or base64; `-` for stdin)
        file: PathBuf,
        /// The node's public key (hex) [default: this node's key]
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
    },
    /// Show the latest signed checkpoint
    Checkpoint {
        /// Print it as a C2SP signed note (tlog-checkpoint), with its verifier key
        #[arg(long)]
        note: bool,
    },
    /// Witness other nodes' checkpoints, or ask witnesses to cosign this node's
    #[command(subcommand)]
    Witness(super::witness::Command),
}

pub(crate) async fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Append { stream: false, .. } => append_all(home, out).await,
        Command::Append {
            stream: true,
            batch,
        } => append_stream(home, out, batch as usize).await,
        Command::Show {
            entry,
            agent,
            from,
            limit,
        } => show(home, out, entry, agent, from, limit).await,
        Command::Tail {
            lines,
            follow,
            agent,
        } => tail(home, out, lines, follow, agent).await,
        Command::Verify {
            bundle,
            public_key,
            witness_key,
            checkpoint,
        } => {
            if bundle.is_none() {
                // The local ledger needs this node; say so before anything else.
                home.require_init()?;
            }
            let key = trusted_key(home, public_key.clone())?;
            let expect = expectations(&key, &witness_key, &checkpoint)?;
            match bundle {
                None => verify_local(home, out, public_key, expect).await,
                Some(file) => verify_file(out, &file, &key, &expect),
            }
        }
        Command::Export { output } => export(home, out, &output).await,
        Command::Proof {
            entry,
            size,
            output,
        } => proof(home, out, &entry, size, output).await,
        Command::Consistency { old, new, output } => consistency(home, out, old, new, output).await,
        Command::CheckProof { file, public_key } => check_proof(home, out, &file, public_key),
        Command::Checkpoint { note } => checkpoint(home, out, note).await,
        Command::Witness(cmd) => super::witness::run(home, out, cmd).await,
    }
}

/// One line of `aura ledger append` input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    agent: AgentId,
    kind: Kind,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default)]
    body_base64: Option<String>,
}

/// Parses one input line into an entry, or says what is wrong with it.
fn parse_line(line: &str, at: usize) -> anyhow::Result<NewEntry> {
    let bad = |why: String| {
        hinted(
            format!("line {at}: {why}"),
            r#"each line must be a JSON object like {"agent":"node","kind":"note","body":{"text":"hi"}}"#,
        )
    };
    let input: InputLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let body = match (input.body, input.body_base64) {
        (Some(_), Some(_)) => return Err(bad("give `body` or `body_base64`, not both".into())),
        // serde_json's map is ordered by key, so this is a canonical rendering: sorted
        // keys, no whitespace, shortest round-trip numbers.
        (Some(v), None) => serde_json::to_vec(&v)?,
        (None, Some(b)) => BASE64
            .decode(b.as_bytes())
            .map_err(|e| bad(format!("body_base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    if body.len() > MAX_BODY_LEN {
        return Err(bad(format!(
            "the body is {} bytes, more than the {MAX_BODY_LEN} allowed",
            body.len()
        )));
    }
    Ok(NewEntry {
        agent: input.agent,
        seq: input.seq.map_or(Seq::Next, Seq::Exactly),
        kind: input.kind,
        recorded_at: SystemClock.now(),
        body,
    })
}

/// The most one atomic append takes from stdin.
const MAX_ATOMIC_ENTRIES: usize = 1_000_000;
const MAX_ATOMIC_BYTES: usize = 512 * 1024 * 1024;

#[derive(Serialize)]
struct Ack {
    index: u64,
    agent: AgentId,
    seq: u64,
    hash: String,
    tree_size: u64,
}

fn acks(receipt: &AppendReceipt) -> Vec<Ack> {
    receipt
        .entries
        .iter()
        .map(|e| Ack {
            index: e.index,
            agent: e.agent,
            seq: e.seq,
            hash: e.hash.to_hex(),
            tree_size: receipt.checkpoint.checkpoint.tree_size,
        })
        .collect()
}

async fn append_all(home: &Home, out: &Output) -> anyhow::Result<()> {
    // Read and check everything before touching the ledger: a bad line changes nothing.
    let mut input = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_ATOMIC_BYTES as u64 + 1)
        .read_to_string(&mut input)
        .context("cannot read stdin")?;
    if input.len() > MAX_ATOMIC_BYTES {
        return Err(hinted(
            "the input is too large for one atomic append",
            "use `aura ledger append --stream`",
        ));
    }
    let mut batch = Vec::new();
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        batch.push(parse_line(line, i + 1)?);
        if batch.len() > MAX_ATOMIC_ENTRIES {
            return Err(hinted(
                "too many entries for one atomic append",
                "use `aura ledger append --stream`",
            ));
        }
    }
    if batch.is_empty() {
        return Err(hinted(
            "no entries on stdin",
            r#"pipe JSON lines in, like: echo '{"agent":"node","kind":"note"}' | aura ledger append"#,
        ));
    }
    let store = home.open_store()?;
    let receipt = store.append(batch).await?;
    store.close();
    let acked = acks(&receipt);
    let cp = receipt.checkpoint.checkpoint;
    #[derive(Serialize)]
    struct Appended<'a> {
        entries: &'a [Ack],
        checkpoint: &'a SignedCheckpoint,
    }
    out.print(&Appended { entries: &acked, checkpoint: &receipt.checkpoint }, || {
        let first = acked.first().map_or(0, |a| a.index);
        let last = acked.last().map_or(0, |a| a.index);
        format!(
            "appended {} (#{first}..#{last}); durable and covered by the checkpoint of {}, root {}",
            count(acked.len() as u64, "entry", "entries"),
            count(cp.tree_size, "entry", "entries"),
            cp.root.short()
        )
    })
}

async fn append_stream(home: &Home, out: &Output, batch_size: usize) -> anyhow::Result<()> {
    let store = home.open_store()?;
    // A thread reads stdin so the appender can take whatever has arrived as one batch.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(batch_size * 4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let stop = line.is_err();
            if tx.blocking_send(line).is_err() || stop {
                break;
            }
        }
    });
    let mut line_no = 0usize;
    let mut total = 0u64;
    while let Some(first) = rx.recv().await {
        let mut lines = vec![first];
        while lines.len() < batch_size {
            match rx.try_recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        let mut batch = Vec::with_capacity(lines.len());
        let mut failure = None;
        for line in lines {
            line_no += 1;
            let line = line.context("cannot read stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line, line_no) {
                Ok(e) => batch.push(e),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Whatever came before a bad line is appended; nothing after it is.
        if !batch.is_empty() {
            let receipt = store.append(batch).await?;
            for ack in acks(&receipt) {
                total += 1;
                out.line(&ack, || {
                    format!(
                        "#{} {} seq {} {}",
                        ack.index,
                        ack.agent,
                        ack.seq,
                        &ack.hash[..12]
                    )
                })?;
            }
        }
        if let Some(e) = failure {
            return Err(e.context(format!("stopped after appending {total} entries")));
        }
    }
    store.close();
    Ok(())
}

/// Parses `#12`, `12` or `AGENT:SEQ`.
fn parse_entry_ref(s: &str) -> anyhow::Result<EntryRef> {
    let s = s.trim();
    let bad = || {
        hinted(
            format!("`{s}` does not name an entry"),
            "name an entry as #INDEX (like #0) or AGENT:SEQ (like node:1)",
        )
    };
    if let Ok(i) = s.trim_start_matches('#').parse::<u64>() {
        return Ok(EntryRef::Index(i));
    }
    let (agent, seq) = s.rsplit_once(':').ok_or_else(bad)?;
    let agent: AgentId = agent.parse().map_err(|_| bad())?;
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    Ok(EntryRef::AgentSeq(agent, seq))
}

fn parse_agent(s: &str) -> anyhow::Result<AgentId> {
    s.parse().map_err(|_| {
        hinted(
            format!("`{s}` is not an agent id"),
            "use `node` or an id like agent_01j8tpm400c5tq4r9dc5kpavkm",
        )
    })
}

/// An entry as `aura` shows it.
#[derive(Serialize)]
struct EntryView {
    index: u64,
    agent: AgentId,
    seq: u64,
    kind: String,
    recorded_at: aura_core::Timestamp,
    prev: String,
    hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    /// Set when the body was pruned: its length then; only the hash is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pruned: Option<aura_store::Pruned>,
}

impl EntryView {
    fn new(e: &StoredEntry) -> Self {
        let (body, body_base64) = if e.pruned.is_some() || e.entry.body.is_empty() {
            (None, None)
        } else {
            match serde_json::from_slice::<serde_json::Value>(&e.entry.body) {
                Ok(v) => (Some(v), None),
                Err(_) => (None, Some(BASE64.encode(&e.entry.body))),
            }
        };
        EntryView {
            index: e.entry.index,
            agent: e.entry.agent,
            seq: e.entry.seq,
            kind: e.entry.kind.to_string(),
            recorded_at: e.entry.recorded_at,
            prev: e.entry.prev.to_hex(),
            hash: e.hash.to_hex(),
            body,
            body_base64,
            pruned: e.pruned,
        }
    }

    fn body_text(&self) -> String {
        if let Some(p) = self.pruned {
            return format!("(pruned: {} bytes)", p.body_len);
        }
        match (&self.body, &self.body_base64) {
            (Some(v), _) => v.to_string(),
            (None, Some(b)) => format!("base64:{b}"),
            (None, None) => String::new(),
        }
    }

    fn line(&self) -> String {
        let mut body = self.body_text();
        if body.chars().count() > 60 {
            body = body.chars().take(59).collect::<String>() + "…";
        }
        format!(
            "#{:<6} {:<32} seq {:<6} {:<20} {}  {}",
            self.index,
            self.agent.to_string(),
            self.seq,
            self.kind,
            self.recorded_at.to_rfc3339_millis(),
            body
        )
    }

    fn full(&self) -> String {
        format!(
            "entry        #{}\nagent        {}\nseq          {}\nkind         {}\nrecorded at  {}\nprev         {}\nhash         {}\nbody         {}\n",
            self.index,
            self.agent,
            self.seq,
            self.kind,
            self.recorded_at,
            self.prev,
            self.hash,
            self.body_text()
        )
    }
}

async fn find(store: &aura_store::SqliteStore, at: EntryRef) -> anyhow::Result<StoredEntry> {
    store.entry(at).await?.ok_or_else(|| {
        hinted(
            format!("there is no entry {at}"),
            "list entries with `aura ledger show` or `aura ledger tail`",
        )
    })
}

async fn show(
    home: &Home,
    out: &Output,
    entry: Option<String>,
    agent: Option<String>,
    from: u64,
    limit: usize,
) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    if let Some(entry) = entry {
        let e = EntryView::new(&find(&store, parse_entry_ref(&entry)?).await?);
        return out.print(&e, || e.full());
    }
    let entries = match agent {
        Some(a) => {
            store
                .agent_entries(parse_agent(&a)?, from.max(1), limit)
                .await?
        }
        None => store.entries(from, limit).await?,
    };
    let views: Vec<EntryView> = entries.iter().map(EntryView::new).collect();
    out.print(&views, || {
        if views.is_empty() {
            "no entries\n".to_owned()
        } else {
            views.iter().map(|v| v.line() + "\n").collect()
        }
    })
}

async fn tail(
    home: &Home,
    out: &Output,
    lines: u64,
    follow: bool,
    agent: Option<String>,
) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    let agent = agent.map(|a| parse_agent(&a)).transpose()?;
    let mut next = match agent {
        Some(a) => store
            .head(a)
            .await?
            .map_or(1, |h| h.seq + 1)
            .saturating_sub(lines)
            .max(1),
        None => store.tree_size().await?.saturating_sub(lines),
    };
    loop {
        let batch = match agent {
            Some(a) => store.agent_entries(a, next, 1000).await?,
            None => store.entries(next, 1000).await?,
        };
        for e in &batch {
            let v = EntryView::new(e);
            out.line(&v, || v.line())?;
            next = if agent.is_some() {
                e.entry.seq + 1
            } else {
                e.entry.index + 1
            };
        }
        if !follow {
            return Ok(());
        }
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The key to trust: `--public-key`, else this node's.
fn trusted_key(home: &Home, given: Option<String>) -> anyhow::Result<PublicKey> {
    match given {
        Some(k) => k.parse().map_err(|_| {
            hinted(
                format!("`{k}` is not an ed25519 public key"),
                "give the 64 hex digits `aura key show` prints",
            )
        }),
        None if home.is_initialized() => home.node_public_key(),
        None => Err(hinted(
            "no key to check against",
            "pass --public-key with the node's public key (from `aura key show` on that node)",
        )),
    }
}

#[derive(Serialize)]
struct VerifyReport {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<aura_ledger::verify::Summary>,
    /// The signed statements entries hold (agents' credentials, approvals), each checked
    /// against the key it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    signatures: Option<SignaturesView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<FailureView>,
}

#[derive(Serialize)]
struct SignaturesView {
    credentials: u64,
    approvals: u64,
}

#[derive(Serialize)]
struct FailureView {
    location: aura_ledger::verify::Location,
    reason: String,
    message: String,
}

fn report(
    out: &Output,
    outcome: Result<(aura_ledger::verify::Summary, SignaturesChecked), aura_ledger::Failure>,
    what: &str,
) -> anyhow::Result<()> {
    match outcome {
        Ok((summary, inside)) => {
            let r = VerifyReport {
                ok: true,
                summary: Some(summary),
                signatures: Some(SignaturesView {
                    credentials: inside.credentials,
                    approvals: inside.approvals,
                }),
                failure: None,
            };
            out.print(&r, || {
                r.summary.as_ref().map_or_else(String::new, |s| {
                    let signed = s.last_checkpoint.map_or_else(String::new, |c| {
                        format!(
                            ", signed by {} at {}",
                            c.checkpoint.node,
                            c.checkpoint.time.to_rfc3339_millis()
                        )
                    });
                    // Pruned entries were checked by their kept hashes only; say so.
                    let entries = match s.pruned {
                        0 => count(s.entries, "entry", "entries"),
                        n => format!("{} ({n} pruned)", count(s.entries, "entry", "entries")),
                    };
                    let mut text = format!(
                        "ok: {what} verifies: {entries} from {}, {}; root {}{signed}",
                        count(s.agents, "agent", "agents"),
                        count(s.checkpoints, "checkpoint", "checkpoints"),
                        s.root.short()
                    );
                    text.push_str(&format!(
                        "\nsignatures inside entries check: {} and {}",
                        count(inside.credentials, "agent credential", "agent credentials"),
                        count(inside.approvals, "approval", "approvals")
                    ));
                    for c in &s.cosigned {
                        text.push_str(&format!(
                            "\ncosigned by {} at {} ({})",
                            c.witness,
                            count(c.tree_size, "entry", "entries"),
                            aura_core::Timestamp::from_secs(c.time).to_rfc3339_millis()
                        ));
                    }
                    if s.unknown_cosignatures > 0 {
                        text.push_str(&format!(
                            "\n{} by witnesses not given with --witness-key (not checked)",
                            count(s.unknown_cosignatures, "cosignature", "cosignatures")
                        ));
                    }
                    for h in &s.known_heads {
                        text.push_str(&format!(
                            "\nagrees with {} ({})",
                            h.source,
                            count(h.tree_size, "entry", "entries")
                        ));
                    }
                    text
                })
            })
        }
        Err(f) => {
            if out.is_json() {
                let r = VerifyReport {
                    ok: false,
                    summary: None,
                    signatures: None,
                    failure: Some(FailureView {
                        location: f.location.clone(),
                        reason: f.reason.to_string(),
                        message: f.to_string(),
                    }),
                };
                out.print(&r, String::new)?;
            }
            Err(VerificationFailed(format!("{what} does not verify: {f}")).into())
        }
    }
}

/// What verification checks beyond the node's key: witnesses' cosignatures, and tree
/// heads from elsewhere (given with `--checkpoint`, and for the local ledger the
/// checkpoint this node published).
fn expectations(
    key: &PublicKey,
    witness_keys: &[String],
    checkpoints: &[PathBuf],
) -> anyhow::Result<Expect> {
    let mut witnesses = Vec::new();
    for v in witness_keys {
        let w = VerifierKey::parse(v).map_err(|e| {
            hinted(
                format!("`{v}` is not a verifier key: {e}"),
                "give the witness's key as `aura ledger witness key` prints it",
            )
        })?;
        if w.kind != KeyType::Cosignature {
            return Err(hinted(
                format!("`{}` is not a witness's key (type 0x04)", w.name),
                "give the witness's key as `aura ledger witness key` prints it",
            ));
        }
        witnesses.push(w);
    }
    let mut heads = Vec::new();
    for file in checkpoints {
        let bytes = super::witness::read_input(file)?;
        heads.push(known_head(
            &bytes,
            key,
            &witnesses,
            &file.display().to_string(),
        )?);
    }
    Ok(Expect { witnesses, heads })
}

/// A checkpoint note of the node with `key` as a head the ledger must agree with; its
/// cosignatures by `witnesses` must verify, and are named in messages.
fn known_head(
    bytes: &[u8],
    key: &PublicKey,
    witnesses: &[VerifierKey],
    from: &str,
) -> anyhow::Result<KnownHead> {
    let opened = aura_ledger::note::open_checkpoint(bytes, key).map_err(|e| {
        VerificationFailed(format!(
            "{from} is not a checkpoint note signed by this node's key: {e}"
        ))
    })?;
    let mut cosigners = Vec::new();
    for w in witnesses {
        if opened.note.signatures_by(w).next().is_some() {
            opened.note.verify(w).map_err(|e| {
                VerificationFailed(format!(
                    "{from}: the cosignature by {} does not verify: {e}",
                    w.name
                ))
            })?;
            cosigners.push(w.name.clone());
        }
    }
    let source = if cosigners.is_empty() {
        format!("the checkpoint in {from}")
    } else {
        format!(
            "the checkpoint in {from}, cosigned by {}",
            cosigners.join(", ")
        )
    };
    Ok(KnownHead {
        tree_size: opened.head.size,
        root: opened.head.root,
        source,
    })
}

/// Checks a verified local ledger against tree heads from elsewhere: each head's size
/// must be one of the ledger's signed checkpoints, with the head's root.
async fn check_heads(
    store: &aura_store::SqliteStore,
    summary: aura_ledger::verify::Summary,
    heads: &[KnownHead],
) -> anyhow::Result<Result<aura_ledger::verify::Summary, aura_ledger::Failure>> {
    use aura_ledger::verify::{Fork, Location, Reason};
    for head in heads {
        if head.tree_size > summary.entries {
            return Ok(Err(aura_ledger::Failure {
                location: Location::End {
                    entries: summary.entries,
                },
                reason: Reason::CutBack {
                    size: head.tree_size,
                    entries: summary.entries,
                    known: head.source.clone(),
                },
            }));
        }
        let root = match store.checkpoint(head.tree_size).await? {
            Some(cp) => cp.checkpoint.root,
            None => aura_core::hash::Hash::ZERO,
        };
        if root != head.root {
            return Ok(Err(aura_ledger::Failure {
                location: Location::Checkpoint {
                    after_entries: head.tree_size,
                    tree_size: Some(head.tree_size),
                },
                reason: Reason::Forked(Box::new(Fork {
                    size: head.tree_size,
                    expected: head.root,
                    found: root,
                    known: head.source.clone(),
                })),
            }));
        }
    }
    let mut summary = summary;
    summary.known_heads = heads.to_vec();
    Ok(Ok(summary))
}

async fn verify_local(
    home: &Home,
    out: &Output,
    public_key: Option<String>,
    mut expect: Expect,
) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    if let Some(k) = public_key {
        let k = trusted_key(home, Some(k))?;
        if k != store.node_key() {
            return Err(
                VerificationFailed("the ledger is not signed by the given key".into()).into(),
            );
        }
    }
    // The checkpoint this node published: the ledger may not have fallen behind it. Read
    // before the verification's snapshot of the ledger is taken: a node serving beside
    // this command publishes only what is committed, so the snapshot is never behind it.
    let published = home.published_path();
    match std::fs::read(&published) {
        Ok(bytes) => expect.heads.push(known_head(
            &bytes,
            &store.node_key(),
            &[],
            &published.display().to_string(),
        )?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", published.display()));
        }
    }
    // So are the checkpoints witnesses cosigned, kept for exports.
    for (path, bytes) in super::witness::kept_notes(home)? {
        expect.heads.push(known_head(
            &bytes,
            &store.node_key(),
            &[],
            &path.display().to_string(),
        )?);
    }
    let total = store.tree_size().await?;
    let bar = out.progress(total, "verifying");
    let progress = bar.clone();
    let outcome = store
        .verify(Box::new(move |n| progress.set_position(n)))
        .await?;
    bar.finish_and_clear();
    let outcome = match outcome {
        Verification::Ok(s) => check_heads(&store, s, &expect.heads).await?,
        Verification::Failed(f) => Err(f),
    };
    let outcome = match outcome {
        Ok(summary) => local_signatures(&store)
            .await?
            .map(|signed| (summary, signed)),
        Err(f) => Err(f),
    };
    report(out, outcome, "the ledger")
}

/// The signed statements of the local ledger's entries, page by page, once its structure
/// verified.
async fn local_signatures(
    store: &aura_store::SqliteStore,
) -> anyhow::Result<Result<SignaturesChecked, aura_ledger::Failure>> {
    let mut checked = SignaturesChecked::default();
    let mut from = 0;
    loop {
        let page = store.entries(from, 1000).await?;
        for e in &page {
            match check_entry_signatures(e.entry.kind.as_str(), e.body()) {
                Ok(c) => checked.add(c),
                Err(why) => {
                    return Ok(Err(signature_failure(
                        e.entry.index,
                        e.entry.agent,
                        e.entry.seq,
                        &why,
                    )));
                }
            }
        }
        match page.last() {
            Some(last) => from = last.entry.index + 1,
            None => return Ok(Ok(checked)),
        }
    }
}

/// An entry whose signed statement does not check, as the verification failure that names
/// it.
fn signature_failure(
    position: u64,
    agent: AgentId,
    seq: u64,
    why: &aura_engine::audit::SignatureError,
) -> aura_ledger::Failure {
    aura_ledger::Failure {
        location: aura_ledger::verify::Location::Entry {
            position,
            agent: Some(agent),
            seq: Some(seq),
        },
        reason: aura_ledger::verify::Reason::Other(why.to_string()),
    }
}

fn verify_file(out: &Output, file: &Path, key: &PublicKey, expect: &Expect) -> anyhow::Result<()> {
    let open = || {
        std::fs::File::open(file)
            .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
            .with_context(|| format!("cannot open {}", file.display()))
    };
    let outcome = match verify_bundle_with(open()?, key, expect) {
        // A second pass, over a bundle whose structure and signatures verified: the
        // statements its entries hold.
        Ok(summary) => bundle_signatures(open()?).map(|signed| (summary, signed)),
        Err(f) => Err(f),
    };
    report(out, outcome, &format!("the bundle {}", file.display()))
}

/// The signed statements of a bundle's entries (pruned ones have none left).
fn bundle_signatures(input: impl std::io::Read) -> Result<SignaturesChecked, aura_ledger::Failure> {
    let mut reader = BundleReader::new(input)?;
    let mut checked = SignaturesChecked::default();
    while let Some(frame) = reader.next_frame()? {
        let Frame::Entry { encoded, .. } = frame else {
            continue;
        };
        // It decoded in the first pass; a decoding error here would be the file changing
        // under us, reported as such.
        let entry = aura_ledger::Entry::decode(&encoded).map_err(|e| aura_ledger::Failure {
            location: aura_ledger::verify::Location::Entry {
                position: 0,
                agent: None,
                seq: None,
            },
            reason: aura_ledger::verify::Reason::Malformed(e),
        })?;
        match check_entry_signatures(entry.kind.as_str(), Some(&entry.body)) {
            Ok(c) => checked.add(c),
            Err(why) => return Err(signature_failure(entry.index, entry.agent, entry.seq, &why)),
        }
    }
    Ok(checked)
}

async fn export(home: &Home, out: &Output, output: &Path) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    let total = store.tree_size().await?;
    let to_stdout = output == Path::new("-");
    // Write beside the target and rename, so a failed export leaves no half file.
    let partial = output.with_extension("partial");
    let sink: Box<dyn std::io::Write + Send> = if to_stdout {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
    };
    // The witnesses' cosignatures this node kept travel with the checkpoints they cosign.
    let cosignatures = super::witness::kept_cosignatures(home)?;
    let bar = out.progress(total, "exporting");
    let progress = bar.clone();
    let result = store
        .export_cosigned(
            sink,
            cosignatures,
            Box::new(move |n| progress.set_position(n)),
        )
        .await;
    bar.finish_and_clear();
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&partial);
            }
            return Err(e.into());
        }
    };
    if to_stdout {
        return Ok(());
    }
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .context("cannot flush the export")?;
    std::fs::rename(&partial, output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    #[derive(Serialize)]
    struct Exported<'a> {
        file: String,
        entries: u64,
        checkpoints: u64,
        root: String,
        public_key: &'a str,
    }
    let key = store.node_key().to_hex();
    let e = Exported {
        file: output.display().to_string(),
        entries: summary.entries,
        checkpoints: summary.checkpoints,
        root: summary.root.to_hex(),
        public_key: &key,
    };
    out.print(&e, || {
        format!(
            "exported {} and {} to {}\ncheck it anywhere with: aura ledger verify --bundle {} --public-key {}\n",
            count(e.entries, "entry", "entries"),
            count(e.checkpoints, "checkpoint", "checkpoints"),
            e.file,
            e.file,
            e.public_key
        )
    })
}

/// Writes proof bytes to a file, or prints them as base64.
fn emit_proof(
    out: &Output,
    bytes: &[u8],
    output: Option<PathBuf>,
    view: &impl Serialize,
    human: &str,
) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            out.print(view, || {
                format!("{human}\nwrote the proof to {}\n", path.display())
            })
        }
        None => out.print(view, || format!("{}\n", BASE64.encode(bytes))),
    }
}

#[derive(Serialize)]
struct InclusionView {
    entry: EntryView,
    tree_size: u64,
    path: Vec<String>,
    checkpoint: SignedCheckpoint,
    proof_base64: String,
}

async fn proof(
    home: &Home,
    out: &Output,
    entry: &str,
    size: Option<u64>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    let stored = find(&store, parse_entry_ref(entry)?).await?;
    let p = store.inclusion_proof(stored.entry.index, size).await?;
    let bytes = Proof::Inclusion(p.clone()).encode();
    let view = InclusionView {
        entry: EntryView::new(&stored),
        tree_size: p.checkpoint.checkpoint.tree_size,
        path: p.path.iter().map(|h| h.to_hex()).collect(),
        checkpoint: p.checkpoint,
        proof_base64: BASE64.encode(&bytes),
    };
    let human = format!(
        "entry #{} is in the tree of {} entries signed by {} (path of {} hashes)",
        stored.entry.index,
        view.tree_size,
        p.checkpoint.checkpoint.node,
        p.path.len()
    );
    emit_proof(out, &bytes, output, &view, &human)
}

#[derive(Serialize)]
struct ConsistencyView {
    old: SignedCheckpoint,
    new: SignedCheckpoint,
    path: Vec<String>,
    proof_base64: String,
}

async fn consistency(
    home: &Home,
    out: &Output,
    old: u64,
    new: Option<u64>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    let p: ConsistencyProof = store.consistency_proof(old, new).await?;
    let bytes = Proof::Consistency(p.clone()).encode();
    let view = ConsistencyView {
        old: p.old,
        new: p.new,
        path: p.path.iter().map(|h| h.to_hex()).collect(),
        proof_base64: BASE64.encode(&bytes),
    };
    let human = format!(
        "the signed tree of {} entries is a prefix of the signed tree of {} (path of {} hashes)",
        p.old.checkpoint.tree_size,
        p.new.checkpoint.tree_size,
        p.path.len()
    );
    emit_proof(out, &bytes, output, &view, &human)
}

/// Reads a proof: raw bytes, or base64 text.
fn read_proof(file: &Path) -> anyhow::Result<Proof> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(64 << 20).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let decoded = Proof::decode(&bytes).or_else(|binary_err| {
        let text = String::from_utf8_lossy(&bytes);
        match BASE64.decode(text.trim().as_bytes()) {
            Ok(raw) => Proof::decode(&raw),
            Err(_) => Err(binary_err),
        }
    });
    decoded.map_err(|e| {
        VerificationFailed(format!("{} is not a valid Aura proof: {e}", file.display())).into()
    })
}

fn check_proof(
    home: &Home,
    out: &Output,
    file: &Path,
    public_key: Option<String>,
) -> anyhow::Result<()> {
    let key = trusted_key(home, public_key)?;
    match read_proof(file)? {
        Proof::Inclusion(p) => check_inclusion(out, &p, &key),
        Proof::Consistency(p) => {
            p.verify(&key).map_err(|e| {
                VerificationFailed(format!("the consistency proof does not verify: {e}"))
            })?;
            #[derive(Serialize)]
            struct Ok {
                valid: bool,
                old: SignedCheckpoint,
                new: SignedCheckpoint,
            }
            let v = Ok {
                valid: true,
                old: p.old,
                new: p.new,
            };
            out.print(&v, || {
                format!(
                    "valid: the tree of {} entries (root {}) is a prefix of the tree of {} entries (root {}), both signed by {}",
                    v.old.checkpoint.tree_size,
                    v.old.checkpoint.root.short(),
                    v.new.checkpoint.tree_size,
                    v.new.checkpoint.root.short(),
                    v.new.checkpoint.node
                )
            })
        }
    }
}

fn check_inclusion(out: &Output, p: &InclusionProof, key: &PublicKey) -> anyhow::Result<()> {
    let v = p
        .verify(key)
        .map_err(|e| VerificationFailed(format!("the inclusion proof does not verify: {e}")))?;
    let stored = StoredEntry {
        entry: v.entry.clone(),
        encoded: p.entry.clone(),
        hash: v.entry_hash,
        pruned: None,
    };
    #[derive(Serialize)]
    struct Valid {
        valid: bool,
        entry: EntryView,
        checkpoint: SignedCheckpoint,
    }
    let r = Valid {
        valid: true,
        entry: EntryView::new(&stored),
        checkpoint: v.checkpoint,
    };
    out.print(&r, || {
        format!(
            "valid: entry #{} ({} seq {}, kind {}) is in the tree of {} entries signed by {} at {}\n{}",
            r.entry.index,
            r.entry.agent,
            r.entry.seq,
            r.entry.kind,
            r.checkpoint.checkpoint.tree_size,
            r.checkpoint.checkpoint.node,
            r.checkpoint.checkpoint.time.to_rfc3339_millis(),
            r.entry.full()
        )
    })
}

async fn checkpoint(home: &Home, out: &Output, as_note: bool) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    let Some(cp) = store.latest_checkpoint().await? else {
        return Err(hinted(
            "the ledger is empty: nothing has been signed yet",
            "append an entry with `aura ledger append`",
        ));
    };
    if as_note {
        // The note's standard signature line is made now, with the node's key.
        let signer = home.signer(&aura_core::keystore::KeyName::node())?;
        let note = aura_ledger::note::checkpoint_note(&cp, &signer)?.encode();
        let vkey = VerifierKey::aura_node(signer.public_key()).to_string();
        #[derive(Serialize)]
        struct AsNote<'a> {
            note: &'a str,
            vkey: &'a str,
            tree_size: u64,
        }
        return out.print(
            &AsNote {
                note: &note,
                vkey: &vkey,
                tree_size: cp.checkpoint.tree_size,
            },
            || note.clone(),
        );
    }
    out.print(&cp, || {
        format!(
            "tree size  {}\nroot       {}\nnode       {}\ntime       {}\nsignature  {}\n",
            cp.checkpoint.tree_size,
            cp.checkpoint.root,
            cp.checkpoint.node,
            cp.checkpoint.time,
            cp.signature
        )
    })
}
