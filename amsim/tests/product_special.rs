//! The special cases of the AMSim scalar product (DESIGN.md, "The
//! arithmetic"): NaN, infinities, zeros, subnormals, overflow to infinity,
//! underflow to zero, and signs.

mod support;

use amsim::product::{amsim_mul, bf16_mul, compose, round_bf16, Split};
use amsim::Lut;
use rand::Rng;
use support::test_rng;

/// Mitchell's logarithmic product at `bits` bits, written independently of
/// the C model: S = xa + xb; Q = 1 + S if S < 1 else 2S; fraction truncated
/// to `bits` bits.
fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u64 << bits) as f64;
    let xa = ((a as f64 - 1.0) * scale).floor() / scale;
    let xb = ((b as f64 - 1.0) * scale).floor() / scale;
    let s = xa + xb;
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    let e = if q >= 2.0 { 2.0 } else { 1.0 };
    (((q / e - 1.0) * scale).floor() / scale + 1.0) as f32 * e as f32
}

fn lut(bits: u32) -> Lut {
    Lut::build("mitchell_rs", mitchell, bits).expect("mitchell is a valid model")
}

#[test]
fn nan_operands_give_nan() {
    let l = lut(7);
    for x in [
        0.0f32,
        -0.0,
        1.5,
        -3.0,
        f32::INFINITY,
        f32::MIN_POSITIVE / 4.0,
    ] {
        assert!(amsim_mul(f32::NAN, x, &l).is_nan());
        assert!(amsim_mul(x, f32::NAN, &l).is_nan());
    }
}

#[test]
fn infinities_propagate_with_sign_and_zero_times_inf_is_nan() {
    let l = lut(7);
    assert_eq!(amsim_mul(f32::INFINITY, 2.0, &l), f32::INFINITY);
    assert_eq!(amsim_mul(f32::INFINITY, -2.0, &l), f32::NEG_INFINITY);
    assert_eq!(amsim_mul(-3.0, f32::NEG_INFINITY, &l), f32::INFINITY);
    assert!(amsim_mul(0.0, f32::INFINITY, &l).is_nan());
    assert!(amsim_mul(f32::NEG_INFINITY, -0.0, &l).is_nan());
    // A subnormal times infinity is the IEEE product too (infinity).
    assert_eq!(amsim_mul(1e-40, f32::INFINITY, &l), f32::INFINITY);
}

#[test]
fn zero_and_subnormal_operands_give_signed_zero() {
    let l = lut(7);
    let sub = f32::from_bits(0x0000_0123);
    for (a, b, neg) in [
        (0.0f32, 3.0f32, false),
        (-0.0, 3.0, true),
        (-0.0, -3.0, false),
        (sub, 5.0, false),
        (-sub, 5.0, true),
        (7.0, -sub, true),
        (sub, sub, false),
    ] {
        let r = amsim_mul(a, b, &l);
        assert_eq!(r, 0.0, "{a:e} x {b:e}");
        assert_eq!(r.is_sign_negative(), neg, "{a:e} x {b:e} gave {r:e}");
    }
}

#[test]
fn overflow_gives_signed_infinity() {
    let l = lut(7);
    assert_eq!(amsim_mul(f32::MAX, 2.0, &l), f32::INFINITY);
    assert_eq!(amsim_mul(-1e30, 1e30, &l), f32::NEG_INFINITY);
    // 2^127 * 1.0 stays finite: L(0,0) = 1 for Mitchell.
    assert_eq!(amsim_mul(2f32.powi(127), 1.0, &l), 2f32.powi(127));
}

#[test]
fn underflow_below_smallest_normal_gives_signed_zero() {
    let l = lut(7);
    let tiny = f32::MIN_POSITIVE; // 2^-126
    let r = amsim_mul(tiny, 0.5, &l); // 2^-127: subnormal in IEEE, zero here
    assert_eq!(r.to_bits(), 0);
    let r = amsim_mul(-tiny, 0.75, &l);
    assert_eq!(r.to_bits(), 0x8000_0000);
    // Exactly the smallest normal survives.
    assert_eq!(amsim_mul(tiny, 1.0, &l), tiny);
    // 2^-63 * 2^-63 = 2^-126 survives; one step lower does not.
    assert_eq!(amsim_mul(2f32.powi(-63), 2f32.powi(-63), &l), tiny);
    assert_eq!(amsim_mul(2f32.powi(-63), 2f32.powi(-64), &l), 0.0);
}

