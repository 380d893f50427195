//! The `ndarray` entry points (`amsim::nd`): each product through C-,
//! F-ordered and transposed views gives the same bits as the scalar
//! reference on dense copies; views the engine cannot read (gaps, negative
//! strides, wrong shapes) are errors that say why.

mod support;

use std::sync::Arc;

use amsim::batched::{gemm_batched_reference, BatchedMut, BatchedRef};
use amsim::conv::{
    conv2d_forward_reference, conv2d_grad_input_reference, conv2d_grad_weight_reference,
};
use amsim::gemm::{gemm_reference, MatMut, MatRef};
use amsim::nd::{
    conv2d_forward_nd, conv2d_grad_input_nd, conv2d_grad_weight_nd, gemm_batched_nd, gemm_nd,
    ConvParams, Engine,
};
use amsim::{Lut, Multiplier};
use ndarray::{s, Array, Array2, Array3, Array4, ShapeBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{skewed_truncated, test_rng};

fn mult() -> Multiplier {
    Multiplier::Lut(Arc::new(Lut::build("skewed", skewed_truncated, 5).unwrap()))
}

fn values(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.gen_range(-2.0f32..2.0) * 2f32.powi(rng.gen_range(-4..4)))
        .collect()
}

fn bits<D: ndarray::Dimension>(a: &Array<f32, D>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn gemm_nd_on_c_f_and_transposed_views_matches_reference_bit_exactly() {
    let mut rng = test_rng();
    let mult = mult();
    for _ in 0..8 {
        let (m, k, n) = (
            rng.gen_range(1..40),
            rng.gen_range(1..1100),
            rng.gen_range(1..40),
        );
        let a_data = values(&mut rng, m * k);
        let b_data = values(&mut rng, k * n);
        let mut want = vec![0.0f32; m * n];
        gemm_reference(
            &mult,
            MatRef::row_major(&a_data, m, k).unwrap(),
            MatRef::row_major(&b_data, k, n).unwrap(),
            MatMut::row_major(&mut want, m, n).unwrap(),
            false,
        )
        .unwrap();
        // A in C order; B stored as Bᵀ in C order and viewed transposed
        // (F order); C in F order.
        let a = Array2::from_shape_vec((m, k), a_data.clone()).unwrap();
        let bt = Array2::from_shape_vec((k, n), b_data.clone())
            .unwrap()
            .t()
            .as_standard_layout()
            .into_owned();
        let mut c = Array2::<f32>::zeros((m, n).f());
        for engine in [Engine::Fast, Engine::Reference] {
            gemm_nd(engine, &mult, a.view(), bt.t(), c.view_mut(), false).unwrap();
            let got: Vec<u32> = c.as_standard_layout().iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{engine:?} {m}x{k}x{n}");
        }
    }
}

#[test]
fn gemm_batched_nd_matches_reference_bit_exactly() {
    let mut rng = test_rng();
    let mult = mult();
    let (batch, m, k, n) = (5, 7, 33, 9);
    let a_data = values(&mut rng, batch * m * k);
    let b_data = values(&mut rng, batch * k * n);
    let mut want = vec![0.0f32; batch * m * n];
    gemm_batched_reference(
        &mult,
        BatchedRef::row_major(&a_data, batch, m, k).unwrap(),
        BatchedRef::row_major(&b_data, batch, k, n).unwrap(),
        BatchedMut::row_major(&mut want, batch, m, n).unwrap(),
        false,
    )
    .unwrap();
    let a = Array3::from_shape_vec((batch, m, k), a_data).unwrap();
    // B as a `[batch, n, k]` array viewed with its last two axes swapped.
    let mut b_swapped = Array3::from_shape_vec((batch, k, n), b_data).unwrap();
    b_swapped.swap_axes(1, 2);
    let b_store = b_swapped.as_standard_layout().into_owned();
    let mut b_view = b_store.view();
    b_view.swap_axes(1, 2);
    let mut c = Array3::<f32>::zeros((batch, m, n));
    gemm_batched_nd(Engine::Fast, &mult, a.view(), b_view, c.view_mut(), false).unwrap();
    assert_eq!(
        bits(&c),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn conv_nd_products_match_reference_bit_exactly() {
    let mut rng = test_rng();
    let mult = mult();
    let p = ConvParams {
        stride: (2, 1),
        padding: (1, 2),
        dilation: (1, 2),
        groups: 2,
    };
    let (x_shape, w_shape) = ([2, 4, 9, 8], [6, 2, 3, 3]);
    let s = p.shape(x_shape, w_shape).unwrap();
    let y_shape = [2, 6, s.out_h(), s.out_w()];
    let x = Array4::from_shape_vec(x_shape, values(&mut rng, s.x_len())).unwrap();
    let w = Array4::from_shape_vec(w_shape, values(&mut rng, s.w_len())).unwrap();
    let dy = Array4::from_shape_vec(y_shape, values(&mut rng, s.y_len())).unwrap();

    let mut want = vec![0.0f32; s.y_len()];
    conv2d_forward_reference(
        &mult,
        &s,
        x.as_slice().unwrap(),
        w.as_slice().unwrap(),
        &mut want,
    )
    .unwrap();
    let mut y = Array4::<f32>::zeros(y_shape);
    conv2d_forward_nd(Engine::Fast, &mult, &p, x.view(), w.view(), y.view_mut()).unwrap();
    assert_eq!(
        bits(&y),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    let mut want = vec![0.0f32; s.x_len()];
    conv2d_grad_input_reference(
        &mult,
        &s,
        dy.as_slice().unwrap(),
        w.as_slice().unwrap(),
        &mut want,
    )
    .unwrap();
    let mut dx = Array4::<f32>::zeros(x_shape);
    conv2d_grad_input_nd(Engine::Fast, &mult, &p, dy.view(), w.view(), dx.view_mut()).unwrap();
    assert_eq!(
        bits(&dx),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    let mut want = vec![0.0f32; s.w_len()];
    conv2d_grad_weight_reference(
        &mult,
        &s,
        x.as_slice().unwrap(),
        dy.as_slice().unwrap(),
        &mut want,
    )
    .unwrap();
    let mut dw = Array4::<f32>::zeros(w_shape);
    conv2d_grad_weight_nd(Engine::Fast, &mult, &p, x.view(), dy.view(), dw.view_mut()).unwrap();
    assert_eq!(
        bits(&dw),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn views_the_engine_cannot_read_are_errors_that_say_why() {
    let mult = Multiplier::Fp32;
    let big = Array2::<f32>::zeros((6, 6));
    let b = Array2::<f32>::zeros((3, 4));
    let mut c = Array2::<f32>::zeros((3, 4));
    let gaps = big.slice(s![..3, ..3]);
    let e = gemm_nd(Engine::Fast, &mult, gaps, b.view(), c.view_mut(), false).unwrap_err();
    assert!(e.to_string().contains("A: the view has gaps"), "{e}");
    let reversed = big.slice(s![..3;-1, ..3]);
    let e = gemm_nd(Engine::Fast, &mult, reversed, b.view(), c.view_mut(), false).unwrap_err();
    assert!(e.to_string().contains("negative stride"), "{e}");
    let a = Array2::<f32>::zeros((3, 5));
    let e = gemm_nd(Engine::Fast, &mult, a.view(), b.view(), c.view_mut(), false).unwrap_err();
    assert!(e.to_string().contains("cannot multiply 3x5 by 3x4"), "{e}");

    let p = ConvParams::default();
    let x = Array4::<f32>::zeros([1, 2, 5, 5]);
    let w = Array4::<f32>::zeros([3, 2, 3, 3]);
    let mut y = Array4::<f32>::zeros([1, 3, 4, 3]);
    let e =
        conv2d_forward_nd(Engine::Fast, &mult, &p, x.view(), w.view(), y.view_mut()).unwrap_err();
    assert!(e.to_string().contains("y has shape [1, 3, 4, 3]"), "{e}");
    let wf = Array4::<f32>::zeros([3, 2, 3, 3].f());
    let mut y = Array4::<f32>::zeros([1, 3, 3, 3]);
    let e =
        conv2d_forward_nd(Engine::Fast, &mult, &p, x.view(), wf.view(), y.view_mut()).unwrap_err();
    assert!(
        e.to_string()
            .contains("w: the convolutions read dense C-ordered"),
        "{e}"
    );
    let w1 = Array4::<f32>::zeros([3, 1, 3, 3]);
    let e =
        conv2d_forward_nd(Engine::Fast, &mult, &p, x.view(), w1.view(), y.view_mut()).unwrap_err();
    assert!(e.to_string().contains("input channels per group"), "{e}");
}
