//! JSON-RPC 2.0 as MCP uses it: requests, notifications and responses, one JSON object
//! each, parsed strictly (a batch, a wrong version tag or an id that is neither a number
//! nor a string is malformed) and with the standard error codes.

use serde_json::{Map, Value, json};

/// The MCP protocol revisions this crate speaks, newest first. A client offers the first;
/// a server answers with the client's revision when it is here, with the first otherwise.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The revision a client offers.
pub const PROTOCOL_VERSION: &str = PROTOCOL_VERSIONS[0];

/// The default bound on one message, in bytes: larger ones are refused, never buffered.
pub const MAX_MESSAGE: usize = 4 << 20;

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON that is not a valid JSON-RPC request.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The method's parameters are wrong.
pub const INVALID_PARAMS: i64 = -32602;
/// The method failed inside.
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (JSON-RPC error {code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn to_value(&self) -> Value {
        let mut o = Map::new();
        o.insert("code".into(), json!(self.code));
        o.insert("message".into(), json!(self.message));
        if let Some(d) = &self.data {
            o.insert("data".into(), d.clone());
        }
        Value::Object(o)
    }
}

/// One JSON-RPC message. Ids are kept as JSON (a number or a string).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
    Response {
        id: Value,
        result: Result<Value, RpcError>,
    },
}

/// Why bytes are not a JSON-RPC message: the error to answer with, and the request's id
/// when one could be read (a response to a malformed message carries it, or `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub id: Value,
    pub error: RpcError,
}

fn malformed(id: Value, code: i64, message: impl Into<String>) -> Box<Malformed> {
    Box::new(Malformed {
        id,
        error: RpcError::new(code, message),
    })
}

impl Message {
    /// Parses one message. Batches (arrays) are refused: MCP since 2025-06-18 sends none.
    pub fn parse(bytes: &[u8]) -> Result<Message, Box<Malformed>> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| malformed(Value::Null, PARSE_ERROR, format!("invalid JSON: {e}")))?;
        Message::from_value(value)
    }

    /// Reads a message from parsed JSON.
    pub fn from_value(value: Value) -> Result<Message, Box<Malformed>> {
        let Value::Object(mut o) = value else {
            return Err(malformed(
                Value::Null,
                INVALID_REQUEST,
                "a JSON-RPC message must be one JSON object (batches are not supported)",
            ));
        };
        let id = o.remove("id");
        let id_for_errors = match &id {
            Some(v @ (Value::Number(_) | Value::String(_))) => v.clone(),
            _ => Value::Null,
        };
        if o.get("jsonrpc") != Some(&Value::String("2.0".into())) {
            return Err(malformed(
                id_for_errors,
                INVALID_REQUEST,
                "the message's `jsonrpc` member must be \"2.0\"",
            ));
        }
        if let Some(id) = &id
            && !matches!(id, Value::Number(_) | Value::String(_))
        {
            return Err(malformed(
                Value::Null,
                INVALID_REQUEST,
                "a message id must be a number or a string",
            ));
        }
        let params = o.remove("params");
        if let Some(p) = &params
            && !matches!(p, Value::Object(_) | Value::Array(_))
        {
            return Err(malformed(
                id_for_errors,
                INVALID_REQUEST,
                "`params` must be an object or an array",
            ));
        }
        match (o.remove("method"), id) {
            (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params }),
            (Some(Value::String(method)), None) => Ok(Message::Notification { method, params }),
            (Some(_), _) => Err(malformed(
                id_for_errors,
                INVALID_REQUEST,
                "`method` must be a string",
            )),
            (None, Some(id)) => {
                let result = match (o.remove("result"), o.remove("error")) {
                    (Some(r), None) => Ok(r),
                    (None, Some(e)) => Err(parse_error(e).ok_or_else(|| {
                        malformed(id.clone(), INVALID_REQUEST, "a malformed error object")
                    })?),
                    _ => {
                        return Err(malformed(
                            id,
                            INVALID_REQUEST,
                            "a response must carry exactly one of `result` and `error`",
                        ));
                    }
                };
                Ok(Message::Response { id, result })
            }
            (None, None) => Err(malformed(
                Value::Null,
                INVALID_REQUEST,
                "a message without `method` must be a response with an id",
            )),
        }
    }

    /// The message as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { id, method, params } => {
                let mut o = Map::new();
                o.insert("jsonrpc".into(), json!("2.0"));
                o.insert("id".into(), id.clone());
                o.insert("method".into(), json!(method));
                if let Some(p) = params {
                    o.insert("params".into(), p.clone());
                }
                Value::Object(o)
            }
            Message::Notification { method, params } => {
                let mut o = Map::new();
                o.insert("jsonrpc".into(), json!("2.0"));
                o.insert("method".into(), json!(method));
                if let Some(p) = params {
                    o.insert("params".into(), p.clone());
                }
                Value::Object(o)
            }
            Message::Response { id, result } => {
                let mut o = Map::new();
                o.insert("jsonrpc".into(), json!("2.0"));
                o.insert("id".into(), id.clone());
                match result {
                    Ok(r) => o.insert("result".into(), r.clone()),
                    Err(e) => o.insert("error".into(), e.to_value()),
                };
                Value::Object(o)
            }
        }
    }

    /// The message as one line of compact JSON, without the newline. JSON text never
    /// holds a raw newline (serde_json escapes them in strings), so the framing holds.
    pub fn to_line(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }

    /// An error response.
    pub fn error(id: Value, error: RpcError) -> Message {
        Message::Response {
            id,
            result: Err(error),
        }
    }
}

