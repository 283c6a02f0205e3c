//! What a reasoner takes from the world besides its config: the clock (to read HTTP-date
//! `Retry-After` headers), entropy (for retry jitter), a way to sleep (between retries)
//! and a source of secrets (API keys).
//!
//! Each is a trait object so that tests can pin it: retry tests record the waits instead
//! of sleeping through them, and supply keys without touching the process environment.
//! Waiting through tokio's paused clock is not an option here, because the HTTP tests
//! use real sockets and a paused runtime would fire connection timeouts while it waits.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aura_core::door::{Clock, Entropy, OsEntropy, SystemClock};
use zeroize::Zeroizing;

use crate::{Error, LocalConfig, Reasoner};

/// Waits between attempts.
#[async_trait]
pub trait Sleep: Send + Sync + fmt::Debug {
    async fn sleep(&self, duration: Duration);
}

/// Sleeps on the tokio timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleep;

#[async_trait]
impl Sleep for TokioSleep {
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A secret value, such as an API key. Its `Debug` shows nothing, and its memory is
/// wiped when it is dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where API keys come from, by the name the config gives.
pub trait Secrets: Send + Sync + fmt::Debug {
    fn get(&self, name: &str) -> Option<Secret>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Secrets for ProcessEnv {
    fn get(&self, name: &str) -> Option<Secret> {
        std::env::var(name).ok().map(Secret::new)
    }
}

/// Secrets held in memory, for embedding Aura where keys come from elsewhere (a vault,
/// a parent process) and for tests.
#[derive(Default, Clone)]
pub struct SecretMap(BTreeMap<String, Secret>);

impl SecretMap {
    pub fn new() -> Self {
        SecretMap::default()
    }

    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), Secret::new(value.into()));
        self
    }
}

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets for SecretMap {
    fn get(&self, name: &str) -> Option<Secret> {
        self.0.get(name).cloned()
    }
}

/// Opens in-process models for `provider = "local"` configs. This crate cannot load a
/// model itself: the engine (`aura-infer`) is a heavy crate that depends on this one. A
/// program that links the engine registers its opener with [`Context::with_local`]
/// (`aura_infer::reasoner::LocalOpener`); without one, local configs are refused.
pub trait LocalModels: Send + Sync + fmt::Debug {
    fn open(&self, config: &LocalConfig) -> Result<Arc<dyn Reasoner>, Error>;
}

/// Everything a reasoner takes from the world besides its config.
#[derive(Debug, Clone)]
pub struct Context {
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub sleep: Arc<dyn Sleep>,
    pub secrets: Arc<dyn Secrets>,
    /// What opens `local` configs, if this program can run models.
    pub local: Option<Arc<dyn LocalModels>>,
}

impl Context {
    /// The real world: the system clock, OS entropy, tokio's timer and the process
    /// environment.
    pub fn system() -> Self {
        Context {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            sleep: Arc::new(TokioSleep),
            secrets: Arc::new(ProcessEnv),
            local: None,
        }
    }

    pub fn with_local(mut self, local: Arc<dyn LocalModels>) -> Self {
        self.local = Some(local);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.entropy = entropy;
        self
    }

    pub fn with_sleep(mut self, sleep: Arc<dyn Sleep>) -> Self {
        self.sleep = sleep;
        self
    }

    pub fn with_secrets(mut self, secrets: Arc<dyn Secrets>) -> Self {
        self.secrets = secrets;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let m = SecretMap::new().with("KEY", "sk-very-secret");
        let shown = format!("{m:?} {:?}", m.get("KEY"));
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("KEY"));
        assert_eq!(m.get("KEY").unwrap().expose(), "sk-very-secret");
    }
}
