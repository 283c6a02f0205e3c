//! The image routes over the node's image models (aura-host's [`aura_host::images`]):
//! OpenAI's `POST /v1/images/generations` and `POST /v1/images/edits` (JSON or
//! multipart, `b64_json`, streamed partial images as SSE), a WebSocket progress stream
//! at `GET /v1/images/ws` for clients that show steps and previews as ComfyUI's do, and
//! AUTOMATIC1111's `POST /sdapi/v1/txt2img` and `POST /sdapi/v1/img2img` field names,
//! which many tools speak.
//!
//! What differs from OpenAI, on purpose (docs/images.md):
//! - `response_format` is `b64_json` only (the node hosts no image URLs). `output_format`
//!   is `png` (Aura's deterministic encoder), `jpeg` (quality = `output_compression`) or
//!   `webp` (lossless, so `output_compression` must be 100); partial images are PNG.
//! - Aura's fields: `seed` (0 when unset, so the same request gives the same image),
//!   `steps`, `guidance_scale`, `negative_prompt`, `scheduler`, `strength` (edits) and
//!   `lora` (one of the package's own LoRAs). Any other unknown field is refused.
//! - Each image leaves one signed receipt; the ids are in the `x-aura-receipt` header
//!   (comma-separated, in image order) and in `aura.receipts`, and each PNG carries its own
//!   receipt id and parameters in an `iTXt` chunk `aura`.
//! - Partial images are previews at an eighth of the image's side, projected from the
//!   latent (never decoded by the VAE).
//! - A caller that goes away (a closed connection, a closed stream or socket, or a
//!   `{"type":"cancel"}` message on the socket) stops the work at its next step.

use std::convert::Infallible;
use std::sync::Arc;

use aura_host::images::{self, MAX_PARTIAL_IMAGES, parse_size};
use aura_host::{ImageEvent, ImageRequest, ImagesOutcome, ModelHost, Previews, Served};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiJson};
use crate::routes::agents::require;

/// The fields of OpenAI's image requests this node reads, and Aura's own.
const FIELDS: &[&str] = &[
    "prompt",
    "model",
    "n",
    "size",
    "response_format",
    "output_format",
    "stream",
    "partial_images",
    "quality",
    "background",
    "moderation",
    "output_compression",
    "user",
    "image",
    "seed",
    "steps",
    "guidance_scale",
    "negative_prompt",
    "scheduler",
    "strength",
    "lora",
];

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_request", format!("{field}: {why}"))
}

fn host(state: &AppState) -> Result<&Arc<ModelHost>, ApiError> {
    state.models.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "models_off",
            "this node serves no models (it was started without its model host)",
        )
    })
}

fn unix_now() -> u64 {
    use aura_core::door::Clock as _;
    aura_core::door::SystemClock.now().as_secs()
}

/// A request read from any of the routes' bodies.
#[derive(Debug, Default)]
struct Read {
    model: Option<String>,
    lora: Option<String>,
    request: ImageRequest,
    stream: bool,
}

fn string(fields: &Map<String, Value>, f: &str) -> Result<Option<String>, ApiError> {
    match fields.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(f, "must be a string")),
    }
}

fn uint(fields: &Map<String, Value>, f: &str, max: u64) -> Result<Option<u64>, ApiError> {
    match fields.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(invalid(
                f,
                format!("must be a whole number from 0 to {max}"),
            )),
        },
    }
}

fn number(fields: &Map<String, Value>, f: &str) -> Result<Option<f32>, ApiError> {
    match fields.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| invalid(f, "must be a number")),
    }
}

/// Accepts `field` only when unset or one of `ok` (values that ask for what this node
/// does anyway).
fn only(fields: &Map<String, Value>, f: &str, ok: &[&str], why: &str) -> Result<(), ApiError> {
    match fields.get(f) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if ok.contains(&s.as_str()) => Ok(()),
        Some(_) => Err(invalid(f, why)),
    }
}

