//! Runs one chat prompt through a GGUF model and prints the tokens, the text and the
//! timing: `cargo run --release -p aura-infer --example generate -- MODEL.gguf "prompt" [max_tokens]`.

use std::ops::ControlFlow;
use std::time::Instant;

use aura_infer::{ChatMessage, GenerateRequest, LoadOptions, Model, ModelFiles, Prompt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: generate MODEL.gguf PROMPT [MAX_TOKENS]")?;
    let prompt = args
        .next()
        .unwrap_or_else(|| "What is the capital of France?".into());
    let max_tokens = args.next().map(|s| s.parse()).transpose()?.unwrap_or(48);
    let start = Instant::now();
    let model = Model::load(&ModelFiles::Gguf(path.into()), &LoadOptions::default())?;
    println!("loaded in {:.2?}: {}", start.elapsed(), model.fingerprint());
    let text = model.render_chat(&[ChatMessage::new("user", prompt)], &[], true)?;
    let ids = model.tokenizer().encode(&text, true)?;
    println!("prompt: {} tokens {:?}", ids.len(), ids);
    let req = GenerateRequest {
        prompt: Prompt::Tokens(ids),
        max_tokens,
        ..GenerateRequest::default()
    };
    let start = Instant::now();
    let mut first = None;
    let out = model.generate(&req, &mut |ev| {
        first.get_or_insert_with(|| start.elapsed());
        print!("{}", ev.text);
        ControlFlow::Continue(())
    })?;
    let total = start.elapsed();
    println!(
        "\n---\ntokens: {:?}\nfinish: {:?}, {} tokens, first after {:.2?}, total {:.2?}",
        out.tokens,
        out.finish,
        out.completion_tokens,
        first.unwrap_or_default(),
        total
    );
    Ok(())
}
