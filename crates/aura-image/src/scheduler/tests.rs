//! Scheduler tests: timesteps and sigmas against the published Stable Diffusion values,
//! convergence with an oracle model, determinism and bad input.

use super::*;

fn sd() -> NoiseSchedule {
    NoiseSchedule::default()
}

#[test]
fn timesteps_follow_each_spacing() {
    let check = |spacing, n, want: &[u32]| {
        let s = NoiseSchedule { spacing, ..sd() };
        assert_eq!(s.timesteps(n).unwrap(), want, "{spacing:?} n={n}");
    };
    check(Spacing::Leading, 4, &[751, 501, 251, 1]);
    check(Spacing::Leading, 1, &[1]);
    check(Spacing::Trailing, 4, &[999, 749, 499, 249]);
    check(Spacing::Trailing, 1, &[999]);
    check(Spacing::Linspace, 4, &[999, 666, 333, 0]);
    assert_eq!(lcm_timesteps(1000, 4).unwrap(), [999, 759, 519, 279]);
    assert_eq!(lcm_timesteps(1000, 1).unwrap(), [999]);
}

#[test]
fn sigmas_match_stable_diffusion() {
    // k-diffusion's published range for Stable Diffusion: 0.0292 to 14.6146.
    let ac = sd().alphas_cumprod();
    let sigma = |a: f64| ((1.0 - a) / a).sqrt();
    assert!(
        (sigma(ac[999]) - 14.6146).abs() < 1e-3,
        "{}",
        sigma(ac[999])
    );
    assert!((sigma(ac[0]) - 0.0292).abs() < 1e-3, "{}", sigma(ac[0]));
    assert!((ac[0] - 0.99915).abs() < 1e-12);
}

const ALL: [SchedulerKind; 6] = [
    SchedulerKind::Ddim { eta: 0.0 },
    SchedulerKind::Ddim { eta: 1.0 },
    SchedulerKind::Euler,
    SchedulerKind::EulerAncestral,
    SchedulerKind::DpmPp2M,
    SchedulerKind::Lcm,
];

/// Runs a whole sampling loop with a model that knows the clean latent and answers with
/// the exact epsilon (or v) for whatever it is shown.
fn run_oracle(kind: SchedulerKind, schedule: &NoiseSchedule, steps: usize, seed: u64) -> Vec<f32> {
    let x0: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 0.8).collect();
    let ac = schedule.alphas_cumprod();
    let mut sched = kind.build(schedule, steps).unwrap();
    let mut rng = AuraRng::new(seed);
    let mut x = rng.normal_vec(x0.len());
    let s0 = sched.init_noise_sigma();
    x.iter_mut().for_each(|v| *v *= s0);
    let mut last_eps = 0.0f64;
    for i in 0..sched.timesteps().len() {
        let t = sched.timesteps()[i] as usize;
        let (sa, s1a) = (ac[t].sqrt(), (1.0 - ac[t]).sqrt());
        let scale = f64::from(sched.input_scale(i));
        let out: Vec<f32> = x
            .iter()
            .zip(&x0)
            .map(|(&xv, &c)| {
                let xin = f64::from(xv) * scale;
                let eps = (xin - sa * f64::from(c)) / s1a;
                last_eps = last_eps.max(eps.abs());
                match schedule.prediction {
                    Prediction::Epsilon => eps as f32,
                    Prediction::V => (sa * eps - s1a * f64::from(c)) as f32,
                }
            })
            .collect();
        sched.step(i, &out, &mut x, &mut rng).unwrap();
    }
    let err = x
        .iter()
        .zip(&x0)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        err < ddim_residual(kind, schedule, last_eps) + 2e-3,
        "{kind:?} {:?} steps={steps}: off by {err}",
        schedule.prediction
    );
    x
}

/// DDIM, as in Stable Diffusion (`set_alpha_to_one = false`), ends at `alpha_bar_0`, not
/// at 1, so its last step leaves up to `sqrt(1 - alpha_bar_0)` times the last epsilon in
/// the latent; every other sampler ends at sigma 0.
fn ddim_residual(kind: SchedulerKind, schedule: &NoiseSchedule, eps: f64) -> f32 {
    match kind {
        SchedulerKind::Ddim { .. } => {
            ((1.0 - schedule.alphas_cumprod()[0]).sqrt() * eps * 1.01) as f32
        }
        _ => 0.0,
    }
}

