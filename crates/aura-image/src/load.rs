//! The two checkpoint layouts users have, mapped onto one internal naming (diffusers'
//! names under `unet.`, `vae.`, `text_encoder.`, `text_encoder_2.`):
//!
//! - a **diffusers folder**: `unet/diffusion_pytorch_model.safetensors`, `vae/…`,
//!   `text_encoder/model.safetensors` (and `text_encoder_2/` for SDXL), each with its
//!   `config.json`, plus `tokenizer/vocab.json` and `merges.txt` and, optionally,
//!   `scheduler/scheduler_config.json`; `.fp16.safetensors` variants and shards are read
//!   too;
//! - a **single-file checkpoint** (the original LDM layout that A1111 and ComfyUI load):
//!   `model.diffusion_model.input_blocks.…`, `first_stage_model.…`, and
//!   `cond_stage_model.transformer.…` (SD 1.x), `cond_stage_model.model.…` (SD 2.x,
//!   OpenCLIP) or `conditioner.embedders.0.transformer.…` and
//!   `conditioner.embedders.1.model.…` (SDXL). Its shapes give the networks' sizes; the
//!   number of attention heads, which no shape shows, follows each family's rule (8 per
//!   level for SD 1.x, 64-wide heads for SD 2.x and XL and for OpenCLIP, 64-wide heads for
//!   CLIP).
//!
//! The UNet's and VAE's renames are built from the network's shape as a table of block
//! prefixes (`input_blocks.4.1.` ↔ `down_blocks.1.attentions.0.`) and the few names that
//! differ inside blocks (`in_layers.2` ↔ `conv1`), the same correspondence diffusers'
//! conversion scripts write out by hand for the standard shapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::clip::{ClipActivation, ClipConfig};
use crate::error::{Error, Result};
use crate::scheduler::{BetaSchedule, NoiseSchedule, Prediction, Spacing};
use crate::unet::UnetConfig;
use crate::vae::VaeConfig;
use crate::weights::{Entry, Store, Transform};

/// The model families the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Stable Diffusion 1.x (one CLIP ViT-L text encoder, 768-wide context).
    Sd1,
    /// Stable Diffusion 2.x (OpenCLIP ViT-H, penultimate layer, 1024-wide context).
    Sd2,
    /// Stable Diffusion XL and XL-Turbo (CLIP ViT-L and OpenCLIP ViT-bigG, pooled text and
    /// size conditioning).
    Sdxl,
}

impl Family {
    /// `sd1`, `sd2` or `sdxl`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd1 => "sd1",
            Self::Sd2 => "sd2",
            Self::Sdxl => "sdxl",
        }
    }
}

/// One text encoder's description.
#[derive(Clone, Debug)]
pub(crate) struct TextSpec {
    pub(crate) cfg: ClipConfig,
    /// Id that pads prompts to 77 tokens.
    pub(crate) pad: Option<u32>,
}

/// Everything the loader learnt about a checkpoint before reading any weight.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) family: Family,
    pub(crate) store: Store,
    pub(crate) unet: UnetConfig,
    pub(crate) vae: VaeConfig,
    pub(crate) text: TextSpec,
    pub(crate) text2: Option<TextSpec>,
    pub(crate) schedule: NoiseSchedule,
    /// `tokenizer/vocab.json` and `merges.txt`, when the folder has them.
    pub(crate) tokenizer_files: Option<(PathBuf, PathBuf)>,
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|source| Error::Io {
        path: p.to_owned(),
        source,
    })
}

/// The safetensors files of one diffusers component (`base` is e.g.
/// `diffusion_pytorch_model`): the plain file, else the fp16 variant, else the shards
/// named by its index.
fn component_files(dir: &Path, base: &str) -> Result<Vec<PathBuf>> {
    for name in [
        format!("{base}.safetensors"),
        format!("{base}.fp16.safetensors"),
    ] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(vec![p]);
        }
    }
    for index in [
        format!("{base}.safetensors.index.json"),
        format!("{base}.safetensors.index.fp16.json"),
    ] {
        let p = dir.join(&index);
        if p.is_file() {
            let v: serde_json::Value = serde_json::from_str(&read_text(&p)?)
                .map_err(|e| Error::model(format!("{}: {e}", p.display())))?;
            let map = v
                .get("weight_map")
                .and_then(serde_json::Value::as_object)
                .ok_or_else(|| Error::model(format!("{}: no weight_map", p.display())))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            files.sort();
            files.dedup();
            let mut out = Vec::new();
            for f in files {
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(Error::model(format!(
                        "{}: shard name {f} leaves the folder",
                        p.display()
                    )));
                }
                out.push(dir.join(f));
            }
            return Ok(out);
        }
    }
    Err(Error::model(format!(
        "{} holds no {base}.safetensors; hint: Aura reads safetensors only (convert .bin weights first)",
        dir.display()
    )))
}

