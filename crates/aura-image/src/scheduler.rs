//! Aura's own diffusion schedulers: DDIM, Euler, Euler ancestral, DPM++ 2M and LCM (which,
//! with one step, is the single-step sampler of SD-Turbo and SDXL-Turbo).
//!
//! A scheduler is a small state machine over a fixed list of model timesteps. The caller
//! (the image pipeline, or the trainer's sampler) runs this loop:
//!
//! ```
//! use aura_image::{AuraRng, NoiseSchedule, SchedulerKind};
//! # fn model(_x: &[f32], _t: u32) -> Vec<f32> { vec![0.0; 16] }
//! let mut sched = SchedulerKind::EulerAncestral.build(&NoiseSchedule::default(), 4).unwrap();
//! let mut rng = AuraRng::new(42);
//! // The initial latent: unit noise scaled by the scheduler's initial sigma.
//! let mut x = rng.normal_vec(16);
//! let s0 = sched.init_noise_sigma();
//! x.iter_mut().for_each(|v| *v *= s0);
//! for i in 0..sched.timesteps().len() {
//!     let scale = sched.input_scale(i);
//!     let input: Vec<f32> = x.iter().map(|v| v * scale).collect();
//!     let out = model(&input, sched.timesteps()[i]); // the model's epsilon (or v)
//!     sched.step(i, &out, &mut x, &mut rng).unwrap();
//! }
//! // `x` is now the denoised latent.
//! ```
//!
//! # Determinism
//!
//! Coefficients are computed in `f64` from the [`NoiseSchedule`] and rounded to `f32`
//! once; each latent value is then updated on its own with `f32` multiplies and adds in a
//! fixed order (never fused), so the result does not depend on threads or vector width.
//! Noise comes only from the [`AuraRng`] passed to [`Scheduler::step`], drawn for the
//! whole latent in order, and only on the steps the documentation of each kind names.
//!
//! Euler, Euler ancestral and DPM++ 2M work in k-diffusion's sigma space: the latent
//! starts at `sigma_max` times unit noise, the model sees it scaled by
//! `1 / sqrt(sigma^2 + 1)`. DDIM and LCM work in the variance-preserving space (initial
//! sigma 1, no input scaling).

use crate::error::{Error, Result};
use crate::rng::AuraRng;

/// How the training betas grow with the timestep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `beta_t` linear from start to end.
    Linear,
    /// `sqrt(beta_t)` linear from `sqrt(start)` to `sqrt(end)` (Stable Diffusion's).
    ScaledLinear,
}

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The added noise (SD 1.x, SD 2.x base, SDXL, the Turbo models).
    Epsilon,
    /// The velocity `sqrt(a) * noise - sqrt(1 - a) * x0` (SD 2.x 768-v).
    V,
}

/// How inference timesteps are spread over the training timesteps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// `t_i = i * (T / n) + offset`, descending (Stable Diffusion's default).
    Leading,
    /// `t_i = round(T - i * T / n) - 1`: always starts at `T - 1` (the Turbo models).
    Trailing,
    /// `round(linspace(0, T - 1, n))`, descending.
    Linspace,
}

/// The training noise schedule of a model and how to space inference steps over it.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// How betas go from first to last.
    pub beta_schedule: BetaSchedule,
    /// Training timesteps (`T`, 1000 for every Stable Diffusion model).
    pub train_steps: u32,
    /// What the network predicts.
    pub prediction: Prediction,
    /// How inference timesteps are chosen.
    pub spacing: Spacing,
    /// Added to leading timesteps (1 for Stable Diffusion).
    pub steps_offset: u32,
}

impl Default for NoiseSchedule {
    /// Stable Diffusion 1.x, 2.x base and XL: scaled-linear betas from 0.00085 to 0.012
    /// over 1000 steps, epsilon prediction, leading spacing with offset 1.
    fn default() -> Self {
        Self {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            train_steps: 1000,
            prediction: Prediction::Epsilon,
            spacing: Spacing::Leading,
            steps_offset: 1,
        }
    }
}