#[test]
fn every_sampler_lands_on_the_clean_latent_with_an_oracle_model() {
    for kind in ALL {
        for prediction in [Prediction::Epsilon, Prediction::V] {
            for steps in [1, 4, 20] {
                let schedule = NoiseSchedule { prediction, ..sd() };
                run_oracle(kind, &schedule, steps, 5);
            }
        }
    }
}

#[test]
fn samplers_are_deterministic_and_noisy_ones_follow_the_seed() {
    // A model that is wrong on purpose, so the ancestral noise shows in the result.
    let run = |kind: SchedulerKind, seed: u64| {
        let mut sched = kind.build(&sd(), 6).unwrap();
        let mut rng = AuraRng::new(seed);
        let mut x = vec![0.5f32; 32];
        for i in 0..6 {
            let out: Vec<f32> = x.iter().map(|v| v * 0.1 + 0.2).collect();
            sched.step(i, &out, &mut x, &mut rng).unwrap();
        }
        x
    };
    for kind in ALL {
        assert_eq!(run(kind, 1), run(kind, 1), "{kind:?}");
        let noisy = matches!(
            kind,
            SchedulerKind::EulerAncestral | SchedulerKind::Lcm | SchedulerKind::Ddim { eta: 1.0 }
        );
        assert_eq!(run(kind, 1) != run(kind, 2), noisy, "{kind:?}");
    }
}

#[test]
fn add_noise_then_sampling_recovers_the_image_for_img2img() {
    let schedule = sd();
    for kind in ALL {
        let mut sched = kind.build(&schedule, 10).unwrap();
        let clean = vec![0.3f32; 8];
        let noise = AuraRng::new(9).normal_vec(8);
        let mut x = vec![0.0; 8];
        let start = 5;
        sched.add_noise(start, &clean, &noise, &mut x).unwrap();
        assert!(x.iter().zip(&clean).any(|(a, b)| a != b));
        let ac = schedule.alphas_cumprod();
        let mut rng = AuraRng::new(1);
        let mut last_eps = 0.0f64;
        for i in start..sched.timesteps().len() {
            let t = sched.timesteps()[i] as usize;
            let (sa, s1a) = (ac[t].sqrt() as f32, (1.0 - ac[t]).sqrt() as f32);
            let scale = sched.input_scale(i);
            let out: Vec<f32> = x
                .iter()
                .zip(&clean)
                .map(|(&v, &c)| (v * scale - sa * c) / s1a)
                .collect();
            last_eps = out.iter().fold(last_eps, |m, v| m.max(f64::from(v.abs())));
            sched.step(i, &out, &mut x, &mut rng).unwrap();
        }
        let err = x
            .iter()
            .zip(&clean)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err < ddim_residual(kind, &schedule, last_eps) + 2e-3,
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn bad_requests_are_errors_not_panics() {
    assert!(SchedulerKind::Euler.build(&sd(), 0).is_err());
    assert!(SchedulerKind::Euler.build(&sd(), 1001).is_err());
    assert!(SchedulerKind::Lcm.build(&sd(), 51).is_err());
    assert!(SchedulerKind::Ddim { eta: 1.5 }.build(&sd(), 4).is_err());
    let bad = NoiseSchedule {
        beta_end: 1.5,
        ..sd()
    };
    assert!(SchedulerKind::Euler.build(&bad, 4).is_err());
    let mut s = SchedulerKind::Euler.build(&sd(), 2).unwrap();
    let mut rng = AuraRng::new(0);
    let mut x = vec![0.0; 4];
    assert!(s.step(2, &[0.0; 4], &mut x, &mut rng).is_err());
    assert!(s.step(0, &[0.0; 3], &mut x, &mut rng).is_err());
    assert!(s.add_noise(0, &[0.0; 4], &[0.0; 3], &mut x).is_err());
}

#[test]
fn names_round_trip() {
    for kind in [
        SchedulerKind::Ddim { eta: 0.0 },
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmPp2M,
        SchedulerKind::Lcm,
    ] {
        assert_eq!(SchedulerKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(SchedulerKind::from_name("karras"), None);
}