/// The pad token a diffusers tokenizer folder names (`special_tokens_map.json`), as an
/// id of its vocabulary.
fn pad_token(dir: &Path) -> Option<u32> {
    let map: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("special_tokens_map.json")).ok()?)
            .ok()?;
    let pad = map.get("pad_token")?;
    let pad = pad.as_str().or_else(|| pad.get("content")?.as_str())?;
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vocab.json")).ok()?).ok()?;
    vocab.get(pad)?.as_u64().map(|v| v as u32)
}

fn schedule_from_json(text: &str) -> Result<NoiseSchedule> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::model(format!("scheduler_config.json: {e}")))?;
    let d = NoiseSchedule::default();
    let f = |k: &str, d: f64| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(d);
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    Ok(NoiseSchedule {
        beta_start: f("beta_start", d.beta_start),
        beta_end: f("beta_end", d.beta_end),
        beta_schedule: match s("beta_schedule").unwrap_or("scaled_linear") {
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "linear" => BetaSchedule::Linear,
            other => return Err(Error::Unsupported(format!("beta schedule {other}"))),
        },
        train_steps: v
            .get("num_train_timesteps")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1000) as u32,
        prediction: match s("prediction_type").unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => return Err(Error::Unsupported(format!("prediction type {other}"))),
        },
        spacing: match s("timestep_spacing").unwrap_or("leading") {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => return Err(Error::Unsupported(format!("timestep spacing {other}"))),
        },
        steps_offset: v
            .get("steps_offset")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1) as u32,
    })
}

/// Reads a diffusers folder's layout.
pub(crate) fn diffusers(dir: &Path) -> Result<Layout> {
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        });
    }
    let unet_cfg = UnetConfig::from_diffusers_json(&read_text(&dir.join("unet/config.json"))?)?;
    let vae_cfg = VaeConfig::from_diffusers_json(&read_text(&dir.join("vae/config.json"))?)?;
    let has2 = dir.join("text_encoder_2").is_dir();
    let text_cfg =
        ClipConfig::from_hf_json(&read_text(&dir.join("text_encoder/config.json"))?, false)?;
    // SD 1.x conditions on OpenAI's CLIP (quick GELU), SD 2.x on OpenCLIP (GELU).
    let family = if unet_cfg.addition.is_some() || has2 {
        Family::Sdxl
    } else if text_cfg.activation == ClipActivation::QuickGelu {
        Family::Sd1
    } else {
        Family::Sd2
    };
    let text2_cfg = if has2 {
        Some(ClipConfig::from_hf_json(
            &read_text(&dir.join("text_encoder_2/config.json"))?,
            true,
        )?)
    } else {
        None
    };
    let mut files = Vec::new();
    let mut parts: Vec<(&str, Vec<PathBuf>)> = vec![
        (
            "unet.",
            component_files(&dir.join("unet"), "diffusion_pytorch_model")?,
        ),
        (
            "vae.",
            component_files(&dir.join("vae"), "diffusion_pytorch_model")?,
        ),
        (
            "text_encoder.",
            component_files(&dir.join("text_encoder"), "model")?,
        ),
    ];
    if has2 {
        parts.push((
            "text_encoder_2.",
            component_files(&dir.join("text_encoder_2"), "model")?,
        ));
    }
    let mut owner = Vec::new();
    for (prefix, fs) in &parts {
        for f in fs {
            files.push(f.clone());
            owner.push(*prefix);
        }
    }
    let mut store = Store::open(&files)?;
    for (file, key, _) in store.stored() {
        let prefix = owner[file];
        let internal = if prefix == "vae." {
            vae_alias(&key)
        } else {
            key.clone()
        };
        store.route(
            format!("{prefix}{internal}"),
            Entry {
                file,
                key,
                transform: Transform::Same,
            },
        )?;
    }
    let schedule = match read_text(&dir.join("scheduler/scheduler_config.json")) {
        Ok(t) => schedule_from_json(&t)?,
        Err(_) => NoiseSchedule::default(),
    };
    let tok = dir.join("tokenizer");
    let tokenizer_files = (tok.join("vocab.json").is_file() && tok.join("merges.txt").is_file())
        .then(|| (tok.join("vocab.json"), tok.join("merges.txt")));
    Ok(Layout {
        family,
        store,
        unet: unet_cfg,
        vae: vae_cfg,
        text: TextSpec {
            cfg: text_cfg,
            pad: pad_token(&tok),
        },
        text2: text2_cfg.map(|cfg| TextSpec {
            cfg,
            pad: pad_token(&dir.join("tokenizer_2")),
        }),
        schedule,
        tokenizer_files,
    })
}