impl NoiseSchedule {
    /// `alpha_bar_t` (the cumulative product of `1 - beta`) for every training timestep.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let t = self.train_steps as usize;
        let denom = (t.max(2) - 1) as f64;
        let mut acc = 1.0f64;
        (0..t)
            .map(|i| {
                let f = i as f64 / denom;
                let beta = match self.beta_schedule {
                    BetaSchedule::Linear => self.beta_start + f * (self.beta_end - self.beta_start),
                    BetaSchedule::ScaledLinear => {
                        let (a, b) = (self.beta_start.sqrt(), self.beta_end.sqrt());
                        (a + f * (b - a)).powi(2)
                    }
                };
                acc *= 1.0 - beta;
                acc
            })
            .collect()
    }

    /// The `n` model timesteps of an `n`-step run, descending.
    pub fn timesteps(&self, n: usize) -> Result<Vec<u32>> {
        let t = self.train_steps;
        if n == 0 || n > t as usize {
            return Err(Error::request(format!(
                "steps must be between 1 and {t}, not {n}"
            )));
        }
        let n32 = n as u32;
        let ts: Vec<u32> = match self.spacing {
            Spacing::Leading => {
                let ratio = t / n32;
                (0..n32)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset).min(t - 1))
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = f64::from(t) / n as f64;
                (0..n)
                    .map(|i| ((f64::from(t) - i as f64 * ratio).round() as u32).saturating_sub(1))
                    .collect()
            }
            Spacing::Linspace => (0..n)
                .rev()
                .map(|i| {
                    let f = if n == 1 {
                        0.0
                    } else {
                        i as f64 / (n - 1) as f64
                    };
                    (f * f64::from(t - 1)).round() as u32
                })
                .collect(),
        };
        Ok(ts)
    }

    fn check(&self) -> Result<()> {
        let ok = self.train_steps >= 2
            && self.beta_start.is_finite()
            && self.beta_end.is_finite()
            && self.beta_start > 0.0
            && self.beta_end < 1.0
            && self.beta_start <= self.beta_end;
        if ok {
            Ok(())
        } else {
            Err(Error::request(
                "the noise schedule needs 0 < beta_start <= beta_end < 1 and at least 2 training steps",
            ))
        }
    }
}

/// Which sampler to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SchedulerKind {
    /// DDIM; `eta` 0 is deterministic given the initial noise, `eta` > 0 draws noise on
    /// every step but the last.
    Ddim {
        /// The amount of fresh noise (0 to 1).
        eta: f32,
    },
    /// Euler (k-diffusion's `sample_euler`); draws no noise.
    Euler,
    /// Euler ancestral (`sample_euler_ancestral`, eta 1); draws noise on every step but
    /// the last.
    EulerAncestral,
    /// DPM++ 2M (`sample_dpmpp_2m`); draws no noise.
    DpmPp2M,
    /// Latent consistency sampling (LCM, 50 original steps); with one step, the single
    /// step of SD-Turbo and SDXL-Turbo. Draws noise on every step but the last.
    Lcm,
}

impl SchedulerKind {
    /// The lowercase name used in requests and receipts (`ddim`, `euler`, `euler_a`,
    /// `dpmpp_2m`, `lcm`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim { .. } => "ddim",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler_a",
            Self::DpmPp2M => "dpmpp_2m",
            Self::Lcm => "lcm",
        }
    }

    /// Parses a name as [`SchedulerKind::name`] writes it (`ddim` with eta 0).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ddim" => Self::Ddim { eta: 0.0 },
            "euler" => Self::Euler,
            "euler_a" => Self::EulerAncestral,
            "dpmpp_2m" => Self::DpmPp2M,
            "lcm" => Self::Lcm,
            _ => return None,
        })
    }

    /// A scheduler of this kind for an `steps`-step run over `schedule`.
    pub fn build(self, schedule: &NoiseSchedule, steps: usize) -> Result<Box<dyn Scheduler>> {
        schedule.check()?;
        let ac = schedule.alphas_cumprod();
        Ok(match self {
            Self::Ddim { eta } => {
                if !(0.0..=1.0).contains(&eta) {
                    return Err(Error::request("ddim eta must be between 0 and 1"));
                }
                let timesteps = schedule.timesteps(steps)?;
                Box::new(Ddim {
                    prev: prev_timesteps(&timesteps, schedule.train_steps, steps),
                    timesteps,
                    ac,
                    eta: f64::from(eta),
                    prediction: schedule.prediction,
                })
            }
            Self::Lcm => {
                let timesteps = lcm_timesteps(schedule.train_steps, steps)?;
                Box::new(Lcm {
                    timesteps,
                    ac,
                    prediction: schedule.prediction,
                })
            }
            Self::Euler | Self::EulerAncestral | Self::DpmPp2M => {
                let timesteps = schedule.timesteps(steps)?;
                let mut sigmas: Vec<f64> = timesteps
                    .iter()
                    .map(|&t| {
                        let a = ac[t as usize];
                        ((1.0 - a) / a).sqrt()
                    })
                    .collect();
                sigmas.push(0.0);
                let kind = match self {
                    Self::Euler => KStep::Euler,
                    Self::EulerAncestral => KStep::Ancestral,
                    _ => KStep::DpmPp2M,
                };
                Box::new(KDiffusion {
                    kind,
                    timesteps,
                    sigmas,
                    prediction: schedule.prediction,
                    old_denoised: None,
                    last_step: None,
                })
            }
        })
    }
}

