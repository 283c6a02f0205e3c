//! `aura reasoner test` through the real binary: a scripted configuration, an
//! OpenAI-compatible server on a loopback socket (with the key taken from the process
//! environment), and configuration mistakes reported as one line and a hint.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;

use support::Aura;

fn write(a: &Aura, name: &str, text: &str) -> PathBuf {
    let path = a.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_scripted_reasoner_answers_in_text_and_json() {
    let a = Aura::new();
    let script = write(
        &a,
        "script.jsonl",
        r#"{"content": "Hello from the script.", "usage": {"prompt_tokens": 3, "completion_tokens": 5}}"#,
    );
    let config = write(
        &a,
        "reasoner.toml",
        &format!(
            "provider = \"scripted\"\npath = {:?}\n",
            script.display().to_string()
        ),
    );
    let config = config.to_str().unwrap();
    let out = a.run(&["reasoner", "test", "--config", config, "hi"]).ok();
    assert_eq!(
        out.stdout,
        "Hello from the script.\n\nfinish stop · 3 prompt + 5 completion tokens · scripted scripted · 1 attempt\n"
    );
    let out = a
        .run(&["--json", "reasoner", "test", "--config", config, "hi"])
        .ok();
    let turn = out.json();
    assert_eq!(turn["content"], "Hello from the script.");
    assert_eq!(turn["finish"], "stop");
    assert_eq!(turn["usage"]["completion_tokens"], 5);
}

/// Answers one request with a streamed completion, returning the request's head.
fn serve_once(listener: TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let events = [
            r#"{"model":"served","choices":[{"index":0,"delta":{"content":"Hi "}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"there."},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
            "[DONE]",
        ];
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    })
}

#[test]
fn an_openai_compatible_server_is_reached_with_the_key_from_the_environment() {
    let a = Aura::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_once(listener);
    let config = write(
        &a,
        "reasoner.toml",
        &format!(
            "provider = \"openai\"\nbase_url = \"http://127.0.0.1:{port}\"\nmodel = \"m\"\napi_key_env = \"AURA_TEST_REASONER_KEY\"\n"
        ),
    );
    let mut cmd = a.cmd(&[
        "reasoner",
        "test",
        "--config",
        config.to_str().unwrap(),
        "hello",
    ]);
    cmd.env("AURA_TEST_REASONER_KEY", "sk-from-env");
    let out = a.run_with(cmd, None).ok();
    assert_eq!(
        out.stdout,
        "Hi there.\n\nfinish stop · 9 prompt + 2 completion tokens · openai served · 1 attempt\n"
    );
    let head = server.join().unwrap();
    assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer sk-from-env"),
        "{head}"
    );
}

#[test]
fn configuration_mistakes_are_one_line_and_a_hint() {
    let a = Aura::new();
    let missing_key = write(
        &a,
        "key.toml",
        "provider = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"AURA_TEST_NOT_SET\"\n",
    );
    let unknown = write(
        &a,
        "unknown.toml",
        "provider = \"openai\"\nmodel = \"m\"\nbase_url = \"http://h\"\napi_key = \"sk-x\"\n",
    );
    let script = write(
        &a,
        "script.toml",
        "provider = \"scripted\"\npath = \"/nonexistent/script.jsonl\"\n",
    );
    let refused = write(
        &a,
        "refused.toml",
        "provider = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\nmodel = \"m\"\n[retry]\nmax_attempts = 1\n",
    );
    for (config, error, hint) in [
        (
            missing_key,
            "the environment variable AURA_TEST_NOT_SET is not set",
            "see docs/reasoners.md",
        ),
        (unknown, "unknown field `api_key`", "see docs/reasoners.md"),
        (
            script,
            "invalid script /nonexistent/script.jsonl: cannot read it",
            "script format",
        ),
        (
            refused,
            "could not reach the provider",
            "check that the server at base_url is running",
        ),
        (
            a.dir.path().join("absent.toml"),
            "cannot read",
            "see docs/reasoners.md",
        ),
    ] {
        let out = a
            .run(&[
                "reasoner",
                "test",
                "--config",
                config.to_str().unwrap(),
                "hi",
            ])
            .one_line_error(1);
        assert!(out.stderr.contains(error), "{config:?}: {}", out.stderr);
        assert!(
            out.stderr.lines().nth(1).unwrap_or_default().contains(hint),
            "{config:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("sk-x"), "{}", out.stderr);
    }
}
