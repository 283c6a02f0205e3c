//! Reasoner configuration: which provider, which model, where, and how patiently.
//!
//! A [`Config`] is plain data (TOML or JSON, see `docs/reasoners.md`) and never holds a
//! secret: API keys are read from the environment variable the config names, when the
//! reasoner is built. Durations are written as humantime strings (`"500ms"`, `"2m"`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Which reasoner to build. There is deliberately no default: a mission names its
/// reasoner, and the scripted one in particular is only ever chosen on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Config {
    /// Any server speaking OpenAI's chat completions: OpenAI, vLLM, llama.cpp's server,
    /// Ollama, and Aura's own endpoint.
    #[serde(rename = "openai")]
    OpenAi(OpenAiConfig),
    /// Anthropic's Messages API.
    Anthropic(AnthropicConfig),
    /// Replays a file of turns, for tests and reproducible demos.
    Scripted(ScriptedConfig),
    /// A model running in this process (crate `aura-infer`), opened through the
    /// [`LocalModels`](crate::LocalModels) the program registers in its
    /// [`Context`](crate::Context).
    Local(LocalConfig),
}

impl Config {
    /// Reads a config file: TOML, or JSON when the name ends in `.json`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed = if is_json {
            Config::from_json(&text)
        } else {
            Config::from_toml(&text)
        };
        parsed.map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, Error> {
        // Only the message and the line where toml knows it (not inside the provider
        // table, which serde buffers): toml's full error quotes the offending line, which
        // would echo a key someone pasted into the file.
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1);
            let message = one_line(e.message());
            Error::Config(match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_json(text: &str) -> Result<Config, Error> {
        let config: Config =
            serde_json::from_str(text).map_err(|e| Error::Config(one_line(&e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot: ranges, URLs, names.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Config::OpenAi(c) => {
                check_model(&c.model)?;
                check_env_name(c.api_key_env.as_deref())?;
                c.retry.validate()?;
                c.timeouts.validate()
            }
            Config::Anthropic(c) => {
                check_model(&c.model)?;
                check_env_name(Some(&c.api_key_env))?;
                if c.max_tokens == 0 {
                    return Err(Error::Config("max_tokens must be at least 1".into()));
                }
                c.retry.validate()?;
                c.timeouts.validate()
            }
            Config::Scripted(_) => Ok(()),
            Config::Local(c) => {
                if c.model.as_os_str().is_empty() {
                    return Err(Error::Config(
                        "model must be the path of a GGUF file or a model directory".into(),
                    ));
                }
                if let Some(name) = &c.name {
                    check_model(name)?;
                }
                if c.threads == Some(0) {
                    return Err(Error::Config("threads must be at least 1".into()));
                }
                if c.max_tokens == Some(0) {
                    return Err(Error::Config("max_tokens must be at least 1".into()));
                }
                Ok(())
            }
        }
    }
}

/// An OpenAI-compatible chat completions endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The API root, as OpenAI's own client libraries take it: requests go to
    /// `{base_url}/chat/completions`. A URL without a path (`http://127.0.0.1:8000`)
    /// means the conventional root `/v1`; any other path is used as given, so
    /// `https://host/openai/v1` works too.
    pub base_url: String,
    pub model: String,
    /// The environment variable holding the API key, sent as a bearer token. Local
    /// servers usually need none.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Stream the response (server-sent events). Turn it off for servers that cannot
    /// stream tool calls.
    #[serde(default = "yes")]
    pub stream: bool,
    /// Which request field carries the token limit: `max_tokens` (every compatible
    /// server) or `max_completion_tokens` (required by OpenAI's newer models).
    #[serde(default)]
    pub max_tokens_field: MaxTokensField,
    /// The token limit when the request sets none; the server's own default if unset.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// See [`OpenAiConfig::max_tokens_field`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

/// Anthropic's Messages API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// The API root; requests go to `{base_url}/v1/messages` (or `{base_url}/messages`
    /// when the path already ends in `/v1`).
    #[serde(default = "anthropic_base_url")]
    pub base_url: String,
    pub model: String,
    /// The environment variable holding the API key.
    #[serde(default = "anthropic_key_env")]
    pub api_key_env: String,
    /// The token limit when the request sets none (Anthropic requires one).
    #[serde(default = "anthropic_max_tokens")]
    pub max_tokens: u32,
    /// The `anthropic-version` header.
    #[serde(default = "anthropic_version")]
    pub version: String,
    #[serde(default = "yes")]
    pub stream: bool,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// The scripted provider: a file of turns (see `docs/reasoners.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedConfig {
    pub path: PathBuf,
}

/// The in-process model: a GGUF file, or a directory with `config.json`,
/// `tokenizer.json` and safetensors shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    pub model: PathBuf,
    /// The model's name in turns; the file or directory name when unset.
    #[serde(default)]
    pub name: Option<String>,
    /// Threads for the model's work (results do not depend on it); all cores when unset.
    #[serde(default)]
    pub threads: Option<usize>,
    /// The token limit when the request sets none; the engine's default (512) if unset.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// When and how often to try a failed request again.
///
/// The wait before attempt `n + 1` is `initial_interval * multiplier^(n - 1)`, at most
/// `max_interval`, spread by `jitter` (0.2 means ±20%, drawn from the entropy door). A
/// provider's `Retry-After` replaces the computed wait; one longer than
/// `max_retry_after` ends the turn instead, since neither waiting that long inside a step
/// nor retrying earlier than the provider asked is right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means never retry).
    pub max_attempts: u32,
    #[serde(with = "human_duration")]
    pub initial_interval: Duration,
    pub multiplier: f64,
    #[serde(with = "human_duration")]
    pub max_interval: Duration,
    pub jitter: f64,
    #[serde(with = "human_duration")]
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_interval: Duration::from_millis(500),
            multiplier: 2.0,
            max_interval: Duration::from_secs(30),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.max_attempts == 0 {
            return Err(Error::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(Error::Config(
                "retry.multiplier must be a number of at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::Config("retry.jitter must be between 0 and 1".into()));
        }
        if self.max_interval < self.initial_interval {
            return Err(Error::Config(
                "retry.max_interval must not be below retry.initial_interval".into(),
            ));
        }
        Ok(())
    }
}

/// Time limits for HTTP providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Opening a connection (TCP and TLS).
    #[serde(with = "human_duration")]
    pub connect: Duration,
    /// From sending a request to the first byte of the response body. For a response
    /// that is not streamed this covers the whole generation, so it is generous.
    #[serde(with = "human_duration")]
    pub first_byte: Duration,
    /// The longest silence between two chunks of a response.
    #[serde(with = "human_duration")]
    pub idle: Duration,
    /// The whole turn: every attempt and every wait between them.
    #[serde(with = "human_duration")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    pub fn validate(&self) -> Result<(), Error> {
        for (name, d) in [
            ("connect", self.connect),
            ("first_byte", self.first_byte),
            ("idle", self.idle),
            ("total", self.total),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("timeouts.{name} must be above zero")));
            }
        }
        Ok(())
    }
}

