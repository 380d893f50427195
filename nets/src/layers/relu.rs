//! Rectified linear unit, elementwise.
//!
//! Shapes: `x`, `y`, `dy`, `dx` all the same, any `[N, ...]`.
//!
//! - forward:  `y = max(x, 0)` (NaN stays NaN)
//! - backward: `dx = dy` where `x > 0`, else 0 (the subgradient at 0 is 0).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{split_batch, Layer, PAR_MIN_ELEMS};
use crate::vector::widened;
use crate::{NetError, Result, Tensor};

/// `y = max(x, 0)`.
#[derive(Debug, Clone)]
pub struct Relu {
    name: String,
    /// Backward cache: whether each input of the last training forward was
    /// positive.
    cache_positive: Vec<bool>,
}

impl Relu {
    /// A ReLU named `name`.
    pub fn new(name: &str) -> Relu {
        Relu {
            name: name.to_string(),
            cache_positive: Vec::new(),
        }
    }
}

impl Layer for Relu {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        "ReLU".into()
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        Ok(sample.to_vec())
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        split_batch(&self.name, x)?;
        let len = x.len();
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let spare = &mut out.spare_capacity_mut()[..len];
        if train {
            self.cache_positive.resize(len, false);
            spare
                .par_chunks_mut(PAR_MIN_ELEMS)
                .zip(self.cache_positive.par_chunks_mut(PAR_MIN_ELEMS))
                .zip(x.data.par_chunks(PAR_MIN_ELEMS))
                .for_each(|((y, p), x)| relu_train(x, y, p));
        } else {
            spare
                .par_chunks_mut(PAR_MIN_ELEMS)
                .zip(x.data.par_chunks(PAR_MIN_ELEMS))
                .for_each(|(y, x)| relu_eval(x, y));
        }
        // SAFETY: the chunks cover `out[..len]` and every element was
        // written above.
        unsafe { out.set_len(len) };
        let y = Tensor {
            shape: x.shape.clone(),
            data: out,
        };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        if dy.len() != self.cache_positive.len() {
            return Err(NetError::shape(format!(
                "{}: backward got {} gradients for {} cached inputs",
                self.name,
                dy.len(),
                self.cache_positive.len()
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let len = dy.len();
        let mut data: Vec<f32> = Vec::with_capacity(len);
        data.spare_capacity_mut()[..len]
            .par_chunks_mut(PAR_MIN_ELEMS)
            .zip(dy.data.par_chunks(PAR_MIN_ELEMS))
            .zip(self.cache_positive.par_chunks(PAR_MIN_ELEMS))
            .for_each(|((dx, dy), p)| relu_backward(dy, p, dx));
        // SAFETY: as in `forward`.
        unsafe { data.set_len(len) };
        Ok(Some(Tensor {
            shape: dy.shape.clone(),
            data,
        }))
    }
}

// `v < 0` rather than `max`: a NaN must propagate so that a diverging run
// is noticed, not hidden.
widened! {
    /// `y = max(x, 0)` and whether each `x` is positive.
    fn relu_train(x: &[f32], y: &mut [MaybeUninit<f32>], positive: &mut [bool]) {
        for ((y, p), &v) in y.iter_mut().zip(positive.iter_mut()).zip(x) {
            y.write(if v < 0.0 { 0.0 } else { v });
            *p = v > 0.0;
        }
    }
}

widened! {
    /// `y = max(x, 0)`.
    fn relu_eval(x: &[f32], y: &mut [MaybeUninit<f32>]) {
        for (y, &v) in y.iter_mut().zip(x) {
            y.write(if v < 0.0 { 0.0 } else { v });
        }
    }
}

widened! {
    /// `dx = dy` where the input was positive, else 0.
    fn relu_backward(dy: &[f32], positive: &[bool], dx: &mut [MaybeUninit<f32>]) {
        for ((dx, &d), &p) in dx.iter_mut().zip(dy).zip(positive) {
            dx.write(if p { d } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// The compiled versions of the loops give the portable loops' bits,
    /// NaN, infinities and signed zeros included.
    #[test]
    fn every_vector_width_gives_the_bits_of_the_portable_loops() {
        type Train = unsafe fn(&[f32], &mut [MaybeUninit<f32>], &mut [bool]);
        type Back = unsafe fn(&[f32], &[bool], &mut [MaybeUninit<f32>]);
        let mut versions: Vec<(&str, Train, Back)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                versions.push(("avx512", relu_train::avx512, relu_backward::avx512));
            }
            if std::is_x86_feature_detected!("avx2") {
                versions.push(("avx2", relu_train::avx2, relu_backward::avx2));
            }
        }
        if versions.is_empty() {
            eprintln!("skipped: this CPU has neither AVX2 nor AVX-512, only the portable loops");
            return;
        }
        let mut rng = crate::rng::test_rng("relu every_vector_width");
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        let len = rng.gen_range(1..200);
        let x: Vec<f32> = (0..len)
            .map(|_| match rng.gen_range(0..4) {
                0 => special[rng.gen_range(0..special.len())],
                _ => rng.gen_range(-2.0f32..2.0),
            })
            .collect();
        let run = |train: Train, back: Back| {
            let mut y = vec![MaybeUninit::new(1.0f32); len];
            let mut p = vec![false; len];
            let mut dx = vec![MaybeUninit::new(1.0f32); len];
            // SAFETY: only versions the CPU supports are called.
            unsafe {
                train(&x, &mut y, &mut p);
                back(&x, &p, &mut dx);
            }
            // SAFETY: initialised above.
            let bits = |v: &[MaybeUninit<f32>]| -> Vec<u32> {
                v.iter()
                    .map(|v| unsafe { v.assume_init() }.to_bits())
                    .collect()
            };
            (bits(&y), p, bits(&dx))
        };
        let want = run(relu_train::baseline, relu_backward::baseline);
        for (name, train, back) in versions {
            assert_eq!(run(train, back), want, "{name}");
        }
    }
}
