//! The engine end to end on tiny random-weight SD 1.5 and SDXL checkpoints written by the
//! tests in both layouts (a diffusers folder, and a single file converted from it with a
//! port of diffusers' conversion scripts): both load through the real loader and give the
//! same PNG bytes; PNGs are identical at 1, 2 and 4 threads, on every kernel variant and
//! under 4 concurrent requests; seeds, schedulers and LoRAs change the image, and loading
//! without a LoRA restores it exactly.
//!
//! Needs CLIP's vocabulary (`scripts/fetch-models.sh`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aura_image::{
    Error, GenerateRequest, ImageModel, KernelVariant, LoadOptions, LoraFile, ModelFiles, RgbImage,
    SchedulerKind, WeightDtype,
};
use support::Tiny;

struct Fixture {
    _dir: tempfile::TempDir,
    folder: PathBuf,
    single: PathBuf,
}

fn fixture(t: Tiny) -> &'static Fixture {
    static SD15: OnceLock<Fixture> = OnceLock::new();
    static SDXL: OnceLock<Fixture> = OnceLock::new();
    static SD21: OnceLock<Fixture> = OnceLock::new();
    let cell = match t {
        Tiny::Sd15 => &SD15,
        Tiny::Sdxl => &SDXL,
        Tiny::Sd21 => &SD21,
    };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("diffusers");
        support::write_diffusers(&folder, t, 11);
        let single = dir.path().join("model.safetensors");
        support::convert_to_single_file(&folder, t, &single);
        Fixture {
            _dir: dir,
            folder,
            single,
        }
    })
}

fn folder(t: Tiny) -> ModelFiles {
    ModelFiles::Diffusers(fixture(t).folder.clone())
}

fn single(t: Tiny) -> ModelFiles {
    ModelFiles::SingleFile {
        checkpoint: fixture(t).single.clone(),
        vocab: support::vocab_path(),
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "callers build the options inline"
)]
fn load(files: &ModelFiles, opts: LoadOptions) -> ImageModel {
    ImageModel::load(files, &opts).unwrap()
}

fn request(seed: u64) -> GenerateRequest {
    GenerateRequest {
        prompt: "a watercolor fox in the snow".into(),
        negative_prompt: "blurry".into(),
        width: 64,
        height: 64,
        steps: 3,
        guidance_scale: 5.0,
        scheduler: SchedulerKind::EulerAncestral,
        seed,
        ..GenerateRequest::default()
    }
}

fn png(model: &ImageModel, req: &GenerateRequest) -> Vec<u8> {
    model
        .generate(req, &mut |_| ControlFlow::Continue(()))
        .unwrap()
        .png
}

fn threads(n: usize) -> LoadOptions {
    LoadOptions {
        threads: Some(n),
        ..LoadOptions::default()
    }
}

#[test]
fn sd15_folder_and_single_file_give_the_same_png() {
    let a = load(&folder(Tiny::Sd15), threads(2));
    let b = load(&single(Tiny::Sd15), threads(2));
    assert_eq!(a.info().family, "sd1");
    assert_eq!(b.info().family, "sd1");
    let (pa, pb) = (png(&a, &request(1)), png(&b, &request(1)));
    assert!(pa.starts_with(b"\x89PNG"));
    assert_eq!(pa, pb);
}

#[test]
fn sd21_folder_and_single_file_give_the_same_png() {
    // Also the v-prediction path, OpenCLIP's "!" padding and its penultimate layer.
    let a = load(&folder(Tiny::Sd21), threads(2));
    let b = load(&single(Tiny::Sd21), threads(2));
    assert_eq!(a.info().family, "sd2");
    assert_eq!(b.info().family, "sd2");
    assert_eq!(a.schedule().prediction, aura_image::Prediction::V);
    assert_eq!(png(&a, &request(1)), png(&b, &request(1)));
}

#[test]
fn sdxl_folder_and_single_file_give_the_same_png() {
    let a = load(&folder(Tiny::Sdxl), threads(2));
    let b = load(&single(Tiny::Sdxl), threads(2));
    assert_eq!(a.info().family, "sdxl");
    assert_eq!(b.info().family, "sdxl");
    for req in [
        request(1),
        GenerateRequest {
            negative_prompt: String::new(),
            ..request(2)
        },
    ] {
        assert_eq!(png(&a, &req), png(&b, &req));
    }
}

