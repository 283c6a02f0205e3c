//! `aura cluster`: the nodes that share one PostgreSQL store (docs/cluster.md): enroll a
//! node's key with the cluster key, export and verify the cluster's one log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use aura_core::PublicKey;
use aura_core::door::SystemClock;
use aura_store::postgres::{Options, PgStore};
use aura_store::{Store as _, Verification};
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Enroll a node's public key in the cluster's log, signed with this home's cluster key
    Enroll {
        /// The node's public key (64 hex digits, as `aura init` printed it)
        public_key: String,
        /// The node's region label
        #[arg(long, default_value = "")]
        region: String,
        /// The cluster's database [default: `[store] url` in aura.toml]
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// List the node keys enrolled in the cluster's log
    Nodes {
        /// The cluster's database [default: `[store] url` in aura.toml]
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// The cluster now: its nodes, who holds which shard, the log's size and last checkpoint
    Status {
        /// The cluster's database [default: `[store] url` in aura.toml]
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// Export the cluster's whole log as a bundle that verifies with the cluster key alone
    Export {
        /// Where to write the bundle
        #[arg(long, short)]
        out: PathBuf,
        /// The cluster's database [default: `[store] url` in aura.toml]
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// Verify the cluster's whole log in the database
    Verify {
        /// The cluster's database [default: `[store] url` in aura.toml]
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
}

fn url(home: &Home, given: Option<String>) -> anyhow::Result<String> {
    home.store_url(given)?.ok_or_else(|| {
        hinted(
            "this node keeps its ledger in SQLite, not in a cluster",
            "pass --store postgres://... or set `[store] url` in aura.toml",
        )
    })
}

pub(crate) async fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Enroll {
            public_key,
            region,
            store,
        } => {
            let url = url(home, store)?;
            let node: PublicKey = public_key.parse().map_err(|_| {
                hinted(
                    format!("`{public_key}` is not a public key"),
                    "give the node's public key as 64 hex digits",
                )
            })?;
            let name = Home::cluster_key_name();
            if !home.keystore().path_of(&name).exists() {
                return Err(hinted(
                    "this home holds no cluster key",
                    "enroll from the node that created the cluster (its keys/cluster.key)",
                ));
            }
            let signer = Arc::new(home.signer(&name)?);
            PgStore::enroll(&url, signer, node, &region, Arc::new(SystemClock))
                .await
                .context("cannot enroll the node")?;
            #[derive(Serialize)]
            struct Enrolled {
                node_id: String,
                public_key: String,
                region: String,
            }
            let e = Enrolled {
                node_id: node.node_id().to_string(),
                public_key: node.to_hex(),
                region,
            };
            out.print(&e, || {
                format!("enrolled node {} ({})\n", e.node_id, e.public_key)
            })
        }
        Command::Nodes { store } => {
            let store = PgStore::open_read_only(&url(home, store)?, Options::default()).await?;
            #[derive(Serialize)]
            struct Node {
                node_id: String,
                public_key: String,
                region: String,
                enrolled_at: String,
            }
            let nodes: Vec<Node> = store
                .enrolled()
                .await?
                .into_iter()
                .map(|e| Node {
                    node_id: e.node_key.node_id().to_string(),
                    public_key: e.node_key.to_hex(),
                    region: e.region,
                    enrolled_at: e.time.to_rfc3339_millis(),
                })
                .collect();
            out.print(&nodes, || {
                let mut s = format!("cluster key {}\n", store.node_key().to_hex());
                for n in &nodes {
                    s += &format!(
                        "{}  {}  region {}  enrolled {}\n",
                        n.node_id,
                        n.public_key,
                        if n.region.is_empty() { "-" } else { &n.region },
                        n.enrolled_at
                    );
                }
                s
            })
        }
        Command::Status { store } => {
            let store = PgStore::open_read_only(&url(home, store)?, Options::default()).await?;
            status(out, &store).await
        }
        Command::Export { out: file, store } => {
            let store = PgStore::open_read_only(&url(home, store)?, Options::default()).await?;
            export(out, &store, &file).await
        }
        Command::Verify { store } => {
            let store = PgStore::open_read_only(&url(home, store)?, Options::default()).await?;
            match store.verify(Box::new(|_| {})).await? {
                Verification::Ok(s) => {
                    #[derive(Serialize)]
                    struct Verified {
                        entries: u64,
                        checkpoints: u64,
                        root: String,
                        cluster_key: String,
                    }
                    let v = Verified {
                        entries: s.entries,
                        checkpoints: s.checkpoints,
                        root: s.root.to_hex(),
                        cluster_key: store.node_key().to_hex(),
                    };
                    out.print(&v, || {
                        format!(
                            "ok: {} entries, {} checkpoints, root {}\n",
                            v.entries, v.checkpoints, v.root
                        )
                    })
                }
                Verification::Failed(f) => Err(anyhow::Error::new(crate::VerificationFailed(
                    format!("the cluster's log failed verification: {f}"),
                ))),
            }
        }
    }
}

async fn export(out: &Output, store: &PgStore, file: &Path) -> anyhow::Result<()> {
    // Write beside the target and rename, so a failed export leaves no half file.
    let partial = file.with_extension("partial");
    let f = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let sink = Box::new(std::io::BufWriter::with_capacity(1 << 20, f));
    let summary = match store.export(sink, Box::new(|_| {})).await {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .context("cannot flush the export")?;
    std::fs::rename(&partial, file).with_context(|| format!("cannot write {}", file.display()))?;
    #[derive(Serialize)]
    struct Exported {
        file: String,
        entries: u64,
        checkpoints: u64,
        root: String,
        cluster_key: String,
    }
    let e = Exported {
        file: file.display().to_string(),
        entries: summary.entries,
        checkpoints: summary.checkpoints,
        root: summary.root.to_hex(),
        cluster_key: store.node_key().to_hex(),
    };
    out.print(&e, || {
        format!(
            "exported {} entries and {} checkpoints to {}\ncheck it anywhere with: aura ledger verify --bundle {} --public-key {}\n",
            e.entries, e.checkpoints, e.file, e.file, e.cluster_key
        )
    })
}

async fn status(out: &Output, store: &PgStore) -> anyhow::Result<()> {
    let enrolled = store.enrolled().await?;
    let shards = store.shards().await?;
    let size = store.tree_size().await?;
    let last = store.latest_checkpoint().await?;
    let beats = store.nodes().await?;
    #[derive(Serialize)]
    struct Node {
        node_id: String,
        public_key: String,
        region: String,
        enrolled_at: String,
        /// Shards whose lease this node holds now.
        shards: Vec<u32>,
        /// What the node said in its last heartbeat (none before it first served):
        /// its URL, models (`name@package digest`) and load.
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        models: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        agents: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        missions: Option<u64>,
        /// How long ago its last heartbeat was (its lag), by the database's clock.
        #[serde(skip_serializing_if = "Option::is_none")]
        heartbeat_ms: Option<u64>,
    }
    #[derive(Serialize)]
    struct Status {
        cluster_key: String,
        tree_size: u64,
        last_checkpoint: Option<String>,
        last_checkpoint_by: Option<String>,
        nodes: Vec<Node>,
        shards: Vec<aura_store::postgres::ShardState>,
        unowned_shards: usize,
    }
    let nodes: Vec<Node> = enrolled
        .into_iter()
        .map(|e| {
            let id = e.node_key.node_id();
            let beat = beats.iter().find(|b| b.node == id);
            Node {
                url: beat.map(|b| b.advert.url.clone()),
                models: beat.map(|b| b.advert.models.clone()),
                agents: beat.map(|b| b.advert.agents),
                missions: beat.map(|b| b.advert.missions),
                heartbeat_ms: beat.map(|b| b.heartbeat_ms),
                node_id: id.to_string(),
                public_key: e.node_key.to_hex(),
                region: e.region,
                enrolled_at: e.time.to_rfc3339_millis(),
                shards: shards
                    .iter()
                    .filter(|s| s.owner == Some(id) && s.expires_in_ms.is_some())
                    .map(|s| s.shard)
                    .collect(),
            }
        })
        .collect();
    let st = Status {
        cluster_key: store.node_key().to_hex(),
        tree_size: size,
        last_checkpoint: last.map(|c| c.checkpoint.time.to_rfc3339_millis()),
        last_checkpoint_by: last.map(|c| c.checkpoint.node.to_string()),
        unowned_shards: shards.iter().filter(|s| s.expires_in_ms.is_none()).count(),
        nodes,
        shards,
    };
    out.print(&st, || {
        let mut s = format!(
            "cluster key {}\nledger      {} entries, last checkpoint {} by {}\nnodes\n",
            st.cluster_key,
            st.tree_size,
            st.last_checkpoint.as_deref().unwrap_or("-"),
            st.last_checkpoint_by.as_deref().unwrap_or("-"),
        );
        for n in &st.nodes {
            s += &format!(
                "  {}  region {}  enrolled {}  shards held {}{}\n",
                n.node_id,
                if n.region.is_empty() { "-" } else { &n.region },
                n.enrolled_at,
                n.shards.len(),
                if n.shards.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", ranges(&n.shards))
                }
            );
            match (&n.url, n.heartbeat_ms) {
                (Some(url), Some(ms)) => {
                    let models = n.models.as_deref().unwrap_or_default();
                    s += &format!(
                        "    {url}  heartbeat {}  agents {}  missions {}  models {}\n",
                        if ms >= 10 * 365 * 86_400_000 {
                            "none (left)".to_owned()
                        } else {
                            format!("{ms} ms ago")
                        },
                        n.agents.unwrap_or(0),
                        n.missions.unwrap_or(0),
                        if models.is_empty() {
                            "-".to_owned()
                        } else {
                            // `name@digest`, the digest cut to 12 digits for people
                            // (`--json` has it whole).
                            models
                                .iter()
                                .map(|m| match m.split_once('@') {
                                    Some((name, digest)) => {
                                        format!("{name}@{}", digest.get(..12).unwrap_or(digest))
                                    }
                                    None => m.clone(),
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    );
                }
                _ => s += "    never served\n",
            }
        }

        s += &format!(
            "shards      {} of {} without a live lease\n",
            st.unowned_shards,
            st.shards.len()
        );
        s
    })
}

/// Sorted shard numbers as ranges: `0-5, 9, 12-13`.
fn ranges(shards: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        let mut end = start;
        while i + 1 < shards.len() && shards[i + 1] == end + 1 {
            i += 1;
            end = shards[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn shard_numbers_print_as_ranges() {
        for (shards, expect) in [
            (&[][..], ""),
            (&[3][..], "3"),
            (&[0, 1, 2, 5, 7, 8][..], "0-2, 5, 7-8"),
            (&[62, 63][..], "62-63"),
        ] {
            assert_eq!(super::ranges(shards), expect, "{shards:?}");
        }
    }
}
