//! Operand statistics of one layer (`approxtrain stats`): what a
//! multiplier actually sees inside a trained network, against the uniform
//! operands of a plain characterization.
//!
//! For one batch, the layer's input `x`, its weights `W` and the gradient
//! of the loss with respect to its output `dy` are taken from the network
//! (forward and backward under the network's own plan). The three products
//! of the layer multiply (DESIGN.md's operand order):
//!
//! | role | first operand | second operand |
//! |---|---|---|
//! | forward (`fwd`) | `x` | `W` |
//! | input gradient (`dx`) | `dy` | `W` |
//! | weight gradient (`dw`) | `x` | `dy` |
//!
//! Per role and operand, the histograms count the operand tensor's
//! elements: biased FP32 exponent (0 = zero or subnormal, 255 = infinity or
//! NaN) and, for normal values, the `m`-bit table index (top `m` fraction
//! bits). The *weighted characterization* needs the joint distribution of
//! the index pairs that reach the table, which depends on the layer's
//! structure (a convolution multiplies each input with many weights, padding
//! included). It is recorded, not modelled: the layer's product runs once
//! more with a `direct` multiplier whose model counts every pair it is
//! called with. That model is reached exactly for the products with two
//! normal operands, i.e. the table look-ups of AMSim, so the counts are the
//! table's real usage. The metrics of [`amsim::metrics`] are then weighted
//! by those counts ([`amsim::metrics::characterize_lut_weighted`]).
//!
//! The first layer of a network computes no input gradient in training; its
//! `dx` row is still recorded (from `dy` and `W`) and marked
//! `in_training = false`.
//!
//! A composite layer (a ResNet's residual block) is one plan entry: its
//! recorded pairs cover every product inside it, while `x` and `dy` are the
//! block's input and output gradient and `W` its first weight tensor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amsim::metrics::{characterize_lut, characterize_lut_weighted, Characterization};
use amsim::{Lut, Multiplier, MultiplierPlan, Role};
use nets::layers::softmax_cross_entropy;
use nets::{Network, Tensor};

use crate::error::{ExperimentError, Result};

/// Widest table the pair recorder covers (`4^8` counters).
pub const MAX_STATS_BITS: u32 = 8;

const PAIR_SLOTS: usize = 1 << (2 * MAX_STATS_BITS);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
/// Pair counts of the recording model, index `ta << m | tb`.
static PAIR_COUNTS: [AtomicU64; PAIR_SLOTS] = [ZERO; PAIR_SLOTS];
/// One recording at a time in the process (the counters are global because
/// a model is a plain function pointer).
static RECORDER: Mutex<()> = Mutex::new(());

/// The recording model: counts the table indices of its operands (full
/// mantissas in [1, 2), as `direct` mode passes them) and returns their
/// exact product, a valid result whose value is not used.
fn recording_model(a: f32, b: f32, bits: u32) -> f32 {
    let ta = (a.to_bits() & 0x007f_ffff) >> (23 - bits);
    let tb = (b.to_bits() & 0x007f_ffff) >> (23 - bits);
    PAIR_COUNTS[((ta << bits) | tb) as usize].fetch_add(1, Ordering::Relaxed);
    a * b
}

/// Histograms of one operand tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct OperandHistogram {
    /// `x`, `W` or `dy`.
    pub operand: &'static str,
    /// Elements per biased exponent, 256 bins.
    pub exponents: Vec<u64>,
    /// Normal elements per table index, `2^m` bins.
    pub indices: Vec<u64>,
    /// Elements in all.
    pub elements: u64,
}

impl OperandHistogram {
    /// Histograms of `values` at `bits` index bits.
    pub fn of(operand: &'static str, values: &[f32], bits: u32) -> OperandHistogram {
        let mut exponents = vec![0u64; 256];
        let mut indices = vec![0u64; 1 << bits];
        for v in values {
            let b = v.to_bits();
            let e = ((b >> 23) & 0xff) as usize;
            exponents[e] += 1;
            if e != 0 && e != 255 {
                indices[((b & 0x007f_ffff) >> (23 - bits)) as usize] += 1;
            }
        }
        OperandHistogram {
            operand,
            exponents,
            indices,
            elements: values.len() as u64,
        }
    }

    /// Elements that are zero or subnormal (no table look-up).
    pub fn zero_or_subnormal(&self) -> u64 {
        self.exponents[0]
    }
}

