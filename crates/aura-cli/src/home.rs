//! The data directory: where it is, what is in it, and how to open its parts.
//!
//! ```text
//! <home>/            mode 0700
//!   keys/node.key    the node's Ed25519 key (0600, optionally sealed with a passphrase)
//!   keys/<name>.key  named extra keys
//!   keys/cluster.key the cluster key, on the node that created a PostgreSQL cluster
//!                    (docs/cluster.md)
//!   ledger.db        the embedded store (SQLite, WAL)
//!   published/checkpoint.note
//!                    the latest checkpoint this node published, as a signed note; the
//!                    ledger may not fall behind it (docs/ledger.md)
//!   cosignatures/<tree size>.note
//!                    checkpoints cosigned by witnesses, carried into exports
//!   witness/         this node's witness state, when it witnesses other logs
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use aura_core::PublicKey;
use aura_core::door::SystemClock;
use aura_core::keystore::{KeyName, Keystore, Passphrase, Signer};
use aura_store::SqliteStore;
use aura_store::sqlite::Options;

use crate::hinted;

/// The environment variable that may hold key passphrases.
pub(crate) const PASSPHRASE_ENV: &str = "AURA_PASSPHRASE";

#[derive(Debug)]
pub(crate) struct Home {
    dir: PathBuf,
    passphrase_file: Option<PathBuf>,
}

impl Home {
    /// The data directory from `--home`/`AURA_HOME`, else `~/.aura`. Nothing is created.
    pub(crate) fn locate(
        dir: Option<PathBuf>,
        passphrase_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(d) => d,
            None => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| {
                        hinted(
                            "cannot find the data directory: HOME is not set",
                            "pass --home DIR or set AURA_HOME",
                        )
                    })?;
                PathBuf::from(home).join(".aura")
            }
        };
        Ok(Home {
            dir,
            passphrase_file,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn keystore(&self) -> Keystore {
        Keystore::new(self.dir.join("keys"))
    }

    pub(crate) fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger.db")
    }

    /// The latest checkpoint this node published, which its ledger may not fall behind.
    pub(crate) fn published_path(&self) -> PathBuf {
        self.dir.join("published").join("checkpoint.note")
    }

    /// How this node opens its ledger for writing: publishing its checkpoints, and
    /// refusing a ledger that fell behind them.
    pub(crate) fn store_options(&self) -> Options {
        Options {
            published: Some(self.published_path()),
            ..Options::default()
        }
    }

    pub(crate) fn is_initialized(&self) -> bool {
        self.keystore().path_of(&KeyName::node()).exists()
    }

    /// Fails with a hint unless `aura init` has run here.
    pub(crate) fn require_init(&self) -> anyhow::Result<()> {
        if self.is_initialized() {
            Ok(())
        } else {
            Err(hinted(
                format!("no Aura node in {}", self.dir.display()),
                "run `aura init` first, or point --home (or AURA_HOME) at an existing data directory",
            ))
        }
    }

    /// Creates the data directory with mode 0700, or checks an existing one.
    pub(crate) fn create_dir(&self) -> anyhow::Result<()> {
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir)
                .with_context(|| format!("cannot create {}", self.dir.display()))?;
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// A passphrase: from `--passphrase-file`, then `AURA_PASSPHRASE`, then the terminal.
    pub(crate) fn passphrase(&self, key: &str, confirm: bool) -> anyhow::Result<Passphrase> {
        if let Some(path) = &self.passphrase_file {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
            let line = text.lines().next().unwrap_or_default().to_owned();
            if line.is_empty() {
                return Err(hinted(
                    format!("the passphrase file {} is empty", path.display()),
                    "put the passphrase on its first line",
                ));
            }
            return Ok(Passphrase::new(line));
        }
        if let Some(p) = std::env::var_os(PASSPHRASE_ENV) {
            let p = p
                .into_string()
                .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"))?;
            if !p.is_empty() {
                return Ok(Passphrase::new(p));
            }
        }
        let ask = |prompt: &str| {
            rpassword::prompt_password(prompt).map_err(|_| {
                hinted(
                    format!(
                        "key `{key}` needs a passphrase and there is no terminal to ask for it"
                    ),
                    format!("set {PASSPHRASE_ENV} or pass --passphrase-file"),
                )
            })
        };
        let first = ask(&format!("passphrase for key `{key}`: "))?;
        if first.is_empty() {
            return Err(hinted(
                "the passphrase is empty",
                "type a passphrase, or leave the key unencrypted",
            ));
        }
        if confirm && ask("again: ")? != first {
            return Err(hinted(
                "the passphrases differ",
                "type the same passphrase twice",
            ));
        }
        Ok(Passphrase::new(first))
    }

    /// Unseals a key, asking for its passphrase only if it has one.
    pub(crate) fn signer(&self, name: &KeyName) -> anyhow::Result<Signer> {
        let ks = self.keystore();
        let passphrase = if ks.is_encrypted(name)? {
            Some(self.passphrase(name.as_str(), false)?)
        } else {
            None
        };
        Ok(ks.signer(name, passphrase.as_ref())?)
    }

    pub(crate) fn node_public_key(&self) -> anyhow::Result<PublicKey> {
        self.require_init()?;
        Ok(self.keystore().public_key(&KeyName::node())?)
    }

    /// Opens the ledger for writing, as this node.
    pub(crate) fn open_store(&self) -> anyhow::Result<SqliteStore> {
        Ok(self.open_store_and_signer()?.0)
    }

    /// Refuses to open the SQLite ledger of a node whose ledger is a cluster's (`[store]
    /// url` in aura.toml): there is none, and opening would make an empty one.
    fn refuse_if_cluster(&self) -> anyhow::Result<()> {
        let config = aura_node::Config::load(&aura_node::Config::path(&self.dir));
        match config.ok().and_then(|c| c.store.url) {
            None => Ok(()),
            Some(_) => Err(hinted(
                "this node keeps its ledger in its cluster's PostgreSQL store, not in ledger.db",
                "use `aura cluster status|verify|export`, or the running node's HTTP API",
            )),
        }
    }

    /// Opens the ledger for writing and returns the node's signer with it, for the node.
    pub(crate) fn open_store_and_signer(&self) -> anyhow::Result<(SqliteStore, Arc<Signer>)> {
        self.require_init()?;
        self.refuse_if_cluster()?;
        let signer = Arc::new(self.signer(&KeyName::node())?);
        let path = self.ledger_path();
        let store = SqliteStore::open(
            &path,
            signer.clone(),
            Arc::new(SystemClock),
            self.store_options(),
        )
        .with_context(|| format!("cannot open the ledger {}", path.display()))?;
        Ok((store, signer))
    }

    /// The PostgreSQL URL of the cluster's store: `given` (`--store`), else `[store] url`
    /// in aura.toml; `None` for the embedded SQLite store.
    pub(crate) fn store_url(&self, given: Option<String>) -> anyhow::Result<Option<String>> {
        let url = match given {
            Some(url) => Some(url),
            None => {
                aura_node::Config::load(&aura_node::Config::path(&self.dir))?
                    .store
                    .url
            }
        };
        match url {
            Some(url) if !aura_store::postgres::is_url(&url) => Err(hinted(
                format!("`{url}` is not a PostgreSQL URL"),
                "give the cluster's database as postgres://USER@HOST/DB (or postgresql://...)",
            )),
            other => Ok(other),
        }
    }

    /// The name of the cluster key in the keystore.
    pub(crate) fn cluster_key_name() -> KeyName {
        KeyName::new("cluster").unwrap_or_else(|_| KeyName::node())
    }

    /// Opens the cluster's store at `url` as this node (which must be enrolled).
    pub(crate) async fn open_cluster_store(
        &self,
        url: &str,
    ) -> anyhow::Result<(aura_store::postgres::PgStore, Arc<Signer>)> {
        self.require_init()?;
        let signer = Arc::new(self.signer(&KeyName::node())?);
        // A serving node writes its agents' streams only under the leases it holds.
        let store = aura_store::postgres::PgStore::open(
            url,
            signer.clone(),
            Arc::new(SystemClock),
            aura_store::postgres::Options {
                fenced: true,
                ..Default::default()
            },
        )
        .await
        .context("cannot open the cluster's store")?;
        Ok((store, signer))
    }

    /// Opens the ledger for reading only: needs no passphrase and changes nothing.
    pub(crate) fn open_store_read_only(&self) -> anyhow::Result<SqliteStore> {
        self.require_init()?;
        self.refuse_if_cluster()?;
        let path = self.ledger_path();
        let store = SqliteStore::open_read_only(&path, Options::default())
            .with_context(|| format!("cannot open the ledger {}", path.display()))?;
        // The ledger must belong to this node's key, or it proves nothing about this node.
        let key = self.node_public_key()?;
        let store_key = aura_store::Store::node_key(&store);
        if store_key != key {
            return Err(hinted(
                format!(
                    "the ledger in {} is signed by key {}, not by this node's key {}",
                    self.dir.display(),
                    store_key.fingerprint(),
                    key.fingerprint()
                ),
                "the data directory was mixed up or tampered with; verify an export with --public-key instead",
            ));
        }
        Ok(store)
    }
}

