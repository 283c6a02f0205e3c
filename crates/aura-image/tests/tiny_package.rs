//! The `aura-tiny-emoji` package's files loaded through `tiny::package::Pipeline`, the API a
//! model host uses, with the real MiniLM (`scripts/fetch-models.sh`): prompt to PNG bytes
//! with progress, the same bytes again, and packages whose weights, configuration or text
//! encoder are not what they claim refused.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "support/tiny_package.rs"]
mod tiny_package;

use std::ops::ControlFlow;

use aura_image::tiny::package::{self, PackageConfig, Pipeline};
use aura_image::tiny::{MiniLm, SampleOptions, TextEncoder};
use tiny_package::{minilm_dir, write_package};

fn small_model(text_encoder: &str) -> aura_image::tiny::TinyModel {
    tiny_package::small_model(text_encoder, 5)
}

#[test]
fn a_package_turns_a_prompt_into_the_same_png_bytes_with_progress() {
    let id = MiniLm::load(&minilm_dir()).unwrap().id();
    let tmp = tempfile::tempdir().unwrap();
    let weights = small_model(&id).to_bytes();
    write_package(tmp.path(), &weights);
    let config: PackageConfig =
        serde_json::from_slice(&std::fs::read(tmp.path().join(package::CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(config.model_type, "aura-tiny-emoji");
    assert_eq!(config.text_encoder, id);

    let pipeline = Pipeline::load(tmp.path()).unwrap();
    let opts = SampleOptions {
        seed: 3,
        steps: 6,
        guidance: 3.0,
    };
    let mut seen = Vec::new();
    let png = pipeline
        .generate_png("red apple", &opts, &mut |step, steps| {
            seen.push((step, steps));
        })
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(seen, (1..=6).map(|s| (s, 6)).collect::<Vec<_>>());
    let again = pipeline
        .generate_png("red apple", &opts, &mut |_, _| {})
        .unwrap();
    assert_eq!(png, again, "same prompt, seed and options: same bytes");
    let other = pipeline
        .generate_png(
            "red apple",
            &SampleOptions { seed: 4, ..opts },
            &mut |_, _| {},
        )
        .unwrap();
    assert_ne!(png, other, "another seed, another picture");
}

#[test]
fn packages_that_are_not_what_they_claim_are_refused() {
    let id = MiniLm::load(&minilm_dir()).unwrap().id();
    let weights = small_model(&id).to_bytes();

    // Weights changed after config.json named them.
    let tmp = tempfile::tempdir().unwrap();
    write_package(tmp.path(), &weights);
    let mut bad = weights.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(tmp.path().join(package::WEIGHTS_FILE), &bad).unwrap();
    let e = Pipeline::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("not the file"), "{e}");

    // Another architecture.
    let tmp = tempfile::tempdir().unwrap();
    write_package(tmp.path(), &weights);
    let mut config = PackageConfig::for_weights(&weights).unwrap();
    config.model_type = "llama".into();
    std::fs::write(tmp.path().join(package::CONFIG_FILE), config.to_json()).unwrap();
    assert!(Pipeline::load(tmp.path()).is_err());

    // Weights trained with another text encoder than the package's MiniLM.
    let tmp = tempfile::tempdir().unwrap();
    let foreign = small_model("all-MiniLM-L6-v2@sha256:00").to_bytes();
    write_package(tmp.path(), &foreign);
    let e = Pipeline::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("trained with"), "{e}");

    // Not JSON at all.
    let tmp = tempfile::tempdir().unwrap();
    write_package(tmp.path(), &weights);
    std::fs::write(tmp.path().join(package::CONFIG_FILE), b"\xff").unwrap();
    assert!(Pipeline::load(tmp.path()).is_err());
}

#[test]
fn generate_previews_every_step_steers_with_a_negative_prompt_and_stops_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_package::write_small_package(tmp.path(), 5);
    let pipeline = Pipeline::load(tmp.path()).unwrap();
    let opts = SampleOptions {
        seed: 3,
        steps: 6,
        guidance: 3.0,
    };
    // Without a negative prompt, the host's path is the plain one, bit for bit.
    let plain = pipeline
        .generate_png("red apple", &opts, &mut |_, _| {})
        .unwrap();
    let mut previews = Vec::new();
    let image = pipeline
        .generate("red apple", "", &opts, &mut |p| {
            previews.push((p.step, p.steps, p.preview()));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(image.to_png(), plain);
    assert_eq!(
        previews
            .iter()
            .map(|(s, n, _)| (*s, *n))
            .collect::<Vec<_>>(),
        (1..=6).map(|s| (s, 6)).collect::<Vec<_>>()
    );
    assert!(
        previews
            .iter()
            .all(|(_, _, p)| (p.width, p.height) == (64, 64))
    );
    // The last step lands on the clean latent it predicts: its preview is the image.
    assert_eq!(previews.last().unwrap().2, image);

    // A negative prompt replaces "no prompt" in guidance, and gives the same image again.
    // (Freshly initialised weights ignore their conditioning, adaLN-Zero's gates being
    // zero, so that it steers the picture shows only with trained weights.)
    let steer = |negative: &str| {
        pipeline
            .generate("red apple", negative, &opts, &mut |_| {
                ControlFlow::Continue(())
            })
            .unwrap()
    };
    assert_eq!(steer("green"), steer("green"));
    assert_eq!(steer("  "), image, "a blank negative prompt is none");

    // The callback stops the generation at the step it says so.
    let mut last = 0;
    let stopped = pipeline.generate("red apple", "", &opts, &mut |p| {
        last = p.step;
        if p.step == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(matches!(stopped, Err(aura_image::tiny::Error::Cancelled)));
    assert_eq!(last, 2);

    // On pools of 1, 2 and 4 threads: the same image.
    for threads in [1, 2, 4] {
        let on = Pipeline::load(tmp.path())
            .unwrap()
            .with_threads(threads)
            .unwrap();
        let again = on
            .generate("red apple", "", &opts, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(again, image, "{threads} threads");
    }
    let f = pipeline.fingerprint();
    assert_eq!(
        (f.engine.as_str(), f.kernel.as_str()),
        ("aura-image-tiny", "aura-tiny-kernels/v1")
    );
}