/// Statistics of one product role.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleStats {
    /// The role.
    pub role: Role,
    /// First operand's histograms.
    pub first: OperandHistogram,
    /// Second operand's histograms.
    pub second: OperandHistogram,
    /// Recorded table look-ups per index pair, `ta << m | tb`.
    pub pairs: Vec<u64>,
    /// Products of the role for the batch (table look-ups and products
    /// with a zero, subnormal or non-finite operand): the layer's forward
    /// multiply-accumulates, which the two gradient products match in
    /// number.
    pub products: u64,
    /// The characterization weighted by `pairs` (`None` when no product
    /// reached the table).
    pub weighted: Option<Characterization>,
    /// Whether training computes this product (the first layer's input
    /// gradient is skipped).
    pub in_training: bool,
}

impl RoleStats {
    /// Table look-ups recorded.
    pub fn table_products(&self) -> u64 {
        self.pairs.iter().sum()
    }
}

/// Everything `approxtrain stats` reports for a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOperandStats {
    /// The layer.
    pub layer: String,
    /// Images in the batch.
    pub batch: usize,
    /// The table characterized.
    pub multiplier: String,
    /// Its width.
    pub bits: u32,
    /// The uniform (plain) characterization.
    pub uniform: Characterization,
    /// Forward, input gradient, weight gradient.
    pub roles: Vec<RoleStats>,
}

/// The role's name in files and tables.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Forward => "forward",
        Role::GradInput => "grad_input",
        Role::GradWeight => "grad_weight",
        Role::AttnQk => "attn_qk",
        Role::AttnAv => "attn_av",
    }
}

/// Collect the operand statistics of layer `layer` of `network` for the
/// batch `x` with `labels`, against the table `lut` (at most
/// [`MAX_STATS_BITS`] bits). The network's parameters are not changed;
/// its caches and gradients are overwritten.
pub fn layer_operand_stats(
    network: &mut Network,
    layer: &str,
    x: &Tensor,
    labels: &[u8],
    lut: &Arc<Lut>,
) -> Result<LayerOperandStats> {
    let bits = lut.bits();
    if bits > MAX_STATS_BITS {
        return Err(ExperimentError::BadSpec(format!(
            "operand statistics record tables of up to {MAX_STATS_BITS} bits; {}:{bits} is wider",
            lut.model_name()
        )));
    }
    let own_plan = network.layer_plan(layer)?.clone();
    let batch = x.shape.first().copied().unwrap_or(0);
    let layers = network.layers_mut();
    let idx = layers
        .iter()
        .position(|l| l.name() == layer)
        .expect("layer_plan found the layer");
    let first_with_params = layers[..idx].iter().all(|l| l.params().is_empty());

    // Forward to the layer and on to the loss, then back to the layer's
    // output: x, and dy = dL/dy of the batch's mean loss.
    let mut h = x.clone();
    for l in layers[..idx].iter_mut() {
        h = l.forward(&h, true)?;
    }
    let layer_x = h;
    let mut h = layers[idx].forward(&layer_x, true)?;
    for l in layers[idx + 1..].iter_mut() {
        h = l.forward(&h, true)?;
    }
    let loss = softmax_cross_entropy(&h, labels)?;
    let mut dy = loss.dlogits;
    for l in layers[idx + 1..].iter_mut().rev() {
        if let Some(g) = l.backward(&dy, true)? {
            dy = g;
        }
    }
    let weight = layers[idx]
        .params()
        .first()
        .map(|p| p.value.clone())
        .ok_or_else(|| ExperimentError::Other(format!("layer '{layer}' has no weights")))?;

    let hx = || OperandHistogram::of("x", &layer_x.data, bits);
    let hw = || OperandHistogram::of("W", &weight, bits);
    let hdy = || OperandHistogram::of("dy", &dy.data, bits);

    let guard = RECORDER.lock().unwrap_or_else(|p| p.into_inner());
    let recorder = Multiplier::Direct {
        name: "operand-recorder".into(),
        func: recording_model,
        bits,
    };
    let mut roles = Vec::new();
    let macs = layers[idx].macs(&layer_x.shape[1..]);
    for role in [Role::Forward, Role::GradInput, Role::GradWeight] {
        for c in PAIR_COUNTS.iter() {
            c.store(0, Ordering::Relaxed);
        }
        let mut plan = MultiplierPlan::uniform(Multiplier::Fp32);
        plan.set(role, recorder.clone());
        let l = &mut layers[idx];
        l.set_plan(plan);
        let run = (|| -> nets::Result<()> {
            match role {
                Role::Forward => {
                    l.forward(&layer_x, false)?;
                }
                _ => {
                    l.forward(&layer_x, true)?;
                    l.backward(&dy, role == Role::GradInput)?;
                }
            }
            Ok(())
        })();
        l.set_plan(own_plan.clone());
        run?;
        let n = 1usize << (2 * bits);
        let pairs: Vec<u64> = PAIR_COUNTS[..n]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let weighted = if pairs.iter().any(|&c| c > 0) {
            Some(characterize_lut_weighted(lut, &pairs)?)
        } else {
            None
        };
        let (first, second) = match role {
            Role::Forward => (hx(), hw()),
            Role::GradInput => (hdy(), hw()),
            _ => (hx(), hdy()),
        };
        roles.push(RoleStats {
            role,
            first,
            second,
            pairs,
            products: macs.forward * batch as u64,
            weighted,
            in_training: !(role == Role::GradInput && first_with_params),
        });
    }
    drop(guard);
    Ok(LayerOperandStats {
        layer: layer.to_string(),
        batch,
        multiplier: format!("{}:{}", lut.model_name(), bits),
        bits,
        uniform: characterize_lut(lut),
        roles,
    })
}

