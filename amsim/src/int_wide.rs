//! 12- and 16-bit integer multipliers and their matrix products.
//!
//! A [`WideIntMul`] is an `n`-bit integer model (`n` = 12 or 16, EvoApprox's
//! `int32_t mulNs_X(int16_t, int16_t)` / `uint32_t mulNu_X(uint16_t,
//! uint16_t)`) in the form the products use:
//! - 12 bits: tabulated over all 4096 x 4096 operand pairs (16M `i32`
//!   entries, 64 MiB, built in parallel; the resolver keeps one per model),
//!   index `(a mod 4096) << 12 | (b mod 4096)` (the low 12 bits of each
//!   operand, its two's complement for a signed model), first operand major;
//! - 16 bits: 2^32 pairs (16 GiB of `i32`) are no table; the model is
//!   called for every product, as `direct:` does for float models.
//!
//! Operands are integer *values* (`i32`), not byte codes as in the 8-bit
//! engine ([`crate::int_gemm`]): an `n`-bit value does not fit a byte, and
//! a value is what the quantizer computes anyway. The quantization, the
//! zero points and their exact corrections are the 8-bit scheme's
//! ([`crate::int_gemm::offset_product`]):
//! `P(a, b) - zb·a - za·b + za·zb`, with `P` the model's product. An
//! unsigned model given a negative value (a symmetric tensor) takes it in
//! sign-magnitude, as [`crate::IntLut::with_signs`] does for 8 bits:
//! `P(a, b) = sign(a)·sign(b)·M(|a|, |b|)`.
//!
//! # Sums
//!
//! Exact in `i64`. A product of the model lies in its `2n`-bit range, at
//! most `2^32` in magnitude (a 16-bit unsigned product), and each
//! correction term `zb·a`, `za·b`, `za·zb` is at most `2^16·2^16 = 2^32`,
//! so one offset product is below `2^34` in magnitude and a sum of `k <=`
//! [`MAX_K`] `= 2^29` of them below `2^63`: it cannot overflow. Every
//! product checks `k` against that bound and returns an error past it
//! (a dot product that long is 512M terms, far past any layer here). In
//! `i32` the sums would overflow: a 12-bit signed product reaches `2^22`,
//! so 512 of them can pass `2^31`.
//!
//! Integer sums in any order give the same bits, so the parallel engine
//! ([`wide_gemm`]) is bit-exact with the reference ([`wide_gemm_reference`],
//! one product at a time in the order of `p`).

use rayon::prelude::*;

use crate::model::{wide_operand_range, wide_product_range};
use crate::{AmsimError, Result, WideIntModelFn, WideIntModelInfo};

/// Widest operands that are tabulated; wider models are called per product.
pub const MAX_TABLE_BITS: u32 = 12;

/// Longest dot product whose `i64` sum cannot overflow (module doc).
pub const MAX_K: usize = 1 << 29;

/// How the products of a [`WideIntMul`] are formed.
#[derive(Clone)]
enum Products {
    /// Every product, `2^bits x 2^bits` entries, first operand major.
    Table(std::sync::Arc<Vec<i32>>),
    /// The model, called for every product.
    Direct(WideIntModelFn),
}

/// A 12- or 16-bit integer multiplier (module doc).
#[derive(Clone)]
pub struct WideIntMul {
    model: String,
    bits: u32,
    signed: bool,
    products: Products,
}

impl std::fmt::Debug for WideIntMul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WideIntMul({}, {} bits, {}, {})",
            self.model,
            self.bits,
            if self.signed { "signed" } else { "unsigned" },
            if self.is_table() { "table" } else { "direct" }
        )
    }
}

/// `int12s`, `int16u`, ... for messages.
pub fn kind_name(bits: u32, signed: bool) -> String {
    format!("int{bits}{}", if signed { "s" } else { "u" })
}

impl WideIntMul {
    /// A registered 12- or 16-bit model: tabulated at 12 bits, called per
    /// product at 16.
    pub fn of(info: &WideIntModelInfo) -> Result<WideIntMul> {
        WideIntMul::new(info.name, info.bits, info.signed, info.func)
    }

