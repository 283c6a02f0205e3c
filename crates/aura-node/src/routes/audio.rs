//! `POST /v1/audio/speech`: OpenAI's text-to-speech route, spoken by espeak-ng
//! (`crate::speech`), plus Aura's viseme timeline for lip-sync (`aura_visemes`).
//!
//! What differs from OpenAI, on purpose (docs/openai.md):
//! - `response_format` is `wav` (the default here: this node encodes no MP3) or `pcm`;
//!   `mp3`, `opus`, `aac` and `flac` are refused naming the field.
//! - `model` may be left out; `tts-1`, `tts-1-hd`, `gpt-4o-mini-tts` and `espeak-ng` all
//!   name espeak-ng. `instructions` (a speaking style) is refused unless empty.
//! - The audio is streamed as espeak-ng writes it, so the WAV header's lengths are
//!   `0xFFFFFFFF` (OpenAI does the same); with `aura_visemes` the answer is JSON with the
//!   whole WAV, exact header included, and its timeline.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiJson, error_line};
use crate::routes::agents::require;
use crate::speech::{self, AudioFormat, MAX_INPUT_CHARS, SPEED_RANGE, VOICES, Voice};

/// The request fields this route reads; any other is refused.
const FIELDS: &[&str] = &[
    "model",
    "input",
    "voice",
    "response_format",
    "speed",
    "instructions",
    "stream_format",
    "aura_visemes",
];

/// The model names that mean espeak-ng.
const MODELS: &[&str] = &["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "espeak-ng"];

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_request", format!("{field}: {why}"))
}

fn voice_names() -> String {
    VOICES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads and checks OpenAI's request body: the synthesis to run and whether the caller
/// asked for the timeline.
fn read(body: &Value) -> Result<(speech::Request, bool), ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    };
    for (field, value) in fields {
        if !FIELDS.contains(&field.as_str()) && !value.is_null() {
            return Err(invalid(
                field,
                "is not a parameter this node knows or honours; remove it (docs/openai.md lists them)",
            ));
        }
    }
    let get = |f: &str| fields.get(f).filter(|v| !v.is_null());
    if let Some(model) = get("model") {
        match model.as_str() {
            Some(m) if MODELS.contains(&m) => {}
            Some(m) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    format!(
                        "model: `{m}` is not a speech model of this node; use tts-1 (espeak-ng) or leave it out"
                    ),
                ));
            }
            None => return Err(invalid("model", "must be a string")),
        }
    }
    let input = match get("input") {
        None => return Err(invalid("input", "is required: the text to speak")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("input", "must be a string")),
    };
    if input.trim().is_empty() {
        return Err(invalid("input", "is empty: give the text to speak"));
    }
    let chars = input.chars().count();
    if chars > MAX_INPUT_CHARS {
        return Err(invalid(
            "input",
            format!("is {chars} characters long; the most is {MAX_INPUT_CHARS}"),
        ));
    }
    let voice = match get("voice") {
        None => {
            return Err(invalid(
                "voice",
                format!("is required: one of {}", voice_names()),
            ));
        }
        Some(Value::String(name)) => Voice::named(name).ok_or_else(|| {
            invalid(
                "voice",
                format!(
                    "`{}` is not a voice of this node; choose one of {}",
                    name.chars().take(64).collect::<String>(),
                    voice_names()
                ),
            )
        })?,
        Some(_) => {
            return Err(invalid(
                "voice",
                format!(
                    "must be a voice's name (custom voices are not supported): one of {}",
                    voice_names()
                ),
            ));
        }
    };
    let format = match get("response_format").map(Value::as_str) {
        None | Some(Some("wav")) => AudioFormat::Wav,
        Some(Some("pcm")) => AudioFormat::Pcm,
        Some(Some(f @ ("mp3" | "opus" | "aac" | "flac"))) => {
            return Err(invalid(
                "response_format",
                format!("`{f}` is not supported by this node (espeak-ng); use wav or pcm"),
            ));
        }
        Some(_) => {
            return Err(invalid(
                "response_format",
                "must be one of wav and pcm (mp3, opus, aac and flac are not supported here)",
            ));
        }
    };
    let speed = match get("speed") {
        None => 1.0,
        Some(v) => match v.as_f64() {
            Some(s) if SPEED_RANGE.contains(&s) => s,
            _ => {
                return Err(invalid(
                    "speed",
                    format!(
                        "must be a number from {} to {}",
                        SPEED_RANGE.start(),
                        SPEED_RANGE.end()
                    ),
                ));
            }
        },
    };
    match get("instructions") {
        None => {}
        Some(Value::String(s)) if s.trim().is_empty() => {}
        Some(_) => {
            return Err(invalid(
                "instructions",
                "is not supported: espeak-ng's voices take no speaking instructions",
            ));
        }
    }
    match get("stream_format").map(Value::as_str) {
        None | Some(Some("audio")) => {}
        Some(_) => {
            return Err(invalid(
                "stream_format",
                "only `audio` is supported (the audio streams as it is made)",
            ));
        }
    }
    let visemes = match get("aura_visemes") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("aura_visemes", "must be true or false")),
    };
    Ok((
        speech::Request {
            input,
            voice,
            speed,
            format,
        },
        visemes,
    ))
}

