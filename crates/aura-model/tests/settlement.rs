//! Receipts and settlement end to end: a mixture-of-experts model whose experts belong to
//! two other owners serves requests; every request leaves a signed receipt in the ledger;
//! settlement pays each owner exactly what the arithmetic says; tampered receipts and
//! statements are detected.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::fs;

use aura_core::Timestamp;
use aura_core::door::{Clock as _, SeededEntropy};
use aura_core::keystore::Signer;
use aura_ledger::entry::Entry;
use aura_model::import::Options;
use aura_model::license::{Allowance, License, LicenseId, Licensee, Uses};
use aura_model::meter::Outcome;
use aura_model::receipt::{self, LedgerReceipt, ReceiptError, Role};
use aura_model::settle::{self, SignedStatement, Statement, StatementError, StatementId};
use aura_model::{Meter, io_hash, no_progress};
use aura_store::Store as _;
use common::{T0, World, key, moe_dir, pack_dir};

struct Owners {
    carol: Signer, // the model's publisher
    alice: Signer, // experts 0 and 1
    bob: Signer,   // experts 2 and 3
}

/// The model `mix` (carol) with expert packs from alice and bob, each licensed to this
/// node at a price: carol 100, alice 40, bob 30 micro-dollars per 1,000 tokens.
fn world() -> (World, Owners) {
    let w = World::new();
    let o = Owners {
        carol: key("carol", 31),
        alice: key("alice", 32),
        bob: key("bob", 33),
    };
    let src = w.src();
    let pack = |name: &str, experts: &[u32], seed, owner: &Signer| {
        let (p, own) = w
            .import_as(
                &pack_dir(&src, name, experts, seed),
                &Options {
                    expert_pack: true,
                    ..Options::default()
                },
                owner,
            )
            .unwrap();
        fs::remove_file(w.registry.licenses().path_of(own.statement.id)).unwrap();
        p
    };
    let pa = pack("experts-a", &[0, 1], 5, &o.alice);
    let pb = pack("experts-b", &[2, 3], 6, &o.bob);
    let (mix, own) = w
        .import_as(
            &moe_dir(&src, "mix", &[]),
            &Options {
                expert_packs: vec!["experts-a".into(), "experts-b".into()],
                ..Options::default()
            },
            &o.carol,
        )
        .unwrap();
    fs::remove_file(w.registry.licenses().path_of(own.statement.id)).unwrap();
    for (i, (signer, digest, name, price)) in [
        (&o.carol, mix.digest(), "mix", 100),
        (&o.alice, pa.digest(), "experts-a", 40),
        (&o.bob, pb.digest(), "experts-b", 30),
    ]
    .into_iter()
    .enumerate()
    {
        let l = License {
            id: LicenseId::from_bytes([i as u8 + 1; 16]),
            licensor: signer.public_key(),
            package: digest,
            package_name: name.into(),
            licensee: Licensee::Node(w.node()),
            not_before: Timestamp::from_secs(T0 - 1),
            not_after: Timestamp::from_secs(T0 + 86_400),
            allowance: Allowance::Tokens(1_000_000),
            price_per_1000_tokens: price,
            currency: "usd-micro".into(),
            uses: Uses::INFERENCE,
            issued_at: Timestamp::from_secs(T0 - 1),
        };
        w.registry
            .licenses()
            .install(&l.sign(signer).unwrap())
            .unwrap();
    }
    (w, o)
}

/// Serves requests of (prompt, completion, routing counts) one second apart.
async fn serve(w: &World, store: &dyn aura_store::Store, requests: &[(u64, u64, [u64; 4])]) {
    let meter = Meter::open(store).await.unwrap();
    let verified = w
        .registry
        .packages()
        .load("mix", None, &no_progress)
        .unwrap();
    let entropy = SeededEntropy::new(3);
    for (i, (prompt, completion, experts)) in requests.iter().enumerate() {
        let auth = meter
            .authorize(
                &verified,
                w.registry.licenses(),
                w.node(),
                w.clock.now(),
                Uses::INFERENCE,
                prompt + completion,
            )
            .unwrap();
        w.clock.advance(std::time::Duration::from_secs(1));
        meter
            .record(
                store,
                &w.node_key,
                auth,
                Outcome {
                    input_hash: io_hash(format!("prompt {i}").as_bytes()),
                    output_hash: io_hash(format!("answer {i}").as_bytes()),
                    prompt_tokens: *prompt,
                    completion_tokens: *completion,
                    expert_tokens: experts.to_vec(),
                    runtime: aura_model::Runtime {
                        version: "0.1.0".into(),
                        backend: "candle".into(),
                        device: "cpu".into(),
                        dtype: "bf16".into(),
                        kernel: "generic".into(),
                    },
                },
                w.clock.as_ref(),
                &entropy,
            )
            .await
            .unwrap();
    }
}

