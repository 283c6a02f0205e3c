//! LoRA for Aura's tiny model: low-rank adapters on the denoiser's linear maps, trained on
//! a user's folder of captioned images while the base model stays frozen, saved as their
//! own small weight file and merged into the base weights at load.
//!
//! # The folder
//!
//! Every `*.png` directly inside the folder is an image (any size up to 4096 pixels a side;
//! it is composited over white, cropped to its centred square and resized to 64×64); its
//! caption is the text of the `.txt` file with the same stem (`cat.png` → `cat.txt`, as
//! kohya's trainers expect), or, without one, the stem with `_` and `-` read as spaces.
//! Files are taken in byte order of their names. The folder's content digest
//! (`aura-folder-dataset/v1`) is SHA-256 over the tag, the sample count (u32 LE), then per
//! sample the caption and the file name (each u32 LE length and bytes) and the 64×64 RGB
//! bytes as resized.
//!
//! # The adapter file (`aura-tiny-lora/v1`)
//!
//! Canonical safetensors (see the tiny model's weights module) with, for each adapted
//! linear map `name`, `name.lora_a` (`in × rank`) and `name.lora_b` (`rank × out`), and the
//! metadata `format`, `base_model` (SHA-256 of the base weight file), `rank` and `alpha`.
//! Merged, a map's weights become `W + strength · (alpha / rank) · A B`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Checkpoint, Conditioned, DatasetRef, DenoiserStage, Error, Options, Progress, RECORD_FORMAT,
    STREAM_LORA, Sample, Stage, StageRun, TrainingRecord, TrainingSet, checkpoint, code_id,
    embed_captions, encode_means, pool, run_denoiser,
};
use crate::dataset::{decode_png_rgba, rgba_on_white};
use crate::tiny::gemm::{View, matmul};
use crate::tiny::layers::{Lora, Param};
use crate::tiny::{self, Gaussian, TextEncoder, TinyModel, weights};

/// The adapter file's format tag.
pub const LORA_FORMAT: &str = "aura-tiny-lora/v1";
/// The LoRA recipe's format tag.
pub const LORA_RECIPE_FORMAT: &str = "aura-tiny-lora-recipe/v1";

const FOLDER_TAG: &[u8] = b"aura-folder-dataset/v1";
const MAX_IMAGES: usize = 10_000;
const MAX_FILE: u64 = 64 << 20;
const MAX_SIDE: u32 = 4096;
const MAX_CAPTION: usize = 1000;

/// How to train adapters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraRecipe {
    /// [`LORA_RECIPE_FORMAT`].
    pub format: String,
    /// Rank of each adapter.
    pub rank: usize,
    /// Scale numerator: the update is `(alpha / rank) · A B`.
    pub alpha: f32,
    /// Which of the denoiser's linear maps get adapters: names as in the weight file
    /// without the `denoiser.` prefix, `*` matching one path segment (`blocks.*.fc1`).
    pub targets: Vec<String>,
    /// The training stage (captions are never swapped for short names here).
    pub stage: DenoiserStage,
}

impl Default for LoraRecipe {
    fn default() -> Self {
        Self {
            format: LORA_RECIPE_FORMAT.into(),
            rank: 8,
            alpha: 8.0,
            targets: [
                "text1",
                "text2",
                "blocks.*.modulation",
                "blocks.*.fc1",
                "blocks.*.fc2",
                "out_modulation",
                "output",
            ]
            .map(String::from)
            .to_vec(),
            stage: DenoiserStage {
                steps: 400,
                batch: 32,
                lr: 2e-3,
                warmup: 20,
                weight_decay: 0.0,
                uncond_prob: 0.1,
                min_snr_gamma: 5.0,
                short_name_prob: 0.0,
            },
        }
    }
}

impl LoraRecipe {
    /// SHA-256 of the recipe's canonical JSON (compact, declaration order), hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }

    fn check(&self) -> Result<(), Error> {
        let s = &self.stage;
        if self.format != LORA_RECIPE_FORMAT {
            return Err(Error::Recipe(format!(
                "format must be {LORA_RECIPE_FORMAT}"
            )));
        }
        if !(1..=256).contains(&self.rank) || !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::Recipe(
                "rank must be 1 to 256 and alpha positive".into(),
            ));
        }
        if s.batch == 0
            || s.batch > 4096
            || !s.lr.is_finite()
            || s.lr <= 0.0
            || !(0.0..=1.0).contains(&s.uncond_prob)
        {
            return Err(Error::Recipe(
                "batch 1 to 4096, a positive learning rate, uncond_prob in [0, 1]".into(),
            ));
        }
        if self.targets.is_empty() {
            return Err(Error::Recipe("no target layers".into()));
        }
        Ok(())
    }
}

