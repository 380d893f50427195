//! Integration tests of the C multiplier models and their registry.
//!
//! Random inputs come from a seed printed on stderr; set
//! `APPROXTRAIN_TEST_SEED` to replay a run.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use amsim::{Lut, ModelFn, ModelInfo, Multiplier};
use approxtrain::models::{self, CompiledInfo, MODELS};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::test_rng;

/// The widest table tested exhaustively (4M pairs per model).
const EXHAUSTIVE_BITS: u32 = 11;

fn model(name: &str) -> &'static ModelInfo {
    models::find(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The operand 1 + t / 2^bits.
fn operand(t: u32, bits: u32) -> f32 {
    f32::from_bits(0x3f80_0000 | (t << (23 - bits)))
}

/// A random float in [1, 2) with all 23 fraction bits random.
fn random_mantissa(rng: &mut ChaCha8Rng) -> f32 {
    f32::from_bits(0x3f80_0000 | rng.gen_range(0..1u32 << 23))
}

/// `v` with its fraction below the leading bit truncated to `bits` bits, for
/// positive normal `v`.
fn truncate_fraction(v: f64, bits: u32) -> f64 {
    let scale = 2f64.powi(v.log2().floor() as i32 - bits as i32);
    (v / scale).floor() * scale
}

/// The whole table of `func` at `bits`, row-major (index `ta << bits | tb`).
fn table(func: ModelFn, bits: u32) -> Vec<f32> {
    let n = 1u32 << bits;
    (0..n)
        .flat_map(|i| (0..n).map(move |j| func(operand(i, bits), operand(j, bits), bits)))
        .collect()
}

/// Assert two tables equal, naming the first differing pair.
fn assert_tables_equal(name: &str, bits: u32, got: &[f32], want: &[f32]) {
    if let Some(k) = (0..got.len()).find(|&k| got[k].to_bits() != want[k].to_bits()) {
        panic!(
            "{name} at {bits} bits: entry ta={} tb={} is {} but the formula gives {}",
            k >> bits,
            k & ((1 << bits) - 1),
            got[k],
            want[k]
        );
    }
}

#[test]
fn every_model_returns_a_normal_value_in_1_4_for_all_pairs_up_to_11_bits() {
    for m in MODELS {
        for bits in m.min_bits..=m.max_bits.min(EXHAUSTIVE_BITS) {
            let n = 1u32 << bits;
            for i in 0..n {
                for j in 0..n {
                    let q = (m.func)(operand(i, bits), operand(j, bits), bits);
                    assert!(
                        q.is_normal() && (1.0..4.0).contains(&q),
                        "{} at {bits} bits: model(1 + {i}/2^{bits}, 1 + {j}/2^{bits}) = {q} is not in [1, 4)",
                        m.name
                    );
                }
            }
        }
    }
}

#[test]
fn every_model_tabulates_through_amsim_and_matches_its_direct_calls() {
    let mut rng = test_rng();
    for m in MODELS {
        for bits in m.min_bits..=m.max_bits.min(EXHAUSTIVE_BITS) {
            let lut = Lut::build(m.name, m.func, bits)
                .unwrap_or_else(|e| panic!("{} at {bits} bits: {e}", m.name));
            let table = Multiplier::Lut(Arc::new(lut));
            let direct = Multiplier::Direct {
                name: m.name.to_string(),
                func: m.func,
                bits,
            };
            for _ in 0..1000 {
                let a = random_mantissa(&mut rng) * 2f32.powi(rng.gen_range(-20..20));
                let b = -random_mantissa(&mut rng) * 2f32.powi(rng.gen_range(-20..20));
                assert_eq!(
                    table.mul(a, b).to_bits(),
                    direct.mul(a, b).to_bits(),
                    "{} at {bits} bits: table and direct products of {a} x {b} differ",
                    m.name
                );
            }
        }
    }
}

#[test]
fn every_model_ignores_the_fraction_bits_below_its_width() {
    let mut rng = test_rng();
    for m in MODELS {
        for bits in m.min_bits..=m.max_bits {
            for _ in 0..2000 {
                let (a, b) = (random_mantissa(&mut rng), random_mantissa(&mut rng));
                let mask = !((1u32 << (23 - bits)) - 1);
                let (at, bt) = (
                    f32::from_bits(a.to_bits() & mask),
                    f32::from_bits(b.to_bits() & mask),
                );
                let full = (m.func)(a, b, bits);
                let truncated = (m.func)(at, bt, bits);
                assert_eq!(
                    full.to_bits(),
                    truncated.to_bits(),
                    "{} at {bits} bits: model({a}, {b}) = {full} but model({at}, {bt}) = {truncated}",
                    m.name
                );
                assert!(
                    full.is_normal() && (1.0..4.0).contains(&full),
                    "{} at {bits} bits: model({a}, {b}) = {full} is not in [1, 4)",
                    m.name
                );
            }
        }
    }
}

#[test]
fn exact_is_the_product_of_the_truncated_operands() {
    let exact = model("exact").func;
    for bits in 1..=EXHAUSTIVE_BITS {
        let n = 1u32 << bits;
        let want: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..n).map(move |j| {
                    let p = (1.0 + i as f64 / n as f64) * (1.0 + j as f64 / n as f64);
                    // At most 2 * 11 + 2 bits: exactly representable.
                    assert_eq!(p as f32 as f64, p);
                    p as f32
                })
            })
            .collect();
        assert_tables_equal("exact", bits, &table(exact, bits), &want);
    }
    // Wider: one IEEE rounding of the exact (at most 48-bit) product.
    let mut rng = test_rng();
    for bits in EXHAUSTIVE_BITS + 1..=23 {
        for _ in 0..10_000 {
            let (a, b) = (random_mantissa(&mut rng), random_mantissa(&mut rng));
            let mask = !((1u32 << (23 - bits)) - 1);
            let at = f32::from_bits(a.to_bits() & mask) as f64;
            let bt = f32::from_bits(b.to_bits() & mask) as f64;
            assert_eq!(
                exact(a, b, bits),
                (at * bt) as f32,
                "exact({a}, {b}, {bits})"
            );
        }
    }
}