async fn receipts(store: &dyn aura_store::Store) -> Vec<LedgerReceipt> {
    let mut out = Vec::new();
    receipt::scan(store, 1, |r| {
        out.push(r);
        Ok(())
    })
    .await
    .unwrap();
    out
}

const REQUESTS: &[(u64, u64, [u64; 4])] = &[
    // 10 tokens over routing counts 5,5,6,4: shares 3,2,3,2 (the half tokens go to the
    // lower expert indices), so alice (0,1) gets 5 and bob (2,3) gets 5.
    (6, 4, [5, 5, 6, 4]),
    // 1,000 tokens over 1,1,1,0: shares 334,333,333,0: alice 667, bob 333.
    (900, 100, [1, 1, 1, 0]),
    // No routing counts reported: the experts' owners get nothing; carol still counts 7.
    (5, 2, [0, 0, 0, 0]),
];

fn by_payee(statements: &[Statement]) -> BTreeMap<[u8; 32], &Statement> {
    statements.iter().map(|s| (s.payee.to_bytes(), s)).collect()
}

fn ids() -> impl FnMut() -> StatementId {
    let mut n = 0u8;
    move || {
        n += 1;
        StatementId::from_bytes([n; 16])
    }
}

#[test]
fn settlement_pays_each_owner_exactly() {
    let (w, o) = world();
    common::runtime().block_on(async {
        let store = w.store();
        serve(&w, &store, REQUESTS).await;
        let all = receipts(&store).await;
        assert_eq!(all.len(), 3, "one receipt per request");
        for r in &all {
            r.verify(&w.node_key.public_key()).unwrap();
            assert_eq!(r.signed.statement.charges.len(), 3);
            assert_eq!(r.signed.statement.charges[0].role, Role::Model);
        }
        let from = Timestamp::from_secs(T0);
        let to = Timestamp::from_secs(T0 + 3600);
        let statements =
            settle::settle(&all, from, to, w.node(), w.clock.now(), &mut ids()).unwrap();
        assert_eq!(statements.len(), 3);
        let s = by_payee(&statements);

        let carol = s[&o.carol.public_key().to_bytes()];
        assert_eq!(carol.lines.len(), 1);
        assert_eq!(carol.lines[0].tokens, 1017);
        assert_eq!(carol.lines[0].receipts, 3);
        assert_eq!(
            carol.total("usd-micro"),
            101,
            "1017 × 100 / 1000, rounded down"
        );

        let alice = s[&o.alice.public_key().to_bytes()];
        assert_eq!(alice.lines[0].tokens, 5 + 667);
        assert_eq!(alice.total("usd-micro"), 26, "672 × 40 / 1000");
        let bob = s[&o.bob.public_key().to_bytes()];
        assert_eq!(bob.lines[0].tokens, 5 + 333);
        assert_eq!(bob.total("usd-micro"), 10, "338 × 30 / 1000");
        assert_eq!(bob.receipts.len(), 3);

        // Per request, the expert owners' tokens add up to the request's tokens whenever
        // any expert was routed to.
        for r in &all {
            let a = r.signed.statement.attributed();
            let total = r.signed.statement.total_tokens();
            assert_eq!(a[0], total);
            if r.signed.statement.expert_tokens.iter().any(|t| *t > 0) {
                assert_eq!(a[1] + a[2], total);
            }
        }

        // Signed, recorded in the ledger, and verified against the receipts.
        let recorded = settle::record(&store, &w.node_key, statements)
            .await
            .unwrap();
        assert_eq!(recorded.len(), 3);
        let by_index: BTreeMap<u64, LedgerReceipt> =
            all.iter().map(|r| (r.index, r.clone())).collect();
        let lookup = |i: u64| by_index.get(&i).cloned();
        for (signed, index) in &recorded {
            settle::verify(signed, &w.node_key.public_key(), &lookup, Some(&all)).unwrap();
            let stored = store
                .entry(aura_store::EntryRef::Index(*index))
                .await
                .unwrap()
                .unwrap();
            let back = settle::from_entry(&stored).unwrap().unwrap();
            assert_eq!(&back, signed);
        }
        // A receipt outside the window is not covered.
        let later = settle::settle(
            &all,
            Timestamp::from_secs(T0 + 2),
            to,
            w.node(),
            w.clock.now(),
            &mut ids(),
        )
        .unwrap();
        assert_eq!(
            by_payee(&later)[&o.carol.public_key().to_bytes()].lines[0].tokens,
            1007
        );
    });
}

