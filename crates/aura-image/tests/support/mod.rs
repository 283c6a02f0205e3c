//! Tiny random-weight Stable Diffusion checkpoints written the way the real ones are: a
//! diffusers folder (diffusers' tensor names and configs, a tokenizer folder) and, from it,
//! a single-file LDM checkpoint converted with a port of diffusers' own conversion scripts
//! (`convert_diffusers_to_original_stable_diffusion.py` and `…_sdxl.py`), so the engine's
//! loader is checked against an independent statement of the name mapping. Also LoRA files
//! in kohya and PEFT layouts.
//!
//! The tests need CLIP's BPE vocabulary (`scripts/fetch-models.sh` fetches it); a missing
//! vocabulary fails them with a message saying so.
#![allow(dead_code, reason = "each test binary uses part of the support")]
#![allow(clippy::unwrap_used, reason = "test support fails loudly")]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use aura_image::AuraRng;
use candle_core::{DType, Device, Tensor};

/// CLIP's vocabulary in the model cache.
pub(crate) fn vocab_path() -> PathBuf {
    let cache = std::env::var_os("AURA_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aura/models")
        });
    let p = cache.join("clip/bpe_simple_vocab_16e6.txt.gz");
    assert!(
        p.is_file(),
        "CLIP's vocabulary is missing at {}: run scripts/fetch-models.sh (or set AURA_MODEL_CACHE)",
        p.display()
    );
    p
}

/// Which tiny model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tiny {
    /// SD 1.5's structure: four levels, attention on the first three, conv projections,
    /// one CLIP ViT-L-like encoder.
    Sd15,
    /// SDXL's structure: three levels, attention on the last two (depths 1 and 2, mid 2),
    /// linear projections, two encoders (the second OpenCLIP-like with a projection),
    /// added time and pooled-text embedding.
    Sdxl,
    /// SD 2.1's structure: SD 1.5's levels with linear projections and 64-wide heads, an
    /// OpenCLIP-like encoder conditioned on its penultimate layer, v-prediction.
    Sd21,
}

struct Shape {
    channels: Vec<usize>,
    attn: Vec<bool>,
    depth: Vec<usize>,
    mid_depth: usize,
    heads: Vec<usize>,
    linear_proj: bool,
    cross: usize,
    add_in: Option<usize>,
}

const CLIP_D: usize = 64;
const VOCAB: usize = 49408;

fn shape(t: Tiny) -> Shape {
    match t {
        Tiny::Sd15 => Shape {
            channels: vec![32, 32, 64, 64],
            attn: vec![true, true, true, false],
            depth: vec![1, 1, 1, 0],
            mid_depth: 1,
            heads: vec![8, 8, 8, 8],
            linear_proj: false,
            cross: CLIP_D,
            add_in: None,
        },
        Tiny::Sd21 => Shape {
            channels: vec![64, 64, 128, 128],
            attn: vec![true, true, true, false],
            depth: vec![1, 1, 1, 0],
            mid_depth: 1,
            heads: vec![1, 1, 2, 2],
            linear_proj: true,
            cross: CLIP_D,
            add_in: None,
        },
        Tiny::Sdxl => Shape {
            channels: vec![64, 128, 128],
            attn: vec![false, true, true],
            depth: vec![0, 1, 2],
            mid_depth: 2,
            heads: vec![1, 2, 2],
            linear_proj: true,
            cross: 2 * CLIP_D,
            add_in: Some(6 * 256 + CLIP_D),
        },
    }
}

type Tensors = Vec<(String, Vec<usize>)>;

fn lin(v: &mut Tensors, name: &str, out: usize, inp: usize, bias: bool) {
    v.push((format!("{name}.weight"), vec![out, inp]));
    if bias {
        v.push((format!("{name}.bias"), vec![out]));
    }
}

fn conv(v: &mut Tensors, name: &str, out: usize, inp: usize, k: usize) {
    v.push((format!("{name}.weight"), vec![out, inp, k, k]));
    v.push((format!("{name}.bias"), vec![out]));
}

