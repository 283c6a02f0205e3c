//! `aura key`: show and create keys. Secrets are never printed.

use aura_core::door::OsEntropy;
use aura_core::keystore::{KeyInfo, KeyName};
use serde::Serialize;

use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Show a key's public half (the node's key by default)
    Show {
        /// Key name
        #[arg(default_value = "node")]
        name: String,
    },
    /// Create a named key
    New {
        /// Key name: 1-63 of a-z, 0-9, '-' and '_'
        name: String,
        /// Seal the key with a passphrase
        #[arg(long)]
        encrypt: bool,
    },
    /// List the keys in the data directory
    List,
}

#[derive(Serialize)]
struct Shown {
    name: String,
    public_key: String,
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    encrypted: bool,
    path: String,
}

fn shown(info: &KeyInfo) -> Shown {
    Shown {
        name: info.name.clone(),
        public_key: info.public_key.to_hex(),
        key_id: info.key_id.clone(),
        node_id: (info.name == "node").then(|| info.public_key.node_id().to_string()),
        encrypted: info.encrypted,
        path: info.path.display().to_string(),
    }
}

fn human(s: &Shown) -> String {
    let mut text = format!(
        "name        {}\npublic key  {}\nkey id      {}\n",
        s.name, s.public_key, s.key_id
    );
    if let Some(node) = &s.node_id {
        text.push_str(&format!("node id     {node}\n"));
    }
    text.push_str(&format!(
        "encrypted   {}\n",
        if s.encrypted { "yes" } else { "no" }
    ));
    text
}

pub(crate) fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    home.require_init()?;
    let ks = home.keystore();
    match cmd {
        Command::Show { name } => {
            let name = KeyName::new(&name)?;
            let key = ks.public_key(&name)?;
            let info = KeyInfo {
                name: name.to_string(),
                key_id: key.key_id(),
                public_key: key,
                encrypted: ks.is_encrypted(&name)?,
                path: ks.path_of(&name),
            };
            let s = shown(&info);
            out.print(&s, || human(&s))
        }
        Command::New { name, encrypt } => {
            let name = KeyName::new(&name)?;
            let passphrase = if encrypt {
                Some(home.passphrase(name.as_str(), true)?)
            } else {
                None
            };
            let key = ks.create(&name, passphrase.as_ref(), &OsEntropy)?;
            let info = KeyInfo {
                name: name.to_string(),
                key_id: key.key_id(),
                public_key: key,
                encrypted: encrypt,
                path: ks.path_of(&name),
            };
            let s = shown(&info);
            out.print(&s, || format!("created key `{}`\n{}", s.name, human(&s)))
        }
        Command::List => {
            let keys: Vec<Shown> = ks.list()?.iter().map(shown).collect();
            out.print(&keys, || {
                keys.iter()
                    .map(|k| {
                        format!(
                            "{:<16} {}  {}\n",
                            k.name,
                            k.public_key,
                            if k.encrypted { "encrypted" } else { "" }
                        )
                    })
                    .collect()
            })
        }
    }
}