#[test]
fn signs_follow_xor_of_operand_signs() {
    let l = lut(5);
    let mut rng = test_rng();
    for _ in 0..10_000 {
        let a: f32 = rng.gen_range(0.01f32..100.0);
        let b: f32 = rng.gen_range(0.01f32..100.0);
        let p = amsim_mul(a, b, &l);
        assert!(p > 0.0);
        assert_eq!(amsim_mul(-a, b, &l), -p);
        assert_eq!(amsim_mul(a, -b, &l), -p);
        assert_eq!(amsim_mul(-a, -b, &l), p);
    }
}

#[test]
fn product_is_table_entry_scaled_by_exponents() {
    let mut rng = test_rng();
    for bits in 1..=11 {
        let l = lut(bits);
        for _ in 0..2_000 {
            let a = f32::from_bits(rng.gen_range(0x0080_0000u32..0x7f00_0000));
            let b = f32::from_bits(rng.gen_range(0x0080_0000u32..0x7f00_0000));
            let (sa, sb) = (Split::of(a), Split::of(b));
            let entry = l.get(sa.index(bits), sb.index(bits)) as f64;
            let want = entry * 2f64.powi(sa.exp as i32 - 127) * 2f64.powi(sb.exp as i32 - 127);
            let got = amsim_mul(a, b, &l);
            if want >= f32::MAX as f64 * 1.0000001 || want >= 2f64.powi(128) {
                assert_eq!(got, f32::INFINITY, "{a:e} x {b:e} at {bits} bits");
            } else if want < f32::MIN_POSITIVE as f64 {
                assert_eq!(got.to_bits(), 0, "{a:e} x {b:e} at {bits} bits");
            } else {
                assert_eq!(got as f64, want, "{a:e} x {b:e} at {bits} bits");
            }
        }
    }
}

#[test]
fn operand_bits_below_the_table_width_are_truncated() {
    let l = lut(3);
    // 1.124 and 1.0 share the top 3 fraction bits (000).
    assert_eq!(amsim_mul(1.124, 1.5, &l), amsim_mul(1.0, 1.5, &l));
    assert_ne!(amsim_mul(1.125, 1.5, &l), amsim_mul(1.0, 1.5, &l));
}

#[test]
fn compose_flushes_and_saturates() {
    assert_eq!(compose(0, 1.5, 127, 127), 1.5);
    assert_eq!(compose(0x8000_0000, 3.0, 128, 127), -6.0);
    assert_eq!(compose(0, 2.0, 254, 128), f32::INFINITY);
    assert_eq!(compose(0, 1.0, 1, 126).to_bits(), 0);
}

#[test]
fn bf16_rounds_operands_to_nearest_even() {
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: rounds to even (1).
    assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
    // 1 + 3*2^-8 is a tie between 1+2^-7 and 1+2^-6: rounds to even (1+2^-6).
    assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
    assert_eq!(
        bf16_mul(1.0 + 2f32.powi(-7), 3.0),
        (1.0 + 2f32.powi(-7)) * 3.0
    );
    assert!(bf16_mul(f32::NAN, 1.0).is_nan());
}

#[test]
fn lut_rejects_models_with_outputs_outside_one_to_four() {
    fn bad(a: f32, b: f32, _bits: u32) -> f32 {
        if a > 1.5 && b > 1.5 {
            4.0
        } else {
            a * b
        }
    }
    fn nan(_a: f32, _b: f32, _bits: u32) -> f32 {
        f32::NAN
    }
    let e = Lut::build("bad", bad, 2).unwrap_err().to_string();
    assert!(
        e.contains("'bad'")
            && e.contains("[3][3]")
            && e.contains("(1.75, 1.75)")
            && e.contains("4e0"),
        "{e}"
    );
    let e = Lut::build("nan", nan, 1).unwrap_err().to_string();
    assert!(e.contains("NaN") && e.contains("[0][0]"), "{e}");
    let e = Lut::build("m", mitchell, 12).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = Lut::build("m", mitchell, 0).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
}