#[test]
fn pngs_are_identical_at_1_2_and_4_threads() {
    for t in [Tiny::Sd15, Tiny::Sdxl] {
        let want = png(&load(&folder(t), threads(1)), &request(5));
        for n in [2, 4] {
            let got = png(&load(&folder(t), threads(n)), &request(5));
            assert_eq!(got, want, "{t:?} at {n} threads");
        }
    }
}

#[test]
fn every_kernel_variant_gives_the_same_png() {
    // The scalar kernel is slow in debug builds: one short request on the smaller model.
    let req = GenerateRequest {
        steps: 1,
        ..request(5)
    };
    let want = png(&load(&folder(Tiny::Sd15), threads(2)), &req);
    for kernel in [
        KernelVariant::Scalar,
        KernelVariant::Avx2,
        KernelVariant::Avx512,
    ] {
        if kernel.is_supported() {
            let opts = LoadOptions {
                kernel: Some(kernel),
                threads: Some(3),
                ..LoadOptions::default()
            };
            let m = load(&folder(Tiny::Sd15), opts);
            assert_eq!(png(&m, &req), want, "{kernel:?}");
            assert_eq!(m.fingerprint().kernel, kernel.name());
        }
    }
}

#[test]
fn four_concurrent_requests_match_lone_ones() {
    let model = load(&folder(Tiny::Sd15), threads(4));
    let alone: Vec<Vec<u8>> = (0..4).map(|i| png(&model, &request(100 + i))).collect();
    let together: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let model = &model;
                s.spawn(move || png(model, &request(100 + i)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
}

#[test]
fn seeds_schedulers_and_prompts_change_the_image() {
    let model = load(&folder(Tiny::Sd15), threads(2));
    let base = png(&model, &request(1));
    assert_ne!(png(&model, &request(2)), base, "different seeds differ");
    assert_ne!(
        png(
            &model,
            &GenerateRequest {
                prompt: "a red cube".into(),
                ..request(1)
            }
        ),
        base
    );
    let mut seen = vec![base];
    for s in [
        SchedulerKind::Ddim { eta: 0.0 },
        SchedulerKind::Ddim { eta: 1.0 },
        SchedulerKind::Euler,
        SchedulerKind::DpmPp2M,
        SchedulerKind::Lcm,
    ] {
        let p = png(
            &model,
            &GenerateRequest {
                scheduler: s,
                ..request(1)
            },
        );
        assert!(!seen.contains(&p), "{s:?} gave an image already seen");
        assert_eq!(
            p,
            png(
                &model,
                &GenerateRequest {
                    scheduler: s,
                    ..request(1)
                }
            ),
            "{s:?} replays"
        );
        seen.push(p);
    }
    // Guidance off runs the prompt alone; the turbo-style single LCM step also works.
    let turbo = GenerateRequest {
        steps: 1,
        guidance_scale: 0.0,
        scheduler: SchedulerKind::Lcm,
        ..request(1)
    };
    assert_eq!(
        model
            .generate(&turbo, &mut |_| ControlFlow::Continue(()))
            .unwrap()
            .steps_run,
        1
    );
}

#[test]
fn f16_files_give_the_same_image_held_as_f16_or_f32() {
    // The SDXL fixture keeps its UNet in f32, so compare on an all-f16 checkpoint: its
    // text encoders and VAE are f16 on disk; holding them as f32 or f16 is exact, which the
    // single-file round trip below checks through a model whose every tensor is f16.
    let dir = tempfile::tempdir().unwrap();
    let f16_single = dir.path().join("f16.safetensors");
    let tensors =
        candle_core::safetensors::load(&fixture(Tiny::Sd15).single, &candle_core::Device::Cpu)
            .unwrap();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(candle_core::DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&tensors, &f16_single).unwrap();
    let files = ModelFiles::SingleFile {
        checkpoint: f16_single,
        vocab: support::vocab_path(),
    };
    let a = load(
        &files,
        LoadOptions {
            dtype: WeightDtype::F16,
            ..threads(2)
        },
    );
    let b = load(
        &files,
        LoadOptions {
            dtype: WeightDtype::F32,
            ..threads(2)
        },
    );
    assert_eq!(a.fingerprint().dtype, "f16->f16");
    assert_eq!(b.fingerprint().dtype, "f16->f32");
    assert!(a.info().weight_bytes < b.info().weight_bytes);
    assert_eq!(png(&a, &request(3)), png(&b, &request(3)));
}

fn lora_opts(path: &Path, scale: f32) -> LoadOptions {
    LoadOptions {
        loras: vec![LoraFile {
            path: path.to_owned(),
            scale,
        }],
        ..threads(2)
    }
}

#[test]
fn a_kohya_lora_changes_the_image_and_removing_it_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let lora = dir.path().join("style.safetensors");
    support::write_kohya_lora(
        &lora,
        &[
            (
                "unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                32,
                32,
                0,
            ),
            ("unet_mid_block_resnets_0_conv1", 64, 64, 3),
            ("unet_up_blocks_3_attentions_2_proj_in", 32, 32, 1),
            ("te_text_model_encoder_layers_0_self_attn_q_proj", 64, 64, 0),
        ],
        21,
    );
    let plain = png(&load(&folder(Tiny::Sd15), threads(2)), &request(4));
    for files in [folder(Tiny::Sd15), single(Tiny::Sd15)] {
        let with = png(&load(&files, lora_opts(&lora, 1.0)), &request(4));
        assert_ne!(with, plain, "the lora changes the image");
        let half = png(&load(&files, lora_opts(&lora, 0.5)), &request(4));
        assert!(half != with && half != plain, "the scale matters");
        assert_eq!(
            png(&load(&files, threads(2)), &request(4)),
            plain,
            "without it, the image is restored exactly"
        );
    }
}

#[test]
fn sdxl_loras_in_peft_and_kohya_ldm_layouts_apply() {
    let dir = tempfile::tempdir().unwrap();
    let peft = dir.path().join("peft.safetensors");
    support::write_peft_lora(
        &peft,
        &[
            (
                "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                128,
                128,
            ),
            (
                "text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj",
                64,
                64,
            ),
        ],
        5,
    );
    let kohya = dir.path().join("kohya.safetensors");
    // SDXL kohya files name UNet modules by their LDM paths: input_blocks.4.1 is
    // down_blocks.1.attentions.0 in diffusers' names.
    support::write_kohya_lora(
        &kohya,
        &[
            (
                "unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                128,
                128,
                0,
            ),
            ("te2_text_model_encoder_layers_1_mlp_fc1", 128, 64, 0),
        ],
        6,
    );
    let plain = png(&load(&folder(Tiny::Sdxl), threads(2)), &request(4));
    for lora in [&peft, &kohya] {
        let a = png(
            &load(&folder(Tiny::Sdxl), lora_opts(lora, 1.0)),
            &request(4),
        );
        let b = png(
            &load(&single(Tiny::Sdxl), lora_opts(lora, 1.0)),
            &request(4),
        );
        assert_ne!(a, plain, "{}", lora.display());
        assert_eq!(a, b, "both layouts merge the same delta");
    }
}

#[test]
fn a_lora_for_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A module SD 1.5 does not have (SDXL's second text encoder)...
    let lora = dir.path().join("xl-te2.safetensors");
    support::write_kohya_lora(
        &lora,
        &[(
            "te2_text_model_encoder_layers_0_self_attn_q_proj",
            64,
            64,
            0,
        )],
        1,
    );
    let err = ImageModel::load(&folder(Tiny::Sd15), &lora_opts(&lora, 1.0)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidLora(_)) && err.to_string().contains("matches no weight"),
        "{err}"
    );
    // ...and a module both have, at SDXL's width.
    let lora = dir.path().join("xl-unet.safetensors");
    support::write_kohya_lora(
        &lora,
        &[(
            "unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            128,
            128,
            0,
        )],
        1,
    );
    let err = ImageModel::load(&folder(Tiny::Sd15), &lora_opts(&lora, 1.0)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidLora(_)) && err.to_string().contains("another model"),
        "{err}"
    );
}

