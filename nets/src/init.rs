//! Weight initialisation from a seeded generator.
//!
//! - He (Kaiming) normal, std = sqrt(2 / fan_in): He et al., "Delving Deep
//!   into Rectifiers", ICCV 2015, eq. 10; for layers followed by ReLU.
//! - Glorot (Xavier) uniform, limit = sqrt(6 / (fan_in + fan_out)): Glorot
//!   and Bengio, "Understanding the difficulty of training deep feedforward
//!   neural networks", AISTATS 2010, eq. 16; the Keras default that
//!   ApproxTrain's LeNet models use.
//!
//! Biases start at zero.

use rand::Rng;

/// How a weight tensor is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// He normal: N(0, 2 / fan_in).
    HeNormal,
    /// Glorot uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)).
    GlorotUniform,
}

/// A standard normal sample by the Box–Muller transform (Box and Muller,
/// 1958), computed in f64 so the result does not depend on libm's f32
/// rounding.
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.gen::<f64>();
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Fill `w` according to `init` for a layer with these fan-in and fan-out.
pub fn fill<R: Rng + ?Sized>(
    w: &mut [f32],
    init: Init,
    fan_in: usize,
    fan_out: usize,
    rng: &mut R,
) {
    match init {
        Init::HeNormal => {
            let std = (2.0 / fan_in.max(1) as f64).sqrt();
            for v in w {
                *v = (standard_normal(rng) * std) as f32;
            }
        }
        Init::GlorotUniform => {
            let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
            for v in w {
                *v = ((rng.gen::<f64>() * 2.0 - 1.0) * limit) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn moments(w: &[f32]) -> (f64, f64) {
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn he_normal_has_variance_two_over_fan_in() {
        let seed = rand::random::<u64>();
        eprintln!("seed {seed}");
        let mut w = vec![0.0f32; 40_000];
        fill(
            &mut w,
            Init::HeNormal,
            50,
            10,
            &mut ChaCha8Rng::seed_from_u64(seed),
        );
        let (mean, var) = moments(&w);
        // Standard errors: 0.2/sqrt(40000) = 0.001 for the mean, about 0.7 %
        // for the variance; the bounds are 5 of them.
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!(
            (var / 0.04 - 1.0).abs() < 0.035,
            "variance {var}, want 0.04"
        );
    }

    #[test]
    fn glorot_uniform_stays_within_its_limit_with_the_uniform_variance() {
        let seed = rand::random::<u64>();
        eprintln!("seed {seed}");
        let mut w = vec![0.0f32; 40_000];
        fill(
            &mut w,
            Init::GlorotUniform,
            30,
            30,
            &mut ChaCha8Rng::seed_from_u64(seed),
        );
        let limit = (6.0f64 / 60.0).sqrt();
        // Rounding to f32 may step one ulp past the limit.
        assert!(w.iter().all(|&v| (v as f64).abs() <= limit * (1.0 + 1e-7)));
        let (mean, var) = moments(&w);
        let want = limit * limit / 3.0;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!(
            (var / want - 1.0).abs() < 0.03,
            "variance {var}, want {want}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_weights() {
        let seed = rand::random::<u64>();
        eprintln!("seed {seed}");
        let draw = |s| {
            let mut w = vec![0.0f32; 100];
            fill(
                &mut w,
                Init::HeNormal,
                10,
                10,
                &mut ChaCha8Rng::seed_from_u64(s),
            );
            w
        };
        assert_eq!(draw(seed), draw(seed));
        assert_ne!(draw(seed), draw(seed ^ 1));
    }
}
