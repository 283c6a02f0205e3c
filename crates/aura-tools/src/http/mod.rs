//! `http.fetch`: GET or HEAD a URL on an allowlisted host, over a connection pinned to an
//! address that was checked.
//!
//! The order of checks, all before the first packet: the node must have switched HTTP on
//! ([`HttpOptions::enabled`]); the URL must be `http` or `https` without credentials; its
//! host must be in the mission's [`NetworkGrant`](crate::NetworkGrant); every address the
//! host resolves to must be public ([`address::classify`]). The connection then goes to
//! one of those vetted addresses, never to a second lookup, so DNS rebinding cannot switch
//! it. Redirects are not followed: the response (status and `location`) goes back to the
//! reasoner, whose next fetch is judged by policy and the allowlist afresh.

pub mod address;
mod client;

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::args::{parse, schema_for};
use crate::call::{Call, Capability, Prepared, Target, ToolDescriptor};
use crate::context::ToolContext;
use crate::effect::{Effect, ErrorKind, ToolError};
use crate::tool::Tool;

pub use address::{AddressClass, classify};

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 8 << 10;

/// How `http.fetch` is set up on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Off by default: while false, `http.fetch` refuses every call, whatever a mission's
    /// grant says.
    pub enabled: bool,
    /// Sent as `user-agent`.
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            enabled: false,
            user_agent: concat!("aura/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The request method: only the safe ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Head,
}

/// Arguments of `http.fetch`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchArgs {
    /// An `http` or `https` URL on an allowlisted host.
    pub url: String,
    /// `GET` (default) or `HEAD`.
    #[serde(default)]
    pub method: Method,
    /// Most response bytes to return (never more than the node's limit).
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

/// A URL that passed the syntactic checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    /// Lowercase, without brackets or a trailing dot.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// What goes on the request line: path and query, `/` at least.
    pub(crate) path_and_query: String,
}

impl Url {
    pub(crate) fn parse(raw: &str) -> Result<Url, ToolError> {
        let tool = HttpFetch::NAME;
        let bad =
            |why: &str| ToolError::new(ErrorKind::InvalidArguments, format!("{tool}: `url` {why}"));
        if raw.len() > MAX_URL_BYTES {
            return Err(bad(&format!("is longer than {MAX_URL_BYTES} bytes")));
        }
        let uri: hyper::Uri = raw
            .parse()
            .map_err(|e| bad(&format!("is not a valid URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(ToolError::new(
                    ErrorKind::Confinement,
                    format!("{tool}: the scheme `{other}` is not allowed; use http or https"),
                ));
            }
            None => return Err(bad("must be absolute, starting with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("carries credentials; they are not allowed"));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b':'));
        if !host_ok {
            return Err(bad(
                "has an invalid host; write international names in their xn-- form",
            ));
        }
        if host.contains(':') && host.parse::<IpAddr>().is_err() {
            return Err(bad("has an invalid host"));
        }
        let port = match authority.port_u16() {
            Some(0) => return Err(bad("has port 0")),
            Some(port) => port,
            None if https => 443,
            None => 80,
        };
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let path_and_query = if path_and_query.is_empty() {
            "/".to_owned()
        } else {
            path_and_query
        };
        Ok(Url {
            https,
            host,
            port,
            path_and_query,
        })
    }

    pub(crate) fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The `host` header: the host, bracketed if IPv6, with the port where it is not the
    /// scheme's default.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Resolves `url`'s host and returns its addresses if every one of them is public.
/// IP literals are classified without a lookup.
pub(crate) async fn vetted_addresses(
    url: &Url,
    timeout: std::time::Duration,
) -> Result<Vec<SocketAddr>, ToolError> {
    let tool = HttpFetch::NAME;
    let addresses: Vec<SocketAddr> = match url.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => {
                    return Err(ToolError::new(
                        ErrorKind::Network,
                        format!("{tool}: `{}` could not be resolved: {e}", url.host),
                    ));
                }
                Err(_) => {
                    return Err(ToolError::new(
                        ErrorKind::Timeout,
                        format!("{tool}: resolving `{}` timed out", url.host),
                    ));
                }
            }
        }
    };
    if addresses.is_empty() {
        return Err(ToolError::new(
            ErrorKind::Network,
            format!("{tool}: `{}` has no addresses", url.host),
        ));
    }
    for addr in &addresses {
        let class = classify(addr.ip());
        if !class.is_public() {
            return Err(ToolError::new(
                ErrorKind::Confinement,
                format!(
                    "{tool}: `{}` resolves to {}, {class}; refusing",
                    url.host,
                    addr.ip()
                ),
            ));
        }
    }
    Ok(addresses)
}

