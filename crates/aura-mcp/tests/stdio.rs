//! The server side over a real byte stream, driven by raw lines (malformed JSON-RPC,
//! oversized messages, unknown methods and tools: each answered with its JSON-RPC error,
//! the session going on) and by this crate's own client.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::Duration;

mod support;

use aura_mcp::server::serve_stdio;
use aura_mcp::{Client, Options};
use serde_json::{Value, json};
use support::Adder;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

#[tokio::test]
async fn bad_input_gets_json_rpc_errors_and_the_session_goes_on() {
    let (client_end, server_end) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_end);
    let server = tokio::spawn(serve_stdio(
        Arc::new(Adder),
        server_read,
        server_write,
        1024,
    ));
    let (client_read, mut client_write) = tokio::io::split(client_end);
    let mut lines = BufReader::new(client_read).lines();
    // (what is sent, the error code expected, or 0 for a result)
    let cases: Vec<(String, i64)> = vec![
        ("{not json".into(), -32700),
        ("[]".into(), -32600),
        (r#"{"jsonrpc":"2.0","id":1}"#.into(), -32600),
        (format!(r#"{{"jsonrpc":"2.0","id":2,"method":"ping","params":{{"x":"{}"}}}}"#, "y".repeat(2000)), -32600),
        (r#"{"jsonrpc":"2.0","id":3,"method":"resources/list"}"#.into(), -32601),
        (r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"nope"}}"#.into(), -32602),
        (r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"add","arguments":3}}"#.into(), -32602),
        (r#"{"jsonrpc":"2.0","id":6,"method":"ping"}"#.into(), 0),
    ];
    for (line, code) in cases {
        client_write.write_all(line.as_bytes()).await.unwrap();
        client_write.write_all(b"\n").await.unwrap();
        let answer: Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        if code == 0 {
            assert_eq!(answer["result"], json!({}), "{line}: {answer}");
        } else {
            assert_eq!(
                answer["error"]["code"],
                json!(code),
                "{}: {answer}",
                &line[..line.len().min(60)]
            );
        }
    }
    // A notification gets no answer; the next request does.
    client_write
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"tools/list\"}\n")
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(answer["id"], json!("s"));
    assert_eq!(answer["result"]["tools"][0]["name"], json!("add"));
    // The client hangs up (both halves of its end): the session ends cleanly.
    drop(client_write);
    drop(lines);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_client_and_the_server_agree() {
    let (client_end, server_end) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_end);
    tokio::spawn(serve_stdio(
        Arc::new(Adder),
        server_read,
        server_write,
        1 << 20,
    ));
    let (client_read, client_write) = tokio::io::split(client_end);
    let client = Client::connect(client_read, client_write, Options::default(), None)
        .await
        .unwrap();
    assert_eq!(client.protocol_version, aura_mcp::jsonrpc::PROTOCOL_VERSION);
    assert_eq!(client.server_info["name"], json!("adder"));
    let tools = client.list_tools().await.unwrap();
    assert_eq!(tools[0].name, "add");
    let r = client
        .call_tool("add", json!({"a": 2, "b": 3}), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r["structuredContent"]["sum"], json!(5));
    assert_eq!(r["isError"], json!(false));
    let r = client
        .call_tool("add", json!({"a": "x"}), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r["isError"], json!(true));
}