/// Reads an OpenAI image request's fields (generations, or edits with `edit`).
fn read_openai(fields: &Map<String, Value>, edit: bool) -> Result<Read, ApiError> {
    for (field, value) in fields {
        if !FIELDS.contains(&field.as_str()) && !value.is_null() {
            return Err(invalid(
                field,
                "is not a parameter this node knows or honours; remove it (docs/images.md lists them)",
            ));
        }
    }
    let prompt =
        string(fields, "prompt")?.ok_or_else(|| invalid("prompt", "is required: what to draw"))?;
    only(
        fields,
        "response_format",
        &["b64_json"],
        "only b64_json is supported (this node hosts no image URLs)",
    )?;
    let output = aura_host::OutputFormat::parse(
        string(fields, "output_format")?.as_deref().unwrap_or("png"),
        uint(fields, "output_compression", 100)?.map(|c| c as u8),
    )
    .map_err(|(field, why)| invalid(field, why))?;
    only(
        fields,
        "quality",
        &["auto", "standard", "low", "medium", "high"],
        "must be one of auto, standard, low, medium, high (quality is set by steps here)",
    )?;
    only(
        fields,
        "background",
        &["auto", "opaque"],
        "must be auto or opaque (transparent backgrounds are not supported)",
    )?;
    only(
        fields,
        "moderation",
        &["auto", "low"],
        "must be auto or low",
    )?;
    string(fields, "user")?;
    let (width, height) = match string(fields, "size")? {
        None => (None, None),
        Some(s) => match parse_size(&s)? {
            Some((w, h)) => (Some(w), Some(h)),
            None => (None, None),
        },
    };
    let stream = match fields.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "must be true or false")),
    };
    let partial = uint(fields, "partial_images", u64::from(MAX_PARTIAL_IMAGES))?;
    if partial.is_some() && !stream {
        return Err(invalid("partial_images", "applies only with stream: true"));
    }
    let init_image = match fields.get("image") {
        None | Some(Value::Null) if edit => {
            return Err(invalid("image", "is required: the image to start from"));
        }
        None | Some(Value::Null) => None,
        Some(_) if !edit => {
            return Err(invalid(
                "image",
                "is for /v1/images/edits; generations start from noise",
            ));
        }
        Some(Value::String(s)) => Some(decode_b64_image(s)?),
        Some(_) => {
            return Err(invalid(
                "image",
                "must be a PNG file (multipart) or a base64 or data: URL string (JSON)",
            ));
        }
    };
    Ok(Read {
        model: string(fields, "model")?,
        lora: string(fields, "lora")?,
        request: ImageRequest {
            prompt,
            negative_prompt: string(fields, "negative_prompt")?.unwrap_or_default(),
            n: uint(fields, "n", u64::from(u32::MAX))?.map(|n| n as u32),
            width,
            height,
            steps: uint(fields, "steps", u64::from(u32::MAX))?.map(|n| n as u32),
            guidance_scale: number(fields, "guidance_scale")?,
            scheduler: string(fields, "scheduler")?,
            seed: uint(fields, "seed", u64::MAX)?,
            strength: number(fields, "strength")?,
            init_image,
            previews: match partial {
                Some(k) if k > 0 => Previews::Partial(k as u32),
                _ => Previews::None,
            },
            output,
        },
        stream,
    })
}

