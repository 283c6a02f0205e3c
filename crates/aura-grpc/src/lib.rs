//! The node's gRPC cell surfaces: Aurae v0's services (`aurae.cells.v0.CellService`,
//! `aurae.observe.v0.ObserveService`, `aurae.discovery.v0.DiscoveryService`), Aura's own
//! richer `aura.cells.v1.Cells`, `grpc.health.v1.Health`, and (given the node's
//! `ModelHost`) the model inference service `aura.inference.v1.Inference`, over a Unix
//! socket (and optionally TCP) with mTLS and authorisation by the client certificate's
//! identity; and the small PKI (`aura pki`) that issues the certificates.
//!
//! ```no_run
//! # async fn example(
//! #     cells: aura_cell::Runtime,
//! #     models: std::sync::Arc<aura_host::ModelHost>,
//! # ) -> Result<(), aura_grpc::Error> {
//! use aura_grpc::{Options, Pki, serve};
//!
//! let pki = Pki::new("/var/lib/aura/pki"); // made by `aura pki init`
//! let options = Options::from_pki(&pki, "/var/lib/aura/aurae.sock".into())?.with_models(models);
//! let server = serve(cells, options).await?;
//! // ... later
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Every connection is TLS with a client certificate that chains to the node's CA (no
//! plaintext, no anonymous clients); every request is then checked against the role map
//! (`admin`, `observer` or `inference`) by the certificate's CN or DNS SANs, and unknown identities
//! are refused with PERMISSION_DENIED.

#![forbid(unsafe_code)]

mod aurae;
pub mod auth;
mod cells;
pub mod client;
pub mod config;
mod error;
mod files;
mod inference;
pub mod pki;
mod server;
mod shared;
pub mod tls;

pub use aurae::{CellService, DiscoveryService, HealthService, ObserveService};
pub use auth::{Role, Roles};
pub use cells::Cells;
pub use client::{ClientConfig, Target};
pub use config::GrpcConfig;
pub use error::{Error, Result};
pub use inference::{Inference, RECEIPT_HEADER};
pub use pki::{Pki, Validity};
pub use server::{Options, Server, serve};

/// The generated messages, servers and clients.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
pub mod proto {
    pub mod aurae {
        pub mod cells {
            pub mod v0 {
                tonic::include_proto!("aurae.cells.v0");
            }
        }
        pub mod discovery {
            pub mod v0 {
                tonic::include_proto!("aurae.discovery.v0");
            }
        }
        pub mod observe {
            pub mod v0 {
                tonic::include_proto!("aurae.observe.v0");
            }
        }
    }
    pub mod aura {
        pub mod cells {
            pub mod v1 {
                tonic::include_proto!("aura.cells.v1");
            }
        }
        pub mod inference {
            pub mod v1 {
                tonic::include_proto!("aura.inference.v1");
            }
        }
    }
    pub mod grpc {
        pub mod health {
            pub mod v1 {
                tonic::include_proto!("grpc.health.v1");
            }
        }
    }
}
