//! SmolLM2-135M-Instruct (the shipped Q4_1 GGUF) end to end: greedy decoding matches a
//! checked-in token sequence, the tokenizer round-trips text, the chat template renders,
//! and tokens and logits are identical at 1, 2 and 4 threads, streamed or not, alone or
//! beside 7 other concurrent requests, on every kernel variant.
//!
//! The model comes from `scripts/fetch-models.sh` (CI runs it first). A missing model
//! fails these tests with a message saying so: they are never skipped.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

use aura_infer::{
    ChatMessage, Finish, GenerateRequest, KernelVariant, LoadOptions, Model, ModelFiles, Prompt,
    Sampling,
};
use sha2::{Digest, Sha256};

fn smollm2_path() -> PathBuf {
    let cache = std::env::var_os("AURA_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aura/models")
        });
    let path = cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "SmolLM2 is missing at {}: run scripts/fetch-models.sh (or set AURA_MODEL_CACHE)",
        path.display()
    );
    path
}

fn load(opts: &LoadOptions) -> Model {
    Model::load(&ModelFiles::Gguf(smollm2_path()), opts).unwrap()
}

fn shared() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| load(&LoadOptions::default()))
}

fn chat_prompt(model: &Model, question: &str) -> Vec<u32> {
    let text = model
        .render_chat(&[ChatMessage::new("user", question)], &[], true)
        .unwrap();
    model.tokenizer().encode(&text, true).unwrap()
}

fn sampled(seed: u64) -> Sampling {
    Sampling {
        temperature: 0.9,
        top_k: Some(50),
        top_p: Some(0.95),
        repetition_penalty: Some(1.1),
        seed,
    }
}

fn run(model: &Model, prompt: &[u32], sampling: Sampling, max_tokens: u32) -> (Vec<u32>, Vec<u32>) {
    let req = GenerateRequest {
        prompt: Prompt::Tokens(prompt.to_vec()),
        sampling,
        max_tokens,
        ..GenerateRequest::default()
    };
    let mut streamed = Vec::new();
    let out = model
        .generate(&req, &mut |ev| {
            streamed.extend(ev.token);
            ControlFlow::Continue(())
        })
        .unwrap();
    (out.tokens, streamed)
}

/// The greedy continuation of "What is the capital of France?" through the chat template,
/// as this engine produced it when the test was written. llama.cpp, on the same file,
/// agrees on the first seven tokens ("L'Étoile, la") and on the ranking of the next
/// token's top six logits; the two engines' activation rounding differs, so their
/// continuations part after that.
const GREEDY_FRANCE: [u32; 24] = [
    60, 23, 39614, 1141, 552, 28, 2618, 2828, 313, 7712, 769, 28, 2618, 2849, 1558, 28, 2618, 2849,
    1558, 26261, 11708, 46767, 28, 2618,
];

#[test]
fn greedy_decoding_of_a_fixed_prompt_matches_the_checked_in_tokens() {
    let model = shared();
    let prompt = chat_prompt(model, "What is the capital of France?");
    let (tokens, streamed) = run(
        model,
        &prompt,
        Sampling::greedy(),
        GREEDY_FRANCE.len() as u32,
    );
    assert_eq!(
        tokens,
        GREEDY_FRANCE,
        "text: {:?}",
        model.tokenizer().decode(&tokens).unwrap()
    );
    assert_eq!(streamed, tokens);
}

#[test]
fn the_model_is_described_and_fingerprinted() {
    let model = shared();
    let info = model.info();
    assert_eq!(
        (
            info.architecture.as_str(),
            info.layers,
            info.embedding_length
        ),
        ("llama", 30, 576)
    );
    assert_eq!(
        (
            info.heads,
            info.kv_heads,
            info.vocab_size,
            info.context_length
        ),
        (9, 3, 49152, 8192)
    );
    assert_eq!(info.eos_ids, vec![2]);
    assert!(info.has_chat_template);
    let fp = model.fingerprint();
    assert_eq!(fp.dtype, "q4_1");
    assert_eq!(fp.kernel, KernelVariant::detect().name());
}