/// Whether a layer name matches a target pattern (`*` = one path segment).
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), name.split('.').collect());
    p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| *p == "*" || p == n)
}

/// Trained adapters.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraWeights {
    /// SHA-256 of the base model's weight file.
    pub base_model: String,
    /// Rank.
    pub rank: usize,
    /// Scale numerator.
    pub alpha: f32,
    /// `(A, B)` by layer name (without the `denoiser.` prefix), `A` as `in × rank`.
    pub(crate) layers: BTreeMap<String, (weights::Tensor, weights::Tensor)>,
}

impl LoraWeights {
    /// The adapter file (module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut tensors = BTreeMap::new();
        for (name, (a, b)) in &self.layers {
            tensors.insert(format!("{name}.lora_a"), a.clone());
            tensors.insert(format!("{name}.lora_b"), b.clone());
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_owned(), LORA_FORMAT.to_owned());
        meta.insert("base_model".to_owned(), self.base_model.clone());
        meta.insert("rank".to_owned(), self.rank.to_string());
        meta.insert(
            "alpha".to_owned(),
            serde_json::to_string(&self.alpha).unwrap_or_default(),
        );
        weights::write(&tensors, &meta)
    }

    /// SHA-256 of [`Self::to_bytes`], hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.to_bytes()))
    }

    /// Reads an adapter file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, tiny::Error> {
        let bad = |m: String| tiny::Error::Weights(m);
        let (mut tensors, meta) = weights::read(bytes)?;
        if meta.get("format").map(String::as_str) != Some(LORA_FORMAT) {
            return Err(bad(format!("not a {LORA_FORMAT} file")));
        }
        let rank: usize = meta
            .get("rank")
            .and_then(|r| r.parse().ok())
            .filter(|r| (1..=256).contains(r))
            .ok_or_else(|| bad("rank is missing or out of range".into()))?;
        let alpha: f32 = meta
            .get("alpha")
            .and_then(|a| a.parse().ok())
            .filter(|a: &f32| a.is_finite() && *a > 0.0)
            .ok_or_else(|| bad("alpha is missing or not positive".into()))?;
        let base_model = meta
            .get("base_model")
            .cloned()
            .filter(|b| b.len() == 64 && b.bytes().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| bad("base_model is missing".into()))?;
        let names: Vec<String> = tensors
            .keys()
            .filter_map(|k| k.strip_suffix(".lora_a").map(str::to_owned))
            .collect();
        let mut layers = BTreeMap::new();
        for name in names {
            let a = tensors
                .remove(&format!("{name}.lora_a"))
                .ok_or_else(|| bad(format!("{name}.lora_a is missing")))?;
            let b = tensors
                .remove(&format!("{name}.lora_b"))
                .ok_or_else(|| bad(format!("{name}.lora_b is missing")))?;
            if a.shape.len() != 2 || b.shape.len() != 2 || a.shape[1] != rank || b.shape[0] != rank
            {
                return Err(bad(format!(
                    "{name}: adapter shapes {:?} and {:?} do not have rank {rank}",
                    a.shape, b.shape
                )));
            }
            layers.insert(name, (a, b));
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(bad(format!("unexpected tensor {extra}")));
        }
        if layers.is_empty() {
            return Err(bad("no adapters".into()));
        }
        Ok(Self {
            base_model,
            rank,
            alpha,
            layers,
        })
    }
}

impl TinyModel {
    /// This model with adapters merged into its denoiser at `strength` (1 = as trained).
    /// The adapters must have been trained on exactly this model.
    pub fn with_lora(&self, lora: &LoraWeights, strength: f32) -> Result<TinyModel, tiny::Error> {
        if lora.base_model != self.sha256() {
            return Err(tiny::Error::Weights(format!(
                "these adapters were trained on model {}, not this one ({})",
                &lora.base_model[..12],
                &self.sha256()[..12]
            )));
        }
        if !strength.is_finite() || strength.abs() > 16.0 {
            return Err(tiny::Error::Invalid(
                "strength must be a number between -16 and 16".into(),
            ));
        }
        let mut out = self.clone();
        let scale = strength * lora.alpha / lora.rank as f32;
        let mut left: Vec<&String> = lora.layers.keys().collect();
        for (name, linear) in out.denoiser.linears_mut() {
            let Some((a, b)) = lora.layers.get(&name) else {
                continue;
            };
            left.retain(|n| **n != name);
            let (i, o) = (linear.inp(), linear.out());
            if a.shape != [i, lora.rank] || b.shape != [lora.rank, o] {
                return Err(tiny::Error::Weights(format!(
                    "{name}: adapter shapes do not fit the layer"
                )));
            }
            let mut scaled = a.data.clone();
            tiny::layers::scale(&mut scaled, scale);
            matmul(
                View::new(&scaled, i, lora.rank),
                View::new(&b.data, lora.rank, o),
                &mut linear.w.w,
                true,
            );
        }
        if let Some(name) = left.first() {
            return Err(tiny::Error::Weights(format!(
                "the model has no layer {name}"
            )));
        }
        Ok(out)
    }
}