/// Mitchell's formula evaluated in f64 (DESIGN.md): S = xa + xb,
/// Q = 1 + S if S < 1 else 2 S, fraction truncated to m bits.
fn mitchell_formula(ta: u32, tb: u32, m: u32) -> f32 {
    let s = (ta as f64 + tb as f64) / 2f64.powi(m as i32);
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    truncate_fraction(q, m) as f32
}

/// MBM's formula evaluated in f64 (DESIGN.md): lowest kept bit forced to 1,
/// correction c truncated to m bits, dropped when S - 1 + c >= 1.
fn mbm_formula(ta: u32, tb: u32, m: u32) -> f32 {
    let scale = 2f64.powi(m as i32);
    let c_trunc = |c: f64| (c * scale).floor() / scale;
    let s = ((ta | 1) as f64 + (tb | 1) as f64) / scale;
    let q = if s < 1.0 {
        1.0 + s + c_trunc(1.0 / 16.0 + 1.0 / 64.0)
    } else {
        let c = c_trunc(1.0 / 32.0 + 1.0 / 128.0);
        if s - 1.0 + c >= 1.0 {
            2.0 * s
        } else {
            2.0 * (s + c)
        }
    };
    truncate_fraction(q, m) as f32
}

/// ApproxTrain's MBM datapath (its `FPmultMBM_fast*` models, which generated
/// MBM_m.bin), rebuilt from its description: 23-bit fixed-point fractions,
/// the correction 2^-4 + 2^-6 as 655360 shifted right by the carry and
/// masked to the m kept bits, hidden bit appended, shifted left by the
/// carry, renormalised by a plain right shift, result masked to m bits.
fn mbm_approxtrain_datapath(ta: u32, tb: u32, m: u32) -> f32 {
    let keep = ((1u32 << m) - 1) << (23 - m);
    let setbit = 1u32 << (23 - m);
    let (fa, fb) = (ta << (23 - m), tb << (23 - m));
    let s = ((fa & keep) | setbit) + ((fb & keep) | setbit);
    let carry = u32::from(s >= 1 << 23);
    let correction = (655_360u32 >> carry) & keep;
    let mut corrected = (s & 0x7f_ffff) + correction;
    if carry == 1 && corrected >= 1 << 23 {
        corrected = s;
    }
    let mut mant = ((1u32 << 23) + corrected) << carry;
    let normalised = mant >= 1 << 24;
    if normalised {
        mant >>= 1;
    }
    let exponent = 127 + u32::from(normalised);
    f32::from_bits((exponent << 23) | (mant & 0x7f_ffff & keep))
}