/// A base64 image, bare or as a `data:` URL.
fn decode_b64_image(s: &str) -> Result<Vec<u8>, ApiError> {
    let b64 = match s.strip_prefix("data:") {
        Some(rest) => rest.split_once(";base64,").map(|(_, b)| b).ok_or_else(|| {
            invalid(
                "image",
                "a data: URL must be base64 (data:image/png;base64,…)",
            )
        })?,
        None => s,
    };
    if b64.len() > images::MAX_INIT_IMAGE_BYTES * 4 / 3 + 4 {
        return Err(invalid(
            "image",
            format!("is more than {} MiB", images::MAX_INIT_IMAGE_BYTES >> 20),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| invalid("image", "is not valid base64"))
}

/// Opens the request's model: the default image model when it names none.
async fn open(host: &Arc<ModelHost>, read: &Read) -> Result<Arc<Served>, ApiError> {
    // OpenAI's own model names mean "the node's default image model".
    let model = match read.model.as_deref() {
        None | Some("dall-e-2" | "dall-e-3" | "gpt-image-1" | "gpt-image-1-mini") => None,
        Some(m) => Some(m),
    };
    Ok(host.open_image(model, read.lora.as_deref()).await?)
}

fn usage(outcome_in: u64, outcome_out: u64) -> Value {
    json!({
        "input_tokens": outcome_in,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": outcome_in},
        "output_tokens": outcome_out,
        "output_tokens_details": {"image_tokens": outcome_out, "text_tokens": 0},
        "total_tokens": outcome_in + outcome_out,
    })
}

fn receipts_header(mut response: Response, outcome: &ImagesOutcome) -> Response {
    let ids: Vec<String> = outcome
        .images
        .iter()
        .map(|i| i.receipt.to_string())
        .collect();
    if let Ok(v) = HeaderValue::from_str(&ids.join(",")) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(aura_host::RECEIPT_HEADER), v);
    }
    response
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// OpenAI's answer to a request that was not streamed.
fn images_response(outcome: &ImagesOutcome, output: aura_host::OutputFormat) -> Response {
    let body = json!({
        "created": unix_now(),
        "data": outcome.images.iter().map(|i| json!({"b64_json": b64(&i.png), "revised_prompt": null})).collect::<Vec<_>>(),
        "background": "opaque",
        "output_format": output.name(),
        "size": format!("{}x{}", outcome.width, outcome.height),
        "usage": usage(outcome.input_tokens, outcome.output_tokens),
        "aura": {
            "receipts": outcome.images.iter().map(|i| i.receipt.to_string()).collect::<Vec<_>>(),
            "seeds": outcome.images.iter().map(|i| i.seed).collect::<Vec<_>>(),
            "parameters": outcome.images.iter().map(|i| i.parameters.clone()).collect::<Vec<_>>(),
        },
    });
    receipts_header(ApiJson(body).into_response(), outcome)
}

/// Runs a read request: JSON, or a stream of OpenAI's image events (`kind` is
/// `image_generation` or `image_edit`).
async fn run(state: &AppState, read: Read, kind: &'static str) -> Result<Response, ApiError> {
    let host = host(state)?.clone();
    let served = open(&host, &read).await?;
    if !read.stream {
        let outcome = host.generate_images(&served, &read.request, None).await?;
        return Ok(images_response(&outcome, read.request.output));
    }
    // Checked before the stream starts, so a bad request is an ordinary error answer.
    if let aura_host::Engine::Image(engine) = served.engine() {
        read.request.check(engine)?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Event>(16);
    let request = read.request;
    tokio::spawn(async move {
        let created = unix_now();
        let work = host.generate_images(&served, &request, Some(tx));
        tokio::pin!(work);
        let mut done = None;
        let side = |w: Option<u32>| w.map_or_else(|| "auto".to_owned(), |v| v.to_string());
        let size = format!("{}x{}", side(request.width), side(request.height));
        loop {
            tokio::select! {
                result = &mut work, if done.is_none() => done = Some(result),
                event = rx.recv() => match event {
                    Some(ImageEvent::Preview { png, index, .. }) => {
                        let e = json!({
                            "type": format!("{kind}.partial_image"),
                            "b64_json": b64(&png),
                            "background": "opaque",
                            "created_at": created,
                            "output_format": "png",
                            "partial_image_index": index,
                            "quality": "auto",
                            "size": size,
                        });
                        if out_tx.send(named(&format!("{kind}.partial_image"), &e)).await.is_err() {
                            // The caller went away: dropping `work` stops the generation.
                            return;
                        }
                    }
                    // Progress alone is not sent on; a caller gone stops the work.
                    Some(_) if out_tx.is_closed() => return,
                    Some(_) => {}
                    None => break,
                },
            }
        }
        let result = match done {
            Some(r) => r,
            None => work.await,
        };
        match result {
            Ok(outcome) => {
                let size = format!("{}x{}", outcome.width, outcome.height);
                let per = outcome.images.len().max(1) as u64;
                for image in &outcome.images {
                    let e = json!({
                        "type": format!("{kind}.completed"),
                        "b64_json": b64(&image.png),
                        "background": "opaque",
                        "created_at": created,
                        "output_format": request.output.name(),
                        "quality": "auto",
                        "size": size,
                        "usage": usage(outcome.input_tokens / per, outcome.output_tokens / per),
                        "aura": {"receipt": image.receipt.to_string(), "seed": image.seed, "parameters": image.parameters},
                    });
                    if out_tx
                        .send(named(&format!("{kind}.completed"), &e))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                let _ = out_tx
                    .send(Event::default().event("error").data(
                        json!({"type": "error", "error": {"message": e.message, "type": e.kind, "code": e.code}})
                            .to_string(),
                    ))
                    .await;
            }
        }
    });
    let stream = futures_util::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn named(event: &str, data: &Value) -> Event {
    Event::default().event(event).data(data.to_string())
}

fn caller_may_generate(caller: &Caller) -> Result<(), ApiError> {
    require(caller, &[Role::Operator, Role::Agent])
}

/// Makes images from a prompt. OpenAI's Images API (`prompt`, `model`, `n`, `size`,
/// `response_format` b64_json, `output_format` png, jpeg or webp, `stream` with `partial_images`), plus
/// Aura's `seed`, `steps`, `guidance_scale`, `negative_prompt`, `scheduler` and `lora`.
#[utoipa::path(post, path = "/v1/images/generations", tag = "openai",
    request_body(content = Object, description = "OpenAI's image generation request, plus Aura's seed, steps, guidance_scale, negative_prompt, scheduler, lora"),
    responses(
        (status = 200, description = "The images as b64_json (or, with stream, SSE events image_generation.partial_image and image_generation.completed)"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn generations(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller_may_generate(&caller)?;
    let fields = body.as_object().ok_or_else(|| {
        ApiError::bad_request("invalid_json", "the request body must be a JSON object")
    })?;
    let read = read_openai(fields, false)?;
    run(&state, read, "image_generation").await
}

/// The parts of a `multipart/form-data` body (RFC 7578) with `boundary`: each part's
/// field name, file name (if any) and bytes. The body is bounded by the route's body limit;
/// a malformed form is an error naming what is wrong.
fn form_parts(body: &[u8], boundary: &str) -> Result<Vec<(String, bool, Vec<u8>)>, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(
            "invalid_multipart",
            format!("the form cannot be read: {why}"),
        )
    };
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0).ok_or_else(|| bad("no boundary line"))? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return Err(bad("a boundary line does not end with CRLF"));
        }
        at += 2;
        let head_end =
            find(body, b"\r\n\r\n", at).ok_or_else(|| bad("a part has no header end"))?;
        let head = std::str::from_utf8(&body[at..head_end])
            .map_err(|_| bad("a part's headers are not UTF-8"))?;
        let mut name = None;
        let mut file = false;
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if !key.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in value.split(';').map(str::trim) {
                if let Some(v) = param.strip_prefix("name=") {
                    name = Some(v.trim_matches('"').to_owned());
                } else if param.starts_with("filename=") {
                    file = true;
                }
            }
        }
        let name = name.ok_or_else(|| bad("a part has no field name"))?;
        let data_start = head_end + 4;
        let mut end_marker = b"\r\n".to_vec();
        end_marker.extend_from_slice(delimiter);
        let data_end = find(body, &end_marker, data_start)
            .ok_or_else(|| bad("a part has no closing boundary"))?;
        parts.push((name, file, body[data_start..data_end].to_vec()));
        at = data_end + end_marker.len();
    }
}

