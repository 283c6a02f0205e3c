//! `aura mission prune`: drop the bodies of old finished missions' records.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Client;
use crate::output::Output;

pub(super) async fn prune(
    client: &Client,
    out: &Output,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<()> {
    let r: Value = client
        .post(
            "/v1/missions/prune",
            &json!({ "older_than_secs": older_than.as_secs(), "dry_run": dry_run }),
        )
        .await?;
    out.print(&r, || {
        let missions: Vec<&str> = r["missions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let cutoff = r["older_than"].as_str().unwrap_or("?");
        if missions.is_empty() {
            return format!("nothing to prune: no unpruned mission ended before {cutoff}\n");
        }
        let n = missions.len() as u64;
        let entries = r["entries"].as_u64().unwrap_or(0);
        let bytes = r["bytes_freed"].as_u64().unwrap_or(0);
        let mut text = format!(
            "{} {}: {} {}, {} bytes of bodies; each keeps its submission and final transition\n",
            if dry_run { "would prune" } else { "pruned" },
            crate::output::count(n, "mission", "missions"),
            crate::output::count(entries, "entry", "entries"),
            if dry_run { "would lose their bodies" } else { "lost their bodies" },
            bytes,
        );
        for m in missions {
            text.push_str(&format!("  {m}\n"));
        }
        if !dry_run {
            text.push_str(
                "the ledger still verifies; the file gives the space back after `VACUUM` (docs/ledger.md)\n",
            );
        }
        text
    })
}