/// diffusers' older VAE attention names, which many published folders still carry.
fn vae_alias(key: &str) -> String {
    let renames = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    let mut k = key.to_owned();
    if k.contains("attentions.") {
        for (old, new) in renames {
            k = k.replace(old, new);
        }
    }
    k
}

/// Stored tensors of a single file: name to shape.
type Shapes = BTreeMap<String, Vec<usize>>;

fn count_indices(shapes: &Shapes, prefix: &str) -> usize {
    let mut n = 0;
    while shapes
        .keys()
        .any(|k| k.starts_with(&format!("{prefix}{n}.")))
    {
        n += 1;
    }
    n
}

fn dim(shapes: &Shapes, key: &str, i: usize) -> Result<usize> {
    shapes
        .get(key)
        .and_then(|s| s.get(i).copied())
        .ok_or_else(|| Error::model(format!("the checkpoint lacks {key}")))
}

/// The UNet's shape, read from an LDM checkpoint's tensors under `p`.
fn infer_unet(shapes: &Shapes, p: &str, family: Family) -> Result<UnetConfig> {
    let c0 = dim(shapes, &format!("{p}input_blocks.0.0.weight"), 0)?;
    let in_channels = dim(shapes, &format!("{p}input_blocks.0.0.weight"), 1)?;
    let out_channels = dim(shapes, &format!("{p}out.2.weight"), 0)?;
    let inputs = count_indices(shapes, &format!("{p}input_blocks."));
    let downs = (0..inputs)
        .filter(|n| shapes.contains_key(&format!("{p}input_blocks.{n}.0.op.weight")))
        .count();
    let nb = downs + 1;
    if inputs < 2 || !inputs.is_multiple_of(nb) {
        return Err(Error::model(format!(
            "cannot read the unet's levels from {inputs} input blocks"
        )));
    }
    let per = inputs / nb; // layers_per_block + 1
    let layers_per_block = per - 1;
    let mut block_out_channels = Vec::new();
    let mut transformer_depth = Vec::new();
    for i in 0..nb {
        let n = i * per + 1;
        block_out_channels.push(dim(
            shapes,
            &format!("{p}input_blocks.{n}.0.in_layers.2.weight"),
            0,
        )?);
        transformer_depth.push(count_indices(
            shapes,
            &format!("{p}input_blocks.{n}.1.transformer_blocks."),
        ));
    }
    if block_out_channels[0] != c0 {
        return Err(Error::model(
            "the unet's first level does not match conv_in",
        ));
    }
    let mid_transformer_depth =
        count_indices(shapes, &format!("{p}middle_block.1.transformer_blocks."));
    let attn_key = shapes
        .keys()
        .find(|k| k.starts_with(p) && k.ends_with(".attn2.to_k.weight"))
        .ok_or_else(|| Error::model("the unet has no cross-attention"))?;
    let cross_attention_dim = dim(shapes, attn_key, 1)?;
    let proj = shapes
        .iter()
        .find(|(k, _)| k.starts_with(p) && k.ends_with(".proj_in.weight"))
        .map(|(_, s)| s.len());
    let addition = match shapes.get(&format!("{p}label_emb.0.0.weight")) {
        Some(s) if s.len() == 2 => Some((256, s[1])),
        _ => None,
    };
    let heads = block_out_channels
        .iter()
        .map(|&c| match family {
            Family::Sd1 => 8,
            _ => (c / 64).max(1),
        })
        .collect();
    let cfg = UnetConfig {
        in_channels,
        out_channels,
        block_out_channels,
        layers_per_block,
        transformer_depth,
        mid_transformer_depth,
        heads,
        cross_attention_dim,
        use_linear_projection: proj == Some(2),
        norm_groups: 32,
        addition,
    };
    cfg.check()?;
    Ok(cfg)
}