/// Reads a multipart edit: its text fields as JSON values (numbers and booleans parsed),
/// its `image` (or `image[]`) file as base64.
fn multipart_fields(body: &[u8], boundary: &str) -> Result<Map<String, Value>, ApiError> {
    let mut fields = Map::new();
    for (name, _file, bytes) in form_parts(body, boundary)? {
        if name == "image" || name == "image[]" {
            if fields.contains_key("image") {
                return Err(invalid("image", "give one image to start from"));
            }
            fields.insert("image".into(), Value::String(b64(&bytes)));
            continue;
        }
        if name == "mask" {
            return Err(invalid(
                "mask",
                "inpainting with a mask is not supported yet",
            ));
        }
        let text = String::from_utf8(bytes).map_err(|_| invalid(&name, "must be UTF-8 text"))?;
        let value = match name.as_str() {
            "n" | "seed" | "steps" | "partial_images" | "output_compression" => text
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| invalid(&name, "must be a whole number"))?,
            "guidance_scale" | "strength" => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| invalid(&name, "must be a number"))?,
            "stream" => Value::Bool(text == "true"),
            _ => Value::String(text),
        };
        fields.insert(name, value);
    }
    Ok(fields)
}

/// Makes images from an image and a prompt (img2img): OpenAI's edits request as
/// multipart (the SDKs' form, `image` a PNG file) or JSON (`image` base64 or a data:
/// URL), with Aura's `strength` and the generation fields.
#[utoipa::path(post, path = "/v1/images/edits", tag = "openai",
    request_body(content = Object, description = "OpenAI's image edit request (multipart or JSON): image (PNG), prompt, plus Aura's strength, seed, steps, guidance_scale, negative_prompt, scheduler, lora"),
    responses(
        (status = 200, description = "The images as b64_json (or, with stream, SSE events image_edit.partial_image and image_edit.completed)"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn edits(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    caller_may_generate(&caller)?;
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("multipart/form-data"))
        .map(|v| {
            v.split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .map(|b| b.trim_matches('"').to_owned())
                .next()
        });
    let fields = match boundary {
        Some(None) => {
            return Err(ApiError::bad_request(
                "invalid_multipart",
                "the form's content type names no boundary",
            ));
        }
        Some(Some(boundary)) => {
            let body = axum::body::to_bytes(request.into_body(), state.limits.body_bytes)
                .await
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid_multipart",
                        format!("the form cannot be read: {}", crate::error::error_line(&e)),
                    )
                })?;
            multipart_fields(&body, &boundary)?
        }
        None => {
            let ApiJson(body) = ApiJson::<Value>::from_request(request, &state).await?;
            body.as_object().cloned().ok_or_else(|| {
                ApiError::bad_request("invalid_json", "the request body must be a JSON object")
            })?
        }
    };
    let read = read_openai(&fields, true)?;
    run(&state, read, "image_edit").await
}