/// Header of the histogram CSV.
pub const HISTOGRAM_CSV_HEADER: [&str; 7] =
    ["layer", "role", "operand", "kind", "bin", "count", "share"];

/// The histograms as CSV bytes: one row per non-empty bin; `kind` is
/// `exponent` (bin = unbiased exponent, `zero_or_subnormal` and
/// `inf_or_nan` for the special bins) or `index` (bin = table index).
pub fn histogram_csv(stats: &LayerOperandStats) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ExperimentError::Other(format!("histogram CSV: {e}"));
    w.write_record(HISTOGRAM_CSV_HEADER).map_err(err)?;
    for r in &stats.roles {
        for h in [&r.first, &r.second] {
            let total = h.elements.max(1) as f64;
            for (e, &c) in h.exponents.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                let bin = match e {
                    0 => "zero_or_subnormal".to_string(),
                    255 => "inf_or_nan".to_string(),
                    e => (e as i32 - 127).to_string(),
                };
                w.write_record([
                    stats.layer.clone(),
                    role_name(r.role).to_string(),
                    h.operand.to_string(),
                    "exponent".into(),
                    bin,
                    c.to_string(),
                    format!("{:.6}", c as f64 / total),
                ])
                .map_err(err)?;
            }
            let normal: u64 = h.indices.iter().sum();
            for (i, &c) in h.indices.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                w.write_record([
                    stats.layer.clone(),
                    role_name(r.role).to_string(),
                    h.operand.to_string(),
                    "index".into(),
                    i.to_string(),
                    c.to_string(),
                    format!("{:.6}", c as f64 / normal.max(1) as f64),
                ])
                .map_err(err)?;
            }
        }
    }
    w.into_inner()
        .map_err(|e| ExperimentError::Other(format!("histogram CSV: {e}")))
}

/// Header of the characterization CSV.
pub const METRICS_CSV_HEADER: [&str; 13] = [
    "layer",
    "multiplier",
    "distribution",
    "in_training",
    "products",
    "table_products",
    "error_rate",
    "mean_relative_error",
    "mred",
    "max_relative_error",
    "rms_relative_error",
    "std_relative_error",
    "within_one_ulp",
];

