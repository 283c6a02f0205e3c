//! Why a turn failed, and whether trying again could help.

use std::path::PathBuf;
use std::time::Duration;

/// Which time limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Opening the connection (TCP and TLS).
    Connect,
    /// From sending the request to the first byte of the response body.
    FirstByte,
    /// Between two chunks of the response body.
    Idle,
    /// The whole turn, attempts and waits included.
    Total,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connecting",
            TimeoutKind::FirstByte => "waiting for the first byte of the response",
            TimeoutKind::Idle => "waiting for the next chunk of the stream",
            TimeoutKind::Total => "for the whole turn",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (bad URL, missing API key variable, bad value).
    #[error("invalid reasoner configuration: {0}")]
    Config(String),

    /// The request cannot be sent as it stands.
    #[error("invalid reasoner request: {0}")]
    InvalidRequest(String),

    /// The provider answered with an error status (other than 429).
    #[error("the provider answered HTTP {status}: {message}")]
    Http {
        status: u16,
        /// An excerpt of the error body (the provider's message where it gave one),
        /// one line, with any secret removed.
        message: String,
        /// The provider's `Retry-After`, if it sent one (503s sometimes do).
        retry_after: Option<Duration>,
    },

    /// The provider answered 429.
    #[error("the provider is rate limiting requests{}: {message}", wait_hint(*retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },

    /// A time limit ran out.
    #[error("the provider timed out {0}")]
    Timeout(TimeoutKind),

    /// The connection failed or broke (refused, reset, TLS, DNS).
    #[error("could not reach the provider: {0}")]
    Transport(String),

    /// The response stream ended before the turn was complete.
    #[error("the provider's response ended before the turn was complete")]
    Truncated,

    /// The response was not what the protocol promises (malformed JSON or SSE, a field
    /// of the wrong type, an oversized line).
    #[error("the provider's response is malformed: {0}")]
    Protocol(String),

    /// The provider reported an error inside an otherwise successful response stream.
    #[error("the provider reported an error mid-stream ({kind}): {message}")]
    Stream {
        kind: String,
        message: String,
        retryable: bool,
    },

    /// A retryable failure kept happening until the retry policy or the total deadline
    /// said to stop.
    #[error("gave up after {attempts} attempts")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<Error>,
    },

    /// The scripted provider's file is unusable.
    #[error("invalid script {}: {detail}", path.display())]
    Script { path: PathBuf, detail: String },

    /// The scripted provider has no turns left.
    #[error("the script {} has no turn left for request {request} (it holds {turns})", path.display())]
    ScriptExhausted {
        path: PathBuf,
        turns: usize,
        request: usize,
    },

    /// A scripted turn's expectation about the request it answers did not hold: the
    /// mission has diverged from the script.
    #[error("scripted turn {turn} expected {expectation}, but {found}")]
    ScriptMismatch {
        turn: usize,
        expectation: String,
        found: String,
    },
}

fn wait_hint(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (it asks to wait {})", humantime::format_duration(d)),
        None => String::new(),
    }
}

impl Error {
    /// Whether the failure is transient, so that the same request may succeed if tried
    /// again later: transport failures, timeouts, truncated streams, 408, 409, 429 and
    /// 5xx. Client errors, malformed responses, configuration and script errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) | Error::Timeout(_) | Error::Truncated => true,
            Error::RateLimited { .. } => true,
            Error::Http { status, .. } => matches!(status, 408 | 409 | 500..=599),
            Error::Stream { retryable, .. } => *retryable,
            Error::RetriesExhausted { last, .. } => last.is_retryable(),
            Error::Config(_)
            | Error::InvalidRequest(_)
            | Error::Protocol(_)
            | Error::Script { .. }
            | Error::ScriptExhausted { .. }
            | Error::ScriptMismatch { .. } => false,
        }
    }

    /// How long the provider asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Http { retry_after, .. } => {
                *retry_after
            }
            Error::RetriesExhausted { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// What the person running Aura could do about the error, where there is something.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Error::Config(_) => "see docs/reasoners.md for the configuration format",
            Error::Http {
                status: 401 | 403, ..
            } => "check the API key in the environment variable named by api_key_env",
            Error::Http { status: 404, .. } => "check base_url and model in the configuration",
            Error::RateLimited { .. } => {
                "wait and try again, or raise retry.max_retry_after in the configuration"
            }
            Error::Timeout(_) => {
                "check that the server is responsive, or raise the limits under [timeouts]"
            }
            Error::Transport(_) => "check that the server at base_url is running and reachable",
            Error::Protocol(_) | Error::Truncated => {
                "check that base_url points at a server of the configured provider kind"
            }
            Error::RetriesExhausted { last, .. } => return last.hint(),
            Error::Script { .. } => "see docs/reasoners.md for the script format",
            Error::ScriptExhausted { .. } => {
                "add turns to the script, or find why the mission took more steps than scripted"
            }
            Error::ScriptMismatch { .. } => {
                "the mission diverged from the script: fix the mission or the script's `expect`"
            }
            Error::Http { .. } | Error::InvalidRequest(_) | Error::Stream { .. } => return None,
        };
        Some(hint.to_owned())
    }

    /// How many attempts the failed turn made.
    pub fn attempts(&self) -> u32 {
        match self {
            Error::RetriesExhausted { attempts, .. } => *attempts,
            _ => 1,
        }
    }
}
