//! `aura approvals`, `aura approve` and `aura reject`: what waits for a person, and their
//! signed answer.

use std::path::PathBuf;
use std::time::Duration;

use aura_core::door::{Clock as _, OsEntropy, SystemClock};
use aura_core::keystore::KeyName;
use aura_core::{MissionId, Timestamp};
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
    let approver = Approver::load(home, &args.approver)?;
    let (answers, m) = approver
        .answer(
            &client,
            &args.mission,
            verdict,
            args.reason,
            Duration::from_secs(args.valid_secs),
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

/// A person who answers escalations: their key in this data directory and the credential
/// `aura operator enroll` gave it. Loaded once, so that `aura tui` asks for a passphrase
/// (if the key is sealed) before it takes over the terminal.
pub(crate) struct Approver {
    credential: Signed<Credential>,
    key: aura_core::keystore::Signer,
}

impl Approver {
    pub(crate) fn load(home: &Home, name: &str) -> anyhow::Result<Approver> {
        let name = KeyName::new(name)?;
        let credential = read_credential(home, &name)?;
        let key = home.signer(&name)?;
        if credential.statement.key != key.public_key() {
            return Err(hinted(
                format!("the credential of `{name}` is for another key"),
                format!("enroll again: aura operator enroll {name} --level L3"),
            ));
        }
        Ok(Approver { credential, key })
    }

    /// Signs an approval or rejection of what `mission` waits for and sends it; returns
    /// the escalation it answered and the mission as the node has it afterwards.
    pub(crate) async fn answer(
        &self,
        client: &Client,
        mission: &str,
        verdict: Verdict,
        reason: Option<String>,
        valid: Duration,
    ) -> anyhow::Result<(Answers, Value)> {
        let mission_id: MissionId = mission.parse().map_err(|_| {
            hinted(
                format!("`{mission}` is not a mission id"),
                "`aura approvals` lists what waits",
            )
        })?;
        let raw: Value = client.get(&format!("/v1/missions/{mission_id}")).await?;
        let view: MissionView = decode(&raw)?;
        let Some(esc) = view.escalation else {
            return Err(hinted(
                format!(
                    "mission {mission} is {}, not waiting for approval",
                    view.state
                ),
                "`aura approvals` lists what waits",
            ));
        };
        let request = esc
            .request
            .parse()
            .map_err(|_| anyhow::anyhow!("the node sent a malformed request digest"))?;
        // The approval names the very escalation it answers (the declaration, or one call
        // of one turn), so that it cannot answer a later one of the same request.
        let answers: Answers = esc.answers.ok_or_else(|| {
            hinted(
                "the node did not say which escalation is waiting",
                "the node is older than this `aura`; upgrade it",
            )
        })?;
        let now: Timestamp = SystemClock.now();
        let reason = reason.unwrap_or_else(|| match verdict {
            Verdict::Approve => "approved".into(),
            Verdict::Reject => "rejected".into(),
        });
        let approval = Approval {
            id: ApprovalId::generate(&SystemClock, &OsEntropy),
            mission: view.id,
            answers: Some(answers.clone()),
            request,
            verdict,
            reason,
            issued_at: now,
            expires_at: now.saturating_add(valid),
            approver: self.key.public_key(),
        };
        let signed =
            Signed::sign(approval, &self.key).map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
        let after = client
            .post(
                &format!("/v1/approvals/{mission_id}"),
                &json!({ "approval": signed, "credential": self.credential }),
            )
            .await?;
        Ok((answers, after))
    }
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