/// Uniform and per-role weighted characterization, side by side, as CSV.
pub fn metrics_csv(stats: &LayerOperandStats) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ExperimentError::Other(format!("metrics CSV: {e}"));
    w.write_record(METRICS_CSV_HEADER).map_err(err)?;
    let row =
        |dist: &str, in_training: &str, products: String, tp: String, c: &Characterization| {
            vec![
                stats.layer.clone(),
                stats.multiplier.clone(),
                dist.to_string(),
                in_training.to_string(),
                products,
                tp,
                c.error_rate.to_string(),
                c.mean_relative_error.to_string(),
                c.mred.to_string(),
                c.max_relative_error.to_string(),
                c.rms_relative_error.to_string(),
                c.std_relative_error.to_string(),
                c.within_one_ulp.to_string(),
            ]
        };
    w.write_record(row(
        "uniform",
        "",
        String::new(),
        stats.uniform.pairs.to_string(),
        &stats.uniform,
    ))
    .map_err(err)?;
    for r in &stats.roles {
        if let Some(c) = &r.weighted {
            w.write_record(row(
                role_name(r.role),
                &r.in_training.to_string(),
                r.products.to_string(),
                r.table_products().to_string(),
                c,
            ))
            .map_err(err)?;
        }
    }
    w.into_inner()
        .map_err(|e| ExperimentError::Other(format!("metrics CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amsim::{test_seed, MultiplierPlan};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn exact(a: f32, b: f32, _bits: u32) -> f32 {
        a * b
    }

    #[test]
    fn recorded_forward_pairs_of_a_dense_layer_are_every_pair_of_normal_operands() {
        let seed =
            test_seed("recorded_forward_pairs_of_a_dense_layer_are_every_pair_of_normal_operands");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = Network::by_name(
            "lenet300100",
            &[1, 28, 28],
            10,
            MultiplierPlan::uniform(Multiplier::Fp32),
            seed,
        )
        .unwrap();
        let n = 3;
        let x = Tensor {
            shape: vec![n, 1, 28, 28],
            data: (0..n * 784)
                .map(|_| {
                    if rng.gen_bool(0.3) {
                        0.0
                    } else {
                        rng.gen_range(-1.0f32..1.0)
                    }
                })
                .collect(),
        };
        let labels = [1u8, 7, 3];
        let bits = 4;
        let lut = Arc::new(Lut::build("exact", exact, bits).unwrap());
        let before: Vec<Vec<f32>> = net.params().iter().map(|p| p.value.clone()).collect();
        let stats = layer_operand_stats(&mut net, "fc2", &x, &labels, &lut).unwrap();

        // fc2's input is relu(fc1(x)); weights W [300, 100]; the forward
        // product multiplies x[n, i] with W[i, o] for every n, i, o.
        let layers = net.layers_mut();
        let mut h = x.clone();
        for l in layers[..3].iter_mut() {
            h = l.forward(&h, false).unwrap();
        }
        let w = layers[3].params()[0].value.clone();
        let split = |v: f32| {
            let s = amsim::product::Split::of(v);
            (s.exp != 0 && s.exp != 255).then(|| s.index(bits))
        };
        let mut expected = vec![0u64; 1 << (2 * bits)];
        for nn in 0..n {
            for i in 0..300 {
                let Some(ta) = split(h.data[nn * 300 + i]) else {
                    continue;
                };
                for o in 0..100 {
                    if let Some(tb) = split(w[i * 100 + o]) {
                        expected[((ta << bits) | tb) as usize] += 1;
                    }
                }
            }
        }
        let fwd = &stats.roles[0];
        assert_eq!(fwd.role, Role::Forward);
        assert_eq!(fwd.pairs, expected);
        assert_eq!(fwd.products, (n * 300 * 100) as u64);
        assert_eq!(fwd.first.elements, (n * 300) as u64);
        assert_eq!(fwd.second.elements, 300 * 100);
        // Zeros in fc2's input are the ReLU's.
        let zeros = h.data.iter().filter(|v| **v == 0.0).count() as u64;
        assert_eq!(fwd.first.zero_or_subnormal(), zeros);
        // The weight gradient multiplies the same x with dy: its look-ups
        // are bounded by x's normal elements times dy's per sample.
        let dw = &stats.roles[2];
        assert!(dw.table_products() <= (n * 300 * 100) as u64);
        assert!(dw.in_training && stats.roles[1].in_training);
        // Weights and the layer's plan are as before.
        let after: Vec<Vec<f32>> = net.params().iter().map(|p| p.value.clone()).collect();
        assert_eq!(before, after);
        assert_eq!(net.layer_plan("fc2").unwrap().label(), "fp32");
        // With an exact table every weighted metric is zero.
        let c = fwd.weighted.as_ref().unwrap();
        assert_eq!((c.mred, c.error_rate), (0.0, 0.0));
    }

    #[test]
    fn first_layer_input_gradient_is_marked_as_not_trained_and_wide_tables_are_refused() {
        let seed = test_seed(
            "first_layer_input_gradient_is_marked_as_not_trained_and_wide_tables_are_refused",
        );
        let mut net = Network::by_name(
            "lenet5",
            &[1, 28, 28],
            10,
            MultiplierPlan::uniform(Multiplier::Fp32),
            seed,
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Tensor {
            shape: vec![2, 1, 28, 28],
            data: (0..2 * 784).map(|_| rng.gen_range(-0.5f32..2.0)).collect(),
        };
        let lut = Arc::new(Lut::build("exact", exact, 3).unwrap());
        let s = layer_operand_stats(&mut net, "conv1", &x, &[0, 9], &lut).unwrap();
        let flags: Vec<bool> = s.roles.iter().map(|r| r.in_training).collect();
        assert_eq!(flags, [true, false, true]);
        // conv1: 6 x 28 x 28 outputs of 25 products per image.
        assert_eq!(s.roles[0].products, 2 * 6 * 784 * 25);
        let e = layer_operand_stats(&mut net, "conv7", &x, &[0, 9], &lut)
            .unwrap_err()
            .to_string();
        assert!(e.contains("conv7") && e.contains("conv1, conv2"), "{e}");
        let wide = Arc::new(Lut::build("exact", exact, 9).unwrap());
        let e = layer_operand_stats(&mut net, "conv1", &x, &[0, 9], &wide)
            .unwrap_err()
            .to_string();
        assert!(e.contains("8 bits"), "{e}");
    }
}
