//! Loading policy files: a bad file is refused with every problem's line, column and
//! reason; the defaults load cleanly; merging refuses duplicate ids; hostile text never
//! panics the loader.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_policy::{Effect, LoadError, MAX_POLICY_FILE, PolicySet};
use proptest::prelude::*;

/// Loads `text` expecting it refused, and returns its problems as
/// `(line, column, reason)`.
#[track_caller]
fn refused(text: &str) -> Vec<(u32, u32, String)> {
    match PolicySet::parse("bad.cedar", text) {
        Ok(set) => panic!("loaded: {:?}", set.ids()),
        Err(LoadError { problems }) => {
            assert!(!problems.is_empty());
            problems
                .into_iter()
                .map(|p| {
                    assert_eq!(p.file, "bad.cedar");
                    (p.line, p.column, p.reason)
                })
                .collect()
        }
    }
}

/// `check(text, [(line, column, reason fragment)])`: exactly these problems, in order.
#[track_caller]
fn check(text: &str, expect: &[(u32, u32, &str)]) {
    let got = refused(text);
    let ok = got.len() == expect.len()
        && got
            .iter()
            .zip(expect)
            .all(|((l, c, r), (el, ec, er))| l == el && c == ec && r.contains(er));
    assert!(ok, "expected {expect:#?}\ngot {got:#?}");
}

#[test]
fn bad_files_are_refused_with_line_and_reason() {
    // Syntax error: the `}` after `&&`.
    check(
        "@id(\"a\")\npermit (principal, action, resource)\nwhen { context.in_cell && };\n",
        &[(3, 27, "unexpected token `}`")],
    );
    // Unknown entity type.
    check(
        "// comment\n\n@id(\"a\")\npermit (principal is Aura::User, action, resource);\n",
        &[(4, 22, "unrecognized entity type `Aura::User`")],
    );
    // Unknown attribute, with Cedar's suggestion.
    check(
        "@id(\"a\")\npermit (principal, action == Aura::Action::\"fs.read\", resource)\nwhen { resource.size > 3 };\n",
        &[(
            3,
            8,
            "attribute `size` on entity type `Aura::Path` not found; did you mean `path`?",
        )],
    );
    // Wrong type: a string compared as a number.
    check(
        "@id(\"a\")\npermit (principal, action == Aura::Action::\"fs.read\", resource)\nwhen { resource.path > 3 };\n",
        &[(3, 8, "expected Long but saw String")],
    );
    // An unknown action: tools Aura does not know go through tool.custom.
    check(
        "permit (principal, action == Aura::Action::\"fs.chmod\", resource);",
        &[(1, 30, "unrecognized action `Aura::Action::\"fs.chmod\"`")],
    );
    // A context field that does not exist (reported once, not once per action).
    check(
        "permit (principal, action, resource) when { context.approved };",
        &[(1, 45, "attribute `approved` in context")],
    );
    // A tag read without checking that it is there.
    check(
        "permit (principal, action, resource) when { context.extra.getTag(\"t\") == \"x\" };",
        &[(1, 45, "unable to guarantee safety of access to tag")],
    );
    // Templates are not supported.
    check(
        "permit (principal == ?principal, action, resource);",
        &[(1, 22, "expected a static policy, got a template")],
    );
}

