//! The OpenAI-compatible API through the real binary: `aura serve` on pulled SmolLM2 and
//! an imported all-MiniLM-L6-v2, driven by the official `openai` Python package (installed
//! by `scripts/setup-python.sh`, which `scripts/test.sh` runs first) and by raw HTTP for
//! what an SDK never sends (malformed and oversized bodies). Every completed request must
//! leave exactly one receipt, and a refused one none.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use support::{Aura, Node, start};

/// A node with SmolLM2 pulled, MiniLM imported as `minilm`, and an operator API key;
/// returns it with the key.
fn node_with_models(aura: &Aura) -> (Node, String) {
    aura.init();
    support::install_models(aura);
    let key = aura
        .run(&["--json", "apikey", "create", "sdk", "--role", "operator"])
        .ok()
        .json();
    let secret = key["secret"]
        .as_str()
        .or_else(|| key["key"].as_str())
        .unwrap_or_else(|| panic!("no secret in {key}"))
        .to_owned();
    (start(aura, "", "smollm2"), secret)
}

/// The receipts in the ledger, by id.
fn receipts(aura: &Aura) -> Vec<String> {
    let listed = aura.run(&["--json", "receipts", "list"]).ok().json();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_official_python_sdk_drives_models_chat_tools_completions_and_embeddings() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk.py");
    let out = Command::new("python3")
        .arg(&script)
        .env(
            "PYTHONPATH",
            support::python_libs(support::PythonLibs::OpenAi),
        )
        .env("AURA_BASE_URL", format!("{}/v1", node.url))
        .env("AURA_API_KEY", &key)
        .env("AURA_CHAT_MODEL", "smollm2")
        .env("AURA_EMBED_MODEL", "minilm")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // Every completed request named a receipt, and exactly those receipts are in the
    // ledger: the refused requests left none.
    let mut named: Vec<String> = facts["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert!(named.len() >= 12, "{facts}");
    let mut in_ledger = receipts(&aura);
    in_ledger.sort();
    named.sort();
    assert_eq!(in_ledger, named, "{facts}");
    drop(node);
    aura.run(&["receipts", "verify"]).ok();
}

/// Posts `body` (JSON text as given) to the node.
async fn post(node: &Node, key: &str, path: &str, body: String) -> (u16, Value, Option<String>) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", node.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let receipt = resp
        .headers()
        .get("x-aura-receipt")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, receipt)
}