impl From<speech::Error> for ApiError {
    fn from(e: speech::Error) -> Self {
        use speech::Error as E;
        let message = error_line(&e);
        match e {
            E::Busy => {
                let mut busy = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "speech_busy",
                    "every speech slot is busy; try again in a moment",
                );
                busy.retry_after = Some(1);
                busy
            }
            E::TimedOut(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                "speech_timeout",
                message,
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "speech_failed",
                message,
            ),
        }
    }
}

/// Speaks `input`. As OpenAI's API: the audio (`audio/wav` or 24 kHz `audio/pcm`),
/// streamed. With `"aura_visemes": true`: JSON `{audio_b64, visemes: [{t_ms, viseme,
/// weight}], duration_ms}`, the visemes being the 15 Oculus ones, from espeak-ng's
/// phonemes aligned to the audio (an estimate; docs/openai.md says how close).
#[utoipa::path(post, path = "/v1/audio/speech", tag = "openai",
    request_body(content = Object, description = "OpenAI's speech request (`input`, `voice`, `response_format` wav or pcm, `speed`), plus Aura's `aura_visemes`"),
    responses(
        (status = 200, description = "The audio (audio/wav, audio/pcm), or with `aura_visemes` JSON with the audio and its viseme timeline"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn speech(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Operator, Role::Agent])?;
    let Some(speech) = state.speech.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "speech_off",
            "this node has no speech: espeak-ng was not found when it started (scripts/setup-speech.sh installs it)",
        ));
    };
    let (request, visemes) = read(&body)?;
    if visemes {
        let utterance = speech.synthesize(&request).await?;
        let cues: Vec<Value> = utterance
            .visemes()
            .iter()
            .map(|c| json!({"t_ms": c.t_ms, "viseme": c.viseme.as_str(), "weight": c.weight}))
            .collect();
        let audio = utterance.encode(request.format);
        return Ok(Json(json!({
            "audio_b64": base64::engine::general_purpose::STANDARD.encode(audio),
            "visemes": cues,
            "duration_ms": utterance.duration_ms(),
        }))
        .into_response());
    }
    let stream = speech.stream(&request).await?;
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut s| async move {
        let next = s.next_chunk().await?;
        Some((next.map_err(std::io::Error::other), s))
    }));
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(request.format.content_type()),
    );
    Ok(response)
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(speech))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &Value, want: Result<(&str, AudioFormat, f64, bool), &str>) {
        match (read(body), want) {
            (Ok((r, v)), Ok((voice, format, speed, visemes))) => {
                assert_eq!(
                    (r.voice.name, r.format, r.speed, v),
                    (voice, format, speed, visemes),
                    "{body}"
                );
            }
            (Err(e), Err(start)) => {
                assert!(e.message.starts_with(start), "{body}: {}", e.message);
                assert!(e.status.is_client_error());
            }
            (got, want) => panic!("{body}: got {:?}, want {want:?}", got.map(|r| r.1)),
        }
    }

    #[test]
    fn requests_are_read_as_openai_sends_them_and_bad_ones_name_their_field() {
        use AudioFormat::*;
        let long = "a".repeat(MAX_INPUT_CHARS + 1);
        let cases = [
            (
                json!({"input": "hi", "voice": "alloy"}),
                Ok(("alloy", Wav, 1.0, false)),
            ),
            (
                json!({"model": "tts-1", "input": "hi", "voice": "nova", "response_format": "pcm", "speed": 2}),
                Ok(("nova", Pcm, 2.0, false)),
            ),
            (
                json!({"input": "hi", "voice": "aura", "response_format": "wav", "speed": 1.0, "aura_visemes": true}),
                Ok(("aura", Wav, 1.0, true)),
            ),
            (
                json!({"input": "hi", "voice": "ash", "instructions": "", "stream_format": "audio", "model": null}),
                Ok(("ash", Wav, 1.0, false)),
            ),
            (
                json!({"input": "a".repeat(MAX_INPUT_CHARS), "voice": "sage"}),
                Ok(("sage", Wav, 1.0, false)),
            ),
            (json!({"voice": "alloy"}), Err("input: is required")),
            (
                json!({"input": "  \n", "voice": "alloy"}),
                Err("input: is empty"),
            ),
            (
                json!({"input": 3, "voice": "alloy"}),
                Err("input: must be a string"),
            ),
            (
                json!({"input": long, "voice": "alloy"}),
                Err("input: is 4097 characters long"),
            ),
            (json!({"input": "hi"}), Err("voice: is required")),
            (
                json!({"input": "hi", "voice": "Alloy"}),
                Err("voice: `Alloy` is not a voice"),
            ),
            (
                json!({"input": "hi", "voice": {"id": "v"}}),
                Err("voice: must be a voice's name"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "response_format": "mp3"}),
                Err("response_format: `mp3` is not supported"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "response_format": "ogg"}),
                Err("response_format: must be one of"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "speed": 0.1}),
                Err("speed: must be a number from 0.25 to 4"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "speed": "fast"}),
                Err("speed: must be a number"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "instructions": "whisper"}),
                Err("instructions: is not supported"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "stream_format": "sse"}),
                Err("stream_format: only `audio`"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "aura_visemes": "yes"}),
                Err("aura_visemes: must be true or false"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "model": "tts-2"}),
                Err("model: `tts-2` is not a speech model"),
            ),
            (
                json!({"input": "hi", "voice": "alloy", "pitch": 3}),
                Err("pitch: is not a parameter"),
            ),
            (json!(["hi"]), Err("the request body must be a JSON object")),
        ];
        for (body, want) in cases {
            check(&body, want);
        }
    }

    #[test]
    fn speeds_map_to_words_per_minute_within_espeak_ngs_range() {
        let at = |speed| {
            speech::Request {
                input: "x".into(),
                voice: Voice::named("alloy").unwrap(),
                speed,
                format: AudioFormat::Wav,
            }
            .words_per_minute()
        };
        assert_eq!(at(1.0), 175);
        assert_eq!(at(2.0), 350);
        assert_eq!(at(4.0), 700);
        assert_eq!(at(0.5), 88);
        // espeak-ng speaks no slower than 80 words a minute.
        assert_eq!(at(0.25), 80);
    }

    #[test]
    fn every_voice_maps_to_an_espeak_voice_without_echo() {
        for (name, espeak) in VOICES {
            assert_eq!(Voice::named(name).unwrap().espeak(), *espeak);
            for echoing in ["+m2", "+f2", "+f3", "+f4", "+f5", "+Alicia"] {
                assert!(!espeak.ends_with(echoing), "{name} uses {espeak}");
            }
        }
        for openai in [
            "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
            "verse",
        ] {
            assert!(Voice::named(openai).is_some(), "{openai}");
        }
    }
}
