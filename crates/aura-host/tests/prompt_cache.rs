//! The prompt cache through the host, as a mission's local reasoner and the OpenAI API use
//! it: a two-turn conversation (the second turn re-sending the first) on a host with the
//! cache and on one without gives the same answers and receipts that agree in everything
//! the cache could have touched (input and output hashes, token and expert counts, the
//! runtime); the reuse shows only in `ChatOutcome::cached_tokens` and in `/metrics`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aura_host::requests::{self, ChatParts};
use aura_host::{ChatOutcome, ModelHost, ReceiptId};
use aura_reasoner::{Message, Role};
use support::World;

fn message(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.into(),
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

/// Two turns: the second re-sends the first question and its answer.
async fn conversation(host: &Arc<ModelHost>) -> Vec<(ChatOutcome, ReceiptId)> {
    let served = host.open("tiny").await.unwrap();
    let mut messages = vec![message(Role::User, "Say something.")];
    let mut out = Vec::new();
    for follow_up in ["Say more.", ""] {
        let plan = requests::chat(ChatParts {
            messages: messages.clone(),
            max_tokens: Some(8),
            ..ChatParts::default()
        })
        .unwrap();
        let answer = host
            .chat(&served, &plan.request, &plan.options, None, None)
            .await
            .unwrap();
        messages.push(message(Role::Assistant, &answer.0.turn.content));
        messages.push(message(Role::User, follow_up));
        out.push(answer);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_receipts_are_the_same_with_and_without_the_prompt_cache() {
    let world = World::new();
    let cached = world
        .host_with_prompt_cache(aura_host::DEFAULT_PROMPT_CACHE_BYTES)
        .await;
    let plain = world.host_with_prompt_cache(0).await;
    let with = conversation(&cached).await;
    let without = conversation(&plain).await;

    let mut receipts = BTreeMap::new();
    aura_model::receipt::scan(&*world.store, 1, |r| {
        receipts.insert(r.signed.statement.id, r.signed.statement);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(receipts.len(), 4);
    for (turn, ((a, ra), (b, rb))) in with.iter().zip(&without).enumerate() {
        assert_eq!(a.turn, b.turn, "turn {turn}");
        assert_eq!(a.expert_tokens, b.expert_tokens);
        assert_eq!(a.prompt, b.prompt);
        assert_eq!(b.cached_tokens, 0, "the host without a cache reused tokens");
        let (ra, rb) = (&receipts[ra], &receipts[rb]);
        assert_eq!(
            (&ra.input_hash, &ra.output_hash, &ra.runtime, &ra.package),
            (&rb.input_hash, &rb.output_hash, &rb.runtime, &rb.package),
            "turn {turn}"
        );
        assert_eq!(
            (ra.prompt_tokens, ra.completion_tokens, &ra.expert_tokens),
            (rb.prompt_tokens, rb.completion_tokens, &rb.expert_tokens),
            "turn {turn}: the cache changed a receipt's counts"
        );
    }
    // The first turn found the cache empty; the second reused at least the first prompt.
    assert_eq!(with[0].0.cached_tokens, 0);
    let reused = u64::from(with[1].0.cached_tokens);
    assert!(
        reused + 1 >= with[0].0.turn.usage.prompt_tokens
            && reused < with[1].0.turn.usage.prompt_tokens,
        "reused {reused}"
    );

    // This file's only test, so the process-wide metrics are this test's alone.
    let metrics = aura_metrics::global();
    let lookups = |outcome: &str| {
        metrics.value(
            &aura_metrics::MODEL_PROMPT_CACHE_LOOKUPS,
            &["tiny", outcome],
        )
    };
    assert_eq!((lookups("hit"), lookups("miss")), (1.0, 3.0));
    let tokens =
        |source: &str| metrics.value(&aura_metrics::MODEL_PROMPT_CACHE_TOKENS, &["tiny", source]);
    let prompts: u64 = with
        .iter()
        .chain(&without)
        .map(|(o, _)| o.turn.usage.prompt_tokens)
        .sum();
    assert_eq!(tokens("cached"), reused as f64);
    assert_eq!(tokens("computed"), (prompts - reused) as f64);
}