    /// The model `func` of `bits`-bit operands (2..=16): tabulated (and
    /// every product checked against the `2·bits`-bit range) up to
    /// [`MAX_TABLE_BITS`], else called per product, which needs the full
    /// 32-bit product range of a 16-bit model's C type (every value the
    /// model can return is then in range).
    pub fn new(name: &str, bits: u32, signed: bool, func: WideIntModelFn) -> Result<WideIntMul> {
        if !(2..=16).contains(&bits) {
            return Err(AmsimError::Other(format!(
                "integer model '{name}': {bits}-bit operands are not supported (8-bit models use int8:, wider ones 12 or 16 bits)"
            )));
        }
        if bits > MAX_TABLE_BITS && bits != 16 {
            return Err(AmsimError::Other(format!(
                "integer model '{name}': {bits}-bit operands are too wide for a table and narrower than the 32-bit product of a called model; use 12 or 16 bits"
            )));
        }
        let products = if bits <= MAX_TABLE_BITS {
            Products::Table(std::sync::Arc::new(tabulate(name, bits, signed, func)?))
        } else {
            Products::Direct(func)
        };
        Ok(WideIntMul {
            model: name.to_string(),
            bits,
            signed,
            products,
        })
    }

    /// Name of the model.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    /// Operand width in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Whether the model's operands are signed.
    pub fn signed(&self) -> bool {
        self.signed
    }

    /// Whether the products come from a table (else from the model).
    pub fn is_table(&self) -> bool {
        matches!(self.products, Products::Table(_))
    }

    /// The table's entries (`None` for a model called per product).
    pub fn table(&self) -> Option<&[i32]> {
        match &self.products {
            Products::Table(t) => Some(t),
            Products::Direct(_) => None,
        }
    }

    /// The model's operand values.
    pub fn operand_range(&self) -> std::ops::RangeInclusive<i32> {
        wide_operand_range(self.bits, self.signed)
    }

    /// The model's product values.
    pub fn product_range(&self) -> std::ops::RangeInclusive<i64> {
        wide_product_range(self.bits, self.signed)
    }

    /// The product of operand values `a` and `b`: the model's for values
    /// in its operand range; for an unsigned model and a negative value,
    /// sign-magnitude (module doc). Values outside both are a caller's
    /// bug (the quantizer clamps to the range).
    #[inline]
    pub fn mul(&self, a: i32, b: i32) -> i64 {
        if self.signed || (a >= 0 && b >= 0) {
            return self.raw(a, b);
        }
        let p = self.raw(a.abs(), b.abs());
        if (a < 0) != (b < 0) {
            -p
        } else {
            p
        }
    }

    /// The model's product of two values in its operand range.
    #[inline]
    fn raw(&self, a: i32, b: i32) -> i64 {
        match &self.products {
            Products::Table(t) => i64::from(t[self.index(a, b)]),
            Products::Direct(f) => f(a, b),
        }
    }

    /// The table index of `(a, b)`.
    #[inline]
    fn index(&self, a: i32, b: i32) -> usize {
        let mask = (1u32 << self.bits) - 1;
        (((a as u32 & mask) << self.bits) | (b as u32 & mask)) as usize
    }

    /// `c_row[j] += mul(a, b_row[j])` for every `j`: the inner loop of the
    /// engines, with the table row of `a` (or the model) chosen once.
    #[inline]
    fn add_row(&self, a: i32, b_row: &[i32], c_row: &mut [i64]) {
        let (sign_a, mag_a) = if self.signed || a >= 0 {
            (1, a)
        } else {
            (-1, -a)
        };
        let mask = (1u32 << self.bits) - 1;
        match &self.products {
            Products::Table(t) => {
                let row =
                    &t[((mag_a as u32 & mask) as usize) << self.bits..][..1usize << self.bits];
                if self.signed {
                    for (c, &b) in c_row.iter_mut().zip(b_row) {
                        *c += i64::from(row[(b as u32 & mask) as usize]);
                    }
                } else {
                    for (c, &b) in c_row.iter_mut().zip(b_row) {
                        let p = i64::from(row[b.unsigned_abs() as usize & mask as usize]);
                        *c += if (b < 0) != (sign_a < 0) { -p } else { p };
                    }
                }
            }
            Products::Direct(f) => {
                if self.signed {
                    for (c, &b) in c_row.iter_mut().zip(b_row) {
                        *c += f(a, b);
                    }
                } else {
                    for (c, &b) in c_row.iter_mut().zip(b_row) {
                        let p = f(mag_a, b.abs());
                        *c += if (b < 0) != (sign_a < 0) { -p } else { p };
                    }
                }
            }
        }
    }
}