/// `http.fetch`.
#[derive(Debug)]
pub struct HttpFetch {
    descriptor: ToolDescriptor,
    options: HttpOptions,
}

impl HttpFetch {
    pub const NAME: &'static str = "http.fetch";

    pub fn new(options: HttpOptions) -> Self {
        HttpFetch {
            descriptor: ToolDescriptor {
                name: Self::NAME.to_owned(),
                description: "Fetch a URL (GET or HEAD) from a host the mission is allowed to reach; returns status, selected headers and the body as text. Redirects are returned, not followed.".to_owned(),
                parameters: schema_for::<FetchArgs>(),
                destructive: false,
                compensable: false,
                needs: Capability::Network,
            },
            options,
        }
    }

    async fn fetch(
        &self,
        ctx: &ToolContext,
        args: FetchArgs,
    ) -> Result<serde_json::Value, ToolError> {
        let tool = Self::NAME;
        if !self.options.enabled {
            return Err(ToolError::new(
                ErrorKind::Unavailable,
                format!("{tool}: HTTP is switched off on this node"),
            ));
        }
        let url = Url::parse(&args.url)?;
        if !ctx.network.allows_host(&url.host) {
            return Err(ToolError::new(
                ErrorKind::Confinement,
                format!(
                    "{tool}: `{}` is not an allowlisted host for this mission",
                    url.host
                ),
            ));
        }
        let limits = client::FetchLimits {
            timeout: ctx.limits.http_timeout,
            max_bytes: args.max_bytes.map_or(ctx.limits.http_response_bytes, |m| {
                m.min(ctx.limits.http_response_bytes)
            }),
        };
        let started = tokio::time::Instant::now();
        let addresses = vetted_addresses(&url, limits.timeout).await?;
        let remaining = limits.timeout.saturating_sub(started.elapsed());
        let limits = client::FetchLimits {
            timeout: remaining,
            ..limits
        };
        client::fetch_from(
            &addresses,
            &url,
            args.method,
            &self.options.user_agent,
            &limits,
            client::tls_config,
        )
        .await
    }
}

#[async_trait]
impl Tool for HttpFetch {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let args: FetchArgs = parse(Self::NAME, &call.arguments)?;
        let url = Url::parse(&args.url)?;
        Ok(Prepared {
            call: call.clone(),
            target: Target::Host {
                host: url.host.clone(),
                port: url.port,
                scheme: url.scheme().to_owned(),
            },
            destructive: false,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let id = &prepared.call.id;
        let result = match parse::<FetchArgs>(Self::NAME, &prepared.call.arguments) {
            Ok(args) => self.fetch(ctx, args).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(value) => Effect::ok(Self::NAME, id, value),
            Err(e) => Effect::failed(Self::NAME, id, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |raw: &str, host: &str, port: u16, path: &str| {
            let url = Url::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                (url.host.as_str(), url.port, url.path_and_query.as_str()),
                (host, port, path),
                "{raw}"
            );
        };
        ok("https://Example.COM./a?b=1", "example.com", 443, "/a?b=1");
        ok("http://example.com", "example.com", 80, "/");
        ok("http://example.com:8080/x", "example.com", 8080, "/x");
        ok("http://[2001:db8::1]:81/", "2001:db8::1", 81, "/");
        ok("http://93.184.215.14/", "93.184.215.14", 80, "/");
        let bad = |raw: &str, kind: ErrorKind| {
            assert_eq!(Url::parse(raw).map_err(|e| e.kind), Err(kind), "{raw}");
        };
        bad("ftp://example.com/", ErrorKind::Confinement);
        bad("file:///etc/passwd", ErrorKind::InvalidArguments);
        bad("/relative", ErrorKind::InvalidArguments);
        bad("http://user:pw@example.com/", ErrorKind::InvalidArguments);
        bad("http://example.com:0/", ErrorKind::InvalidArguments);
        bad("http://exa mple.com/", ErrorKind::InvalidArguments);
        bad("http://exämple.com/", ErrorKind::InvalidArguments);
        bad(
            &format!("http://example.com/{}", "a".repeat(MAX_URL_BYTES)),
            ErrorKind::InvalidArguments,
        );
    }

    #[test]
    fn host_headers() {
        let h = |raw: &str| Url::parse(raw).map(|u| u.host_header()).unwrap_or_default();
        assert_eq!(h("https://a.example/"), "a.example");
        assert_eq!(h("http://a.example:8080/"), "a.example:8080");
        assert_eq!(h("http://[2001:db8::1]:81/"), "[2001:db8::1]:81");
    }
}
