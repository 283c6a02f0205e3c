//! `aura operator enroll`: give a person a credential so their signed approvals count.

use aura_core::door::OsEntropy;
use aura_core::keystore::KeyName;
use aura_identity::{Credential, Signed};
use serde_json::json;

use crate::client::{Client, NodeArgs};
use crate::home::Home;
use crate::output::Output;

use super::approve::credential_path;

#[derive(Debug, clap::Args)]
pub(crate) struct OperatorArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OperatorCommand {
    /// Give a person a credential so their signed approvals count; makes their key if needed
    Enroll {
        /// The person's key name in this data directory
        name: String,
        /// The level their approvals count at
        #[arg(long, default_value = "L3")]
        level: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Seal a new key with a passphrase
        #[arg(long)]
        encrypt: bool,
    },
}

pub(crate) async fn operator(home: &Home, out: &Output, args: OperatorArgs) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    match args.command {
        OperatorCommand::Enroll {
            name,
            level,
            namespace,
            encrypt,
        } => {
            let key_name = KeyName::new(&name)?;
            let ks = home.keystore();
            let public_key = match ks.public_key(&key_name) {
                Ok(k) => k,
                Err(aura_core::keystore::Error::NotFound { .. }) => {
                    let pass = if encrypt {
                        Some(home.passphrase(&name, true)?)
                    } else {
                        None
                    };
                    ks.create(&key_name, pass.as_ref(), &OsEntropy)?
                }
                Err(e) => return Err(e.into()),
            };
            let cred: Signed<Credential> = client
                .post("/v1/credentials/operators", &json!({ "name": name, "public_key": public_key, "level": level, "namespace": namespace }))
                .await?;
            let path = credential_path(home, &key_name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, serde_json::to_vec_pretty(&cred)?)?;
            out.print(&cred, || {
                format!(
                    "enrolled `{name}` at {} in namespace {}; credential saved to {}\n",
                    cred.statement.level,
                    cred.statement.namespace,
                    path.display()
                )
            })
        }
    }
}