fn formula_table(formula: fn(u32, u32, u32) -> f32, bits: u32) -> Vec<f32> {
    let n = 1u32 << bits;
    (0..n)
        .flat_map(|i| (0..n).map(move |j| formula(i, j, bits)))
        .collect()
}

#[test]
fn mitchell_table_equals_the_formula_up_to_11_bits() {
    let mitchell = model("mitchell").func;
    for bits in 1..=EXHAUSTIVE_BITS {
        let want = formula_table(mitchell_formula, bits);
        assert_tables_equal("mitchell", bits, &table(mitchell, bits), &want);
    }
}

#[test]
fn mbm_table_equals_the_formula_and_approxtrains_datapath_up_to_11_bits() {
    let mbm = model("mbm").func;
    for bits in 1..=EXHAUSTIVE_BITS {
        let got = table(mbm, bits);
        assert_tables_equal("mbm", bits, &got, &formula_table(mbm_formula, bits));
        let datapath = formula_table(mbm_approxtrain_datapath, bits);
        assert_tables_equal("mbm (ApproxTrain datapath)", bits, &got, &datapath);
    }
}

#[test]
fn mbm_and_mitchell_match_the_published_spot_values() {
    let mbm = model("mbm").func;
    assert_eq!(mbm(1.0, 1.0, 7), 1.09375);
    assert_eq!(mbm(1.5, 1.5, 7), 2.109375);
    assert_eq!(mbm(1.5, 1.75, 7), 2.609375);
    // Through AMSim, signs and exponents included: 3 x -7 = -20.875.
    let lut = Lut::build("mbm", mbm, 7).expect("mbm tabulates at 7 bits");
    assert_eq!(Multiplier::Lut(Arc::new(lut)).mul(3.0, -7.0), -20.875);

    let mitchell = model("mitchell").func;
    assert_eq!(mitchell(1.0, 1.0, 7), 1.0);
    assert_eq!(mitchell(1.25, 1.5, 7), 1.75);
    assert_eq!(mitchell(1.5, 1.5, 7), 2.0);
    assert_eq!(mitchell(1.75, 1.75, 7), 3.0);
}

/// The ApproxTrain `.bin` byte of a table entry: carry << 7 | the top m
/// fraction bits of the product (of product / 2 when it carries).
fn approxtrain_byte(q: f32, bits: u32) -> u8 {
    let carry = u8::from(q >= 2.0);
    let frac = q.to_bits() & 0x7f_ffff;
    (carry << 7) | (frac >> (23 - bits)) as u8
}

#[test]
fn mbm_at_3_bits_reproduces_approxtrains_mbm_3_bin_prefix() {
    let bytes: Vec<u8> = table(model("mbm").func, 3)
        .iter()
        .map(|&q| approxtrain_byte(q, 3))
        .collect();
    assert_eq!(bytes.len(), 64);
    assert_eq!(bytes[..8], [0x02, 0x02, 0x04, 0x04, 0x06, 0x06, 0x80, 0x80]);
}

#[test]
fn bf16trunc_equals_approxtrains_masked_bfloat16_product() {
    let bf16 = model("bf16trunc");
    assert_eq!((bf16.min_bits, bf16.max_bits), (7, 7));
    fn mask(x: f32) -> f32 {
        f32::from_bits(x.to_bits() & 0xffff_0000)
    }
    let want = formula_table(|i, j, _| mask(mask(operand(i, 7)) * mask(operand(j, 7))), 7);
    assert_tables_equal("bf16trunc", 7, &table(bf16.func, 7), &want);
    let mut rng = test_rng();
    for _ in 0..10_000 {
        let (a, b) = (random_mantissa(&mut rng), random_mantissa(&mut rng));
        assert_eq!(
            (bf16.func)(a, b, 7),
            mask(mask(a) * mask(b)),
            "bf16trunc({a}, {b})"
        );
    }
}

