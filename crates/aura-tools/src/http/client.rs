//! The HTTP/1.1 client behind `http.fetch`: one request over one connection to an
//! address the caller already vetted, with TLS (rustls, Mozilla's roots from
//! `webpki-roots`) for `https`, a size limit on the body and one deadline for everything.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{HttpFetch, Method, Url};
use crate::effect::{ErrorKind, ToolError};

/// Response headers passed back to the reasoner; the rest are dropped.
const KEPT_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "content-encoding",
    "location",
    "last-modified",
    "etag",
    "retry-after",
];

#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchLimits {
    /// For connecting, the TLS handshake, the request and reading the body together.
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: usize,
}

/// The TLS client configuration, built once: ring as the crypto provider, Mozilla's root
/// certificates, HTTP/1.1 by ALPN.
pub(crate) fn tls_config() -> Result<Arc<ClientConfig>, ToolError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(|e| {
            ToolError::new(
                ErrorKind::Unavailable,
                format!("{}: TLS cannot be set up: {e}", HttpFetch::NAME),
            )
        })
}

fn network(what: &str, e: impl std::fmt::Display) -> ToolError {
    ToolError::new(
        ErrorKind::Network,
        format!("{}: {what}: {e}", HttpFetch::NAME),
    )
}

/// Fetches `url` from the first of `addresses` that accepts a connection. The addresses
/// must already be vetted; this function does no lookups of its own.
pub(crate) async fn fetch_from(
    addresses: &[SocketAddr],
    url: &Url,
    method: Method,
    user_agent: &str,
    limits: &FetchLimits,
    tls: impl Fn() -> Result<Arc<ClientConfig>, ToolError>,
) -> Result<serde_json::Value, ToolError> {
    let work = async {
        let mut last_error = None;
        let mut stream = None;
        for addr in addresses {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some((s, *addr));
                    break;
                }
                Err(e) => last_error = Some(network(&format!("connecting to {addr}"), e)),
            }
        }
        let Some((stream, addr)) = stream else {
            return Err(last_error.unwrap_or_else(|| network("connecting", "no addresses")));
        };
        if url.https {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| network("the host is not a valid TLS server name", e))?;
            let tls = TlsConnector::from(tls()?)
                .connect(name, stream)
                .await
                .map_err(|e| network("TLS handshake", e))?;
            request(tls, addr, url, method, user_agent, limits).await
        } else {
            request(stream, addr, url, method, user_agent, limits).await
        }
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ToolError::new(
            ErrorKind::Timeout,
            format!(
                "{}: no complete answer within {} ms",
                HttpFetch::NAME,
                limits.timeout.as_millis()
            ),
        )),
    }
}

