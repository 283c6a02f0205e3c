//! `aura receipts`: list the node's inference receipts, and verify receipts and
//! settlement statements; `aura settle`: sign statements of what each licensor is owed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use aura_core::door::{Clock as _, OsEntropy, SystemClock};
use aura_core::keystore::KeyName;
use aura_core::{AgentId, PublicKey, Timestamp};
use aura_model::Registry;
use aura_model::receipt::{self, LedgerReceipt};
use aura_model::settle::{self, SignedStatement, StatementId};
use aura_store::{SqliteStore, Store};
use serde::Serialize;

use crate::cmd::model::verification_failed;
use crate::hinted;
use crate::home::Home;
use crate::output::{Output, count};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List the receipts in the ledger
    List {
        /// Only receipts finished at or after this time (RFC 3339 or unix seconds)
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Only receipts finished before this time
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
    },
    /// Verify every receipt and settlement statement in the ledger, or statement files
    ///
    /// Each receipt's signature and fields are checked; each statement's signature, that
    /// the receipts it cites are in the ledger and hold up, that its lines and totals are
    /// exactly what those receipts give, and that it leaves out no receipt charged to its
    /// payee in its window. The first bad one is named; exit code 3.
    #[command(verbatim_doc_comment)]
    Verify {
        /// Verify these statement files (JSON) against this node's ledger instead
        #[arg(long, value_name = "FILE")]
        statement: Vec<PathBuf>,
    },
}

/// `aura settle`.
#[derive(Debug, clap::Args)]
pub(crate) struct SettleArgs {
    /// Start of the window, inclusive (RFC 3339 or unix seconds)
    #[arg(long, value_name = "TIME")]
    from: String,
    /// End of the window, exclusive [default: now]
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Also write each signed statement here as <id>.json [default: <home>/statements]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Show the statements without signing or recording them
    #[arg(long)]
    dry_run: bool,
}

fn time(s: &str, what: &str) -> anyhow::Result<Timestamp> {
    if s == "now" {
        return Ok(SystemClock.now());
    }
    s.parse::<Timestamp>().map_err(|e| {
        hinted(
            format!("--{what} `{s}`: {e}"),
            "write times like 2026-01-02T03:04:05Z, or `now`",
        )
    })
}

/// Every receipt in the node's stream, failing on one that does not decode.
async fn all_receipts(store: &dyn Store) -> anyhow::Result<Vec<LedgerReceipt>> {
    let mut out = Vec::new();
    let scanned = receipt::scan(store, 1, |r| {
        out.push(r);
        Ok(())
    })
    .await;
    match scanned {
        Ok(_) => Ok(out),
        Err(receipt::ScanError::Receipt(e)) => Err(verification_failed(
            e.to_string(),
            "the ledger was altered; run `aura ledger verify` to find where",
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Serialize)]
struct ReceiptView {
    index: u64,
    id: String,
    finished_at: String,
    package: String,
    package_name: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    licenses: Vec<String>,
}

pub(crate) async fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    let store = home.open_store_read_only()?;
    match cmd {
        Command::List { from, to } => {
            let from = from.as_deref().map(|s| time(s, "from")).transpose()?;
            let to = to.as_deref().map(|s| time(s, "to")).transpose()?;
            let receipts = all_receipts(&store).await?;
            let views: Vec<ReceiptView> = receipts
                .iter()
                .filter(|r| {
                    let t = r.signed.statement.finished_at;
                    from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e)
                })
                .map(|r| {
                    let x = &r.signed.statement;
                    ReceiptView {
                        index: r.index,
                        id: x.id.to_string(),
                        finished_at: x.finished_at.to_rfc3339_millis(),
                        package: x.package.to_hex(),
                        package_name: x.package_name.clone(),
                        prompt_tokens: x.prompt_tokens,
                        completion_tokens: x.completion_tokens,
                        licenses: x.charges.iter().map(|c| c.license.to_string()).collect(),
                    }
                })
                .collect();
            out.print(&views, || {
                if views.is_empty() {
                    return "no receipts\n".into();
                }
                let mut text = String::new();
                for v in &views {
                    text.push_str(&format!(
                        "#{:<6} {}  {}  {:<16} {:>6} + {:<6} tokens  {}\n",
                        v.index,
                        v.finished_at,
                        v.id,
                        v.package_name,
                        v.prompt_tokens,
                        v.completion_tokens,
                        v.licenses.join(", ")
                    ));
                }
                text
            })
        }
        Command::Verify { statement } => verify(out, &store, &statement).await,
    }
}

