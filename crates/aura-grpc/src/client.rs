//! Connecting to a node's gRPC surfaces as a client: Aurae's client config format, and a
//! tonic channel over the Unix socket (or TCP) with mTLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::quote;
use crate::error::{Error, Result};

/// The server name Aurae's own clients verify; every server certificate carries it.
pub const AURAE_SERVER_NAME: &str = "server.unsafe.aurae.io";

/// Aurae's client config: `[auth] ca_crt, client_crt, client_key` and `[system] socket`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClientConfig {
    pub auth: AuthConfig,
    pub system: SystemConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthConfig {
    pub ca_crt: PathBuf,
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
    /// The name the server certificate is verified for. Not in Aurae's format (its
    /// clients always use `server.unsafe.aurae.io`, which is also the default here).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SystemConfig {
    /// A Unix socket path, or `host:port` for TCP.
    pub socket: String,
}

impl ClientConfig {
    pub fn new(ca_crt: PathBuf, client_crt: PathBuf, client_key: PathBuf, socket: &Path) -> Self {
        ClientConfig {
            auth: AuthConfig {
                ca_crt,
                client_crt,
                client_key,
                server_name: None,
            },
            system: SystemConfig {
                socket: socket.to_string_lossy().into_owned(),
            },
        }
    }

    /// Reads a config file; `~/` in paths is the home directory, as in Aurae.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let mut c: ClientConfig = toml::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{} is not a client config: {}",
                path.display(),
                e.message()
            ))
        })?;
        for p in [
            &mut c.auth.ca_crt,
            &mut c.auth.client_crt,
            &mut c.auth.client_key,
        ] {
            *p = expand_home(p);
        }
        c.system.socket = expand_home(Path::new(&c.system.socket))
            .to_string_lossy()
            .into_owned();
        Ok(c)
    }

    /// The file, in Aurae's format.
    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "# A client of an Aura node's gRPC surfaces, in Aurae's client config format.\n\
             [auth]\n\
             ca_crt = {}\n\
             client_crt = {}\n\
             client_key = {}\n",
            quote(&self.auth.ca_crt.to_string_lossy()),
            quote(&self.auth.client_crt.to_string_lossy()),
            quote(&self.auth.client_key.to_string_lossy()),
        );
        if let Some(name) = &self.auth.server_name {
            s.push_str(&format!("server_name = {}\n", quote(name)));
        }
        s.push_str(&format!(
            "\n[system]\nsocket = {}\n",
            quote(&self.system.socket)
        ));
        s
    }

    /// A channel to the node: TLS with this client's certificate, the server verified
    /// against the CA for `server_name`.
    pub async fn connect(&self) -> Result<Channel> {
        let tls = crate::tls::client_config(
            &self.auth.ca_crt,
            &self.auth.client_crt,
            &self.auth.client_key,
        )?;
        let name = self
            .auth
            .server_name
            .as_deref()
            .unwrap_or(AURAE_SERVER_NAME);
        let target = match self.system.socket.parse::<SocketAddr>() {
            Ok(addr) => Target::Tcp(addr),
            Err(_) => Target::Unix(PathBuf::from(&self.system.socket)),
        };
        connect(target, tls, name).await
    }
}

fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_owned(),
    }
}

/// Where a node listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// A channel over mTLS to `target`; the connection is made (and the handshake done)
/// before this returns.
pub async fn connect(
    target: Target,
    tls: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<Channel> {
    let server_name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| Error::Invalid(format!("`{server_name}` is not a server name: {e}")))?;
    let connector = TlsConnector::from(tls);
    // The URI only fills in HTTP/2's :authority; the connector decides where to go.
    let endpoint = Endpoint::from_static("http://aura.node");
    let described = match &target {
        Target::Unix(p) => p.display().to_string(),
        Target::Tcp(a) => a.to_string(),
    };
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (target, connector, server_name) =
                (target.clone(), connector.clone(), server_name.clone());
            async move {
                let tls = match target {
                    Target::Unix(p) => {
                        let s = tokio::net::UnixStream::connect(p).await?;
                        connector.connect(server_name, Io::Unix(s)).await?
                    }
                    Target::Tcp(a) => {
                        let s = tokio::net::TcpStream::connect(a).await?;
                        s.set_nodelay(true)?;
                        connector.connect(server_name, Io::Tcp(s)).await?
                    }
                };
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| {
            let mut message = format!("cannot connect to the node at {described}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            Error::io(message, std::io::Error::other(e))
        })
}

/// A Unix or TCP stream, so that one TLS connector type serves both.
#[derive(Debug)]
enum Io {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}
