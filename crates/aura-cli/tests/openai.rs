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

/// Where `scripts/setup-python.sh` installed the SDK (it prints the directory).
fn openai_sdk() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-python.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn the_official_python_sdk_drives_models_chat_tools_completions_and_embeddings() {
    let aura = Aura::new();
    let (node, key) = node_with_models(&aura);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("PYTHONPATH", openai_sdk())
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
        assert_eq!(answer["usage"], alone.1["usage"]);
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