/// Every product of `func` over the `bits`-bit operands, checked against
/// the `2·bits`-bit range, rows in parallel.
fn tabulate(name: &str, bits: u32, signed: bool, func: WideIntModelFn) -> Result<Vec<i32>> {
    let side = 1usize << bits;
    let value = |c: usize| -> i32 {
        if signed {
            // Sign-extend the low `bits` bits.
            ((c as i32) << (32 - bits)) >> (32 - bits)
        } else {
            c as i32
        }
    };
    let range = wide_product_range(bits, signed);
    let mut table = vec![0i32; side * side];
    // The first bad pair (in table order), whichever thread finds it.
    let first_bad = table
        .par_chunks_mut(side)
        .enumerate()
        .filter_map(|(i, row)| {
            let a = value(i);
            for (j, t) in row.iter_mut().enumerate() {
                let b = value(j);
                let p = func(a, b);
                if !range.contains(&p) {
                    return Some((i, a, b, p));
                }
                // 2·bits <= 24 bits: fits i32.
                *t = p as i32;
            }
            None
        })
        .min_by_key(|&(i, ..)| i);
    if let Some((_, a, b, p)) = first_bad {
        return Err(bad_product(name, bits, signed, a, b, p));
    }
    Ok(table)
}

/// The error for a product outside the model's declared range.
pub fn bad_product(name: &str, bits: u32, signed: bool, a: i32, b: i32, p: i64) -> AmsimError {
    let range = wide_product_range(bits, signed);
    AmsimError::Other(format!(
        "{} model '{name}' returned {p} for the operands ({a}, {b}), outside its {}-bit product range {}..={}; fix the model",
        kind_name(bits, signed),
        2 * bits,
        range.start(),
        range.end()
    ))
}

/// An operand of a wide integer product: row-major values and the value
/// of the real zero (its zero point: 0 for a symmetric operand).
#[derive(Debug, Clone, Copy)]
pub struct WideOperand<'a> {
    /// Row-major integer values.
    pub values: &'a [i32],
    /// The value that stands for zero.
    pub zero: i32,
}

impl<'a> WideOperand<'a> {
    /// Values with zero point `zero`.
    pub fn new(values: &'a [i32], zero: i32) -> Self {
        WideOperand { values, zero }
    }
}

/// The product of values `a` and `b` with the zero points `za`, `zb`
/// taken out: `P(a, b) - zb·a - za·b + za·zb` (exact; for an exact model
/// `(a - za)(b - zb)`).
#[inline]
pub fn offset_product(mul: &WideIntMul, a: i32, za: i32, b: i32, zb: i32) -> i64 {
    let (a64, b64, za64, zb64) = (i64::from(a), i64::from(b), i64::from(za), i64::from(zb));
    mul.mul(a, b) - zb64 * a64 - za64 * b64 + za64 * zb64
}

/// An error unless `k` terms sum without overflow.
pub(crate) fn check_k(k: usize) -> Result<()> {
    if k > MAX_K {
        return Err(AmsimError::shape(format!(
            "integer product: a dot product of {k} terms is longer than {MAX_K}, past which its i64 sum could overflow; split it"
        )));
    }
    Ok(())
}

fn check_shapes(a: &[i32], b: &[i32], c: &[i64], m: usize, n: usize, k: usize) -> Result<()> {
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    if !fits(a.len(), m, k) || !fits(b.len(), k, n) || !fits(c.len(), m, n) {
        return Err(AmsimError::shape(format!(
            "integer GEMM: A has {} values for {m} x {k}, B {} for {k} x {n}, C {} for {m} x {n}",
            a.len(),
            b.len(),
            c.len()
        )));
    }
    check_k(k)
}

/// The definition: `C[i][j] = sum_p offset_product(A[i][p], B[p][j])`,
/// one product at a time in the order of `p`, row-major operands.
pub fn wide_gemm_reference(
    mul: &WideIntMul,
    a: WideOperand,
    b: WideOperand,
    c: &mut [i64],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    check_shapes(a.values, b.values, c, m, n, k)?;
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0i64;
            for p in 0..k {
                let (x, y) = (a.values[i * k + p], b.values[p * n + j]);
                sum += offset_product(mul, x, a.zero, y, b.zero);
            }
            c[i * n + j] = sum;
        }
    }
    Ok(())
}

