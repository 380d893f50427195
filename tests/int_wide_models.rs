//! Integration tests of the 12- and 16-bit integer C models (EvoApprox's
//! `int32_t mulNs_X(int16_t, int16_t)` / `uint32_t mulNu_X(uint16_t,
//! uint16_t)` forms) and their registry: discovery with the width from the
//! name, each model against a formula written here from its paper, the
//! 12-bit tables against the models on every pair.

use std::collections::BTreeSet;

use amsim::{WideIntModelInfo, WideIntMul};
use approxtrain::models::{self, CompiledIntInfo, WIDE_INT_MODELS};
use rand::{Rng, SeedableRng};

fn model(name: &str) -> &'static WideIntModelInfo {
    models::find_wide_int(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The broken-array multiplier of Mahdiani et al. (TCAS-I 2010), vertical
/// break level `k`: the exact product of the magnitudes less the
/// partial-product bits `a_i b_j` of the columns `i + j < k`, written bit by
/// bit (`approx_int_truncated` in C forms each row at once), the sign of the
/// exact product applied.
fn broken_array(a: i32, b: i32, k: u32) -> i64 {
    let (ma, mb) = (a.unsigned_abs(), b.unsigned_abs());
    let mut p = 0i64;
    for i in 0..17 {
        for j in 0..17 {
            if (ma >> i) & 1 == 1 && (mb >> j) & 1 == 1 && i + j >= k {
                p += 1 << (i + j);
            }
        }
    }
    if (a < 0) != (b < 0) {
        -p
    } else {
        p
    }
}

/// The operand pairs a test checks: every pair with an operand at an edge
/// of the range (0, 1, -1, the extremes) and `random` random pairs.
fn pairs(m: &WideIntModelInfo, random: usize, seed: u64) -> Vec<(i32, i32)> {
    let r = m.operand_range();
    let edges: Vec<i32> = [*r.start(), *r.start() + 1, -1, 0, 1, *r.end() - 1, *r.end()]
        .into_iter()
        .filter(|v| r.contains(v))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for &e in &edges {
        for _ in 0..200 {
            let v = rng.gen_range(r.clone());
            out.extend([(e, v), (v, e)]);
        }
        for &f in &edges {
            out.push((e, f));
        }
    }
    for _ in 0..random {
        out.push((rng.gen_range(r.clone()), rng.gen_range(r.clone())));
    }
    out
}

#[test]
fn wide_registry_lists_the_shipped_models_with_their_width_and_signedness() {
    for (name, bits, signed) in [
        ("exact12s", 12, true),
        ("exact12u", 12, false),
        ("exact16s", 16, true),
        ("exact16u", 16, false),
        ("mul12s_trunc6", 12, true),
        ("mul12u_trunc6", 12, false),
        ("mul16s_trunc8", 16, true),
        ("mul16u_trunc8", 16, false),
    ] {
        let m = model(name);
        assert_eq!((m.bits, m.signed), (bits, signed), "{name}");
    }
    let names: Vec<&str> = WIDE_INT_MODELS.iter().map(|m| m.name).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        unique.into_iter().collect::<Vec<_>>(),
        names,
        "sorted, unique"
    );
    // One spec namespace: no name is also a float or an 8-bit model.
    for m in WIDE_INT_MODELS {
        assert!(models::find(m.name).is_err(), "{}", m.name);
        assert!(models::find_int(m.name).is_err(), "{}", m.name);
    }
    let err = models::find_wide_int("mul12u_none")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exact12s") && err.contains("mul16s_trunc8"),
        "{err}"
    );
}

#[test]
fn wide_registry_matches_the_compiled_c_info_records() {
    let compiled = models::compiled_wide_int_info_records();
    assert_eq!(compiled.len(), WIDE_INT_MODELS.len());
    for (m, record) in WIDE_INT_MODELS.iter().zip(compiled) {
        let (name, info) = record.unwrap_or_else(|| panic!("{} ships a record", m.name));
        assert!(name.is_empty() || name == m.name, "{}: {name}", m.name);
        assert_eq!(CompiledIntInfo::of_wide(m), info, "{}", m.name);
    }
}

#[test]
fn exact_wide_models_are_the_exact_products() {
    let seed = amsim::test_seed("exact_wide_models_are_the_exact_products");
    for name in ["exact12s", "exact12u", "exact16s", "exact16u"] {
        let m = model(name);
        for (a, b) in pairs(m, 100_000, seed) {
            assert_eq!(
                (m.func)(a, b),
                i64::from(a) * i64::from(b),
                "seed {seed}: {name}({a}, {b})"
            );
        }
    }
    // The largest products: (-2^15)^2 = 2^30 and (2^16 - 1)^2 > 2^31,
    // which needs uint32_t (an int product of two promoted uint16_t would
    // overflow).
    assert_eq!((model("exact16s").func)(-32768, -32768), 1 << 30);
    assert_eq!((model("exact16u").func)(65535, 65535), 65535 * 65535);
}

#[test]
fn truncated_wide_models_match_the_broken_array_formula() {
    let seed = amsim::test_seed("truncated_wide_models_match_the_broken_array_formula");
    for (name, k) in [
        ("mul12s_trunc6", 6),
        ("mul12u_trunc6", 6),
        ("mul16s_trunc8", 8),
        ("mul16u_trunc8", 8),
    ] {
        let m = model(name);
        // The dropped bits sum to at most (k - 1) 2^k + 1 (all set).
        let bound = i64::from(k - 1) * (1 << k) + 1;
        for (a, b) in pairs(m, 100_000, seed) {
            let p = (m.func)(a, b);
            assert_eq!(p, broken_array(a, b, k), "seed {seed}: {name}({a}, {b})");
            let shortfall = (i64::from(a) * i64::from(b)).abs() - p.abs();
            assert!(
                (0..=bound).contains(&shortfall),
                "seed {seed}: {name}({a}, {b}) = {p}"
            );
        }
    }
    // All dropped bits set: 4095^2 - 321 and 65535^2 - 1793.
    assert_eq!((model("mul12u_trunc6").func)(4095, 4095), 4095 * 4095 - 321);
    assert_eq!(
        (model("mul16u_trunc8").func)(65535, 65535),
        65535 * 65535 - 1793
    );
    assert_eq!((model("mul16s_trunc8").func)(-32768, 3), -98304);
}

#[test]
fn twelve_bit_tables_equal_their_models_on_every_pair() {
    for m in WIDE_INT_MODELS.iter().filter(|m| m.bits == 12) {
        let mul = WideIntMul::of(m).unwrap();
        let r = amsim::int_metrics::verify_wide(&mul, m.func).expect("a 12-bit table");
        assert_eq!(r.pairs, 4096 * 4096, "{}", m.name);
        assert_eq!(r.mismatches, 0, "{}: {:?}", m.name, r.first_mismatch);
    }
    // A 16-bit model has no table: each product is a call.
    let mul = WideIntMul::of(model("mul16u_trunc8")).unwrap();
    assert!(!mul.is_table());
    assert_eq!(mul.mul(65535, 65535), 65535 * 65535 - 1793);
    assert_eq!(
        mul.mul(-65535, 65535),
        -(65535 * 65535 - 1793),
        "sign-magnitude"
    );
}
