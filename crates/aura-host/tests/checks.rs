//! The checks a front end gets by opening a model through the host
//! ([`ModelHost::open_chat`], [`ModelHost::open_completion`]) and the listing every front
//! end answers with ([`ModelHost::list_async`]), on a real host over a tiny random-weight
//! model installed as a signed package.
//!
//! Regression: the gRPC inference service opened models with the bare `open`, so a token
//! limit beyond the model's context, which the HTTP API refuses naming its field, was
//! taken (and reserved against the license) over gRPC. Both front ends now open through
//! these checks.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use aura_host::Prompt;
use aura_host::requests::{self, ChatParts};
use aura_reasoner::{Message, Role};
use support::{CONTEXT, World};

fn chat(max_tokens: Option<u32>) -> requests::ChatPlan {
    requests::chat(ChatParts {
        messages: vec![Message {
            role: Role::User,
            content: "Say something.".into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }],
        max_tokens,
        ..ChatParts::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_limit_beyond_the_context_is_refused_naming_its_field() {
    let world = World::new();
    let host = world.host().await;
    let prompt = Prompt::Tokens(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    let left = u32::try_from(CONTEXT - 10).unwrap();

    // Exactly what is left after the prompt fits; one more does not.
    host.open_completion("tiny", &prompt, Some(("max_tokens", left)))
        .await
        .unwrap();
    let refused = host
        .open_completion("tiny", &prompt, Some(("max_tokens", left + 1)))
        .await
        .unwrap_err();
    assert_eq!((refused.status, refused.code), (400, "invalid_request"));
    assert_eq!(
        refused.message,
        format!(
            "max_tokens: {} is more than the {left} tokens left in this model's {CONTEXT}-token context after the prompt's 10; ask for at most {left}",
            left + 1
        )
    );
    // A limit left unset (the front end's default) is not checked.
    host.open_completion("tiny", &prompt, None).await.unwrap();
    // Nothing was generated, so nothing was recorded.
    assert_eq!(world.receipts().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_limit_beyond_the_context_is_refused_naming_its_field() {
    let world = World::new();
    let host = world.host().await;
    let over = u32::try_from(CONTEXT).unwrap();
    let refused = host
        .open_chat("tiny", "max_completion_tokens", &chat(Some(over)))
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.starts_with(&format!("max_completion_tokens: {over} is more than the ")),
        "{message}"
    );
    assert!(message.contains("context after the prompt's"), "{message}");
    match refused {
        aura_host::ChatError::Host(e) => assert_eq!(e.status, 400),
        other => panic!("refused by the model, not the host: {other:?}"),
    }
    // A limit that fits, or none, opens the model.
    host.open_chat("tiny", "max_tokens", &chat(Some(64)))
        .await
        .unwrap();
    host.open_chat("tiny", "max_tokens", &chat(None))
        .await
        .unwrap();
    assert_eq!(world.receipts().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_leaves_out_a_package_whose_file_fails_its_hash() {
    let world = World::new();
    let host = world.host().await;
    let names = |cards: Vec<aura_host::ModelCard>| -> Vec<String> {
        cards.into_iter().map(|c| c.name).collect()
    };
    assert_eq!(names(host.list_async().await.unwrap()), ["tiny"]);

    let files = world.dir.path().join("home/models/tiny/files");
    for entry in std::fs::read_dir(&files).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        // Written anew (another inode, another mtime), as a damaged copy would be.
        let tmp = path.with_extension("tampered");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    assert!(names(host.list_async().await.unwrap()).is_empty());
    // Nor is it served.
    host.open("tiny").await.unwrap_err();
}
