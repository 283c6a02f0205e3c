//! `aura mission prune`: drop the bodies of old finished missions' records.

use std::time::Duration;

use aura_node::wire::PruneView;
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::Output;

use super::print_as;

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
    print_as(out, &r, |r: PruneView| {
        if r.missions.is_empty() {
            return format!(
                "nothing to prune: no unpruned mission ended before {}\n",
                r.older_than
            );
        }
        let n = r.missions.len() as u64;
        let mut text = format!(
            "{} {}: {} {}, {} bytes of bodies; each keeps its submission and final transition\n",
            if dry_run { "would prune" } else { "pruned" },
            crate::output::count(n, "mission", "missions"),
            crate::output::count(r.entries, "entry", "entries"),
            if dry_run {
                "would lose their bodies"
            } else {
                "lost their bodies"
            },
            r.bytes_freed,
        );
        for m in &r.missions {
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
