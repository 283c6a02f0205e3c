//! `aura init`: create the data directory, the node's key and its ledger.

use anyhow::Context as _;
use aura_core::door::OsEntropy;
use aura_core::keystore::KeyName;
use aura_store::Store as _;
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seal the node's key with a passphrase (from --passphrase-file, AURA_PASSPHRASE, or a prompt)
    #[arg(long)]
    encrypt: bool,
    /// Keep the ledger in this PostgreSQL database, shared with a cluster of nodes: the
    /// first node creates the cluster (and its key); later ones join it once enrolled
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// This node's region label, recorded in its enrollment
    #[arg(long, value_name = "LABEL", default_value = "", requires = "store")]
    region: String,
}

#[derive(Serialize)]
struct Initialized {
    home: String,
    node_id: String,
    public_key: String,
    encrypted: bool,
    ledger: String,
    /// With `--store`: the cluster key, and whether this node is enrolled.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Cluster>,
}

#[derive(Serialize)]
struct Cluster {
    cluster_key: String,
    created: bool,
    enrolled: bool,
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    if home.is_initialized() {
        return Err(hinted(
            format!("{} already holds an Aura node", home.dir().display()),
            "use it as it is, or choose another directory with --home",
        ));
    }
    home.create_dir()?;
    let passphrase = if args.encrypt {
        Some(home.passphrase("node", true)?)
    } else {
        None
    };
    let key = home
        .keystore()
        .create(&KeyName::node(), passphrase.as_ref(), &OsEntropy)?;
    let (ledger, cluster) = match home.store_url(args.store.clone())? {
        None => {
            // Opening the store binds it to the new key.
            let store = home.open_store()?;
            let _ = store.tree_size().await?;
            store.close();
            (home.ledger_path().display().to_string(), None)
        }
        Some(url) => {
            let cluster = join(home, &url, key, passphrase.as_ref(), &args.region).await?;
            remember_url(home, &url)?;
            (redact(&url), Some(cluster))
        }
    };
    let done = Initialized {
        home: home.dir().display().to_string(),
        node_id: key.node_id().to_string(),
        public_key: key.to_hex(),
        encrypted: args.encrypt,
        ledger,
        cluster,
    };
    out.print(&done, || {
        format!(
            "initialised {}\nnode id     {}\npublic key  {}{}\nledger      {}\n",
            done.home,
            done.node_id,
            done.public_key,
            if done.encrypted {
                " (secret sealed with a passphrase)"
            } else {
                ""
            },
            done.ledger
        ) + &match &done.cluster {
            None => String::new(),
            Some(c) if c.enrolled => format!(
                "cluster key {}{}\n",
                c.cluster_key,
                if c.created { " (created; keys/cluster.key)" } else { "" }
            ),
            Some(c) => format!(
                "cluster key {}\nnot enrolled yet: on the node holding the cluster key, run\n  aura cluster enroll {}\n",
                c.cluster_key, done.public_key
            ),
        }
    })
}

/// Joins the cluster in the database at `url`: creates it (and its key, in this node's
/// keystore) when the database holds none, and enrolls this node when this home holds the
/// cluster key.
async fn join(
    home: &Home,
    url: &str,
    node: aura_core::PublicKey,
    passphrase: Option<&aura_core::keystore::Passphrase>,
    region: &str,
) -> anyhow::Result<Cluster> {
    use aura_store::postgres::PgStore;
    let clock = std::sync::Arc::new(aura_core::door::SystemClock);
    let name = Home::cluster_key_name();
    let ks = home.keystore();
    let (cluster_key, created) = match PgStore::cluster_of(url)
        .await
        .context("cannot reach the cluster's database")?
    {
        Some(key) => (key, false),
        None => {
            let key = ks.create(&name, passphrase, &OsEntropy)?;
            PgStore::init_cluster(url, key)
                .await
                .context("cannot create the cluster")?;
            (key, true)
        }
    };
    let holds_key = ks.path_of(&name).exists() && ks.public_key(&name)? == cluster_key;
    if holds_key {
        let signer = std::sync::Arc::new(home.signer(&name)?);
        PgStore::enroll(url, signer, node, region, clock)
            .await
            .context("cannot enroll this node")?;
    }
    Ok(Cluster {
        cluster_key: cluster_key.to_hex(),
        created,
        enrolled: holds_key,
    })
}

/// Writes `[store] url` into a new aura.toml, so that `aura serve` finds the cluster; an
/// existing file is left alone (the URL is then given with `--store` or added by hand).
fn remember_url(home: &Home, url: &str) -> anyhow::Result<()> {
    let path = aura_node::Config::path(home.dir());
    if path.exists() {
        return Ok(());
    }
    // A JSON string's escapes are all valid in a TOML basic string.
    let text = format!("[store]\nurl = {}\n", serde_json::Value::from(url));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
