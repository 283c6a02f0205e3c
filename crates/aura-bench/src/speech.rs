//! `aura-bench speech`: `POST /v1/audio/speech` on a running node beside espeak-ng alone.
//!
//! The node runs espeak-ng as a separate process for every request and streams its WAV
//! back; the peer is that same espeak-ng command line (voice, rate and flags as the node
//! passes them for `alloy` at speed 1.0), run directly with the same text. Both are timed
//! from the request to the first audio byte (time to first byte) and to the last (the
//! real-time factor is that total over the audio's duration), alternating Aura and the peer
//! (ABAB) for several rounds. `scripts/bench-speech.sh` starts the node and runs this.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{fmt_duration, percentile};

/// The peer's command line: what `aura-node/src/speech` runs for the voice `alloy`
/// (espeak-ng's `en-us`) at speed 1.0 (175 words a minute).
const PEER_ARGS: &[&str] = &[
    "-v", "en-us", "-s", "175", "-b", "1", "--stdin", "-z", "--stdout",
];

/// espeak-ng's WAV: 16-bit mono at 22,050 Hz after a 44-byte header.
const BYTES_PER_SECOND: f64 = 22_050.0 * 2.0;
const WAV_HEADER: usize = 44;

const DEFAULT_TEXT: &str = "Every step an agent takes is recorded, signed and replayable. \
     The mission you submitted is waiting for a person to approve the deletion of two stale \
     files in the project workspace; the policy asks for level three.";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node's address (its `[http] listen`)
    #[arg(long)]
    node: SocketAddr,
    /// An API key the node accepts for `/v1/audio/speech` (operator or agent role)
    #[arg(long)]
    token: String,
    /// The espeak-ng the peer runs (the node's own is in its `[speech]` settings)
    #[arg(long, default_value = "espeak-ng")]
    espeak: String,
    /// Rounds; each round times Aura once and the peer once, alternating which goes first
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// The text spoken
    #[arg(long, default_value = DEFAULT_TEXT)]
    text: String,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

/// One timed utterance.
#[derive(Debug, Clone, Copy)]
struct Run {
    first_byte: Duration,
    total: Duration,
    audio_secs: f64,
}

impl Run {
    fn rtf(&self) -> f64 {
        self.total.as_secs_f64() / self.audio_secs
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    // One of each first, untimed: espeak-ng's voice data into the page cache, the node's
    // connection handling warmed.
    aura_once(&args).await.context("the node did not speak")?;
    peer_once(&args).await.context("espeak-ng did not speak")?;
    let (mut aura, mut peer) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        if round % 2 == 0 {
            aura.push(aura_once(&args).await?);
            peer.push(peer_once(&args).await?);
        } else {
            peer.push(peer_once(&args).await?);
            aura.push(aura_once(&args).await?);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    let summary = |runs: &[Run]| {
        let mut first: Vec<Duration> = runs.iter().map(|r| r.first_byte).collect();
        let mut total: Vec<Duration> = runs.iter().map(|r| r.total).collect();
        first.sort();
        total.sort();
        let mut rtf: Vec<f64> = runs.iter().map(Run::rtf).collect();
        rtf.sort_by(f64::total_cmp);
        (
            percentile(&first, 50.0),
            percentile(&total, 50.0),
            rtf[rtf.len() / 2],
            runs[0].audio_secs,
        )
    };
    let (a_first, a_total, a_rtf, a_audio) = summary(&aura);
    let (p_first, p_total, p_rtf, p_audio) = summary(&peer);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "rounds": args.rounds,
                "load_average": load,
                "aura": {"first_byte_ms_p50": a_first.as_secs_f64() * 1e3, "total_ms_p50": a_total.as_secs_f64() * 1e3, "rtf_p50": a_rtf, "audio_secs": a_audio},
                "espeak_ng": {"first_byte_ms_p50": p_first.as_secs_f64() * 1e3, "total_ms_p50": p_total.as_secs_f64() * 1e3, "rtf_p50": p_rtf, "audio_secs": p_audio},
            })
        );
        return Ok(());
    }
    println!(
        "speech: {} rounds (ABAB), {:.1} s of audio, load average {load}\n",
        args.rounds, a_audio
    );
    println!("| measure (p50) | Aura /v1/audio/speech | espeak-ng alone | ratio (Aura / peer) |");
    println!("|---|---|---|---|");
    println!(
        "| time to first audio byte | {} | {} | {:.2}x |",
        fmt_duration(a_first),
        fmt_duration(p_first),
        a_first.as_secs_f64() / p_first.as_secs_f64()
    );
    println!(
        "| whole utterance | {} | {} | {:.2}x |",
        fmt_duration(a_total),
        fmt_duration(p_total),
        a_total.as_secs_f64() / p_total.as_secs_f64()
    );
    println!(
        "| real-time factor (lower is faster) | {a_rtf:.4} | {p_rtf:.4} | {:.2}x |",
        a_rtf / p_rtf
    );
    if (a_audio - p_audio).abs() > 0.05 * p_audio {
        println!(
            "\nnote: the node's audio ({a_audio:.2} s) and the peer's ({p_audio:.2} s) differ by more than 5%: is the node's espeak-ng the same?"
        );
    }
    Ok(())
}

