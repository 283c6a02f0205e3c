//! Reading weights by their internal name, whatever file layout holds them, and turning
//! them into the engine's layers (packed for the kernels, with LoRA deltas merged).
//!
//! The internal names are diffusers' names with the component as a prefix
//! (`unet.down_blocks.0.resnets.0.conv1.weight`, `vae.decoder.conv_in.weight`,
//! `text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight`, `text_encoder_2.…`).
//! A [`Store`] maps each internal name to a tensor in a safetensors file, possibly a slice
//! of one (the fused q/k/v projections of OpenCLIP) or its transpose (OpenCLIP's text
//! projection); `load.rs` builds the map for each checkpoint layout.
//!
//! Weight files are untrusted: a missing tensor, a wrong shape or a value that does not
//! fit the requested storage type is an error naming the tensor, never a panic.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::kernels::{self, Im2colA, PackedB, RowsA, WeightDtype};
use crate::lora::LoraSet;
use crate::ops::{Act, Ctx};
use crate::safetensors::SafeFile;

/// How a stored tensor becomes the internal one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Transform {
    /// As stored.
    Same,
    /// Rows `start..start + len` of the first dimension (one of fused q, k, v).
    Rows { start: usize, len: usize },
    /// The transpose of a stored matrix.
    Transpose,
}

/// Where an internal tensor lives.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) file: usize,
    pub(crate) key: String,
    pub(crate) transform: Transform,
}

/// A tensor read as f32: its shape and values (row-major).
#[derive(Clone, Debug)]
pub(crate) struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// The weight files of a model and the map from internal names to their tensors.
pub(crate) struct Store {
    paths: Vec<PathBuf>,
    files: Vec<SafeFile>,
    map: HashMap<String, Entry>,
    /// The stored types of the tensors read (for the fingerprint).
    pub(crate) source_dtypes: std::collections::BTreeSet<&'static str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("paths", &self.paths)
            .field("tensors", &self.map.len())
            .finish()
    }
}

impl Store {
    /// Opens the safetensors files at `paths` (headers are parsed and checked here).
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(|p| SafeFile::open(p))
            .collect::<Result<_>>()?;
        Ok(Self {
            paths: paths.to_vec(),
            files,
            map: HashMap::new(),
            source_dtypes: Default::default(),
        })
    }

    /// Every (file, key, shape) stored.
    pub(crate) fn stored(&self) -> Vec<(usize, String, Vec<usize>)> {
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            for (name, info) in f.tensors() {
                out.push((i, name.clone(), info.shape.clone()));
            }
        }
        out.sort();
        out
    }

    /// Routes `internal` to `entry`. A name routed twice is an error (two tensors claim it).
    pub(crate) fn route(&mut self, internal: String, entry: Entry) -> Result<()> {
        if let Some(old) = self.map.get(&internal) {
            return Err(Error::model(format!(
                "both {} and {} map to {internal}",
                old.key, entry.key
            )));
        }
        self.map.insert(internal, entry);
        Ok(())
    }

    /// Internal names under `prefix`.
    pub(crate) fn names_under(&self, prefix: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v
    }

    /// The shape `internal` will have, without reading it.
    pub(crate) fn shape(&self, internal: &str) -> Option<Vec<usize>> {
        let e = self.map.get(internal)?;
        let mut shape = self.files[e.file].tensors().get(&e.key)?.shape.clone();
        match e.transform {
            Transform::Same => {}
            Transform::Rows { len, .. } => *shape.first_mut()? = len,
            Transform::Transpose => shape.reverse(),
        }
        Some(shape)
    }

    /// Reads `internal` as f32.
    pub(crate) fn read(&mut self, internal: &str) -> Result<Tensor> {
        let e = self
            .map
            .get(internal)
            .ok_or_else(|| Error::model(format!("missing tensor {internal}")))?;
        let bad = |m: String| Error::model(format!("{} ({internal}): {m}", e.key));
        let file = &self.files[e.file];
        if let Some(info) = file.tensors().get(&e.key) {
            self.source_dtypes.insert(info.dtype.name());
        }
        let (shape, data) = file.read_f32(&e.key)?;
        match e.transform.clone() {
            Transform::Same => Ok(Tensor { shape, data }),
            Transform::Rows { start, len } => {
                let rows = *shape
                    .first()
                    .ok_or_else(|| bad("a scalar cannot be split".into()))?;
                if start + len > rows {
                    return Err(bad(format!("has {rows} rows, not {}", start + len)));
                }
                let per = data.len() / rows.max(1);
                let mut shape = shape;
                shape[0] = len;
                Ok(Tensor {
                    shape,
                    data: data[start * per..(start + len) * per].to_vec(),
                })
            }
            Transform::Transpose => {
                let [r, c] = shape[..] else {
                    return Err(bad(format!("expected a matrix, found shape {shape:?}")));
                };
                let mut out = vec![0.0; data.len()];
                for i in 0..r {
                    for j in 0..c {
                        out[j * r + i] = data[i * c + j];
                    }
                }
                Ok(Tensor {
                    shape: vec![c, r],
                    data: out,
                })
            }
        }
    }
}

