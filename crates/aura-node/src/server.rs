//! The node's HTTP connections: hyper's HTTP/1.1 (with upgrades, for WebSockets) on each
//! accepted socket, a time limit on reading a request's head, and a shutdown that lets
//! requests in flight finish for a bounded time and then closes what is left.
//!
//! The head limit also bounds an idle keep-alive connection (hyper starts it when it waits
//! for the next head), so a client that opens connections and sends nothing, or a byte at
//! a time, holds each for at most that long. Bodies have their own deadline
//! ([`crate::routes`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// How long a stopping server waits for requests in flight before it closes them.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections on `listener` and serves `app` on each until `stop` turns true;
/// then stops accepting, asks every connection to finish its request in flight, and
/// closes those still open after [`SHUTDOWN_GRACE`].
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
        };
        // Forget the connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let (socket, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // keep serving the others, after a pause that lets descriptors free up.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        connections.spawn(connection(
            socket,
            remote,
            app.clone(),
            header_timeout,
            stop.clone(),
        ));
    }
    drop(listener);
    let finished = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, finished).await;
    connections.shutdown().await;
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(
    socket: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stopped(&mut stop) => {}
    }
    // Finish the request in flight, if any, then close.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