fn check_model(model: &str) -> Result<(), Error> {
    if model.trim().is_empty() {
        return Err(Error::Config("model must not be empty".into()));
    }
    Ok(())
}

fn check_env_name(name: Option<&str>) -> Result<(), Error> {
    let Some(name) = name else { return Ok(()) };
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(())
    } else {
        // Say what is wrong without echoing the value: a pasted key in this field would
        // otherwise end up in logs.
        Err(Error::Config(
            "api_key_env must name an environment variable (letters, digits and `_`), \
             not hold the key itself"
                .into(),
        ))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn yes() -> bool {
    true
}

fn anthropic_base_url() -> String {
    "https://api.anthropic.com".into()
}

fn anthropic_key_env() -> String {
    "ANTHROPIC_API_KEY".into()
}

fn anthropic_max_tokens() -> u32 {
    4096
}

fn anthropic_version() -> String {
    "2023-06-01".into()
}

/// Serde for durations as humantime strings.
mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"500ms\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_configs_parse_and_bad_values_are_refused() {
        let c = Config::from_toml("provider = \"local\"\nmodel = \"models/smol.gguf\"\n").unwrap();
        let Config::Local(c) = c else {
            panic!("wrong provider")
        };
        assert_eq!(c.model, Path::new("models/smol.gguf"));
        assert_eq!((c.name, c.threads, c.max_tokens), (None, None, None));
        for bad in [
            "provider = \"local\"\nmodel = \"\"\n",
            "provider = \"local\"\nmodel = \"m.gguf\"\nthreads = 0\n",
            "provider = \"local\"\nmodel = \"m.gguf\"\nmax_tokens = 0\n",
            "provider = \"local\"\nmodel = \"m.gguf\"\nbase_url = \"http://x\"\n",
            "provider = \"local\"\n",
        ] {
            assert!(
                matches!(Config::from_toml(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn toml_with_sections_parses() {
        let c = Config::from_toml(
            r#"
            provider = "openai"
            base_url = "http://127.0.0.1:8000/v1"
            model = "qwen2.5-7b-instruct"
            api_key_env = "VLLM_API_KEY"

            [retry]
            max_attempts = 6
            initial_interval = "250ms"

            [timeouts]
            idle = "15s"
            "#,
        )
        .unwrap();
        let Config::OpenAi(c) = c else {
            panic!("wrong provider")
        };
        assert_eq!(c.retry.max_attempts, 6);
        assert_eq!(c.retry.initial_interval, Duration::from_millis(250));
        assert_eq!(c.retry.multiplier, 2.0);
        assert_eq!(c.timeouts.idle, Duration::from_secs(15));
        assert_eq!(c.timeouts.connect, Duration::from_secs(10));
        assert!(c.stream);
    }

    #[test]
    fn json_round_trips() {
        let c = Config::Anthropic(AnthropicConfig {
            base_url: anthropic_base_url(),
            model: "claude-sonnet-4-5".into(),
            api_key_env: anthropic_key_env(),
            max_tokens: 1000,
            version: anthropic_version(),
            stream: false,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
        });
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(Config::from_json(&json).unwrap(), c);
        let toml_text = toml_roundtrip_text(&json);
        assert_eq!(Config::from_toml(&toml_text).unwrap(), c);
    }

    /// Writes the JSON config as TOML by hand (the crate only parses TOML).
    fn toml_roundtrip_text(json: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut top = String::new();
        let mut sections = String::new();
        for (k, v) in v.as_object().unwrap() {
            match v {
                serde_json::Value::Object(m) => {
                    sections.push_str(&format!("[{k}]\n"));
                    for (k, v) in m {
                        sections.push_str(&format!("{k} = {v}\n"));
                    }
                }
                v => top.push_str(&format!("{k} = {v}\n")),
            }
        }
        top + &sections
    }

    fn check(text: &str, expect: &str) {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(
            err.contains(expect),
            "{text:?}: expected {expect:?} in {err:?}"
        );
        assert!(!err.contains('\n'), "multi-line error: {err:?}");
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        check(r#"model = "m""#, "provider");
        check(r#"provider = "gemini""#, "gemini");
        check(r#"provider = "openai""#, "base_url");
        check(
            r#"provider = "openai"
base_url = "http://h/v1"
model = "m"
api_key = "sk-123""#,
            "unknown field `api_key`",
        );
        check(
            r#"provider = "openai"
base_url = "http://h/v1"
model = " ""#,
            "model must not be empty",
        );
        check(
            r#"provider = "openai"
base_url = "http://h/v1"
model = "m"
api_key_env = "sk-live-123""#,
            "must name an environment variable",
        );
        check(
            r#"provider = "anthropic"
model = "m"
[retry]
max_attempts = 0"#,
            "max_attempts",
        );
        check(
            r#"provider = "anthropic"
model = "m"
[retry]
jitter = 1.5"#,
            "jitter",
        );
        check(
            r#"provider = "anthropic"
model = "m"
[timeouts]
idle = "soon""#,
            "not a duration",
        );
        check(
            r#"provider = "anthropic"
model = "m"
[timeouts]
idle = "0s""#,
            "timeouts.idle",
        );
        check(r#"provider = "scripted""#, "path");
    }

    #[test]
    fn a_key_pasted_into_the_file_is_not_echoed() {
        let err = Config::from_toml(
            r#"provider = "openai"
base_url = "http://h/v1"
model = "m"
api_key = "sk-live-SECRET""#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `api_key`"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn a_key_pasted_into_api_key_env_is_not_echoed() {
        let err = Config::from_toml(
            r#"provider = "openai"
base_url = "http://h/v1"
model = "m"
api_key_env = "sk-live-SECRET""#,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }
}