fn norm(v: &mut Tensors, name: &str, c: usize) {
    v.push((format!("{name}.weight"), vec![c]));
    v.push((format!("{name}.bias"), vec![c]));
}

fn resnet(v: &mut Tensors, p: &str, cin: usize, cout: usize, temb: Option<usize>) {
    norm(v, &format!("{p}.norm1"), cin);
    conv(v, &format!("{p}.conv1"), cout, cin, 3);
    if let Some(t) = temb {
        lin(v, &format!("{p}.time_emb_proj"), cout, t, true);
    }
    norm(v, &format!("{p}.norm2"), cout);
    conv(v, &format!("{p}.conv2"), cout, cout, 3);
    if cin != cout {
        conv(v, &format!("{p}.conv_shortcut"), cout, cin, 1);
    }
}

fn transformer(v: &mut Tensors, p: &str, c: usize, depth: usize, s: &Shape) {
    norm(v, &format!("{p}.norm"), c);
    let proj = |v: &mut Tensors, name: &str| {
        if s.linear_proj {
            lin(v, name, c, c, true);
        } else {
            conv(v, name, c, c, 1);
        }
    };
    proj(v, &format!("{p}.proj_in"));
    for k in 0..depth {
        let b = format!("{p}.transformer_blocks.{k}");
        for n in ["norm1", "norm2", "norm3"] {
            norm(v, &format!("{b}.{n}"), c);
        }
        for (a, ctx) in [("attn1", c), ("attn2", s.cross)] {
            lin(v, &format!("{b}.{a}.to_q"), c, c, false);
            lin(v, &format!("{b}.{a}.to_k"), c, ctx, false);
            lin(v, &format!("{b}.{a}.to_v"), c, ctx, false);
            lin(v, &format!("{b}.{a}.to_out.0"), c, c, true);
        }
        lin(v, &format!("{b}.ff.net.0.proj"), 8 * c, c, true);
        lin(v, &format!("{b}.ff.net.2"), c, 4 * c, true);
    }
    proj(v, &format!("{p}.proj_out"));
}

/// The diffusers UNet's tensors.
fn unet_tensors(t: Tiny) -> Tensors {
    let s = shape(t);
    let ch = &s.channels;
    let nb = ch.len();
    let temb = 4 * ch[0];
    let mut v = Tensors::new();
    conv(&mut v, "conv_in", ch[0], 4, 3);
    lin(&mut v, "time_embedding.linear_1", temb, ch[0], true);
    lin(&mut v, "time_embedding.linear_2", temb, temb, true);
    if let Some(add) = s.add_in {
        lin(&mut v, "add_embedding.linear_1", temb, add, true);
        lin(&mut v, "add_embedding.linear_2", temb, temb, true);
    }
    let mut skips = vec![ch[0]];
    let mut cur = ch[0];
    for (i, &c) in ch.iter().enumerate() {
        for j in 0..2 {
            resnet(
                &mut v,
                &format!("down_blocks.{i}.resnets.{j}"),
                cur,
                c,
                Some(temb),
            );
            cur = c;
            if s.attn[i] {
                transformer(
                    &mut v,
                    &format!("down_blocks.{i}.attentions.{j}"),
                    cur,
                    s.depth[i],
                    &s,
                );
            }
            skips.push(cur);
        }
        if i + 1 < nb {
            conv(
                &mut v,
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                cur,
                cur,
                3,
            );
            skips.push(cur);
        }
    }
    resnet(&mut v, "mid_block.resnets.0", cur, cur, Some(temb));
    transformer(&mut v, "mid_block.attentions.0", cur, s.mid_depth, &s);
    resnet(&mut v, "mid_block.resnets.1", cur, cur, Some(temb));
    for i in 0..nb {
        let level = nb - 1 - i;
        for j in 0..3 {
            let skip = skips.pop().unwrap();
            resnet(
                &mut v,
                &format!("up_blocks.{i}.resnets.{j}"),
                cur + skip,
                ch[level],
                Some(temb),
            );
            cur = ch[level];
            if s.attn[level] {
                transformer(
                    &mut v,
                    &format!("up_blocks.{i}.attentions.{j}"),
                    cur,
                    s.depth[level],
                    &s,
                );
            }
        }
        if i + 1 < nb {
            conv(
                &mut v,
                &format!("up_blocks.{i}.upsamplers.0.conv"),
                cur,
                cur,
                3,
            );
        }
    }
    norm(&mut v, "conv_norm_out", ch[0]);
    conv(&mut v, "conv_out", 4, ch[0], 3);
    v
}

