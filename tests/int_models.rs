//! Integration tests of the integer C multiplier models (8-bit operands,
//! EvoApprox's form) and their registry. Each model is checked over all
//! 65536 operand pairs against a formula written here from its paper.

use std::collections::BTreeSet;

use amsim::IntModelInfo;
use approxtrain::models::{self, CompiledIntInfo, INT_MODELS};

fn model(name: &str) -> &'static IntModelInfo {
    models::find_int(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Assert `model(a, b) == formula(a, b)` for every operand pair, naming
/// the first pair that differs.
fn assert_equals_formula(name: &str, formula: impl Fn(i32, i32) -> i32) {
    let m = model(name);
    for a in m.operand_range() {
        for b in m.operand_range() {
            let (got, want) = ((m.func)(a, b), formula(a, b));
            assert_eq!(
                got, want,
                "{name}({a}, {b}) = {got} but the formula gives {want}"
            );
        }
    }
}

/// Floor(log2 x) for x > 0.
fn leading_one(x: i32) -> u32 {
    31 - x.leading_zeros()
}

/// The product of magnitudes given the sign of the exact product.
fn sign_magnitude(a: i32, b: i32, unsigned: impl Fn(i32, i32) -> i32) -> i32 {
    let p = unsigned(a.abs(), b.abs());
    if (a < 0) != (b < 0) {
        -p
    } else {
        p
    }
}

/// Truncated array multiplier: the exact product less the partial-product
/// bits a_i b_j of the columns i + j < k (and of the rows j < hbl).
fn broken_array(a: i32, b: i32, k: u32, hbl: u32) -> i32 {
    let mut p = 0;
    for i in 0..9 {
        for j in hbl..9 {
            if (a >> i) & 1 == 1 && (b >> j) & 1 == 1 && i + j >= k {
                p += 1 << (i + j);
            }
        }
    }
    p
}

/// Mitchell in floating point: 2^(ka+kb) (1 + fa + fb) when fa + fb < 1,
/// else 2^(ka+kb+1) (fa + fb); exact in f64 for 8-bit operands.
fn mitchell(a: i32, b: i32) -> i32 {
    if a == 0 || b == 0 {
        return 0;
    }
    let (ka, kb) = (leading_one(a), leading_one(b));
    let fa = a as f64 / 2f64.powi(ka as i32) - 1.0;
    let fb = b as f64 / 2f64.powi(kb as i32) - 1.0;
    let scale = 2f64.powi((ka + kb) as i32);
    let p = if fa + fb < 1.0 {
        scale * (1.0 + fa + fb)
    } else {
        2.0 * scale * (fa + fb)
    };
    assert_eq!(
        p.fract(),
        0.0,
        "Mitchell's product of integers is an integer"
    );
    p as i32
}

/// DRUM-k: k bits from the leading one, the lowest set, the rest zero.
fn drum(a: i32, b: i32, k: u32) -> i32 {
    let keep = |x: i32| {
        if x < 1 << k {
            x
        } else {
            let shift = leading_one(x) + 1 - k;
            ((x >> shift) | 1) << shift
        }
    };
    keep(a) * keep(b)
}

#[test]
fn exact_integer_models_return_the_exact_products() {
    assert_equals_formula("exact8u", |a, b| a * b);
    assert_equals_formula("exact8s", |a, b| a * b);
}

#[test]
fn truncated_models_drop_the_four_lowest_partial_product_columns() {
    assert_equals_formula("mul8u_trunc4", |a, b| broken_array(a, b, 4, 0));
    assert_equals_formula("mul8s_trunc4", |a, b| {
        sign_magnitude(a, b, |x, y| broken_array(x, y, 4, 0))
    });
    // Spot value: 255 x 255 = 65025 less the 1 + 2 + 3 + 4 dropped ones of
    // columns 0..3 (weights 1, 2, 4, 8): 65025 - (1 + 4 + 12 + 32) = 64976.
    assert_eq!((model("mul8u_trunc4").func)(255, 255), 64976);
}

#[test]
fn evoapprox_form_broken_array_model_matches_its_break_levels() {
    assert_equals_formula("mul8u_BAM61", |a, b| broken_array(a, b, 6, 1));
    assert_equals_formula("mul8s_BAM08", |a, b| {
        sign_magnitude(a, b, |x, y| broken_array(x, y, 8, 0))
    });
    // Spot value: 127 x 127 = 16129 less the bits of columns 0..7.
    assert_eq!((model("mul8s_BAM08").func)(-127, 127), -14592);
}

#[test]
fn mitchell_models_match_the_logarithmic_formula() {
    assert_equals_formula("mul8u_mitchell", mitchell);
    assert_equals_formula("mul8s_mitchell", |a, b| sign_magnitude(a, b, mitchell));
    // 3 x 3: ka = kb = 1, fa = fb = 0.5: 2^3 x 1 = 8 (exact 9).
    assert_eq!((model("mul8u_mitchell").func)(3, 3), 8);
}

#[test]
fn drum_models_match_drum_4() {
    assert_equals_formula("mul8u_drum4", |a, b| drum(a, b, 4));
    assert_equals_formula("mul8s_drum4", |a, b| {
        sign_magnitude(a, b, |x, y| drum(x, y, 4))
    });
    // 200 = 0b1100_1000 keeps 1100, lowest set: 1101 << 4 = 208; 208 x 3.
    assert_eq!((model("mul8u_drum4").func)(200, 3), 624);
}

#[test]
fn every_integer_model_returns_products_in_its_16_bit_range() {
    for m in INT_MODELS {
        for a in m.operand_range() {
            for b in m.operand_range() {
                let p = (m.func)(a, b);
                assert!(
                    m.product_range().contains(&p),
                    "{}({a}, {b}) = {p} is outside {:?}",
                    m.name,
                    m.product_range()
                );
            }
        }
    }
}

#[test]
fn integer_registry_lists_the_shipped_models_sorted_and_unique() {
    let names: Vec<&str> = INT_MODELS.iter().map(|m| m.name).collect();
    for (want, signed) in [
        ("exact8s", true),
        ("exact8u", false),
        ("mul8s_BAM08", true),
        ("mul8s_drum4", true),
        ("mul8s_mitchell", true),
        ("mul8s_trunc4", true),
        ("mul8u_BAM61", false),
        ("mul8u_drum4", false),
        ("mul8u_mitchell", false),
        ("mul8u_trunc4", false),
    ] {
        assert_eq!(model(want).signed, signed, "{want} signedness");
    }
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.into_iter().collect::<Vec<_>>(), names);
    // Float and integer models share the spec namespace.
    for m in INT_MODELS {
        assert!(
            models::find(m.name).is_err(),
            "{} is also a float model",
            m.name
        );
    }
    let err = models::find_int("mul8u_none").unwrap_err().to_string();
    assert!(
        err.contains("exact8s"),
        "the error should list the known models: {err}"
    );
}

#[test]
fn integer_registry_matches_the_compiled_c_info_records() {
    let compiled = models::compiled_int_info_records();
    assert_eq!(compiled.len(), INT_MODELS.len());
    for (m, record) in INT_MODELS.iter().zip(compiled) {
        match record {
            Some((name, info)) => {
                assert!(
                    name.is_empty() || name == m.name,
                    "{}: record names {name}",
                    m.name
                );
                assert_eq!(CompiledIntInfo::of(m), info, "{}", m.name);
            }
            None => assert!(
                m.description.contains("no info record"),
                "{}",
                m.description
            ),
        }
    }
}
