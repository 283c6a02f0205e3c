//! LoRA: low-rank weight deltas (`W += scale * alpha / rank * up @ down`) merged into the
//! weights at load time, from the two key layouts in circulation:
//!
//! - **kohya** (sd-scripts, A1111, ComfyUI): `lora_unet_<module>.lora_down.weight`,
//!   `.lora_up.weight` and `.alpha`, where `<module>` is the diffusers module path with
//!   dots as underscores (`down_blocks_0_attentions_0_…`) or, for SDXL, the LDM path
//!   (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`); text encoders are `lora_te_`
//!   (SD 1.x/2.x), `lora_te1_` and `lora_te2_` (SDXL);
//! - **diffusers / PEFT**: `unet.<module>.lora_A.weight` and `.lora_B.weight` (or the
//!   older `.lora.down.weight`/`.lora.up.weight` and `processor.to_q_lora.down.weight`),
//!   `text_encoder.…`, `text_encoder_2.…`. PEFT files carry no alpha: it is taken as the
//!   rank (a factor of 1) unless an `.alpha` tensor is present.
//!
//! Convolution LoRAs (LoCon: `down` of `rank x cin x k x k`, `up` of `cout x rank x 1 x 1`)
//! merge the same way. Other adapter kinds (LoHa, LoKr, DoRA) are refused. Every delta in
//! a file must land on a weight of the model: a LoRA made for another architecture is an
//! error, not a silent no-op. The merge is one fixed-order sum per weight value, so a
//! LoRA changes the output deterministically, and loading without it restores the
//! original weights exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::safetensors::SafeFile;

/// A LoRA file to merge and its strength.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraFile {
    /// The `.safetensors` file (verified by the package layer).
    pub path: PathBuf,
    /// Multiplies the delta (1 is the trained strength; 0 leaves the model unchanged).
    pub scale: f32,
}

#[derive(Debug)]
struct Delta {
    /// `rank x rest`.
    down: Vec<f32>,
    /// `out x rank`.
    up: Vec<f32>,
    rank: usize,
    factor: f32,
}

/// The deltas of one or more LoRA files, by the internal name of the weight they change.
#[derive(Debug, Default)]
pub(crate) struct LoraSet {
    deltas: BTreeMap<String, Vec<Delta>>,
    merged: Mutex<HashSet<String>>,
}

/// Which LoRA module names mean which internal weight.
pub(crate) struct Resolver {
    /// kohya module key (`lora_unet_down_blocks_0_…`) to internal module name
    /// (`unet.down_blocks.0.…`, without `.weight`).
    kohya: HashMap<String, String>,
    /// Internal module names.
    modules: HashSet<String>,
}

impl Resolver {
    /// Builds the lookup from the model's internal weight names and, for the UNet, their
    /// LDM names (`ldm_unet`: internal module name to LDM module name).
    pub(crate) fn new(weights: &[&str], ldm_unet: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut kohya = HashMap::new();
        let mut modules = HashSet::new();
        for w in weights {
            let Some(module) = w.strip_suffix(".weight") else {
                continue;
            };
            modules.insert(module.to_owned());
            let (comp, path) = module.split_once('.').unwrap_or((module, ""));
            let tags: &[&str] = match comp {
                "unet" => &["lora_unet_"],
                "text_encoder" => &["lora_te_", "lora_te1_"],
                "text_encoder_2" => &["lora_te2_"],
                _ => &[],
            };
            for tag in tags {
                kohya.insert(
                    format!("{tag}{}", path.replace('.', "_")),
                    module.to_owned(),
                );
            }
            if comp == "unet"
                && let Some(ldm) = ldm_unet(path)
            {
                kohya.insert(
                    format!("lora_unet_{}", ldm.replace('.', "_")),
                    module.to_owned(),
                );
            }
        }
        Self { kohya, modules }
    }

    fn module(&self, name: &str) -> Option<String> {
        if let Some(m) = self.kohya.get(name) {
            return Some(m.clone());
        }
        let name = name.strip_prefix("base_model.model.").unwrap_or(name);
        // diffusers' attention processor form: `attn1.processor.to_q_lora` is `attn1.to_q`.
        let name = name.replace(".processor.", ".");
        let name = ["_lora"].iter().fold(name, |n, s| {
            n.strip_suffix(s).map(str::to_owned).unwrap_or(n)
        });
        if self.modules.contains(&name) {
            return Some(name);
        }
        // PEFT files of a bare UNet have no component prefix.
        let unet = format!("unet.{name}");
        self.modules.contains(&unet).then_some(unet)
    }
}

/// A tensor's shape and values.
type Read = (Vec<usize>, Vec<f32>);

/// One module's down and up matrices and alpha, as found in a file.
type Parts = (Option<Read>, Option<Read>, Option<f32>);

fn read(st: &SafeFile, key: &str) -> Result<Read> {
    let (shape, data) = st
        .read_f32(key)
        .map_err(|e| Error::InvalidLora(e.to_string()))?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidLora(format!(
            "{key}: holds a non-finite value"
        )));
    }
    Ok((shape, data))
}