const VAE_CH: [usize; 4] = [32, 32, 64, 64];

/// The diffusers VAE's tensors; `old_attention_names` uses `query`/`key`/`value`/
/// `proj_attn` as many published folders still do.
fn vae_tensors(old_attention_names: bool) -> Tensors {
    let mut v = Tensors::new();
    let attn = |v: &mut Tensors, p: &str, c: usize| {
        norm(v, &format!("{p}.group_norm"), c);
        let names = if old_attention_names {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        for n in names {
            lin(v, &format!("{p}.{n}"), c, c, true);
        }
    };
    conv(&mut v, "encoder.conv_in", VAE_CH[0], 3, 3);
    let mut cur = VAE_CH[0];
    for (i, &c) in VAE_CH.iter().enumerate() {
        for j in 0..2 {
            resnet(
                &mut v,
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                cur,
                c,
                None,
            );
            cur = c;
        }
        if i < 3 {
            conv(
                &mut v,
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                c,
                c,
                3,
            );
        }
    }
    resnet(&mut v, "encoder.mid_block.resnets.0", cur, cur, None);
    attn(&mut v, "encoder.mid_block.attentions.0", cur);
    resnet(&mut v, "encoder.mid_block.resnets.1", cur, cur, None);
    norm(&mut v, "encoder.conv_norm_out", cur);
    conv(&mut v, "encoder.conv_out", 8, cur, 3);
    conv(&mut v, "quant_conv", 8, 8, 1);
    conv(&mut v, "post_quant_conv", 4, 4, 1);
    conv(&mut v, "decoder.conv_in", VAE_CH[3], 4, 3);
    cur = VAE_CH[3];
    resnet(&mut v, "decoder.mid_block.resnets.0", cur, cur, None);
    attn(&mut v, "decoder.mid_block.attentions.0", cur);
    resnet(&mut v, "decoder.mid_block.resnets.1", cur, cur, None);
    for i in 0..4 {
        let c = VAE_CH[3 - i];
        for j in 0..3 {
            resnet(
                &mut v,
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                cur,
                c,
                None,
            );
            cur = c;
        }
        if i < 3 {
            conv(
                &mut v,
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                c,
                c,
                3,
            );
        }
    }
    norm(&mut v, "decoder.conv_norm_out", cur);
    conv(&mut v, "decoder.conv_out", 3, cur, 3);
    v
}

/// A Hugging Face CLIP text model's tensors.
fn clip_tensors(projection: bool) -> Tensors {
    let d = CLIP_D;
    let mut v = Tensors::new();
    v.push((
        "text_model.embeddings.token_embedding.weight".into(),
        vec![VOCAB, d],
    ));
    v.push((
        "text_model.embeddings.position_embedding.weight".into(),
        vec![77, d],
    ));
    for i in 0..2 {
        let p = format!("text_model.encoder.layers.{i}");
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            lin(&mut v, &format!("{p}.self_attn.{n}"), d, d, true);
        }
        norm(&mut v, &format!("{p}.layer_norm1"), d);
        lin(&mut v, &format!("{p}.mlp.fc1"), 2 * d, d, true);
        lin(&mut v, &format!("{p}.mlp.fc2"), d, 2 * d, true);
        norm(&mut v, &format!("{p}.layer_norm2"), d);
    }
    norm(&mut v, "text_model.final_layer_norm", d);
    if projection {
        lin(&mut v, "text_projection", d, d, false);
    }
    v
}