/// Reads a folder of captioned images (module documentation).
pub fn read_folder(dir: &Path) -> Result<TrainingSet, Error> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.to_ascii_lowercase().ends_with(".png"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Data(format!(
            "{} holds no .png images\nhint: put captioned images there (cat.png with its caption in cat.txt)",
            dir.display()
        )));
    }
    if files.len() > MAX_IMAGES {
        return Err(Error::Data(format!("more than {MAX_IMAGES} images")));
    }
    let mut samples = Vec::with_capacity(files.len());
    let mut h = Sha256::new();
    h.update(FOLDER_TAG);
    h.update((files.len() as u32).to_le_bytes());
    for name in &files {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if meta.len() > MAX_FILE {
            return Err(Error::Data(format!(
                "{name} is larger than {MAX_FILE} bytes"
            )));
        }
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let (w, hgt, rgba) =
            decode_png_rgba(&bytes, MAX_SIDE).map_err(|e| Error::Data(format!("{name}: {e}")))?;
        let rgb = square_64(&rgba_on_white(&rgba), w as usize, hgt as usize);
        let stem = &name[..name.len() - 4];
        let caption = match std::fs::read_to_string(dir.join(format!("{stem}.txt"))) {
            Ok(text) => tiny::normalize_prompt(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tiny::normalize_prompt(&stem.replace(['_', '-'], " "))
            }
            Err(source) => {
                return Err(Error::Io {
                    path: dir.join(format!("{stem}.txt")),
                    source,
                });
            }
        };
        if caption.is_empty() || caption.len() > MAX_CAPTION {
            return Err(Error::Data(format!(
                "{name}: the caption must have 1 to {MAX_CAPTION} bytes"
            )));
        }
        for s in [&caption, name] {
            h.update((s.len() as u32).to_le_bytes());
            h.update(s.as_bytes());
        }
        h.update(&rgb);
        samples.push(Sample {
            captions: vec![caption],
            rgb: rgb.iter().map(|&v| f32::from(v) / 127.5 - 1.0).collect(),
        });
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "folder".into());
    Ok(TrainingSet {
        name,
        source_sha256: String::new(),
        digest: hex::encode(h.finalize()),
        samples,
    })
}

