//! `aura init`: create the data directory, the node's key and its ledger.

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
}

#[derive(Serialize)]
struct Initialized {
    home: String,
    node_id: String,
    public_key: String,
    encrypted: bool,
    ledger: String,
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
    // Opening the store binds it to the new key.
    let store = home.open_store()?;
    let _ = store.tree_size().await?;
    store.close();
    let done = Initialized {
        home: home.dir().display().to_string(),
        node_id: key.node_id().to_string(),
        public_key: key.to_hex(),
        encrypted: args.encrypt,
        ledger: home.ledger_path().display().to_string(),
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
        )
    })
}
