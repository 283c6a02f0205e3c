//! Licenses: one test per defect, each refused with its own error and HTTP 403; the
//! publisher's own license on import; allowance accounting from the ledger, across
//! restarts and with requests in flight.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use aura_core::door::{Clock as _, SeededEntropy};
use aura_core::keystore::Signer;
use aura_core::{NodeId, Timestamp};
use aura_model::import::Options;
use aura_model::license::{
    Allowance, License, LicenseError, LicenseId, Licensee, Request, Subject, Uses,
};
use aura_model::meter::{AuthorizeError, Outcome};
use aura_model::{Installed, Meter, Verified, io_hash, no_progress};
use common::{T0, World, key, moe_dir, pack_dir, write_gguf};

struct Fixture {
    w: World,
    owner: Signer,
    pkg: Installed,
}

/// A GGUF package published by `owner` (not this node), with its own license for this
/// node removed, so each test installs exactly the license it is about.
fn fixture() -> Fixture {
    let w = World::new();
    let owner = key("owner", 7);
    let gguf = write_gguf(&w.src(), "tiny.gguf", 1);
    let (pkg, own) = w
        .import_as(
            &gguf,
            &Options {
                name: Some("tiny".into()),
                ..Options::default()
            },
            &owner,
        )
        .unwrap();
    fs::remove_file(w.registry.licenses().path_of(own.statement.id)).unwrap();
    Fixture { w, owner, pkg }
}

impl Fixture {
    /// Terms a careful owner would give this node: 1,000 tokens, inference, a day.
    fn terms(&self) -> License {
        License {
            id: LicenseId::from_bytes([9; 16]),
            licensor: self.owner.public_key(),
            package: self.pkg.digest(),
            package_name: "tiny".into(),
            licensee: Licensee::Node(self.w.node()),
            not_before: Timestamp::from_secs(T0 - 60),
            not_after: Timestamp::from_secs(T0 + 86_400),
            allowance: Allowance::Tokens(1_000),
            price_per_1000_tokens: 2_000,
            currency: "usd-micro".into(),
            uses: Uses::INFERENCE,
            issued_at: Timestamp::from_secs(T0 - 60),
        }
    }

    fn install(&self, edit: impl FnOnce(&mut License)) -> LicenseId {
        let mut l = self.terms();
        edit(&mut l);
        let signed = l.sign(&self.owner).unwrap();
        self.w.registry.licenses().install(&signed).unwrap();
        signed.statement.id
    }

    fn verified(&self) -> Verified {
        self.w
            .registry
            .packages()
            .load("tiny", None, &no_progress)
            .unwrap()
    }

    fn authorize(
        &self,
        meter: &Arc<Meter>,
        uses: Uses,
        tokens: u64,
    ) -> Result<aura_model::Authorization, AuthorizeError> {
        meter.authorize(
            &self.verified(),
            self.w.registry.licenses(),
            self.w.node(),
            self.w.clock.now(),
            uses,
            tokens,
        )
    }
}

/// Authorising 10 tokens of inference now is refused with `code`, as HTTP 403.
fn refused(f: &Fixture, code: &str) -> LicenseError {
    common::runtime().block_on(async {
        let store = f.w.store();
        let meter = Meter::open(&store).await.unwrap();
        let err = f.authorize(&meter, Uses::INFERENCE, 10).unwrap_err();
        assert_eq!(err.http_status(), 403, "{err}");
        assert_eq!(err.code(), code, "{err}");
        assert!(!err.license_error().hint().is_empty());
        err.license_error().clone()
    })
}

#[test]
fn a_valid_license_allows_the_request() {
    let f = fixture();
    let id = f.install(|_| {});
    common::runtime().block_on(async {
        let store = f.w.store();
        let meter = Meter::open(&store).await.unwrap();
        let auth = f.authorize(&meter, Uses::INFERENCE, 10).unwrap();
        assert_eq!(auth.granted()[0].grant.license, id);
        assert_eq!(auth.granted()[0].grant.price_per_1000_tokens, 2_000);
    });
}

#[test]
fn no_license_is_refused() {
    let f = fixture();
    let err = refused(&f, "license_missing");
    assert!(err.to_string().contains("no license for `tiny`"), "{err}");
}

#[test]
fn an_expired_license_is_refused() {
    let f = fixture();
    f.install(|l| l.not_after = Timestamp::from_secs(T0 - 1));
    let err = refused(&f, "license_expired");
    assert!(err.to_string().contains("expired at"), "{err}");
}

#[test]
fn a_license_not_yet_valid_is_refused() {
    let f = fixture();
    f.install(|l| {
        l.not_before = Timestamp::from_secs(T0 + 3600);
        l.not_after = Timestamp::from_secs(T0 + 7200);
    });
    refused(&f, "license_not_yet_valid");
}

#[test]
fn a_license_for_another_node_is_refused() {
    let f = fixture();
    f.install(|l| l.licensee = Licensee::Node(NodeId::from_bytes([5; 16])));
    let err = refused(&f, "license_wrong_node");
    assert!(err.to_string().contains("not this node"), "{err}");
}