/// The centred square of an RGB image, resized to 64×64 by averaging a 4×4 grid of
/// bilinear samples per output pixel (enough for both shrinking and enlarging).
pub(crate) fn square_64(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let side = w.min(h);
    let (cx, cy) = ((w - side) / 2, (h - side) / 2);
    let out = tiny::IMAGE;
    let step = side as f32 / out as f32;
    // Pixels of the crop only, so nothing outside the square bleeds in at its edges.
    let px = |x: usize, y: usize, c: usize| {
        let (x, y) = (cx + x.min(side - 1), cy + y.min(side - 1));
        f32::from(rgb[(y * w + x) * 3 + c])
    };
    let (x0, y0) = (0.0f32, 0.0f32);
    let mut dst = vec![0u8; out * out * 3];
    for oy in 0..out {
        for ox in 0..out {
            let mut acc = [0.0f32; 3];
            for sy in 0..4 {
                for sx in 0..4 {
                    // Sample positions inside the output pixel, in source pixel centres.
                    let fx = (x0 + (ox as f32 + (sx as f32 + 0.5) / 4.0) * step - 0.5).max(0.0);
                    let fy = (y0 + (oy as f32 + (sy as f32 + 0.5) / 4.0) * step - 0.5).max(0.0);
                    let (ix, iy) = (fx as usize, fy as usize);
                    let (tx, ty) = (fx - ix as f32, fy - iy as f32);
                    for (c, a) in acc.iter_mut().enumerate() {
                        let top = px(ix, iy, c) * (1.0 - tx) + px(ix + 1, iy, c) * tx;
                        let bottom = px(ix, iy + 1, c) * (1.0 - tx) + px(ix + 1, iy + 1, c) * tx;
                        *a += top * (1.0 - ty) + bottom * ty;
                    }
                }
            }
            for c in 0..3 {
                dst[(oy * out + ox) * 3 + c] = (acc[c] / 16.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    dst
}

/// Trains adapters on `set` for `base` (whose weights stay as they are).
pub fn train_lora(
    base: &TinyModel,
    set: &TrainingSet,
    encoder: &dyn TextEncoder,
    recipe: &LoraRecipe,
    seed: u64,
    opts: &Options,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<(LoraWeights, TrainingRecord), Error> {
    recipe.check()?;
    if encoder.id() != base.text_encoder() {
        return Err(Error::Model(tiny::Error::TextEncoder(format!(
            "the base model was trained with {}, not {}",
            base.text_encoder(),
            encoder.id()
        ))));
    }
    if set.samples.is_empty() {
        return Err(Error::Data("no samples".into()));
    }
    let (vectors, captions) = embed_captions(set, encoder, opts)?;
    let base_sha = base.sha256();
    let pool = pool(opts.threads)?;
    pool.install(|| {
        let mut model = base.clone();
        for (_, p) in model.params() {
            p.trainable = false;
        }
        // Adapters: A from N(0, 1/in), B zero, so training starts at the base model.
        let mut rng = Gaussian::new(seed, STREAM_LORA);
        let scale = recipe.alpha / recipe.rank as f32;
        let mut adapted = 0;
        for (name, linear) in model.denoiser.linears_mut() {
            if !recipe.targets.iter().any(|t| matches(t, &name)) {
                continue;
            }
            let (i, o) = (linear.inp(), linear.out());
            linear.lora = Some(Lora {
                a: Param::normal(&[i, recipe.rank], 1.0 / (i as f32).sqrt(), &mut rng),
                b: Param::zeros(&[recipe.rank, o]),
                scale,
            });
            adapted += 1;
        }
        if adapted == 0 {
            return Err(Error::Recipe("no layer matches the targets".into()));
        }
        let mut latents = encode_means(&model, set);
        tiny::layers::scale(&mut latents, model.latent_scale);
        let data = Conditioned {
            latents: &latents,
            vectors: &vectors,
            captions: &captions,
        };
        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        let dir = opts.checkpoint_dir.clone();
        let extract = |m: &mut TinyModel| -> LoraWeights {
            let mut layers = BTreeMap::new();
            for (name, l) in m.denoiser.linears_mut() {
                if let Some(lo) = &l.lora {
                    layers.insert(
                        name,
                        (
                            weights::Tensor {
                                shape: lo.a.shape.clone(),
                                data: lo.a.w.clone(),
                            },
                            weights::Tensor {
                                shape: lo.b.shape.clone(),
                                data: lo.b.w.clone(),
                            },
                        ),
                    );
                }
            }
            LoraWeights {
                base_model: base_sha.clone(),
                rank: recipe.rank,
                alpha: recipe.alpha,
                layers,
            }
        };
        let mut save = |m: &TinyModel, step: usize, loss: f64| -> Result<(), Error> {
            let bytes = extract(&mut m.clone()).to_bytes();
            checkpoints.push(checkpoint(&bytes, Stage::Lora, step, loss, dir.as_deref())?);
            Ok(())
        };
        let how = StageRun {
            stage: &recipe.stage,
            seed,
            stream: STREAM_LORA + 1,
            run: opts
                .limit_steps
                .map_or(recipe.stage.steps, |l| l.min(recipe.stage.steps)),
            tag: Stage::Lora,
            checkpoint_every: recipe.stage.steps.max(1),
        };
        run_denoiser(&mut model, &data, &how, progress, &mut save)?;
        let lora = extract(&mut model);
        let record = TrainingRecord {
            format: RECORD_FORMAT.into(),
            dataset: DatasetRef {
                name: set.name.clone(),
                source_sha256: set.source_sha256.clone(),
                digest: set.digest.clone(),
                samples: set.samples.len(),
            },
            text_encoder: encoder.id(),
            base_model: Some(base_sha.clone()),
            recipe: serde_json::to_value(recipe).unwrap_or_default(),
            recipe_sha256: recipe.sha256(),
            seed,
            code: code_id(),
            weights_sha256: lora.sha256(),
            checkpoints,
        };
        Ok((lora, record))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    /// Adapters on a frozen model fit one image's latent nearly as well as training every
    /// weight does (losses measured on the same fixed draws).
    #[test]
    fn lora_learns_nearly_as_well_as_full_training() {
        use crate::tiny::schedule;
        let recipe = crate::train::Recipe {
            vae: tiny::VaeConfig {
                latent_channels: 2,
                channels: [8, 8, 16],
            },
            denoiser: crate::train::DenoiserShape {
                hidden: 160,
                ff: 160,
                blocks: 2,
                time: 16,
                text_input: false,
            },
            ..crate::train::Recipe::emoji()
        };
        let base = TinyModel::new(&recipe.model_config(16, "test"), 1);
        let mut g = Gaussian::new(5, 5);
        let target: Vec<f32> = (0..128).map(|_| g.normal()).collect();
        let text: Vec<f32> = (0..16).map(|_| g.normal()).collect();
        let loss = |m: &TinyModel| -> f64 {
            let mut g = Gaussian::new(9, 9);
            let mut total = 0.0;
            for _ in 0..20 {
                let t = g.uniform() as f32;
                let (a, s) = schedule::alpha_sigma(t);
                let mut eps = vec![0.0; 128];
                g.fill(&mut eps);
                let z: Vec<f32> = target
                    .iter()
                    .zip(&eps)
                    .map(|(x, n)| a * x + s * n)
                    .collect();
                let v = m.denoiser.forward(&z, &[t], &text);
                total += v
                    .iter()
                    .zip(target.iter().zip(&eps))
                    .map(|(p, (x, n))| f64::from(p - (a * n - s * x)).powi(2))
                    .sum::<f64>()
                    / 128.0;
            }
            total / 20.0
        };
        let stage = DenoiserStage {
            steps: 200,
            batch: 16,
            lr: 1e-2,
            warmup: 5,
            weight_decay: 0.0,
            uncond_prob: 0.0,
            min_snr_gamma: 5.0,
            short_name_prob: 0.0,
        };
        let fit = |lora: bool| -> f64 {
            let mut m = base.clone();
            if lora {
                for (_, p) in m.params() {
                    p.trainable = false;
                }
                let mut rng = Gaussian::new(3, 3);
                let targets = LoraRecipe::default().targets;
                for (name, l) in m.denoiser.linears_mut() {
                    if targets.iter().any(|t| matches(t, &name)) {
                        let (i, o) = (l.inp(), l.out());
                        let a = Param::normal(&[i, 4], 1.0 / (i as f32).sqrt(), &mut rng);
                        l.lora = Some(Lora {
                            a,
                            b: Param::zeros(&[4, o]),
                            scale: 1.0,
                        });
                    }
                }
            }
            let (vectors, captions) = (vec![text.clone()], vec![vec![0usize]]);
            let data = Conditioned {
                latents: &target,
                vectors: &vectors,
                captions: &captions,
            };
            let how = StageRun {
                stage: &stage,
                seed: 1,
                stream: 10,
                run: 200,
                tag: Stage::Lora,
                checkpoint_every: 1000,
            };
            run_denoiser(&mut m, &data, &how, &mut |_| {}, &mut |_, _, _| Ok(())).unwrap();
            loss(&m)
        };
        let (before, full, adapted) = (loss(&base), fit(false), fit(true));
        assert!(
            adapted < 0.5 * before,
            "adapters learn: {before} → {adapted}"
        );
        assert!(
            adapted < 1.6 * full,
            "nearly as well as full training: {adapted} vs {full}"
        );
    }

    #[test]
    fn targets_match_whole_segments() {
        assert!(matches("blocks.*.fc1", "blocks.3.fc1"));
        assert!(!matches("blocks.*.fc1", "blocks.3.fc2"));
        assert!(!matches("blocks.*", "blocks.3.fc1"));
        assert!(matches("text1", "text1"));
    }

    #[test]
    fn square_resize_keeps_flat_colours_and_crops_the_centre() {
        // A 100×50 image: left quarter red, the centred 50×50 square blue.
        let (w, h) = (100, 50);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let c = if (25..75).contains(&x) {
                    [0, 0, 255]
                } else {
                    [255, 0, 0]
                };
                rgb[(y * w + x) * 3..][..3].copy_from_slice(&c);
            }
        }
        let out = square_64(&rgb, w, h);
        assert!(
            out.chunks_exact(3).all(|p| p == [0, 0, 255]),
            "only the centred square is kept"
        );
        let tiny_img = square_64(&[10, 20, 30], 1, 1);
        assert!(tiny_img.chunks_exact(3).all(|p| p == [10, 20, 30]));
    }
}
