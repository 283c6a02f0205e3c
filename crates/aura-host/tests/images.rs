//! Image models on a real host over a real package: a tiny random-weight SD 1.5 diffusers
//! folder imported as a signed package, licensed, loaded by aura-image's real loader and
//! metered with a signed receipt per image; refusals (unlicensed, tampered, bad requests)
//! make nothing and record nothing.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "support/image_package.rs"]
mod image_package;
#[path = "../../aura-image/tests/support/mod.rs"]
mod sd;
#[path = "../../aura-image/tests/support/tiny_package.rs"]
mod tiny_package;

use std::sync::Arc;

use aura_core::door::{SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_host::images::{PNG_KEYWORD, parse_size};
use aura_host::{DEFAULT_IMAGE_MODEL, ImageEvent, ImageRequest, Metering, ModelHost, Previews};
use aura_model::io_hash;
use aura_store::SqliteStore;
use aura_store::sqlite::Options as StoreOptions;
use image_package::{STYLE, import_into, tamper, write_folder};

struct World {
    dir: tempfile::TempDir,
    signer: Arc<Signer>,
    store: Arc<SqliteStore>,
}

impl World {
    /// A data directory with the tiny model installed as `sd` (licensed) and as
    /// `unlicensed` (no license).
    fn new() -> World {
        World::with(|dir, home, signer| {
            let folder = dir.join("folder");
            write_folder(&folder);
            import_into(home, &folder, "sd", signer, true);
            import_into(home, &folder, "unlicensed", signer, false);
        })
    }

    /// A data directory with a small `aura-tiny-emoji` package (fresh weights, the real
    /// MiniLM) installed and licensed under the default image model's name.
    fn tiny() -> World {
        World::with(|dir, home, signer| {
            let folder = dir.join("tiny");
            tiny_package::write_small_package(&folder, 5);
            import_into(home, &folder, DEFAULT_IMAGE_MODEL, signer, true);
        })
    }

    fn with(install: impl FnOnce(&std::path::Path, &std::path::Path, &Signer)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1)).unwrap());
        install(dir.path(), &dir.path().join("home"), &signer);
        let store = Arc::new(
            SqliteStore::open(
                dir.path().join("ledger.db"),
                signer.clone(),
                Arc::new(SystemClock),
                StoreOptions::default(),
            )
            .unwrap(),
        );
        World { dir, signer, store }
    }

    async fn host(&self) -> Arc<ModelHost> {
        self.host_on(1).await
    }

    /// A host whose models run on `threads` threads.
    async fn host_on(&self, threads: usize) -> Arc<ModelHost> {
        let metering = Metering::open(self.store.clone(), self.signer.clone())
            .await
            .unwrap();
        Arc::new(ModelHost::new(
            &self.dir.path().join("home"),
            metering,
            Some(threads),
        ))
    }

    async fn receipts(&self) -> Vec<aura_model::receipt::LedgerReceipt> {
        let mut all = Vec::new();
        aura_model::receipt::scan(&*self.store, 1, |r| {
            all.push(r);
            Ok(())
        })
        .await
        .unwrap();
        all
    }
}