#[test]
fn the_tokenizer_round_trips_text() {
    let tok = shared().tokenizer();
    for text in [
        "Hello, world!",
        "  leading spaces and\ttabs\nnew lines\r\n",
        "numbers 1234567890 and 3.14159",
        "unicode: café, naïve, 日本語, emoji 🎉, Ελληνικά",
        "fn main() { println!(\"{}\", 1 + 2); }",
        "<|im_start|>user\nhi<|im_end|>\n",
        "",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "ids {ids:?}");
    }
    // Special tokens in text become their ids; digits are split one by one.
    assert_eq!(tok.encode("<|im_start|>", false).unwrap(), vec![1]);
    assert_eq!(tok.encode("123", false).unwrap().len(), 3);
    assert!(tok.decode(&[60_000]).is_err());
}

#[test]
fn the_chat_template_renders_chatml_with_the_default_system_prompt() {
    let model = shared();
    let text = model
        .render_chat(&[ChatMessage::new("user", "Hi")], &[], true)
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = model
        .render_chat(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi"),
            ],
            &[],
            false,
        )
        .unwrap();
    assert_eq!(
        with_system,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn tokens_are_identical_at_1_2_and_4_threads_streamed_or_not() {
    let models: Vec<Model> = [1, 2, 4]
        .iter()
        .map(|&n| {
            load(&LoadOptions {
                threads: Some(n),
                ..LoadOptions::default()
            })
        })
        .collect();
    let prompt = chat_prompt(&models[0], "Write a short poem about the sea.");
    let reference = run(&models[0], &prompt, sampled(42), 24);
    assert_eq!(
        reference.0, reference.1,
        "streamed tokens differ from the result"
    );
    for m in &models[1..] {
        assert_eq!(
            run(m, &prompt, sampled(42), 24),
            reference,
            "at {} threads",
            m.threads()
        );
    }
    // A different seed draws something else: the test would notice a sampler that
    // ignored its randomness.
    assert_ne!(run(&models[0], &prompt, sampled(43), 24).0, reference.0);
}

#[test]
fn eight_concurrent_requests_give_the_tokens_each_gives_alone() {
    let model = load(&LoadOptions {
        threads: Some(2),
        ..LoadOptions::default()
    });
    let prompts: Vec<Vec<u32>> = (0..8)
        .map(|i| chat_prompt(&model, &format!("Tell me fact number {i} about the moon.")))
        .collect();
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| run(&model, p, sampled(i as u64), 12).0)
        .collect();
    let together: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let model = &model;
                s.spawn(move || run(model, p, sampled(i as u64), 12).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
}

/// SHA-256 over the logits of every step of a greedy run.
fn logits_digest(model: &Model, prompt: &[u32], steps: usize, chunk: usize) -> String {
    let mut session = model.session();
    let mut hasher = Sha256::new();
    let mut logits = Vec::new();
    for c in prompt.chunks(chunk) {
        logits = session.feed(c).unwrap();
    }
    for _ in 0..steps {
        for l in &logits {
            hasher.update(l.to_le_bytes());
        }
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap();
        logits = session.feed(&[next as u32]).unwrap();
    }
    hex::encode(hasher.finalize())
}

#[test]
fn logits_are_bit_identical_across_threads_chunking_and_kernel_variants() {
    let prompt = chat_prompt(shared(), "Name three colours.");
    let reference = logits_digest(shared(), &prompt, 4, prompt.len());
    for threads in [1, 2, 4] {
        let m = load(&LoadOptions {
            threads: Some(threads),
            ..LoadOptions::default()
        });
        assert_eq!(
            logits_digest(&m, &prompt, 4, 5),
            reference,
            "{threads} threads, prompt in chunks of 5"
        );
    }
    for variant in [
        KernelVariant::Scalar,
        KernelVariant::Avx2,
        KernelVariant::Avx512,
    ] {
        if !variant.is_supported() {
            continue;
        }
        let m = load(&LoadOptions {
            kernel: Some(variant),
            ..LoadOptions::default()
        });
        assert_eq!(m.fingerprint().kernel, variant.name());
        assert_eq!(
            logits_digest(&m, &prompt, 2, 64),
            logits_digest(shared(), &prompt, 2, 64),
            "{variant:?}"
        );
    }
}

#[test]
fn stop_sequences_max_tokens_and_cancellation_end_generation() {
    let model = shared();
    let prompt = chat_prompt(model, "What is the capital of France?");
    let greedy = |stop: Vec<String>, max_tokens| GenerateRequest {
        prompt: Prompt::Tokens(prompt.clone()),
        max_tokens,
        stop,
        ..GenerateRequest::default()
    };
    // "L'Étoile, la ..." stops before the first comma.
    let mut streamed = String::new();
    let out = model
        .generate(&greedy(vec![",".into()], 24), &mut |ev| {
            streamed.push_str(&ev.text);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!((out.text.as_str(), out.finish), ("L'Étoile", Finish::Stop));
    assert_eq!(streamed, out.text);

    let out = model
        .generate(&greedy(vec![], 3), &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(
        (out.tokens.len(), out.finish, out.completion_tokens),
        (3, Finish::Length, 3)
    );
    assert_eq!(out.prompt_tokens as usize, prompt.len());

    let mut n = 0;
    let out = model
        .generate(&greedy(vec![], 24), &mut |_| {
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((out.tokens.len(), out.finish), (2, Finish::Cancelled));
}

#[test]
fn logprobs_are_reported_for_each_token() {
    let model = shared();
    let prompt = chat_prompt(model, "What is the capital of France?");
    let req = GenerateRequest {
        prompt: Prompt::Tokens(prompt),
        max_tokens: 3,
        logprobs: Some(3),
        ..GenerateRequest::default()
    };
    let out = model
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let lps = out.logprobs.unwrap();
    assert_eq!(lps.len(), 3);
    for (lp, tok) in lps.iter().zip(&out.tokens) {
        // Greedy: the chosen token is the most likely one.
        assert_eq!((lp.token, lp.top[0].token), (*tok, *tok));
        assert_eq!(lp.top.len(), 3);
        assert!(lp.logprob <= 0.0 && lp.top[0].logprob >= lp.top[1].logprob);
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    let model = shared();
    let cases: Vec<(GenerateRequest, &str)> = vec![
        (
            GenerateRequest {
                prompt: Prompt::Tokens(vec![]),
                ..GenerateRequest::default()
            },
            "the prompt is empty",
        ),
        (
            GenerateRequest {
                prompt: Prompt::Text(String::new()),
                ..GenerateRequest::default()
            },
            "the prompt is empty",
        ),
        (
            GenerateRequest {
                prompt: Prompt::Tokens(vec![1, 49_152]),
                ..GenerateRequest::default()
            },
            "outside the vocabulary",
        ),
        (
            GenerateRequest {
                prompt: Prompt::Tokens(vec![1; 9000]),
                ..GenerateRequest::default()
            },
            "the context holds 8192",
        ),
        (
            GenerateRequest {
                prompt: Prompt::Text("hi".into()),
                sampling: Sampling {
                    temperature: -1.0,
                    ..Sampling::default()
                },
                ..GenerateRequest::default()
            },
            "temperature",
        ),
        (
            GenerateRequest {
                prompt: Prompt::Text("hi".into()),
                stop: vec![String::new()],
                ..GenerateRequest::default()
            },
            "stop sequences",
        ),
    ];
    for (req, want) in cases {
        let err = model
            .generate(&req, &mut |_| ControlFlow::Continue(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
}

#[test]
fn json_object_constraint_yields_a_parseable_object() {
    let model = shared();
    let prompt = chat_prompt(
        model,
        "Describe a cat as a JSON object with its name and age.",
    );
    for seed in [1, 2] {
        let req = GenerateRequest {
            prompt: Prompt::Tokens(prompt.clone()),
            sampling: Sampling {
                temperature: 0.7,
                seed,
                ..Sampling::default()
            },
            max_tokens: 96,
            constraint: Some(aura_infer::Constraint::JsonObject),
            ..GenerateRequest::default()
        };
        let out = model
            .generate(&req, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        if out.finish == Finish::Stop {
            let v: serde_json::Value =
                serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
            assert!(v.is_object(), "{}", out.text);
        } else {
            // Cut by max_tokens: still a prefix of an object.
            assert!(out.text.starts_with('{'), "{}", out.text);
        }
        // The same request again (its prompt now in the prompt cache): the same output.
        assert_eq!(
            uncached(
                model
                    .generate(&req, &mut |_| ControlFlow::Continue(()))
                    .unwrap()
            ),
            uncached(out)
        );
    }
    // A schema keyword the constraint cannot enforce is refused, not ignored.
    let schema = GenerateRequest {
        prompt: Prompt::Tokens(prompt),
        constraint: Some(aura_infer::Constraint::JsonSchema(
            serde_json::json!({"type": "integer", "multipleOf": 2}),
        )),
        ..GenerateRequest::default()
    };
    let err = model
        .generate(&schema, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("keyword `multipleOf` is not supported"),
        "{err}"
    );
}

fn weather_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "temperature": {"type": "integer"},
            "unit": {"enum": ["C", "F"]}
        },
        "required": ["city", "temperature", "unit"],
        "additionalProperties": false
    })
}

/// Whether `v` is valid against `weather_schema()`.
fn is_weather(v: &serde_json::Value) -> bool {
    let Some(o) = v.as_object() else {
        return false;
    };
    o.len() == 3
        && o["city"].as_str().is_some_and(|c| c.chars().count() <= 40)
        && (o["temperature"].is_i64() || o["temperature"].is_u64())
        && matches!(o["unit"].as_str(), Some("C" | "F"))
}

fn constrained(
    model: &Model,
    prompt: &[u32],
    sampling: Sampling,
    constraint: aura_infer::Constraint,
) -> aura_infer::Generation {
    let req = GenerateRequest {
        prompt: Prompt::Tokens(prompt.to_vec()),
        sampling,
        max_tokens: 96,
        constraint: Some(constraint),
        ..GenerateRequest::default()
    };
    let out = model
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    // Determinism: the same request gives the same output (the second one's prompt from
    // the prompt cache).
    assert_eq!(
        uncached(
            model
                .generate(&req, &mut |_| ControlFlow::Continue(()))
                .unwrap()
        ),
        uncached(out.clone())
    );
    out
}

/// A generation with its prompt-cache count cleared: the one field that may differ between
/// a run that found its prompt in the cache and one that did not.
fn uncached(mut g: aura_infer::Generation) -> aura_infer::Generation {
    g.cached_tokens = 0;
    g
}

#[test]
fn json_schema_constraint_yields_a_valid_value() {
    let model = shared();
    let prompt = chat_prompt(
        model,
        "What is the weather in Paris? Answer in JSON with the city, the temperature and its unit.",
    );
    for sampling in [Sampling::greedy(), sampled(7)] {
        let out = constrained(
            model,
            &prompt,
            sampling,
            aura_infer::Constraint::JsonSchema(weather_schema()),
        );
        assert_eq!(out.finish, Finish::Stop, "{}", out.text);
        let v: serde_json::Value =
            serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
        assert!(is_weather(&v), "{}", out.text);
    }
}

#[test]
fn json_schema_after_a_prefix_completes_a_valid_value() {
    let model = shared();
    let prefix = r#"{"city": ""#;
    let text = model
        .render_chat(
            &[ChatMessage::new(
                "user",
                "What is the weather in Oslo? Answer in JSON.",
            )],
            &[],
            true,
        )
        .unwrap();
    let prompt = model
        .tokenizer()
        .encode(&format!("{text}{prefix}"), true)
        .unwrap();
    let out = constrained(
        model,
        &prompt,
        Sampling::greedy(),
        aura_infer::Constraint::JsonSchemaAfter {
            schema: weather_schema(),
            prefix: prefix.into(),
        },
    );
    assert_eq!(out.finish, Finish::Stop, "{}", out.text);
    let whole = format!("{prefix}{}", out.text);
    let v: serde_json::Value =
        serde_json::from_str(&whole).unwrap_or_else(|e| panic!("{e}: {whole}"));
    assert!(is_weather(&v), "{whole}");

    // A prefix that cannot begin a valid value is refused before generating.
    let req = GenerateRequest {
        prompt: Prompt::Tokens(prompt),
        constraint: Some(aura_infer::Constraint::JsonSchemaAfter {
            schema: weather_schema(),
            prefix: r#"{"town": "#.into(),
        }),
        ..GenerateRequest::default()
    };
    let err = model
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("does not begin"), "{err}");
}

#[test]
fn tool_call_constraint_names_a_tool_with_valid_arguments() {
    let model = shared();
    let tools = vec![
        aura_infer::ToolDef {
            name: "get_weather".into(),
            description: "The weather in a city.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40}},
                "required": ["city"]
            }),
        },
        aura_infer::ToolDef {
            name: "add".into(),
            description: "Adds two integers.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"]
            }),
        },
    ];
    let prompt = chat_prompt(
        model,
        "What is the weather in Rome? Call a tool as JSON: {\"name\": ..., \"arguments\": ...}",
    );
    let out = constrained(
        model,
        &prompt,
        Sampling::greedy(),
        aura_infer::Constraint::ToolCall {
            tools: tools.clone(),
            required: true,
        },
    );
    assert_eq!(out.finish, Finish::Stop, "{}", out.text);
    let v: serde_json::Value =
        serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
    let args = &v["arguments"];
    match v["name"].as_str() {
        Some("get_weather") => assert!(args["city"].is_string(), "{}", out.text),
        Some("add") => assert!(args["a"].is_i64() && args["b"].is_i64(), "{}", out.text),
        _ => panic!("no tool named: {}", out.text),
    }

    let optional = GenerateRequest {
        prompt: Prompt::Tokens(prompt),
        constraint: Some(aura_infer::Constraint::ToolCall {
            tools,
            required: false,
        }),
        ..GenerateRequest::default()
    };
    let err = model
        .generate(&optional, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("`required: false`"), "{err}");
}

/// A small deterministic generator for split points; the seed is printed on failure.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// SHA-256 over the logits of `steps` greedy steps after `first`, continuing `session`.
fn greedy_digest(session: &mut aura_infer::Session<'_>, first: Vec<f32>, steps: usize) -> String {
    let mut hasher = Sha256::new();
    let mut logits = first;
    for _ in 0..steps {
        for l in &logits {
            hasher.update(l.to_le_bytes());
        }
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap();
        logits = session.feed(&[next as u32]).unwrap();
    }
    hex::encode(hasher.finalize())
}

/// The ground truth under the prompt cache: a prefill of `[0..n)` then `[n..m)` over the
/// same cache is the prefill of `[0..m)`, logits and KV state bit for bit, wherever `n`
/// falls (random split points; the seed is in the message), and what follows (greedy
/// steps) is too.
#[test]
fn prefill_split_at_random_points_gives_identical_logits_and_state() {
    let model = shared();
    let prompt = chat_prompt(
        model,
        "List three things a lighthouse keeper does every day.",
    );
    let mut whole = model.session();
    let whole_logits = whole.feed(&prompt).unwrap();
    let whole_state = whole.state_digest();
    let whole_steps = greedy_digest(&mut whole, whole_logits.clone(), 3);
    let mut seed = 0x5eed_0001u64;
    for round in 0..6 {
        let mut cuts: Vec<usize> = (0..1 + round % 3)
            .map(|_| 1 + (xorshift(&mut seed) as usize) % (prompt.len() - 1))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut s = model.session();
        let mut logits = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&prompt.len())) {
            logits = s.feed(&prompt[start..end]).unwrap();
            start = end;
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&logits) == bits(&whole_logits),
            "logits differ for cuts {cuts:?} (seed state {seed:#x})"
        );
        assert_eq!(s.state_digest(), whole_state, "state, cuts {cuts:?}");
        assert_eq!(s.tokens(), prompt.as_slice());
        assert_eq!(
            greedy_digest(&mut s, logits, 3),
            whole_steps,
            "cuts {cuts:?}"
        );
    }
}

