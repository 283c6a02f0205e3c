//! `aura license`: issue, install, list and check model licenses.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use aura_core::Timestamp;
use aura_core::door::{Clock as _, OsEntropy, SystemClock};
use aura_core::hash::Hash;
use aura_core::keystore::KeyName;
use aura_model::license::{Allowance, License, LicenseId, Licensee, SignedLicense, Uses};
use aura_model::{Meter, Registry};
use serde::Serialize;

use crate::cmd::model::{byte_bar, error_chain, package_error};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Issue a license for a package you publish, signed with your key
    ///
    /// Writes the license (JSON) to --output or stdout; send it to the licensee, who
    /// installs it with `aura license install FILE`. Prices are integers per 1,000
    /// tokens in a named currency unit (like usd-micro), never fractions.
    #[command(verbatim_doc_comment)]
    Issue(Box<IssueArgs>),
    /// Install a license file after checking its signature
    Install {
        /// The license file (`-` for stdin)
        file: PathBuf,
    },
    /// List installed licenses
    List,
    /// Check whether this node may run a model now, as a request would be checked
    Check {
        /// Package name or digest prefix
        model: String,
        /// The use: inference, embeddings, commercial (comma-separated)
        #[arg(long = "use", default_value = "inference")]
        uses: String,
        /// Tokens the request would count
        #[arg(long, default_value_t = 1)]
        tokens: u64,
    },
}

/// `aura license issue`.
#[derive(Debug, clap::Args)]
pub(crate) struct IssueArgs {
    /// The package (name or digest prefix), installed here
    #[arg(long, value_name = "PACKAGE", required_unless_present = "digest")]
    pub(crate) package: Option<String>,
    /// License a package not installed here, by its full digest
    #[arg(
        long,
        value_name = "HEX",
        requires = "name",
        conflicts_with = "package"
    )]
    pub(crate) digest: Option<String>,
    /// The name of the package given by --digest
    #[arg(long, requires = "digest")]
    pub(crate) name: Option<String>,
    /// The licensee: a node id (node_…, see `aura key show` on that node) or `any`
    #[arg(long, value_name = "NODE")]
    pub(crate) to: String,
    /// The publisher key that signs [default: node]
    #[arg(long, default_value = "node", value_name = "KEY")]
    pub(crate) key: String,
    /// Valid from (RFC 3339 or unix seconds) [default: now]
    #[arg(long, value_name = "TIME")]
    pub(crate) from: Option<String>,
    /// Valid until (RFC 3339 or unix seconds)
    #[arg(long, value_name = "TIME", conflicts_with = "days")]
    pub(crate) until: Option<String>,
    /// Valid for this many days
    #[arg(long, default_value_t = 365)]
    pub(crate) days: u64,
    /// Token allowance: a number or `unlimited`
    #[arg(long, default_value = "unlimited", value_name = "N")]
    pub(crate) tokens: String,
    /// Price per 1,000 tokens, in whole currency units
    #[arg(long, default_value_t = 0)]
    pub(crate) price: u64,
    /// The currency unit of --price
    #[arg(long, default_value = "usd-micro")]
    pub(crate) currency: String,
    /// Permitted uses: inference, embeddings, commercial (comma-separated) or all
    #[arg(long, default_value = "inference")]
    pub(crate) uses: String,
    /// Write the license here instead of to stdout
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Also install it in this data directory
    #[arg(long)]
    pub(crate) install: bool,
}

