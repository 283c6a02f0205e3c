//! The HTTP API through real sockets: who may call what, how bad input is answered, limits,
//! many agents messaging at once, and the resumable event stream.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use support::{assert_error_shape, start, start_configured, start_with};

/// Every endpoint × every role: the status each caller gets. Agent-scoped and
/// namespace-scoped keys see only their namespace; what they may not see does not exist
/// for them (404), what they may see but not do is forbidden (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() {
    let n = start().await;
    let a = n.agent_a.to_string();
    let b = n.agent_b.to_string();
    let new_agent = json!({"name": "x", "level": "L1", "namespace": "team-a"});
    let new_agent_b = json!({"name": "x", "level": "L1", "namespace": "team-b"});
    let message = json!({"body": {"hello": 1}});
    let mission =
        json!({"agent": a, "objective": "read", "tools": ["fs.read"], "timeout_secs": 600});
    // Two missions of agent a, held in `escalated` by the test policy: one to read and
    // answer, one to cancel.
    let held = n
        .call(
            "POST",
            "/v1/missions",
            Some("operator"),
            Some(mission.clone()),
        )
        .await;
    assert_eq!(held.status, 201, "{:?}", held.body);
    assert_eq!(held.body["state"], "escalated", "{:?}", held.body);
    let m1 = held.body["id"].as_str().unwrap().to_owned();
    let request: aura_core::hash::Hash = held.body["escalation"]["request"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let doomed = n
        .call(
            "POST",
            "/v1/missions",
            Some("operator"),
            Some(mission.clone()),
        )
        .await;
    let m2 = doomed.body["id"].as_str().unwrap().to_owned();
    let answer = support::approval(&n, &m1, request);
    let operator = json!({"name": "carol", "public_key": support::person_key(3).public_key().to_hex(), "level": "L3", "namespace": "team-a"});
    // Schedules of agent a, created paused (and due only daily) so none fires here.
    let schedule = json!({"agent": a, "name": "matrix", "paused": true,
        "template": {"objective": "read", "tools": ["fs.read"], "timeout_secs": 600},
        "trigger": {"kind": "every", "secs": 86400}});
    let mut schedule_ids = Vec::new();
    for _ in 0..2 {
        let r = n
            .call(
                "POST",
                "/v1/schedules",
                Some("operator"),
                Some(schedule.clone()),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        schedule_ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let (s1, s2) = (schedule_ids[0].clone(), schedule_ids[1].clone());
    // Deleting: an approver may see but not change it, another namespace's operator does
    // not see it, the agent's own key may; then it is gone for everyone.
    for (role, want) in [
        ("approver_a", 403),
        ("operator_b", 404),
        ("agent_a", 200),
        ("operator", 404),
    ] {
        let r = n
            .call("DELETE", &format!("/v1/schedules/{s2}"), Some(role), None)
            .await;
        assert_eq!(r.status, want, "DELETE schedule as {role}: {:?}", r.body);
    }
    // (method, path, body, [operator, approver_a, agent_a, operator_b, none])
    let mut table: Vec<(&str, String, Option<Value>, [u16; 5])> = vec![
        ("GET", "/health".into(), None, [200, 200, 200, 200, 200]),
        (
            "GET",
            "/openapi.json".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        (
            "POST",
            "/v1/agents".into(),
            Some(new_agent.clone()),
            [201, 403, 403, 403, 401],
        ),
        (
            "POST",
            "/v1/agents".into(),
            Some(new_agent_b),
            [201, 403, 403, 201, 401],
        ),
        ("GET", "/v1/agents".into(), None, [200, 200, 200, 200, 401]),
        (
            "GET",
            format!("/v1/agents/{a}"),
            None,
            [200, 200, 200, 404, 401],
        ),
        (
            "GET",
            format!("/v1/agents/{b}"),
            None,
            [200, 404, 404, 200, 401],
        ),
        (
            "POST",
            format!("/v1/agents/{a}/messages"),
            Some(message.clone()),
            [201, 403, 201, 404, 401],
        ),
        (
            "POST",
            format!("/v1/agents/{b}/messages"),
            Some(message.clone()),
            [201, 404, 404, 201, 401],
        ),
        (
            "GET",
            format!("/v1/agents/{a}/record"),
            None,
            [200, 200, 200, 404, 401],
        ),
        (
            "GET",
            format!("/v1/agents/{b}/record"),
            None,
            [200, 404, 404, 200, 401],
        ),
        (
            "GET",
            "/v1/ledger/checkpoint".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            "GET",
            format!("/v1/ledger/proof/inclusion?agent={a}&seq=1"),
            None,
            [200, 200, 200, 404, 401],
        ),
        (
            "GET",
            format!("/v1/ledger/proof/inclusion?agent={b}&seq=1"),
            None,
            [200, 404, 404, 200, 401],
        ),
        (
            "GET",
            "/v1/ledger/proof/consistency?old=1".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            "POST",
            "/v1/ledger/verify".into(),
            None,
            [200, 403, 403, 200, 401],
        ),
        (
            "POST",
            "/v1/missions".into(),
            Some(mission.clone()),
            [201, 403, 201, 404, 401],
        ),
        (
            "GET",
            "/v1/missions".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            "GET",
            format!("/v1/missions/{m1}"),
            None,
            [200, 200, 200, 404, 401],
        ),
        (
            "GET",
            format!("/v1/missions/{m1}/replay"),
            None,
            [200, 200, 200, 404, 401],
        ),
        // Operator controls, on the escalated m1: paused, nothing to retry, resumed.
        (
            "POST",
            format!("/v1/missions/{m1}/pause"),
            Some(json!({"reason": "matrix"})),
            [200, 403, 403, 404, 401],
        ),
        (
            "POST",
            format!("/v1/missions/{m1}/retry"),
            None,
            [409, 403, 403, 404, 401],
        ),
        (
            "POST",
            format!("/v1/missions/{m1}/resume"),
            None,
            [200, 403, 403, 404, 401],
        ),
        (
            "GET",
            "/v1/missions/stuck?escalated_for_secs=0".into(),
            None,
            [200, 403, 403, 200, 401],
        ),
        (
            "GET",
            "/v1/approvals".into(),
            None,
            [200, 200, 403, 200, 401],
        ),
        // The operator's answer is accepted; then the mission is no longer waiting.
        (
            "POST",
            format!("/v1/approvals/{m1}"),
            Some(answer),
            [200, 409, 403, 404, 401],
        ),
        (
            "POST",
            format!("/v1/missions/{m2}/cancel"),
            Some(json!({"reason": "matrix"})),
            [200, 403, 409, 404, 401],
        ),
        // Pruning is the whole node's: operators of every namespace only.
        (
            "POST",
            "/v1/missions/prune".into(),
            Some(json!({"older_than_secs": 86400, "dry_run": true})),
            [200, 403, 403, 403, 401],
        ),
        (
            "POST",
            "/v1/credentials/operators".into(),
            Some(operator),
            [201, 403, 403, 403, 401],
        ),
        // Inference is for operators and agents; this node has no model host, so those
        // who may ask are told it serves no models.
        ("GET", "/v1/models".into(), None, [503, 403, 503, 503, 401]),
        (
            "GET",
            "/v1/models/smollm2".into(),
            None,
            [503, 403, 503, 503, 401],
        ),
        (
            "POST",
            "/v1/chat/completions".into(),
            Some(json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]})),
            [503, 403, 503, 503, 401],
        ),
        (
            "POST",
            "/v1/completions".into(),
            Some(json!({"model": "smollm2", "prompt": "hi"})),
            [503, 403, 503, 503, 401],
        ),
        (
            "POST",
            "/v1/embeddings".into(),
            Some(json!({"model": "minilm", "input": "hi"})),
            [503, 403, 503, 503, 401],
        ),
        // Cells are for operators only; this node runs none.
        ("GET", "/v1/cells".into(), None, [503, 403, 403, 503, 401]),
        (
            "POST",
            "/v1/cells".into(),
            Some(json!({"name": "c"})),
            [503, 403, 403, 503, 401],
        ),
        ("GET", "/v1/cells/c".into(), None, [503, 403, 403, 503, 401]),
        (
            "DELETE",
            "/v1/cells/c".into(),
            None,
            [503, 403, 403, 503, 401],
        ),
        (
            "POST",
            "/v1/cells/c/executables".into(),
            Some(json!({"name": "e", "command": {"shell": "true"}})),
            [503, 403, 403, 503, 401],
        ),
        (
            "GET",
            "/v1/cells/c/executables/e".into(),
            None,
            [503, 403, 403, 503, 401],
        ),
        (
            "POST",
            "/v1/cells/c/executables/e/stop".into(),
            None,
            [503, 403, 403, 503, 401],
        ),
        (
            "POST",
            "/v1/cells/c/executables/e/wait".into(),
            None,
            [503, 403, 403, 503, 401],
        ),
        (
            "GET",
            "/v1/cells/c/executables/e/logs".into(),
            None,
            [503, 403, 403, 503, 401],
        ),
    ];
    // Schedules follow missions: operators and the agent's own key change them, whoever
    // sees the namespace reads them.
    table.extend([
        (
            "POST",
            "/v1/schedules".into(),
            Some(schedule.clone()),
            [201, 403, 201, 404, 401],
        ),
        (
            "GET",
            "/v1/schedules".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            "GET",
            format!("/v1/schedules/{s1}"),
            None,
            [200, 200, 200, 404, 401],
        ),
        (
            "POST",
            format!("/v1/schedules/{s1}/resume"),
            None,
            [200, 403, 200, 404, 401],
        ),
        (
            "POST",
            format!("/v1/schedules/{s1}/pause"),
            None,
            [200, 403, 200, 404, 401],
        ),
        (
            "DELETE",
            format!("/v1/schedules/{s1}"),
            None,
            [200, 404, 404, 404, 401],
        ),
    ]);
    table.extend([
        // The machine's load, for the studio's monitor: those who may run work on it.
        ("GET", "/v1/system".into(), None, [200, 403, 200, 200, 401]),
        // Receipts are the node's own stream: operators of every namespace only.
        (
            "GET",
            "/v1/receipts".into(),
            None,
            [200, 403, 403, 403, 401],
        ),
        // Metrics are the whole node's, as receipts are: operators of every namespace.
        ("GET", "/metrics".into(), None, [200, 403, 403, 403, 401]),
        // Speech is for those who may run models; this node has no espeak-ng, and says
        // so only to those (tests/speech.rs drives a node that speaks).
        (
            "POST",
            "/v1/audio/speech".into(),
            Some(json!({"input": "hi", "voice": "alloy"})),
            [503, 403, 503, 503, 401],
        ),
        // Images are for those who may run models; this node has no model host, and
        // says so only to those (tests/images.rs drives a node with an image model).
        (
            "POST",
            "/v1/images/generations".into(),
            Some(json!({"prompt": "a fox"})),
            [503, 403, 503, 503, 401],
        ),
        (
            "POST",
            "/v1/images/edits".into(),
            Some(json!({"prompt": "a fox", "image": "iVBORw0KGgo="})),
            [503, 403, 503, 503, 401],
        ),
        (
            "POST",
            "/sdapi/v1/txt2img".into(),
            Some(json!({"prompt": "a fox"})),
            [503, 403, 503, 503, 401],
        ),
        (
            "POST",
            "/sdapi/v1/img2img".into(),
            Some(json!({"prompt": "a fox", "init_images": ["iVBORw0KGgo="]})),
            [503, 403, 503, 503, 401],
        ),
        // The progress socket checks the role before the upgrade: a plain GET is 400
        // (`websocket_required`) for those who may generate, 403 for the rest.
        (
            "GET",
            "/v1/images/ws".into(),
            None,
            [400, 403, 400, 400, 401],
        ),
        // Memory is for operators, in the namespaces their key allows; this node serves
        // none, and says so only to those (crates/aura-cli/tests/memory.rs drives one).
        (
            "GET",
            "/v1/memory/team-a/shared:handbook".into(),
            None,
            [503, 403, 403, 403, 401],
        ),
        (
            "POST",
            "/v1/memory/team-a/shared:handbook".into(),
            Some(json!({"text": "the sky is blue"})),
            [503, 403, 403, 403, 401],
        ),
        (
            "POST",
            "/v1/memory/team-a/shared:handbook/search".into(),
            Some(json!({"query": "sky"})),
            [503, 403, 403, 403, 401],
        ),
        (
            "POST",
            "/v1/memory/team-a/shared:handbook/forget".into(),
            Some(json!({"id": "m-1"})),
            [503, 403, 403, 403, 401],
        ),
        // Recipes are read from the agent's record, so they need no memory model:
        // operators of the namespace read them.
        (
            "GET",
            format!("/v1/memory/team-a/recipes/{a}"),
            None,
            [200, 403, 403, 403, 401],
        ),
        // The web UI's files hold no data and no secret: served to anyone, like
        // /openapi.json, so a browser can load the page that asks for a key. Whether or
        // not this build embeds the UI, `/` answers a page and unknown files are 404.
        ("GET", "/".into(), None, [200, 200, 200, 200, 200]),
        (
            "GET",
            "/assets/no-such-file.js".into(),
            None,
            [404, 404, 404, 404, 404],
        ),
    ]);
    let roles = ["operator", "approver_a", "agent_a", "operator_b", ""];
    for (method, path, body, expected) in &table {
        for (role, want) in roles.iter().zip(expected) {
            let key = (!role.is_empty()).then_some(*role);
            let r = n.call(method, path, key, body.clone()).await;
            assert_eq!(r.status, *want, "{method} {path} as {role:?}: {:?}", r.body);
            if r.status >= 400 {
                assert_error_shape(&r);
            }
        }
    }
    // The table covers every route the node documents (the event stream is a WebSocket:
    // its matrix is `event_stream_authorization_matrix`).
    let doc = n.call("GET", "/openapi.json", None, None).await.body;
    for path in doc["paths"].as_object().unwrap().keys() {
        let covered = path == "/v1/events"
            || table.iter().any(|(_, p, _, _)| {
                let p = p.split('?').next().unwrap();
                p == path || path.contains('{') && p.starts_with(&path[..path.find('{').unwrap()])
            });
        assert!(covered, "{path} is not in the authorization table");
    }
}