/// A conversation that re-sends its growing history every turn, as a mission's local
/// reasoner does: four turns, each the previous prompt plus the answer and a new
/// question.
const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "And how many people live there?",
    "Name one museum in that city.",
    "Thank you. Summarise our talk in one sentence.",
];

/// One turn's result as compared with and without the cache: the tokens, the streamed
/// tokens, and a hash of every step's log-probabilities (five alternatives each), which
/// come from the step's logits.
#[derive(Debug, PartialEq)]
struct TurnResult {
    tokens: Vec<u32>,
    streamed: Vec<u32>,
    text: String,
    logprobs: String,
    prompt_tokens: u32,
    completion_tokens: u32,
}

fn conversation(model: &Model, sampling: &Sampling) -> Vec<(TurnResult, u32)> {
    let mut history = Vec::new();
    let mut out = Vec::new();
    for q in QUESTIONS {
        history.push(ChatMessage::new("user", q));
        let text = model.render_chat(&history, &[], true).unwrap();
        let req = GenerateRequest {
            prompt: Prompt::Text(text),
            sampling: sampling.clone(),
            max_tokens: 12,
            logprobs: Some(5),
            ..GenerateRequest::default()
        };
        let mut streamed = Vec::new();
        let g = model
            .generate(&req, &mut |ev| {
                streamed.extend(ev.token);
                ControlFlow::Continue(())
            })
            .unwrap();
        let mut h = Sha256::new();
        for lp in g.logprobs.as_deref().unwrap_or_default() {
            h.update(lp.token.to_le_bytes());
            h.update(lp.logprob.to_bits().to_le_bytes());
            for t in &lp.top {
                h.update(t.token.to_le_bytes());
                h.update(t.logprob.to_bits().to_le_bytes());
            }
        }
        history.push(ChatMessage::new("assistant", g.text.clone()));
        out.push((
            TurnResult {
                tokens: g.tokens,
                streamed,
                text: g.text,
                logprobs: hex::encode(h.finalize()),
                prompt_tokens: g.prompt_tokens,
                completion_tokens: g.completion_tokens,
            },
            g.cached_tokens,
        ));
    }
    out
}