fn question(extra: &Value) -> String {
    let mut body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Name a colour of the sky."}],
        "max_tokens": 8,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_and_leave_no_receipt() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/chat/completions",
            "{not json".into(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "smollm2"}).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"model": "no-such-model"})),
            404,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"model": "minilm"})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"temperature": 5})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"n": 3})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"frequency_penalty": 1.0})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"tool_choice": "required"})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"top_logprobs": 3})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"response_format": {"type": "xml"}})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            question(&json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"model": "smollm2", "prompt": ["a", "b"]}).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": [1, 2, 3]}).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": "x", "dimensions": 12}).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/embeddings",
            json!({"model": "smollm2", "input": "x"}).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": "x".repeat(2 << 20)}).to_string(),
            413,
            "invalid_request_error",
        ),
    ];
    for (path, body, status, kind) in cases {
        let shown: String = body.chars().take(80).collect();
        let (got, answer, receipt) = post(&node, &key, path, body).await;
        assert_eq!(got, status, "{path} {shown}: {answer}");
        assert_eq!(answer["error"]["type"], kind, "{path} {shown}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
        assert_eq!(receipt, None, "{path} {shown}");
    }
    // Without the key: 401 in OpenAI's shape.
    let resp = reqwest::get(format!("{}/v1/models", node.url))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(receipts(&aura).is_empty());

    // The node still answers after all that.
    let (status, answer, receipt) =
        post(&node, &key, "/v1/chat/completions", question(&json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(receipts(&aura), vec![receipt.unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_seeded_requests_answer_identically_each_with_its_receipt() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let body = question(&json!({"temperature": 0.9, "seed": 42, "max_tokens": 12}));
    let alone = post(&node, &key, "/v1/chat/completions", body.clone()).await;
    assert_eq!(alone.0, 200, "{}", alone.1);
    let answers = futures_util::future::join_all(
        (0..8).map(|_| post(&node, &key, "/v1/chat/completions", body.clone())),
    )
    .await;
    let mut ids = vec![alone.2.clone().unwrap()];
    for (status, answer, receipt) in answers {
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            alone.1["choices"][0]["message"]["content"]
        );
        for count in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(answer["usage"][count], alone.1["usage"][count], "{count}");
        }
        // The same prompt again: all of it but its last token comes from the model's
        // prompt cache, which changes nothing else in the answer.
        let cached = &answer["usage"]["prompt_tokens_details"]["cached_tokens"];
        assert_eq!(
            cached.as_u64(),
            alone.1["usage"]["prompt_tokens"].as_u64().map(|n| n - 1),
            "{answer}"
        );
        assert_eq!(answer["system_fingerprint"], alone.1["system_fingerprint"]);
        ids.push(receipt.unwrap());
    }
    let mut in_ledger = receipts(&aura);
    in_ledger.sort();
    ids.sort();
    assert_eq!(in_ledger, ids);
    // Another seed samples another answer stream (the first token may agree; the whole
    // answer over 12 sampled tokens at temperature 0.9 differing is what seeds are for).
    let other = post(
        &node,
        &key,
        "/v1/chat/completions",
        question(&json!({"temperature": 0.9, "seed": 43, "max_tokens": 12})),
    )
    .await;
    assert_ne!(
        other.1["choices"][0]["message"]["content"],
        alone.1["choices"][0]["message"]["content"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_unlicensed_model_is_refused_and_nothing_is_recorded() {
    use std::os::unix::fs::PermissionsExt as _;
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    // A flipped bit in MiniLM's weights, before the node first loads it.
    let weights = aura.home().join("models/minilm/files/model.safetensors");
    std::fs::set_permissions(&weights, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let (status, answer, receipt) = post(
        &node,
        &key,
        "/v1/embeddings",
        json!({"model": "minilm", "input": "hello"}).to_string(),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"]["code"], "package_integrity_failed",
        "{answer}"
    );
    assert_eq!(receipt, None);

    // Without a license for this node, SmolLM2 is refused.
    for e in std::fs::read_dir(aura.home().join("licenses")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (status, answer, receipt) =
        post(&node, &key, "/v1/chat/completions", question(&json!({}))).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["type"], "permission_error", "{answer}");
    assert_eq!(receipt, None);
    assert!(receipts(&aura).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stream_stops_and_leaves_no_receipt() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let mut resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", node.url))
        .bearer_auth(&key)
        .json(&json!({
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Tell me a very long story."}],
            // Short enough that, were the generation not stopped, it would finish (and
            // leave its receipt) well within the wait below.
            "max_tokens": 120,
            "stream": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let promised = resp
        .headers()
        .get("x-aura-receipt")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // Read the first chunk, then hang up.
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    drop(resp);
    // The node notices at its next token, stops, and records nothing; it keeps serving.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(12) {
        assert!(
            !receipts(&aura).contains(&promised),
            "the abandoned stream was recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (status, answer, receipt) =
        post(&node, &key, "/v1/chat/completions", question(&json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    let in_ledger = receipts(&aura);
    assert!(!in_ledger.contains(&promised), "{in_ledger:?}");
    assert_eq!(in_ledger, vec![receipt.unwrap()]);
}

/// CPU time the process has used so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime: the 14th and 15th fields, counted from the pid.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Waits until the process has used `ticks` more CPU than `from`: it is generating (a node
/// at rest uses next to none). Polls, since a loaded machine gives it less than a core.
async fn wait_until_busy(pid: u32, from: u64, ticks: u64) {
    let start = std::time::Instant::now();
    while cpu_ticks(pid) - from < ticks {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the node was not generating"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A prompt SmolLM2 continues for as long as it is let.
fn counting(route: &str, max_tokens: u64) -> Value {
    if route == "/v1/completions" {
        json!({"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": max_tokens})
    } else {
        json!({"model": "smollm2", "max_tokens": max_tokens, "messages": [
            {"role": "user", "content": "Count from 1 to 100000, separated by commas."}]})
    }
}

/// Regression: `POST /v1/completions` with `max_tokens: 4294967295`, whose client gave up
/// after 30 s, kept a core busy for 7+ minutes: a non-streamed generation ran on after its
/// connection closed, and a limit beyond the context was taken (and reserved) as given.
/// Now the limit is refused naming its field, and a generation whose client hangs up
/// stops at its next token, leaving no receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_generation_stops_and_a_limit_beyond_the_context_is_refused() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let pid = node.child.id();
    for (route, field) in [
        ("/v1/completions", "max_tokens"),
        ("/v1/chat/completions", "max_tokens"),
    ] {
        let (status, answer, receipt) = post(
            &node,
            &key,
            route,
            counting(route, 4_294_967_295).to_string(),
        )
        .await;
        assert_eq!(status, 400, "{route}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
        assert_eq!(receipt, None);
    }
    let mut body = counting("/v1/chat/completions", 1);
    body["max_completion_tokens"] = json!(100_000);
    let (status, answer, _) = post(&node, &key, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("max_completion_tokens: "),
        "{answer}"
    );

    for route in ["/v1/completions", "/v1/chat/completions"] {
        let started = cpu_ticks(pid);
        let request = reqwest::Client::new()
            .post(format!("{}{route}", node.url))
            .bearer_auth(&key)
            .json(&counting(route, 6000))
            .send();
        // The client waits while the node generates, then gives up.
        let gave_up = tokio::select! {
            r = request => Some(r),
            () = wait_until_busy(pid, started, 50) => None,
        };
        assert!(gave_up.is_none(), "{route} answered: {gave_up:?}");
        // It stops once the client is gone.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let before = cpu_ticks(pid);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let used = cpu_ticks(pid) - before;
        assert!(
            used < 40,
            "{route}: the node used {used} ticks of CPU in 3 s after its client left"
        );
    }
    assert!(receipts(&aura).is_empty());
}

/// Regression: on SIGTERM `aura serve` closed its listener but did not exit within 95 s
/// while a generation was in flight (the graceful shutdown waited for it, and the runtime
/// for its thread). Stopping now stops every generation; the node exits in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_with_a_generation_in_flight_within_seconds() {
    let aura = Aura::new();
    let (mut node, key) = node_with_models(&aura);
    // Load the model first, so that the work watched below is generation.
    let (status, answer, _) = post(&node, &key, "/v1/chat/completions", question(&json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    let started = cpu_ticks(node.child.id());
    let request = {
        let url = format!("{}/v1/completions", node.url);
        let key = key.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&counting("/v1/completions", 6000))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let pid = node.child.id();
    wait_until_busy(pid, started, 50).await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap(), libc::SIGTERM);
    }
    let stopping = std::time::Instant::now();
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < std::time::Duration::from_secs(10),
            "aura serve was still running 10 s after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    // The request was answered (503: the node is stopping) or its connection closed;
    // either way, it left no receipt.
    let answered = request.await.unwrap();
    assert!(matches!(answered, Ok(503) | Err(_)), "{answered:?}");
    assert_eq!(receipts(&aura).len(), 1, "only the first request's");
}

/// Regression: the docs say nothing is silently ignored, yet chat accepted `logit_bias`,
/// `best_of` and unknown fields and answered 200. Each is now refused with a 400 that
/// names the field; a field at the value that asks for nothing, or `null`, is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_the_node_does_not_honour_are_refused_naming_the_field() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let chat = |extra: Value| ("/v1/chat/completions", question(&extra));
    let completion = |extra: Value| {
        let mut body = json!({"model": "smollm2", "prompt": "Hello", "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        ("/v1/completions", body.to_string())
    };
    let embedding = |extra: Value| {
        let mut body = json!({"model": "minilm", "input": "hello"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        ("/v1/embeddings", body.to_string())
    };
    for ((route, body), field) in [
        (chat(json!({"logit_bias": {"50256": -100}})), "logit_bias"),
        (chat(json!({"best_of": 2})), "best_of"),
        (chat(json!({"frobnicate": true})), "frobnicate"),
        (chat(json!({"user": "alice"})), "user"),
        (
            chat(json!({"parallel_tool_calls": false})),
            "parallel_tool_calls",
        ),
        (completion(json!({"logit_bias": {"1": 5}})), "logit_bias"),
        (completion(json!({"frobnicate": 1})), "frobnicate"),
        (embedding(json!({"frobnicate": 1})), "frobnicate"),
    ] {
        let (status, answer, receipt) = post(&node, &key, route, body.clone()).await;
        assert_eq!(status, 400, "{route} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
        assert_eq!(receipt, None, "{body}");
    }
    let (status, answer, _) = post(
        &node,
        &key,
        "/v1/chat/completions",
        question(&json!({"stream_options": {"include_usage": true, "x": 1}, "stream": true})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(receipts(&aura).is_empty());
    // Fields at the values that ask for nothing are accepted, and answered.
    let (status, answer, receipt) = post(
        &node,
        &key,
        "/v1/chat/completions",
        question(
            &json!({"logit_bias": {}, "user": null, "parallel_tool_calls": true, "store": false}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(receipts(&aura), vec![receipt.unwrap()]);
}

/// Replaces a package file by a copy with one bit flipped (a new file: a loaded model may
/// map the old one).
fn flip_a_bit(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let tmp = path.with_extension("tampered");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Regression: `/v1/models` listed a package whose file failed its hash (only manifests
/// were read). Such a package is now neither listed nor served, whether it was damaged
/// before the node first loaded it or after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_whose_file_fails_its_hash_is_not_listed_or_served() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let listed = || async {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/models", node.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let v: Value = resp.json().await.unwrap();
        let mut ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(listed().await, ["minilm", "smollm2"]);
    // Served once, so loaded in memory.
    let (status, answer, _) = post(&node, &key, "/v1/chat/completions", question(&json!({}))).await;
    assert_eq!(status, 200, "{answer}");

    flip_a_bit(&aura.home().join("models/minilm/files/model.safetensors"));
    let gguf = std::fs::read_dir(aura.home().join("models/smollm2/files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .unwrap();
    flip_a_bit(&gguf);
    assert_eq!(listed().await, Vec::<String>::new());
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/models/minilm", node.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let (status, answer, receipt) =
        post(&node, &key, "/v1/chat/completions", question(&json!({}))).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"]["code"], "package_integrity_failed",
        "{answer}"
    );
    assert_eq!(receipt, None);
}