fn parse_error(v: Value) -> Option<RpcError> {
    let Value::Object(mut o) = v else { return None };
    let code = o.get("code")?.as_i64()?;
    let Some(Value::String(message)) = o.remove("message") else {
        return None;
    };
    Some(RpcError {
        code,
        message,
        data: o.remove("data"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<&str, i64>) {
        match (Message::parse(input.as_bytes()), expect) {
            (Ok(m), Ok(kind)) => {
                let got = match m {
                    Message::Request { .. } => "request",
                    Message::Notification { .. } => "notification",
                    Message::Response { .. } => "response",
                };
                assert_eq!(got, kind, "{input}");
                // A parsed message writes back to one that parses to itself.
                assert_eq!(Message::parse(&m.to_line()).ok(), Some(m), "{input}");
            }
            (Err(e), Err(code)) => assert_eq!(e.error.code, code, "{input}: {e:?}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn messages_parse_strictly() {
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            Ok("request"),
        );
        check(
            r#"{"jsonrpc":"2.0","id":"a","method":"x","params":{}}"#,
            Ok("request"),
        );
        check(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Ok("notification"),
        );
        check(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, Ok("response"));
        check(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#,
            Ok("response"),
        );
        check("{", Err(PARSE_ERROR));
        check("", Err(PARSE_ERROR));
        check("[]", Err(INVALID_REQUEST));
        check(
            r#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#,
            Err(INVALID_REQUEST),
        );
        check(r#"{"id":1,"method":"x"}"#, Err(INVALID_REQUEST));
        check(
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            Err(INVALID_REQUEST),
        );
        check(
            r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            Err(INVALID_REQUEST),
        );
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            Err(INVALID_REQUEST),
        );
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
            Err(INVALID_REQUEST),
        );
        check(r#"{"jsonrpc":"2.0","id":1}"#, Err(INVALID_REQUEST));
        check(
            r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
            Err(INVALID_REQUEST),
        );
        check(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}"#,
            Err(INVALID_REQUEST),
        );
        check(r#"{"jsonrpc":"2.0"}"#, Err(INVALID_REQUEST));
    }

    #[test]
    fn a_malformed_request_keeps_its_id_for_the_answer() {
        let e = Message::parse(br#"{"jsonrpc":"2.0","id":9,"method":"x","params":"p"}"#)
            .err()
            .map(|e| e.id);
        assert_eq!(e, Some(json!(9)));
    }
}