/// One streamed WAV from the node, over a fresh connection, as an OpenAI client asks.
async fn aura_once(args: &Args) -> anyhow::Result<Run> {
    let body = serde_json::json!({"model": "tts-1", "input": args.text, "voice": "alloy", "response_format": "wav"})
        .to_string();
    let request = format!(
        "POST /v1/audio/speech HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        args.node,
        args.token,
        body.len()
    );
    let start = Instant::now();
    let mut conn = TcpStream::connect(args.node).await?;
    conn.set_nodelay(true)?;
    conn.write_all(request.as_bytes()).await?;
    let mut raw = Vec::with_capacity(1 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_end = None;
    let mut first_byte = None;
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if head_end.is_none() {
            head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if first_byte.is_none()
            && let Some(end) = head_end
            && raw.len() > end
        {
            first_byte = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let end = head_end.context("the node's answer has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    anyhow::ensure!(
        head.starts_with("http/1.1 200"),
        "the node answered {}",
        head.lines().next().unwrap_or("")
    );
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&raw[end..])?
    } else {
        raw[end..].to_vec()
    };
    Ok(Run {
        first_byte: first_byte.context("the node sent no audio")?,
        total,
        audio_secs: audio_secs(body.len()),
    })
}

/// espeak-ng itself, with the node's command line and the same text on stdin.
async fn peer_once(args: &Args) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut child = tokio::process::Command::new(&args.espeak)
        .args(PEER_ARGS)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {}: scripts/setup-speech.sh installs it",
                args.espeak
            )
        })?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(args.text.as_bytes()).await?;
    drop(stdin);
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0;
    let mut first_byte = None;
    loop {
        let n = stdout.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| start.elapsed());
        bytes += n;
    }
    let status = child.wait().await?;
    let total = start.elapsed();
    anyhow::ensure!(status.success(), "espeak-ng failed: {status}");
    Ok(Run {
        first_byte: first_byte.context("espeak-ng wrote no audio")?,
        total,
        audio_secs: audio_secs(bytes),
    })
}

fn audio_secs(wav_bytes: usize) -> f64 {
    (wav_bytes.saturating_sub(WAV_HEADER) as f64 / BYTES_PER_SECOND).max(1e-3)
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size without its line end")?;
        let size_text = std::str::from_utf8(&raw[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("`{size_text}` is not a chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(raw.len() >= size + 2, "a chunk cut short");
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_reads_a_chunked_body_and_refuses_a_cut_one() {
        let body = b"4\r\nRIFF\r\n3;ext=1\r\nabc\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap_or_default(), b"RIFFabc");
        assert!(dechunk(b"4\r\nRI").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