/// LDM block prefixes and their diffusers names, for a UNet of this shape. Resnet
/// prefixes are marked so their inner names are renamed too.
pub(crate) fn unet_prefixes(cfg: &UnetConfig) -> Vec<(String, String, bool)> {
    let nb = cfg.block_out_channels.len();
    let per = cfg.layers_per_block + 1;
    let mut v: Vec<(String, String, bool)> = vec![
        (
            "time_embed.0.".into(),
            "time_embedding.linear_1.".into(),
            false,
        ),
        (
            "time_embed.2.".into(),
            "time_embedding.linear_2.".into(),
            false,
        ),
        (
            "label_emb.0.0.".into(),
            "add_embedding.linear_1.".into(),
            false,
        ),
        (
            "label_emb.0.2.".into(),
            "add_embedding.linear_2.".into(),
            false,
        ),
        ("input_blocks.0.0.".into(), "conv_in.".into(), false),
        ("out.0.".into(), "conv_norm_out.".into(), false),
        ("out.2.".into(), "conv_out.".into(), false),
        (
            "middle_block.0.".into(),
            "mid_block.resnets.0.".into(),
            true,
        ),
        (
            "middle_block.1.".into(),
            "mid_block.attentions.0.".into(),
            false,
        ),
        (
            "middle_block.2.".into(),
            "mid_block.resnets.1.".into(),
            true,
        ),
    ];
    for i in 0..nb {
        for j in 0..cfg.layers_per_block {
            let n = i * per + j + 1;
            v.push((
                format!("input_blocks.{n}.0."),
                format!("down_blocks.{i}.resnets.{j}."),
                true,
            ));
            v.push((
                format!("input_blocks.{n}.1."),
                format!("down_blocks.{i}.attentions.{j}."),
                false,
            ));
        }
        if i + 1 < nb {
            v.push((
                format!("input_blocks.{}.0.op.", (i + 1) * per),
                format!("down_blocks.{i}.downsamplers.0.conv."),
                false,
            ));
        }
        let lvl = nb - 1 - i;
        for j in 0..per {
            let n = i * per + j;
            v.push((
                format!("output_blocks.{n}.0."),
                format!("up_blocks.{i}.resnets.{j}."),
                true,
            ));
            if cfg.transformer_depth[lvl] > 0 {
                v.push((
                    format!("output_blocks.{n}.1."),
                    format!("up_blocks.{i}.attentions.{j}."),
                    false,
                ));
            }
        }
        if i + 1 < nb {
            // The upsampler follows the last resnet (and its attention, when the level has one).
            let slot = if cfg.transformer_depth[lvl] > 0 { 2 } else { 1 };
            v.push((
                format!("output_blocks.{}.{slot}.conv.", i * per + per - 1),
                format!("up_blocks.{i}.upsamplers.0.conv."),
                false,
            ));
        }
    }
    v
}

const UNET_RESNET_RENAMES: [(&str, &str); 6] = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("emb_layers.1.", "time_emb_proj."),
    ("skip_connection.", "conv_shortcut."),
];

/// The diffusers name of an LDM UNet tensor name (without `model.diffusion_model.`).
pub(crate) fn unet_name(prefixes: &[(String, String, bool)], ldm: &str) -> Option<String> {
    let (old, new, resnet) = prefixes
        .iter()
        .filter(|(old, ..)| ldm.starts_with(old.as_str()))
        .max_by_key(|(old, ..)| old.len())?;
    let rest = &ldm[old.len()..];
    let rest = if *resnet {
        UNET_RESNET_RENAMES
            .iter()
            .find(|(o, _)| rest.starts_with(o))
            .map_or_else(
                || rest.to_owned(),
                |(o, n)| format!("{n}{}", &rest[o.len()..]),
            )
    } else {
        rest.to_owned()
    };
    Some(format!("{new}{rest}"))
}

