//! What the gRPC services share, in a leaf module that uses none of them: the cell
//! runtime, the node's models and the shutdown signal ([`Shared`]), server streams fed by
//! a task that end with the client or the server, and cell errors as gRPC statuses. The
//! server builds a `Shared` and hands it to each service; the services never reach back
//! into the server.

use std::sync::Arc;

use aura_cell::Runtime;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// What the services share: the runtime and the shutdown signal that ends open streams.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) rt: Runtime,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) models: Option<Arc<aura_host::ModelHost>>,
    pub(crate) cell_access: aura_cell::CellAccess,
}

/// Resolves once the server is shutting down (or the server is gone).
pub(crate) async fn down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// An aura-cell error as a gRPC status: the kind picks the code, the message carries the
/// cause.
pub(crate) fn status(e: &aura_cell::Error) -> Status {
    use aura_cell::ErrorKind as K;
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    if let (aura_cell::ErrorKind::PermissionDenied, Some(hint)) = (e.kind(), e.hint()) {
        message.push_str(&format!(" (hint: {hint})"));
    }
    let code = match e.kind() {
        K::InvalidArgument => tonic::Code::InvalidArgument,
        K::NotFound => tonic::Code::NotFound,
        K::AlreadyExists => tonic::Code::AlreadyExists,
        K::FailedPrecondition => tonic::Code::FailedPrecondition,
        K::PermissionDenied => tonic::Code::PermissionDenied,
        K::Unavailable => tonic::Code::Unavailable,
        K::Internal => tonic::Code::Internal,
    };
    Status::new(code, message)
}

/// A server stream fed by a task.
pub(crate) type Stream<T> = ReceiverStream<Result<T, Status>>;

/// Runs `feed` as the producer of a server stream; it ends when the client goes away
/// (the send fails) or the server shuts down.
pub(crate) fn stream<T, F>(
    shutdown: &watch::Receiver<bool>,
    feed: impl FnOnce(mpsc::Sender<Result<T, Status>>) -> F,
) -> Stream<T>
where
    T: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let mut shutdown = shutdown.clone();
    let closed = tx.clone();
    let feed = feed(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = feed => {}
            () = closed.closed() => {}
            () = down(&mut shutdown) => {}
        }
    });
    ReceiverStream::new(rx)
}
