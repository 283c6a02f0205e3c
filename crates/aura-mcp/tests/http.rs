//! The streamable HTTP transport over real loopback sockets: this crate's server driven
//! by raw HTTP (every refusal: no token, no or unknown session, another token's session,
//! a foreign `Origin`, an oversized body, `GET`), by this crate's client, and by the
//! official `mcp` SDK's client; and this crate's client against the SDK's own server
//! (`fixtures/server.py --http`), including a server that dies under it.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

mod support;

use async_trait::async_trait;
use aura_mcp::http::{self, Endpoint, Sessions};
use aura_mcp::server::Handler;
use aura_mcp::{Error, Options};
use serde_json::{Value, json};
use support::Adder;

/// Accepts the tokens `good` and `other`.
struct Tokens;

#[async_trait]
impl Sessions for Tokens {
    async fn open(&self, token: &str) -> Result<Arc<dyn Handler>, String> {
        match token {
            "good" | "other" => Ok(Arc::new(Adder)),
            _ => Err("unknown token".into()),
        }
    }
}

/// A server on a free loopback port; its URL.
async fn server(max_message: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(http::serve(
        listener,
        Arc::new(Tokens),
        max_message,
        std::future::pending(),
    ));
    url
}

fn endpoint(url: &str, token: &str) -> Endpoint {
    Endpoint {
        url: url.into(),
        bearer: Some(token.into()),
        connect_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn this_crate_s_client_and_server_speak_streamable_http() {
    let url = server(1 << 20).await;
    let client = http::connect(endpoint(&url, "good"), Options::default())
        .await
        .unwrap();
    assert_eq!(client.server_info["name"], "adder");
    let tools = client.list_tools().await.unwrap();
    assert_eq!(tools[0].name, "add");
    let result = client
        .call_tool("add", json!({"a": 2, "b": 3}), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(result["structuredContent"], json!({"sum": 5}));

    // A token the server does not know is refused at the handshake.
    let refused = http::connect(endpoint(&url, "bad"), Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Rpc { error, .. } if error.message.contains("HTTP 401")),
        "{refused}"
    );
}

#[tokio::test]
async fn every_bad_request_is_refused_with_its_status() {
    let url = server(4096).await;
    let http = reqwest::Client::new();
    let post = |body: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

    // No token; an unknown token.
    assert_eq!(post(init.into()).send().await.unwrap().status(), 401);
    assert_eq!(
        post(init.into())
            .bearer_auth("bad")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // A session for `good`.
    let opened = post(init.into()).bearer_auth("good").send().await.unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()[http::SESSION_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(session.len(), 32, "128 random bits");
    let answer: Value = opened.json().await.unwrap();
    assert_eq!(answer["result"]["serverInfo"]["name"], "adder");

    // No session; an unknown one; another token's.
    assert_eq!(
        post(list.into())
            .bearer_auth("good")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(list.into())
            .bearer_auth("good")
            .header(http::SESSION_HEADER, "0123")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        post(list.into())
            .bearer_auth("other")
            .header(http::SESSION_HEADER, &session)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // A page from another site (DNS rebinding) is refused; a loopback page is not.
    let with_origin = |origin: &str| {
        post(list.into())
            .bearer_auth("good")
            .header(http::SESSION_HEADER, &session)
            .header("origin", origin)
            .send()
    };
    assert_eq!(
        with_origin("http://evil.example").await.unwrap().status(),
        403
    );
    assert_eq!(
        with_origin("http://localhost.evil.example:80")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        with_origin("http://localhost:3000").await.unwrap().status(),
        200
    );
    // Oversized; malformed (a JSON-RPC error, the session going on); a notification.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"ping","params":{{"x":"{}"}}}}"#,
        "y".repeat(5000)
    );
    assert_eq!(
        post(big)
            .bearer_auth("good")
            .header(http::SESSION_HEADER, &session)
            .send()
            .await
            .unwrap()
            .status(),
        413
    );
    let malformed: Value = post("{not json".into())
        .bearer_auth("good")
        .header(http::SESSION_HEADER, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(malformed["error"]["code"], -32700);
    let note = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into())
        .bearer_auth("good")
        .header(http::SESSION_HEADER, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(note.status(), 202);
    let listed: Value = post(list.into())
        .bearer_auth("good")
        .header(http::SESSION_HEADER, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["result"]["tools"][0]["name"], "add");
    // No server-initiated stream; ending the session ends it.
    assert_eq!(
        http.get(&url)
            .bearer_auth("good")
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    let end = http
        .delete(&url)
        .bearer_auth("good")
        .header(http::SESSION_HEADER, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(end.status(), 204);
    assert_eq!(
        post(list.into())
            .bearer_auth("good")
            .header(http::SESSION_HEADER, &session)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn an_allowlist_prefix_is_a_whole_url_or_ends_with_a_slash() {
    let allow = vec![
        "http://10.0.0.5:8000/".to_owned(),
        "https://tools.example/mcp".to_owned(),
    ];
    assert!(http::allowed("http://10.0.0.5:8000/mcp", &allow));
    assert!(http::allowed("https://tools.example/mcp", &allow));
    assert!(!http::allowed("http://10.0.0.5:8000.evil/mcp", &allow));
    assert!(!http::allowed(
        "https://tools.example/mcp/../admin",
        &["https://tools.example/mcp".to_owned()]
    ));
    assert!(!http::allowed("http://10.0.0.6:8000/mcp", &allow));
    assert!(!http::allowed("http://10.0.0.5:8000/", &[]));
}

/// The `mcp` SDK (scripts/setup-python.sh mcp) on PYTHONPATH.
fn sdk() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-python.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("mcp")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_s_http_client_uses_this_server() {
    let url = server(1 << 20).await;
    let sdk = sdk();
    let out = tokio::process::Command::new("python3")
        .arg(fixture("http_client.py"))
        .arg(&url)
        .arg("good")
        .env("PYTHONPATH", &sdk)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(seen["server"], "adder");
    assert_eq!(seen["tools"], json!(["add"]));
    assert_eq!(seen["is_error"], false);
    assert!(seen["result"].as_str().unwrap().contains("5"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_client_uses_the_official_sdk_s_http_server_and_survives_its_death() {
    let sdk = sdk();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new("python3")
        .arg(fixture("server.py"))
        .arg("--http")
        .arg(port.to_string())
        .env("PYTHONPATH", &sdk)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    // The SDK's server takes a while to start on a loaded machine.
    let mut client = None;
    for _ in 0..600 {
        match http::connect(
            Endpoint {
                url: url.clone(),
                bearer: None,
                connect_timeout: Duration::from_secs(5),
            },
            Options::default(),
        )
        .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let client = client.expect("the SDK's HTTP server did not come up in 60 s");
    let tools: Vec<String> = client
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(tools.contains(&"add".to_owned()), "{tools:?}");
    let sum = client
        .call_tool("add", json!({"a": 20, "b": 22}), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(sum["content"][0]["text"], "42", "{sum}");
    // A hung tool is a timeout, and the client is told, not stuck.
    let hung = client
        .call_tool("hang", json!({}), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(hung, Error::Timeout { .. }), "{hung}");
    // The server dies: the next call fails with a clear reason.
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let gone = client
        .call_tool("add", json!({"a": 1, "b": 1}), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        gone.to_string().contains("cannot be reached") || matches!(gone, Error::Closed(_)),
        "{gone}"
    );
}