async fn request<S>(
    stream: S,
    addr: SocketAddr,
    url: &Url,
    method: Method,
    user_agent: &str,
    limits: &FetchLimits,
) -> Result<serde_json::Value, ToolError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| network("HTTP handshake", e))?;
    // The connection task drives the socket; it ends when the response is read or the
    // sender is dropped, and is aborted with it if the deadline strikes first.
    let driver = tokio::spawn(connection);
    let _abort = AbortOnDrop(driver);
    let method = match method {
        Method::Get => hyper::Method::GET,
        Method::Head => hyper::Method::HEAD,
    };
    let req = Request::builder()
        .method(method.clone())
        .uri(url.path_and_query.as_str())
        .header(header::HOST, url.host_header())
        .header(header::USER_AGENT, user_agent)
        .header(header::ACCEPT, "*/*")
        .header(header::ACCEPT_ENCODING, "identity")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| network("building the request", e))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| network("sending the request", e))?;
    let status = response.status();
    let mut headers = serde_json::Map::new();
    for name in KEPT_HEADERS {
        if let Some(value) = response.headers().get(name) {
            headers.insert(name.to_owned(), json!(header_text(value)));
        }
    }
    let mut body = response.into_body();
    let mut bytes: Vec<u8> = Vec::new();
    let mut truncated = false;
    if method != hyper::Method::HEAD {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| network("reading the response", e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let room = limits.max_bytes - bytes.len();
            if data.len() > room {
                bytes.extend_from_slice(&data[..room]);
                truncated = true;
                break;
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(json!({
        "url": format!("{}://{}{}", url.scheme(), url.host_header(), url.path_and_query),
        "address": addr.to_string(),
        "status": status.as_u16(),
        "reason": status.canonical_reason().unwrap_or_default(),
        "redirect": is_redirect(status),
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
        "bytes": bytes.len(),
        "truncated": truncated,
    }))
}

fn is_redirect(status: StatusCode) -> bool {
    status.is_redirection() && status != StatusCode::NOT_MODIFIED
}

fn header_text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    //! The client against real sockets on loopback. `http.fetch` itself never connects to
    //! loopback; these tests call the layer below the address checks.

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one connection: reads the request head, answers `response`, returns what it
    /// read.
    async fn serve_once(
        response: Vec<u8>,
        stall: bool,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            if stall {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let _ = socket.write_all(&response).await;
            let _ = socket.shutdown().await;
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, task)
    }

    fn url(addr: SocketAddr, path: &str) -> Url {
        Url::parse(&format!("http://{addr}{path}")).unwrap()
    }

    fn no_tls() -> Result<Arc<ClientConfig>, ToolError> {
        Err(ToolError::new(ErrorKind::Internal, "no TLS in this test"))
    }

    const LIMITS: FetchLimits = FetchLimits {
        timeout: Duration::from_secs(10),
        max_bytes: 16,
    };

    #[tokio::test]
    async fn fetches_status_headers_and_a_truncated_body() {
        let body = "0123456789abcdefghijklmnopqrstuvwxyz";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-secret: no\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (addr, server) = serve_once(response.into_bytes(), false).await;
        let value = fetch_from(
            &[addr],
            &url(addr, "/p?q=1"),
            Method::Get,
            "aura-test",
            &LIMITS,
            no_tls,
        )
        .await
        .unwrap();
        assert_eq!(value["status"], 200);
        assert_eq!(value["body"], "0123456789abcdef");
        assert_eq!(value["truncated"], true);
        assert_eq!(value["headers"]["content-type"], "text/plain");
        assert!(value["headers"].get("x-secret").is_none());
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_lowercase().contains(&format!("host: {addr}")),
            "{head}"
        );
        assert!(head.contains("aura-test"), "{head}");
    }

    #[tokio::test]
    async fn redirects_are_reported_not_followed() {
        let response = b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest\r\ncontent-length: 0\r\n\r\n".to_vec();
        let (addr, _server) = serve_once(response, false).await;
        let value = fetch_from(
            &[addr],
            &url(addr, "/"),
            Method::Get,
            "aura",
            &LIMITS,
            no_tls,
        )
        .await
        .unwrap();
        assert_eq!(value["status"], 302);
        assert_eq!(value["redirect"], true);
        assert_eq!(
            value["headers"]["location"],
            "http://169.254.169.254/latest"
        );
        assert_eq!(value["truncated"], false);
    }

    #[tokio::test]
    async fn a_stalled_server_times_out() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), true).await;
        let limits = FetchLimits {
            timeout: Duration::from_millis(300),
            max_bytes: 16,
        };
        let err = fetch_from(
            &[addr],
            &url(addr, "/"),
            Method::Get,
            "aura",
            &limits,
            no_tls,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn garbage_from_the_server_is_a_network_error() {
        let (addr, _server) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(), false).await;
        let err = fetch_from(
            &[addr],
            &url(addr, "/"),
            Method::Get,
            "aura",
            &LIMITS,
            no_tls,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Network, "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_network_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = fetch_from(
            &[addr],
            &url(addr, "/"),
            Method::Get,
            "aura",
            &LIMITS,
            no_tls,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Network, "{err}");
    }

    /// Serves one TLS connection with a fresh self-signed certificate for `localhost`;
    /// returns the address and the certificate, so a client can be told to trust it.
    async fn serve_tls_once() -> (SocketAddr, rustls::pki_types::CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(socket).await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
                .await;
            let _ = tls.shutdown().await;
        });
        (addr, cert)
    }

    #[tokio::test]
    async fn https_verifies_the_server_certificate() {
        let (addr, cert) = serve_tls_once().await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let trusting = move || -> Result<Arc<ClientConfig>, ToolError> {
            let mut config = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        };
        let url = Url::parse(&format!("https://localhost:{}/x", addr.port())).unwrap();
        let value = fetch_from(&[addr], &url, Method::Get, "aura", &LIMITS, trusting)
            .await
            .unwrap();
        assert_eq!(value["status"], 200);
        assert_eq!(value["body"], "secret");

        // The node's own configuration trusts only the public roots: a self-signed
        // certificate is refused during the handshake and nothing is returned.
        let (addr, _) = serve_tls_once().await;
        let url = Url::parse(&format!("https://localhost:{}/x", addr.port())).unwrap();
        let err = fetch_from(&[addr], &url, Method::Get, "aura", &LIMITS, tls_config)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Network, "{err}");
        assert!(err.message.contains("TLS handshake"), "{err}");
    }

    #[test]
    fn the_tls_configuration_builds() {
        let config = tls_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