/// A diffusion sampler over a fixed list of timesteps. See the module documentation for
/// the loop that drives it. Implementations are deterministic: the same inputs and the
/// same [`AuraRng`] state give the same latent bit for bit.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// The model timesteps, one per step, descending.
    fn timesteps(&self) -> &[u32];

    /// What unit noise is multiplied by to make the initial latent of a text-to-image run.
    fn init_noise_sigma(&self) -> f32;

    /// What the latent is multiplied by before the model sees it at step `step`.
    fn input_scale(&self, step: usize) -> f32;

    /// Advances `sample` from step `step` to the next, given the model's output for it
    /// (after classifier-free guidance). Steps must be taken in order; a multistep
    /// sampler starts afresh when a step does not follow the previous one.
    fn step(
        &mut self,
        step: usize,
        model_output: &[f32],
        sample: &mut [f32],
        rng: &mut AuraRng,
    ) -> Result<()>;

    /// The noisy latent that step `step` expects, made from a clean latent and unit
    /// noise (image-to-image starts here).
    fn add_noise(&self, step: usize, clean: &[f32], noise: &[f32], out: &mut [f32]) -> Result<()>;
}

fn check_step(step: usize, steps: usize, a: usize, b: usize) -> Result<()> {
    if step >= steps {
        return Err(Error::request(format!(
            "step {step} is past the last of {steps} steps"
        )));
    }
    if a != b {
        return Err(Error::request(format!(
            "the model output has {a} values but the latent {b}"
        )));
    }
    Ok(())
}

/// The previous timestep of each DDIM step (`t - T / n`, or -1 past the end, which means
/// "alpha_bar = alpha_bar_0" as in Stable Diffusion's `set_alpha_to_one = false`).
fn prev_timesteps(ts: &[u32], train: u32, n: usize) -> Vec<i64> {
    let ratio = i64::from(train) / n as i64;
    ts.iter().map(|&t| i64::from(t) - ratio).collect()
}

fn lcm_timesteps(train: u32, n: usize) -> Result<Vec<u32>> {
    const ORIGINAL_STEPS: usize = 50;
    if n == 0 || n > ORIGINAL_STEPS {
        return Err(Error::request(format!(
            "lcm runs between 1 and {ORIGINAL_STEPS} steps, not {n}"
        )));
    }
    let c = train as usize / ORIGINAL_STEPS;
    // The 50 timesteps of the original schedule, descending: T-1, T-1-c, ...
    let origin: Vec<u32> = (1..=ORIGINAL_STEPS)
        .rev()
        .map(|i| (i * c - 1) as u32)
        .collect();
    let skip = ORIGINAL_STEPS / n;
    Ok(origin.iter().step_by(skip).take(n).copied().collect())
}

/// `x0` and `eps` from the model output in the variance-preserving space.
#[inline]
fn vp_x0_eps(pred: Prediction, sa: f32, s1a: f32, x: f32, out: f32) -> (f32, f32) {
    match pred {
        Prediction::Epsilon => ((x - s1a * out) / sa, out),
        Prediction::V => (sa * x - s1a * out, sa * out + s1a * x),
    }
}

/// DDIM (Song et al.), as diffusers' `DDIMScheduler` with `set_alpha_to_one = false`.
#[derive(Debug)]
struct Ddim {
    timesteps: Vec<u32>,
    prev: Vec<i64>,
    ac: Vec<f64>,
    eta: f64,
    prediction: Prediction,
}

