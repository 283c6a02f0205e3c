//! `aura.inference.v1.Inference`: the node's models over gRPC, the streaming twin of its
//! OpenAI-compatible HTTP API. Both read their wire format into [`aura_host::requests`]
//! and run on the same [`ModelHost`] (a chat streams through [`ModelHost::chat_stream`],
//! as the HTTP route's does), so they check, refuse and answer alike; every completed
//! request leaves one signed usage receipt.

use std::pin::Pin;
use std::sync::Arc;

use aura_host::requests::{self, fingerprint, finish_reason, generation_finish};
use aura_host::{
    ChatDelta, ChatError, ChatEvent, Constraint, Engine, GenerateRequest, ImageEvent, ImageRequest,
    ModelError, ModelHost, Previews, Prompt, ReceiptId, Served, TokenEvent, TokenLogprobs,
};
use aura_reasoner::ToolChoice;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::proto::aura::inference::v1 as pb;
use pb::inference_server::Inference as InferenceApi;

/// The response header naming the usage receipt (as the HTTP API's).
pub const RECEIPT_HEADER: &str = aura_host::RECEIPT_HEADER;
/// `max_tokens` of a completion that sets none (OpenAI's default).
const COMPLETE_DEFAULT_MAX_TOKENS: u32 = 16;

/// The inference service over a node's models.
#[derive(Debug, Clone)]
pub struct Inference {
    host: Arc<ModelHost>,
}

impl Inference {
    pub fn new(host: Arc<ModelHost>) -> Self {
        Inference { host }
    }
}

/// A model refusal as a gRPC status: the HTTP-style status picks the code, the message
/// says why.
pub(crate) fn status(e: ModelError) -> Status {
    use tonic::Code;
    let code = match e.status {
        400 | 413 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        402 | 403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, e.message)
}

fn chat_status(e: ChatError) -> Status {
    match e {
        ChatError::Host(e) => status(e),
        ChatError::Reasoner(e) => Status::invalid_argument(e.to_string()),
    }
}

fn invalid(param: &str, message: impl std::fmt::Display) -> Status {
    status(requests::invalid(param, message))
}

fn model_name(model: &str) -> Result<(), Status> {
    if model.is_empty() {
        return Err(invalid("model", "is required"));
    }
    Ok(())
}

fn sampling(s: Option<pb::Sampling>) -> requests::Sampling {
    let s = s.unwrap_or_default();
    requests::Sampling {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
        stop: s.stop,
    }
}

/// JSON text of `param`, or why it is not JSON.
fn json(param: &str, text: &str) -> Result<serde_json::Value, Status> {
    serde_json::from_str(text).map_err(|e| invalid(param, format!("is not JSON: {e}")))
}