/// A linear layer `y = x W^T + b`.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) w: PackedB,
    pub(crate) b: Option<Vec<f32>>,
}

/// A 2-D convolution on NHWC activations.
#[derive(Debug)]
pub(crate) struct Conv2d {
    pub(crate) w: PackedB,
    pub(crate) b: Option<Vec<f32>>,
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
}

/// Scale and shift of a group or layer norm.
#[derive(Debug)]
pub(crate) struct Norm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) eps: f32,
}

/// Builds layers from a [`Store`] under a name prefix.
pub(crate) struct Loader<'a> {
    pub(crate) store: &'a mut Store,
    pub(crate) prefix: String,
    pub(crate) dtype: WeightDtype,
    pub(crate) lora: Option<&'a LoraSet>,
    /// Bytes of packed weights made so far.
    pub(crate) bytes: usize,
}

impl<'a> Loader<'a> {
    pub(crate) fn new(
        store: &'a mut Store,
        prefix: &str,
        dtype: WeightDtype,
        lora: Option<&'a LoraSet>,
    ) -> Self {
        Self {
            store,
            prefix: prefix.to_owned(),
            dtype,
            lora,
            bytes: 0,
        }
    }

    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// Reads `rel`, checking its shape (`shape` of all ones beyond the given ones is
    /// accepted: a 1x1 convolution stored as a matrix or the other way round).
    pub(crate) fn tensor(&mut self, rel: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let name = self.name(rel);
        let t = self.store.read(&name)?;
        let trim = |s: &[usize]| {
            let mut s = s.to_vec();
            while s.len() > 1 && s.last() == Some(&1) {
                s.pop();
            }
            s
        };
        if trim(&t.shape) != trim(shape) {
            return Err(Error::model(format!(
                "{name} has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::model(format!(
                "{name} holds a non-finite value at {bad}"
            )));
        }
        Ok(t.data)
    }

    /// Merges the LoRA delta for `rel` (a weight of `out x in...`) into `w`, if any.
    fn merge_lora(&self, rel: &str, w: &mut [f32], out: usize) -> Result<()> {
        if let Some(lora) = self.lora {
            lora.merge_into(&self.name(rel), w, out)?;
        }
        Ok(())
    }

    fn pack_check(&self, name: &str, w: &[f32]) -> Result<()> {
        if self.dtype == WeightDtype::F16
            && let Some(v) = w.iter().find(|v| v.abs() > 65504.0)
        {
            return Err(Error::model(format!(
                "{name} holds {v}, beyond the range of f16; hint: load the model with f32 weights"
            )));
        }
        Ok(())
    }

