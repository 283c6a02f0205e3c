//! What the server-side tests share: `Adder`, a handler with one tool, `add`, that answers
//! the sum of two integers (or a tool error for anything else).

use async_trait::async_trait;
use aura_mcp::jsonrpc::RpcError;
use aura_mcp::server::{Handler, ToolInfo, ToolOutput};
use serde_json::{Value, json};

pub(crate) struct Adder;

#[async_trait]
impl Handler for Adder {
    fn info(&self) -> (String, String) {
        ("adder".into(), "1".into())
    }

    fn tools(&self) -> Vec<ToolInfo> {
        vec![ToolInfo {
            name: "add".into(),
            description: "adds".into(),
            input_schema: json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}),
        }]
    }

    async fn call(&self, _name: &str, args: Value) -> Result<ToolOutput, RpcError> {
        match (args["a"].as_i64(), args["b"].as_i64()) {
            (Some(a), Some(b)) => Ok(ToolOutput::ok(json!({"sum": a + b}))),
            _ => Ok(ToolOutput::error("a and b must be integers")),
        }
    }
}
