//! Who gets in (needs root, for the node's cell runtime): only TLS clients with a
//! certificate from the node's CA, still valid, whose identity has a role, and only for
//! what that role covers. The socket itself is not open to other users.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use aura_grpc::pki::InitOptions;
use aura_grpc::proto::aurae::cells::v0 as cells;
use aura_grpc::proto::grpc::health::v1 as health;
use aura_grpc::{ClientConfig, Pki};
use cells::cell_service_client::CellServiceClient;
use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

async fn health_check(channel: Channel) -> Result<(), tonic::Status> {
    health::health_client::HealthClient::new(channel)
        .check(health::HealthCheckRequest::default())
        .await
        .map(drop)
}

/// Connects and makes one call: a refusal may come at either step (with TLS 1.3 the
/// server rejects a client certificate after the client thinks the handshake is done).
async fn refused(what: &str, connected: Result<Channel, aura_grpc::Error>) {
    if let Ok(channel) = connected {
        let r = health_check(channel).await;
        assert!(r.is_err(), "{what}: the call went through");
        assert_ne!(
            r.unwrap_err().code(),
            Code::PermissionDenied,
            "{what}: refused too late"
        );
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test(flavor = "multi_thread")]
async fn root_only_known_clients_with_valid_certificates_get_in() {
    let node = common::node().await;
    let mode = std::fs::metadata(node.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is for root only");
    health_check(node.admin().await).await.unwrap();

    // Plaintext HTTP/2 on the socket.
    let socket = node.socket();
    let plain = Endpoint::from_static("http://aura.node")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await;
    if let Ok(channel) = plain {
        assert!(
            health_check(channel).await.is_err(),
            "plaintext went through"
        );
    }

    // TLS that trusts the node but shows no certificate.
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(node.pki.ca_crt()).unwrap();
    for c in rustls_pemfile_certs(&ca) {
        roots.add(c).unwrap();
    }
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    refused(
        "no client certificate",
        node.connect_with(Arc::new(anonymous)).await,
    )
    .await;

    // A certificate for `admin` from another CA (that trusts our server, so only the
    // client side can fail).
    let other = Pki::new(node.dir.path().join("other-pki"));
    other
        .init(&InitOptions {
            sans: Vec::new(),
            validity: common::days(30),
            socket: node.socket(),
        })
        .unwrap();
    let impostor = other
        .issue_client("admin", None, common::days(30), &node.socket())
        .unwrap();
    let tls =
        aura_grpc::tls::client_config(&node.pki.ca_crt(), &impostor.crt, &impostor.key).unwrap();
    refused(
        "a certificate from another CA",
        node.connect_with(tls).await,
    )
    .await;

    // An admin certificate that expired yesterday.
    refused("an expired certificate", node.connect("expired").await).await;

    // A server that is not the node: the client refuses it too.
    let mut config = ClientConfig::load(&node.pki.client("admin").config).unwrap();
    config.auth.ca_crt = other.ca_crt();
    assert!(
        config.connect().await.is_err(),
        "a server from another CA was trusted"
    );

    // A good certificate whose identity has no role.
    let e = health_check(node.connect("stranger").await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("stranger"), "{e:?}");

    // An observer may look, not touch.
    let observer = node.connect("observer").await.unwrap();
    health_check(observer.clone()).await.unwrap();
    let mut cells = CellServiceClient::new(observer);
    cells.list(cells::CellServiceListRequest {}).await.unwrap();
    let e = cells
        .allocate(cells::CellServiceAllocateRequest {
            cell: Some(cells::Cell {
                name: "nope".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(node.rt.list().await.is_empty());

    // Every refusal is in the runtime's own log (Aurae's daemon log stream); a refused
    // handshake is recorded by the server's task, perhaps just after the client gave up.
    let log = || -> Vec<String> {
        let (log, _) = node.rt.events().subscribe();
        log.into_iter().map(|e| e.line).collect()
    };
    common::eventually("four refused handshakes in the log", || {
        let n = log()
            .iter()
            .filter(|l| l.starts_with("grpc: refused a connection"))
            .count();
        async move { n >= 4 }
    })
    .await;
    let log = log();
    assert!(
        log.iter()
            .any(|l| l.contains("refused /grpc.health.v1.Health/Check") && l.contains("stranger")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("refused /aurae.cells.v0.CellService/Allocate")),
        "{log:#?}"
    );
    node.finish().await;
}

/// PEM certificates, without another dependency.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}
