//! `aura-bench prompt-cache`: what the prompt cache saves a conversation that re-sends its
//! history every turn (as a mission's local reasoner does). A growing 8-turn conversation
//! on SmolLM2-135M-Instruct Q4_1; per turn, the time to the first token with the cache
//! against without it, on two copies of the model loaded alike except for the cache.
//!
//! The measurements alternate (ABAB): within a round each turn runs on both copies, the
//! order swapped every turn and every round, so that a change in the machine's load falls
//! on both sides alike; the median over rounds is reported. Each round starts with an
//! empty cache, so turn 1 is always a miss. The histories are fixed before measuring (the
//! answers are generated once), and every turn's tokens are compared between the two
//! copies: the cache must not change a single one.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use aura_infer::{ChatMessage, GenerateRequest, LoadOptions, Model, ModelFiles, Prompt};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Model cache (as scripts/fetch-models.sh fills it) [default: $AURA_MODEL_CACHE or ~/.cache/aura/models]
    #[arg(long)]
    models: Option<PathBuf>,
    /// Threads for each copy of the model
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Turns of the conversation (at most 8)
    #[arg(long, default_value_t = 8)]
    turns: usize,
    /// Tokens of each answer
    #[arg(long, default_value_t = 32)]
    answer_tokens: u32,
    /// Rounds (the median over rounds is reported)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// The user's side of the conversation.
const QUESTIONS: [&str; 8] = [
    "I am planning a week of walking in the Scottish Highlands in May. What should I pack?",
    "Which boots would you recommend for wet, rocky paths?",
    "How far can a reasonably fit person walk in a day there?",
    "What about midges? How bad are they in May and what helps?",
    "Can you suggest a route that starts and ends near a railway station?",
    "Where could I stay overnight along that route?",
    "What should I do if the weather turns bad on a high pass?",
    "Please summarise your advice as a short checklist.",
];

/// One turn's measurement on one copy.
struct Sample {
    ttft: Duration,
    prompt_tokens: u32,
    cached_tokens: u32,
    tokens: Vec<u32>,
}

fn turn(model: &Model, prompt: &str, answer_tokens: u32) -> anyhow::Result<Sample> {
    let req = GenerateRequest {
        prompt: Prompt::Text(prompt.to_owned()),
        max_tokens: answer_tokens,
        ..GenerateRequest::default()
    };
    let start = Instant::now();
    let mut first = None;
    let g = model.generate(&req, &mut |_| {
        first.get_or_insert_with(|| start.elapsed());
        ControlFlow::Continue(())
    })?;
    Ok(Sample {
        ttft: first.unwrap_or_else(|| start.elapsed()),
        prompt_tokens: g.prompt_tokens,
        cached_tokens: g.cached_tokens,
        tokens: g.tokens,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let cache = args
        .models
        .clone()
        .unwrap_or_else(crate::infer::default_cache);
    let shipped = cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !shipped.is_file() {
        bail!(
            "{} is missing\nhint: run scripts/fetch-models.sh",
            shipped.display()
        );
    }
    if args.turns == 0 || args.turns > QUESTIONS.len() || args.rounds == 0 || args.threads == 0 {
        bail!(
            "--turns must be 1 to {}, --rounds and --threads at least 1",
            QUESTIONS.len()
        );
    }
    let load = |bytes: usize| {
        Model::load(
            &ModelFiles::Gguf(shipped.clone()),
            &LoadOptions {
                threads: Some(args.threads),
                prompt_cache_bytes: bytes,
                ..LoadOptions::default()
            },
        )
    };
    let cached = load(aura_infer::DEFAULT_PROMPT_CACHE_BYTES)?;
    let plain = load(0)?;

    // The conversation, fixed before measuring: each turn's prompt is the whole history
    // rendered again, as a mission's reasoner sends it.
    let mut history = Vec::new();
    let mut prompts = Vec::new();
    for q in &QUESTIONS[..args.turns] {
        history.push(ChatMessage::new("user", *q));
        let prompt = plain.render_chat(&history, &[], true)?;
        let answer = turn(&plain, &prompt, args.answer_tokens)?;
        history.push(ChatMessage::new(
            "assistant",
            plain.tokenizer().decode(&answer.tokens)?,
        ));
        prompts.push(prompt);
    }
    plain.clear_prompt_cache();

    println!("## Prompt cache: a growing conversation on SmolLM2-135M-Instruct Q4_1\n");
    println!(
        "{} turns, answers of {} tokens, {} thread(s), median of {} rounds (ABAB); kernel {}; load average at start {}\n",
        args.turns,
        args.answer_tokens,
        args.threads,
        args.rounds,
        cached.fingerprint().kernel,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut with = vec![Vec::new(); args.turns];
    let mut without = vec![Vec::new(); args.turns];
    let mut counts = vec![(0u32, 0u32); args.turns];
    for round in 0..args.rounds {
        cached.clear_prompt_cache();
        for (t, prompt) in prompts.iter().enumerate() {
            let cached_first = (round + t) % 2 == 0;
            let (a, b) = if cached_first {
                let a = turn(&cached, prompt, args.answer_tokens)?;
                (a, turn(&plain, prompt, args.answer_tokens)?)
            } else {
                let b = turn(&plain, prompt, args.answer_tokens)?;
                (turn(&cached, prompt, args.answer_tokens)?, b)
            };
            if a.tokens != b.tokens {
                bail!(
                    "turn {}: the prompt cache changed the answer's tokens",
                    t + 1
                );
            }
            counts[t] = (a.prompt_tokens, a.cached_tokens);
            with[t].push(a.ttft);
            without[t].push(b.ttft);
        }
    }
    println!(
        "| turn | prompt tokens | reused from the cache | TTFT ms without | TTFT ms with | ratio (without / with) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let (mut sum_with, mut sum_without) = (Duration::ZERO, Duration::ZERO);
    for t in 0..args.turns {
        let (w, wo) = (median(with[t].clone()), median(without[t].clone()));
        sum_with += w;
        sum_without += wo;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} |",
            t + 1,
            counts[t].0,
            counts[t].1,
            ms(wo),
            ms(w),
            ms(wo) / ms(w).max(1e-9)
        );
    }
    println!(
        "| all | | | {:.1} | {:.1} | {:.2} |\n",
        ms(sum_without),
        ms(sum_with),
        ms(sum_without) / ms(sum_with).max(1e-9)
    );
    let stats = cached.prompt_cache_stats();
    println!(
        "cache: {} hits, {} misses, {} tokens reused, {} entries, {:.1} MiB held of {} MiB; every turn's tokens identical with and without it",
        stats.hits,
        stats.misses,
        stats.tokens_reused,
        stats.entries,
        stats.bytes as f64 / (1u64 << 20) as f64,
        stats.budget >> 20
    );
    Ok(())
}