#[test]
fn tampered_statements_are_detected() {
    let (w, o) = world();
    common::runtime().block_on(async {
        let store = w.store();
        serve(&w, &store, REQUESTS).await;
        let all = receipts(&store).await;
        let from = Timestamp::from_secs(T0);
        let to = Timestamp::from_secs(T0 + 3600);
        let statements =
            settle::settle(&all, from, to, w.node(), w.clock.now(), &mut ids()).unwrap();
        let alice = by_payee(&statements)[&o.alice.public_key().to_bytes()].clone();
        let key = w.node_key.public_key();
        let by_index: BTreeMap<u64, LedgerReceipt> =
            all.iter().map(|r| (r.index, r.clone())).collect();
        let lookup = |i: u64| by_index.get(&i).cloned();

        // An amount edited in the signed JSON: the signature fails.
        let signed = alice.clone().sign(&w.node_key).unwrap();
        let json = String::from_utf8(signed.to_json().unwrap()).unwrap();
        let edited = json.replace("\"amount\":26", "\"amount\":2600");
        assert_ne!(json, edited);
        let forged = SignedStatement::from_json(edited.as_bytes()).unwrap();
        assert!(matches!(
            settle::verify(&forged, &key, &lookup, Some(&all)),
            Err(StatementError::BadSignature { .. })
        ));

        // Signed by the node but not adding up: the line is named.
        let mut wrong = alice.clone();
        wrong.lines[0].amount += 1;
        wrong.totals[0].amount += 1;
        let err = settle::verify(&wrong.sign(&w.node_key).unwrap(), &key, &lookup, Some(&all))
            .unwrap_err();
        assert!(matches!(err, StatementError::WrongLine { .. }), "{err}");

        // Tokens claimed for a receipt that attributes fewer.
        let mut inflated = alice.clone();
        inflated.receipts[0].tokens += 1;
        let err = settle::verify(
            &inflated.sign(&w.node_key).unwrap(),
            &key,
            &lookup,
            Some(&all),
        )
        .unwrap_err();
        assert!(matches!(err, StatementError::WrongCitation { .. }), "{err}");

        // A statement that leaves a receipt out adds up but is incomplete.
        let partial =
            settle::settle(&all[1..], from, to, w.node(), w.clock.now(), &mut ids()).unwrap();
        let partial_alice = by_payee(&partial)[&o.alice.public_key().to_bytes()].clone();
        let signed = partial_alice.sign(&w.node_key).unwrap();
        settle::verify(&signed, &key, &lookup, None).unwrap();
        let err = settle::verify(&signed, &key, &lookup, Some(&all)).unwrap_err();
        assert!(matches!(err, StatementError::Omits { .. }), "{err}");

        // Signed by another key.
        let other = key_for_tests();
        assert!(matches!(
            settle::verify(
                &alice.clone().sign(&w.node_key).unwrap(),
                &other.public_key(),
                &lookup,
                None
            ),
            Err(StatementError::WrongNode { .. })
        ));

        // Citing a receipt the ledger does not hold.
        let empty = |_| None;
        assert!(matches!(
            settle::verify(&alice.sign(&w.node_key).unwrap(), &key, &empty, None),
            Err(StatementError::MissingReceipt { .. })
        ));
    });
}

fn key_for_tests() -> Signer {
    key("node", 1234)
}

#[test]
fn a_tampered_receipt_in_the_ledger_is_detected() {
    let (w, _) = world();
    let rt = common::runtime();
    let index = rt.block_on(async {
        let store = w.store();
        serve(&w, &store, REQUESTS).await;
        let all = receipts(&store).await;
        store.close();
        all[1].index
    });
    // Lower the completion tokens of the second receipt in the database itself.
    let db = rusqlite::Connection::open(w.dir.path().join("ledger.db")).unwrap();
    let raw: Vec<u8> = db
        .query_row("SELECT raw FROM entries WHERE idx = ?1", [index], |r| {
            r.get(0)
        })
        .unwrap();
    let mut entry = Entry::decode(&raw).unwrap();
    let body = String::from_utf8(entry.body.clone()).unwrap();
    let edited = body.replace("\"completion_tokens\":100", "\"completion_tokens\":1");
    assert_ne!(body, edited);
    entry.body = edited.into_bytes();
    db.execute(
        "UPDATE entries SET raw = ?1 WHERE idx = ?2",
        rusqlite::params![entry.encode().unwrap(), index],
    )
    .unwrap();
    drop(db);
    rt.block_on(async {
        let store = w.store();
        let err = receipt::scan(&store, 1, |_| Ok(())).await.unwrap_err();
        assert!(err.to_string().contains("the ledger was altered"), "{err}");
        // Even a copy that matched its entry hash would fail the node's signature.
        let stored = store
            .entry(aura_store::EntryRef::Index(index))
            .await
            .unwrap()
            .unwrap();
        let signed = receipt::SignedReceipt::from_json(&stored.entry.body).unwrap();
        assert!(matches!(
            receipt::verify(&signed, &w.node_key.public_key(), index),
            Err(ReceiptError::BadSignature { .. })
        ));
        // And the meter refuses to count usage from a ledger it cannot trust.
        assert!(Meter::open(&store).await.is_err());
    });
}