fn with_cache(threads: usize, bytes: usize) -> Model {
    load(&LoadOptions {
        threads: Some(threads),
        prompt_cache_bytes: bytes,
        ..LoadOptions::default()
    })
}

#[test]
fn a_growing_conversation_is_bit_identical_with_and_without_the_prompt_cache() {
    let reference: Vec<TurnResult> = conversation(&with_cache(1, 0), &Sampling::default())
        .into_iter()
        .map(|(r, cached)| {
            assert_eq!(cached, 0, "the disabled cache reused tokens");
            r
        })
        .collect();
    for r in &reference {
        assert_eq!(
            r.tokens, r.streamed,
            "streamed tokens differ from the result"
        );
    }
    for threads in [1, 2] {
        for sampling in [Sampling::default(), sampled(7)] {
            let cached = with_cache(threads, aura_infer::DEFAULT_PROMPT_CACHE_BYTES);
            let got = conversation(&cached, &sampling);
            let uncached = if sampling == Sampling::default() {
                None
            } else {
                Some(conversation(&with_cache(threads, 0), &sampling))
            };
            for (turn, (result, reused)) in got.iter().enumerate() {
                let want = match &uncached {
                    None => &reference[turn],
                    Some(u) => &u[turn].0,
                };
                assert_eq!(result, want, "turn {turn}, {threads} threads, {sampling:?}");
                if turn == 0 {
                    assert_eq!(*reused, 0, "the first turn found an empty cache");
                } else {
                    // Every turn but the first reuses the previous turn's prompt (its
                    // answer too, as far as it re-tokenizes the same way). The previous
                    // prompt ends in a newline that an answer opening with a newline
                    // would merge with, hence the one token of slack.
                    let previous = got[turn - 1].0.prompt_tokens;
                    assert!(
                        *reused + 1 >= previous && *reused < result.prompt_tokens,
                        "turn {turn} reused {reused} of {} tokens (the previous prompt had {previous})",
                        result.prompt_tokens
                    );
                }
            }
            let stats = cached.prompt_cache_stats();
            assert_eq!(stats.hits, 3, "{stats:?}");
            assert_eq!(stats.misses, 1, "{stats:?}");
            assert!(
                stats.entries >= 1 && stats.bytes <= stats.budget,
                "{stats:?}"
            );
        }
    }
}

