//! `aura.inference.v1.Inference` through the real binary (needs root, for the cell
//! runtime the gRPC surfaces are served with): `aura serve` with `aura pki init` done,
//! SmolLM2 pulled and all-MiniLM-L6-v2 imported, driven by a tonic client over the Unix
//! socket with mTLS. Every completed request must leave exactly one receipt, and a refused
//! or cancelled one none.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

#[path = "../../aura-image/tests/support/tiny_package.rs"]
mod tiny_package;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use aura_grpc::ClientConfig;
use aura_grpc::proto::aura::inference::v1 as pb;
use pb::inference_client::InferenceClient;
use serde_json::{Value, json};
use support::Aura;
use tonic::transport::Channel;

/// A running `aura serve`, stopped with SIGTERM (so it frees its cells) when dropped.
struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A node with SmolLM2 pulled, MiniLM imported as `minilm`, a PKI with clients `admin`,
/// `app` (inference) and `watcher` (observer), serving gRPC on `<home>/aurae.sock`.
fn node(aura: &Aura) -> Node {
    node_with(aura, support::install_models)
}

/// [`node`] with `install` run instead of installing SmolLM2 and MiniLM.
fn node_with(aura: &Aura, install: impl FnOnce(&Aura)) -> Node {
    aura.init();
    install(aura);
    aura.run(&["pki", "init"]).ok();
    aura.run(&["pki", "client", "app", "--role", "inference"])
        .ok();
    aura.run(&["pki", "client", "watcher", "--role", "observer"])
        .ok();
    let mut child = aura
        .cmd(&["--json", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(
        ready["grpc_socket"],
        aura.home().join("aurae.sock").to_str().unwrap(),
        "{ready}"
    );
    Node { child }
}

/// A client of the node as `name` (a client `aura pki` made).
async fn client(aura: &Aura, name: &str) -> InferenceClient<Channel> {
    let config = ClientConfig::load(&aura.home().join(format!("pki/clients/{name}.toml"))).unwrap();
    InferenceClient::new(config.connect().await.unwrap())
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

fn header<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("x-aura-receipt")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn user(text: &str) -> pb::Message {
    pb::Message {
        role: "user".into(),
        content: text.into(),
        ..Default::default()
    }
}

fn question(max_tokens: u32) -> pb::ChatRequest {
    pb::ChatRequest {
        model: "smollm2".into(),
        messages: vec![user("Name a colour of the sky.")],
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

/// What a streamed chat delivered.
#[derive(Debug, Default)]
struct Chat {
    header: String,
    text: String,
    /// Per call: (id, name, arguments as streamed).
    calls: Vec<(String, String, String)>,
    done: pb::ChatDone,
}

async fn chat(client: &mut InferenceClient<Channel>, req: pb::ChatRequest) -> Chat {
    let response = client.chat(req).await.unwrap();
    let mut out = Chat {
        header: header(&response),
        ..Chat::default()
    };
    let mut stream = response.into_inner();
    let mut done = None;
    while let Some(event) = stream.message().await.unwrap() {
        assert!(done.is_none(), "an event after the final one: {event:?}");
        match event.event.unwrap() {
            pb::chat_event::Event::Text(t) => out.text.push_str(&t),
            pb::chat_event::Event::ToolCall(d) => {
                let i = d.index as usize;
                if i == out.calls.len() {
                    out.calls.push((d.id, d.name, String::new()));
                }
                out.calls[i].2.push_str(&d.arguments);
            }
            pb::chat_event::Event::Done(d) => done = Some(d),
        }
    }
    out.done = done.expect("the stream ended without its final event");
    assert_eq!(out.done.receipt_id, out.header);
    out
}

/// What a streamed completion delivered: the header, the concatenated text, the end.
async fn complete(
    client: &mut InferenceClient<Channel>,
    req: pb::CompleteRequest,
) -> (String, String, pb::CompleteDone) {
    let response = client.complete(req).await.unwrap();
    let receipt = header(&response);
    let mut stream = response.into_inner();
    let (mut text, mut done) = (String::new(), None);
    while let Some(event) = stream.message().await.unwrap() {
        match event.event.unwrap() {
            pb::complete_event::Event::Text(t) => text.push_str(&t),
            pb::complete_event::Event::Done(d) => done = Some(d),
        }
    }
    let done = done.expect("the stream ended without its final event");
    assert_eq!(done.receipt_id, receipt);
    (receipt, text, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_grpc_inference_streams_chat_tools_schemas_completions_and_embeddings() {
    let aura = Aura::new();
    let node = node(&aura);
    let mut admin = client(&aura, "admin").await;
    let mut named = Vec::new();

    // Models: both packages, each of its kind; an observer may list them too.
    let listed = admin
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let kind = |name: &str| listed.iter().find(|m| m.name == name).map(|m| m.kind());
    assert_eq!(kind("smollm2"), Some(pb::model::Kind::Chat), "{listed:?}");
    assert_eq!(
        kind("minilm"),
        Some(pb::model::Kind::Embedding),
        "{listed:?}"
    );
    assert!(listed.iter().all(|m| m.digest.len() == 64), "{listed:?}");
    let mut watcher = client(&aura, "watcher").await;
    let seen = watcher
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(seen, listed);

    // Chat, streamed: the deltas are the final text; greedy twice is the same answer.
    let first = chat(&mut admin, question(12)).await;
    assert!(!first.text.is_empty(), "{first:?}");
    let message = first.done.message.clone().unwrap();
    assert_eq!(message.role, "assistant");
    assert_eq!(message.content, first.text);
    assert!(
        ["stop", "length"].contains(&first.done.finish_reason.as_str()),
        "{first:?}"
    );
    assert_eq!(first.done.model, "smollm2");
    assert!(first.done.system_fingerprint.starts_with("fp_aura_"));
    let usage = first.done.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    let again = chat(&mut admin, question(12)).await;
    assert_eq!(again.text, first.text);
    assert_eq!(again.done.usage, first.done.usage);
    assert_ne!(again.header, first.header);
    named.extend([first.header.clone(), again.header.clone()]);

    // The inference role may chat too, with log-probabilities on the final event.
    let mut app = client(&aura, "app").await;
    let mut req = question(4);
    req.logprobs = true;
    req.top_logprobs = 2;
    let with_logprobs = chat(&mut app, req).await;
    assert!(
        first.text.starts_with(&with_logprobs.text),
        "{with_logprobs:?}"
    );
    let logprobs = &with_logprobs.done.logprobs;
    assert!(!logprobs.is_empty());
    assert!(
        logprobs
            .iter()
            .all(|t| t.logprob <= 0.0 && t.top.len() == 2),
        "{logprobs:?}"
    );
    named.push(with_logprobs.header);

    // A required tool call: streamed as it is written, with arguments that parse.
    let tools = vec![pb::Tool {
        name: "get_weather".into(),
        description: "The current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
            .to_string(),
    }];
    let call = chat(
        &mut admin,
        pb::ChatRequest {
            model: "smollm2".into(),
            messages: vec![user("What is the weather in Paris?")],
            tools: tools.clone(),
            tool_choice: Some(pb::ToolChoice {
                choice: Some(pb::tool_choice::Choice::Mode(
                    pb::tool_choice::Mode::Required as i32,
                )),
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(call.done.finish_reason, "tool_calls", "{call:?}");
    let message = call.done.message.clone().unwrap();
    let made = &message.tool_calls[0];
    assert_eq!(made.name, "get_weather");
    let arguments: Value = serde_json::from_str(&made.arguments).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    assert_eq!(call.calls.len(), message.tool_calls.len(), "{call:?}");
    assert_eq!((&call.calls[0].0, &call.calls[0].1), (&made.id, &made.name));
    let streamed: Value = serde_json::from_str(&call.calls[0].2).unwrap();
    assert_eq!(streamed, arguments);
    named.push(call.header.clone());

    // The call's result goes back as a tool message; the model answers in text.
    let answer = chat(
        &mut admin,
        pb::ChatRequest {
            model: "smollm2".into(),
            messages: vec![
                user("What is the weather in Paris?"),
                pb::Message {
                    role: "assistant".into(),
                    tool_calls: vec![made.clone()],
                    ..Default::default()
                },
                pb::Message {
                    role: "tool".into(),
                    content: "sunny, 21 C".into(),
                    tool_call_id: Some(made.id.clone()),
                    ..Default::default()
                },
            ],
            tools,
            max_tokens: Some(12),
            ..Default::default()
        },
    )
    .await;
    named.push(answer.header);

    // Structured output: an answer that validates against the schema.
    let schema = json!({
        "type": "object",
        "properties": {"colour": {"type": "string"}, "certain": {"type": "boolean"}},
        "required": ["colour", "certain"],
        "additionalProperties": false,
    });
    let mut req = question(40);
    req.response_format = Some(pb::ResponseFormat {
        r#type: pb::response_format::Type::JsonSchema as i32,
        schema: schema.to_string(),
    });
    let structured = chat(&mut admin, req).await;
    let answer: Value = serde_json::from_str(&structured.text)
        .unwrap_or_else(|e| panic!("{e}: {:?}", structured.text));
    let mut keys: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["certain", "colour"], "{answer}");
    assert!(
        answer["colour"].is_string() && answer["certain"].is_boolean(),
        "{answer}"
    );
    named.push(structured.header);

    // Completions: streamed text is the final text; the limit ends it.
    let (receipt, text, done) = complete(
        &mut admin,
        pb::CompleteRequest {
            model: "smollm2".into(),
            prompt: "The sky is".into(),
            max_tokens: Some(6),
            logprobs: Some(1),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(text, done.text);
    assert!(!text.is_empty());
    assert_eq!(done.finish_reason, "length", "{done:?}");
    assert_eq!(done.usage.unwrap().completion_tokens, 6);
    assert_eq!(done.logprobs.len(), 6);
    named.push(receipt);
    let (receipt, again, _) = complete(
        &mut app,
        pb::CompleteRequest {
            model: "smollm2".into(),
            prompt: "The sky is".into(),
            max_tokens: Some(6),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(again, text);
    named.push(receipt);

    // Embeddings: one 384-dimensional unit vector per input.
    let response = app
        .embed(pb::EmbedRequest {
            model: "minilm".into(),
            input: vec!["the sky is blue".into(), "the sea is blue".into()],
        })
        .await
        .unwrap();
    let receipt = header(&response);
    let embedded = response.into_inner();
    assert_eq!(embedded.receipt_id, receipt);
    assert_eq!(embedded.dimensions, 384);
    assert_eq!(embedded.embeddings.len(), 2);
    for e in &embedded.embeddings {
        assert_eq!(e.values.len(), 384);
        let norm = e.values.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }
    assert_ne!(embedded.embeddings[0], embedded.embeddings[1]);
    assert!(embedded.usage.unwrap().prompt_tokens > 0);
    named.push(receipt);

    // Every response's receipt is in the ledger, exactly once, and nothing else is.
    let mut in_ledger = receipts(&aura);
    in_ledger.sort();
    named.sort();
    assert_eq!(in_ledger, named);
    drop(node);
    aura.run(&["receipts", "verify"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_grpc_inference_refusals_and_cancelled_streams_leave_no_receipt() {
    let aura = Aura::new();
    let node = node(&aura);
    let mut admin = client(&aura, "admin").await;

    let code = |r: Result<tonic::Response<tonic::Streaming<pb::ChatEvent>>, tonic::Status>| {
        r.map(|_| ()).unwrap_err()
    };
    let refused = |status: tonic::Status, expected: tonic::Code, words: &str| {
        assert_eq!(status.code(), expected, "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
    };
    let mut req = question(8);
    req.model = "no-such-model".into();
    refused(
        code(admin.chat(req).await),
        tonic::Code::NotFound,
        "no-such-model",
    );
    let mut req = question(8);
    req.model = "minilm".into();
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "text encoder",
    );
    let mut req = question(8);
    req.sampling = Some(pb::Sampling {
        temperature: Some(5.0),
        ..Default::default()
    });
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "temperature",
    );
    let mut req = question(8);
    req.max_tokens = Some(0);
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "max_tokens",
    );
    let mut req = question(8);
    req.top_logprobs = 3;
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "top_logprobs",
    );
    let mut req = question(8);
    req.messages[0].role = "wizard".into();
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "messages[0].role",
    );
    let mut req = question(8);
    req.tool_choice = Some(pb::ToolChoice {
        choice: Some(pb::tool_choice::Choice::Mode(
            pb::tool_choice::Mode::Required as i32,
        )),
    });
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "required",
    );
    let mut req = question(8);
    req.tools = vec![pb::Tool {
        name: "t".into(),
        parameters: "{not json".into(),
        ..Default::default()
    }];
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "tools[0].parameters",
    );
    let mut req = question(8);
    req.response_format = Some(pb::ResponseFormat {
        r#type: pb::response_format::Type::JsonSchema as i32,
        schema: json!({"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}})
            .to_string(),
    });
    refused(
        code(admin.chat(req).await),
        tonic::Code::InvalidArgument,
        "multipleOf",
    );
    let status = admin
        .complete(pb::CompleteRequest {
            model: "smollm2".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    refused(status, tonic::Code::InvalidArgument, "prompt");
    let status = admin
        .embed(pb::EmbedRequest {
            model: "smollm2".into(),
            input: vec!["x".into()],
        })
        .await
        .unwrap_err();
    refused(status, tonic::Code::InvalidArgument, "generates text");
    let status = admin
        .embed(pb::EmbedRequest {
            model: "minilm".into(),
            input: vec![],
        })
        .await
        .unwrap_err();
    refused(status, tonic::Code::InvalidArgument, "input");

    // Roles: an observer may list the models but not use them; the inference role may
    // use the models but not the cells.
    let mut watcher = client(&aura, "watcher").await;
    refused(
        code(watcher.chat(question(8)).await),
        tonic::Code::PermissionDenied,
        "needs admin or inference",
    );
    let status = watcher
        .embed(pb::EmbedRequest {
            model: "minilm".into(),
            input: vec!["x".into()],
        })
        .await
        .unwrap_err();
    refused(status, tonic::Code::PermissionDenied, "observer");
    let config = ClientConfig::load(&aura.home().join("pki/clients/app.toml")).unwrap();
    let mut cells = aura_grpc::proto::aura::cells::v1::cells_client::CellsClient::new(
        config.connect().await.unwrap(),
    );
    let status = cells
        .list(aura_grpc::proto::aura::cells::v1::ListRequest::default())
        .await
        .unwrap_err();
    refused(status, tonic::Code::PermissionDenied, "inference");

    // Regression: a token limit beyond the model's context, which the HTTP API refuses,
    // was taken (and reserved) over gRPC. Both now open the model through the host's
    // checks, which refuse it naming the field.
    refused(
        code(admin.chat(question(100_000)).await),
        tonic::Code::InvalidArgument,
        "max_tokens: 100000 is more than the",
    );
    let status = admin
        .complete(pb::CompleteRequest {
            model: "smollm2".into(),
            prompt: "1, 2, 3,".into(),
            max_tokens: Some(100_000),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    refused(status, tonic::Code::InvalidArgument, "-token context");

    // Nothing refused left a receipt.
    assert_eq!(receipts(&aura), Vec::<String>::new());

    // How long tokens take here (the machine may be busy): a counting prompt runs to
    // its limit.
    let counting = || pb::CompleteRequest {
        model: "smollm2".into(),
        prompt: "1, 2, 3, 4,".into(),
        max_tokens: Some(32),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let (measured, _, done) = complete(&mut admin, counting()).await;
    let per_token = started.elapsed() / 32;
    assert_eq!(done.finish_reason, "length", "{done:?}");

    // A stream the client abandons stops generating, and leaves no receipt.
    let mut req = question(64);
    req.messages = vec![user("Count from 1 to 1000, one number per line.")];
    let response = admin.chat(req).await.unwrap();
    let abandoned = header(&response);
    let mut stream = response.into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(pb::chat_event::Event::Text(_))),
        "{first:?}"
    );
    drop(stream);
    let mut req = counting();
    req.max_tokens = Some(64);
    let response = admin.complete(req).await.unwrap();
    let abandoned_completion = header(&response);
    let mut stream = response.into_inner();
    stream.message().await.unwrap().unwrap();
    drop(stream);
    // A generation that went on would have finished and recorded its receipt by then.
    tokio::time::sleep(per_token * 64 * 3 + Duration::from_secs(1)).await;
    let in_ledger = receipts(&aura);
    assert!(
        !in_ledger.contains(&abandoned) && !in_ledger.contains(&abandoned_completion),
        "{in_ledger:?}"
    );
    assert_eq!(in_ledger, vec![measured.clone()]);

    // The next request is answered as usual.
    let done = chat(&mut admin, question(4)).await;
    let mut in_ledger = receipts(&aura);
    in_ledger.sort();
    let mut expected = vec![measured, done.header];
    expected.sort();
    assert_eq!(in_ledger, expected);

    // A package whose file fails its hash is left out of the listing (as `GET /v1/models`
    // leaves it out).
    let weights = aura.home().join("models/minilm/files/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let tmp = weights.with_extension("tampered");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &weights).unwrap();
    let listed: Vec<String> = admin
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(listed, ["smollm2"]);
    drop(node);
}

/// `GenerateImage` on a small `aura-tiny-emoji` package (fresh weights): progress and a
/// preview after every step, then the image with its receipt; the same seed gives the same
/// image; a size the model does not make is refused before the stream, with no receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_grpc_generate_image_streams_previews_then_the_image_and_its_receipt() {
    let aura = Aura::new();
    let src = tempfile::tempdir().unwrap();
    let node = node_with(&aura, |aura| {
        let folder = src.path().join("aura-tiny-emoji");
        tiny_package::write_small_package(&folder, 5);
        let dir = folder.to_str().unwrap();
        aura.run(&["model", "import", dir, "--name", "aura-tiny-emoji"])
            .ok();
    });
    let mut app = client(&aura, "app").await;
    let models = app
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(
        models
            .iter()
            .map(|m| (m.name.as_str(), m.kind()))
            .collect::<Vec<_>>(),
        [("aura-tiny-emoji", pb::model::Kind::Image)]
    );
    let request = pb::ImageRequest {
        prompt: "red apple".into(),
        steps: Some(4),
        seed: Some(9),
        every_step_preview: true,
        ..pb::ImageRequest::default()
    };
    let run = |mut app: InferenceClient<Channel>, request: pb::ImageRequest| async move {
        let mut stream = app.generate_image(request).await.unwrap().into_inner();
        let (mut steps, mut previews, mut images) = (Vec::new(), 0, Vec::new());
        while let Some(event) = stream.message().await.unwrap() {
            match event.event.unwrap() {
                pb::image_event::Event::Progress(p) => steps.push(p.step),
                pb::image_event::Event::Preview(p) => {
                    assert_eq!(&p.png[1..4], b"PNG");
                    previews += 1;
                }
                pb::image_event::Event::Image(i) => images.push(i),
            }
        }
        (steps, previews, images)
    };
    let (steps, previews, images) = run(app.clone(), request.clone()).await;
    assert_eq!((steps, previews, images.len()), (vec![1, 2, 3, 4], 4, 1));
    let image = &images[0];
    let parameters: Value = serde_json::from_str(&image.parameters).unwrap();
    assert_eq!(
        (parameters["width"].clone(), parameters["seed"].clone()),
        (json!(64), json!(9))
    );
    let chunk: Value =
        serde_json::from_str(&aura_image::png::text_of(&image.png, "aura").unwrap()).unwrap();
    assert_eq!(chunk["receipt"], image.receipt_id.as_str());
    let (_, _, again) = run(app.clone(), request).await;
    assert_ne!(again[0].receipt_id, image.receipt_id);
    assert_eq!(
        aura_image::png::without_text(&again[0].png, "aura"),
        aura_image::png::without_text(&image.png, "aura")
    );

    let refused = app
        .generate_image(pb::ImageRequest {
            prompt: "red apple".into(),
            width: Some(128),
            height: Some(128),
            ..pb::ImageRequest::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.message(),
        "size: 128x128 is not supported; this model makes 64x64 images only"
    );
    drop(node);
    let mut in_ledger = receipts(&aura);
    in_ledger.sort();
    let mut expected = vec![image.receipt_id.clone(), again[0].receipt_id.clone()];
    expected.sort();
    assert_eq!(in_ledger, expected);
}