#[test]
fn a_license_for_any_node_is_accepted() {
    let f = fixture();
    f.install(|l| l.licensee = Licensee::AnyNode);
    common::runtime().block_on(async {
        let meter = Meter::open(&f.w.store()).await.unwrap();
        f.authorize(&meter, Uses::INFERENCE, 10).unwrap();
    });
}

#[test]
fn a_use_not_permitted_is_refused() {
    let f = fixture();
    f.install(|l| l.uses = Uses::EMBEDDINGS);
    refused(&f, "license_use_not_permitted");
    // And commercial use needs the licence to say so.
    let g = fixture();
    g.install(|_| {});
    common::runtime().block_on(async {
        let meter = Meter::open(&g.w.store()).await.unwrap();
        let err = g
            .authorize(&meter, Uses::INFERENCE.union(Uses::COMMERCIAL), 10)
            .unwrap_err();
        assert_eq!(err.code(), "license_use_not_permitted");
    });
}

#[test]
fn a_license_with_a_bad_signature_is_refused() {
    let f = fixture();
    let id = f.install(|_| {});
    // Raise the allowance in the installed file by hand.
    let path = f.w.registry.licenses().path_of(id);
    let text = fs::read_to_string(&path).unwrap();
    let forged = text.replace("\"allowance\": 1000", "\"allowance\": 1000000");
    assert_ne!(text, forged);
    fs::write(&path, forged).unwrap();
    let err = refused(&f, "license_bad_signature");
    assert!(err.to_string().contains("altered or forged"), "{err}");
}

#[test]
fn a_license_signed_by_someone_other_than_the_owner_is_refused() {
    let f = fixture();
    let mallory = key("mallory", 99);
    let mut l = f.terms();
    l.licensor = mallory.public_key();
    f.w.registry
        .licenses()
        .install(&l.sign(&mallory).unwrap())
        .unwrap();
    let err = refused(&f, "license_wrong_licensor");
    assert!(
        err.to_string().contains("does not own the package"),
        "{err}"
    );
}

#[test]
fn a_license_for_another_package_is_refused() {
    let f = fixture();
    let other = io_hash(b"another package");
    let mut l = f.terms();
    l.package = other;
    let signed = l.sign(&f.owner).unwrap();
    let subject = Subject {
        digest: f.pkg.digest(),
        owner: f.owner.public_key(),
        name: "tiny",
    };
    let request = Request {
        node: f.w.node(),
        now: Timestamp::from_secs(T0),
        uses: Uses::INFERENCE,
        tokens: 1,
    };
    let err = aura_model::license::check(&signed, &subject, &request, 0).unwrap_err();
    assert_eq!(err.code(), "license_wrong_package");
    assert_eq!(err.http_status(), 403);
}

#[test]
fn a_manifest_re_signed_by_another_key_loses_its_licenses() {
    // Someone edits the manifest and signs it with their own key: the package still
    // verifies (under the new key), but its digest and publisher changed, so the owner's
    // licenses no longer cover it.
    let f = fixture();
    f.install(|_| {});
    let dir = &f.pkg.dir;
    let manifest_path = dir.join("manifest.aura");
    common::writable(&manifest_path);
    let mut m = f.pkg.manifest().clone();
    let mallory = key("mallory", 99);
    m.publisher = mallory.public_key();
    m.license = "proprietary".into();
    fs::write(&manifest_path, m.sign(&mallory).unwrap().to_bytes()).unwrap();
    let v =
        f.w.registry
            .packages()
            .load("tiny", None, &no_progress)
            .unwrap();
    assert_ne!(v.digest(), f.pkg.digest());
    refused(&f, "license_wrong_package");
}