/// The cell API on a node that runs cells (needs root), per role, with host paths: an
/// operator for all namespaces, an operator scoped to team-b, an approver and an agent of
/// team-a, and no key. Workspaces are names of the caller's namespace, never host paths;
/// binds need an operator for all namespaces and a source in the allowlist, and never
/// reach the node's home; a scoped operator sees only its namespace's cells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_cell_api_authorization_matrix() {
    let n = support::start_with_cells(true).await;
    let home = n.dir.path().to_owned();
    let host = n.host.as_ref().unwrap().path().to_owned();
    let bind = |p: &std::path::Path| json!([{"source": p, "target": "/data"}]);
    let roles = ["operator", "approver_a", "agent_a", "operator_b", ""];
    // (what, the request without its name, [operator, approver_a, agent_a, operator_b, none])
    let table: Vec<(&str, Value, [u16; 5])> = vec![
        (
            "a workspace by name",
            json!({"workspace": "ws"}),
            [201, 403, 403, 201, 401],
        ),
        (
            "the node's home as workspace",
            json!({"workspace": home}),
            [400, 403, 403, 400, 401],
        ),
        (
            "the keys as workspace",
            json!({"workspace": home.join("keys")}),
            [400, 403, 403, 400, 401],
        ),
        (
            "a path as workspace name",
            json!({"workspace": "../../keys"}),
            [400, 403, 403, 400, 401],
        ),
        (
            "the home as a bind",
            json!({"binds": bind(&home)}),
            [403, 403, 403, 403, 401],
        ),
        (
            "the keys as a bind",
            json!({"binds": bind(&home.join("keys"))}),
            [403, 403, 403, 403, 401],
        ),
        (
            "/ as a bind",
            json!({"binds": bind(std::path::Path::new("/"))}),
            [403, 403, 403, 403, 401],
        ),
        (
            "an allowed bind",
            json!({"binds": bind(&host.join("allowed/data"))}),
            [201, 403, 403, 403, 401],
        ),
        (
            "a bind outside the allowlist",
            json!({"binds": bind(&host.join("elsewhere"))}),
            [403, 403, 403, 403, 401],
        ),
        (
            "a link from the allowlist into the home",
            json!({"binds": bind(&host.join("allowed/home-link/keys"))}),
            [403, 403, 403, 403, 401],
        ),
        (
            "a bind with ..",
            json!({"binds": bind(&host.join("allowed/data/../../elsewhere"))}),
            [400, 403, 403, 403, 401],
        ),
        (
            "another team's namespace",
            json!({"namespace": "team-a", "workspace": "ws"}),
            [201, 403, 403, 403, 401],
        ),
        (
            "its own namespace",
            json!({"namespace": "team-b"}),
            [201, 403, 403, 201, 401],
        ),
        (
            "a bad namespace",
            json!({"namespace": "Team A"}),
            [400, 403, 403, 400, 401],
        ),
    ];
    for (i, (what, body, expected)) in table.iter().enumerate() {
        for (role, want) in roles.iter().zip(expected) {
            let mut body = body.clone();
            body["name"] = json!(
                format!("c{i}-{}", if role.is_empty() { "none" } else { role }).replace('_', "-")
            );
            let key = (!role.is_empty()).then_some(*role);
            let r = n.call("POST", "/v1/cells", key, Some(body)).await;
            assert_eq!(r.status, *want, "{what} as {role:?}: {:?}", r.body);
            if r.status >= 400 {
                assert_error_shape(&r);
            }
        }
    }
    // Nothing reached the home, and the workspaces are where the node keeps them, private
    // to the cells' root.
    let base = n.cells.as_ref().unwrap().options().id_base;
    {
        use std::os::unix::fs::MetadataExt as _;
        for ns in ["default", "team-b", "team-a"] {
            let ws = home.join("workspaces").join(ns).join("ws");
            let m = std::fs::metadata(&ws).unwrap();
            assert_eq!(
                (m.uid(), m.mode() & 0o777),
                (base, 0o700),
                "{}",
                ws.display()
            );
        }
    }

    // Each cell is seen and touched only by who may: c0-operator is of `default`,
    // c0-operator-b of team-b.
    let exe = |name: &str| json!({"name": name, "command": {"shell": "id -u > /workspace/who; cat /workspace/who"}});
    for (cell, expected) in [
        ("c0-operator", [200, 403, 403, 404, 401]),
        ("c0-operator-b", [200, 403, 403, 200, 401]),
    ] {
        for (role, want) in roles.iter().zip(expected) {
            let key = (!role.is_empty()).then_some(*role);
            let e = format!("e-{}", if role.is_empty() { "none" } else { role }).replace('_', "-");
            let created = if want == 200 { 201 } else { want };
            for (method, path, body, status) in [
                ("GET", format!("/v1/cells/{cell}"), None, want),
                (
                    "POST",
                    format!("/v1/cells/{cell}/executables"),
                    Some(exe(&e)),
                    created,
                ),
                (
                    "POST",
                    format!("/v1/cells/{cell}/executables/{e}/wait?timeout_ms=10000"),
                    None,
                    want,
                ),
                (
                    "GET",
                    format!("/v1/cells/{cell}/executables/{e}"),
                    None,
                    want,
                ),
                (
                    "GET",
                    format!("/v1/cells/{cell}/executables/{e}/logs"),
                    None,
                    want,
                ),
                (
                    "POST",
                    format!("/v1/cells/{cell}/executables/{e}/stop"),
                    None,
                    want,
                ),
            ] {
                let r = n.call(method, &path, key, body).await;
                assert_eq!(
                    r.status, status,
                    "{method} {path} as {role:?}: {:?}",
                    r.body
                );
            }
        }
        // A child lives in its parent's namespace; who cannot see the parent cannot nest.
        for (role, want) in roles.iter().zip(expected) {
            let key = (!role.is_empty()).then_some(*role);
            let kid = format!("{cell}/kid-{}", if role.is_empty() { "none" } else { role })
                .replace('_', "-");
            let r = n
                .call("POST", "/v1/cells", key, Some(json!({"name": kid})))
                .await;
            let want = if want == 200 { 201 } else { want };
            assert_eq!(r.status, want, "nest in {cell} as {role:?}: {:?}", r.body);
        }
    }
    // What a cell's root wrote in its workspace is the cells' root's, not the host's.
    {
        use std::os::unix::fs::MetadataExt as _;
        let who = home.join("workspaces/default/ws/who");
        assert_eq!(std::fs::read_to_string(&who).unwrap().trim(), "0");
        assert_eq!(std::fs::metadata(&who).unwrap().uid(), base);
    }
    // The tree a scoped operator sees holds its namespace's cells only.
    let listed = n.call("GET", "/v1/cells", Some("operator_b"), None).await;
    assert_eq!(listed.status, 200);
    let cells = listed.body["cells"].as_array().unwrap();
    assert!(!cells.is_empty());
    for c in cells {
        assert_eq!(c["cell"]["owner"], "team-b", "{c}");
    }
    let all = n.call("GET", "/v1/cells", Some("operator"), None).await;
    assert!(all.body["cells"].as_array().unwrap().len() > cells.len());
    for (cell, expected) in [
        ("c0-operator", [204, 403, 403, 404, 401]),
        ("c12-operator-b", [404, 403, 403, 204, 401]),
    ] {
        // The last one allowed frees it; later callers find nothing.
        for (role, want) in roles.iter().zip(expected).rev() {
            let key = (!role.is_empty()).then_some(*role);
            let r = n
                .call("DELETE", &format!("/v1/cells/{cell}"), key, None)
                .await;
            assert_eq!(r.status, want, "DELETE {cell} as {role:?}: {:?}", r.body);
        }
    }
    n.cells.as_ref().unwrap().shutdown().await;

    // Without keys, no local process gets cells at all.
    let keyless = support::start_with_cells(false).await;
    for (method, path, body) in [
        ("GET", "/v1/cells", None),
        (
            "POST",
            "/v1/cells",
            Some(json!({"name": "c", "workspace": "ws"})),
        ),
    ] {
        let r = keyless.call(method, path, None, body).await;
        assert_eq!(r.status, 403, "{method} {path} without keys: {:?}", r.body);
    }
    keyless.cells.as_ref().unwrap().shutdown().await;
}