pub(crate) async fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    home.require_init()?;
    let registry = Registry::new(home.dir());
    match cmd {
        Command::Issue(args) => {
            let IssueArgs {
                package,
                digest,
                name,
                to,
                key,
                from,
                until,
                days,
                tokens,
                price,
                currency,
                uses,
                output,
                install,
            } = *args;
            let signer = home.signer(&KeyName::new(&key)?)?;
            let (digest, name) = match (package, digest, name) {
                (Some(reference), _, _) => {
                    let p = registry
                        .packages()
                        .resolve(&reference)
                        .map_err(package_error)?;
                    if p.manifest().publisher != signer.public_key() {
                        return Err(hinted(
                            format!(
                                "package `{}` is published by {}, not by key `{key}` ({})",
                                p.name,
                                p.manifest().publisher.fingerprint(),
                                signer.public_key().fingerprint()
                            ),
                            "issue licenses with the key that signed the package (--key)",
                        ));
                    }
                    (p.digest(), p.name)
                }
                (None, Some(d), Some(n)) => (
                    d.parse::<Hash>().map_err(|_| {
                        hinted(
                            format!("`{d}` is not a package digest"),
                            "give the 64 hex digits `aura model show` prints",
                        )
                    })?,
                    n,
                ),
                _ => {
                    return Err(hinted(
                        "name the package to license",
                        "pass --package NAME, or --digest HEX with --name NAME",
                    ));
                }
            };
            let licensee: Licensee = to.parse().map_err(|e: String| {
                hinted(e, "pass --to with the licensee's node id, or `any`")
            })?;
            let now = SystemClock.now();
            let time = |s: &str, what: &str| {
                s.parse::<Timestamp>().map_err(|e| {
                    hinted(
                        format!("--{what} `{s}`: {e}"),
                        "write times like 2026-01-02T03:04:05Z",
                    )
                })
            };
            let not_before = from.as_deref().map_or(Ok(now), |s| time(s, "from"))?;
            let not_after = match until {
                Some(u) => time(&u, "until")?,
                None => not_before.saturating_add(Duration::from_secs(days.saturating_mul(86_400))),
            };
            let allowance: Allowance = tokens.parse().map_err(|e: String| {
                hinted(
                    e,
                    "pass --tokens with a number like 1000000, or `unlimited`",
                )
            })?;
            let uses = Uses::parse(&uses)
                .map_err(|e| hinted(e, "for example --uses inference,commercial"))?;
            let license = License {
                id: LicenseId::generate(&SystemClock, &OsEntropy),
                licensor: signer.public_key(),
                package: digest,
                package_name: name,
                licensee,
                not_before,
                not_after,
                allowance,
                price_per_1000_tokens: price,
                currency,
                uses,
                issued_at: now,
            };
            let signed = license
                .sign(&signer)
                .map_err(|e| hinted(e.to_string(), "check --currency, --from and --until"))?;
            if install {
                registry.licenses().install(&signed)?;
            }
            let json = aura_model::license::to_file(&signed)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, &json)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    let view = view(&signed);
                    out.print(&view, || {
                        format!(
                            "issued {} to {} for {}{}\nwritten to {}\n",
                            view.id,
                            view.licensee,
                            view.package_name,
                            if install { " (installed here too)" } else { "" },
                            path.display()
                        )
                    })
                }
                None => {
                    print!("{json}");
                    Ok(())
                }
            }
        }
        Command::Install { file } => {
            let bytes = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(std::io::stdin(), aura_model::license::MAX_FILE + 1),
                    &mut b,
                )?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let signed = aura_model::license::from_file(&bytes).map_err(|e| {
                hinted(
                    format!("{} is not a license: {e}", file.display()),
                    "install the file `aura license issue` wrote, unchanged",
                )
            })?;
            let path = registry.licenses().install(&signed).map_err(|e| {
                hinted(
                    error_chain(&e),
                    "install the file `aura license issue` wrote, unchanged",
                )
            })?;
            let v = view(&signed);
            out.print(&v, || {
                format!(
                    "installed {} for {} ({}), from {}\n{}\n",
                    v.id,
                    v.package_name,
                    &v.package[..12],
                    signed.statement.licensor.fingerprint(),
                    path.display()
                )
            })
        }
        Command::List => {
            let node = home.node_public_key()?.node_id();
            let listed = registry.licenses().list()?;
            let views: Vec<Listed> = listed
                .iter()
                .map(|l| match &l.license {
                    Ok(s) => Listed {
                        license: Some(view(s)),
                        for_this_node: Some(match s.statement.licensee {
                            Licensee::AnyNode => true,
                            Licensee::Node(n) => n == node,
                        }),
                        signature_ok: Some(aura_model::license::verify_signature(s).is_ok()),
                        path: l.path.display().to_string(),
                        problem: None,
                    },
                    Err(e) => Listed {
                        license: None,
                        for_this_node: None,
                        signature_ok: None,
                        path: l.path.display().to_string(),
                        problem: Some(e.clone()),
                    },
                })
                .collect();
            out.print(&views, || {
                if views.is_empty() {
                    return "no licenses installed\n".into();
                }
                let mut text = format!(
                    "{:<31} {:<20} {:<12} {:<26} {:<14} {}\n",
                    "ID", "PACKAGE", "LICENSEE", "VALID UNTIL", "TOKENS", "PRICE/1000"
                );
                for v in &views {
                    match &v.license {
                        Some(l) => text.push_str(&format!(
                            "{:<31} {:<20} {:<12} {:<26} {:<14} {} {}{}\n",
                            l.id,
                            l.package_name,
                            if v.for_this_node == Some(true) {
                                if l.licensee == "any" {
                                    "any node"
                                } else {
                                    "this node"
                                }
                            } else {
                                "other node"
                            },
                            l.not_after,
                            l.allowance,
                            l.price_per_1000_tokens,
                            l.currency,
                            if v.signature_ok == Some(true) {
                                ""
                            } else {
                                "  BAD SIGNATURE"
                            }
                        )),
                        None => text.push_str(&format!(
                            "{:<31} UNREADABLE: {}\n",
                            v.path,
                            v.problem.as_deref().unwrap_or("")
                        )),
                    }
                }
                text
            })
        }
        Command::Check {
            model,
            uses,
            tokens,
        } => {
            let uses = Uses::parse(&uses).map_err(|e| hinted(e, "for example --use inference"))?;
            let node = home.node_public_key()?.node_id();
            // Resolve and verify first, exactly as a request would be served.
            let installed = registry.packages().resolve(&model).map_err(package_error)?;
            let bar = byte_bar(out, installed.manifest().total_size(), "verifying");
            let verified = registry.packages().load(&model, None, &|n| bar.inc(n));
            bar.finish_and_clear();
            let verified = verified.map_err(package_error)?;
            let store = home.open_store_read_only()?;
            let meter = Meter::open(&store)
                .await
                .context("cannot count usage from the ledger")?;
            let auth = meter
                .authorize(
                    &verified,
                    registry.licenses(),
                    node,
                    SystemClock.now(),
                    uses,
                    tokens,
                )
                .map_err(|e| {
                    hinted(
                        format!("refused (HTTP {}): {e}", e.http_status()),
                        e.license_error().hint(),
                    )
                })?;
            #[derive(Serialize)]
            struct Allowed {
                model: String,
                digest: String,
                granted: Vec<aura_model::meter::Granted>,
            }
            let allowed = Allowed {
                model: verified.model().name().to_owned(),
                digest: verified.digest().to_hex(),
                granted: auth.granted().to_vec(),
            };
            out.print(&allowed, || {
                let mut text = format!(
                    "ok: this node may run {} ({}) for {uses}\n",
                    allowed.model,
                    &allowed.digest[..12]
                );
                for g in &allowed.granted {
                    text.push_str(&format!(
                        "  {} from {}: {} tokens used of {}, {} {} per 1000 tokens\n",
                        g.grant.license,
                        g.grant.licensor.fingerprint(),
                        g.grant.used,
                        g.grant.allowance,
                        g.grant.price_per_1000_tokens,
                        g.grant.currency
                    ));
                }
                text
            })
        }
    }
}

#[derive(Serialize)]
struct View {
    id: String,
    package: String,
    package_name: String,
    licensor: String,
    licensee: String,
    not_before: String,
    not_after: String,
    allowance: String,
    price_per_1000_tokens: u64,
    currency: String,
    uses: Vec<&'static str>,
}

fn view(s: &SignedLicense) -> View {
    let l = &s.statement;
    View {
        id: l.id.to_string(),
        package: l.package.to_hex(),
        package_name: l.package_name.clone(),
        licensor: l.licensor.to_hex(),
        licensee: l.licensee.to_string(),
        not_before: l.not_before.to_rfc3339_millis(),
        not_after: if l.not_after.as_nanos() == u64::MAX {
            "never".into()
        } else {
            l.not_after.to_rfc3339_millis()
        },
        allowance: l.allowance.to_string(),
        price_per_1000_tokens: l.price_per_1000_tokens,
        currency: l.currency.clone(),
        uses: l.uses.names(),
    }
}

#[derive(Serialize)]
struct Listed {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    license: Option<View>,
    #[serde(skip_serializing_if = "Option::is_none")]
    for_this_node: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_ok: Option<bool>,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}