/// The (module, role) of a LoRA tensor key: role `down`, `up` or `alpha`.
fn split_key(key: &str) -> Option<(&str, &'static str)> {
    const SUFFIXES: [(&str, &str); 8] = [
        (".lora_down.weight", "down"),
        (".lora_up.weight", "up"),
        (".lora_A.weight", "down"),
        (".lora_B.weight", "up"),
        (".lora.down.weight", "down"),
        (".lora.up.weight", "up"),
        (".down.weight", "down"),
        (".up.weight", "up"),
    ];
    for (s, role) in SUFFIXES {
        if let Some(m) = key.strip_suffix(s) {
            return Some((m, role));
        }
    }
    key.strip_suffix(".alpha").map(|m| (m, "alpha"))
}

impl LoraSet {
    /// Reads `files` and resolves every delta to a weight of the model.
    pub(crate) fn load(files: &[LoraFile], resolver: &Resolver) -> Result<Self> {
        let mut set = LoraSet::default();
        for f in files {
            if !f.scale.is_finite() {
                return Err(Error::InvalidLora(format!(
                    "{}: the scale must be a finite number",
                    f.path.display()
                )));
            }
            if !f.path.is_file() {
                return Err(Error::Io {
                    path: f.path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            let st = SafeFile::open(&f.path).map_err(|e| Error::InvalidLora(e.to_string()))?;
            let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
            let names: Vec<String> = st.tensors().keys().cloned().collect();
            for key in names {
                if ["hada_", "lokr_", "dora_scale", ".diff", "lora_mid"]
                    .iter()
                    .any(|k| key.contains(k))
                {
                    return Err(Error::InvalidLora(format!(
                        "{}: {key} belongs to an adapter kind Aura does not merge (only LoRA and LoCon)",
                        f.path.display()
                    )));
                }
                let Some((module, role)) = split_key(&key) else {
                    return Err(Error::InvalidLora(format!(
                        "{}: unrecognised key {key}",
                        f.path.display()
                    )));
                };
                let entry = parts.entry(module.to_owned()).or_default();
                match role {
                    "down" => entry.0 = Some(read(&st, &key)?),
                    "up" => entry.1 = Some(read(&st, &key)?),
                    _ => {
                        let (_, v) = read(&st, &key)?;
                        entry.2 =
                            Some(*v.first().ok_or_else(|| {
                                Error::InvalidLora(format!("{key}: empty alpha"))
                            })?);
                    }
                }
            }
            for (module, (down, up, alpha)) in parts {
                let (Some((ds, down)), Some((us, up))) = (down, up) else {
                    return Err(Error::InvalidLora(format!(
                        "{}: {module} lacks its down or up matrix",
                        f.path.display()
                    )));
                };
                let rank = *ds.first().unwrap_or(&0);
                if rank == 0 || us.len() < 2 || us[1] != rank || us[2..].iter().any(|&d| d != 1) {
                    return Err(Error::InvalidLora(format!(
                        "{}: {module} has down {ds:?} and up {us:?}, which do not compose",
                        f.path.display()
                    )));
                }
                let target = resolver.module(&module).ok_or_else(|| {
                    Error::InvalidLora(format!(
                        "{}: {module} matches no weight of this model; hint: the lora was made for another architecture",
                        f.path.display()
                    ))
                })?;
                let factor = f.scale * alpha.unwrap_or(rank as f32) / rank as f32;
                set.deltas
                    .entry(format!("{target}.weight"))
                    .or_default()
                    .push(Delta {
                        down,
                        up,
                        rank,
                        factor,
                    });
            }
        }
        Ok(set)
    }

    /// Adds the deltas for `weight` (an internal name; `out` rows) into `w`, in file order,
    /// each value `w += factor * sum_r up[o][r] * down[r][i]` summed in increasing `r`.
    pub(crate) fn merge_into(&self, weight: &str, w: &mut [f32], out: usize) -> Result<()> {
        let Some(deltas) = self.deltas.get(weight) else {
            return Ok(());
        };
        let rest = w.len() / out.max(1);
        for d in deltas {
            if d.up.len() != out * d.rank || d.down.len() != d.rank * rest {
                return Err(Error::InvalidLora(format!(
                    "the delta for {weight} is {}x{} but the weight is {out}x{rest}; hint: the lora was made for another model",
                    d.up.len() / d.rank,
                    d.down.len() / d.rank
                )));
            }
            for o in 0..out {
                let row = &mut w[o * rest..(o + 1) * rest];
                let ups = &d.up[o * d.rank..(o + 1) * d.rank];
                for (i, v) in row.iter_mut().enumerate() {
                    let mut s = 0.0f32;
                    for (r, &u) in ups.iter().enumerate() {
                        s = u.mul_add(d.down[r * rest + i], s);
                    }
                    *v += d.factor * s;
                }
            }
        }
        self.merged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(weight.to_owned());
        Ok(())
    }

    /// The weights that have deltas but were never loaded (none, after a whole model).
    pub(crate) fn unmerged(&self) -> Vec<String> {
        let merged = self
            .merged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.deltas
            .keys()
            .filter(|k| !merged.contains(*k))
            .cloned()
            .collect()
    }

    /// Whether any delta was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }
}
