//! What a web browser may make of this node: the `Host` a request names must be one the
//! node answers to, and a web page may change things (any method but GET, HEAD and
//! OPTIONS, and every WebSocket, which browsers open across origins freely) only from the
//! node's own origin or one configured in `[http] allowed_origins`.
//!
//! Why: a node without keys trusts every local caller as an operator, and a browser is a
//! local caller that runs anyone's pages. Through DNS rebinding a page's own host name
//! comes to point at 127.0.0.1, so the browser treats the node as that page's server;
//! the request still names the attacker's host, and is refused here. A page that talks to
//! the node under its real address is cross-origin, and the browser says so in `Origin`.
//!
//! Accepted hosts: IP literals of the listen address (any, when it listens on all
//! addresses; any loopback one, when it listens on loopback), `localhost` when loopback
//! reaches the node, and the names in `[http] allowed_hosts`. An IP literal or `localhost`
//! cannot be rebound, so their port is not checked (a forwarded port rewrites it); a
//! configured `name:port` must match exactly, a bare `name` matches any port. `GET
//! /health` answers whatever the host, for load balancers' probes.
//!
//! Requests without `Origin` (the CLI, SDKs, curl) are not from a web page and pass.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// The hosts and origins this node answers to.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    listen: IpAddr,
    hosts: Vec<(String, Option<u16>)>,
    origins: Vec<Origin>,
}

/// A configured host or origin that cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("`{value}` in [http] {field} is not {what}")]
pub struct AccessError {
    pub value: String,
    pub field: &'static str,
    pub what: &'static str,
}

/// A web origin: scheme, host (lowercase, without brackets) and port (the scheme's default
/// when unwritten).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (host, port) = split_host(rest)?;
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(default),
        })
    }
}

/// A `Host` value (or an origin's authority) as a lowercase name without brackets or
/// trailing dot, and its port if written; `None` if it is not one.
fn split_host(text: &str) -> Option<(String, Option<u16>)> {
    if text.is_empty() || text.contains(['@', '/', '?', '#', ' ']) {
        return None;
    }
    let authority: axum::http::uri::Authority = text.parse().ok()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((host, authority.port_u16()))
}

impl Access {
    /// The rules for a node listening on `listen`, with these configured names and
    /// origins.
    pub(crate) fn new(
        listen: SocketAddr,
        hosts: &[String],
        origins: &[String],
    ) -> Result<Access, AccessError> {
        let hosts = hosts
            .iter()
            .map(|h| {
                split_host(h).ok_or_else(|| AccessError {
                    value: h.clone(),
                    field: "allowed_hosts",
                    what: "a host name, or a host name and port",
                })
            })
            .collect::<Result<_, _>>()?;
        let origins = origins
            .iter()
            .map(|o| {
                Origin::parse(o.trim_end_matches('/')).ok_or_else(|| AccessError {
                    value: o.clone(),
                    field: "allowed_origins",
                    what: "an origin such as https://console.example.com",
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Access {
            listen: listen.ip().to_canonical(),
            hosts,
            origins,
        })
    }

    /// Whether a request naming this `Host` is for this node.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let loopback_reaches = self.listen.is_loopback() || self.listen.is_unspecified();
        if let Ok(ip) = name.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            return self.listen.is_unspecified()
                || ip == self.listen
                || (self.listen.is_loopback() && ip.is_loopback());
        }
        if name == "localhost" {
            return loopback_reaches;
        }
        self.hosts
            .iter()
            .any(|(h, p)| *h == name && p.is_none_or(|p| Some(p) == port))
    }

    /// Whether a web page of `origin` may call this node, when the request names `host`:
    /// the page must have been served by the node itself, under that same host and port,
    /// or be configured.
    pub(crate) fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let Some(origin) = Origin::parse(origin) else {
            // `null` (sandboxed frames, files) and anything unreadable.
            return false;
        };
        if self.origins.contains(&origin) {
            return true;
        }
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let default = if origin.scheme == "https" { 443 } else { 80 };
        name == origin.host && port.unwrap_or(default) == origin.port
    }
}

/// The `Host` a request names: the header, or the authority of an absolute request line.
fn host_of(request: &Request) -> Option<String> {
    match request.headers().get(header::HOST) {
        Some(v) => v.to_str().ok().map(str::to_owned),
        None => request.uri().authority().map(|a| a.as_str().to_owned()),
    }
}

/// Whether the request can change something or opens a WebSocket.
fn needs_origin_check(request: &Request) -> bool {
    !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || request.headers().contains_key(header::UPGRADE)
}

