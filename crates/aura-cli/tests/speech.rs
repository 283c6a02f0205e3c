//! `/v1/audio/speech` through the real binary: `aura serve` with Debian's espeak-ng
//! (`scripts/setup-speech.sh`), driven by the official `openai` Python package
//! (`scripts/setup-python.sh`), and a node told not to speak.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::{Aura, serve};

fn operator_key(aura: &Aura) -> String {
    let key = aura
        .run(&["--json", "apikey", "create", "sdk", "--role", "operator"])
        .ok()
        .json();
    key["secret"]
        .as_str()
        .or_else(|| key["key"].as_str())
        .unwrap()
        .to_owned()
}

#[test]
fn the_official_python_sdk_gets_wav_pcm_visemes_and_openai_errors() {
    let aura = Aura::new();
    aura.init();
    let key = operator_key(&aura);
    let (node, ready) = serve(&aura);
    assert!(
        ready["speech"]
            .as_str()
            .is_some_and(|s| s.starts_with("espeak-ng ")),
        "the node does not speak (is espeak-ng installed? scripts/setup-speech.sh): {ready}"
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/speech_sdk.py");
    let out = Command::new("python3")
        .arg(&script)
        .env(
            "PYTHONPATH",
            support::python_libs(support::PythonLibs::OpenAi),
        )
        .env("AURA_BASE_URL", format!("{}/v1", node.url))
        .env("AURA_API_KEY", &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        facts["refused"],
        serde_json::json!(["voice", "input", "input", "response_format", "speed"])
    );
    let (timeline, audio) = (
        facts["timeline_ms"].as_f64().unwrap(),
        facts["audio_ms"].as_f64().unwrap(),
    );
    assert!((timeline - audio).abs() <= 0.05 * audio, "{facts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_told_not_to_speak_answers_503_as_the_avatar_expects() {
    let aura = Aura::new();
    aura.init();
    std::fs::write(aura.home().join("aura.toml"), "[speech]\nenabled = false\n").unwrap();
    let (node, ready) = serve(&aura);
    assert!(ready["speech"].is_null(), "{ready}");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/audio/speech", node.url))
        .json(&serde_json::json!({"input": "hi", "voice": "aura", "aura_visemes": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "speech_off");
}