/// The LDM name of a diffusers UNet module or tensor name (the inverse of [`unet_name`]),
/// for LoRA files keyed by LDM names.
pub(crate) fn ldm_unet_name(
    prefixes: &[(String, String, bool)],
    diffusers: &str,
) -> Option<String> {
    let name = format!("{diffusers}.");
    let (old, new, resnet) = prefixes
        .iter()
        .filter(|(_, new, _)| name.starts_with(new.as_str()))
        .max_by_key(|(_, new, _)| new.len())?;
    let rest = &name[new.len()..];
    let rest = if *resnet {
        UNET_RESNET_RENAMES
            .iter()
            .find(|(_, n)| rest.starts_with(n))
            .map_or_else(
                || rest.to_owned(),
                |(o, n)| format!("{o}{}", &rest[n.len()..]),
            )
    } else {
        rest.to_owned()
    };
    let full = format!("{old}{rest}");
    Some(full.strip_suffix('.').unwrap_or(&full).to_owned())
}

/// The diffusers name of an LDM VAE tensor name (without `first_stage_model.`), for a VAE
/// of `levels` levels.
pub(crate) fn vae_name(ldm: &str, levels: usize) -> Option<String> {
    let parts: Vec<&str> = ldm.split('.').collect();
    let (side, rest) = (*parts.first()?, &parts[1..]);
    let body: Vec<String> = match (side, rest) {
        ("quant_conv" | "post_quant_conv", _) => return Some(ldm.to_owned()),
        ("encoder" | "decoder", ["down", i, "block", j, tail @ ..]) => {
            [format!("down_blocks.{i}.resnets.{j}")]
                .into_iter()
                .chain(tail.iter().map(|s| resnet_part(s)))
                .collect()
        }
        ("encoder" | "decoder", ["down", i, "downsample", tail @ ..]) => {
            [format!("down_blocks.{i}.downsamplers.0")]
                .into_iter()
                .chain(tail.iter().map(|s| (*s).to_owned()))
                .collect()
        }
        ("encoder" | "decoder", ["up", i, "block", j, tail @ ..]) => {
            let i: usize = i.parse().ok()?;
            [format!(
                "up_blocks.{}.resnets.{j}",
                levels.checked_sub(1 + i)?
            )]
            .into_iter()
            .chain(tail.iter().map(|s| resnet_part(s)))
            .collect()
        }
        ("encoder" | "decoder", ["up", i, "upsample", tail @ ..]) => {
            let i: usize = i.parse().ok()?;
            [format!(
                "up_blocks.{}.upsamplers.0",
                levels.checked_sub(1 + i)?
            )]
            .into_iter()
            .chain(tail.iter().map(|s| (*s).to_owned()))
            .collect()
        }
        ("encoder" | "decoder", ["mid", b, tail @ ..]) if b.starts_with("block_") => {
            let k: usize = b.strip_prefix("block_")?.parse().ok()?;
            [format!("mid_block.resnets.{}", k.checked_sub(1)?)]
                .into_iter()
                .chain(tail.iter().map(|s| resnet_part(s)))
                .collect()
        }
        ("encoder" | "decoder", ["mid", "attn_1", part, tail @ ..]) => {
            let part = match *part {
                "norm" => "group_norm",
                "q" => "to_q",
                "k" => "to_k",
                "v" => "to_v",
                "proj_out" => "to_out.0",
                _ => return None,
            };
            [format!("mid_block.attentions.0.{part}")]
                .into_iter()
                .chain(tail.iter().map(|s| (*s).to_owned()))
                .collect()
        }
        ("encoder" | "decoder", ["norm_out", tail @ ..]) => ["conv_norm_out".to_owned()]
            .into_iter()
            .chain(tail.iter().map(|s| (*s).to_owned()))
            .collect(),
        ("encoder" | "decoder", tail) => tail.iter().map(|s| (*s).to_owned()).collect(),
        _ => return None,
    };
    Some(format!("{side}.{}", body.join(".")))
}

fn resnet_part(s: &str) -> String {
    if s == "nin_shortcut" {
        "conv_shortcut".to_owned()
    } else {
        s.to_owned()
    }
}

