//! Shared helpers for the gRPC tests: a cell runtime in a throwaway directory (its own
//! cgroup instance, so tests run in parallel), a PKI with clients of each kind, the
//! server on a Unix socket and TCP, and clients that connect the way Aurae's do.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aura_cell::Runtime;
use aura_core::door::{Clock as _, SystemClock};
use aura_grpc::pki::InitOptions;
use aura_grpc::{ClientConfig, Options, Pki, Role, Server, Target, Validity};
use tonic::transport::Channel;

pub(crate) struct Node {
    pub(crate) rt: Runtime,
    pub(crate) server: Option<Server>,
    pub(crate) pki: Pki,
    /// The node's home: its PKI, cell state and workspaces (`<dir>/workspaces`).
    pub(crate) dir: tempfile::TempDir,
    /// Beside the home: `allowed` is the allowlist of host binds, `elsewhere` is not.
    pub(crate) host: tempfile::TempDir,
}

fn runtime_options(dir: &Path) -> aura_cell::Options {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut opts = aura_cell::Options::new(dir.join("cells"));
    // `test-<pid>-<n>`: if this process dies mid-test, the next runtime cleans up.
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    opts.instance = Some(format!("test-{}-{n}", std::process::id()));
    opts.stop_grace = Duration::from_millis(500);
    opts.tmp_bytes = 64 << 20;
    opts
}

pub(crate) fn days(n: u32) -> Validity {
    Validity::days(SystemClock.now(), n)
}

/// A node with a PKI (clients `admin`, `observer`, `stranger` without a role, and
/// `expired`, an admin whose certificate ran out yesterday), serving on a Unix socket
/// and on TCP at 127.0.0.1.
pub(crate) async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("aurae.sock");
    let pki = Pki::new(dir.path().join("pki"));
    pki.init(&InitOptions {
        sans: vec!["node.example".into()],
        validity: days(30),
        socket: socket.clone(),
    })
    .unwrap();
    pki.issue_client("admin", None, days(30), &socket).unwrap();
    pki.issue_client("observer", Some(Role::Observer), days(30), &socket)
        .unwrap();
    pki.issue_client("stranger", None, days(30), &socket)
        .unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_nanos(SystemClock.now().as_nanos());
    let past = Validity {
        not_before: now - Duration::from_secs(10 * 86_400),
        not_after: now - Duration::from_secs(86_400),
    };
    pki.issue_client("expired", Some(Role::Admin), past, &socket)
        .unwrap();
    let mut rt_opts = runtime_options(dir.path());
    rt_opts.protected = vec![dir.path().to_owned()];
    rt_opts.workspaces_root = Some(dir.path().join("workspaces"));
    let rt = Runtime::start(rt_opts).await.unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("allowed")).unwrap();
    std::fs::create_dir_all(host.path().join("elsewhere")).unwrap();
    let base = rt.options().id_base;
    let access = aura_cell::CellAccess {
        workspaces: Some(Arc::new(
            aura_cell::Workspaces::new(aura_cell::WorkspaceOptions {
                root: dir.path().join("workspaces"),
                owner: Some((base, base)),
                quota: None,
            })
            .unwrap(),
        )),
        host_paths: aura_cell::HostPaths::new([host.path().join("allowed")]).unwrap(),
    };
    let mut opts = Options::from_pki(&pki, socket.clone())
        .unwrap()
        .with_cell_access(access);
    opts.listen = Some("127.0.0.1:0".parse().unwrap());
    let server = aura_grpc::serve(rt.clone(), opts).await.unwrap();
    assert_eq!(server.socket(), socket);
    Node {
        rt,
        server: Some(server),
        pki,
        dir,
        host,
    }
}

impl Node {
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("aurae.sock")
    }

    /// A channel as the named client, from the Aurae client config `aura pki` wrote.
    pub(crate) async fn connect(&self, client: &str) -> Result<Channel, aura_grpc::Error> {
        ClientConfig::load(&self.pki.client(client).config)
            .unwrap()
            .connect()
            .await
    }

    pub(crate) async fn admin(&self) -> Channel {
        self.connect("admin").await.unwrap()
    }

    /// The TCP listener, as the admin.
    pub(crate) async fn admin_tcp(&self) -> Channel {
        let files = self.pki.client("admin");
        let tls =
            aura_grpc::tls::client_config(&self.pki.ca_crt(), &files.crt, &files.key).unwrap();
        let addr = self.server.as_ref().unwrap().tcp_addr().unwrap();
        aura_grpc::client::connect(Target::Tcp(addr), tls, "localhost")
            .await
            .unwrap()
    }

    /// A TLS client config of our own making, for the refusal cases.
    pub(crate) async fn connect_with(
        &self,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Channel, aura_grpc::Error> {
        aura_grpc::client::connect(
            Target::Unix(self.socket()),
            tls,
            aura_grpc::pki::AURAE_SERVER_NAME,
        )
        .await
    }

    /// Stops the server and the runtime and checks nothing is left: no cgroups (so no
    /// processes), no socket.
    pub(crate) async fn finish(mut self) {
        let socket = self.socket();
        self.server.take().unwrap().shutdown().await;
        assert!(!socket.exists(), "the socket outlived the server");
        self.rt.shutdown().await;
        assert!(
            self.rt.leftover_cgroups().is_empty(),
            "{:?}",
            self.rt.leftover_cgroups()
        );
    }
}

/// Waits until `check` holds, for up to ten seconds.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
