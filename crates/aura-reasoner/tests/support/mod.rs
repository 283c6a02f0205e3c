//! A test double for provider servers: a real HTTP/1.1 server on a loopback socket that
//! answers each request with the next scripted reply, byte for byte and at the pace
//! the test asks for (pauses, stalls, cut connections), and records what it was sent.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support code"
)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aura_core::door::SeededEntropy;
use aura_reasoner::{Context, Delta, RetryPolicy, SecretMap, Sleep, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The key tests configure, under the variable `TEST_KEY`.
pub(crate) const KEY: &str = "sk-test-0123456789abcdef";

/// A piece of a response body.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// Bytes, sent as one HTTP chunk.
    Bytes(Vec<u8>),
    /// A pause before the next part.
    Pause(Duration),
    /// Silence until the client gives up.
    Stall,
    /// Close the connection without ending the body.
    Cut,
}

/// One scripted response.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) parts: Vec<Part>,
    /// Read the request, then never answer.
    pub(crate) hang: bool,
}

impl Reply {
    pub(crate) fn new(status: u16, content_type: &str, parts: Vec<Part>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            parts,
            hang: false,
        }
    }

    /// An event stream, each string one chunk.
    pub(crate) fn sse<S: AsRef<str>>(chunks: &[S]) -> Reply {
        Reply::new(
            200,
            "text/event-stream",
            chunks
                .iter()
                .map(|c| Part::Bytes(c.as_ref().as_bytes().to_vec()))
                .collect(),
        )
    }

    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::new(
            status,
            "application/json",
            vec![Part::Bytes(body.to_string().into_bytes())],
        )
    }

    pub(crate) fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::new(200, "text/event-stream", vec![])
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// `data: <json>\n\n` for each value.
pub(crate) fn events(values: &[serde_json::Value]) -> Vec<String> {
    values.iter().map(|v| format!("data: {v}\n\n")).collect()
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names in lower case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub(crate) async fn start(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (r, rx) = (replies.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, rx) = (r.clone(), rx.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, r, rx).await;
                });
            }
        });
        Server {
            addr,
            replies,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:<port>` followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub(crate) fn replies_left(&self) -> usize {
        self.replies.lock().unwrap().len()
    }
}

async fn serve(
    mut stream: TcpStream,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    received.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body,
    });
    let reply = replies.lock().unwrap().pop_front();
    let Some(reply) = reply else {
        let msg = b"no reply scripted";
        let head = format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            msg.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(msg).await?;
        return Ok(());
    };
    if reply.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(());
    }
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    for part in reply.parts {
        match part {
            Part::Bytes(b) => {
                if b.is_empty() {
                    continue;
                }
                stream
                    .write_all(format!("{:x}\r\n", b.len()).as_bytes())
                    .await?;
                stream.write_all(&b).await?;
                stream.write_all(b"\r\n").await?;
                stream.flush().await?;
            }
            Part::Pause(d) => tokio::time::sleep(d).await,
            Part::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Part::Cut => {
                stream.shutdown().await?;
                return Ok(());
            }
        }
    }
    stream.write_all(b"0\r\n\r\n").await?;
    stream.flush().await?;
    Ok(())
}

/// A sleep that records each wait and returns at once, so retry tests check the exact
/// waits without spending them.
#[derive(Debug, Default)]
pub(crate) struct RecordingSleep(Mutex<Vec<Duration>>);

impl RecordingSleep {
    pub(crate) fn waits(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl Sleep for RecordingSleep {
    async fn sleep(&self, duration: Duration) {
        self.0.lock().unwrap().push(duration);
    }
}

/// A context with pinned entropy, recorded sleeps and the test key.
pub(crate) fn context() -> (Context, Arc<RecordingSleep>) {
    let sleep = Arc::new(RecordingSleep::default());
    let context = Context::system()
        .with_entropy(Arc::new(SeededEntropy::new(1)))
        .with_sleep(sleep.clone())
        .with_secrets(Arc::new(SecretMap::new().with("TEST_KEY", KEY)));
    (context, sleep)
}

/// A retry policy without jitter, so waits are exact.
pub(crate) fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_interval: Duration::from_millis(100),
        multiplier: 2.0,
        max_interval: Duration::from_secs(10),
        jitter: 0.0,
        max_retry_after: Duration::from_secs(30),
    }
}

/// Short limits, so timeout tests finish in well under a second.
pub(crate) fn quick_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_millis(300),
        idle: Duration::from_millis(300),
        total: Duration::from_secs(10),
    }
}

/// Collects deltas.
#[derive(Debug, Default)]
pub(crate) struct Deltas(Mutex<Vec<Delta>>);

impl Deltas {
    pub(crate) fn sink(&self) -> impl Fn(Delta) + Send + Sync + '_ {
        move |d| self.0.lock().unwrap().push(d)
    }

    pub(crate) fn all(&self) -> Vec<Delta> {
        self.0.lock().unwrap().clone()
    }

    /// The text a watcher would show: everything since the last reset.
    pub(crate) fn shown_text(&self) -> String {
        let mut text = String::new();
        for d in self.all() {
            match d {
                Delta::Text(t) => text.push_str(&t),
                Delta::Reset { .. } => text.clear(),
                _ => {}
            }
        }
        text
    }
}
