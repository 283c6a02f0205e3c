//! The tiny model's noise schedule and its deterministic DDIM sampler.
//!
//! Continuous time `t` in [0, 1] with the cosine schedule `α = cos(πt/2)`, `σ = sin(πt/2)`
//! (so `α² + σ² = 1`), the denoiser predicting the velocity `v = α ε − σ x₀`. This is a
//! small, self-contained scheduler for Aura's own model; the Stable Diffusion engine's
//! schedulers (discrete DDPM time steps) live beside it and may absorb it later.
#![forbid(unsafe_code)]

use super::math;

/// `(α, σ)` at time `t`.
pub(crate) fn alpha_sigma(t: f32) -> (f32, f32) {
    let (s, c) = math::sin_cos(std::f64::consts::FRAC_PI_2 * f64::from(t.clamp(0.0, 1.0)));
    (c as f32, s as f32)
}

/// The loss weight of a v-prediction at time `t`: `clamp(SNR, 1, γ) / (SNR + 1)`.
///
/// A v-prediction's squared error is the x₀ error times `SNR + 1`, so this weighs x₀
/// errors by `clamp(SNR, 1, γ)`: like min-SNR-γ (Hang et al., 2023) it keeps the nearly
/// noise-free steps from dominating, but unlike it (whose x₀ weight `min(SNR, γ)` vanishes
/// at pure noise) it keeps the noisiest steps, where the prompt alone decides what the
/// picture shows, at full weight. That is what a model that must draw the named emoji
/// needs most.
pub(crate) fn loss_weight(t: f32, gamma: f32) -> f32 {
    let (a, s) = alpha_sigma(t);
    let snr = (a * a) / (s * s).max(1e-12);
    snr.clamp(1.0, gamma.max(1.0)) / (snr + 1.0)
}

/// The time steps a sampler visits: `1 = t₀ > t₁ > … > t_steps = 0`, evenly spaced.
pub(crate) fn timesteps(steps: usize) -> Vec<f32> {
    (0..=steps).map(|i| 1.0 - i as f32 / steps as f32).collect()
}

/// One deterministic DDIM step (η = 0) from `t` to `s < t` given the predicted velocity:
/// `x̂₀ = α z − σ v̂`, `ε̂ = σ z + α v̂`, `z_s = α_s x̂₀ + σ_s ε̂`.
pub(crate) fn ddim_step(z: &mut [f32], v: &[f32], t: f32, s: f32) {
    let (a, sg) = alpha_sigma(t);
    let (a2, s2) = alpha_sigma(s);
    for (z, v) in z.iter_mut().zip(v) {
        let x0 = a * *z - sg * v;
        let eps = sg * *z + a * v;
        *z = a2 * x0 + s2 * eps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_prediction_lands_on_the_data() {
        // With the true velocity at every step, DDIM recovers x₀ from pure noise.
        let x0 = [0.3f32, -1.2, 2.0];
        let eps = [1.0f32, 0.5, -0.7];
        let ts = timesteps(10);
        let mut z = eps.to_vec();
        for w in ts.windows(2) {
            let (a, s) = alpha_sigma(w[0]);
            let v: Vec<f32> = x0.iter().zip(&eps).map(|(x, e)| a * e - s * x).collect();
            ddim_step(&mut z, &v, w[0], w[1]);
        }
        for (z, x) in z.iter().zip(x0) {
            assert!((z - x).abs() < 1e-5, "{z} vs {x}");
        }
        assert!(loss_weight(0.01, 5.0) < loss_weight(0.5, 5.0));
        // At pure noise the x₀ error keeps weight 1 (the v error weight 1/(SNR+1) → 1).
        assert!((loss_weight(1.0, 5.0) - 1.0).abs() < 1e-6);
    }
}
