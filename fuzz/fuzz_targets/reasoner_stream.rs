//! Fuzzes what a hostile or broken provider can send: the bytes go, split where the first
//! byte says, through the SSE parser into both stream decoders, and whole into both
//! body decoders. Nothing may panic, and a decoded turn's tool calls must be named.
#![no_main]

use aura_reasoner::sse::Parser;
use aura_reasoner::wire::{Decoder, anthropic, openai};
use libfuzzer_sys::fuzz_target;

fn stream<D: Decoder>(mut decoder: D, data: &[u8], cut: usize) {
    let mut parser = Parser::with_limit(4096);
    let mut events = Vec::new();
    for piece in [&data[..cut], &data[cut..]] {
        if parser.feed(piece, &mut events).is_err() {
            return;
        }
        for e in events.drain(..) {
            match decoder.on_event(&e, &mut |_| {}) {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) => return,
            }
        }
    }
    if let Ok(turn) = decoder.finish() {
        assert!(turn.tool_calls.iter().all(|c| !c.name.is_empty()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let cut = usize::from(first) % (rest.len() + 1);
    stream(openai::StreamDecoder::new("m"), rest, cut);
    stream(anthropic::StreamDecoder::new("m"), rest, cut);
    let _ = openai::StreamDecoder::new("m").decode_whole(rest);
    let _ = anthropic::StreamDecoder::new("m").decode_whole(rest);
});