fn request(seed: u64) -> ImageRequest {
    ImageRequest {
        prompt: "a watercolor fox in the snow".into(),
        negative_prompt: "blurry".into(),
        width: Some(64),
        height: Some(64),
        steps: Some(3),
        guidance_scale: Some(5.0),
        seed: Some(seed),
        ..ImageRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_png_and_each_image_one_receipt_that_verifies() {
    let world = World::new();
    let host = world.host().await;
    let cards = host.list_async().await.unwrap();
    let sd = cards.iter().find(|c| c.name == "sd").unwrap();
    assert!(sd.image && !sd.generator, "{sd:?}");
    assert_eq!(sd.architecture, "stable-diffusion");

    let served = host.open_image(Some("sd"), None).await.unwrap();
    let a = host
        .generate_images(&served, &request(7), None)
        .await
        .unwrap();
    let b = host
        .generate_images(&served, &request(7), None)
        .await
        .unwrap();
    let c = host
        .generate_images(&served, &request(8), None)
        .await
        .unwrap();
    let (a, b, c) = (&a.images[0], &b.images[0], &c.images[0]);
    // Each carries its own receipt id; apart from that chunk, the bytes are the same.
    assert_ne!(a.png, b.png);
    let bare = |png: &[u8]| aura_image::png::without_text(png, PNG_KEYWORD);
    assert_eq!(bare(&a.png), bare(&b.png), "same seed, same PNG");
    assert_ne!(bare(&a.png), bare(&c.png), "another seed, another PNG");
    assert_eq!(a.parameters, b.parameters);

    // The PNG names its receipt and parameters; the signed receipt's hashes match them.
    let chunk: serde_json::Value =
        serde_json::from_str(&aura_image::png::text_of(&a.png, PNG_KEYWORD).unwrap()).unwrap();
    assert_eq!(chunk["receipt"], a.receipt.to_string());
    assert_eq!(chunk["parameters"], a.parameters);
    assert_eq!(chunk["parameters"]["format"], "aura-image-params/v1");
    assert_eq!(chunk["parameters"]["seed"], 7);
    assert_eq!(chunk["parameters"]["steps"], 3);
    assert_eq!(chunk["parameters"]["guidance_scale"], 5.0);
    assert_eq!(chunk["parameters"]["package"], served.digest().to_hex());
    assert_eq!(
        chunk["parameters"]["prompt_sha256"],
        aura_core::hash::Hash::sha256(b"a watercolor fox in the snow").to_hex()
    );
    let receipts = world.receipts().await;
    assert_eq!(receipts.len(), 3);
    let r = receipts
        .iter()
        .find(|r| r.signed.statement.id == a.receipt)
        .unwrap();
    r.verify(&world.signer.public_key()).unwrap();
    let s = &r.signed.statement;
    assert_eq!(s.package, served.digest());
    assert_eq!(s.package_name, "sd");
    assert_eq!(s.output_hash, io_hash(&a.png));
    assert_eq!(
        s.input_hash,
        io_hash(&aura_core::jcs::to_vec(&chunk["parameters"]).unwrap())
    );
    assert_eq!(s.completion_tokens, 3);
    assert!(
        s.runtime.version.starts_with("aura-image "),
        "{:?}",
        s.runtime
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_images_take_consecutive_seeds_and_previews_stream_before_each_image() {
    let world = World::new();
    let host = world.host().await;
    let served = host.open_image(Some("sd"), None).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let req = ImageRequest {
        n: Some(2),
        steps: Some(4),
        previews: Previews::Partial(2),
        ..request(5)
    };
    let two = host.generate_images(&served, &req, Some(tx)).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert_eq!(two.images.len(), 2);
    assert_eq!((two.images[0].seed, two.images[1].seed), (5, 6));
    let alone = host
        .generate_images(
            &served,
            &ImageRequest {
                steps: Some(4),
                ..request(6)
            },
            None,
        )
        .await
        .unwrap();
    let bare = |png: &[u8]| aura_image::png::without_text(png, PNG_KEYWORD);
    assert_eq!(bare(&two.images[1].png), bare(&alone.images[0].png));

    let previews: Vec<(u32, u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            ImageEvent::Preview {
                image,
                step,
                index,
                png,
            } => {
                // An eighth of the image's side, from the latent.
                assert_eq!(&png[12..16], b"IHDR");
                assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 8);
                Some((*image, *step, *index))
            }
            _ => None,
        })
        .collect();
    // Two partial images per image, spread over the steps, numbered across the request.
    assert_eq!(previews, [(0, 1, 0), (0, 2, 1), (1, 1, 2), (1, 2, 3)]);
    let steps = events
        .iter()
        .filter(|e| matches!(e, ImageEvent::Progress { .. }))
        .count();
    assert_eq!(steps, 8);
    assert!(matches!(
        events.last(),
        Some(ImageEvent::Image { image: 1, .. })
    ));
    assert_eq!(world.receipts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlicensed_tampered_and_bad_requests_make_nothing_and_record_nothing() {
    let world = World::new();
    let host = world.host().await;

    let unlicensed = host.open_image(Some("unlicensed"), None).await.unwrap_err();
    assert_eq!(unlicensed.status, 403, "{unlicensed}");

    let unknown = host.open_image(Some("nope"), None).await.unwrap_err();
    assert_eq!((unknown.status, unknown.code), (404, "model_not_found"));

    let no_lora = host
        .open_image(Some("sd"), Some("other"))
        .await
        .unwrap_err();
    assert_eq!(no_lora.status, 400);
    assert_eq!(
        no_lora.message,
        format!("lora: model `sd` has no LoRA `other`; it carries {STYLE}")
    );

    let served = host.open_image(Some("sd"), None).await.unwrap();
    let check = |req: ImageRequest, expect: &str| {
        let host = host.clone();
        let served = served.clone();
        let expect = expect.to_owned();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let e = host
                .generate_images(&served, &req, Some(tx))
                .await
                .unwrap_err();
            assert_eq!((e.status, e.message.as_str()), (400, expect.as_str()));
            assert!(rx.recv().await.is_none(), "nothing ran for {expect}");
        }
    };
    check(
        ImageRequest {
            width: Some(100),
            ..request(1)
        },
        "size: 100x64 is not supported; each side must be a multiple of 8 from 64 to 2048 (this model's default is 512x512)",
    )
    .await;
    check(
        ImageRequest {
            n: Some(11),
            ..request(1)
        },
        "n: must be between 1 and 10",
    )
    .await;
    check(
        ImageRequest {
            prompt: "x".repeat(4001),
            ..request(1)
        },
        "prompt: is 4001 characters; the most is 4000",
    )
    .await;
    check(
        ImageRequest {
            scheduler: Some("plms".into()),
            ..request(1)
        },
        "scheduler: `plms` is not one of ddim, euler, euler_a, dpmpp_2m, lcm",
    )
    .await;
    check(
        ImageRequest {
            init_image: Some(b"not a png".to_vec()),
            ..request(1)
        },
        "image: is not a PNG this node reads: it is not a PNG file (no PNG signature)",
    )
    .await;
    assert_eq!(
        parse_size("512by512").unwrap_err().message,
        "size: `512by512` is not WIDTHxHEIGHT (such as 512x512) or auto"
    );
    assert_eq!(parse_size("64x128").unwrap(), Some((64, 128)));
    assert_eq!(parse_size("auto").unwrap(), None);
    assert!(world.receipts().await.is_empty());

    // A package whose weights were changed after signing is refused, loaded or not.
    tamper(
        &world.dir.path().join("home/models/sd"),
        "unet/diffusion_pytorch_model.safetensors",
    );
    let tampered = host.open_image(Some("sd"), None).await.unwrap_err();
    assert_eq!(tampered.status, 409, "{tampered}");
    assert!(
        tampered
            .message
            .contains("unet/diffusion_pytorch_model.safetensors"),
        "{tampered}"
    );
    assert!(world.receipts().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packages_lora_changes_the_image_and_an_edit_starts_from_an_image() {
    let world = World::new();
    let host = world.host().await;
    let plain = host.open_image(Some("sd"), None).await.unwrap();
    let styled = host.open_image(Some("sd"), Some(STYLE)).await.unwrap();
    let bare = |png: &[u8]| aura_image::png::without_text(png, PNG_KEYWORD);
    let a = host
        .generate_images(&plain, &request(3), None)
        .await
        .unwrap();
    let b = host
        .generate_images(&styled, &request(3), None)
        .await
        .unwrap();
    assert_ne!(bare(&a.images[0].png), bare(&b.images[0].png));
    assert_eq!(b.images[0].parameters["lora"]["name"], STYLE);
    assert_eq!(
        b.images[0].parameters["lora"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    let edit = ImageRequest {
        init_image: Some(bare(&a.images[0].png)),
        strength: Some(0.5),
        steps: Some(4),
        ..request(9)
    };
    let edited = host.generate_images(&plain, &edit, None).await.unwrap();
    let p = &edited.images[0].parameters;
    assert_eq!(p["strength"], 0.5);
    assert_eq!(p["init_image_sha256"].as_str().unwrap().len(), 64);
    // Half of four steps ran.
    let receipts = world.receipts().await;
    assert_eq!(
        receipts.last().unwrap().signed.statement.completion_tokens,
        2
    );
}

/// A request for the tiny model: its own size, steps and guidance unless named.
fn tiny_request(seed: u64) -> ImageRequest {
    ImageRequest {
        prompt: "red apple".into(),
        steps: Some(4),
        seed: Some(seed),
        ..ImageRequest::default()
    }
}

fn width_of(png: &[u8]) -> u32 {
    assert_eq!(&png[12..16], b"IHDR");
    u32::from_be_bytes(png[16..20].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiny_model_is_the_default_and_gives_the_same_png_on_any_threads_and_beside_others() {
    let world = World::tiny();
    let bare = |png: &[u8]| aura_image::png::without_text(png, PNG_KEYWORD);
    let one = world.host_on(1).await;
    let cards = one.list_async().await.unwrap();
    let card = cards
        .iter()
        .find(|c| c.name == DEFAULT_IMAGE_MODEL)
        .unwrap();
    assert!(card.image && !card.generator, "{card:?}");
    assert_eq!(card.architecture, "aura-tiny-emoji");

    // No model named: the default image model, at its own size, steps and guidance.
    let served = one.open_image(None, None).await.unwrap();
    assert_eq!(served.name(), DEFAULT_IMAGE_MODEL);
    let reference = one
        .generate_images(&served, &tiny_request(9), None)
        .await
        .unwrap();
    assert_eq!((reference.width, reference.height), (64, 64));
    let made = &reference.images[0];
    assert_eq!(width_of(&made.png), 64);
    assert_eq!(made.parameters["scheduler"], "ddim");
    assert_eq!(made.parameters["guidance_scale"], 3.0);
    assert_eq!(made.parameters["steps"], 4);
    let reference = bare(&made.png);

    // Two and four threads, and four requests at once on four threads: the same bytes.
    for threads in [2, 4] {
        let host = world.host_on(threads).await;
        let served = host.open_image(None, None).await.unwrap();
        let again = host
            .generate_images(&served, &tiny_request(9), None)
            .await
            .unwrap();
        assert_eq!(bare(&again.images[0].png), reference, "{threads} threads");
    }
    let host = world.host_on(4).await;
    let served = host.open_image(None, None).await.unwrap();
    let runs = (0..4).map(|_| {
        let host = host.clone();
        let served = served.clone();
        tokio::spawn(async move {
            host.generate_images(&served, &tiny_request(9), None)
                .await
                .unwrap()
        })
    });
    for run in futures_util::future::join_all(runs).await {
        assert_eq!(bare(&run.unwrap().images[0].png), reference);
    }
    let other = one
        .generate_images(&served, &tiny_request(10), None)
        .await
        .unwrap();
    assert_ne!(bare(&other.images[0].png), reference, "another seed");

    // Every image has its signed receipt, naming the tiny engine as what ran.
    let receipts = world.receipts().await;
    assert_eq!(receipts.len(), 1 + 2 + 4 + 1);
    let r = receipts
        .iter()
        .find(|r| r.signed.statement.id == made.receipt)
        .unwrap();
    r.verify(&world.signer.public_key()).unwrap();
    let s = &r.signed.statement;
    assert_eq!(s.package_name, DEFAULT_IMAGE_MODEL);
    assert_eq!(s.output_hash, io_hash(&made.png));
    assert_eq!(
        s.input_hash,
        io_hash(&aura_core::jcs::to_vec(&made.parameters).unwrap())
    );
    assert_eq!(s.completion_tokens, 4);
    assert!(
        s.runtime.version.starts_with("aura-image-tiny ")
            && s.runtime.version.ends_with("aura-tiny-weights/v1"),
        "{:?}",
        s.runtime
    );
    assert_eq!(s.runtime.kernel, "aura-tiny-kernels/v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiny_model_previews_at_full_size_steers_away_from_a_negative_prompt_and_refuses_what_it_cannot_do()
 {
    let world = World::tiny();
    let host = world.host().await;
    let served = host.open_image(None, None).await.unwrap();
    let bare = |png: &[u8]| aura_image::png::without_text(png, PNG_KEYWORD);

    // A preview after every step: the predicted image through the model's own decoder,
    // at full size; the last one is the image itself.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let req = ImageRequest {
        previews: Previews::Every,
        ..tiny_request(3)
    };
    let made = host.generate_images(&served, &req, Some(tx)).await.unwrap();
    let mut previews = Vec::new();
    while let Some(e) = rx.recv().await {
        if let ImageEvent::Preview { step, png, .. } = e {
            assert_eq!(width_of(&png), 64);
            previews.push((step, png));
        }
    }
    assert_eq!(
        previews.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(
        previews.last().unwrap().1,
        bare(&made.images[0].png),
        "at the last step the prediction is the image"
    );

    // A negative prompt takes the place of "no prompt" in guidance (fresh weights ignore
    // their conditioning, so the picture is the same here), and its hash is in the record.
    let steered = host
        .generate_images(
            &served,
            &ImageRequest {
                negative_prompt: "green".into(),
                ..tiny_request(3)
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        steered.images[0].parameters["negative_prompt_sha256"],
        aura_core::hash::Hash::sha256(b"green").to_hex()
    );
    assert_eq!(world.receipts().await.len(), 2);

    // What the model cannot do is refused before anything runs, naming the field.
    let check = |req: ImageRequest, expect: &str| {
        let host = host.clone();
        let served = served.clone();
        let expect = expect.to_owned();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let e = host
                .generate_images(&served, &req, Some(tx))
                .await
                .unwrap_err();
            assert_eq!((e.status, e.message.as_str()), (400, expect.as_str()));
            assert!(rx.recv().await.is_none(), "nothing ran for {expect}");
        }
    };
    check(
        ImageRequest {
            width: Some(128),
            height: Some(128),
            ..tiny_request(1)
        },
        "size: 128x128 is not supported; this model makes 64x64 images only",
    )
    .await;
    check(
        ImageRequest {
            scheduler: Some("euler".into()),
            ..tiny_request(1)
        },
        "scheduler: `euler` is not one this model runs; it samples with ddim only",
    )
    .await;
    let png = bare(&made.images[0].png);
    check(
        ImageRequest {
            init_image: Some(png),
            ..tiny_request(1)
        },
        "image: this model cannot start from an image",
    )
    .await;
    assert_eq!(world.receipts().await.len(), 2);

    // A caller that goes away stops the work at its next step: the image in progress is
    // not recorded, nor any after it (ten images of 150 steps with a preview after each
    // take long enough that dropping the receiver lands well before the end).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let long = ImageRequest {
        n: Some(10),
        steps: Some(150),
        previews: Previews::Every,
        ..tiny_request(1)
    };
    let run = {
        let host = host.clone();
        let served = served.clone();
        tokio::spawn(async move { host.generate_images(&served, &long, Some(tx)).await })
    };
    assert!(matches!(
        rx.recv().await,
        Some(ImageEvent::Progress { step: 1, .. })
    ));
    drop(rx);
    let stopped = run.await.unwrap().unwrap_err();
    assert_eq!(stopped.status, 499, "{stopped}");
    let recorded = world.receipts().await.len() - 2;
    assert!(
        recorded < 10,
        "{recorded} images recorded after the caller left"
    );
}