/// Random values for one tensor: weights ~ N(0, 1/fan_in), biases small, norms near 1.
fn values(name: &str, shape: &[usize], rng: &mut AuraRng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut v = rng.normal_vec(n);
    let is_norm = shape.len() == 1
        && name.ends_with(".weight")
        && (name.contains("norm") || name.contains("ln"));
    let scale = if name.contains("embedding") {
        0.5
    } else if shape.len() >= 2 {
        1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt()
    } else {
        0.05
    };
    for x in &mut v {
        *x *= if is_norm { 0.1 } else { scale };
        if is_norm {
            *x += 1.0;
        }
    }
    v
}

fn tensor(data: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(data, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    candle_core::safetensors::save(tensors, path).unwrap();
}

fn random_file(list: &Tensors, seed: u64, dtype: DType, path: &Path) {
    let mut rng = AuraRng::new(seed);
    let map: HashMap<String, Tensor> = list
        .iter()
        .map(|(n, s)| (n.clone(), tensor(values(n, s, &mut rng), s, dtype)))
        .collect();
    save(&map, path);
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes `vocab.json`, `merges.txt` and `special_tokens_map.json` the way Hugging Face's
/// CLIP tokenizer folders hold them, from OpenCLIP's merges.
fn write_tokenizer(dir: &Path, pad: &str) {
    let mut gz = Vec::new();
    flate2::read::GzDecoder::new(&std::fs::read(vocab_path()).unwrap()[..])
        .read_to_end(&mut gz)
        .unwrap();
    let text = String::from_utf8(gz).unwrap();
    let merges: Vec<&str> = text.split('\n').skip(1).take(49152 - 256 - 2).collect();
    // GPT-2's byte-to-character table, in its own order.
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut vocab: Vec<String> = cs
        .iter()
        .map(|&c| char::from_u32(c).unwrap().to_string())
        .collect();
    let ends: Vec<String> = vocab.iter().map(|v| format!("{v}</w>")).collect();
    vocab.extend(ends);
    vocab.extend(merges.iter().map(|m| m.replace(' ', "")));
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: BTreeMap<&str, usize> = vocab
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i))
        .collect();
    write(
        &dir.join("vocab.json"),
        &serde_json::to_string(&map).unwrap(),
    );
    write(
        &dir.join("merges.txt"),
        &format!("#version: 0.2\n{}\n", merges.join("\n")),
    );
    write(
        &dir.join("special_tokens_map.json"),
        &serde_json::json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad, "unk_token": "<|endoftext|>"}).to_string(),
    );
}