#[test]
fn an_allowance_used_up_is_refused_and_survives_a_restart() {
    let f = fixture();
    let id = f.install(|_| {});
    let rt = common::runtime();
    rt.block_on(async {
        let store = f.w.store();
        let meter = Meter::open(&store).await.unwrap();
        let auth = f.authorize(&meter, Uses::INFERENCE, 800).unwrap();
        let outcome = Outcome {
            input_hash: io_hash(b"prompt"),
            output_hash: io_hash(b"answer"),
            prompt_tokens: 500,
            completion_tokens: 200,
            expert_tokens: Vec::new(),
            runtime: aura_model::Runtime::default(),
        };
        let (signed, recorded) = meter
            .record(
                &store,
                &f.w.node_key,
                auth,
                outcome,
                f.w.clock.as_ref(),
                &SeededEntropy::new(1),
            )
            .await
            .unwrap();
        assert_eq!(signed.statement.charges[0].license, id);
        assert_eq!(recorded.seq, 1);
        assert_eq!(
            meter.used(id),
            700,
            "the reservation gave way to the receipt"
        );

        // 700 used; 301 more would pass the 1,000 allowance.
        let err = f.authorize(&meter, Uses::INFERENCE, 301).unwrap_err();
        assert_eq!(err.code(), "license_allowance_used_up");
        assert!(
            err.to_string()
                .contains("700 of 1000 tokens used, 301 more requested"),
            "{err}"
        );
        // Requests in flight hold their tokens: two of 200 do not both fit in 300.
        let first = f.authorize(&meter, Uses::INFERENCE, 200).unwrap();
        assert_eq!(
            f.authorize(&meter, Uses::INFERENCE, 200)
                .unwrap_err()
                .code(),
            "license_allowance_used_up"
        );
        drop(first);
        let second = f.authorize(&meter, Uses::INFERENCE, 200).unwrap();
        drop(second);
        store.close();
    });
    // A restart counts the receipts in the ledger again.
    rt.block_on(async {
        let store = f.w.store();
        let meter = Meter::open(&store).await.unwrap();
        assert_eq!(meter.used(id), 700);
        assert_eq!(meter.receipts(), 1);
        let err = f.authorize(&meter, Uses::INFERENCE, 301).unwrap_err();
        assert_eq!(err.code(), "license_allowance_used_up");
        f.authorize(&meter, Uses::INFERENCE, 300).unwrap();
    });
}

#[test]
fn the_cheapest_valid_license_is_used_and_the_most_telling_refusal_reported() {
    let f = fixture();
    let expensive = f.install(|l| {
        l.id = LicenseId::from_bytes([1; 16]);
        l.price_per_1000_tokens = 9_000;
    });
    let cheap_expired = f.install(|l| {
        l.id = LicenseId::from_bytes([2; 16]);
        l.price_per_1000_tokens = 10;
        l.not_after = Timestamp::from_secs(T0 - 1);
    });
    let _ = cheap_expired;
    common::runtime().block_on(async {
        let meter = Meter::open(&f.w.store()).await.unwrap();
        let auth = f.authorize(&meter, Uses::INFERENCE, 10).unwrap();
        assert_eq!(auth.granted()[0].grant.license, expensive);
        // Once the clock passes both, the refusal is about expiry, the furthest check.
        f.w.clock.advance(Duration::from_secs(2 * 86_400));
        let err = f.authorize(&meter, Uses::INFERENCE, 10).unwrap_err();
        assert_eq!(err.code(), "license_expired");
    });
}

#[test]
fn an_imported_model_is_licensed_to_this_node_at_once() {
    let w = World::new();
    let gguf = write_gguf(&w.src(), "mine.gguf", 3);
    let (_, own) = w
        .import_as(&gguf, &Options::default(), &w.node_key.clone())
        .unwrap();
    assert_eq!(own.statement.licensee, Licensee::Node(w.node()));
    assert_eq!(own.statement.allowance, Allowance::Unlimited);
    assert_eq!(own.statement.uses, Uses::ALL);
    common::runtime().block_on(async {
        let meter = Meter::open(&w.store()).await.unwrap();
        let v = w
            .registry
            .packages()
            .load("mine", None, &no_progress)
            .unwrap();
        meter
            .authorize(
                &v,
                w.registry.licenses(),
                w.node(),
                w.clock.now(),
                Uses::ALL,
                u64::MAX / 2,
            )
            .unwrap();
    });
}

#[test]
fn each_expert_pack_needs_its_own_owners_license() {
    let w = World::new();
    let alice = key("alice", 21);
    let bob = key("bob", 22);
    let src = w.src();
    let (pa, _) = w
        .import_as(
            &pack_dir(&src, "experts-a", &[0, 1], 5),
            &Options {
                expert_pack: true,
                ..Options::default()
            },
            &alice,
        )
        .unwrap();
    let (pb, pb_own) = w
        .import_as(
            &pack_dir(&src, "experts-b", &[2, 3], 6),
            &Options {
                expert_pack: true,
                ..Options::default()
            },
            &bob,
        )
        .unwrap();
    w.import_as(
        &moe_dir(&src, "mix", &[]),
        &Options {
            expert_packs: vec![pa.name, pb.name],
            ..Options::default()
        },
        &w.node_key.clone(),
    )
    .unwrap();
    // Bob withdraws his pack's license from this node.
    fs::remove_file(w.registry.licenses().path_of(pb_own.statement.id)).unwrap();
    common::runtime().block_on(async {
        let meter = Meter::open(&w.store()).await.unwrap();
        let v = w
            .registry
            .packages()
            .load("mix", None, &no_progress)
            .unwrap();
        assert_eq!(v.packs().len(), 2);
        let err = meter
            .authorize(
                &v,
                w.registry.licenses(),
                w.node(),
                w.clock.now(),
                Uses::INFERENCE,
                10,
            )
            .unwrap_err();
        assert_eq!(err.code(), "license_missing");
        assert!(
            err.to_string().starts_with("expert pack `experts-b`"),
            "{err}"
        );
        assert_eq!(err.http_status(), 403);
    });
}
