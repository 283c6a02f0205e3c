//! Loading a model from verified files: GGUF (through candle's reader) or safetensors
//! shards plus config.json and tokenizer.json. Files are untrusted input: shapes, counts
//! and names are checked, and every problem is an error, never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::matrix::{Format, Matrix, quantize_q8_0};
use crate::tokenizer::{GgufTokenizerMeta, Tokenizer};
use crate::transformer::{Config, Expert, Ffn, Layer, Transformer};

/// What loading produced.
pub(crate) struct Loaded {
    pub(crate) transformer: Transformer,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) template: Option<ChatTemplate>,
    /// The format the files stored the weights in (for the fingerprint).
    pub(crate) source_dtype: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------------------
// GGUF

struct Gguf {
    content: gguf_file::Content,
    reader: BufReader<File>,
    arch: String,
}

impl Gguf {
    fn meta(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        use gguf_file::Value as V;
        Ok(match self.meta(key) {
            None => None,
            Some(V::U8(v)) => Some(usize::from(*v)),
            Some(V::U16(v)) => Some(usize::from(*v)),
            Some(V::U32(v)) => Some(*v as usize),
            Some(V::U64(v)) => {
                Some(usize::try_from(*v).map_err(|_| Error::model(format!("{key} too large")))?)
            }
            Some(V::I32(v)) if *v >= 0 => Some(*v as usize),
            Some(V::I64(v)) if *v >= 0 => {
                Some(usize::try_from(*v).map_err(|_| Error::model(format!("{key} too large")))?)
            }
            Some(_) => return Err(Error::model(format!("{key} is not a non-negative integer"))),
        })
    }

    fn arch_usize(&self, key: &str) -> Result<Option<usize>> {
        self.usize(&format!("{}.{key}", self.arch))
    }

    fn required(&self, key: &str) -> Result<usize> {
        self.arch_usize(key)?
            .ok_or_else(|| Error::model(format!("gguf lacks {}.{key}", self.arch)))
    }