/// A namespace-scoped operator key got host root through `/v1/cells`: it allocated a cell
/// whose workspace was the node's home (`{"name":"c2","workspace":"<home>"}` answered
/// 201), and an executable in it read `keys/node.key` and wrote into team-b's workspace
/// as root. The route checked the role only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_a_namespace_scoped_operator_cannot_mount_the_node_home_through_cells() {
    let n = support::start_with_cells(true).await;
    let home = n.dir.path().to_owned();
    for body in [
        json!({"name": "c2", "workspace": home}),
        json!({"name": "c2", "workspace": home.join("keys")}),
        json!({"name": "c2", "workspace": home.join("workspaces/team-a")}),
        json!({"name": "c2", "binds": [{"source": home, "target": "/data"}]}),
    ] {
        let r = n
            .call("POST", "/v1/cells", Some("operator_b"), Some(body.clone()))
            .await;
        assert!(
            r.status == 400 || r.status == 403,
            "{body}: {} {:?}",
            r.status,
            r.body
        );
        assert_error_shape(&r);
    }
    let listed = n.call("GET", "/v1/cells", Some("operator"), None).await;
    assert_eq!(listed.body["cells"], json!([]), "a cell was allocated");
    n.cells.as_ref().unwrap().shutdown().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text event of `ws`, or `None` if the server closed the socket (with the close
/// code it gave, if any) within `secs`.
async fn next_event(ws: &mut Socket, secs: u64) -> Result<Value, Option<u16>> {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(secs), ws.next())
            .await
            .expect("nothing arrived in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            None | Some(Err(_)) => return Err(None),
            Some(Ok(_)) => {}
        }
    }
}