#[derive(Serialize)]
struct Verified {
    ok: bool,
    receipts: u64,
    statements: u64,
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

async fn verify(out: &Output, store: &SqliteStore, files: &[PathBuf]) -> anyhow::Result<()> {
    let key = store.node_key();
    let fail = |message: String| -> anyhow::Result<()> {
        if out.is_json() {
            out.print(
                &Verified {
                    ok: false,
                    receipts: 0,
                    statements: 0,
                    node: key.node_id().to_string(),
                    failure: Some(message.clone()),
                },
                String::new,
            )?;
        }
        Err(verification_failed(
            message,
            "the ledger or the statement was altered after it was signed",
        ))
    };
    let receipts = match all_receipts(store).await {
        Ok(r) => r,
        Err(e) if e.chain().any(|c| c.is::<crate::VerificationFailed>()) => {
            return fail(e.root_cause().to_string());
        }
        Err(e) => return Err(e),
    };
    for r in &receipts {
        if let Err(e) = r.verify(&key) {
            return fail(e.to_string());
        }
    }
    let by_index: BTreeMap<u64, LedgerReceipt> =
        receipts.iter().map(|r| (r.index, r.clone())).collect();
    let lookup = |i: u64| by_index.get(&i).cloned();

    // The statements: from the files given, or every one in the ledger.
    let mut statements: Vec<(String, SignedStatement)> = Vec::new();
    if files.is_empty() {
        let mut next = 1;
        loop {
            let page = store.agent_entries(AgentId::NODE, next, 4096).await?;
            let n = page.len();
            for e in &page {
                next = e.entry.seq + 1;
                if let Some(parsed) = settle::from_entry(e) {
                    match parsed {
                        Ok(s) => statements.push((format!("ledger entry #{}", e.entry.index), s)),
                        Err(reason) => {
                            return fail(format!(
                                "the statement at ledger entry #{} is malformed: {reason}",
                                e.entry.index
                            ));
                        }
                    }
                }
            }
            if n < 4096 {
                break;
            }
        }
    } else {
        for f in files {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            match SignedStatement::from_json(&bytes) {
                Ok(s) => statements.push((f.display().to_string(), s)),
                Err(reason) => {
                    return fail(format!("{} is not a statement: {reason}", f.display()));
                }
            }
        }
    }
    for (place, s) in &statements {
        if let Err(e) = settle::verify(s, &key, &lookup, Some(&receipts)) {
            return fail(format!("{e} ({place})"));
        }
    }
    let v = Verified {
        ok: true,
        receipts: receipts.len() as u64,
        statements: statements.len() as u64,
        node: key.node_id().to_string(),
        failure: None,
    };
    out.print(&v, || {
        format!(
            "ok: {} and {} verify, signed by {}\n",
            count(v.receipts, "receipt", "receipts"),
            count(v.statements, "statement", "statements"),
            v.node
        )
    })
}

#[derive(Serialize)]
struct Settled {
    from: Timestamp,
    to: Timestamp,
    receipts: u64,
    recorded: bool,
    statements: Vec<SettledStatement>,
}

#[derive(Serialize)]
struct SettledStatement {
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    statement: settle::Statement,
}

pub(crate) async fn settle(home: &Home, out: &Output, args: SettleArgs) -> anyhow::Result<()> {
    home.require_init()?;
    let from = time(&args.from, "from")?;
    let to = args
        .to
        .as_deref()
        .map_or_else(|| Ok(SystemClock.now()), |s| time(s, "to"))?;
    if to <= from {
        return Err(hinted(
            format!("the window {from} .. {to} is empty"),
            "--to must be later than --from",
        ));
    }
    let node = home.node_public_key()?.node_id();
    // One unsealing of the node key serves both the store and the statements' signatures;
    // a dry run needs neither.
    let (store, signer) = if args.dry_run {
        (home.open_store_read_only()?, None)
    } else {
        let signer = Arc::new(home.signer(&KeyName::node())?);
        let store = SqliteStore::open(
            home.ledger_path(),
            signer.clone(),
            Arc::new(SystemClock),
            home.store_options(),
        )
        .with_context(|| format!("cannot open the ledger {}", home.ledger_path().display()))?;
        (store, Some(signer))
    };
    let receipts = all_receipts(&store).await?;
    let in_window = receipts
        .iter()
        .filter(|r| (from..to).contains(&r.signed.statement.finished_at))
        .count() as u64;
    let statements = settle::settle(&receipts, from, to, node, SystemClock.now(), &mut || {
        StatementId::generate(&SystemClock, &OsEntropy)
    })
    .map_err(|e| {
        hinted(
            e.to_string(),
            "settle a window whose receipts carry consistent terms",
        )
    })?;
    let mut settled = Settled {
        from,
        to,
        receipts: in_window,
        recorded: false,
        statements: Vec::new(),
    };
    let signer = signer.filter(|_| !statements.is_empty());
    if let Some(signer) = signer {
        let recorded = settle::record(&store, &signer, statements)
            .await
            .map_err(|e| {
                hinted(
                    crate::cmd::model::error_chain(&e),
                    "settle a shorter window",
                )
            })?;
        let dir = args
            .out
            .clone()
            .unwrap_or_else(|| Registry::statements_dir(home.dir()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (signed, index) in recorded {
            let path = dir.join(format!("{}.json", signed.statement.id));
            std::fs::write(&path, signed.to_json()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            settled.statements.push(SettledStatement {
                ledger_index: Some(index),
                file: Some(path.display().to_string()),
                statement: signed.statement,
            });
        }
        settled.recorded = true;
    } else {
        settled.statements = statements
            .into_iter()
            .map(|statement| SettledStatement {
                ledger_index: None,
                file: None,
                statement,
            })
            .collect();
    }
    store.close();
    out.print(&settled, || human_settled(&settled))
}

fn human_settled(s: &Settled) -> String {
    if s.statements.is_empty() {
        return format!(
            "no receipts between {} and {}: nothing to settle\n",
            s.from.to_rfc3339_millis(),
            s.to.to_rfc3339_millis()
        );
    }
    let mut text = format!(
        "{} from {} to {}: {}\n",
        if s.recorded {
            "settled"
        } else {
            "would settle (dry run)"
        },
        s.from.to_rfc3339_millis(),
        s.to.to_rfc3339_millis(),
        count(s.receipts, "receipt", "receipts"),
    );
    for st in &s.statements {
        let x = &st.statement;
        let totals: Vec<String> = x
            .totals
            .iter()
            .map(|t| format!("{} {}", t.amount, t.currency))
            .collect();
        text.push_str(&format!(
            "  payee {}  {}  ({}, {})\n",
            payee(&x.payee),
            totals.join(", "),
            count(x.lines.len() as u64, "license", "licenses"),
            count(x.receipts.len() as u64, "charge", "charges")
        ));
        for l in &x.lines {
            text.push_str(&format!(
                "    {} {:?}: {} tokens × {}/1000 = {} {}\n",
                l.license, l.role, l.tokens, l.price_per_1000_tokens, l.amount, l.currency
            ));
        }
        if let (Some(i), Some(f)) = (st.ledger_index, &st.file) {
            text.push_str(&format!("    {} (ledger entry #{i}, {f})\n", x.id));
        }
    }
    text
}

fn payee(k: &PublicKey) -> String {
    k.fingerprint()
}