/// The logits of every turn of the conversation, and the KV state they leave, through
/// sessions started from the cache against fresh sessions.
#[test]
fn cached_sessions_give_the_logits_and_state_of_fresh_ones() {
    let cached = with_cache(2, aura_infer::DEFAULT_PROMPT_CACHE_BYTES);
    let fresh = shared();
    let mut history = Vec::new();
    for (turn, q) in QUESTIONS.iter().enumerate() {
        history.push(ChatMessage::new("user", *q));
        let prompt = chat_prompt_of(fresh, &history);
        let mut a = fresh.session();
        let la = a.feed(&prompt).unwrap();
        let mut b = cached.session_for(&prompt);
        assert_eq!(b.position() > 0, turn > 0, "turn {turn}");
        let lb = b.feed(&prompt[b.position()..]).unwrap();
        assert_eq!(b.state_digest(), a.state_digest(), "turn {turn}");
        let (da, db) = (greedy_digest(&mut a, la, 6), greedy_digest(&mut b, lb, 6));
        assert_eq!(da, db, "turn {turn}");
        // The answer as the model wrote it (greedy), for the next turn's history.
        let answer = fresh
            .tokenizer()
            .decode(&a.tokens()[prompt.len()..])
            .unwrap();
        history.push(ChatMessage::new("assistant", answer));
        cached.remember(b);
    }
}

