//! Blocked accumulation of a dot product (DESIGN.md, "The arithmetic").
//!
//! Every AMSim dot product sums its products in FP32 in blocks of
//! [`ACC_BLOCK`] consecutive terms: within a block in increasing order from
//! `+0.0` (no fused multiply-add of the rounded product), then the block sums
//! in increasing block order from `+0.0`. For at most `ACC_BLOCK` terms this
//! is the plain sequential sum, because `+0.0 + s == s` for every block sum
//! `s` (a sum that starts at `+0.0` is never `-0.0` under round-to-nearest).
//!
//! The block size is part of the arithmetic, the same on every backend and
//! at every thread count: a thread pool or a GPU may split a long dot product
//! (a weight gradient sums over the whole batch) at block boundaries and add
//! the block sums in order afterwards without changing a bit.

/// Terms per accumulation block.
pub const ACC_BLOCK: usize = 1024;

/// A running blocked sum: the executable definition of the accumulation
/// order, used by every scalar reference.
#[derive(Debug, Clone, Copy)]
pub struct BlockedSum {
    total: f32,
    block: f32,
    count: usize,
}

impl Default for BlockedSum {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockedSum {
    /// An empty sum.
    #[inline]
    pub const fn new() -> Self {
        BlockedSum {
            total: 0.0,
            block: 0.0,
            count: 0,
        }
    }

    /// Add the next term (an already rounded product).
    #[inline]
    pub fn add(&mut self, term: f32) {
        self.block += term;
        self.count += 1;
        if self.count == ACC_BLOCK {
            self.total += self.block;
            self.block = 0.0;
            self.count = 0;
        }
    }

    /// The sum of the terms added so far.
    #[inline]
    pub fn finish(&self) -> f32 {
        if self.count == 0 {
            self.total
        } else {
            self.total + self.block
        }
    }
}

/// Sum `terms` with the blocked order.
pub fn blocked_sum(terms: impl IntoIterator<Item = f32>) -> f32 {
    let mut s = BlockedSum::new();
    for t in terms {
        s.add(t);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sums_are_the_plain_sequential_sum() {
        let terms: Vec<f32> = (0..ACC_BLOCK)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.37)
            .collect();
        for len in [0, 1, 2, 17, ACC_BLOCK - 1, ACC_BLOCK] {
            let plain = terms[..len].iter().fold(0.0f32, |a, &t| a + t);
            assert_eq!(
                blocked_sum(terms[..len].iter().copied()).to_bits(),
                plain.to_bits()
            );
        }
    }

    #[test]
    fn long_sums_add_block_sums_in_order() {
        // 1.0 followed by many terms below half an ulp of the running sum:
        // the plain sum never moves, nor does the first block's (it starts
        // with the 1.0); the later blocks collect them from +0.0.
        let tiny = 2f32.powi(-25);
        let mut terms = vec![1.0f32];
        terms.extend(std::iter::repeat_n(tiny, 3 * ACC_BLOCK));
        let plain = terms.iter().fold(0.0f32, |a, &t| a + t);
        assert_eq!(plain, 1.0);
        let b0 = terms[..ACC_BLOCK].iter().fold(0.0f32, |a, &t| a + t);
        assert_eq!(b0, 1.0);
        let b1 = tiny * ACC_BLOCK as f32;
        let b2 = tiny * ACC_BLOCK as f32;
        let b3 = tiny;
        let expect = ((b0 + b1) + b2) + b3;
        assert_eq!(
            blocked_sum(terms.iter().copied()).to_bits(),
            expect.to_bits()
        );
        // 1 + 2^-14 + 2^-25 rounds to 1 + 2^-14.
        assert_eq!(expect, 1.0 + 2f32.powi(-14));
    }

    #[test]
    fn sums_never_end_negative_zero_from_positive_start() {
        let terms = vec![-0.0f32; 2 * ACC_BLOCK + 3];
        assert_eq!(blocked_sum(terms).to_bits(), 0.0f32.to_bits());
    }
}
