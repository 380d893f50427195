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