/// Routes an OpenCLIP text tower stored under `p` (`token_embedding`, `positional_embedding`,
/// `transformer.resblocks.N.…` with fused q/k/v, `ln_final`, `text_projection`) to Hugging
/// Face names under `to`, and returns its shape. `drop_last`: leave out the last layer (SD
/// 2.x conditions on the penultimate layer, which is the last layer of a tower one layer
/// shorter, final norm included).
fn route_open_clip(
    store: &mut Store,
    shapes: &Shapes,
    file: usize,
    p: &str,
    to: &str,
    drop_last: bool,
    with_projection: bool,
) -> Result<ClipConfig> {
    let tok = dim(shapes, &format!("{p}token_embedding.weight"), 0)?;
    let d = dim(shapes, &format!("{p}token_embedding.weight"), 1)?;
    let positions = dim(shapes, &format!("{p}positional_embedding"), 0)?;
    let all = count_indices(shapes, &format!("{p}transformer.resblocks."));
    let layers = if drop_last {
        all.saturating_sub(1)
    } else {
        all
    };
    let inter = dim(
        shapes,
        &format!("{p}transformer.resblocks.0.mlp.c_fc.weight"),
        0,
    )?;
    let mut route = |internal: String, key: String, transform: Transform| {
        store.route(
            format!("{to}{internal}"),
            Entry {
                file,
                key,
                transform,
            },
        )
    };
    route(
        "text_model.embeddings.token_embedding.weight".into(),
        format!("{p}token_embedding.weight"),
        Transform::Same,
    )?;
    route(
        "text_model.embeddings.position_embedding.weight".into(),
        format!("{p}positional_embedding"),
        Transform::Same,
    )?;
    route(
        "text_model.final_layer_norm.weight".into(),
        format!("{p}ln_final.weight"),
        Transform::Same,
    )?;
    route(
        "text_model.final_layer_norm.bias".into(),
        format!("{p}ln_final.bias"),
        Transform::Same,
    )?;
    if with_projection {
        route(
            "text_projection.weight".into(),
            format!("{p}text_projection"),
            Transform::Transpose,
        )?;
    }
    for i in 0..layers {
        let (s, t) = (
            format!("{p}transformer.resblocks.{i}."),
            format!("text_model.encoder.layers.{i}."),
        );
        for (a, b) in [
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("attn.out_proj", "self_attn.out_proj"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ] {
            for w in ["weight", "bias"] {
                route(
                    format!("{t}{b}.{w}"),
                    format!("{s}{a}.{w}"),
                    Transform::Same,
                )?;
            }
        }
        for (k, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            route(
                format!("{t}self_attn.{name}.weight"),
                format!("{s}attn.in_proj_weight"),
                Transform::Rows {
                    start: k * d,
                    len: d,
                },
            )?;
            route(
                format!("{t}self_attn.{name}.bias"),
                format!("{s}attn.in_proj_bias"),
                Transform::Rows {
                    start: k * d,
                    len: d,
                },
            )?;
        }
    }
    let projection_dim = if with_projection {
        Some(dim(shapes, &format!("{p}text_projection"), 1)?)
    } else {
        None
    };
    let cfg = ClipConfig {
        vocab_size: tok,
        hidden_size: d,
        intermediate_size: inter,
        heads: (d / 64).max(1),
        layers,
        max_positions: positions,
        activation: ClipActivation::Gelu,
        projection_dim,
    };
    cfg.check()?;
    Ok(cfg)
}

/// Routes a Hugging Face CLIP text model stored under `p` (with or without its
/// `text_model.` level, which old SD 1.x checkpoints lack) to `to`, and returns its shape.
fn route_hf_clip(
    store: &mut Store,
    shapes: &Shapes,
    file: usize,
    p: &str,
    to: &str,
) -> Result<ClipConfig> {
    let mut d = 0;
    let mut vocab = 0;
    let mut positions = 0;
    for (key, shape) in shapes.range(p.to_owned()..) {
        let Some(rest) = key.strip_prefix(p) else {
            break;
        };
        if rest.ends_with("position_ids") {
            continue;
        }
        let internal = if rest.starts_with("text_model.") {
            rest.to_owned()
        } else {
            format!("text_model.{rest}")
        };
        if internal == "text_model.embeddings.token_embedding.weight" {
            (vocab, d) = (shape[0], *shape.get(1).unwrap_or(&0));
        }
        if internal == "text_model.embeddings.position_embedding.weight" {
            positions = shape[0];
        }
        store.route(
            format!("{to}{internal}"),
            Entry {
                file,
                key: key.clone(),
                transform: Transform::Same,
            },
        )?;
    }
    let layers = count_indices(shapes, &format!("{p}text_model.encoder.layers."))
        .max(count_indices(shapes, &format!("{p}encoder.layers.")));
    let inter = store
        .shape(&format!("{to}text_model.encoder.layers.0.mlp.fc1.weight"))
        .and_then(|s| s.first().copied())
        .ok_or_else(|| Error::model("the text encoder has no layers"))?;
    let cfg = ClipConfig {
        vocab_size: vocab,
        hidden_size: d,
        intermediate_size: inter,
        heads: (d / 64).max(1),
        layers,
        max_positions: positions,
        activation: ClipActivation::QuickGelu,
        projection_dim: None,
    };
    cfg.check()?;
    Ok(cfg)
}

/// Reads a single-file checkpoint's layout.
pub(crate) fn single_file(path: &Path, prediction: Option<Prediction>) -> Result<Layout> {
    let mut store = Store::open(&[path.to_path_buf()])?;
    let shapes: Shapes = store.stored().into_iter().map(|(_, k, s)| (k, s)).collect();
    let family = if shapes.contains_key("conditioner.embedders.1.model.ln_final.weight") {
        Family::Sdxl
    } else if shapes.contains_key("cond_stage_model.model.ln_final.weight") {
        Family::Sd2
    } else if shapes
        .keys()
        .any(|k| k.starts_with("cond_stage_model.transformer."))
    {
        Family::Sd1
    } else {
        return Err(Error::model(format!(
            "{} is not a Stable Diffusion 1.x, 2.x or XL checkpoint (no text encoder found)",
            path.display()
        )));
    };
    let up = "model.diffusion_model.";
    let unet = infer_unet(&shapes, up, family)?;
    let prefixes = unet_prefixes(&unet);
    let vp = "first_stage_model.";
    let levels = count_indices(&shapes, &format!("{vp}encoder.down."))
        .max(count_indices(&shapes, &format!("{vp}decoder.up.")));
    let mut vae = VaeConfig::sd();
    vae.block_out_channels = (0..levels)
        .map(|i| {
            dim(
                &shapes,
                &format!("{vp}decoder.up.{i}.block.0.conv1.weight"),
                0,
            )
        })
        .collect::<Result<_>>()?;
    vae.layers_per_block =
        count_indices(&shapes, &format!("{vp}decoder.up.0.block.")).saturating_sub(1);
    vae.latent_channels = dim(&shapes, &format!("{vp}post_quant_conv.weight"), 0)?;
    vae.norm_groups = 32;
    if family == Family::Sdxl {
        vae.scaling_factor = 0.13025;
    }
    vae.check()?;
    for key in shapes.keys() {
        let internal = if let Some(rest) = key.strip_prefix(up) {
            unet_name(&prefixes, rest).map(|n| format!("unet.{n}"))
        } else if let Some(rest) = key.strip_prefix(vp) {
            vae_name(rest, levels).map(|n| format!("vae.{n}"))
        } else {
            None
        };
        if let Some(internal) = internal {
            store.route(
                internal,
                Entry {
                    file: 0,
                    key: key.clone(),
                    transform: Transform::Same,
                },
            )?;
        }
    }
    let (text, text2) = match family {
        Family::Sd1 => (
            route_hf_clip(
                &mut store,
                &shapes,
                0,
                "cond_stage_model.transformer.",
                "text_encoder.",
            )?,
            None,
        ),
        Family::Sd2 => (
            route_open_clip(
                &mut store,
                &shapes,
                0,
                "cond_stage_model.model.",
                "text_encoder.",
                true,
                false,
            )?,
            None,
        ),
        Family::Sdxl => (
            route_hf_clip(
                &mut store,
                &shapes,
                0,
                "conditioner.embedders.0.transformer.",
                "text_encoder.",
            )?,
            Some(route_open_clip(
                &mut store,
                &shapes,
                0,
                "conditioner.embedders.1.model.",
                "text_encoder_2.",
                false,
                true,
            )?),
        ),
    };
    // SD 2.x 768 checkpoints predict v, its 512 "base" ones epsilon; a single file does
    // not say which, so the caller may; v is the default for SD 2.x as in most front ends.
    let prediction = prediction.unwrap_or(if family == Family::Sd2 {
        Prediction::V
    } else {
        Prediction::Epsilon
    });
    let schedule = NoiseSchedule {
        prediction,
        ..NoiseSchedule::default()
    };
    // OpenAI CLIP pads with its end token, OpenCLIP with id 0 ("!").
    let (pad1, pad2) = match family {
        Family::Sd2 => (Some(0), None),
        _ => (None, Some(0)),
    };
    Ok(Layout {
        family,
        store,
        unet,
        vae,
        text: TextSpec {
            cfg: text,
            pad: pad1,
        },
        text2: text2.map(|cfg| TextSpec { cfg, pad: pad2 }),
        schedule,
        tokenizer_files: None,
    })
}
