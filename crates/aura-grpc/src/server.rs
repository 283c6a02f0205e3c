//! Serving the gRPC surfaces: a Unix socket (mode 0600) and optionally TCP, both TLS with
//! a required client certificate, each request authorised by the certificate's identity.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aura_cell::Runtime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::aurae::{CellService, DiscoveryService, HealthService, ObserveService};
use crate::auth::{AuthorizeLayer, Roles};
use crate::cells::Cells;
use crate::error::{Error, Result};
use crate::inference::Inference;
use crate::pki::Pki;
use crate::proto;
use crate::shared::{Shared, down};

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes at once; past it, accepting waits (a flood of silent
/// connections on the TCP listener cannot pile up without bound).
const MAX_HANDSHAKES: usize = 128;
/// At shutdown, connections get this long to finish what they are doing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Unix socket (created mode 0600; a stale one is replaced).
    pub socket: PathBuf,
    /// Also serve on TCP here.
    pub listen: Option<SocketAddr>,
    pub tls: Arc<rustls::ServerConfig>,
    pub roles: Roles,
    /// The node's models: with them, `aura.inference.v1.Inference` is served too.
    pub models: Option<Arc<aura_host::ModelHost>>,
    /// The workspaces and host paths cells may be given (the same as over HTTP): an
    /// `admin` certificate is the local operator's power, but still binds only from the
    /// allowlist, and the runtime keeps the node's home out of every cell.
    pub cell_access: aura_cell::CellAccess,
}

impl Options {
    /// From a PKI directory and its `grpc.toml`; `default_socket` where the file names
    /// none (the node passes `<home>/aurae.sock`).
    pub fn from_pki(pki: &Pki, default_socket: PathBuf) -> Result<Self> {
        let config = pki.config()?;
        Ok(Options {
            socket: config.socket.unwrap_or(default_socket),
            listen: config.listen,
            tls: pki.server_tls()?,
            roles: Roles::new(config.roles),
            models: None,
            cell_access: aura_cell::CellAccess::default(),
        })
    }

    /// Gives cells these workspaces and host paths.
    #[must_use]
    pub fn with_cell_access(mut self, access: aura_cell::CellAccess) -> Self {
        self.cell_access = access;
        self
    }

    /// Also serves inference on these models.
    #[must_use]
    pub fn with_models(mut self, models: Arc<aura_host::ModelHost>) -> Self {
        self.models = Some(models);
        self
    }
}

/// The running server.
#[derive(Debug)]
pub struct Server {
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The TCP address actually bound (port 0 resolved), when serving TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Ends every stream, lets requests in flight finish (for a few seconds at most),
    /// and removes the socket.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts serving the runtime's cells. Returns once the listeners are bound.
pub async fn serve(rt: Runtime, opts: Options) -> Result<Server> {
    let (shutdown, receiver) = watch::channel(false);
    let shared = Shared {
        rt,
        shutdown: receiver,
        models: opts.models.clone(),
        cell_access: opts.cell_access.clone(),
    };
    let acceptor = TlsAcceptor::from(opts.tls.clone());
    let unix = bind_unix(&opts.socket)?;
    let mut tasks = Vec::new();
    let (tx, rx) = mpsc::channel(16);
    let events = shared.rt.clone();
    tasks.push(tokio::spawn(accept(
        unix,
        acceptor.clone(),
        tx,
        shared.shutdown.clone(),
        events.clone(),
    )));
    tasks.push(tokio::spawn(run(shared.clone(), opts.roles.clone(), rx)));
    let mut tcp = None;
    if let Some(addr) = opts.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listen on {addr}"), e))?;
        tcp = listener.local_addr().ok();
        let (tx, rx) = mpsc::channel(16);
        tasks.push(tokio::spawn(accept(
            listener,
            acceptor,
            tx,
            shared.shutdown.clone(),
            events,
        )));
        tasks.push(tokio::spawn(run(shared.clone(), opts.roles, rx)));
    }
    Ok(Server {
        socket: opts.socket,
        tcp,
        shutdown,
        tasks,
    })
}

/// Binds the socket, replacing a stale one, and makes it 0600.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::Invalid(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Invalid(format!(
                "another server is listening on {}",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    // Between bind and chmod the socket has the umask's mode; a client that connects in
    // that moment still needs a certificate from the node's CA to get anywhere.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("restrict {}", path.display()), e))?;
    Ok(listener)
}

type Tls<S> = tokio_rustls::server::TlsStream<S>;

/// A listener of either kind.
trait Listen: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn next(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listen for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn next(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listen for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn next(&self) -> std::io::Result<Self::Io> {
        let (s, _) = self.accept().await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// Accepts connections and does their TLS handshakes, each in its own task so that a
/// slow or silent client delays no one; only completed handshakes reach the server.
async fn accept<L: Listen>(
    listener: L,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<std::io::Result<Tls<L::Io>>>,
    mut shutdown: watch::Receiver<bool>,
    events: Runtime,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            () = down(&mut shutdown) => return,
        };
        let Ok(slot) = slot else { return };
        let conn = tokio::select! {
            c = listener.next() => c,
            () = down(&mut shutdown) => return,
        };
        let Ok(conn) = conn else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, tx, events) = (acceptor.clone(), tx.clone(), events.clone());
        tokio::spawn(async move {
            // A plaintext client, one without a certificate, with one from another CA or
            // an expired one, all end here: the handshake fails and the connection drops.
            let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await;
            drop(slot);
            match shaken {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                // Recorded in the runtime's own log (Aurae's daemon log stream), so an
                // operator can see who was turned away and why.
                Ok(Err(e)) => events.event(format!("grpc: refused a connection: {e}")),
                Err(_) => {
                    events.event("grpc: refused a connection: no TLS handshake in time".into());
                }
            }
        });
    }
}

/// Serves every service on the connections that `rx` yields until shutdown.
async fn run<S>(shared: Shared, roles: Roles, rx: mpsc::Receiver<std::io::Result<Tls<S>>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Connected + 'static,
    Tls<S>: Connected,
{
    let mut down = shared.shutdown.clone();
    let router = tonic::transport::Server::builder()
        .layer(AuthorizeLayer {
            roles,
            events: Some(shared.rt.clone()),
        })
        .add_service(
            proto::aurae::cells::v0::cell_service_server::CellServiceServer::new(CellService(
                shared.clone(),
            )),
        )
        .add_service(
            proto::aurae::observe::v0::observe_service_server::ObserveServiceServer::new(
                ObserveService(shared.clone()),
            ),
        )
        .add_service(
            proto::aurae::discovery::v0::discovery_service_server::DiscoveryServiceServer::new(
                DiscoveryService,
            ),
        )
        .add_service(proto::aura::cells::v1::cells_server::CellsServer::new(
            Cells(shared.clone()),
        ))
        .add_optional_service(shared.models.clone().map(|host| {
            proto::aura::inference::v1::inference_server::InferenceServer::new(Inference::new(host))
        }))
        .add_service(proto::grpc::health::v1::health_server::HealthServer::new(
            HealthService(shared),
        ));
    let _ = router
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), async move {
            self::down(&mut down).await;
        })
        .await;
}
