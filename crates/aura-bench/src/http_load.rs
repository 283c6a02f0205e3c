//! `aura-bench http-load`: an open-loop HTTP/1.1 load generator for
//! `scripts/bench-http.sh`. Requests are sent on a fixed schedule (the rate is kept
//! whatever the server does), spread over keep-alive connections. A request that could
//! not be sent on time because its connection was still waiting for the previous answer
//! is timed from when it was *due*, so a server that falls behind is charged the queueing
//! it causes (no coordinated omission), as with wrk2 or oha's latency correction; one sent
//! on time is timed from when it was sent. The same generator drives both sides of the
//! comparison.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server's address
    #[arg(long)]
    addr: SocketAddr,
    /// The path to GET
    #[arg(long)]
    path: String,
    /// Sent as `Authorization: Bearer TOKEN`
    #[arg(long)]
    token: String,
    /// Requests per second, kept fixed
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// How long to send, in seconds (after a 1 s warm-up at the same rate)
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Keep-alive connections the schedule is spread over
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    errors: u64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.connections > 0,
        "rate and connections must be > 0"
    );
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        args.path, args.addr, args.token
    );
    let interval = Duration::from_secs_f64(f64::from(args.connections) / f64::from(args.rate));
    let warmup = Duration::from_secs(1);
    let total = warmup + Duration::from_secs(args.seconds);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let request = request.clone().into_bytes();
        let addr = args.addr;
        // Connections are offset so the requests are spread evenly over time.
        let offset = interval.mul_f64(f64::from(c) / f64::from(args.connections));
        tasks.push(tokio::spawn(async move {
            connection(
                addr,
                &request,
                start + offset,
                interval,
                start + total,
                start + warmup,
            )
            .await
        }));
    }
    let mut all = Seen::default();
    for t in tasks {
        let seen = t.await??;
        all.latencies.extend(seen.latencies);
        all.errors += seen.errors;
    }
    all.latencies.sort_unstable();
    let achieved = all.latencies.len() as f64 / args.seconds as f64;
    let (p50, p99, p999, max) = (
        percentile(&all.latencies, 50.0),
        percentile(&all.latencies, 99.0),
        percentile(&all.latencies, 99.9),
        all.latencies.last().copied().unwrap_or_default(),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "rate": args.rate,
                "achieved_per_second": achieved,
                "requests": all.latencies.len(),
                "errors": all.errors,
                "p50_us": p50.as_micros() as u64,
                "p99_us": p99.as_micros() as u64,
                "p999_us": p999.as_micros() as u64,
                "max_us": max.as_micros() as u64,
            })
        );
    } else {
        println!(
            "{} req/s asked, {achieved:.0} answered/s, {} errors; latency p50 {} p99 {} p99.9 {} max {}",
            args.rate,
            all.errors,
            fmt_duration(p50),
            fmt_duration(p99),
            fmt_duration(p999),
            fmt_duration(max)
        );
    }
    Ok(())
}

/// Sends `request` at `first`, `first + interval`, ... until `end` on one keep-alive
/// connection, recording latencies (from each request's due time) after `measure_from`.
async fn connection(
    addr: SocketAddr,
    request: &[u8],
    first: Instant,
    interval: Duration,
    end: Instant,
    measure_from: Instant,
) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut due = first;
    while due < end {
        // Latency counts from the due time when the connection was still busy with the
        // previous answer (the server's queueing), else from the actual send: the timer
        // wakes up to a millisecond late, and that slack is the generator's, not the
        // server's.
        let start = if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        let ok = match exchange(&mut stream, request, &mut buf).await {
            Ok(status) => status == 200,
            Err(_) => {
                // A broken connection: count it and open another.
                stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                false
            }
        };
        if due >= measure_from {
            if ok {
                seen.latencies.push(start.elapsed());
            } else {
                seen.errors += 1;
            }
        }
        due += interval;
    }
    Ok(seen)
}

/// Writes one request and reads one whole response; returns its status code.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..head_end])?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow::anyhow!("no content-length"))?;
        let want = head_end + 4 + length;
        while buf.len() < want {
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(status);
    }
}
