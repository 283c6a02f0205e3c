//! `aura approvals`, `aura approve` and `aura reject`: what waits for a person, and their
//! signed answer.

use std::path::PathBuf;
use std::time::Duration;

use aura_core::Timestamp;
use aura_core::door::{Clock as _, OsEntropy, SystemClock};
use aura_core::keystore::KeyName;
use aura_identity::{Answers, Approval, ApprovalId, Credential, Signed, Verdict};
use aura_node::wire::{MissionView, PendingApproval};
use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

use super::{decode, print_as};

#[derive(Debug, clap::Args)]
pub(crate) struct ApprovalsArgs {
    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) async fn approvals(
    home: &Home,
    out: &Output,
    args: ApprovalsArgs,
) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    let pending: Value = client.get("/v1/approvals").await?;
    print_as(out, &pending, |pending: Vec<PendingApproval>| {
        if pending.is_empty() {
            return "nothing is waiting for approval\n".into();
        }
        pending
            .iter()
            .map(|p| {
                let e = &p.escalation;
                format!(
                    "{}  needs {} for `{}` {}\n    objective: {}\n    approve: aura approve {} --as NAME   reject: aura reject {} --as NAME --reason WHY\n",
                    p.mission,
                    e.level,
                    e.action,
                    e.arguments.as_ref().unwrap_or(&Value::Null),
                    p.objective,
                    p.mission,
                    p.mission,
                )
            })
            .collect()
    })
}

#[derive(Debug, clap::Args)]
pub(crate) struct AnswerArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The mission waiting for approval
    mission: String,
    /// The approver: a key in this data directory, enrolled with `aura operator enroll`
    #[arg(long = "as", value_name = "NAME")]
    approver: String,
    /// Why (recorded in the ledger)
    #[arg(long)]
    reason: Option<String>,
    /// How long the approval stays valid, in seconds
    #[arg(long, default_value_t = 600)]
    valid_secs: u64,
}

pub(crate) async fn answer(
    home: &Home,
    out: &Output,
    args: AnswerArgs,
    verdict: Verdict,
) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    let name = KeyName::new(&args.approver)?;
    let credential = read_credential(home, &name)?;
    let key = home.signer(&name)?;
    if credential.statement.key != key.public_key() {
        return Err(hinted(
            format!("the credential of `{name}` is for another key"),
            format!("enroll again: aura operator enroll {name} --level L3"),
        ));
    }
    let mission: Value = client
        .get(&format!("/v1/missions/{}", args.mission))
        .await?;
    let mission: MissionView = decode(&mission)?;
    let Some(esc) = mission.escalation else {
        return Err(hinted(
            format!(
                "mission {} is {}, not waiting for approval",
                args.mission, mission.state
            ),
            "`aura approvals` lists what waits",
        ));
    };
    let request = esc
        .request
        .parse()
        .map_err(|_| anyhow::anyhow!("the node sent a malformed request digest"))?;
    // The approval names the very escalation it answers (the declaration, or one call of
    // one turn), so that it cannot answer a later one of the same request.
    let answers: Answers = esc.answers.ok_or_else(|| {
        hinted(
            "the node did not say which escalation is waiting",
            "the node is older than this `aura`; upgrade it",
        )
    })?;
    let now: Timestamp = SystemClock.now();
    let reason = args.reason.unwrap_or_else(|| match verdict {
        Verdict::Approve => "approved".into(),
        Verdict::Reject => "rejected".into(),
    });
    let approval = Approval {
        id: ApprovalId::generate(&SystemClock, &OsEntropy),
        mission: mission.id,
        answers: Some(answers.clone()),
        request,
        verdict,
        reason,
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(args.valid_secs)),
        approver: key.public_key(),
    };
    let signed = Signed::sign(approval, &key).map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    let m: Value = client
        .post(
            &format!("/v1/approvals/{}", args.mission),
            &json!({ "approval": signed, "credential": credential }),
        )
        .await?;
    print_as(out, &m, |m: MissionView| {
        format!(
            "{} {} of {}: mission is now {}\n",
            match verdict {
                Verdict::Approve => "approved",
                Verdict::Reject => "rejected",
            },
            answers,
            args.mission,
            m.state
        )
    })
}

pub(super) fn credential_path(home: &Home, name: &KeyName) -> PathBuf {
    home.dir().join("credentials").join(format!("{name}.json"))
}

fn read_credential(home: &Home, name: &KeyName) -> anyhow::Result<Signed<Credential>> {
    let path = credential_path(home, name);
    let text = std::fs::read(&path).map_err(|_| {
        hinted(
            format!("`{name}` has no credential here"),
            format!("enroll first: aura operator enroll {name} --level L3 --namespace default"),
        )
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("{} is unreadable: {e}", path.display()))
}
