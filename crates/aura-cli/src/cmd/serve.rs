//! `aura serve`: run this node: its engine (agents and missions) behind the HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;

use aura_core::door::{OsEntropy, SystemClock};
use aura_identity::TrustSet;
use aura_store::Store;
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Listen on this address [default: from aura.toml, else 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Serialize)]
struct Ready {
    listening: String,
    node_id: String,
    public_key: String,
    auth: &'static str,
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    home.require_init()?;
    let config_path = aura_node::Config::path(home.dir());
    let config = aura_node::Config::load(&config_path)?;
    let listen = args.listen.unwrap_or(config.http.listen);
    let mut issuers = Vec::new();
    for hex in &config.trust.issuers {
        issuers.push(hex.parse().map_err(|_| {
            hinted(
                format!("`{hex}` in {} is not a public key", config_path.display()),
                "list trusted issuers as 64 hex digits",
            )
        })?);
    }
    let (store, signer) = home.open_store_and_signer()?;
    let node_key = signer.public_key();
    issuers.push(node_key);
    let store: Arc<dyn Store> = Arc::new(store);
    let engine = aura_engine::Handle::start(
        aura_engine::Options {
            keystore: Some(home.keystore().dir().to_owned()),
            ..Default::default()
        },
        store,
        signer,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new(issuers),
        aura_engine::Services::deny_all(),
    )
    .await?;
    let keys_file = aura_node::ApiKeys::path(home.dir());
    let open = aura_node::ApiKeys::load(&keys_file)?.is_empty();
    let server = aura_node::serve(
        aura_node::Options {
            listen,
            keys_file,
            limits: config.limits,
        },
        engine.clone(),
    )
    .await
    .map_err(|e| match e.hint() {
        Some(h) => hinted(e.to_string(), h),
        None => e.into(),
    })?;
    let ready = Ready {
        listening: server.addr.to_string(),
        node_id: node_key.node_id().to_string(),
        public_key: node_key.to_hex(),
        auth: if open {
            "none (loopback only)"
        } else {
            "api keys"
        },
    };
    out.line(&ready, || {
        format!(
            "aura node {} listening on http://{} (auth: {}); stop with Ctrl-C",
            ready.node_id, ready.listening, ready.auth
        )
    })?;
    shutdown_signal().await;
    server.shutdown().await;
    engine.shutdown().await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