    fn f32(&self, key: &str) -> Result<Option<f32>> {
        use gguf_file::Value as V;
        Ok(match self.meta(key) {
            None => None,
            Some(V::F32(v)) => Some(*v),
            Some(V::F64(v)) => Some(*v as f32),
            Some(_) => return Err(Error::model(format!("{key} is not a float"))),
        })
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.meta(key) {
            None => Ok(None),
            Some(gguf_file::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::model(format!("{key} is not a string"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.meta(key) {
            None => Ok(Vec::new()),
            Some(gguf_file::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    gguf_file::Value::String(s) => Ok(s.clone()),
                    _ => Err(Error::model(format!("{key} holds a non-string"))),
                })
                .collect(),
            Some(_) => Err(Error::model(format!("{key} is not an array"))),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        if !self.has(name) {
            return Err(Error::model(format!("gguf lacks tensor {name}")));
        }
        Ok(self.content.tensor(&mut self.reader, name, &Device::Cpu)?)
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        let t = self.qtensor(name)?;
        Ok(t.dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// A 2-D tensor as a matrix, or a 3-D one (stacked experts) as one matrix per expert.
    fn matrices(&mut self, name: &str) -> Result<Vec<Matrix>> {
        let t = self.qtensor(name)?;
        let dims = t.shape().dims().to_vec();
        let (parts, rows, cols) = match dims.as_slice() {
            [r, c] => (1, *r, *c),
            [e, r, c] => (*e, *r, *c),
            _ => return Err(Error::model(format!("tensor {name} has shape {dims:?}"))),
        };
        let total_rows = parts * rows;
        let m = qtensor_matrix(&t, total_rows, cols, name)?;
        if parts == 1 {
            Ok(vec![m])
        } else {
            m.split_rows(parts)
        }
    }

    fn matrix(&mut self, name: &str) -> Result<Matrix> {
        let mut ms = self.matrices(name)?;
        if ms.len() != 1 {
            return Err(Error::model(format!("tensor {name} is not a matrix")));
        }
        Ok(ms.remove(0))
    }
}

fn qtensor_matrix(t: &QTensor, rows: usize, cols: usize, name: &str) -> Result<Matrix> {
    let format = match t.dtype() {
        GgmlDType::Q4_0 => Some(Format::Q4_0),
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q8_0 => Some(Format::Q8_0),
        _ => None,
    };
    match format {
        Some(f) => Matrix::from_blocks(rows, cols, f, &t.data()?)
            .map_err(|e| Error::model(format!("tensor {name}: {e}"))),
        // f32, f16, bf16 and the k-quants run as f32.
        None => Matrix::from_f32(
            rows,
            cols,
            t.dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        ),
    }
}

pub(crate) fn load_gguf(path: &Path, dtype: Option<Format>) -> Result<Loaded> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| Error::model(format!("not a readable gguf file: {}", first_line(&e))))?;
    let arch = match content.metadata.get("general.architecture") {
        Some(gguf_file::Value::String(s)) => s.clone(),
        _ => return Err(Error::model("gguf lacks general.architecture")),
    };
    if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2" | "mixtral") {
        return Err(Error::Unsupported(format!(
            "architecture '{arch}' (llama, mistral, qwen2, mixtral run)"
        )));
    }
    let mut g = Gguf {
        content,
        reader,
        arch: arch.clone(),
    };

    let tok = GgufTokenizerMeta {
        model: g.string("tokenizer.ggml.model")?.unwrap_or_default(),
        pre: g.string("tokenizer.ggml.pre")?.unwrap_or_default(),
        tokens: g.strings("tokenizer.ggml.tokens")?,
        types: match g.meta("tokenizer.ggml.token_type") {
            Some(gguf_file::Value::Array(v)) => v.iter().map(|x| x.to_i32().unwrap_or(1)).collect(),
            _ => Vec::new(),
        },
        merges: g.strings("tokenizer.ggml.merges")?,
        bos: g.usize("tokenizer.ggml.bos_token_id")?.map(|v| v as u32),
        eos: {
            let mut eos: Vec<u32> = Vec::new();
            for key in [
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.eot_token_id",
                "tokenizer.ggml.eom_token_id",
            ] {
                if let Some(id) = g.usize(key)?
                    && !eos.contains(&(id as u32))
                {
                    eos.push(id as u32);
                }
            }
            eos
        },
        add_bos: matches!(
            g.meta("tokenizer.ggml.add_bos_token"),
            Some(gguf_file::Value::Bool(true))
        ),
    };
    if tok.tokens.is_empty() {
        return Err(Error::model(
            "gguf carries no tokenizer (tokenizer.ggml.tokens)",
        ));
    }
    let tokenizer = Tokenizer::from_gguf(&tok)?;

    let n_head = g.required("attention.head_count")?;
    let dim = g.required("embedding_length")?;
    let head_dim = match g.arch_usize("attention.key_length")? {
        Some(k) => k,
        None if n_head > 0 => dim / n_head,
        None => 0,
    };
    let config = Config {
        architecture: arch.clone(),
        n_layer: g.required("block_count")?,
        dim,
        n_head,
        n_kv_head: g.arch_usize("attention.head_count_kv")?.unwrap_or(n_head),
        head_dim,
        ffn_dim: g.required("feed_forward_length")?,
        vocab: tok.tokens.len(),
        eps: g
            .f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope_theta: g
            .f32(&format!("{arch}.rope.freq_base"))?
            .unwrap_or(10_000.0),
        context_length: g.arch_usize("context_length")?.unwrap_or(4096),
        n_expert: g.arch_usize("expert_count")?.unwrap_or(0),
        n_expert_used: g.arch_usize("expert_used_count")?.unwrap_or(0),
    };
    config.validate()?;
    if let Some(rot) = g.arch_usize("rope.dimension_count")?
        && rot != config.head_dim
    {
        return Err(Error::Unsupported(format!(
            "partial rotary embedding ({rot} of {} dimensions)",
            config.head_dim
        )));
    }

    let source_dtype = gguf_file_type(&mut g)?;
    let convert = |m: Matrix| convert_matrix(m, dtype);
    let embed = convert(g.matrix("token_embd.weight")?)?;
    let output = if g.has("output.weight") {
        Some(convert(g.matrix("output.weight")?)?)
    } else {
        None
    };
    let norm = g.vector("output_norm.weight")?;
    // llama.cpp's converter interleaves the rotary halves of q and k rows for the
    // `llama` architecture; undo it so every model uses the same (half) pairing.
    let unpermute = matches!(arch.as_str(), "llama" | "mistral" | "mixtral");
    let mut layers = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let p = |s: &str| format!("blk.{i}.{s}");
        let mut wq = convert(g.matrix(&p("attn_q.weight"))?)?;
        let mut wk = convert(g.matrix(&p("attn_k.weight"))?)?;
        if unpermute {
            if wq.rows != config.n_head * config.head_dim
                || wk.rows != config.n_kv_head * config.head_dim
            {
                return Err(Error::model(format!(
                    "layer {i} q/k shapes disagree with the head counts"
                )));
            }
            wq.permute_rows(&half_pairing_order(config.n_head, config.head_dim));
            wk.permute_rows(&half_pairing_order(config.n_kv_head, config.head_dim));
        }
        let bias = |g: &mut Gguf, s: &str| -> Result<Option<Vec<f32>>> {
            let name = p(s);
            if g.has(&name) {
                g.vector(&name).map(Some)
            } else {
                Ok(None)
            }
        };
        let (bq, bk, bv) = (
            bias(&mut g, "attn_q.bias")?,
            bias(&mut g, "attn_k.bias")?,
            bias(&mut g, "attn_v.bias")?,
        );
        let ffn = if config.n_expert > 0 {
            let router = convert(g.matrix(&p("ffn_gate_inp.weight"))?)?;
            let experts = if g.has(&p("ffn_gate_exps.weight")) {
                let gates = g.matrices(&p("ffn_gate_exps.weight"))?;
                let ups = g.matrices(&p("ffn_up_exps.weight"))?;
                let downs = g.matrices(&p("ffn_down_exps.weight"))?;
                if gates.len() != config.n_expert
                    || ups.len() != config.n_expert
                    || downs.len() != config.n_expert
                {
                    return Err(Error::model(format!(
                        "layer {i} stacks a wrong number of experts"
                    )));
                }
                gates
                    .into_iter()
                    .zip(ups)
                    .zip(downs)
                    .map(|((gate, up), down)| {
                        Ok(Expert {
                            gate: convert(gate)?,
                            up: convert(up)?,
                            down: convert(down)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            } else {
                (0..config.n_expert)
                    .map(|e| {
                        Ok(Expert {
                            gate: convert(g.matrix(&p(&format!("ffn_gate.{e}.weight")))?)?,
                            up: convert(g.matrix(&p(&format!("ffn_up.{e}.weight")))?)?,
                            down: convert(g.matrix(&p(&format!("ffn_down.{e}.weight")))?)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            Ffn::Moe {
                router,
                experts,
                top_k: config.n_expert_used,
            }
        } else {
            Ffn::Dense {
                gate: convert(g.matrix(&p("ffn_gate.weight"))?)?,
                up: convert(g.matrix(&p("ffn_up.weight"))?)?,
                down: convert(g.matrix(&p("ffn_down.weight"))?)?,
            }
        };
        layers.push(Layer {
            attn_norm: g.vector(&p("attn_norm.weight"))?,
            wq,
            wk,
            wv: convert(g.matrix(&p("attn_v.weight"))?)?,
            wo: convert(g.matrix(&p("attn_output.weight"))?)?,
            bq,
            bk,
            bv,
            ffn_norm: g.vector(&p("ffn_norm.weight"))?,
            ffn,
        });
    }
    let template = match g.string("tokenizer.chat_template")? {
        Some(src) => Some(chat_template(&src, &tokenizer)?),
        None => None,
    };
    let transformer = Transformer::new(config, embed, layers, norm, output)?;
    Ok(Loaded {
        transformer,
        tokenizer,
        template,
        source_dtype,
    })
}

/// The dominant weight format of a GGUF file, named for the fingerprint.
fn gguf_file_type(g: &mut Gguf) -> Result<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (name, info) in &g.content.tensor_infos {
        if name.ends_with("norm.weight") || name.ends_with(".bias") {
            continue;
        }
        *counts
            .entry(format!("{:?}", info.ggml_dtype).to_lowercase())
            .or_default() += info.shape.elem_count();
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(v.first()
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| "none".into()))
}

/// Row order that turns interleaved rotary pairs (2i, 2i+1) into half pairs (i, i + d/2),
/// per head: result row `h*d + j*d/2 + i` is stored row `h*d + 2i + j`.
fn half_pairing_order(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = vec![0; heads * head_dim];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                order[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    order
}

/// The inverse of [`half_pairing_order`]'s permutation: what a GGUF writer applies to
/// Hugging Face q/k rows (used by tests that write GGUF files).
pub fn interleave_rotary_rows(
    rows: &[f32],
    heads: usize,
    head_dim: usize,
    cols: usize,
) -> Vec<f32> {
    let order = half_pairing_order(heads, head_dim);
    let mut out = vec![0.0; rows.len()];
    // stored row order[r] holds source row r
    for (r, &stored) in order.iter().enumerate() {
        out[stored * cols..(stored + 1) * cols].copy_from_slice(&rows[r * cols..(r + 1) * cols]);
    }
    out
}

fn convert_matrix(m: Matrix, dtype: Option<Format>) -> Result<Matrix> {
    match dtype {
        None => Ok(m),
        Some(f) if f == m.format => Ok(m),
        Some(Format::F32) => {
            let mut data = vec![0.0f32; m.rows * m.cols];
            for (r, row) in data.chunks_exact_mut(m.cols).enumerate() {
                m.row_into(r, row);
            }
            Matrix::from_f32(m.rows, m.cols, data)
        }
        Some(Format::Q8_0) if m.cols.is_multiple_of(32) => {
            let mut row = vec![0.0f32; m.cols];
            let mut bytes = Vec::new();
            for r in 0..m.rows {
                m.row_into(r, &mut row);
                bytes.extend(quantize_q8_0(&row));
            }
            Matrix::from_blocks(m.rows, m.cols, Format::Q8_0, &bytes)
        }
        Some(f) => Err(Error::Options(format!(
            "cannot convert {} weights to {}",
            m.format.name(),
            f.name()
        ))),
    }
}

fn chat_template(src: &str, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
    let piece = |id: Option<u32>| {
        id.and_then(|i| tokenizer.decode(&[i]).ok())
            .unwrap_or_default()
    };
    ChatTemplate::new(
        src,
        piece(tokenizer.bos_id()),
        piece(tokenizer.eos_ids().first().copied()),
    )
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------------------
// safetensors

pub(crate) fn load_safetensors(
    config_path: &Path,
    tokenizer_path: &Path,
    tokenizer_config: Option<&Path>,
    weights: &[PathBuf],
    dtype: Option<Format>,
) -> Result<Loaded> {
    let cfg: Value = serde_json::from_slice(&std::fs::read(config_path).map_err(io(config_path))?)
        .map_err(|e| Error::model(format!("config.json: {e}")))?;
    let get = |k: &str| cfg.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let need = |k: &str| get(k).ok_or_else(|| Error::model(format!("config.json lacks {k}")));
    let model_type = cfg
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("llama")
        .to_owned();
    if !matches!(
        model_type.as_str(),
        "llama" | "mistral" | "qwen2" | "mixtral"
    ) {
        return Err(Error::Unsupported(format!(
            "model_type '{model_type}' (llama, mistral, qwen2, mixtral run)"
        )));
    }
    let n_head = need("num_attention_heads")?;
    let dim = need("hidden_size")?;
    let config = Config {
        architecture: model_type,
        n_layer: need("num_hidden_layers")?,
        dim,
        n_head,
        n_kv_head: get("num_key_value_heads").unwrap_or(n_head),
        head_dim: get("head_dim").unwrap_or(dim.checked_div(n_head).unwrap_or(0)),
        ffn_dim: need("intermediate_size")?,
        vocab: need("vocab_size")?,
        eps: cfg
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5) as f32,
        rope_theta: cfg
            .get("rope_theta")
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0) as f32,
        context_length: get("max_position_embeddings").unwrap_or(4096),
        n_expert: get("num_local_experts").unwrap_or(0),
        n_expert_used: get("num_experts_per_tok").unwrap_or(0),
    };
    config.validate()?;
    let tied = cfg
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    // Merge the shards (experts may live in shards of their own); a tensor in two
    // shards is an error rather than a silent choice.
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut source_dtype = String::from("none");
    for path in weights {
        let part = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::model(format!("{}: {}", path.display(), first_line(&e))))?;
        for (name, t) in part {
            if matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                source_dtype = format!("{:?}", t.dtype()).to_lowercase();
            } else {
                return Err(Error::Unsupported(format!(
                    "tensor {name} has dtype {:?} (f32, f16, bf16 run)",
                    t.dtype()
                )));
            }
            if tensors.insert(name.clone(), t).is_some() {
                return Err(Error::model(format!(
                    "tensor {name} appears in more than one shard"
                )));
            }
        }
    }
    fn take(tensors: &mut HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
        tensors
            .remove(name)
            .ok_or_else(|| Error::model(format!("no shard holds tensor {name}")))
    }
    let vector = |t: Tensor| -> Result<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let matrix = |t: Tensor, name: &str| -> Result<Matrix> {
        let (r, c) = t
            .dims2()
            .map_err(|_| Error::model(format!("tensor {name} is not a matrix")))?;
        convert_matrix(Matrix::from_f32(r, c, vector(t)?)?, dtype)
    };
    let embed = matrix(take(&mut tensors, "model.embed_tokens.weight")?, "embed")?;
    let output = if tied {
        None
    } else {
        Some(matrix(take(&mut tensors, "lm_head.weight")?, "lm_head")?)
    };
    let norm = vector(take(&mut tensors, "model.norm.weight")?)?;
    let mut layers = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let mut m = |s: &str| -> Result<Matrix> {
            let n = p(s);
            matrix(take(&mut tensors, &n)?, &n)
        };
        let wq = m("self_attn.q_proj.weight")?;
        let wk = m("self_attn.k_proj.weight")?;
        let wv = m("self_attn.v_proj.weight")?;
        let wo = m("self_attn.o_proj.weight")?;
        let ffn = if config.n_expert > 0 {
            let router = m("block_sparse_moe.gate.weight")?;
            let experts = (0..config.n_expert)
                .map(|e| {
                    let q = |w: &str| format!("block_sparse_moe.experts.{e}.{w}.weight");
                    Ok(Expert {
                        gate: m(&q("w1"))?,
                        down: m(&q("w2"))?,
                        up: m(&q("w3"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ffn::Moe {
                router,
                experts,
                top_k: config.n_expert_used,
            }
        } else {
            Ffn::Dense {
                gate: m("mlp.gate_proj.weight")?,
                up: m("mlp.up_proj.weight")?,
                down: m("mlp.down_proj.weight")?,
            }
        };
        let mut opt = |s: &str| -> Result<Option<Vec<f32>>> {
            match tensors.remove(&p(s)) {
                Some(t) => vector(t).map(Some),
                None => Ok(None),
            }
        };
        let (bq, bk, bv) = (
            opt("self_attn.q_proj.bias")?,
            opt("self_attn.k_proj.bias")?,
            opt("self_attn.v_proj.bias")?,
        );
        let attn_norm = vector(take(&mut tensors, &p("input_layernorm.weight"))?)?;
        let ffn_norm = vector(take(&mut tensors, &p("post_attention_layernorm.weight"))?)?;
        layers.push(Layer {
            attn_norm,
            wq,
            wk,
            wv,
            wo,
            bq,
            bk,
            bv,
            ffn_norm,
            ffn,
        });
    }

    // Tokenizer and template.
    let tok_bytes = std::fs::read(tokenizer_path).map_err(io(tokenizer_path))?;
    let tok_json: Value = serde_json::from_slice(&tok_bytes)
        .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
    let added = crate::tokenizer::added_token_ids(&tok_json);
    let tcfg: Option<Value> = match tokenizer_config {
        Some(p) => Some(
            serde_json::from_slice(&std::fs::read(p).map_err(io(p))?)
                .map_err(|e| Error::model(format!("tokenizer_config.json: {e}")))?,
        ),
        None => None,
    };
    let named = |key: &str| -> Option<u32> {
        let v = tcfg.as_ref()?.get(key)?;
        let s = v
            .as_str()
            .or_else(|| v.get("content").and_then(Value::as_str))?;
        added.get(s).copied()
    };
    let ids = |key: &str| -> Vec<u32> {
        match cfg.get(key) {
            Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        }
    };
    let bos = named("bos_token").or_else(|| ids("bos_token_id").first().copied());
    let mut eos = ids("eos_token_id");
    if let Some(e) = named("eos_token")
        && !eos.contains(&e)
    {
        eos.insert(0, e);
    }
    let add_bos = tcfg
        .as_ref()
        .and_then(|c| c.get("add_bos_token"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tokenizer = Tokenizer::from_json_bytes(&tok_bytes, bos, eos, add_bos)?;
    let template_src = tcfg
        .as_ref()
        .and_then(|c| c.get("chat_template"))
        .and_then(|t| match t {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list.iter().find_map(|e| {
                (e.get("name").and_then(Value::as_str) == Some("default"))
                    .then(|| e.get("template").and_then(Value::as_str).map(str::to_owned))
                    .flatten()
            }),
            _ => None,
        });
    let template = match template_src {
        Some(src) => Some(chat_template(&src, &tokenizer)?),
        None => None,
    };
    let transformer = Transformer::new(config, embed, layers, norm, output)?;
    Ok(Loaded {
        transformer,
        tokenizer,
        template,
        source_dtype,
    })
}
