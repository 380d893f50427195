//! 2-D max pooling, NCHW, no padding.
//!
//! Shapes: `x [N, C, H, W]`, `y [N, C, OH, OW]` with
//! `OH = (H - K) / S + 1` (likewise OW).
//!
//! - forward:  `y[n,c,oh,ow] = max over the K x K window at (oh·S, ow·S)`;
//!   the first maximum in row-major window order wins a tie; a NaN in the
//!   window gives NaN.
//! - backward: each `dy` goes to the input position that won its window
//!   (summed where windows overlap).

use rayon::prelude::*;

use super::{min_planes_per_task, split_batch, Layer};
use crate::{NetError, Result, Tensor};

/// Max pooling with a square `k x k` window and stride `s`.
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    name: String,
    kernel: usize,
    stride: usize,
    /// Backward cache: for each output, the flat index into `x` of its
    /// maximum.
    cache_argmax: Vec<usize>,
    /// Backward cache: the input shape of the last training forward.
    cache_shape: Vec<usize>,
}

impl MaxPool2d {
    /// A `kernel x kernel` pool with stride `stride` (both at least 1).
    pub fn new(name: &str, kernel: usize, stride: usize) -> MaxPool2d {
        MaxPool2d {
            name: name.to_string(),
            kernel: kernel.max(1),
            stride: stride.max(1),
            cache_argmax: Vec::new(),
            cache_shape: Vec::new(),
        }
    }
}

/// Output side of a `k`-window, stride-`s` pool over `n` inputs, or an
/// error naming the layer.
pub(crate) fn pool_out(who: &str, sample: &[usize], k: usize, s: usize) -> Result<(usize, usize)> {
    if sample.len() != 3 || sample[1] < k || sample[2] < k {
        return Err(NetError::shape(format!(
            "{who}: expected samples [C, H, W] with H, W >= {k}, got {sample:?}"
        )));
    }
    Ok(((sample[1] - k) / s + 1, (sample[2] - k) / s + 1))
}