// ---------------------------------------------------------------------------------------
// AUTOMATIC1111's API

/// A1111's sampler names and Aura's schedulers.
const SAMPLERS: &[(&str, &str)] = &[
    ("Euler a", "euler_a"),
    ("Euler", "euler"),
    ("DDIM", "ddim"),
    ("DPM++ 2M", "dpmpp_2m"),
    ("LCM", "lcm"),
];

const A1111_FIELDS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "sampler_name",
    "sampler_index",
    "scheduler",
    "batch_size",
    "n_iter",
    "init_images",
    "denoising_strength",
    "send_images",
    "save_images",
    "override_settings",
    "model",
    "lora",
];

fn read_a1111(fields: &Map<String, Value>, img2img: bool) -> Result<Read, ApiError> {
    for (field, value) in fields {
        if !A1111_FIELDS.contains(&field.as_str()) && !value.is_null() {
            return Err(invalid(
                field,
                "is not a parameter this node knows or honours; remove it (docs/images.md lists them)",
            ));
        }
    }
    let mut model = string(fields, "model")?;
    if let Some(Value::Object(o)) = fields.get("override_settings") {
        for (k, v) in o {
            match (k.as_str(), v) {
                ("sd_model_checkpoint", Value::String(m)) => model = Some(m.clone()),
                _ => {
                    return Err(invalid(
                        "override_settings",
                        format!("`{k}` is not supported"),
                    ));
                }
            }
        }
    }
    let seed = match fields.get("seed") {
        None | Some(Value::Null) => None,
        // A1111's -1 asks for a random seed: Aura draws none, so that the same request
        // gives the same image; -1 means 0.
        Some(v) if v.as_i64() == Some(-1) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| invalid("seed", "must be -1 or a whole number"))?,
        ),
    };
    let scheduler = match string(fields, "sampler_name")?.or(string(fields, "sampler_index")?) {
        None => None,
        Some(s) => Some(
            SAMPLERS
                .iter()
                .find(|(a, _)| *a == s)
                .map(|(_, ours)| (*ours).to_owned())
                .ok_or_else(|| {
                    invalid(
                        "sampler_name",
                        format!(
                            "`{s}` is not one of {}",
                            SAMPLERS
                                .iter()
                                .map(|(a, _)| *a)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?,
        ),
    };
    let batch = uint(fields, "batch_size", 64)?.unwrap_or(1);
    let iters = uint(fields, "n_iter", 64)?.unwrap_or(1);
    let init_image = match fields.get("init_images") {
        Some(Value::Array(a)) if img2img && a.len() == 1 => match &a[0] {
            Value::String(s) => Some(decode_b64_image(s)?),
            _ => return Err(invalid("init_images", "must hold one base64 PNG")),
        },
        None | Some(Value::Null) if !img2img => None,
        _ if img2img => return Err(invalid("init_images", "must hold exactly one base64 PNG")),
        _ => return Err(invalid("init_images", "is for /sdapi/v1/img2img")),
    };
    let strength = if img2img {
        number(fields, "denoising_strength")?.or(Some(0.75))
    } else {
        None
    };
    Ok(Read {
        model,
        lora: string(fields, "lora")?,
        request: ImageRequest {
            prompt: string(fields, "prompt")?.unwrap_or_default(),
            negative_prompt: string(fields, "negative_prompt")?.unwrap_or_default(),
            n: Some(u32::try_from(batch * iters).unwrap_or(u32::MAX)),
            width: uint(fields, "width", u64::from(u32::MAX))?.map(|v| v as u32),
            height: uint(fields, "height", u64::from(u32::MAX))?.map(|v| v as u32),
            steps: uint(fields, "steps", u64::from(u32::MAX))?.map(|v| v as u32),
            guidance_scale: number(fields, "cfg_scale")?,
            scheduler,
            seed,
            strength,
            init_image,
            previews: Previews::None,
            // A1111's clients read `images` as PNG.
            output: aura_host::OutputFormat::Png,
        },
        stream: false,
    })
}

async fn a1111(state: &AppState, body: &Value, img2img: bool) -> Result<Response, ApiError> {
    let fields = body.as_object().ok_or_else(|| {
        ApiError::bad_request("invalid_json", "the request body must be a JSON object")
    })?;
    let read = read_a1111(fields, img2img)?;
    let host = host(state)?.clone();
    let served = open(&host, &read).await?;
    let outcome = host.generate_images(&served, &read.request, None).await?;
    let first = outcome.images.first();
    let info = json!({
        "prompt": read.request.prompt,
        "negative_prompt": read.request.negative_prompt,
        "seed": first.map_or(0, |i| i.seed),
        "all_seeds": outcome.images.iter().map(|i| i.seed).collect::<Vec<_>>(),
        "width": outcome.width,
        "height": outcome.height,
        "sd_model_name": served.name(),
        "receipts": outcome.images.iter().map(|i| i.receipt.to_string()).collect::<Vec<_>>(),
        "parameters": outcome.images.iter().map(|i| i.parameters.clone()).collect::<Vec<_>>(),
    });
    let body = json!({
        "images": outcome.images.iter().map(|i| b64(&i.png)).collect::<Vec<_>>(),
        "parameters": body,
        "info": info.to_string(),
    });
    Ok(receipts_header(ApiJson(body).into_response(), &outcome))
}

/// AUTOMATIC1111's text-to-image route (`prompt`, `negative_prompt`, `seed`, `steps`,
/// `cfg_scale`, `width`, `height`, `sampler_name`, `batch_size`, `n_iter`).
#[utoipa::path(post, path = "/sdapi/v1/txt2img", tag = "images",
    request_body(content = Object, description = "A1111's txt2img request"),
    responses((status = 200, description = "`images` (base64 PNGs), `parameters`, `info`"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn txt2img(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller_may_generate(&caller)?;
    a1111(&state, &body, false).await
}

/// AUTOMATIC1111's image-to-image route (txt2img's fields plus `init_images` and
/// `denoising_strength`).
#[utoipa::path(post, path = "/sdapi/v1/img2img", tag = "images",
    request_body(content = Object, description = "A1111's img2img request"),
    responses((status = 200, description = "`images` (base64 PNGs), `parameters`, `info`"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn img2img(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller_may_generate(&caller)?;
    a1111(&state, &body, true).await
}

// ---------------------------------------------------------------------------------------
// WebSocket progress

/// ComfyUI's binary preview frame: event 1 (a preview image), format 2 (PNG), the image.
fn preview_frame(png: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + png.len());
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&2u32.to_be_bytes());
    frame.extend_from_slice(png);
    frame
}

/// Image generation with live progress over a WebSocket. The client sends one text
/// message, a generation request as `/v1/images/generations` takes it (with `stream`
/// and `partial_images` left out); the node answers `{"type":"progress","data":{"value",
/// "max","image"}}` after each step, a binary preview frame after each step (ComfyUI's
/// framing: u32 event 1, u32 format 2 = PNG, then the PNG), `{"type":"image","data":
/// {"index","b64_json","receipt","seed","parameters"}}` per image, then
/// `{"type":"done"}` and closes. `{"type":"cancel"}` (or closing the socket) stops the
/// work at its next step.
#[utoipa::path(get, path = "/v1/images/ws", tag = "images",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn progress_socket(
    State(state): State<AppState>,
    caller: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Who may, first: the upgrade's own checks come after the role's.
    caller_may_generate(&caller)?;
    let ws = ws.map_err(|e| {
        ApiError::bad_request(
            "websocket_required",
            format!("this route speaks WebSocket only: {}", e.body_text()),
        )
    })?;
    let host = host(&state)?.clone();
    Ok(ws.on_upgrade(move |socket| serve_socket(socket, host)))
}

async fn send_json(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn serve_socket(mut socket: WebSocket, host: Arc<ModelHost>) {
    let error = |e: ApiError| json!({"type": "error", "error": {"message": e.message, "type": e.kind, "code": e.code}});
    let first = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return,
        }
    };
    let read = serde_json::from_str::<Value>(first.as_str())
        .ok()
        .and_then(|v| v.as_object().cloned())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_json", "the first message must be a JSON object")
        })
        .and_then(|fields| {
            if fields.contains_key("stream") || fields.contains_key("partial_images") {
                return Err(invalid(
                    "stream",
                    "the socket streams every step; leave stream and partial_images out",
                ));
            }
            read_openai(&fields, fields.contains_key("image"))
        });
    let mut read = match read {
        Ok(r) => r,
        Err(e) => {
            let _ = send_json(&mut socket, error(e)).await;
            return;
        }
    };
    read.request.previews = Previews::Every;
    let served = match open(&host, &read).await {
        Ok(s) => s,
        Err(e) => {
            let _ = send_json(&mut socket, error(e)).await;
            return;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = read.request;
    let work = host.generate_images(&served, &request, Some(tx));
    tokio::pin!(work);
    let mut result = None;
    loop {
        tokio::select! {
            r = &mut work, if result.is_none() => result = Some(r),
            event = rx.recv() => {
                let sent = match event {
                    Some(ImageEvent::Progress { image, step, steps }) => {
                        send_json(&mut socket, json!({"type": "progress", "data": {"value": step, "max": steps, "image": image}})).await
                    }
                    Some(ImageEvent::Preview { png, .. }) => {
                        socket.send(Message::Binary(preview_frame(&png).into())).await.is_ok()
                    }
                    Some(ImageEvent::Image { .. }) => true,
                    None => break,
                };
                if !sent {
                    // The socket is gone: dropping `work` stops the generation.
                    return;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(t)))
                    if serde_json::from_str::<Value>(t.as_str())
                        .is_ok_and(|v| v["type"] == "cancel") =>
                {
                    let _ = send_json(&mut socket, json!({"type": "cancelled"})).await;
                    return;
                }
                Some(Ok(_)) => {}
                // Closed or broken: stop.
                _ => return,
            },
        }
    }
    let result = match result {
        Some(r) => r,
        None => work.await,
    };
    match result {
        Ok(outcome) => {
            for (index, image) in outcome.images.iter().enumerate() {
                let m = json!({"type": "image", "data": {
                    "index": index, "b64_json": b64(&image.png), "receipt": image.receipt.to_string(),
                    "seed": image.seed, "parameters": image.parameters,
                }});
                if !send_json(&mut socket, m).await {
                    return;
                }
            }
            let _ = send_json(&mut socket, json!({"type": "done"})).await;
        }
        Err(e) => {
            let _ = send_json(&mut socket, error(e.into())).await;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generations))
        .routes(routes!(edits))
        .routes(routes!(txt2img))
        .routes(routes!(img2img))
        .routes(routes!(progress_socket))
}