#[test]
fn image_to_image_follows_strength_and_seed() {
    let model = load(&folder(Tiny::Sd15), threads(2));
    let init = RgbImage {
        width: 64,
        height: 64,
        pixels: (0..64 * 64 * 3).map(|i| ((i * 7) % 256) as u8).collect(),
    };
    let req = |strength: f32, seed: u64| GenerateRequest {
        init_image: Some(init.clone()),
        strength,
        steps: 4,
        ..request(seed)
    };
    let run = |r: &GenerateRequest| {
        model
            .generate(r, &mut |_| ControlFlow::Continue(()))
            .unwrap()
    };
    let a = run(&req(0.5, 1));
    assert_eq!(a.steps_run, 2);
    assert_eq!(a.png, run(&req(0.5, 1)).png, "image-to-image replays");
    assert_ne!(a.png, run(&req(0.75, 1)).png);
    assert_ne!(a.png, run(&req(0.5, 2)).png);
    let err = model
        .generate(&req(0.1, 1), &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("strength"), "{err}");
}

#[test]
fn tiled_decoding_is_deterministic_and_covers_the_image() {
    let model = load(&folder(Tiny::Sd15), threads(2));
    let req = GenerateRequest {
        width: 128,
        height: 96,
        vae_tiling: Some(aura_image::VaeTiling {
            tile: 8,
            overlap: 2,
        }),
        ..request(9)
    };
    let a = model
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!((a.image.width, a.image.height), (128, 96));
    assert_eq!(a.png, png(&load(&folder(Tiny::Sd15), threads(1)), &req));
    let whole = GenerateRequest {
        vae_tiling: None,
        ..req
    };
    assert_ne!(png(&model, &whole), a.png, "tiles are decoded separately");
}

