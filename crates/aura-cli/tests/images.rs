//! Image models through the real binary: a tiny random-weight SD 1.5 diffusers folder
//! (aura-image's writer: real tensor names, real loader) imported with `aura model
//! import`, made into images by `aura image generate` and by `aura serve`'s Images API,
//! driven by the official `openai` Python package (`scripts/setup-python.sh`), the A1111
//! routes and the progress socket; every image's receipt verifies against the node's key.
//! Aura's own tiny model (a small package with fresh weights, in the format `aura model
//! pull aura-tiny-emoji` installs) gives the same bytes on any threads and under
//! concurrent requests.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

#[path = "../../aura-image/tests/support/mod.rs"]
mod sd;
#[path = "../../aura-image/tests/support/tiny_package.rs"]
mod tiny_package;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};
use support::{Aura, serve};

fn operator_key(aura: &Aura) -> String {
    let key = aura
        .run(&["--json", "apikey", "create", "images", "--role", "operator"])
        .ok()
        .json();
    key["secret"]
        .as_str()
        .or_else(|| key["key"].as_str())
        .unwrap()
        .to_owned()
}

/// An initialised data directory with the tiny model imported as `sd` (the import
/// licenses it to this node) and, with its license removed, as `unlicensed`.
fn with_models() -> (Aura, tempfile::TempDir) {
    let aura = Aura::new();
    aura.init();
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("tiny-sd");
    sd::write_diffusers(&folder, sd::Tiny::Sd15, 11);
    let imported = aura
        .run(&[
            "--json",
            "model",
            "import",
            folder.to_str().unwrap(),
            "--name",
            "sd",
        ])
        .ok()
        .json();
    assert_eq!(imported["architecture"], "stable-diffusion", "{imported}");
    let licenses = aura.home().join("licenses");
    let before: Vec<PathBuf> = files_in(&licenses);
    aura.run(&[
        "model",
        "import",
        folder.to_str().unwrap(),
        "--name",
        "unlicensed",
    ])
    .ok();
    for new in files_in(&licenses) {
        if !before.contains(&new) {
            std::fs::remove_file(new).unwrap();
        }
    }
    (aura, src)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn without_chunk(png: &[u8]) -> Vec<u8> {
    aura_image::png::without_text(png, "aura")
}

#[test]
fn aura_image_generate_writes_the_same_png_for_the_same_seed_with_its_receipt() {
    let (aura, _src) = with_models();
    let out = tempfile::tempdir().unwrap();
    let run = |seed: &str, dir: &Path| {
        aura.run(&[
            "--json",
            "image",
            "generate",
            "a red fox",
            "--model",
            "sd",
            "--size",
            "64x64",
            "--steps",
            "3",
            "--seed",
            seed,
            "--out",
            dir.to_str().unwrap(),
        ])
        .ok()
        .json()
    };
    let a = run("7", &out.path().join("a"));
    let b = run("7", &out.path().join("b"));
    let (a, b) = (&a[0], &b[0]);
    assert_eq!(a["seed"], 7);
    assert_ne!(a["receipt"], b["receipt"]);
    let png_a = std::fs::read(a["path"].as_str().unwrap()).unwrap();
    let png_b = std::fs::read(b["path"].as_str().unwrap()).unwrap();
    assert_eq!(without_chunk(&png_a), without_chunk(&png_b));
    let chunk: Value =
        serde_json::from_str(&aura_image::png::text_of(&png_a, "aura").unwrap()).unwrap();
    assert_eq!(chunk["receipt"], a["receipt"]);
    assert_eq!(chunk["parameters"], a["parameters"]);

    // Human output names the file; errors are one line and a hint.
    let human = aura
        .run(&[
            "image",
            "generate",
            "a red fox",
            "--model",
            "sd",
            "--size",
            "64x64",
            "--steps",
            "2",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .ok();
    assert!(
        human
            .stdout
            .contains("image-0.png (64x64, seed 0, receipt rcpt_"),
        "{}",
        human.stdout
    );
    let refused = aura
        .run(&[
            "image", "generate", "x", "--model", "sd", "--size", "100x64",
        ])
        .one_line_error(1);
    assert!(
        refused.stderr.contains("size: 100x64 is not supported"),
        "{}",
        refused.stderr
    );
    let unlicensed = aura
        .run(&["image", "generate", "x", "--model", "unlicensed"])
        .one_line_error(1);
    assert!(
        unlicensed.stderr.contains("hint: see `aura license list`"),
        "{}",
        unlicensed.stderr
    );
    aura.run(&["image", "generate", "x"]).one_line_error(1);

    // --format writes JPEG or lossless WebP with the same record; a quality for a lossless
    // format is refused before anything runs.
    let jpeg = aura
        .run(&[
            "--json",
            "image",
            "generate",
            "a red fox",
            "--model",
            "sd",
            "--size",
            "64x64",
            "--steps",
            "2",
            "--format",
            "jpeg",
            "--quality",
            "70",
            "--out",
            out.path().join("j").to_str().unwrap(),
        ])
        .ok()
        .json();
    let path = jpeg[0]["path"].as_str().unwrap();
    assert!(path.ends_with("image-0.jpg"), "{path}");
    let record: Value = serde_json::from_str(
        &aura_image::encode::jpeg_text(&std::fs::read(path).unwrap(), "aura").unwrap(),
    )
    .unwrap();
    assert_eq!(record["receipt"], jpeg[0]["receipt"]);
    assert_eq!(record["parameters"]["output_compression"], 70);
    let lossless = aura
        .run(&[
            "image",
            "generate",
            "x",
            "--model",
            "sd",
            "--format",
            "webp",
            "--quality",
            "50",
        ])
        .one_line_error(1);
    assert!(
        lossless.stderr.contains("--quality: applies to jpeg"),
        "{}",
        lossless.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_makes_images_streams_partials_and_gets_openai_errors() {
    let (aura, _src) = with_models();
    let key = operator_key(&aura);
    let (node, _ready) = serve(&aura);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/images_sdk.py");
    let out = Command::new("python3")
        .arg(&script)
        .env(
            "PYTHONPATH",
            support::python_libs(support::PythonLibs::OpenAi),
        )
        .env("AURA_BASE_URL", format!("{}/v1", node.url))
        .env("AURA_API_KEY", &key)
        .env("AURA_MODEL", "sd")
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
        json!([
            "size",
            "n",
            "prompt",
            "no model package `no-such-model` is installed",
            "model `unlicensed`",
            "response_format",
            "output_format",
            "output_compression"
        ])
    );

    // JPEG and WebP carry the same record as the PNG, naming their own receipts; the
    // lossless WebP decodes to exactly the PNG's pixels (the same request and seed).
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(facts[k].as_str().unwrap())
            .unwrap()
    };
    let (png, jpeg, webp) = (b64("png_b64"), b64("jpeg_b64"), b64("webp_b64"));
    let record = |text: Option<String>| -> Value { serde_json::from_str(&text.unwrap()).unwrap() };
    let (jpeg_record, webp_record) = (
        record(aura_image::encode::jpeg_text(&jpeg, "aura")),
        record(aura_image::encode::webp_text(&webp, "aura")),
    );
    assert_eq!(&jpeg[..3], [0xFF, 0xD8, 0xFF]);
    assert_eq!(jpeg_record["parameters"]["output_format"], "jpeg");
    assert_eq!(jpeg_record["parameters"]["output_compression"], 80);
    assert_eq!(webp_record["parameters"]["output_format"], "webp");
    assert_ne!(jpeg_record["receipt"], webp_record["receipt"]);
    // Apart from the file format, the parameters are the PNG's.
    let mut same = webp_record["parameters"].clone();
    same.as_object_mut().unwrap().remove("output_format");
    assert_eq!(same, facts["parameters"]);
    let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(webp.as_slice())).unwrap();
    let mut pixels = vec![0; decoder.output_buffer_size().unwrap()];
    decoder.read_image(&mut pixels).unwrap();
    let decoded = aura_image::png::decode_png(&png, 1 << 20).unwrap();
    assert_eq!(
        pixels, decoded.pixels,
        "the WebP is the PNG's image, losslessly"
    );

    // The receipt the PNG names is in the ledger, signed by the node, and its hashes are
    // those of the PNG and of the parameters it carries.
    let http = reqwest::Client::new();
    let receipts: Value = http
        .get(format!("{}/v1/receipts", node.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = receipts["receipts"].as_array().unwrap();
    // Refusals recorded nothing: one receipt per image made (1 + 1 + 1 + 2 + 1 + 1 + 1,
    // then a JPEG and a WebP).
    assert_eq!(listed.len(), 10, "{receipts}");
    assert!(listed.iter().any(|r| r["id"] == facts["receipt"]));
    drop(node);
    // Every receipt's signature holds (the hashes are checked in aura-host's tests).
    let verified = aura.run(&["--json", "receipts", "verify"]).ok().json();
    assert_eq!(
        (verified["ok"].clone(), verified["receipts"].clone()),
        (json!(true), json!(10)),
        "{verified}"
    );
    let listed = aura.run(&["--json", "receipts", "list"]).ok().json();
    assert!(
        listed
            .to_string()
            .contains(facts["receipt"].as_str().unwrap()),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1111_routes_and_the_progress_socket_make_the_same_image() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let (aura, _src) = with_models();
    let key = operator_key(&aura);
    let (node, _ready) = serve(&aura);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", node.url))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let openai: Value = post(
        "/v1/images/generations",
        json!({"model": "sd", "prompt": "a red fox", "size": "64x64", "seed": 3, "steps": 3, "scheduler": "euler"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let reference = without_chunk(&b64(&openai["data"][0]["b64_json"]));

    let a1111 = post(
        "/sdapi/v1/txt2img",
        json!({"prompt": "a red fox", "width": 64, "height": 64, "seed": 3, "steps": 3,
               "sampler_name": "Euler", "override_settings": {"sd_model_checkpoint": "sd"}}),
    )
    .await
    .unwrap();
    assert_eq!(a1111.status(), 200);
    let a1111: Value = a1111.json().await.unwrap();
    assert_eq!(without_chunk(&b64(&a1111["images"][0])), reference);
    let info: Value = serde_json::from_str(a1111["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["seed"], 3);
    let img2img = post(
        "/sdapi/v1/img2img",
        json!({"prompt": "a red fox", "width": 64, "height": 64, "seed": 3, "steps": 4,
               "denoising_strength": 0.5, "model": "sd",
               "init_images": [base64::engine::general_purpose::STANDARD.encode(&reference)]}),
    )
    .await
    .unwrap();
    assert_eq!(img2img.status(), 200);
    let bad = post(
        "/sdapi/v1/txt2img",
        json!({"prompt": "x", "model": "sd", "sampler_name": "Heun"}),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sampler_name: "),
        "{bad}"
    );

    // The socket: progress after every step, a preview frame after every step, the image.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/v1/images/ws",
            node.url.replacen("http://", "ws://", 1)
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::Text(
        json!({"model": "sd", "prompt": "a red fox", "size": "64x64", "seed": 3, "steps": 3, "scheduler": "euler"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let (mut steps, mut previews, mut image) = (Vec::new(), 0, None);
    while let Some(m) = ws.next().await {
        match m.unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str().unwrap() {
                    "progress" => steps.push(v["data"]["value"].as_u64().unwrap()),
                    "image" => image = Some(b64(&v["data"]["b64_json"])),
                    "done" => break,
                    other => panic!("{other}: {v}"),
                }
            }
            Message::Binary(b) => {
                assert_eq!(&b[..8], &[0, 0, 0, 1, 0, 0, 0, 2]);
                assert_eq!(&b[9..12], b"PNG");
                previews += 1;
            }
            _ => {}
        }
    }
    assert_eq!(steps, [1, 2, 3]);
    assert_eq!(previews, 3);
    assert_eq!(without_chunk(&image.unwrap()), reference);

    // A cancelled request stops and records nothing more.
    let before: Value = http
        .get(format!("{}/v1/receipts", node.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/v1/images/ws",
            node.url.replacen("http://", "ws://", 1)
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::Text(
        json!({"model": "sd", "prompt": "a red fox", "size": "64x64", "steps": 150})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    // The first step arrives, then the cancel.
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            assert!(t.as_str().contains("progress"), "{t}");
            break;
        }
    }
    ws.send(Message::Text(json!({"type": "cancel"}).to_string().into()))
        .await
        .unwrap();
    let mut cancelled = false;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.as_str().contains("\"cancelled\"")
        {
            cancelled = true;
        }
    }
    assert!(cancelled);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after: Value = http
        .get(format!("{}/v1/receipts", node.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["receipts"].as_array().unwrap().len(),
        before["receipts"].as_array().unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiny_model_makes_the_same_png_on_any_threads_and_under_four_concurrent_requests() {
    let aura = Aura::new();
    aura.init();
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("aura-tiny-emoji");
    tiny_package::write_small_package(&folder, 5);
    let imported = aura
        .run(&[
            "--json",
            "model",
            "import",
            folder.to_str().unwrap(),
            "--name",
            "aura-tiny-emoji",
        ])
        .ok()
        .json();
    assert_eq!(imported["architecture"], "aura-tiny-emoji", "{imported}");

    // The CLI, no model named (the default image model), on 1, 2 and 4 threads.
    let out = tempfile::tempdir().unwrap();
    let cli = |threads: &str| {
        let dir = out.path().join(threads);
        let made = aura
            .run(&[
                "--json",
                "image",
                "generate",
                "red apple",
                "--seed",
                "9",
                "--steps",
                "4",
                "--threads",
                threads,
                "--out",
                dir.to_str().unwrap(),
            ])
            .ok()
            .json();
        assert_eq!(made[0]["parameters"]["width"], 64, "{made}");
        without_chunk(&std::fs::read(made[0]["path"].as_str().unwrap()).unwrap())
    };
    let reference = cli("1");
    assert_eq!(cli("2"), reference);
    assert_eq!(cli("4"), reference);

    // The node: four requests at once over real sockets, the same bytes each.
    let key = operator_key(&aura);
    let (node, _ready) = serve(&aura);
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(format!("{}/v1/images/generations", node.url))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let request =
        json!({"prompt": "red apple", "seed": 9, "steps": 4, "response_format": "b64_json"});
    let answers = futures_util::future::join_all((0..4).map(|_| post(request.clone()))).await;
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(body["data"][0]["b64_json"].as_str().unwrap())
            .unwrap();
        assert_eq!(without_chunk(&png), reference);
    }

    // What the model cannot do: OpenAI-style errors naming the field, nothing made.
    for (body, expect) in [
        (
            json!({"prompt": "red apple", "size": "512x512"}),
            "size: 512x512 is not supported; this model makes 64x64 images only",
        ),
        (
            json!({"prompt": "red apple", "scheduler": "euler"}),
            "scheduler: `euler` is not one this model runs; it samples with ddim only",
        ),
    ] {
        let answer = post(body).await.unwrap();
        assert_eq!(answer.status(), 400);
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["message"], expect, "{error}");
    }
    drop(node);
    let verified = aura.run(&["--json", "receipts", "verify"]).ok().json();
    assert_eq!(
        (verified["ok"].clone(), verified["receipts"].clone()),
        (json!(true), json!(3 + 4)),
        "{verified}"
    );
}