/// Whether `v` takes the place of the running maximum `best` (the first
/// maximum wins a tie; the first NaN wins, so that NaN propagates).
#[inline(always)]
fn takes(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// One plane of a `k x k`, stride-`s` pool: `out[oh * ow_n + ow]` the
/// maximum of the window at `(oh*s, ow*s)` of `xp` (rows of `w`), `arg` its
/// index plus `base`.
#[allow(clippy::too_many_arguments)]
fn pool_plane(
    xp: &[f32],
    w: usize,
    k: usize,
    s: usize,
    ow_n: usize,
    base: usize,
    out: &mut [f32],
    arg: &mut [usize],
) {
    for (oh, (orow, arow)) in out
        .chunks_exact_mut(ow_n)
        .zip(arg.chunks_exact_mut(ow_n))
        .enumerate()
    {
        for (ow, (o, a)) in orow.iter_mut().zip(arow.iter_mut()).enumerate() {
            let start = oh * s * w + ow * s;
            let (mut best, mut bv) = (start, xp[start]);
            for kh in 0..k {
                let row = start + kh * w;
                for (kw, &v) in xp[row..row + k].iter().enumerate() {
                    // Selects, not branches: which element wins is data,
                    // and mispredicted branches cost more than the
                    // comparisons.
                    let take = takes(v, bv);
                    best = if take { row + kw } else { best };
                    bv = if take { v } else { bv };
                }
            }
            *o = bv;
            *a = base + best;
        }
    }
}

/// One plane of the 2x2, stride-2 pool (LeNet's): the general loop's
/// choice, window by window in the same row-major order, with the rows
/// sliced once so that the inner loop has no index arithmetic or bounds
/// checks left (the general loop spends most of its time on those).
fn pool_2x2(xp: &[f32], w: usize, ow_n: usize, base: usize, out: &mut [f32], arg: &mut [usize]) {
    for (oh, (orow, arow)) in out
        .chunks_exact_mut(ow_n)
        .zip(arg.chunks_exact_mut(ow_n))
        .enumerate()
    {
        let top = 2 * oh * w;
        let (r0, r1) = (&xp[top..top + 2 * ow_n], &xp[top + w..top + w + 2 * ow_n]);
        for (ow, ((o, a), (p0, p1))) in orow
            .iter_mut()
            .zip(arow.iter_mut())
            .zip(r0.chunks_exact(2).zip(r1.chunks_exact(2)))
            .enumerate()
        {
            let at = base + top + 2 * ow;
            let (mut bv, mut best) = (p0[0], at);
            for (v, i) in [(p0[1], at + 1), (p1[0], at + w), (p1[1], at + w + 1)] {
                let t = takes(v, bv);
                best = if t { i } else { best };
                bv = if t { v } else { bv };
            }
            *o = bv;
            *a = best;
        }
    }
}

impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "MaxPool2d({}x{}, stride {})",
            self.kernel, self.kernel, self.stride
        )
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        let (oh, ow) = pool_out(&self.name, sample, self.kernel, self.stride)?;
        Ok(vec![sample[0], oh, ow])
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Pooling);
        let (n, sample) = split_batch(&self.name, x)?;
        let (k, s) = (self.kernel, self.stride);
        let (oh_n, ow_n) = pool_out(&self.name, sample, k, s)?;
        let (c, h, w) = (sample[0], sample[1], sample[2]);
        let mut y = Tensor::zeros(&[n, c, oh_n, ow_n]);
        let plane_out = oh_n * ow_n;
        // Reuse the cache's buffer in training; evaluation leaves it alone.
        let mut argmax = if train {
            std::mem::take(&mut self.cache_argmax)
        } else {
            Vec::new()
        };
        argmax.clear();
        argmax.resize(y.len(), 0);
        // Planes are independent: one task per group of planes.
        y.data
            .par_chunks_mut(plane_out)
            .zip(argmax.par_chunks_mut(plane_out))
            .enumerate()
            .with_min_len(min_planes_per_task(h * w))
            .for_each(|(p, (out, arg))| {
                let base = p * h * w;
                let xp = &x.data[base..base + h * w];
                if k == 2 && s == 2 {
                    pool_2x2(xp, w, ow_n, base, out, arg);
                } else {
                    pool_plane(xp, w, k, s, ow_n, base, out, arg);
                }
            });
        if train {
            self.cache_argmax = argmax;
            self.cache_shape.clone_from(&x.shape);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Pooling);
        if dy.len() != self.cache_argmax.len() || self.cache_shape.is_empty() {
            return Err(NetError::shape(format!(
                "{}: backward got {:?} for {} cached outputs",
                self.name,
                dy.shape,
                self.cache_argmax.len()
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let mut dx = Tensor::zeros(&self.cache_shape);
        let plane_in = self.cache_shape[2] * self.cache_shape[3];
        let plane_out = dy.per_sample() / self.cache_shape[1];
        // Each output's maximum lies in its own plane, so planes are
        // independent; inside one, overlapping windows add in output order.
        dx.data
            .par_chunks_mut(plane_in)
            .zip(dy.data.par_chunks(plane_out))
            .zip(self.cache_argmax.par_chunks(plane_out))
            .enumerate()
            .with_min_len(min_planes_per_task(plane_in))
            .for_each(|(p, ((dxp, dyp), arg))| {
                let base = p * plane_in;
                for (&g, &idx) in dyp.iter().zip(arg) {
                    dxp[idx - base] += g;
                }
            });
        Ok(Some(dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The 2x2 stride-2 path picks what the general loop picks, window by
    /// window: ties (values from a set of four), NaNs, infinities and odd
    /// sides (a last row or column outside every window).
    #[test]
    fn two_by_two_path_matches_the_general_loop() {
        let seed = amsim::test_seed("two_by_two_path_matches_the_general_loop");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0];
        for _ in 0..200 {
            let (h, w) = (rng.gen_range(2..12), rng.gen_range(2..12));
            let (oh_n, ow_n) = ((h - 2) / 2 + 1, (w - 2) / 2 + 1);
            let xp: Vec<f32> = (0..h * w)
                .map(|_| {
                    if rng.gen_bool(0.1) {
                        specials[rng.gen_range(0..specials.len())]
                    } else {
                        rng.gen_range(0..4) as f32
                    }
                })
                .collect();
            let base = rng.gen_range(0..1000);
            let (mut o1, mut a1) = (vec![0.0; oh_n * ow_n], vec![0; oh_n * ow_n]);
            let (mut o2, mut a2) = (vec![0.0; oh_n * ow_n], vec![0; oh_n * ow_n]);
            pool_2x2(&xp, w, ow_n, base, &mut o1, &mut a1);
            pool_plane(&xp, w, 2, 2, ow_n, base, &mut o2, &mut a2);
            assert_eq!(a1, a2, "argmax, {h}x{w} plane {xp:?}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&o1), bits(&o2), "maxima, {h}x{w} plane {xp:?}");
        }
    }
}