#[test]
fn every_problem_is_listed() {
    let text = r#"@id("one")
permit (principal, action, resource) when { resource.nope };

@id("two") permit (principal, action, resource) when { principal.level > 2 };
@id("three")
permit (principal, action,
@id("four") permit (principal, action, resource);
@escalate("L3")
permit (principal, action, resource);
@escalate("L5")
forbid (principal, action, resource);
@id("one")
forbid (principal, action, resource);
@id("has space") forbid (principal, action, resource);
"#;
    let got = refused(text);
    let lines: Vec<u32> = got.iter().map(|p| p.0).collect();
    assert_eq!(lines, [2, 4, 7, 8, 10, 12, 14], "{got:#?}");
    assert!(got[0].2.contains("`nope`"));
    assert!(got[1].2.contains("`level`"));
    assert!(got[3].2.contains("only to forbid"));
    assert!(
        got[4]
            .2
            .contains("@escalate(\"L5\") is not an authority level")
    );
    assert!(got[5].2.contains("`one` is already used at bad.cedar:1:1"));
    assert!(got[6].2.contains("not a valid policy id"));
    // The error's Display is one line naming the first problem and the count.
    let e = PolicySet::parse("bad.cedar", text).unwrap_err();
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
    assert!(e.to_string().starts_with("bad.cedar:2:"), "{e}");
    assert!(e.to_string().ends_with("(and 6 more problems)"), "{e}");
}

#[test]
fn oversized_files_are_refused() {
    let text = "// x\n".repeat(MAX_POLICY_FILE / 5 + 1);
    check(&text, &[(1, 1, "larger than")]);
}

#[test]
fn defaults_load_cleanly_and_are_documented() {
    let set = PolicySet::defaults();
    assert!(set.warnings().is_empty(), "{:?}", set.warnings());
    assert_eq!(
        set.ids(),
        [
            "aura.namespace-isolation",
            "aura.workspace.read",
            "aura.workspace.write",
            "aura.workspace.delete",
            "aura.cmd.run",
            "aura.cmd.cell-only",
            "aura.destructive.escalate",
            "aura.mcp.call",
            "aura.mcp.unknown-server.escalate",
            "aura.plugin.call",
            "aura.plugin.powerful.escalate",
            "aura.agent.send",
            "aura.mission.finish",
            "aura.mission.lifecycle",
            "aura.model.use",
            "aura.image.generate",
            "aura.memory.own",
        ]
    );
    let escalate = set.policy("aura.destructive.escalate").unwrap();
    assert_eq!(escalate.effect, Effect::Forbid);
    assert_eq!(escalate.escalate, Some(aura_identity::Level::L3));
    assert_eq!(escalate.source, "defaults.cedar");
    assert!(
        escalate
            .text
            .starts_with("@id(\"aura.destructive.escalate\")")
    );
    // docs/policy.md describes every default policy by id.
    let doc = include_str!("../../../docs/policy.md");
    for id in set.ids() {
        assert!(
            doc.contains(&format!("`{id}`")),
            "docs/policy.md does not mention {id}"
        );
    }
    assert!(PolicySet::schema_text().contains("namespace Aura"));
}

#[test]
fn policies_without_an_id_are_named_by_file_and_line() {
    let set = PolicySet::parse(
        "ops.cedar",
        "// header\npermit (principal, action == Aura::Action::\"fs.read\", resource);\n\n  forbid (principal, action, resource) when { context.destructive };\n",
    )
    .unwrap();
    assert_eq!(set.ids(), ["ops.cedar:2", "ops.cedar:4"]);
    assert_eq!(set.policy("ops.cedar:4").unwrap().column, 3);
}

#[test]
fn merging_refuses_duplicate_ids() {
    let user = PolicySet::parse(
        "mine.cedar",
        "\n@id(\"aura.workspace.read\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let e = PolicySet::defaults().merge(user).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    let p = &e.problems[0];
    assert_eq!((p.file.as_str(), p.line, p.column), ("mine.cedar", 2, 1));
    assert!(p.reason.contains("already used at defaults.cedar:"), "{p}");

    let a = PolicySet::parse(
        "a.cedar",
        "@id(\"x\") permit (principal, action, resource);",
    )
    .unwrap();
    let b = PolicySet::parse(
        "b.cedar",
        "@id(\"y\") forbid (principal, action, resource);",
    )
    .unwrap();
    let merged = a.merge(b).unwrap();
    assert_eq!(merged.ids(), ["x", "y"]);
    assert_eq!(merged.policy("y").unwrap().source, "b.cedar");
}

#[test]
fn empty_files_load_as_empty_sets() {
    for text in ["", "\n\n", "// only a comment\n"] {
        assert!(PolicySet::parse("empty.cedar", text).unwrap().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the loader, and every problem has a real position.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        if let Err(e) = PolicySet::parse("fuzz.cedar", &text) {
            prop_assert!(!e.problems.is_empty());
            let lines = text.split('\n').count() as u32;
            for p in &e.problems {
                prop_assert!(p.line >= 1 && p.line <= lines.max(1), "{p}");
                prop_assert!(p.column >= 1);
            }
        }
    }

}

proptest! {
    // Fewer cases: each one validates the whole default set.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The defaults with a slice cut out or a character inserted: loads or is refused,
    /// never panics.
    #[test]
    fn damaged_defaults_never_panic(
        cut in 0usize..4000,
        len in 0usize..40,
        insert in prop::sample::select(vec!["", ";", "\"", "//", "}", "(", "@", "?principal", "\u{202e}"]),
    ) {
        let text = PolicySet::defaults_text();
        let mut start = cut.min(text.len());
        while !text.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        let damaged = format!("{}{insert}{}", &text[..start], &text[end..]);
        let _ = PolicySet::parse("damaged.cedar", &damaged);
    }
}