    /// A linear layer from `rel.weight` (`out x in`, or `out x in x 1 x 1`) and, with
    /// `bias`, `rel.bias`.
    pub(crate) fn linear(
        &mut self,
        rel: &str,
        input: usize,
        out: usize,
        bias: bool,
    ) -> Result<Linear> {
        let wname = format!("{rel}.weight");
        let mut w = self.tensor(&wname, &[out, input])?;
        self.merge_lora(&wname, &mut w, out)?;
        self.pack_check(&wname, &w)?;
        let b = if bias {
            Some(self.tensor(&format!("{rel}.bias"), &[out])?)
        } else {
            None
        };
        let w = PackedB::from_nk(&w, out, input, self.dtype);
        self.bytes += w.size_bytes();
        Ok(Linear { w, b })
    }

    /// A convolution from `rel.weight` (`cout x cin x k x k`, PyTorch's layout) and
    /// `rel.bias`.
    pub(crate) fn conv(
        &mut self,
        rel: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Conv2d> {
        let wname = format!("{rel}.weight");
        let mut w = self.tensor(&wname, &[cout, cin, k, k])?;
        self.merge_lora(&wname, &mut w, cout)?;
        self.pack_check(&wname, &w)?;
        let b = Some(self.tensor(&format!("{rel}.bias"), &[cout])?);
        // The packed inner index is (ky, kx, ci), matching the NHWC patches.
        let packed = PackedB::from_fn(k * k * cin, cout, self.dtype, |kk, co| {
            let (tap, ci) = (kk / cin, kk % cin);
            w[(co * cin + ci) * k * k + tap]
        });
        self.bytes += packed.size_bytes();
        Ok(Conv2d {
            w: packed,
            b,
            cin,
            cout,
            k,
            stride,
            pad,
        })
    }

    /// A norm's `rel.weight` and `rel.bias` of `c` values.
    pub(crate) fn norm(&mut self, rel: &str, c: usize, eps: f32) -> Result<Norm> {
        let gamma = self.tensor(&format!("{rel}.weight"), &[c])?;
        let beta = self.tensor(&format!("{rel}.bias"), &[c])?;
        Ok(Norm { gamma, beta, eps })
    }

    /// A loader for the names under `rel.` (sharing this one's store and counters through
    /// `f`).
    pub(crate) fn sub<T>(
        &mut self,
        rel: &str,
        f: impl FnOnce(&mut Loader<'_>) -> Result<T>,
    ) -> Result<T> {
        let saved = std::mem::take(&mut self.prefix);
        self.prefix = format!("{saved}{rel}.");
        let r = f(self);
        self.prefix = saved;
        r
    }
}

impl Linear {
    /// `rows` input rows (each of the layer's input size) to `rows` output rows.
    pub(crate) fn forward(&self, ctx: Ctx, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * self.w.n];
        kernels::gemm(
            ctx.variant,
            &RowsA {
                data: x,
                rows,
                k: self.w.k,
                lda: self.w.k,
            },
            &self.w,
            self.b.as_deref(),
            &mut out,
            true,
        );
        out
    }

    /// Output features.
    pub(crate) fn out(&self) -> usize {
        self.w.n
    }
}

impl Conv2d {
    /// The convolution of a batch of NHWC images (zero padding on every side).
    pub(crate) fn forward(&self, ctx: Ctx, x: &Act) -> Act {
        debug_assert_eq!(x.c, self.cin);
        let oh = (x.h + 2 * self.pad - self.k) / self.stride + 1;
        let ow = (x.w + 2 * self.pad - self.k) / self.stride + 1;
        self.forward_sized(ctx, x, self.pad, oh, ow)
    }

    /// The convolution with `pad` zeros on the top and left and as many output pixels as
    /// asked (the VAE encoder pads only the bottom and right before its stride-2 convs).
    pub(crate) fn forward_sized(&self, ctx: Ctx, x: &Act, pad: usize, oh: usize, ow: usize) -> Act {
        let a = Im2colA {
            input: &x.data,
            batch: x.n,
            h: x.h,
            w: x.w,
            c: x.c,
            kh: self.k,
            kw: self.k,
            stride: self.stride,
            pad,
            oh,
            ow,
        };
        let mut out = vec![0.0; x.n * oh * ow * self.cout];
        kernels::gemm(ctx.variant, &a, &self.w, self.b.as_deref(), &mut out, true);
        Act::new(out, x.n, oh, ow, self.cout)
    }
}
