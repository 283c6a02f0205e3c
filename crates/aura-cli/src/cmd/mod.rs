//! One module per command group.

pub(crate) mod agent;
pub(crate) mod apikey;
pub(crate) mod automaton;
pub(crate) mod cell;
pub(crate) mod cell_node;
pub(crate) mod chat;
pub(crate) mod chat_agent;
pub(crate) mod cluster;
pub(crate) mod image;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod ledger;
pub(crate) mod license;
pub(crate) mod mcp;
pub(crate) mod memory;
pub(crate) mod mission;
pub(crate) mod model;
pub(crate) mod pki;
pub(crate) mod policy;
pub(crate) mod reasoner;
pub(crate) mod receipts;
pub(crate) mod schedule;
pub(crate) mod serve;
pub(crate) mod tui;
pub(crate) mod witness;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::hinted;
use crate::output::Output;

/// Reads the node's answer as the wire type both sides share (`aura_node::wire`, the
/// kernel's recorded events): a field it needs that is missing, or a state or event kind
/// this `aura` does not know, is a one-line error rather than a `?` in the output. Fields
/// it does not know are ignored, so an older `aura` still reads a newer node.
pub(crate) fn decode<T: DeserializeOwned>(raw: &Value) -> anyhow::Result<T> {
    T::deserialize(raw).map_err(|e| {
        hinted(
            format!("the node's answer is not what this aura expects: {e}"),
            "the node runs another version of aura; use the same version on both sides",
        )
    })
}

/// Prints the node's answer: with `--json` as the node sent it, otherwise `human` of it
/// decoded as `T`.
pub(crate) fn print_as<T: DeserializeOwned>(
    out: &Output,
    raw: &Value,
    human: impl FnOnce(T) -> String,
) -> anyhow::Result<()> {
    if out.is_json() {
        return out.print(raw, String::new);
    }
    let typed = decode(raw)?;
    out.print(raw, || human(typed))
}