impl Ddim {
    fn alpha_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.ac[t as usize]
        } else {
            self.ac[0]
        }
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[u32] {
        &self.timesteps
    }
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    fn input_scale(&self, _step: usize) -> f32 {
        1.0
    }
    fn step(&mut self, step: usize, out: &[f32], x: &mut [f32], rng: &mut AuraRng) -> Result<()> {
        check_step(step, self.timesteps.len(), out.len(), x.len())?;
        let a_t = self.ac[self.timesteps[step] as usize];
        let a_prev = self.alpha_at(self.prev[step]);
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = self.eta * variance.max(0.0).sqrt();
        let (sa, s1a) = (a_t.sqrt() as f32, (1.0 - a_t).sqrt() as f32);
        let c_x0 = a_prev.sqrt() as f32;
        let c_dir = (1.0 - a_prev - std * std).max(0.0).sqrt() as f32;
        let pred = self.prediction;
        for (xv, &o) in x.iter_mut().zip(out) {
            let (x0, eps) = vp_x0_eps(pred, sa, s1a, *xv, o);
            *xv = c_x0 * x0 + c_dir * eps;
        }
        if std > 0.0 && step + 1 < self.timesteps.len() {
            let s = std as f32;
            for xv in x.iter_mut() {
                *xv += s * rng.normal();
            }
        }
        Ok(())
    }
    fn add_noise(&self, step: usize, clean: &[f32], noise: &[f32], out: &mut [f32]) -> Result<()> {
        vp_add_noise(&self.ac, &self.timesteps, step, clean, noise, out)
    }
}

fn vp_add_noise(
    ac: &[f64],
    ts: &[u32],
    step: usize,
    clean: &[f32],
    noise: &[f32],
    out: &mut [f32],
) -> Result<()> {
    check_step(step, ts.len(), clean.len(), out.len())?;
    check_step(step, ts.len(), noise.len(), out.len())?;
    let a = ac[ts[step] as usize];
    let (sa, s1a) = (a.sqrt() as f32, (1.0 - a).sqrt() as f32);
    for ((o, &c), &n) in out.iter_mut().zip(clean).zip(noise) {
        *o = sa * c + s1a * n;
    }
    Ok(())
}

/// LCM (Luo et al.), as diffusers' `LCMScheduler` (50 original steps, timestep scaling
/// 10, sigma_data 0.5).
#[derive(Debug)]
struct Lcm {
    timesteps: Vec<u32>,
    ac: Vec<f64>,
    prediction: Prediction,
}

impl Scheduler for Lcm {
    fn timesteps(&self) -> &[u32] {
        &self.timesteps
    }
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    fn input_scale(&self, _step: usize) -> f32 {
        1.0
    }
    fn step(&mut self, step: usize, out: &[f32], x: &mut [f32], rng: &mut AuraRng) -> Result<()> {
        check_step(step, self.timesteps.len(), out.len(), x.len())?;
        let t = self.timesteps[step];
        let a_t = self.ac[t as usize];
        let scaled = f64::from(t) * 10.0;
        let c_skip = (0.25 / (scaled * scaled + 0.25)) as f32;
        let c_out = (scaled / (scaled * scaled + 0.25).sqrt()) as f32;
        let (sa, s1a) = (a_t.sqrt() as f32, (1.0 - a_t).sqrt() as f32);
        let pred = self.prediction;
        for (xv, &o) in x.iter_mut().zip(out) {
            let (x0, _) = vp_x0_eps(pred, sa, s1a, *xv, o);
            *xv = c_out * x0 + c_skip * *xv;
        }
        if let Some(&next) = self.timesteps.get(step + 1) {
            let a_prev = self.ac[next as usize];
            let (c_d, c_n) = (a_prev.sqrt() as f32, (1.0 - a_prev).sqrt() as f32);
            for xv in x.iter_mut() {
                *xv = c_d * *xv + c_n * rng.normal();
            }
        }
        Ok(())
    }
    fn add_noise(&self, step: usize, clean: &[f32], noise: &[f32], out: &mut [f32]) -> Result<()> {
        vp_add_noise(&self.ac, &self.timesteps, step, clean, noise, out)
    }
}

/// The update rule of a sigma-space sampler.
#[derive(Clone, Copy, Debug)]
enum KStep {
    Euler,
    Ancestral,
    DpmPp2M,
}

/// Euler, Euler ancestral and DPM++ 2M in k-diffusion's sigma space.
#[derive(Debug)]
struct KDiffusion {
    kind: KStep,
    timesteps: Vec<u32>,
    /// One sigma per step, then 0.
    sigmas: Vec<f64>,
    prediction: Prediction,
    /// DPM++ 2M's denoised latent from the previous step.
    old_denoised: Option<Vec<f32>>,
    last_step: Option<usize>,
}