fn chat_prompt_of(model: &Model, history: &[ChatMessage]) -> Vec<u32> {
    let text = model.render_chat(history, &[], true).unwrap();
    model.tokenizer().encode(&text, true).unwrap()
}

/// Concurrent requests sharing one cached prefix each copy it: none changes what another
/// computes, and each gets what it gets alone without a cache.
#[test]
fn concurrent_requests_on_a_shared_cached_prefix_give_their_uncached_tokens() {
    let cached = with_cache(2, aura_infer::DEFAULT_PROMPT_CACHE_BYTES);
    let plain = shared_uncached();
    let system = "You are a terse assistant who answers in five words.";
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|i| {
            chat_prompt_of(
                plain,
                &[
                    ChatMessage::new("system", system),
                    ChatMessage::new("user", format!("Give me fact {i} about owls.")),
                ],
            )
        })
        .collect();
    let alone: Vec<(Vec<u32>, Vec<u32>)> = prompts
        .iter()
        .map(|p| run(plain, p, Sampling::default(), 8))
        .collect();
    // Warm the cache with the shared system prompt.
    let _ = run(&cached, &prompts[0], Sampling::default(), 8);
    let together: Vec<(Vec<u32>, Vec<u32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let cached = &cached;
                s.spawn(move || run(cached, p, Sampling::default(), 8))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    assert!(cached.prompt_cache_stats().hits >= 6);
}

fn shared_uncached() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| with_cache(1, 0))
}