/// `C = A·B` with the zero points taken out, output rows in parallel on
/// the rayon pool: the model's products summed row by row (the table row
/// of `A[i][p]` walked along `B`'s row `p`), then the exact corrections
/// `- zb·rowsum(A) - za·colsum(B) + k·za·zb`. Bit-exact with
/// [`wide_gemm_reference`].
pub fn wide_gemm(
    mul: &WideIntMul,
    a: WideOperand,
    b: WideOperand,
    c: &mut [i64],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    check_shapes(a.values, b.values, c, m, n, k)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (za, zb) = (i64::from(a.zero), i64::from(b.zero));
    let mut col_terms = vec![0i64; n];
    if za != 0 {
        for row in b.values.chunks_exact(n).take(k) {
            for (t, &v) in col_terms.iter_mut().zip(row) {
                *t += i64::from(v);
            }
        }
        for t in &mut col_terms {
            *t *= za;
        }
    }
    let constant = k as i64 * za * zb;
    // Jobs of several rows when rows are short (a convolution's channels).
    let rows_per_job = (1024 / n).max(1);
    c.par_chunks_mut(rows_per_job * n)
        .enumerate()
        .for_each(|(job, c_rows)| {
            for (r, c_row) in c_rows.chunks_exact_mut(n).enumerate() {
                let i = job * rows_per_job + r;
                let a_row = &a.values[i * k..][..k];
                c_row.fill(0);
                for (p, &x) in a_row.iter().enumerate() {
                    mul.add_row(x, &b.values[p * n..][..n], c_row);
                }
                let row_sum: i64 = a_row.iter().map(|&x| i64::from(x)).sum();
                let row_term = constant - zb * row_sum;
                for (x, t) in c_row.iter_mut().zip(&col_terms) {
                    *x += row_term - t;
                }
            }
        });
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::tests::test_seed;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A model with no structure: a hash of the operands, spread over the
    /// whole product range (so that a misplaced index shows).
    pub(crate) fn scrambled_12s(a: i32, b: i32) -> i64 {
        let h = (a as u32).wrapping_mul(0x9E37_79B1) ^ (b as u32).wrapping_mul(0x85EB_CA77);
        i64::from((h >> 8) as i32 - (1 << 23))
    }

    pub(crate) fn scrambled_12u(a: i32, b: i32) -> i64 {
        scrambled_12s(a, b) + (1 << 23)
    }

    pub(crate) fn scrambled_16s(a: i32, b: i32) -> i64 {
        let h = (a as u32).wrapping_mul(0x9E37_79B1) ^ (b as u32).wrapping_mul(0x85EB_CA77);
        i64::from(h as i32)
    }

    pub(crate) fn scrambled_16u(a: i32, b: i32) -> i64 {
        scrambled_16s(a, b) + (1 << 31)
    }

    /// The four kinds: 12/16 bits, signed/unsigned.
    pub(crate) fn scrambled_models() -> Vec<WideIntMul> {
        vec![
            WideIntMul::new("s12", 12, true, scrambled_12s).unwrap(),
            WideIntMul::new("u12", 12, false, scrambled_12u).unwrap(),
            WideIntMul::new("s16", 16, true, scrambled_16s).unwrap(),
            WideIntMul::new("u16", 16, false, scrambled_16u).unwrap(),
        ]
    }

    /// Random values of `mul`'s operands: its range, and for an unsigned
    /// model also negative values (symmetric tensors, sign-magnitude).
    pub(crate) fn random_values(rng: &mut ChaCha8Rng, mul: &WideIntMul, len: usize) -> Vec<i32> {
        let r = mul.operand_range();
        let lo = if mul.signed() { *r.start() } else { -*r.end() };
        (0..len).map(|_| rng.gen_range(lo..=*r.end())).collect()
    }

    #[test]
    fn twelve_bit_tables_hold_the_model_products_and_sixteen_bit_models_are_called() {
        let seed = test_seed(
            "twelve_bit_tables_hold_the_model_products_and_sixteen_bit_models_are_called",
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let funcs: [WideIntModelFn; 4] =
            [scrambled_12s, scrambled_12u, scrambled_16s, scrambled_16u];
        for (mul, func) in scrambled_models().iter().zip(funcs) {
            assert_eq!(mul.is_table(), mul.bits() == 12, "{mul:?}");
            if let Some(t) = mul.table() {
                assert_eq!(t.len(), 4096 * 4096);
            }
            let r = mul.operand_range();
            for _ in 0..20_000 {
                let (a, b) = (rng.gen_range(r.clone()), rng.gen_range(r.clone()));
                assert_eq!(mul.mul(a, b), func(a, b), "seed {seed}: {mul:?} {a} x {b}");
                if !mul.signed() && a > 0 && b > 0 {
                    assert_eq!(
                        mul.mul(-a, b),
                        -func(a, b),
                        "seed {seed}: {mul:?} -{a} x {b}"
                    );
                    assert_eq!(mul.mul(-a, -b), func(a, b), "seed {seed}: {mul:?}");
                }
            }
        }
    }

    #[test]
    fn products_outside_the_declared_range_are_a_one_line_error_naming_the_pair() {
        // One product just past the signed 24-bit range.
        fn wide(a: i32, b: i32) -> i64 {
            if (a, b) == (0, 5) {
                1 << 23
            } else {
                i64::from(a * b)
            }
        }
        let err = WideIntMul::new("wide", 12, true, wide)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'wide'")
                && err.contains("8388608 for the operands (0, 5)")
                && err.contains("-8388608..=8388607"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        fn negative(a: i32, b: i32) -> i64 {
            i64::from(a * b) - 1
        }
        let err = WideIntMul::new("neg", 12, false, negative)
            .unwrap_err()
            .to_string();
        // Every pair is out of range; the first in table order is named.
        assert!(
            err.contains("-1 for the operands (0, 0)") && err.contains("int12u"),
            "{err}"
        );
        let err = WideIntMul::new("odd", 14, true, wide)
            .unwrap_err()
            .to_string();
        assert!(err.contains("12 or 16"), "{err}");
    }

    #[test]
    fn wide_gemm_matches_the_reference_bit_exactly_on_random_shapes() {
        let seed = test_seed("wide_gemm_matches_the_reference_bit_exactly_on_random_shapes");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let models = scrambled_models();
        for case in 0..24 {
            let mul = &models[case % models.len()];
            let (m, n, k) = (
                rng.gen_range(1..30),
                rng.gen_range(1..200),
                rng.gen_range(0..60),
            );
            let a = random_values(&mut rng, mul, m * k);
            let b = random_values(&mut rng, mul, k * n);
            let za = if case % 3 == 0 {
                0
            } else {
                rng.gen_range(mul.operand_range())
            };
            let zb = if case % 4 == 0 {
                0
            } else {
                rng.gen_range(mul.operand_range())
            };
            let (ao, bo) = (WideOperand::new(&a, za), WideOperand::new(&b, zb));
            let mut want = vec![0; m * n];
            wide_gemm_reference(mul, ao, bo, &mut want, m, n, k).unwrap();
            let mut got = vec![7; m * n];
            wide_gemm(mul, ao, bo, &mut got, m, n, k).unwrap();
            assert_eq!(
                got, want,
                "seed {seed}, case {case}: {mul:?} {m} x {n} x {k}"
            );
        }
    }

    #[test]
    fn wide_gemm_of_exact_models_is_the_product_of_the_quantized_values() {
        let seed = test_seed("wide_gemm_of_exact_models_is_the_product_of_the_quantized_values");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let exact =
            WideIntMul::new("exact16s", 16, true, |a, b| i64::from(a) * i64::from(b)).unwrap();
        let (m, n, k) = (5, 7, 300);
        let a = random_values(&mut rng, &exact, m * k);
        let b = random_values(&mut rng, &exact, k * n);
        let (za, zb) = (rng.gen_range(-32768..=32767), 0);
        let mut got = vec![0; m * n];
        wide_gemm(
            &exact,
            WideOperand::new(&a, za),
            WideOperand::new(&b, zb),
            &mut got,
            m,
            n,
            k,
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: i64 = (0..k)
                    .map(|p| (i64::from(a[i * k + p]) - i64::from(za)) * i64::from(b[p * n + j]))
                    .sum();
                assert_eq!(got[i * n + j], want, "seed {seed}: ({i}, {j})");
            }
        }
        // (-32768)^2 x 300 passes i32 by far; i64 holds it.
        let a = vec![-32768; k];
        let mut c = vec![0; 1];
        wide_gemm(
            &exact,
            WideOperand::new(&a, 0),
            WideOperand::new(&a, 0),
            &mut c,
            1,
            1,
            k,
        )
        .unwrap();
        assert_eq!(c[0], 300 * (1i64 << 30));
    }

    #[test]
    fn wide_gemm_is_the_same_on_one_and_three_threads_and_checks_shapes() {
        let seed = test_seed("wide_gemm_is_the_same_on_one_and_three_threads_and_checks_shapes");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mul = &scrambled_models()[0];
        let (m, n, k) = (67, 300, 129);
        let a = random_values(&mut rng, mul, m * k);
        let b = random_values(&mut rng, mul, k * n);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0; m * n];
            pool.install(|| {
                wide_gemm(
                    mul,
                    WideOperand::new(&a, 3),
                    WideOperand::new(&b, 0),
                    &mut c,
                    m,
                    n,
                    k,
                )
            })
            .unwrap();
            c
        };
        assert_eq!(run(1), run(3), "seed {seed}");
        let mut c = vec![0; 4];
        let err = wide_gemm(
            mul,
            WideOperand::new(&a[..4], 0),
            WideOperand::new(&b[..4], 0),
            &mut c,
            2,
            3,
            2,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("2 x 3"), "{err}");
    }
}