impl KDiffusion {
    /// The model's estimate of the clean latent, in place of `out`.
    fn denoised(&self, sigma: f64, x: &[f32], out: &[f32]) -> Vec<f32> {
        match self.prediction {
            Prediction::Epsilon => {
                let s = sigma as f32;
                x.iter().zip(out).map(|(&xv, &o)| xv - s * o).collect()
            }
            Prediction::V => {
                let c_out = (-sigma / (sigma * sigma + 1.0).sqrt()) as f32;
                let c_skip = (1.0 / (sigma * sigma + 1.0)) as f32;
                x.iter()
                    .zip(out)
                    .map(|(&xv, &o)| o * c_out + xv * c_skip)
                    .collect()
            }
        }
    }
}

impl Scheduler for KDiffusion {
    fn timesteps(&self) -> &[u32] {
        &self.timesteps
    }
    fn init_noise_sigma(&self) -> f32 {
        self.sigmas[0] as f32
    }
    fn input_scale(&self, step: usize) -> f32 {
        let s = self.sigmas.get(step).copied().unwrap_or(0.0);
        (1.0 / (s * s + 1.0).sqrt()) as f32
    }
    fn step(&mut self, step: usize, out: &[f32], x: &mut [f32], rng: &mut AuraRng) -> Result<()> {
        check_step(step, self.timesteps.len(), out.len(), x.len())?;
        let (sigma, next) = (self.sigmas[step], self.sigmas[step + 1]);
        let denoised = self.denoised(sigma, x, out);
        match self.kind {
            KStep::Euler => {
                let (inv, dt) = ((1.0 / sigma) as f32, (next - sigma) as f32);
                for (xv, &d0) in x.iter_mut().zip(&denoised) {
                    let d = (*xv - d0) * inv;
                    *xv += d * dt;
                }
            }
            KStep::Ancestral => {
                let up = if next > 0.0 {
                    (next * next * (sigma * sigma - next * next) / (sigma * sigma))
                        .max(0.0)
                        .sqrt()
                        .min(next)
                } else {
                    0.0
                };
                let down = (next * next - up * up).max(0.0).sqrt();
                let (inv, dt) = ((1.0 / sigma) as f32, (down - sigma) as f32);
                for (xv, &d0) in x.iter_mut().zip(&denoised) {
                    let d = (*xv - d0) * inv;
                    *xv += d * dt;
                }
                if up > 0.0 {
                    let up = up as f32;
                    for xv in x.iter_mut() {
                        *xv += rng.normal() * up;
                    }
                }
            }
            KStep::DpmPp2M => {
                let ratio = (next / sigma) as f32;
                if next == 0.0 {
                    // The last step lands on the denoised latent exactly.
                    x.copy_from_slice(&denoised);
                } else {
                    let t = -sigma.ln();
                    let h = -next.ln() - t;
                    let c = (-(-h).exp_m1()) as f32;
                    let previous = match (&self.old_denoised, self.last_step) {
                        (Some(old), Some(last)) if last + 1 == step && step > 0 => Some(old),
                        _ => None,
                    };
                    match previous {
                        None => {
                            for (xv, &d0) in x.iter_mut().zip(&denoised) {
                                *xv = ratio * *xv + c * d0;
                            }
                        }
                        Some(old) => {
                            let h_last = t + self.sigmas[step - 1].ln();
                            let r = h_last / h;
                            let (a, b) = ((1.0 + 1.0 / (2.0 * r)) as f32, (1.0 / (2.0 * r)) as f32);
                            for ((xv, &d0), &o) in x.iter_mut().zip(&denoised).zip(old) {
                                let d = a * d0 - b * o;
                                *xv = ratio * *xv + c * d;
                            }
                        }
                    }
                }
                self.old_denoised = Some(denoised);
            }
        }
        self.last_step = Some(step);
        Ok(())
    }
    fn add_noise(&self, step: usize, clean: &[f32], noise: &[f32], out: &mut [f32]) -> Result<()> {
        check_step(step, self.timesteps.len(), clean.len(), out.len())?;
        check_step(step, self.timesteps.len(), noise.len(), out.len())?;
        let s = self.sigmas[step] as f32;
        for ((o, &c), &n) in out.iter_mut().zip(clean).zip(noise) {
            *o = c + s * n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