fn clip_config(act: &str, projection: bool) -> String {
    let mut v = serde_json::json!({
        "architectures": [if projection { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
        "hidden_size": CLIP_D, "intermediate_size": 2 * CLIP_D, "num_attention_heads": 1,
        "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": VOCAB,
        "hidden_act": act, "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407,
    });
    if projection {
        v["projection_dim"] = CLIP_D.into();
    }
    v.to_string()
}

/// Writes a diffusers folder for `t` with weights drawn from `seed`: the UNet in f32, the
/// rest in f16, as checkpoints often mix.
pub(crate) fn write_diffusers(dir: &Path, t: Tiny, seed: u64) {
    let s = shape(t);
    let xl = t == Tiny::Sdxl;
    let down: Vec<&str> = s
        .attn
        .iter()
        .map(|&a| {
            if a {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
        })
        .collect();
    let up: Vec<&str> = s
        .attn
        .iter()
        .rev()
        .map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" })
        .collect();
    let mut unet = serde_json::json!({
        "_class_name": "UNet2DConditionModel", "in_channels": 4, "out_channels": 4,
        "block_out_channels": s.channels, "layers_per_block": 2, "down_block_types": down,
        "up_block_types": up, "mid_block_type": "UNetMidBlock2DCrossAttn",
        "attention_head_dim": if t == Tiny::Sd15 { serde_json::json!(8) } else { serde_json::json!(s.heads) },
        "cross_attention_dim": s.cross, "use_linear_projection": s.linear_proj,
        "norm_num_groups": 32, "flip_sin_to_cos": true, "freq_shift": 0,
    });
    if xl {
        unet["transformer_layers_per_block"] = serde_json::json!([1, 1, 2]);
        unet["addition_embed_type"] = "text_time".into();
        unet["addition_time_embed_dim"] = 256.into();
        unet["projection_class_embeddings_input_dim"] = s.add_in.into();
    }
    write(&dir.join("unet/config.json"), &unet.to_string());
    random_file(
        &unet_tensors(t),
        seed,
        DType::F32,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    );
    let vae = serde_json::json!({
        "_class_name": "AutoencoderKL", "block_out_channels": VAE_CH, "layers_per_block": 2,
        "latent_channels": 4, "norm_num_groups": 32, "in_channels": 3, "out_channels": 3,
        "scaling_factor": if xl { 0.13025 } else { 0.18215 },
    });
    write(&dir.join("vae/config.json"), &vae.to_string());
    random_file(
        &vae_tensors(!xl),
        seed + 1,
        DType::F16,
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    );
    let sd2 = t == Tiny::Sd21;
    write(
        &dir.join("text_encoder/config.json"),
        &clip_config(if sd2 { "gelu" } else { "quick_gelu" }, false),
    );
    random_file(
        &clip_tensors(false),
        seed + 2,
        DType::F16,
        &dir.join("text_encoder/model.safetensors"),
    );
    write_tokenizer(
        &dir.join("tokenizer"),
        if sd2 { "!" } else { "<|endoftext|>" },
    );
    if xl {
        write(
            &dir.join("text_encoder_2/config.json"),
            &clip_config("gelu", true),
        );
        random_file(
            &clip_tensors(true),
            seed + 3,
            DType::F16,
            &dir.join("text_encoder_2/model.safetensors"),
        );
        write_tokenizer(&dir.join("tokenizer_2"), "!");
    }
    write(
        &dir.join("scheduler/scheduler_config.json"),
        &serde_json::json!({"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "prediction_type": if sd2 { "v_prediction" } else { "epsilon" },
            "timestep_spacing": "leading", "steps_offset": 1})
        .to_string(),
    );
    write(
        &dir.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline"}"#,
    );
}

fn load_all(path: &Path) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

// ---- A port of diffusers' conversion scripts (diffusers to original), tables as written
// there. `xl` selects the SDXL script's UNet tables.

/// The three tables of the UNet script: whole names, resnet parts, block prefixes.
type Maps = (
    Vec<(String, String)>,
    Vec<(String, String)>,
    Vec<(String, String)>,
);

fn unet_maps(xl: bool) -> Maps {
    let mut top: Vec<(String, String)> = [
        ("time_embed.0.weight", "time_embedding.linear_1.weight"),
        ("time_embed.0.bias", "time_embedding.linear_1.bias"),
        ("time_embed.2.weight", "time_embedding.linear_2.weight"),
        ("time_embed.2.bias", "time_embedding.linear_2.bias"),
        ("input_blocks.0.0.weight", "conv_in.weight"),
        ("input_blocks.0.0.bias", "conv_in.bias"),
        ("out.0.weight", "conv_norm_out.weight"),
        ("out.0.bias", "conv_norm_out.bias"),
        ("out.2.weight", "conv_out.weight"),
        ("out.2.bias", "conv_out.bias"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    if xl {
        for (a, b) in [
            ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
            ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
            ("label_emb.0.2.weight", "add_embedding.linear_2.weight"),
            ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
        ] {
            top.push((a.into(), b.into()));
        }
    }
    let resnet: Vec<(String, String)> = [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("emb_layers.1", "time_emb_proj"),
        ("skip_connection", "conv_shortcut"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let mut layer = Vec::new();
    let levels = if xl { 3 } else { 4 };
    for i in 0..levels {
        for j in 0..2 {
            layer.push((
                format!("input_blocks.{}.0.", 3 * i + j + 1),
                format!("down_blocks.{i}.resnets.{j}."),
            ));
            let has = if xl { i > 0 } else { i < 3 };
            if has {
                layer.push((
                    format!("input_blocks.{}.1.", 3 * i + j + 1),
                    format!("down_blocks.{i}.attentions.{j}."),
                ));
            }
        }
        for j in 0..if xl { 4 } else { 3 } {
            layer.push((
                format!("output_blocks.{}.0.", 3 * i + j),
                format!("up_blocks.{i}.resnets.{j}."),
            ));
            let has = if xl { i < 2 } else { i > 0 };
            if has {
                layer.push((
                    format!("output_blocks.{}.1.", 3 * i + j),
                    format!("up_blocks.{i}.attentions.{j}."),
                ));
            }
        }
        if i < 3 {
            layer.push((
                format!("input_blocks.{}.0.op.", 3 * (i + 1)),
                format!("down_blocks.{i}.downsamplers.0.conv."),
            ));
            layer.push((
                format!(
                    "output_blocks.{}.{}.",
                    3 * i + 2,
                    if i == 0 { 1 } else { 2 }
                ),
                format!("up_blocks.{i}.upsamplers.0."),
            ));
        }
    }
    if xl {
        layer.push((
            "output_blocks.2.2.conv.".into(),
            "output_blocks.2.1.conv.".into(),
        ));
    }
    layer.push(("middle_block.1.".into(), "mid_block.attentions.0.".into()));
    for j in 0..2 {
        layer.push((
            format!("middle_block.{}.", 2 * j),
            format!("mid_block.resnets.{j}."),
        ));
    }
    (top, resnet, layer)
}

fn convert_unet(names: &[String], xl: bool) -> BTreeMap<String, String> {
    let (top, resnet, layer) = unet_maps(xl);
    let mut mapping: BTreeMap<String, String> =
        names.iter().map(|k| (k.clone(), k.clone())).collect();
    for (sd, hf) in &top {
        if mapping.contains_key(hf) {
            mapping.insert(hf.clone(), sd.clone());
        }
    }
    for (k, v) in mapping.iter_mut() {
        if k.contains("resnets") {
            for (sd, hf) in &resnet {
                *v = v.replace(hf.as_str(), sd);
            }
        }
    }
    for v in mapping.values_mut() {
        for (sd, hf) in &layer {
            *v = v.replace(hf.as_str(), sd);
        }
    }
    mapping
}

fn convert_vae(names: &[String]) -> BTreeMap<String, String> {
    let mut map: Vec<(String, String)> = vec![
        ("nin_shortcut".into(), "conv_shortcut".into()),
        ("norm_out".into(), "conv_norm_out".into()),
        ("mid.attn_1.".into(), "mid_block.attentions.0.".into()),
    ];
    for i in 0..4 {
        for j in 0..2 {
            map.push((
                format!("encoder.down.{i}.block.{j}."),
                format!("encoder.down_blocks.{i}.resnets.{j}."),
            ));
        }
        if i < 3 {
            map.push((
                format!("down.{i}.downsample."),
                format!("down_blocks.{i}.downsamplers.0."),
            ));
            map.push((
                format!("up.{}.upsample.", 3 - i),
                format!("up_blocks.{i}.upsamplers.0."),
            ));
        }
        for j in 0..3 {
            map.push((
                format!("decoder.up.{}.block.{j}.", 3 - i),
                format!("decoder.up_blocks.{i}.resnets.{j}."),
            ));
        }
    }
    for i in 0..2 {
        map.push((
            format!("mid.block_{}.", i + 1),
            format!("mid_block.resnets.{i}."),
        ));
    }
    // Both scripts' attention tables: the SD one's old names and the SDXL one's new names.
    let attn = [
        ("norm.", "group_norm."),
        ("q.", "query."),
        ("k.", "key."),
        ("v.", "value."),
        ("proj_out.", "proj_attn."),
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("proj_out.", "to_out.0."),
    ];
    let mut mapping: BTreeMap<String, String> =
        names.iter().map(|k| (k.clone(), k.clone())).collect();
    for v in mapping.values_mut() {
        for (sd, hf) in &map {
            *v = v.replace(hf.as_str(), sd);
        }
    }
    for (k, v) in mapping.iter_mut() {
        if k.contains("attentions") {
            for (sd, hf) in attn {
                *v = v.replace(hf, sd);
            }
        }
    }
    mapping
}

/// OpenCLIP names for a Hugging Face text tower, with fused q/k/v.
fn convert_open_clip(tensors: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let table = [
        ("transformer.resblocks.", "text_model.encoder.layers."),
        ("ln_1", "layer_norm1"),
        ("ln_2", "layer_norm2"),
        (".c_fc.", ".fc1."),
        (".c_proj.", ".fc2."),
        (".attn", ".self_attn"),
        ("ln_final.", "text_model.final_layer_norm."),
        (
            "token_embedding.weight",
            "text_model.embeddings.token_embedding.weight",
        ),
        (
            "positional_embedding",
            "text_model.embeddings.position_embedding.weight",
        ),
    ];
    let pattern = regex::Regex::new(
        &table
            .iter()
            .map(|(_, hf)| regex::escape(hf))
            .collect::<Vec<_>>()
            .join("|"),
    )
    .unwrap();
    let relabel = |k: &str| {
        pattern
            .replace_all(k, |c: &regex::Captures<'_>| {
                table
                    .iter()
                    .find(|(_, hf)| *hf == &c[0])
                    .unwrap()
                    .0
                    .to_owned()
            })
            .into_owned()
    };
    let mut out = BTreeMap::new();
    let mut qkv: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
    for (k, v) in tensors {
        let mut captured = false;
        for (i, code) in ["q", "k", "v"].iter().enumerate() {
            for kind in ["weight", "bias"] {
                let suffix = format!(".self_attn.{code}_proj.{kind}");
                if let Some(pre) = k.strip_suffix(&suffix) {
                    let key = format!("{}.in_proj_{kind}", relabel(&format!("{pre}.self_attn")));
                    qkv.entry(key).or_default()[i] = Some(v.clone());
                    captured = true;
                }
            }
        }
        if captured {
            continue;
        }
        if k == "text_projection.weight" {
            // The script copies this name unchanged, but SDXL's published single files
            // store OpenCLIP's `text_projection` matrix (the transpose, applied as x @ P).
            out.insert(
                "text_projection".into(),
                v.t().unwrap().contiguous().unwrap(),
            );
            continue;
        }
        out.insert(relabel(k), v.clone());
    }
    for (k, parts) in qkv {
        let parts: Vec<Tensor> = parts.into_iter().map(Option::unwrap).collect();
        out.insert(k, Tensor::cat(&parts, 0).unwrap());
    }
    out
}

/// Converts a diffusers folder written by [`write_diffusers`] into one LDM checkpoint.
pub(crate) fn convert_to_single_file(dir: &Path, t: Tiny, out: &Path) {
    let xl = t == Tiny::Sdxl;
    let mut all: HashMap<String, Tensor> = HashMap::new();
    let unet = load_all(&dir.join("unet/diffusion_pytorch_model.safetensors"));
    let names: Vec<String> = unet.keys().cloned().collect();
    for (hf, sd) in convert_unet(&names, xl) {
        all.insert(format!("model.diffusion_model.{sd}"), unet[&hf].clone());
    }
    let vae = load_all(&dir.join("vae/diffusion_pytorch_model.safetensors"));
    let names: Vec<String> = vae.keys().cloned().collect();
    for (hf, sd) in convert_vae(&names) {
        let mut v = vae[&hf].clone();
        if ["q", "k", "v", "proj_out"]
            .iter()
            .any(|w| sd.contains(&format!("mid.attn_1.{w}.weight")))
        {
            let d = v.dims().to_vec();
            v = v.reshape((d[0], d[1], 1, 1)).unwrap();
        }
        all.insert(format!("first_stage_model.{sd}"), v);
    }
    let te = load_all(&dir.join("text_encoder/model.safetensors"));
    if t == Tiny::Sd21 {
        // SD 2.x's script gives the OpenCLIP names the SDXL one does. A real SD 2.x single
        // file holds one more layer than the diffusers encoder (which keeps the layers up
        // to the penultimate one SD 2.x conditions on): add it, with its own weights, so
        // the loader must leave it out to agree with the folder.
        let mut te = te;
        let mut rng = AuraRng::new(77);
        for (name, shape) in clip_tensors(false) {
            if let Some(rest) = name.strip_prefix("text_model.encoder.layers.1.") {
                let extra = format!("text_model.encoder.layers.2.{rest}");
                te.insert(
                    extra.clone(),
                    tensor(values(&extra, &shape, &mut rng), &shape, DType::F16),
                );
            }
        }
        for (k, v) in convert_open_clip(&te) {
            all.insert(format!("cond_stage_model.model.{k}"), v);
        }
        save(&all, out);
        return;
    }
    let prefix = if xl {
        "conditioner.embedders.0.transformer."
    } else {
        "cond_stage_model.transformer."
    };
    for (k, v) in te {
        all.insert(format!("{prefix}{k}"), v);
    }
    if xl {
        let te2 = load_all(&dir.join("text_encoder_2/model.safetensors"));
        for (k, v) in convert_open_clip(&te2) {
            all.insert(format!("conditioner.embedders.1.model.{k}"), v);
        }
    }
    save(&all, out);
}

/// A kohya-layout LoRA (`lora_unet_…`, `lora_te_…`) of rank 2 on the given modules (kohya
/// names without the `lora_` tag), each with its shape `(out, in, k)` (k 0 for linear).
pub(crate) fn write_kohya_lora(path: &Path, modules: &[(&str, usize, usize, usize)], seed: u64) {
    let mut rng = AuraRng::new(seed);
    let mut map = HashMap::new();
    let rank = 2;
    for &(m, out, inp, k) in modules {
        let down_shape: Vec<usize> = if k == 0 {
            vec![rank, inp]
        } else {
            vec![rank, inp, k, k]
        };
        let up_shape: Vec<usize> = if k == 0 {
            vec![out, rank]
        } else {
            vec![out, rank, 1, 1]
        };
        let n_down: usize = down_shape.iter().product();
        let n_up: usize = up_shape.iter().product();
        map.insert(
            format!("lora_{m}.lora_down.weight"),
            tensor(rng.normal_vec(n_down), &down_shape, DType::F16),
        );
        map.insert(
            format!("lora_{m}.lora_up.weight"),
            tensor(
                rng.normal_vec(n_up).iter().map(|v| v * 0.5).collect(),
                &up_shape,
                DType::F16,
            ),
        );
        map.insert(
            format!("lora_{m}.alpha"),
            tensor(vec![1.0], &[], DType::F32),
        );
    }
    save(&map, path);
}

/// A PEFT-layout LoRA (`<module>.lora_A.weight`, `.lora_B.weight`) of rank 2 on linear
/// modules `(internal module name, out, in)`.
pub(crate) fn write_peft_lora(path: &Path, modules: &[(&str, usize, usize)], seed: u64) {
    let mut rng = AuraRng::new(seed);
    let mut map = HashMap::new();
    for &(m, out, inp) in modules {
        map.insert(
            format!("{m}.lora_A.weight"),
            tensor(rng.normal_vec(2 * inp), &[2, inp], DType::F32),
        );
        map.insert(
            format!("{m}.lora_B.weight"),
            tensor(rng.normal_vec(out * 2), &[out, 2], DType::F32),
        );
    }
    save(&map, path);
}