#[test]
fn lmul_ilm_and_drum_match_hand_computed_values() {
    let lmul = model("lmul").func;
    // 1 + 0 + 0 + 2^-4 at m = 7; 1.5 x 1.5 carries: 2 (0.5 + 0.5 + 2^-4).
    assert_eq!(lmul(1.0, 1.0, 7), 1.0625);
    assert_eq!(lmul(1.5, 1.5, 7), 2.125);
    // l(2) = 2: 1 + 2^-2.
    assert_eq!(lmul(1.0, 1.0, 2), 1.25);
    // m = 4, both fractions 15/16, offset 2^-3: F = 2, offset dropped.
    assert_eq!(lmul(1.9375, 1.9375, 4), 3.75);

    let ilm = model("ilm").func;
    // Nearest one 2 for 1.5: 4 (1 - 1/4 - 1/4).
    assert_eq!(ilm(1.5, 1.5, 7), 2.0);
    assert_eq!(ilm(1.25, 1.25, 7), 1.5);
    // 2 (1 + (1.75/2 - 1) + 0.25) = 2.25.
    assert_eq!(ilm(1.75, 1.25, 7), 2.25);

    let drum = model("drum").func;
    // m = 7 keeps 4 fraction bits, lowest set: 1.5625 x 1.0625 = 1.66015625,
    // truncated to 7 bits.
    assert_eq!(drum(1.5, 1.0, 7), 1.65625);
    // m = 2 keeps both bits: the exact 3.0625, truncated to 2 bits.
    assert_eq!(drum(1.75, 1.75, 2), 3.0);
}

#[test]
fn realm_cancels_the_mean_relative_error_in_each_of_its_segments() {
    let bits = EXHAUSTIVE_BITS;
    let n = 1u32 << bits;
    let seg = n / 8;
    let segment_means = |func: ModelFn| -> Vec<f64> {
        let mut means = Vec::with_capacity(64);
        for si in 0..8 {
            for sj in 0..8 {
                let mut sum = 0.0;
                for i in si * seg..(si + 1) * seg {
                    for j in sj * seg..(sj + 1) * seg {
                        let (a, b) = (operand(i, bits), operand(j, bits));
                        let exact = a as f64 * b as f64;
                        sum += (func(a, b, bits) as f64 - exact) / exact;
                    }
                }
                means.push(sum / (seg * seg) as f64);
            }
        }
        means
    };
    let realm = segment_means(model("realm").func);
    let mitchell = segment_means(model("mitchell").func);
    for (k, (&r, &m)) in realm.iter().zip(&mitchell).enumerate() {
        assert!(
            r.abs() < 1e-3,
            "realm segment ({}, {}): mean relative error {r:.5} (mitchell {m:.5})",
            k / 8,
            k % 8
        );
    }
    let worst = |v: &[f64]| v.iter().fold(0f64, |w, x| w.max(x.abs()));
    assert!(
        worst(&mitchell) > 0.05,
        "mitchell's worst segment bias {} should be large",
        worst(&mitchell)
    );
}

#[test]
fn registry_lists_the_eight_shipped_models_sorted_and_unique() {
    let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
    for want in [
        "bf16trunc",
        "drum",
        "exact",
        "ilm",
        "lmul",
        "mbm",
        "mitchell",
        "realm",
    ] {
        assert!(
            names.contains(&want),
            "model '{want}' missing from {names:?}"
        );
    }
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.into_iter().collect::<Vec<_>>(), names);
    for m in MODELS {
        assert!(1 <= m.min_bits && m.min_bits <= m.max_bits && m.max_bits <= 23);
        assert!(!m.description.is_empty());
    }
    let err = models::find("no_such_model").unwrap_err().to_string();
    assert!(
        err.contains("mbm"),
        "the error should list the known models: {err}"
    );
}

#[test]
fn registry_matches_the_compiled_c_info_records() {
    let compiled = models::compiled_info_records();
    let registry: Vec<CompiledInfo> = MODELS.iter().map(CompiledInfo::of).collect();
    assert_eq!(registry, compiled);
}

#[test]
fn committed_bindings_match_a_fresh_bindgen_run() {
    let fresh = env!("APPROXTRAIN_BINDINGS_FRESH");
    if fresh.is_empty() {
        eprintln!(
            "skipped: no fresh bindings to compare ({})",
            env!("APPROXTRAIN_BINDINGS_NOTE")
        );
        return;
    }
    let committed_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bindings.rs");
    let committed = std::fs::read_to_string(&committed_path).expect("src/bindings.rs is readable");
    let fresh_text = std::fs::read_to_string(fresh).expect("fresh bindings are readable");
    assert!(
        committed == fresh_text,
        "src/bindings.rs is stale; refresh it with: cp {fresh} src/bindings.rs"
    );
}
