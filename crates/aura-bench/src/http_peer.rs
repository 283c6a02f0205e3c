//! `aura-bench http-peer`: the peer of the HTTP benchmark (`scripts/bench-http.sh`). A
//! minimal axum server on the same runtime settings as the node, answering one route with
//! fixed bytes after checking a bearer token by equality: the floor any authenticated
//! JSON GET over HTTP/1.1 pays, against which the node's full path (API key lookup, rate
//! limit, engine read, serialisation) is compared.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:18181")]
    listen: SocketAddr,
    /// The response body to serve (a file holding what the node answered)
    #[arg(long)]
    body: std::path::PathBuf,
    /// The bearer token to require
    #[arg(long)]
    token: String,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    // Shared: the peer answers with the least work it can, not copying the body.
    let body = axum::body::Bytes::from(std::fs::read(&args.body)?);
    let expected: Arc<str> = format!("Bearer {}", args.token).into();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let body = body.clone();
        let expected = expected.clone();
        async move {
            let authorized = headers
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes() == expected.as_bytes());
            if !authorized {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