#[test]
fn progress_reports_every_step_and_can_cancel() {
    let model = load(&folder(Tiny::Sd15), threads(2));
    let mut steps = vec![];
    model
        .generate(&request(1), &mut |p| {
            assert_eq!(p.latent.len(), 4 * 8 * 8);
            steps.push((p.step, p.steps));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(steps, [(1, 3), (2, 3), (3, 3)]);
    let err = model
        .generate(&request(1), &mut |_| ControlFlow::Break(()))
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled));
}

#[test]
fn bad_requests_are_refused_with_a_clear_error() {
    let model = load(&folder(Tiny::Sd15), threads(1));
    let bad = |r: GenerateRequest, what: &str| {
        let e = model
            .generate(&r, &mut |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidRequest(_)) && e.to_string().contains(what),
            "{e}"
        );
    };
    bad(
        GenerateRequest {
            width: 60,
            ..request(1)
        },
        "width",
    );
    bad(
        GenerateRequest {
            height: 0,
            ..request(1)
        },
        "height",
    );
    bad(
        GenerateRequest {
            steps: 0,
            ..request(1)
        },
        "steps",
    );
    bad(
        GenerateRequest {
            guidance_scale: f32::NAN,
            ..request(1)
        },
        "guidance",
    );
    bad(
        GenerateRequest {
            init_image: Some(RgbImage {
                width: 8,
                height: 8,
                pixels: vec![0; 192],
            }),
            ..request(1)
        },
        "init image",
    );
}

#[test]
fn damaged_checkpoints_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&fixture(Tiny::Sd15).single).unwrap();
    let vocab = support::vocab_path();
    let try_load = |b: &[u8]| {
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, b).unwrap();
        ImageModel::load(
            &ModelFiles::SingleFile {
                checkpoint: p,
                vocab: vocab.clone(),
            },
            &LoadOptions::default(),
        )
    };
    // Truncated, header garbage, empty.
    assert!(try_load(&bytes[..bytes.len() / 2]).is_err());
    let mut garbage = bytes;
    garbage[8..64].fill(b'x');
    assert!(try_load(&garbage).is_err());
    assert!(try_load(&[]).is_err());
    // A checkpoint missing one tensor names it.
    let tensors =
        candle_core::safetensors::load(&fixture(Tiny::Sd15).single, &candle_core::Device::Cpu)
            .unwrap();
    let mut fewer: std::collections::HashMap<_, _> = tensors.into_iter().collect();
    fewer.remove("model.diffusion_model.output_blocks.4.1.proj_out.weight");
    let p = dir.path().join("fewer.safetensors");
    candle_core::safetensors::save(&fewer, &p).unwrap();
    let err = ImageModel::load(
        &ModelFiles::SingleFile {
            checkpoint: p,
            vocab,
        },
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("up_blocks.1.attentions.1.proj_out.weight"),
        "{err}"
    );
}