/// The event stream's matrix: each role sees exactly the entries and deltas of the agents
/// whose records it may read over HTTP (per role, per namespace), and a socket whose key is
/// revoked is closed.
///
/// Regression: a team-a operator key received team-b mission deltas (deltas went to every
/// operator); an agent key received another agent's record entries (the stream checked the
/// namespace only, while `GET /v1/agents/{id}/record` answers 403); and a socket opened
/// before `aura apikey revoke` kept streaming afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_authorization_matrix() {
    let n = start().await;
    let a2 = n
        .engine
        .create_agent(aura_engine::NewAgent {
            name: "a2".into(),
            level: aura_identity::Level::L2,
            namespace: aura_identity::Namespace::new("team-a").unwrap(),
            public_key: None,
        })
        .await
        .unwrap()
        .id;
    let agents = [("a", n.agent_a), ("a2", a2), ("b", n.agent_b)];
    // One held mission per agent, for deltas to belong to.
    let mut missions = Vec::new();
    for (_, agent) in agents {
        let m = n
            .call(
                "POST",
                "/v1/missions",
                Some("operator"),
                Some(json!({"agent": agent.to_string(), "objective": "x", "tools": ["fs.read"], "timeout_secs": 600})),
            )
            .await;
        assert_eq!(m.status, 201, "{:?}", m.body);
        missions.push(
            m.body["id"]
                .as_str()
                .unwrap()
                .parse::<aura_core::MissionId>()
                .unwrap(),
        );
    }
    // Which agents' records each key may read (as the HTTP matrix has it).
    let roles: [(&str, &[&str]); 4] = [
        ("operator", &["a", "a2", "b"]),
        ("approver_a", &["a", "a2"]),
        ("agent_a", &["a"]),
        ("operator_b", &["b"]),
    ];
    let mut sockets = Vec::new();
    for (role, _) in roles {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(
            n.ws_url("/v1/events?from=0"),
            &n.keys[role],
        ))
        .await
        .unwrap();
        // The first event (a backfilled entry) shows the socket is subscribed.
        next_event(&mut ws, 10).await.unwrap();
        sockets.push(ws);
    }
    for (i, (name, _)) in agents.iter().enumerate() {
        n.engine.events().publish(aura_engine::StreamEvent::Delta {
            mission: missions[i],
            text: format!("delta-{name}"),
        });
    }
    for (name, agent) in agents {
        let r = n
            .call(
                "POST",
                &format!("/v1/agents/{agent}/messages"),
                Some("operator"),
                Some(json!({"body": format!("end-{name}")})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let name_of = |id: &str| {
        agents
            .iter()
            .find(|(_, a)| a.to_string() == id)
            .map_or_else(|| format!("other {id}"), |(n, _)| (*n).to_owned())
    };
    for ((role, readable), ws) in roles.iter().zip(sockets.iter_mut()) {
        let mut entries_of = std::collections::BTreeSet::new();
        let mut deltas = std::collections::BTreeSet::new();
        let mut ends = 0;
        while ends < readable.len() {
            let e = next_event(ws, 10)
                .await
                .unwrap_or_else(|c| panic!("{role}'s socket closed ({c:?})"));
            match e["type"].as_str().unwrap() {
                "entry" => {
                    entries_of.insert(name_of(e["agent"].as_str().unwrap()));
                    if e["body"]["body"]
                        .as_str()
                        .is_some_and(|b| b.starts_with("end-"))
                    {
                        ends += 1;
                    }
                }
                "delta" => {
                    deltas.insert(e["text"].as_str().unwrap().to_owned());
                }
                other => panic!("{role}: unexpected {other}: {e}"),
            }
        }
        let want: std::collections::BTreeSet<String> =
            readable.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(entries_of, want, "{role} saw the entries of");
        let want_deltas: std::collections::BTreeSet<String> =
            readable.iter().map(|s| format!("delta-{s}")).collect();
        assert_eq!(deltas, want_deltas, "{role} saw the deltas");
    }

    // Revoking agent_a's key closes its socket within about a second of the key file
    // changing; the other sockets stream on.
    n.revoke("agent_a");
    let revoked_at = std::time::Instant::now();
    let agent_socket = &mut sockets[2];
    n.call(
        "POST",
        &format!("/v1/agents/{}/messages", n.agent_a),
        Some("operator"),
        Some(json!({"body": "after-revocation"})),
    )
    .await;
    loop {
        match next_event(agent_socket, 5).await {
            Ok(e) => assert!(
                e["body"]["body"] != "after-revocation" || revoked_at.elapsed().as_millis() < 1500,
                "the revoked key's socket streamed on: {e}"
            ),
            Err(code) => {
                assert_eq!(code, Some(1008));
                break;
            }
        }
    }
    assert!(
        revoked_at.elapsed() < std::time::Duration::from_secs(3),
        "closed only after {:?}",
        revoked_at.elapsed()
    );
    let e = next_event(&mut sockets[0], 10).await.unwrap();
    assert_eq!(e["body"]["body"], "after-revocation", "{e}");
    // And the revoked key cannot open another.
    assert!(
        tokio_tungstenite::connect_async(ws_request(n.ws_url("/v1/events"), &n.keys["agent_a"]))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_key_is_refused() {
    let n = start().await;
    for key in ["aura_nope_nope", "Bearer", "not-a-key"] {
        let r = n.call("GET", "/v1/agents", Some(key), None).await;
        assert_eq!(r.status, 401);
        assert_error_shape(&r);
    }
    // A real key id with a wrong secret.
    let op = n.keys["operator"].clone();
    let forged = format!("{}x", &op[..op.len() - 1]);
    assert_eq!(
        n.call("GET", "/v1/agents", Some(&forged), None)
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors_and_changes_nothing() {
    let n = start_with(
        aura_node::Limits {
            body_bytes: 4096,
            ..Default::default()
        },
        true,
    )
    .await;
    let size_before = n.call("GET", "/health", None, None).await.body["tree_size"].clone();
    let op = n.keys["operator"].clone();
    let raw = |body: &'static str, ctype: &'static str| {
        n.http
            .post(format!("{}/v1/agents", n.url))
            .bearer_auth(&op)
            .header("content-type", ctype)
            .body(body)
    };
    for (body, ctype, status) in [
        ("{not json", "application/json", 400),
        (
            r#"{"name":"x","level":"L1","namespace":"team-a","admin":true}"#,
            "application/json",
            400,
        ),
        (
            r#"{"name":"x","level":"L9","namespace":"team-a"}"#,
            "application/json",
            400,
        ),
        (
            r#"{"name":"x","level":"L1","namespace":"Team A"}"#,
            "application/json",
            400,
        ),
        (r#"{"name":"x","level":"L1"}"#, "application/json", 400),
        (
            r#"{"name":"","level":"L1","namespace":"team-a"}"#,
            "application/json",
            400,
        ),
        (
            r#"{"name":"x","level":"L1","namespace":"team-a"}"#,
            "text/plain",
            400,
        ),
    ] {
        let resp = raw(body, ctype).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let big = format!(r#"{{"body":"{}"}}"#, "x".repeat(10_000));
    let resp = n
        .http
        .post(format!("{}/v1/agents/{}/messages", n.url, n.agent_a))
        .bearer_auth(&op)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    for path in [
        "/v1/agents/nope",
        "/v1/agents/agent_00000000000000000000000000/record",
        "/v1/nothing",
    ] {
        let r = n.call("GET", path, Some("operator"), None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_error_shape(&r);
    }
    assert_eq!(
        n.call("GET", "/health", None, None).await.body["tree_size"],
        size_before
    );
}

/// Schedules that could never run are refused with a 400 that says why, and nothing is
/// created: a bad cron expression, an unknown time zone, a zero interval, an oversized
/// template, an unknown tool, an unknown missed-run policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_refuse_bad_input_with_clear_400s() {
    let n = start().await;
    let a = n.agent_a.to_string();
    let template = json!({"objective": "read", "tools": ["fs.read"], "timeout_secs": 600});
    let with = |trigger: Value, template: Value| json!({"agent": a, "template": template, "trigger": trigger, "paused": true});
    let cron = |expr: &str, zone: &str| json!({"kind": "cron", "expr": expr, "zone": zone});
    let cases = [
        (
            with(cron("61 * * * *", "UTC"), template.clone()),
            "outside 0-59",
        ),
        (
            with(cron("0 9 * *", "UTC"), template.clone()),
            "has 4 fields",
        ),
        (
            with(cron("0 9 30 2 *", "UTC"), template.clone()),
            "no month",
        ),
        (
            with(cron("0 9 * * MON-FRI", "Europe/Atlantis"), template.clone()),
            "not a time zone",
        ),
        (
            with(json!({"kind": "every", "secs": 0}), template.clone()),
            "between 1 s",
        ),
        (
            with(
                json!({"kind": "every", "secs": 60}),
                json!({"objective": "x".repeat(70_000), "tools": ["fs.read"], "timeout_secs": 600}),
            ),
            "at most 65536",
        ),
        (
            with(
                json!({"kind": "every", "secs": 60}),
                json!({"objective": "x", "tools": ["fs.teleport"], "timeout_secs": 600}),
            ),
            "no tool `fs.teleport`",
        ),
        (
            json!({"agent": a, "template": template, "trigger": {"kind": "every", "secs": 60}, "missed": "sometimes"}),
            "",
        ),
    ];
    for (body, says) in cases {
        let r = n
            .call(
                "POST",
                "/v1/schedules",
                Some("operator"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_error_shape(&r);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
    let listed = n.call("GET", "/v1/schedules", Some("operator"), None).await;
    assert_eq!(listed.body, json!([]), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_over_their_rate_are_told_when_to_come_back() {
    let n = start_with(
        aura_node::Limits {
            requests_per_second: 1,
            burst: 5,
            ..Default::default()
        },
        true,
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let resp = n
            .http
            .get(format!("{}/v1/agents", n.url))
            .bearer_auth(&n.keys["operator"])
            .send()
            .await
            .unwrap();
        statuses.push((
            resp.status().as_u16(),
            resp.headers().get("retry-after").cloned(),
        ));
    }
    assert!(statuses[..5].iter().all(|(s, _)| *s == 200), "{statuses:?}");
    let (status, retry) = &statuses[7];
    assert_eq!(*status, 429);
    assert!(retry.is_some());
    // Another key has its own bucket.
    assert_eq!(
        n.call("GET", "/v1/agents", Some("operator_b"), None)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_only_loopback_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let n = start_with(aura_node::Limits::default(), false).await;
    assert_eq!(n.call("GET", "/v1/agents", None, None).await.status, 200);
    // Cells can bind host paths: without keys, no local process gets that power.
    let cells = n.call("GET", "/v1/cells", None, None).await;
    assert_eq!(cells.status, 403, "{:?}", cells.body);
    let err = aura_node::serve(
        aura_node::Options {
            listen: "0.0.0.0:0".parse().unwrap(),
            keys_file: dir.path().join("none.json"),
            limits: Default::default(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            models: None,
            cells: None,
            cell_access: Default::default(),
            speech: None,
            memory: None,
            aliases: None,
        },
        n.engine.clone(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, aura_node::ServeError::NotLoopback(_)),
        "{err}"
    );
}

/// 100 agents × 20 messages through the HTTP API at once: every message recorded, each
/// agent's record gap-free and in the order it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_agents_twenty_messages_each() {
    let n = std::sync::Arc::new(
        start_with(
            aura_node::Limits {
                requests_per_second: 100_000,
                burst: 100_000,
                ..Default::default()
            },
            true,
        )
        .await,
    );
    let mut ids = Vec::new();
    for i in 0..100 {
        let r = n
            .call(
                "POST",
                "/v1/agents",
                Some("operator"),
                Some(json!({"name": format!("agent-{i}"), "level": "L1", "namespace": "team-a"})),
            )
            .await;
        assert_eq!(r.status, 201);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let n = n.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..20 {
                let r = n
                    .call(
                        "POST",
                        &format!("/v1/agents/{id}/messages"),
                        Some("operator"),
                        Some(json!({"body": {"k": k}})),
                    )
                    .await;
                assert_eq!(r.status, 201, "{:?}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for id in ids {
        let r = n
            .call(
                "GET",
                &format!("/v1/agents/{id}/record?limit=1000"),
                Some("operator"),
                None,
            )
            .await;
        let entries = r.body["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 21, "agent.created + 20 messages");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e["seq"], i as u64 + 1, "gap in {id}");
        }
        let ks: Vec<u64> = entries[1..]
            .iter()
            .map(|e| e["body"]["body"]["k"].as_u64().unwrap())
            .collect();
        assert_eq!(ks, (0..20).collect::<Vec<u64>>(), "{id} out of order");
    }
    assert_eq!(
        n.call("POST", "/v1/ledger/verify", Some("operator"), None)
            .await
            .body["ok"],
        true
    );
}

async fn next_entries(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    count: usize,
) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < count {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "entry" {
                out.push(v);
            }
        }
    }
    out
}

fn ws_request(
    url: String,
    key: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_from_any_sequence_number() {
    let n = start().await;
    for k in 0..5 {
        n.call(
            "POST",
            &format!("/v1/agents/{}/messages", n.agent_a),
            Some("operator"),
            Some(json!({"body": k})),
        )
        .await;
    }
    // From the start: every entry, in ledger order.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(
        n.ws_url("/v1/events?from=0"),
        &n.keys["operator"],
    ))
    .await
    .unwrap();
    let first = next_entries(&mut ws, 7).await;
    let seqs: Vec<u64> = first.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..7).collect::<Vec<u64>>());
    // Live: a new message arrives next.
    n.call(
        "POST",
        &format!("/v1/agents/{}/messages", n.agent_a),
        Some("operator"),
        Some(json!({"body": "live"})),
    )
    .await;
    let live = next_entries(&mut ws, 1).await;
    assert_eq!(live[0]["seq"], 7);
    assert_eq!(live[0]["body"]["body"], "live");
    // Resuming from the middle gives exactly the rest.
    let (mut ws2, _) = tokio_tungstenite::connect_async(ws_request(
        n.ws_url("/v1/events?from=4"),
        &n.keys["operator"],
    ))
    .await
    .unwrap();
    let rest = next_entries(&mut ws2, 4).await;
    assert_eq!(
        rest.iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    // An agent key sees only its own namespace: agent b's creation (seq 1) is not sent.
    let (mut ws3, _) = tokio_tungstenite::connect_async(ws_request(
        n.ws_url("/v1/events?from=0"),
        &n.keys["agent_a"],
    ))
    .await
    .unwrap();
    let visible = next_entries(&mut ws3, 7).await;
    assert!(
        visible.iter().all(|e| e["agent"] == n.agent_a.to_string()),
        "{visible:?}"
    );
    // Without a key: refused before the upgrade.
    assert!(
        tokio_tungstenite::connect_async(n.ws_url("/v1/events"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_a_cancelled_mission_keeps_it_listed_and_replay_says_gone() {
    let n = start().await;
    let a = n.agent_a.to_string();
    let mission =
        json!({"agent": a, "objective": "read", "tools": ["fs.read"], "timeout_secs": 600});
    let held = n
        .call(
            "POST",
            "/v1/missions",
            Some("operator"),
            Some(mission.clone()),
        )
        .await;
    let done = held.body["id"].as_str().unwrap().to_owned();
    let cancelled = n
        .call(
            "POST",
            &format!("/v1/missions/{done}/cancel"),
            Some("operator"),
            Some(json!({"reason": "old"})),
        )
        .await;
    assert_eq!(cancelled.body["state"], "cancelled", "{:?}", cancelled.body);
    let waiting = n
        .call("POST", "/v1/missions", Some("operator"), Some(mission))
        .await;
    let waiting = waiting.body["id"].as_str().unwrap().to_owned();

    // Bad input is refused and changes nothing.
    for body in [
        json!({}),
        json!({"older_than_secs": -1}),
        json!({"older_than_secs": "30d"}),
        json!({"older_than_secs": 1, "everything": true}),
    ] {
        let r = n
            .call(
                "POST",
                "/v1/missions/prune",
                Some("operator"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_error_shape(&r);
    }
    // An hour's age spares a mission cancelled just now.
    let r = n
        .call(
            "POST",
            "/v1/missions/prune",
            Some("operator"),
            Some(json!({"older_than_secs": 3600})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["missions"], json!([]));

    let dry = n
        .call(
            "POST",
            "/v1/missions/prune",
            Some("operator"),
            Some(json!({"older_than_secs": 0, "dry_run": true})),
        )
        .await;
    assert_eq!(dry.body["missions"], json!([done]), "{:?}", dry.body);
    let m = n
        .call(
            "GET",
            &format!("/v1/missions/{done}"),
            Some("operator"),
            None,
        )
        .await;
    assert_eq!(m.body["pruned"], false);

    let r = n
        .call(
            "POST",
            "/v1/missions/prune",
            Some("operator"),
            Some(json!({"older_than_secs": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["missions"], json!([done]));
    assert!(r.body["entries"].as_u64().unwrap() > 0, "{:?}", r.body);
    assert!(r.body["bytes_freed"].as_u64().unwrap() > 0, "{:?}", r.body);

    let m = n
        .call(
            "GET",
            &format!("/v1/missions/{done}"),
            Some("operator"),
            None,
        )
        .await;
    assert_eq!(
        (m.body["pruned"].clone(), m.body["state"].clone()),
        (json!(true), json!("cancelled"))
    );
    let listed = n.call("GET", "/v1/missions", Some("operator"), None).await;
    let flags: Vec<(String, bool)> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["pruned"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(flags.contains(&(done.clone(), true)), "{flags:?}");
    assert!(flags.contains(&(waiting.clone(), false)), "{flags:?}");
    let replay = n
        .call(
            "GET",
            &format!("/v1/missions/{done}/replay"),
            Some("operator"),
            None,
        )
        .await;
    assert_eq!(replay.status, 410, "{:?}", replay.body);
    assert_eq!(replay.body["error"]["code"], "pruned");
    let replay = n
        .call(
            "GET",
            &format!("/v1/missions/{waiting}/replay"),
            Some("operator"),
            None,
        )
        .await;
    assert_eq!(replay.body["ok"], true, "{:?}", replay.body);
    // The ledger still verifies.
    let v = n
        .call("POST", "/v1/ledger/verify", Some("operator"), None)
        .await;
    assert_eq!(v.body["ok"], true, "{:?}", v.body);
}

/// Regression: 500 requests with a forged secret for a real key id locked the real key out
/// (429): the bucket was chosen by the id a request named, before its secret was checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_secret_never_uses_up_the_real_keys_bucket() {
    let n = start_with(
        aura_node::Limits {
            requests_per_second: 1,
            burst: 5,
            ..Default::default()
        },
        true,
    )
    .await;
    let op = n.keys["operator"].clone();
    let forged = format!("{}x", &op[..op.len() - 1]);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            n.call("GET", "/v1/agents", Some(&forged), None)
                .await
                .status,
        );
    }
    // The forger's address ran out of requests...
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[19], 429, "{statuses:?}");
    // ...while the key's owner still has the key's whole burst.
    for i in 0..5 {
        let r = n.call("GET", "/v1/agents", Some("operator"), None).await;
        assert_eq!(r.status, 200, "request {i} of the real key: {:?}", r.body);
    }
}

/// Regression: every request naming a new fake key id got a fresh bucket of its own, so
/// unauthenticated requests were never limited (and each left a bucket behind). They now
/// share their address's bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_limited_per_address_whatever_key_id_they_name() {
    let n = start_with(
        aura_node::Limits {
            requests_per_second: 1,
            burst: 5,
            ..Default::default()
        },
        true,
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let fake = format!("aura_fake{i}_secret");
        statuses.push(n.call("GET", "/v1/agents", Some(&fake), None).await.status);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[6..], &[429; 4], "{statuses:?}");
    // Without any key, the same address's bucket.
    assert_eq!(n.call("GET", "/v1/agents", None, None).await.status, 429);
    // A real key from the same address is not held back by them.
    assert_eq!(
        n.call("GET", "/v1/agents", Some("operator"), None)
            .await
            .status,
        200
    );
}

/// Regression: a keyless node served a request naming `Host: attacker.example`, so a web
/// page whose name was rebound to 127.0.0.1 (DNS rebinding) had a local operator's rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused() {
    let n = start_configured(
        aura_node::Limits::default(),
        false,
        &["aura.example.com"],
        &[],
    )
    .await;
    let port = n.addr().rsplit(':').next().unwrap().to_owned();
    let get = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    for (path, host, want) in [
        ("/v1/agents", format!("attacker.example:{port}"), 421),
        ("/v1/agents", "attacker.example".to_owned(), 421),
        ("/v1/agents", format!("127.0.0.1:{port}"), 200),
        ("/v1/agents", format!("localhost:{port}"), 200),
        ("/v1/agents", "aura.example.com".to_owned(), 200),
        // Load balancers probe /health under any name.
        ("/health", "attacker.example".to_owned(), 200),
    ] {
        let (status, body) = n.raw(&get(path, &host)).await;
        assert_eq!(status, want, "{path} for {host}: {body}");
        if status == 421 {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["code"], "host_not_allowed", "{v}");
        }
    }
    // HTTP/1.0 without any host is refused too.
    let (status, _) = n.raw("GET /v1/agents HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 400);
}

/// Regression: a WebSocket to `/v1/events` carrying `Origin: http://evil.example` streamed
/// a keyless node's ledger to that page. Web pages of other origins may now neither open
/// the stream nor change anything; the node's own origin, configured origins and clients
/// that are not web pages (no `Origin`) may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_of_another_origin_cannot_use_a_keyless_node() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let n = start_configured(
        aura_node::Limits::default(),
        false,
        &[],
        &["https://console.example.com"],
    )
    .await;
    let own = format!("http://{}", n.addr());
    let ws = |origin: Option<&str>| {
        let mut req = n.ws_url("/v1/events?from=0").into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    match ws(Some("http://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
        }
        other => panic!("a page of another origin opened the stream: {other:?}"),
    }
    for origin in [
        None,
        Some(own.as_str()),
        Some("https://console.example.com"),
    ] {
        let (mut socket, _) = ws(origin).await.unwrap();
        next_entries(&mut socket, 1).await;
    }
    let create = |origin: &str, name: &str| {
        let body = format!(r#"{{"name":"{name}","level":"L1","namespace":"team-a"}}"#);
        format!(
            "POST /v1/agents HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            n.addr(),
            body.len()
        )
    };
    let (status, body) = n.raw(&create("http://evil.example", "evil")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("origin_not_allowed"), "{body}");
    let (status, body) = n.raw(&create("http://localhost:3000", "evil")).await;
    assert_eq!(status, 403, "another local page is another origin: {body}");
    let (status, body) = n.raw(&create(&own, "mine")).await;
    assert_eq!(status, 201, "{body}");
    let names: Vec<String> = n
        .call("GET", "/v1/agents", None, None)
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!names.contains(&"evil".to_owned()), "{names:?}");
    // A cross-origin GET changes nothing and, without CORS headers, the page cannot read it.
    let (status, _) = n
        .raw(&format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n",
            n.addr()
        ))
        .await;
    assert_eq!(status, 200);
}

/// Regression: a client that sent its headers a byte at a time (or never finished them)
/// held its connection as long as it liked (75-80 s in the report): there was no header
/// read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let n = start_with(
        aura_node::Limits {
            header_timeout_secs: 1,
            ..Default::default()
        },
        true,
    )
    .await;
    for opening in ["GET /health HTTP/1.1\r\nHost: localhost\r\n", ""] {
        let mut socket = tokio::net::TcpStream::connect(n.addr()).await.unwrap();
        socket.write_all(opening.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            socket.read_to_end(&mut rest),
        )
        .await;
        assert!(
            read.is_ok(),
            "the connection ({opening:?}) was still open after 5 s"
        );
        assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    }
}

/// Regression: a client that announced a body and sent it slowly held its connection
/// without limit. The body now has its deadline, and the answer says so (408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let n = start_with(
        aura_node::Limits {
            body_timeout_secs: 1,
            ..Default::default()
        },
        true,
    )
    .await;
    let mut socket = tokio::net::TcpStream::connect(n.addr()).await.unwrap();
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        n.addr(),
        n.keys["operator"]
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.read_to_end(&mut answer),
    )
    .await
    .expect("the connection was still open after 5 s")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

/// Regression: stopping the server left open event streams running after it, and waited
/// without limit for requests in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_closes_event_streams() {
    let mut n = start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(
        n.ws_url("/v1/events?from=0"),
        &n.keys["operator"],
    ))
    .await
    .unwrap();
    next_event(&mut ws, 10).await.unwrap();
    let server = n.server.take().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(8), server.shutdown())
        .await
        .expect("the server did not stop");
    loop {
        match next_event(&mut ws, 5).await {
            Ok(_) => {}
            Err(code) => {
                assert_eq!(code, Some(1001));
                break;
            }
        }
    }
}