/// What the user can do about a store error.
pub(crate) fn store_hint(e: &aura_store::Error) -> Option<String> {
    use aura_store::Error as E;
    match e {
        E::Corrupt { .. } => Some(
            "restore the data directory from a backup, or move the file away and `aura init` again"
                .into(),
        ),
        E::SequenceConflict { .. } => Some(
            "read the agent's head with `aura ledger tail` and append after it, or omit \"seq\""
                .into(),
        ),
        E::Io { context, .. } if context.contains("another process") => {
            Some("stop the other aura process (a running `aura serve`?) or use its API".into())
        }
        E::Inconsistent(_) => Some("run `aura ledger verify` to find what is wrong".into()),
        E::NotEnrolled { .. } => Some(
            "on the node that holds the cluster key, run `aura cluster enroll <this node's public key>`"
                .into(),
        ),
        E::Fenced { .. } => Some(
            "another node owns this agent's shard now; send the request to that node".into(),
        ),
        E::Unavailable(_) | E::Postgres(_) => {
            Some("check that the database is running and the URL is right".into())
        }
        E::WrongNode { .. } => {
            Some("this ledger belongs to another node; use that node's data directory".into())
        }
        E::CutBack { path, .. } => Some(format!(
            "restore the newest copy of ledger.db; to carry on from this older one on purpose, move {} away first (the newer entries are then lost)",
            path.display()
        )),
        E::Forked { path, .. } => Some(format!(
            "this ledger.db is not the history this node published; restore the right one, or move {} away to accept this one",
            path.display()
        )),
        E::BadPublished { path, .. } => Some(format!(
            "the file was damaged or replaced; restore it from a copy, or move {} away to stop checking against it",
            path.display()
        )),
        _ => None,
    }
}
