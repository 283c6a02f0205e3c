//! Authorisation by the client certificate's identity: the TLS handshake has already
//! proved the client holds a certificate from the node's CA; here its CN (or one of its
//! DNS SANs) is looked up in the role map, and the role must cover the method called.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// The gRPC service of model inference (`aura.inference.v1.Inference`).
const INFERENCE: &str = "aura.inference.v1.Inference";
/// The health service, open to every role.
const HEALTH: &str = "grpc.health.v1.Health";

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only: list, inspect, logs, wait, signal and daemon streams, discovery, health,
    /// and listing the models (not using them).
    Observer,
    /// Model inference (chat, completions, embeddings, listing models) and health, and
    /// nothing of the cells.
    Inference,
    /// Everything, including allocating, starting, stopping and freeing.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Inference => "inference",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may call the method at `path` (`/package.Service/Method`).
    pub fn allows(self, path: &str) -> bool {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match self {
            Role::Admin => true,
            Role::Inference => service == INFERENCE || service == HEALTH,
            Role::Observer => Role::required(path) == Role::Observer,
        }
    }

    /// Who may call the method at `path`, in words.
    fn needs(path: &str) -> &'static str {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match Role::required(path) {
            Role::Observer => "any role",
            Role::Admin if service == INFERENCE => "admin or inference",
            Role::Inference | Role::Admin => "admin",
        }
    }

    /// The least role of the cell surfaces' order (observer, then admin) a method needs
    /// (by its gRPC path, `/package.Service/Method`); inference methods other than
    /// `ListModels` need admin here, and [`Role::Inference`] is also allowed them
    /// ([`Role::allows`]).
    pub fn required(path: &str) -> Role {
        const READ: &[&str] = &[
            "/aurae.cells.v0.CellService/List",
            "/aura.cells.v1.Cells/List",
            "/aura.cells.v1.Cells/Inspect",
            "/aura.cells.v1.Cells/Logs",
            "/aura.cells.v1.Cells/Wait",
            "/aura.inference.v1.Inference/ListModels",
        ];
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let writes = matches!(
            service,
            "aurae.cells.v0.CellService" | "aura.cells.v1.Cells" | "aura.inference.v1.Inference"
        );
        if writes && !READ.contains(&path) {
            Role::Admin
        } else {
            Role::Observer
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "observer" => Ok(Role::Observer),
            "inference" => Ok(Role::Inference),
            _ => Err(format!(
                "`{s}` is not a role: use admin, observer or inference"
            )),
        }
    }
}

/// A client's names, from its certificate: the subject's CNs, then its DNS SANs.
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// The role map, applied to each request.
#[derive(Debug, Clone, Default)]
pub struct Roles(Arc<BTreeMap<String, Role>>);

impl Roles {
    pub fn new(map: BTreeMap<String, Role>) -> Self {
        Roles(Arc::new(map))
    }

    /// The role of a client certificate: its first name that the map knows.
    pub fn role_of(&self, der: &[u8]) -> Result<(String, Role), Status> {
        let names = identities(der);
        names
            .iter()
            .find_map(|n| self.0.get(n).map(|r| (n.clone(), *r)))
            .ok_or_else(|| {
                let who = names.first().map_or("(unnamed)", String::as_str);
                Status::permission_denied(format!(
                    "client `{who}` has no role on this node; add it to [roles] in the node's grpc.toml"
                ))
            })
    }

    /// Allows or refuses a request, from the TLS peer certificate the transport put in
    /// its extensions.
    pub fn check<B>(&self, req: &http::Request<B>) -> Result<(), Status> {
        let ext = req.extensions();
        let certs = ext
            .get::<TlsConnectInfo<UdsConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(TlsConnectInfo::peer_certs)
            });
        // The handshake requires a certificate, so this is only reached if a listener
        // without mTLS were ever wired in: refuse rather than trust it.
        let leaf = certs
            .as_ref()
            .and_then(|c| c.first())
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let (who, role) = self.role_of(leaf)?;
        let path = req.uri().path();
        if role.allows(path) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "client `{who}` is {} and {path} needs {}",
                role.as_str(),
                Role::needs(path)
            )))
        }
    }
}

/// The tower layer that runs [`Roles::check`] before any service sees a request.
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    pub roles: Roles,
    /// Where refusals are recorded (the runtime's own log), if anywhere.
    pub events: Option<aura_cell::Runtime>,
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Authorize<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self.layer.roles.check(&req) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                if let Some(rt) = &self.layer.events {
                    rt.event(format!(
                        "grpc: refused {}: {}",
                        req.uri().path(),
                        status.message()
                    ));
                }
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_needed_by_method() {
        for (path, role) in [
            ("/aurae.cells.v0.CellService/Allocate", Role::Admin),
            ("/aurae.cells.v0.CellService/Start", Role::Admin),
            ("/aurae.cells.v0.CellService/Free", Role::Admin),
            ("/aurae.cells.v0.CellService/List", Role::Observer),
            ("/aura.cells.v1.Cells/Stop", Role::Admin),
            ("/aura.cells.v1.Cells/Logs", Role::Observer),
            (
                "/aurae.observe.v0.ObserveService/GetSubProcessStream",
                Role::Observer,
            ),
            (
                "/aurae.discovery.v0.DiscoveryService/Discover",
                Role::Observer,
            ),
            ("/grpc.health.v1.Health/Check", Role::Observer),
            // Unknown methods are answered UNIMPLEMENTED by the router, past this check.
            ("/aurae.cells.v0.CellService/Unknown", Role::Admin),
        ] {
            assert_eq!(Role::required(path), role, "{path}");
        }
        assert!(Role::Admin > Role::Observer);
    }

    #[test]
    fn inference_is_for_admin_and_inference_and_listing_for_everyone() {
        let chat = "/aura.inference.v1.Inference/Chat";
        let list = "/aura.inference.v1.Inference/ListModels";
        let health = "/grpc.health.v1.Health/Check";
        let cells = "/aura.cells.v1.Cells/List";
        for (role, path, allowed) in [
            (Role::Admin, chat, true),
            (Role::Inference, chat, true),
            (Role::Observer, chat, false),
            (Role::Observer, list, true),
            (Role::Inference, list, true),
            (Role::Inference, health, true),
            (Role::Inference, cells, false),
            (Role::Inference, "/aura.cells.v1.Cells/Stop", false),
            (Role::Observer, cells, true),
            (Role::Observer, "/aura.inference.v1.Inference/Embed", false),
        ] {
            assert_eq!(role.allows(path), allowed, "{role:?} {path}");
        }
        assert_eq!(Role::needs(chat), "admin or inference");
        assert_eq!("inference".parse::<Role>(), Ok(Role::Inference));
    }
}
