//! The web UI's routes and what they need from the node, through a real socket: the page
//! and its files (content types, caching, compression, the Content-Security-Policy), the
//! event stream's key as a WebSocket subprotocol (browsers cannot set headers on a
//! WebSocket), `/v1/system` and `/v1/receipts`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use support::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_is_served_with_a_strict_csp_and_cached_by_content() {
    let n = start().await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{}/", n.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    let Some(at) = html.find("/assets/") else {
        // This binary was built without ui/dist: the page says how to build it.
        assert!(html.contains("npm run build"), "{html}");
        return;
    };
    let asset = &html[at..at + html[at..].find('"').unwrap()];
    let js = http
        .get(format!("{}{asset}", n.url))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200, "{asset}");
    let h = js.headers().clone();
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["content-encoding"], "gzip");
    assert!(h.contains_key("content-security-policy"));
    let gz = js.bytes().await.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
    // Without gzip, the plain bytes; with the entity tag, 304 and no body.
    let plain = http.get(format!("{}{asset}", n.url)).send().await.unwrap();
    assert!(!plain.headers().contains_key("content-encoding"));
    let etag = plain.headers()["etag"].clone();
    assert!(plain.bytes().await.unwrap().len() > gz.len());
    let again = http
        .get(format!("{}{asset}", n.url))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

fn ws_with_protocols(
    url: String,
    protocols: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_pass_the_key_as_a_websocket_subprotocol() {
    let n = start().await;
    let op = n.keys["operator"].clone();
    let (_ws, resp) = tokio_tungstenite::connect_async(ws_with_protocols(
        n.ws_url("/v1/events"),
        &format!("aura.v1, aura.key.{op}"),
    ))
    .await
    .unwrap();
    // The node picks `aura.v1` and never echoes the key.
    assert_eq!(resp.headers()["sec-websocket-protocol"], "aura.v1");
    for bad in [
        "aura.v1, aura.key.aura_nope_nope".to_owned(),
        "aura.v1".to_owned(),
        format!("aura.v1, aura.key.{}x", &op[..op.len() - 1]),
    ] {
        let err = tokio_tungstenite::connect_async(ws_with_protocols(n.ws_url("/v1/events"), &bad))
            .await
            .unwrap_err();
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401, "{bad}"),
            e => panic!("{bad}: {e}"),
        }
    }
    // The subprotocol carries a key only on a WebSocket handshake, nowhere else.
    let plain = reqwest::Client::new()
        .get(format!("{}/v1/agents", n.url))
        .header("sec-websocket-protocol", format!("aura.v1, aura.key.{op}"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_endpoint_reports_cpu_and_memory() {
    let n = start().await;
    let r = n.call("GET", "/v1/system", Some("operator"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["cpu"]["cores"].as_u64().unwrap() >= 1,
        "{:?}",
        r.body
    );
    let util = r.body["cpu"]["utilization_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&util), "{util}");
    let total = r.body["memory"]["total_bytes"].as_u64().unwrap();
    let used = r.body["memory"]["used_bytes"].as_u64().unwrap();
    assert!(total > 0 && used <= total, "{:?}", r.body);
    assert!(r.body["process_rss_bytes"].as_u64().unwrap() > 0);
    assert!(r.body["gpus"].is_array());
    // A second reading reports the use since the first.
    let again = n.call("GET", "/v1/system", Some("agent_a"), None).await;
    assert_eq!(again.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_listed_with_their_totals() {
    let n = start().await;
    let r = n.call("GET", "/v1/receipts", Some("operator"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // This node serves no model, so it has no receipts, and says so in the same shape.
    assert_eq!(r.body["receipts"], serde_json::json!([]));
    assert_eq!(r.body["totals"], serde_json::json!([]));
    assert_eq!(r.body["licenses"], serde_json::json!([]));
}
