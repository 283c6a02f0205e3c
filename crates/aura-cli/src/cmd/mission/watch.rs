//! `aura mission watch`: a mission's recorded events, narrated as they happen.

use aura_core::MissionId;
use futures_util::StreamExt as _;
use serde_json::Value;

use crate::client::Client;
use crate::hinted;
use crate::output::Output;

/// Prints a mission's events as they happen, from its start, until it ends.
pub(super) async fn watch(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    let mission: MissionId = id.parse().map_err(|_| {
        hinted(
            format!("`{id}` is not a mission id"),
            "`aura mission list` shows them",
        )
    })?;
    let mut ws = client.events(&format!("mission={mission}&from=0")).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("the event stream broke: {e}"))?;
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
            continue;
        };
        let event: Value = serde_json::from_str(&text)?;
        if out.is_json() {
            println!("{event}");
        } else if event["type"] == "entry"
            && let Some(line) = narrate(&event)
        {
            // Text deltas are not printed for people: they race the recorded entries on
            // the stream, and each turn's text is shown whole once it is recorded.
            // `--json` passes them through for programs that want them.
            println!("{line}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if event["kind"] == "mission.transition" {
            let to = event["body"]["event"]["to"].as_str().unwrap_or("");
            let reason = event["body"]["event"]["reason"].as_str().unwrap_or("");
            match to {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(hinted(
                        format!("mission {mission} {to}: {reason}"),
                        format!("`aura mission show {mission}` shows its whole record"),
                    ));
                }
                "escalated" if !out.is_json() => {
                    println!(
                        "   waiting for a person: `aura approvals` lists it; `aura approve {mission} --as NAME` or `aura reject {mission} --as NAME` answers it"
                    );
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// One line for a mission event, for people.
fn narrate(e: &Value) -> Option<String> {
    let ev = &e["body"]["event"];
    let seq = &e["seq"];
    Some(match e["kind"].as_str()? {
        "mission.submitted" => format!(
            "#{seq} submitted: {}",
            ev["spec"]["objective"].as_str().unwrap_or("")
        ),
        "mission.judged" => format!(
            "#{seq} policy on the declaration: {} {}",
            ev["decision"]["outcome"].as_str().unwrap_or("?"),
            ids(&ev["decision"]["deciding"])
        ),
        "mission.transition" => format!(
            "#{seq} -> {} ({})",
            ev["to"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.turn" => {
            let calls: Vec<String> = ev["turn"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}({})", c["name"].as_str().unwrap_or("?"), c["arguments"]))
                .collect();
            let content = ev["turn"]["content"].as_str().unwrap_or("").trim();
            format!(
                "#{seq} reasoner: {}{}",
                if content.is_empty() {
                    String::new()
                } else {
                    format!("{content} ")
                },
                calls.join(", ")
            )
        }
        "mission.decided" => {
            let d = &ev["decision"];
            let outcome = match d["outcome"].as_str().unwrap_or("?") {
                "escalate" => format!("escalate to {}", d["level"].as_str().unwrap_or("?")),
                other => other.to_owned(),
            };
            let errors = d["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            format!(
                "#{seq} policy on {} ({}): {outcome} {}{}",
                d["action"].as_str().unwrap_or("?"),
                ev["call_id"].as_str().unwrap_or(""),
                ids(&d["deciding"]),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" — {errors}")
                }
            )
        }
        "mission.effect" => {
            let f = &ev["effect"];
            if f["ok"] == true {
                let mut out = f["output"].to_string();
                if out.chars().count() > 100 {
                    out = out.chars().take(99).collect::<String>() + "…";
                }
                format!("#{seq} {} ok: {out}", f["tool"].as_str().unwrap_or("?"))
            } else {
                format!(
                    "#{seq} {} failed: {}",
                    f["tool"].as_str().unwrap_or("?"),
                    f["error"].as_str().unwrap_or("")
                )
            }
        }
        "mission.approved" => format!(
            "#{seq} approved by {} at {}",
            ev["approver"].as_str().unwrap_or("?"),
            ev["level"].as_str().unwrap_or("?")
        ),
        "mission.rejected" => format!(
            "#{seq} rejected by {}: {}",
            ev["approver"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.cancel_requested" => format!(
            "#{seq} cancel requested by {}: {}",
            ev["by"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.timed_out" => format!("#{seq} timed out"),
        "mission.compensated" => format!(
            "#{seq} undid {}: {}",
            ev["call_id"].as_str().unwrap_or("?"),
            if ev["ok"] == true {
                "ok".to_owned()
            } else {
                ev["error"].as_str().unwrap_or("failed").to_owned()
            }
        ),
        "mission.message" => format!(
            "#{seq} message from {}: {}",
            ev["from"].as_str().unwrap_or("?"),
            ev["body"]
        ),
        // A first attempt and heartbeats are bookkeeping; retries are news.
        "mission.attempt" if ev["attempt"].as_u64() == Some(1) => return None,
        "mission.heartbeat" => return None,
        "mission.attempt" => format!(
            "#{seq} retrying {} (attempt {})",
            ev["call_id"].as_str().unwrap_or("?"),
            ev["attempt"]
        ),
        "mission.attempt_failed" => format!(
            "#{seq} {} attempt {} failed: {}: {}{}",
            ev["call_id"].as_str().unwrap_or("the reasoner's turn"),
            ev["attempt"],
            ev["kind"].as_str().unwrap_or("?"),
            ev["error"].as_str().unwrap_or(""),
            ev["retry_at"].as_str().map_or_else(
                || "; giving up".to_owned(),
                |t| format!("; next attempt at {t}")
            )
        ),
        "mission.paused" => format!(
            "#{seq} paused by {}: {}",
            ev["by"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.resumed" => format!("#{seq} resumed by {}", ev["by"].as_str().unwrap_or("?")),
        "mission.retry_requested" => format!(
            "#{seq} retry now, asked by {}",
            ev["by"].as_str().unwrap_or("?")
        ),
        other => format!("#{seq} {other}"),
    })
}

fn ids(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        String::new()
    } else {
        format!("[{}]", list.join(", "))
    }
}
