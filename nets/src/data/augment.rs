//! On-the-fly image augmentation: random crop with zero padding and random
//! horizontal flip, the standard CIFAR-10 recipe of He et al., "Deep
//! Residual Learning for Image Recognition", CVPR 2016, section 4.2 ("4
//! pixels are padded on each side, and a 32x32 crop is randomly sampled from
//! the padded image or its horizontal flip").
//!
//! It works on images that are already normalised, so the padding is zero
//! in normalised space (the mean colour), as in fb.resnet.torch's CIFAR
//! pipeline (`ColorNormalize`, then `HorizontalFlip`, then
//! `RandomCrop(32, 4)` with zero padding).
//!
//! Each sample draws from its own stream, `(seed, Augment, epoch, index)`
//! with `index` its position in the dataset, so the augmented batch does not
//! depend on the batch size, the thread count or the thread that prepares
//! it, and a resumed run sees the same images.

use rand::Rng;

use crate::rng::{rng_for, Purpose};

/// Random crop with `pad` pixels of zero padding on each side and, with
/// `flip`, a horizontal flip with probability 1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augmentation {
    /// Padding on each side before the crop (0: no crop).
    pub pad: usize,
    /// Flip left-right with probability 1/2.
    pub flip: bool,
}

impl Augmentation {
    /// The CIFAR recipe: 4-pixel padding, random crop, random flip.
    pub fn cifar() -> Augmentation {
        Augmentation { pad: 4, flip: true }
    }

    /// Write the augmented version of sample `index` (`src`, laid out
    /// `[C, H, W]` with planes of `h x w`) for epoch `epoch` of the run with
    /// `seed` into `out` (same length).
    ///
    /// `out[c, i, j] = src[c, i + dy, j' + dx]` with `j' = w-1-j` when
    /// flipped (else `j`), offsets `dy, dx` uniform in `[-pad, pad]`, and
    /// zero where that falls outside the image.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        src: &[f32],
        h: usize,
        w: usize,
        seed: u64,
        epoch: usize,
        index: usize,
        out: &mut [f32],
    ) {
        debug_assert_eq!(src.len(), out.len());
        let mut rng = rng_for(seed, Purpose::Augment, &[epoch as u64, index as u64]);
        let p = self.pad as i64;
        let dy = rng.gen_range(-p..=p);
        let dx = rng.gen_range(-p..=p);
        let flip = self.flip && rng.gen::<bool>();
        let (hi, wi) = (h as i64, w as i64);
        for (sp, op) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
            for i in 0..hi {
                let si = i + dy;
                let row = &mut op[(i * wi) as usize..((i + 1) * wi) as usize];
                if !(0..hi).contains(&si) {
                    row.fill(0.0);
                    continue;
                }
                let srow = &sp[(si * wi) as usize..((si + 1) * wi) as usize];
                for (j, o) in row.iter_mut().enumerate() {
                    let jj = if flip { wi - 1 - j as i64 } else { j as i64 };
                    let sj = jj + dx;
                    *o = if (0..wi).contains(&sj) {
                        srow[sj as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> u64 {
        amsim::test_seed("augment")
    }

    /// Every output value is either zero (padding) or the source pixel at a
    /// single crop offset and flip shared by all channels and pixels; the
    /// same (seed, epoch, index) gives the same image, and over many samples
    /// every offset in [-pad, pad] and both flips occur.
    #[test]
    fn crop_and_flip_move_whole_images_and_repeat_per_seed_epoch_index() {
        let seed = seed();
        let (c, h, w) = (3usize, 8usize, 8usize);
        // Distinct non-zero values, so the source position of each output
        // value is recoverable.
        let src: Vec<f32> = (0..c * h * w).map(|v| v as f32 + 1.0).collect();
        let aug = Augmentation { pad: 2, flip: true };
        let mut seen_offsets = std::collections::BTreeSet::new();
        let mut flips = [false; 2];
        for index in 0..200 {
            let mut out = vec![f32::NAN; src.len()];
            aug.apply(&src, h, w, seed, 3, index, &mut out);
            let mut again = vec![0.0; src.len()];
            aug.apply(&src, h, w, seed, 3, index, &mut again);
            assert_eq!(out, again, "sample {index} is not reproducible");
            // Find the transform that explains all the values.
            let mut found = None;
            'search: for flip in [false, true] {
                for dy in -2i64..=2 {
                    for dx in -2i64..=2 {
                        let ok = (0..c * h * w).all(|k| {
                            let (ch, i, j) = (k / (h * w), (k / w % h) as i64, (k % w) as i64);
                            let jj = if flip { w as i64 - 1 - j } else { j };
                            let (si, sj) = (i + dy, jj + dx);
                            let want = if (0..h as i64).contains(&si) && (0..w as i64).contains(&sj)
                            {
                                src[ch * h * w + si as usize * w + sj as usize]
                            } else {
                                0.0
                            };
                            out[k] == want
                        });
                        if ok {
                            found = Some((flip, dy, dx));
                            break 'search;
                        }
                    }
                }
            }
            let (flip, dy, dx) =
                found.unwrap_or_else(|| panic!("sample {index}: no crop/flip explains {out:?}"));
            flips[flip as usize] = true;
            seen_offsets.insert((dy, dx));
        }
        assert_eq!(flips, [true, true]);
        assert_eq!(seen_offsets.len(), 25, "offsets seen: {seen_offsets:?}");
        // A different epoch changes at least one of 200 samples.
        let differs = (0..200).any(|index| {
            let (mut a, mut b) = (vec![0.0; src.len()], vec![0.0; src.len()]);
            aug.apply(&src, h, w, seed, 3, index, &mut a);
            aug.apply(&src, h, w, seed, 4, index, &mut b);
            a != b
        });
        assert!(differs);
    }

    #[test]
    fn no_padding_and_no_flip_is_the_identity() {
        let seed = seed();
        let src: Vec<f32> = (0..2 * 5 * 7).map(|v| v as f32 * 0.5 - 3.0).collect();
        let mut out = vec![0.0; src.len()];
        Augmentation {
            pad: 0,
            flip: false,
        }
        .apply(&src, 5, 7, seed, 0, 9, &mut out);
        assert_eq!(out, src);
    }
}