/// Refuses requests for other hosts (421) and cross-origin requests from web pages that
/// could change something (403), before anything else looks at them.
pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let access = &state.access;
    let health = request.method() == Method::GET && request.uri().path() == "/health";
    let host = host_of(&request);
    if !health {
        match &host {
            None => {
                return ApiError::bad_request(
                    "host_missing",
                    "the request names no host; send a `Host` header",
                )
                .into_response();
            }
            Some(h) if !access.host_allowed(h) => {
                return ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "invalid_request_error",
                    "host_not_allowed",
                    format!(
                        "this node does not answer to host `{}`; if it should, add the name to [http] allowed_hosts in aura.toml",
                        h.escape_default()
                    ),
                )
                .into_response();
            }
            Some(_) => {}
        }
    }
    if needs_origin_check(&request)
        && let Some(origin) = request.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("");
        let host = host.as_deref().unwrap_or("");
        if !access.origin_allowed(origin, host) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "origin_not_allowed",
                format!(
                    "requests from the web page at `{}` are refused: only this node's own origin, or one in [http] allowed_origins in aura.toml, may call it",
                    origin.escape_default()
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(listen: &str, hosts: &[&str], origins: &[&str]) -> Access {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Access::new(listen.parse().unwrap(), &own(hosts), &own(origins)).unwrap()
    }

    #[test]
    fn hosts_a_node_answers_to() {
        let loopback = access(
            "127.0.0.1:8080",
            &["aura.example.com", "ops.example:9000"],
            &[],
        );
        let all = access("0.0.0.0:8080", &[], &[]);
        let one = access("192.0.2.10:8080", &[], &[]);
        for (rules, host, want) in [
            (&loopback, "127.0.0.1:8080", true),
            (&loopback, "127.0.0.1", true),
            (&loopback, "127.0.0.2:8080", true),
            (&loopback, "[::1]:8080", true),
            (&loopback, "localhost:8080", true),
            (&loopback, "LOCALHOST.:8080", true),
            (&loopback, "aura.example.com", true),
            (&loopback, "aura.example.com:443", true),
            (&loopback, "ops.example:9000", true),
            (&loopback, "ops.example:9001", false),
            (&loopback, "attacker.example:8080", false),
            (&loopback, "localhost.attacker.example", false),
            (&loopback, "192.0.2.10:8080", false),
            (&loopback, "evil@localhost:8080", false),
            (&loopback, "", false),
            (&all, "192.0.2.10:8080", true),
            (&all, "[2001:db8::1]:8080", true),
            (&all, "localhost:8080", true),
            (&all, "attacker.example", false),
            (&one, "192.0.2.10:8080", true),
            (&one, "127.0.0.1:8080", false),
            (&one, "localhost:8080", false),
        ] {
            assert_eq!(rules.host_allowed(host), want, "{host}");
        }
    }

    #[test]
    fn origins_a_node_accepts_web_pages_from() {
        let rules = access("127.0.0.1:8080", &[], &["https://console.example.com/"]);
        for (origin, host, want) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080", true),
            ("http://localhost:8080", "localhost:8080", true),
            ("http://LocalHost:8080", "localhost:8080", true),
            ("http://localhost", "localhost:80", true),
            ("https://console.example.com", "127.0.0.1:8080", true),
            ("https://console.example.com:443", "127.0.0.1:8080", true),
            // Another page on the same machine is another origin.
            ("http://localhost:3000", "localhost:8080", false),
            ("http://127.0.0.1:8080", "localhost:8080", false),
            ("http://evil.example", "127.0.0.1:8080", false),
            ("http://console.example.com", "127.0.0.1:8080", false),
            ("null", "127.0.0.1:8080", false),
            ("file://", "127.0.0.1:8080", false),
        ] {
            assert_eq!(rules.origin_allowed(origin, host), want, "{origin} {host}");
        }
    }

    #[test]
    fn configured_hosts_and_origins_are_checked_at_start() {
        let listen = "127.0.0.1:8080".parse().unwrap();
        assert!(Access::new(listen, &["https://x.example".into()], &[]).is_err());
        assert!(Access::new(listen, &["a b".into()], &[]).is_err());
        assert!(Access::new(listen, &[], &["console.example.com".into()]).is_err());
        assert!(Access::new(listen, &[], &["ftp://x.example".into()]).is_err());
        assert!(
            Access::new(
                listen,
                &["x.example:8443".into()],
                &["http://x.example:8443".into()]
            )
            .is_ok()
        );
    }
}
