//! Seed derivation: every source of randomness in a run is a ChaCha8 stream
//! whose seed is derived from the run seed and a tag path (what it is for,
//! which epoch, which batch), so any part of a run can be replayed without
//! saving generator positions.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a derived stream is used for; the first element of the tag path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// Parameter initialisation (tagged further by parameter index).
    Init = 1,
    /// The shuffle of one epoch (tagged by epoch).
    Shuffle = 2,
    /// Dropout masks of one batch (tagged by epoch, batch, layer index).
    Dropout = 3,
    /// Data augmentation of one sample (tagged by epoch, sample index).
    Augment = 4,
}

/// SplitMix64 finaliser (Steele, Lea and Flood, "Fast splittable
/// pseudorandom number generators", OOPSLA 2014): a bijective mix that
/// spreads every input bit over the output.
#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit seed derived from `seed`, `purpose` and `tags`; different tag
/// paths give unrelated seeds.
pub fn derive_seed(seed: u64, purpose: Purpose, tags: &[u64]) -> u64 {
    let mut h = splitmix64(seed ^ splitmix64(purpose as u64));
    for &t in tags {
        h = splitmix64(h ^ splitmix64(t.wrapping_add(0x632b_e59b_d9b4_e019)));
    }
    h
}

/// A ChaCha8 generator for `derive_seed(seed, purpose, tags)`.
pub fn rng_for(seed: u64, purpose: Purpose, tags: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(seed, purpose, tags))
}

/// A ChaCha8 generator seeded with [`amsim::test_seed`].
#[cfg(test)]
pub(crate) fn test_rng(test: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(amsim::test_seed(test))
}
