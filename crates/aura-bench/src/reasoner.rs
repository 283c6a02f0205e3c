//! Reasoner: decoding a provider's response stream.
//!
//! A streamed chat completion is tens of thousands of small server-sent events; each one
//! is framed, parsed as JSON and folded into the turn while text goes out to watchers.
//! This measures that work on a synthetic OpenAI stream shaped like a real one (every
//! chunk carries the id, model, fingerprint and choice fields servers send), cut into
//! 1,400-byte pieces as TCP would deliver them.
//!
//! The peer is `eventsource-stream` (the framing under the common Rust OpenAI clients):
//! once for framing alone, against Aura's `sse::Parser`; once with each event's JSON
//! parsed into a `serde_json::Value` and the text concatenated (what a minimal client
//! does), against Aura's full path to a finished `Turn` (framing, typed chunks, tool-call
//! assembly, deltas).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aura_reasoner::Delta;
use aura_reasoner::sse::Parser;
use aura_reasoner::wire::Decoder as _;
use aura_reasoner::wire::openai::StreamDecoder;
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Text chunks in the stream
    #[arg(long, default_value_t = 20_000)]
    chunks: usize,
    /// Times each side decodes the stream (the best run is reported)
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

/// A stream of `chunks` text deltas, then a tool call in 200 fragments, the finish and
/// the usage, as 1,400-byte pieces.
fn stream(chunks: usize) -> Vec<Vec<u8>> {
    let mut s = String::new();
    let words = [
        "The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog. ",
    ];
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        json!({"id": "chatcmpl-9f2c4e1a7b", "object": "chat.completion.chunk", "created": 1_763_000_000,
               "model": "qwen2.5-7b-instruct", "system_fingerprint": "fp_5b2c0e",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    for i in 0..chunks {
        let c = chunk(json!({"content": words[i % words.len()]}), json!(null));
        s.push_str(&format!("data: {c}\n\n"));
    }
    let c = chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                              "function": {"name": "fs_write", "arguments": ""}}]}),
        json!(null),
    );
    s.push_str(&format!("data: {c}\n\n"));
    for i in 0..200 {
        let piece = if i == 0 {
            "{\"text\": \"".to_owned()
        } else if i == 199 {
            "end\"}".to_owned()
        } else {
            format!("line {i} ")
        };
        let c = chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            json!(null),
        );
        s.push_str(&format!("data: {c}\n\n"));
    }
    s.push_str(&format!(
        "data: {}\n\n",
        chunk(json!({}), json!("tool_calls"))
    ));
    s.push_str(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":20201}}\n\n",
    );
    s.push_str("data: [DONE]\n\n");
    s.into_bytes().chunks(1400).map(<[u8]>::to_vec).collect()
}

fn aura_framing(pieces: &[Vec<u8>]) -> usize {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut n = 0;
    for p in pieces {
        parser.feed(p, &mut events).expect("valid stream");
        n += events.len();
        events.clear();
    }
    n
}

fn aura_turn(pieces: &[Vec<u8>]) -> usize {
    let mut parser = Parser::new();
    let mut decoder = StreamDecoder::new("m");
    let mut events = Vec::new();
    let mut deltas = 0usize;
    for p in pieces {
        parser.feed(p, &mut events).expect("valid stream");
        for e in events.drain(..) {
            decoder
                .on_event(&e, &mut |d| {
                    if matches!(black_box(d), Delta::Text(_)) {
                        deltas += 1;
                    }
                })
                .expect("valid chunk");
        }
    }
    let turn = decoder.finish().expect("complete stream");
    assert_eq!(turn.tool_calls.len(), 1);
    turn.content.len() + deltas
}

async fn peer_framing(pieces: &[Vec<u8>]) -> usize {
    let mut events =
        futures_util::stream::iter(pieces.iter().map(Ok::<_, Infallible>)).eventsource();
    let mut n = 0;
    while let Some(e) = events.next().await {
        black_box(e.expect("valid stream"));
        n += 1;
    }
    n
}

async fn peer_values(pieces: &[Vec<u8>]) -> usize {
    let mut events =
        futures_util::stream::iter(pieces.iter().map(Ok::<_, Infallible>)).eventsource();
    let mut text = String::new();
    while let Some(e) = events.next().await {
        let e = e.expect("valid stream");
        if e.data == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&e.data).expect("valid chunk");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    text.len()
}

/// The best of `runs` timings of each of `a` and `b`, run in turn so that both see the
/// same moments of a noisy machine.
fn best_of_both(
    runs: usize,
    mut a: impl FnMut() -> usize,
    mut b: impl FnMut() -> usize,
) -> (Duration, Duration) {
    let mut best = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let t = Instant::now();
        black_box(a());
        best.0 = best.0.min(t.elapsed());
        let t = Instant::now();
        black_box(b());
        best.1 = best.1.min(t.elapsed());
    }
    best
}

pub(crate) fn run(args: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let pieces = stream(args.chunks);
    let bytes: usize = pieces.iter().map(Vec::len).sum();
    let events = aura_framing(&pieces);
    anyhow::ensure!(
        rt.block_on(peer_framing(&pieces)) == events,
        "the two parsers disagree"
    );

    let (aura_f, peer_f) = best_of_both(
        args.runs,
        || aura_framing(&pieces),
        || rt.block_on(peer_framing(&pieces)),
    );
    let (aura_t, peer_t) = best_of_both(
        args.runs,
        || aura_turn(&pieces),
        || rt.block_on(peer_values(&pieces)),
    );

    let mb = bytes as f64 / 1e6;
    let row = |what: &str, aura: Duration, peer: Duration| {
        println!(
            "| {what} | {:.0} MB/s | {:.0} MB/s | {:.2} |",
            mb / aura.as_secs_f64(),
            mb / peer.as_secs_f64(),
            peer.as_secs_f64() / aura.as_secs_f64(),
        );
    };
    println!(
        "## Reasoner stream decoding ({events} events, {mb:.1} MB, 1,400-byte pieces, best of {})\n",
        args.runs
    );
    println!("| work | Aura | eventsource-stream | Aura / peer speed |");
    println!("|---|---:|---:|---:|");
    row("framing only (events out)", aura_f, peer_f);
    row(
        "Aura: finished turn with deltas; peer: JSON values, text joined",
        aura_t,
        peer_t,
    );
    println!();
    Ok(())
}
