//! The HTTP providers and what they share: one attempt's exchange (send, check the
//! status, read the body under the first-byte and idle limits, decode), error bodies,
//! `Retry-After`, and the API root rule for base URLs.

mod anthropic;
mod openai;
mod retrier;

use std::time::{Duration, UNIX_EPOCH};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

pub use anthropic::Anthropic;
pub use openai::OpenAi;

use crate::config::Timeouts;
use crate::context::Secret;
use crate::error::TimeoutKind;
use crate::sse;
use crate::wire::{Decoder, emit_turn, excerpt};
use crate::{Context, Error, Turn};

/// The largest response body read when it is not streamed, and the most of an error
/// body kept.
const MAX_BODY_BYTES: usize = 32 << 20;
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// The API root from a configured base URL: a URL without a path gets the conventional
/// `/v1`; any other path is used as given.
pub(crate) fn api_root(base_url: &str) -> Result<Url, Error> {
    let mut url = Url::parse(base_url.trim())
        .map_err(|e| Error::Config(format!("base_url `{base_url}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "base_url must use http or https, not `{}`",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs and in `describe()`; the key belongs in
        // the environment variable named by api_key_env.
        return Err(Error::Config(
            "base_url must not contain credentials; name an environment variable in api_key_env"
                .into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(
            "base_url must not have a query or fragment".into(),
        ));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/v1");
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// `root` joined with `tail` (no leading slash).
pub(crate) fn endpoint(root: &Url, tail: &str) -> Url {
    let mut url = root.clone();
    let path = format!("{}/{tail}", root.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// What every HTTP provider holds.
#[derive(Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    timeouts: Timeouts,
    context: Context,
    /// The key, kept so that it can be cut out of any error body that echoes it.
    key: Option<Secret>,
}

impl Http {
    pub(crate) fn new(
        timeouts: &Timeouts,
        context: &Context,
        key: Option<Secret>,
    ) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            // A redirect could carry the key header to another host; providers do not
            // redirect API calls, so a 3xx is reported rather than followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aura/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Http {
            client,
            timeouts: timeouts.clone(),
            context: context.clone(),
            key,
        })
    }

    pub(crate) fn key(&self) -> Option<&Secret> {
        self.key.as_ref()
    }

    /// One attempt: posts `body` and decodes the response, streamed or whole (by its
    /// content type).
    pub(crate) async fn exchange<D: Decoder + Send>(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: Vec<u8>,
        mut decoder: D,
        emit: &mut (dyn FnMut(crate::Delta) + Send),
        error_message: fn(&[u8]) -> Option<String>,
    ) -> Result<Turn, Error> {
        let first_byte = Instant::now() + self.timeouts.first_byte;
        let send = self
            .client
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send();
        let response = match tokio::time::timeout_at(first_byte, send).await {
            Err(_) => return Err(Error::Timeout(TimeoutKind::FirstByte)),
            Ok(Err(e)) => return Err(self.transport(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        let mut body = Body {
            response,
            first_byte: Some(first_byte),
            idle: self.timeouts.idle,
        };
        if !status.is_success() {
            return Err(self.status_error(status, body, error_message).await);
        }
        if is_sse {
            let mut parser = sse::Parser::new();
            let mut events = Vec::new();
            while let Some(chunk) = body.next(self).await? {
                parser.feed(&chunk, &mut events)?;
                for event in events.drain(..) {
                    if decoder.on_event(&event, emit)? {
                        return decoder.finish();
                    }
                }
            }
            decoder.finish()
        } else {
            let bytes = body.read_all(self, MAX_BODY_BYTES).await?;
            let turn = decoder.decode_whole(&bytes)?;
            emit_turn(&turn, emit);
            Ok(turn)
        }
    }

    async fn status_error(
        &self,
        status: StatusCode,
        body: Body,
        error_message: fn(&[u8]) -> Option<String>,
    ) -> Error {
        let retry_after = retry_after(body.response.headers(), self.context.clock.as_ref());
        // The body only explains the status; if it cannot be read, the status stands.
        let bytes = body
            .read_all(self, MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        let text =
            error_message(&bytes).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        let mut message = self.redact(excerpt(&text, 300));
        if message.is_empty() {
            message = status
                .canonical_reason()
                .unwrap_or("no message")
                .to_lowercase();
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            Error::RateLimited {
                retry_after,
                message,
            }
        } else {
            Error::Http {
                status: status.as_u16(),
                message,
                retry_after,
            }
        }
    }

    fn transport(&self, e: &reqwest::Error) -> Error {
        if e.is_connect() && e.is_timeout() {
            return Error::Timeout(TimeoutKind::Connect);
        }
        Error::Transport(self.redact(chain(e)))
    }

    /// Cuts the key out of text a provider sent back (some echo a wrong key).
    fn redact(&self, text: String) -> String {
        match &self.key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "[redacted]"),
            _ => text,
        }
    }
}

/// A response body read under the first-byte and idle limits.
struct Body {
    response: reqwest::Response,
    /// The first-byte deadline, until the first chunk has come.
    first_byte: Option<Instant>,
    idle: Duration,
}

impl Body {
    async fn next(&mut self, http: &Http) -> Result<Option<bytes::Bytes>, Error> {
        let (deadline, kind) = match self.first_byte.take() {
            Some(d) => (d, TimeoutKind::FirstByte),
            None => (Instant::now() + self.idle, TimeoutKind::Idle),
        };
        match tokio::time::timeout_at(deadline, self.response.chunk()).await {
            Err(_) => Err(Error::Timeout(kind)),
            Ok(Err(e)) => Err(http.transport(&e)),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    async fn read_all(mut self, http: &Http, limit: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next(http).await? {
            if out.len() + chunk.len() > limit {
                return Err(Error::Protocol(format!(
                    "the response is larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// An error and its causes on one line (reqwest's own message names only the step).
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// How long the provider asks us to wait: `retry-after-ms` (OpenAI's, in
/// milliseconds), else `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(
    headers: &HeaderMap,
    clock: &dyn aura_core::door::Clock,
) -> Option<Duration> {
    fn text(v: &HeaderValue) -> Option<&str> {
        v.to_str().ok().map(str::trim)
    }
    if let Some(ms) = headers.get("retry-after-ms").and_then(text)
        && let Ok(ms) = ms.parse::<f64>()
        && ms.is_finite()
        && ms >= 0.0
    {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = headers.get(RETRY_AFTER).and_then(text)?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    let now = UNIX_EPOCH + Duration::from_nanos(clock.now().as_nanos());
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A header value that must not be logged.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, Error> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::Config("the API key holds characters that cannot be sent in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Reads the key named by the config from the context's secrets.
pub(crate) fn read_key(context: &Context, env: &str) -> Result<Secret, Error> {
    match context.secrets.get(env) {
        Some(key) if !key.expose().trim().is_empty() => {
            secret_header(key.expose())?;
            Ok(key)
        }
        Some(_) => Err(Error::Config(format!(
            "the environment variable {env} is empty"
        ))),
        None => Err(Error::Config(format!(
            "the environment variable {env} is not set; it should hold the API key"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use aura_core::Timestamp;
    use aura_core::door::ManualClock;

    use super::*;

    #[test]
    fn base_urls_get_v1_only_when_they_have_no_path() {
        for (given, root) in [
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
            ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
            ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
            ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
            ("https://host/openai/v1", "https://host/openai/v1"),
            ("http://localhost:11434/api", "http://localhost:11434/api"),
        ] {
            let url = api_root(given).unwrap();
            assert_eq!(url.as_str(), root, "{given}");
            assert_eq!(
                endpoint(&url, "chat/completions").as_str(),
                format!("{root}/chat/completions")
            );
        }
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for (given, why) in [
            ("localhost:8000", "http or https"),
            ("not a url", "not a URL"),
            ("ftp://host/v1", "http or https"),
            ("https://user:sk-secret@host/v1", "credentials"),
            ("https://host/v1?key=sk-secret", "query"),
        ] {
            let err = api_root(given).unwrap_err().to_string();
            assert!(err.contains(why), "{given}: {err}");
        }
    }

    #[test]
    fn retry_after_in_its_three_forms() {
        let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
        let at = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            retry_after(&h, &clock)
        };
        assert_eq!(at(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            at(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            at(&[("retry-after", "3"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            at(&[("retry-after", "Tue, 14 Nov 2023 22:13:50 GMT")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            at(&[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")]),
            Some(Duration::ZERO)
        );
        assert_eq!(at(&[("retry-after", "soon")]), None);
        assert_eq!(at(&[("retry-after", "-3")]), None);
        assert_eq!(at(&[]), None);
    }
}