fn count(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// A chat request as the host takes it, with the alternatives per token to return.
pub(crate) fn plan_chat(req: pb::ChatRequest) -> Result<(requests::ChatPlan, u8), Status> {
    model_name(&req.model)?;
    let max_tokens = requests::max_tokens(&[("max_tokens", req.max_tokens)]).map_err(status)?;
    let top = count(req.top_logprobs);
    let logprobs = requests::chat_logprobs(req.logprobs, top).map_err(status)?;
    let messages = req
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(aura_reasoner::Message {
                role: requests::role(&format!("messages[{i}].role"), &m.role).map_err(status)?,
                content: m.content,
                tool_calls: m
                    .tool_calls
                    .into_iter()
                    .map(|c| requests::tool_call(c.id, c.name, c.arguments))
                    .collect(),
                tool_call_id: m.tool_call_id,
                name: m.name,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let tools = req
        .tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let param = format!("tools[{i}].parameters");
            let parameters = if t.parameters.trim().is_empty() {
                None
            } else {
                Some(json(&param, &t.parameters)?)
            };
            let description = Some(t.description).filter(|d| !d.is_empty());
            requests::tool(&param, t.name, description, parameters).map_err(status)
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let tool_choice = match req.tool_choice.and_then(|c| c.choice) {
        None => ToolChoice::Auto,
        Some(pb::tool_choice::Choice::Function(name)) => ToolChoice::Tool(name),
        Some(pb::tool_choice::Choice::Mode(mode)) => match pb::tool_choice::Mode::try_from(mode) {
            Ok(pb::tool_choice::Mode::Auto) => ToolChoice::Auto,
            Ok(pb::tool_choice::Mode::None) => ToolChoice::None,
            Ok(pb::tool_choice::Mode::Required) => ToolChoice::Required,
            Err(_) => return Err(invalid("tool_choice.mode", format!("{mode} is not a mode"))),
        },
    };
    let format = match req.response_format {
        None => None,
        Some(f) => match pb::response_format::Type::try_from(f.r#type) {
            Ok(pb::response_format::Type::Text) | Ok(pb::response_format::Type::JsonObject)
                if !f.schema.is_empty() =>
            {
                return Err(invalid(
                    "response_format.schema",
                    "is only read with TYPE_JSON_SCHEMA",
                ));
            }
            Ok(pb::response_format::Type::Text) => None,
            Ok(pb::response_format::Type::JsonObject) => Some(Constraint::JsonObject),
            Ok(pb::response_format::Type::JsonSchema) => {
                if f.schema.trim().is_empty() {
                    return Err(invalid(
                        "response_format.schema",
                        "TYPE_JSON_SCHEMA needs one",
                    ));
                }
                let schema = json("response_format.schema", &f.schema)?;
                Some(requests::json_schema("response_format.schema", schema).map_err(status)?)
            }
            Err(_) => {
                return Err(invalid(
                    "response_format.type",
                    format!("{} is not a type", f.r#type),
                ));
            }
        },
    };
    let plan = requests::chat(requests::ChatParts {
        messages,
        tools,
        tool_choice,
        format,
        max_tokens,
        sampling: sampling(req.sampling),
        logprobs,
    })
    .map_err(status)?;
    Ok((plan, top))
}

/// A completion request as the host takes it.
pub(crate) fn plan_complete(req: pb::CompleteRequest) -> Result<GenerateRequest, Status> {
    model_name(&req.model)?;
    let prompt = match (req.prompt.is_empty(), req.prompt_tokens.is_empty()) {
        (false, true) => Prompt::Text(req.prompt),
        (true, false) => Prompt::Tokens(req.prompt_tokens),
        (true, true) => return Err(invalid("prompt", "give prompt or prompt_tokens")),
        (false, false) => {
            return Err(invalid("prompt", "give prompt or prompt_tokens, not both"));
        }
    };
    let max = requests::max_tokens(&[("max_tokens", req.max_tokens)])
        .map_err(status)?
        .unwrap_or(COMPLETE_DEFAULT_MAX_TOKENS);
    requests::completion(
        prompt,
        &sampling(req.sampling),
        max,
        req.logprobs.map(count),
    )
    .map_err(status)
}

fn logprobs(l: &[TokenLogprobs], top: u8) -> Vec<pb::TokenLogprob> {
    l.iter()
        .map(|t| pb::TokenLogprob {
            token: t.text.clone(),
            logprob: t.logprob,
            top: t
                .top
                .iter()
                .take(usize::from(top))
                .map(|a| pb::TopLogprob {
                    token: a.text.clone(),
                    logprob: a.logprob,
                })
                .collect(),
        })
        .collect()
}

fn usage(prompt: u64, completion: u64) -> pb::Usage {
    pb::Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
    }
}

fn with_receipt<T>(mut response: Response<T>, receipt: &str) -> Response<T> {
    if let Ok(value) = MetadataValue::try_from(receipt) {
        response.metadata_mut().insert(RECEIPT_HEADER, value);
    }
    response
}

type Events<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The stream of a producing task's events; it ends when the task does.
fn events<T: Send + 'static>(rx: mpsc::Receiver<Result<T, Status>>) -> Events<T> {
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl InferenceApi for Inference {
    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        // Hashing a package's files is blocking work, and one that fails its check is
        // left out, as `GET /v1/models` does.
        let models = self
            .host
            .list_async()
            .await
            .map_err(status)?
            .into_iter()
            .map(|c| pb::Model {
                name: c.name,
                digest: c.digest.to_hex(),
                architecture: c.architecture,
                kind: if c.image {
                    pb::model::Kind::Image
                } else if c.generator {
                    pb::model::Kind::Chat
                } else {
                    pb::model::Kind::Embedding
                } as i32,
                created: c.created_at.as_secs(),
                publisher: c.publisher,
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    type ChatStream = Events<pb::ChatEvent>;

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let req = request.into_inner();
        let model = req.model.clone();
        let (plan, top) = plan_chat(req)?;
        // Checked as the HTTP route checks it: a model that generates, and room in its
        // context for the token limit after the prompt.
        let served = self
            .host
            .open_chat(&model, "max_tokens", &plan)
            .await
            .map_err(chat_status)?;
        // The response stream drives the chat: a client that goes away drops it, which
        // stops the generation, and no receipt is recorded.
        let chat = self.host.chat_stream(served.clone(), plan);
        let receipt = chat.receipt().to_string();
        let events = chat.map(move |event| chat_event(&served, top, event));
        Ok(with_receipt(Response::new(Box::pin(events)), &receipt))
    }

    type CompleteStream = Events<pb::CompleteEvent>;

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<Self::CompleteStream>, Status> {
        let req = request.into_inner();
        let model = req.model.clone();
        let top = req.logprobs.map_or(0, count);
        // A limit left unset is the default, which is not checked against the context (as
        // over HTTP).
        let limit = req.max_tokens.map(|max| ("max_tokens", max));
        let generate = plan_complete(req)?;
        let host = self.host.clone();
        let served = host
            .open_completion(&model, &generate.prompt, limit)
            .await
            .map_err(status)?;
        let receipt = ModelHost::new_receipt_id();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(stream_complete(host, served, generate, top, receipt, tx));
        Ok(with_receipt(
            Response::new(events(rx)),
            &receipt.to_string(),
        ))
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let req = request.into_inner();
        model_name(&req.model)?;
        requests::embedding_inputs(&req.input).map_err(status)?;
        let served = self.host.open(&req.model).await.map_err(status)?;
        let dimensions = served.encoder().map_err(status)?.dimension();
        let (embeddings, receipt) = self.host.embed(&served, req.input).await.map_err(status)?;
        let tokens = embeddings.token_counts.iter().map(|&n| u64::from(n)).sum();
        let receipt = receipt.to_string();
        let response = pb::EmbedResponse {
            receipt_id: receipt.clone(),
            model: served.name().to_owned(),
            embeddings: embeddings
                .vectors
                .into_iter()
                .map(|values| pb::Embedding { values })
                .collect(),
            dimensions: u32::try_from(dimensions).unwrap_or(u32::MAX),
            usage: Some(usage(tokens, 0)),
        };
        Ok(with_receipt(Response::new(response), &receipt))
    }

    type GenerateImageStream = Events<pb::ImageEvent>;

    async fn generate_image(
        &self,
        request: Request<pb::ImageRequest>,
    ) -> Result<Response<Self::GenerateImageStream>, Status> {
        let req = request.into_inner();
        let model = Some(req.model.as_str()).filter(|m| !m.is_empty());
        let served = self
            .host
            .open_image(model, req.lora.as_deref())
            .await
            .map_err(status)?;
        let previews = match (req.every_step_preview, req.partial_images) {
            (true, 0) => Previews::Every,
            (true, _) => {
                return Err(invalid(
                    "partial_images",
                    "give it or every_step_preview, not both",
                ));
            }
            (false, 0) => Previews::None,
            (false, k) => Previews::Partial(k),
        };
        let image_request = ImageRequest {
            prompt: req.prompt,
            negative_prompt: req.negative_prompt,
            n: req.n,
            width: req.width,
            height: req.height,
            steps: req.steps,
            guidance_scale: req.guidance_scale,
            scheduler: req.scheduler,
            seed: req.seed,
            previews,
            ..ImageRequest::default()
        };
        // Checked before the stream starts, so a refused request is a status, as over HTTP.
        if let Engine::Image(engine) = served.engine() {
            image_request.check(engine).map_err(status)?;
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(stream_images(self.host.clone(), served, image_request, tx));
        Ok(Response::new(events(rx)))
    }
}

/// Runs an image request, passing its progress and previews on, then its images with
/// their receipts. A client that goes away ends the task, which drops the request's
/// future: the host stops the work at its next step and records nothing more.
async fn stream_images(
    host: Arc<ModelHost>,
    served: Arc<Served>,
    request: ImageRequest,
    tx: mpsc::Sender<Result<pb::ImageEvent, Status>>,
) {
    let (progress, mut updates) = mpsc::unbounded_channel();
    let run = host.generate_images(&served, &request, Some(progress));
    tokio::pin!(run);
    let event = |e: pb::image_event::Event| Ok(pb::ImageEvent { event: Some(e) });
    let result = loop {
        tokio::select! {
            biased;
            Some(update) = updates.recv() => {
                let sent = match update {
                    ImageEvent::Progress { image, step, steps } => Some(event(
                        pb::image_event::Event::Progress(pb::ImageProgress { image, step, steps }),
                    )),
                    ImageEvent::Preview { image, step, index, png } => Some(event(
                        pb::image_event::Event::Preview(pb::ImagePreview { image, step, index, png }),
                    )),
                    // Sent below with its receipt, from the outcome.
                    ImageEvent::Image { .. } => None,
                };
                if let Some(e) = sent
                    && tx.send(e).await.is_err()
                {
                    return;
                }
            }
            result = &mut run => break result,
        }
    };
    match result {
        Ok(outcome) => {
            for (index, image) in (0u32..).zip(outcome.images) {
                let parameters = aura_core::jcs::to_vec(&image.parameters)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                let image = pb::Image {
                    index,
                    png: image.png,
                    receipt_id: image.receipt.to_string(),
                    seed: image.seed,
                    parameters,
                };
                if tx
                    .send(event(pb::image_event::Event::Image(image)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        Err(e) => {
            let _ = tx.send(Err(status(e))).await;
        }
    }
}

/// One event of a chat's stream in the wire's terms: a delta, or the final event with the
/// receipt id (recorded by then), or the status the chat failed with.
fn chat_event(served: &Served, top: u8, event: ChatEvent) -> Result<pb::ChatEvent, Status> {
    let number = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    let event = match event {
        ChatEvent::Delta(ChatDelta::Text(t)) => pb::chat_event::Event::Text(t),
        ChatEvent::Delta(ChatDelta::CallStarted { index, id, name }) => {
            pb::chat_event::Event::ToolCall(pb::ToolCallDelta {
                index: number(index),
                id,
                name,
                arguments: String::new(),
            })
        }
        ChatEvent::Delta(ChatDelta::CallArguments { index, fragment }) => {
            pb::chat_event::Event::ToolCall(pb::ToolCallDelta {
                index: number(index),
                id: String::new(),
                name: String::new(),
                arguments: fragment,
            })
        }
        ChatEvent::Done(Ok((outcome, id))) => {
            let turn = outcome.turn;
            pb::chat_event::Event::Done(pb::ChatDone {
                receipt_id: id.to_string(),
                model: served.name().to_owned(),
                system_fingerprint: fingerprint(served),
                finish_reason: finish_reason(&turn.finish).to_owned(),
                message: Some(pb::Message {
                    role: "assistant".into(),
                    tool_calls: turn
                        .tool_calls
                        .iter()
                        .map(|c| pb::ToolCall {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            arguments: requests::arguments_text(c),
                        })
                        .collect(),
                    content: turn.content,
                    tool_call_id: None,
                    name: None,
                }),
                usage: Some(usage(
                    turn.usage.prompt_tokens,
                    turn.usage.completion_tokens,
                )),
                logprobs: outcome
                    .logprobs
                    .as_deref()
                    .map(|l| logprobs(l, top))
                    .unwrap_or_default(),
            })
        }
        ChatEvent::Done(Err(e)) => return Err(chat_status(e)),
    };
    Ok(pb::ChatEvent { event: Some(event) })
}

/// Runs a completion, sending its text as it comes and the final event once the receipt
/// is recorded. A client that goes away (the stream dropped) stops the generation, and no
/// receipt is recorded then.
async fn stream_complete(
    host: Arc<ModelHost>,
    served: Arc<Served>,
    generate: GenerateRequest,
    top: u8,
    receipt: ReceiptId,
    tx: mpsc::Sender<Result<pb::CompleteEvent, Status>>,
) {
    let (etx, mut erx) = mpsc::unbounded_channel::<TokenEvent>();
    let forward = {
        let tx = tx.clone();
        async move {
            while let Some(e) = erx.recv().await {
                if e.text.is_empty() {
                    continue;
                }
                let event = pb::CompleteEvent {
                    event: Some(pb::complete_event::Event::Text(e.text)),
                };
                // A client gone: dropping the receiver cancels the generation.
                if tx.send(Ok(event)).await.is_err() {
                    break;
                }
            }
        }
    };
    let work = host.complete(&served, generate, Some(etx), Some(receipt));
    let (result, ()) = tokio::join!(work, forward);
    let last = match result {
        Ok((g, id)) => Ok(pb::CompleteEvent {
            event: Some(pb::complete_event::Event::Done(pb::CompleteDone {
                receipt_id: id.to_string(),
                model: served.name().to_owned(),
                system_fingerprint: fingerprint(&served),
                finish_reason: generation_finish(g.finish).to_owned(),
                usage: Some(usage(
                    u64::from(g.prompt_tokens),
                    u64::from(g.completion_tokens),
                )),
                logprobs: g
                    .logprobs
                    .as_deref()
                    .map(|l| logprobs(l, top))
                    .unwrap_or_default(),
                text: g.text,
            })),
        }),
        // Cancelled: nobody is listening.
        Err(e) if e.status == 499 => return,
        Err(e) => Err(status(e)),
    };
    let _ = tx.send(last).await;
}

#[cfg(test)]
mod tests {
    use aura_reasoner::Role;
    use serde_json::json;

    use super::*;

    fn user(text: &str) -> pb::Message {
        pb::Message {
            role: "user".into(),
            content: text.into(),
            ..Default::default()
        }
    }

    fn chat(edit: impl FnOnce(&mut pb::ChatRequest)) -> Result<(requests::ChatPlan, u8), Status> {
        let mut req = pb::ChatRequest {
            model: "m".into(),
            messages: vec![user("hi")],
            ..Default::default()
        };
        edit(&mut req);
        plan_chat(req)
    }

    #[test]
    fn every_chat_field_maps_onto_the_reasoner_request() {
        let (plan, top) = chat(|r| {
            r.messages = vec![
                pb::Message {
                    role: "developer".into(),
                    content: "Be brief.".into(),
                    ..Default::default()
                },
                user("Weather?"),
                pb::Message {
                    role: "assistant".into(),
                    tool_calls: vec![pb::ToolCall {
                        id: "c1".into(),
                        name: "w".into(),
                        arguments: r#"{"city": "Oslo"}"#.into(),
                    }],
                    ..Default::default()
                },
                pb::Message {
                    role: "tool".into(),
                    content: "rain".into(),
                    tool_call_id: Some("c1".into()),
                    name: Some("w".into()),
                    ..Default::default()
                },
            ];
            r.tools = vec![pb::Tool {
                name: "w".into(),
                description: "weather".into(),
                parameters: json!({"type": "object"}).to_string(),
            }];
            r.tool_choice = Some(pb::ToolChoice {
                choice: Some(pb::tool_choice::Choice::Function("w".into())),
            });
            r.response_format = Some(pb::ResponseFormat {
                r#type: pb::response_format::Type::JsonObject as i32,
                schema: String::new(),
            });
            r.max_tokens = Some(9);
            r.sampling = Some(pb::Sampling {
                temperature: Some(0.5),
                top_p: Some(0.9),
                top_k: Some(4),
                repetition_penalty: Some(1.1),
                seed: Some(7),
                stop: vec!["END".into()],
            });
            r.logprobs = true;
            r.top_logprobs = 2;
        })
        .unwrap();
        let r = &plan.request;
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(
            r.messages[2].tool_calls[0].arguments,
            json!({"city": "Oslo"})
        );
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.messages[3].name.as_deref(), Some("w"));
        assert_eq!(r.tools[0].description, "weather");
        assert_eq!(r.tool_choice, ToolChoice::Tool("w".into()));
        assert_eq!(
            (r.max_tokens, r.temperature, r.seed),
            (Some(9), Some(0.5), Some(7))
        );
        assert_eq!(r.stop, ["END"]);
        let o = &plan.options;
        assert_eq!(
            (o.top_p, o.top_k, o.repetition_penalty),
            (Some(0.9), Some(4), Some(1.1))
        );
        assert_eq!(o.format, Some(Constraint::JsonObject));
        assert_eq!((o.logprobs, top), (Some(2), 2));

        // The defaults: auto, text, greedy with seed 0, no parameters an empty object.
        let (plan, _) = chat(|r| {
            r.tools = vec![pb::Tool {
                name: "t".into(),
                ..Default::default()
            }];
        })
        .unwrap();
        assert_eq!(plan.request.tool_choice, ToolChoice::Auto);
        assert_eq!(plan.request.seed, Some(0));
        assert_eq!(plan.request.temperature, None);
        assert_eq!(plan.options.format, None);
        assert_eq!(plan.options.logprobs, None);
        assert_eq!(
            plan.request.tools[0].parameters,
            json!({"type": "object", "properties": {}})
        );
    }

    /// Each bad request, refused with INVALID_ARGUMENT naming the field.
    #[test]
    fn bad_chat_requests_name_the_field() {
        let check = |field: &str, edit: &dyn Fn(&mut pb::ChatRequest)| {
            let status = chat(edit).map(|_| ()).unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{field}: {status:?}"
            );
            assert!(status.message().contains(field), "{field}: {status:?}");
        };
        check("model", &|r| r.model.clear());
        check("messages", &|r| r.messages.clear());
        check("messages[0].role", &|r| {
            r.messages[0].role = "wizard".into();
        });
        check("max_tokens", &|r| r.max_tokens = Some(0));
        check("top_logprobs", &|r| r.top_logprobs = 1);
        check("top_logprobs", &|r| {
            r.logprobs = true;
            r.top_logprobs = 21;
        });
        check("temperature", &|r| {
            r.sampling = Some(pb::Sampling {
                temperature: Some(2.5),
                ..Default::default()
            });
        });
        check("stop", &|r| {
            r.sampling = Some(pb::Sampling {
                stop: vec![String::new()],
                ..Default::default()
            });
        });
        check("tools[0].parameters", &|r| {
            r.tools = vec![pb::Tool {
                name: "t".into(),
                parameters: "[1]".into(),
                ..Default::default()
            }];
        });
        check("tools[0].parameters", &|r| {
            r.tools = vec![pb::Tool {
                name: "t".into(),
                parameters: "{".into(),
                ..Default::default()
            }];
        });
        check("tool_choice", &|r| {
            r.tool_choice = Some(pb::ToolChoice {
                choice: Some(pb::tool_choice::Choice::Mode(9)),
            });
        });
        check("required", &|r| {
            r.tool_choice = Some(pb::ToolChoice {
                choice: Some(pb::tool_choice::Choice::Mode(
                    pb::tool_choice::Mode::Required as i32,
                )),
            });
        });
        check("not among the offered tools", &|r| {
            r.tool_choice = Some(pb::ToolChoice {
                choice: Some(pb::tool_choice::Choice::Function("nope".into())),
            });
        });
        check("response_format.schema", &|r| {
            r.response_format = Some(pb::ResponseFormat {
                r#type: pb::response_format::Type::JsonSchema as i32,
                schema: String::new(),
            });
        });
        check("response_format.schema", &|r| {
            r.response_format = Some(pb::ResponseFormat {
                r#type: pb::response_format::Type::Text as i32,
                schema: "{}".into(),
            });
        });
        check("multipleOf", &|r| {
            r.response_format = Some(pb::ResponseFormat {
                r#type: pb::response_format::Type::JsonSchema as i32,
                schema: json!({"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}})
                    .to_string(),
            });
        });
        check("response_format.type", &|r| {
            r.response_format = Some(pb::ResponseFormat {
                r#type: 7,
                schema: String::new(),
            });
        });
        check("tool result without a tool_call_id", &|r| {
            r.messages.push(pb::Message {
                role: "tool".into(),
                ..Default::default()
            });
        });
    }

    #[test]
    fn completions_take_one_prompt_and_default_to_sixteen_tokens() {
        let base = || pb::CompleteRequest {
            model: "m".into(),
            prompt: "The sky is".into(),
            ..Default::default()
        };
        let g = plan_complete(base()).unwrap();
        assert_eq!(g.prompt, Prompt::Text("The sky is".into()));
        assert_eq!((g.max_tokens, g.logprobs), (16, None));
        assert_eq!(g.sampling.temperature, 0.0);
        let g = plan_complete(pb::CompleteRequest {
            prompt: String::new(),
            prompt_tokens: vec![1, 2],
            logprobs: Some(3),
            max_tokens: Some(5),
            ..base()
        })
        .unwrap();
        assert_eq!(g.prompt, Prompt::Tokens(vec![1, 2]));
        assert_eq!((g.max_tokens, g.logprobs), (5, Some(3)));
        for (field, req) in [
            (
                "prompt",
                pb::CompleteRequest {
                    prompt: String::new(),
                    ..base()
                },
            ),
            (
                "prompt",
                pb::CompleteRequest {
                    prompt_tokens: vec![1],
                    ..base()
                },
            ),
            (
                "max_tokens",
                pb::CompleteRequest {
                    max_tokens: Some(0),
                    ..base()
                },
            ),
            (
                "logprobs",
                pb::CompleteRequest {
                    logprobs: Some(6),
                    ..base()
                },
            ),
            (
                "model",
                pb::CompleteRequest {
                    model: String::new(),
                    ..base()
                },
            ),
        ] {
            let status = plan_complete(req).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(field), "{field}: {status:?}");
        }
    }

    #[test]
    fn model_errors_become_grpc_codes() {
        use tonic::Code;
        for (http, code) in [
            (400, Code::InvalidArgument),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::FailedPrecondition),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (502, Code::Internal),
        ] {
            let s = status(ModelError {
                status: http,
                code: "c",
                message: "why".into(),
            });
            assert_eq!((s.code(), s.message()), (code, "why"), "{http}");
        }
    }
}
