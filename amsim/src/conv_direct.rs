//! Direct native-`fp32` convolutions at stride 1 (AVX2 + FMA, and AVX-512F
//! for the forward kernel where the CPU has it), without
//! im2col and without a GEMM's packing.
//!
//! The im2col lowering copies every input element `KH * KW` times, and the
//! SGEMM then packs that copy again before its kernel reads it: with the
//! few output channels of small networks (16 for ResNet-20's first stage,
//! 6 and 16 for LeNet-5) each copied element feeds only a handful of
//! multiply-adds, so the copies cost as much as the products. Here the
//! kernels read a zero-padded copy of each image directly:
//!
//! - forward: a tile is up to 6 output channels x 16 output positions (two
//!   8-lane vectors of consecutive columns); each tap `(c, kh, kw)` is two
//!   unaligned loads of the padded input row, one broadcast weight per
//!   channel and two FMAs per channel. The output is written in place, in
//!   NCHW. With AVX-512F the tile is up to 8 channels x 32 positions (two
//!   16-lane vectors; rows of at most 8 columns go two to a vector): every
//!   output element takes the same fused multiply-adds in the same order,
//!   so both give the same bits (`APPROXTRAIN_NO_AVX512` keeps AVX2).
//! - input gradient: the forward kernel on the output gradient, with the
//!   weights flipped and their channel axes swapped, and padding
//!   `K - 1 - pad`.
//! - weight gradient: a tile is up to 4 output channels x 3 taps, summed
//!   along the output positions of a group of images in vector lanes (the
//!   groups are fixed by the shape); the groups' sums are added in group
//!   order, so the result does not depend on the thread count. With
//!   AVX-512F a tile is up to 8 channels x 6 taps, each 16-lane register
//!   holding two taps' 8-lane sums, which take the same products in the
//!   same order as the AVX2 lanes: the same bits.
//!
//! Native `fp32` sums in its own order (DESIGN.md: native paths are
//! compared with a tolerance, not to the bit); every result here is the same
//! at any thread count and from run to run. AMSim products never come here.

use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::conv::{Conv2dShape, Scratch};

/// Output positions that the images of one weight-gradient group hold at
/// least (a group has 4 to 64 images): each tile's sums stay in registers
/// over the whole group, and the groups' sums are added in group order. The
/// groups depend on the shape only, so the order of the sums does not
/// depend on the thread count.
const DW_GROUP_POSITIONS: usize = 2048;

/// Images per weight-gradient group for `positions` output positions per
/// image.
fn dw_group(positions: usize) -> usize {
    DW_GROUP_POSITIONS.div_ceil(positions.max(1)).clamp(4, 64)
}

/// Whether the direct kernels handle this convolution: stride 1, no
/// dilation, one group, padding less than the kernel (so that the input
/// gradient is a convolution with padding `K - 1 - pad`), on a CPU with
/// AVX2 and FMA.
pub(crate) fn applies(s: &Conv2dShape) -> bool {
    s.stride == (1, 1)
        && s.dilation == (1, 1)
        && s.groups == 1
        && s.padding.0 < s.kernel_h
        && s.padding.1 < s.kernel_w
        && s.batch > 0
        && s.in_channels > 0
        && s.out_channels > 0
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
}

/// A stride-1 convolution of `images` images: input `[images][cin][h][w]`,
/// weights `wt[(c * kh + i) * kw + j][o]` (tap-major, output channels
/// adjacent), padding `(ph, pw)`; output `[images][cout][oh][ow]`.
struct Geometry {
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    ph: usize,
    pw: usize,
}

impl Geometry {
    /// The convolution `s` itself (its forward pass).
    fn of(s: &Conv2dShape) -> Self {
        Geometry {
            cin: s.in_channels,
            h: s.in_h,
            w: s.in_w,
            cout: s.out_channels,
            kh: s.kernel_h,
            kw: s.kernel_w,
            ph: s.padding.0,
            pw: s.padding.1,
        }
    }

    fn oh(&self) -> usize {
        self.h + 2 * self.ph + 1 - self.kh
    }

    fn ow(&self) -> usize {
        self.w + 2 * self.pw + 1 - self.kw
    }

    /// Row stride of the padded copy: the padded row, plus room for the
    /// 8-lane loads of the last (partial) vector of a row.
    fn padded_w(&self) -> usize {
        self.w + 2 * self.pw + 8
    }

    fn padded_h(&self) -> usize {
        self.h + 2 * self.ph
    }

    /// Where each tap `(c, i, j)` (tap-major, as the weights) starts in the
    /// padded copy of an image.
    fn tap_offsets(&self) -> Vec<usize> {
        let (pw_, ph_) = (self.padded_w(), self.padded_h());
        (0..self.cin * self.kh * self.kw)
            .map(|tap| {
                let (c, i, j) = (
                    tap / (self.kh * self.kw),
                    (tap / self.kw) % self.kh,
                    tap % self.kw,
                );
                (c * ph_ + i) * pw_ + j
            })
            .collect()
    }

    /// Copy image `img` (`cin` planes of `h x w`) into `xp`, zero-padded.
    fn pad_image(&self, img: &[f32], xp: &mut Vec<f32>) {
        // Every element is written by `pad_into`; the buffer only grows.
        xp.resize(self.cin * self.padded_h() * self.padded_w(), 0.0);
        self.pad_into(img, xp);
    }

    /// Write image `img` zero-padded into `xp` (every element of it, once:
    /// the padding rows and the ends of each image row are zeroed, the
    /// image rows copied between them).
    fn pad_into(&self, img: &[f32], xp: &mut [f32]) {
        let (pw_, ph_) = (self.padded_w(), self.padded_h());
        debug_assert!(xp.len() == self.cin * ph_ * pw_);
        for (c, plane) in xp.chunks_exact_mut(ph_ * pw_).enumerate() {
            let (top, rest) = plane.split_at_mut(self.ph * pw_);
            let (body, bottom) = rest.split_at_mut(self.h * pw_);
            top.fill(0.0);
            bottom.fill(0.0);
            for (i, row) in body.chunks_exact_mut(pw_).enumerate() {
                let src = &img[(c * self.h + i) * self.w..][..self.w];
                let (left, rest) = row.split_at_mut(self.pw);
                let (mid, right) = rest.split_at_mut(self.w);
                left.fill(0.0);
                mid.copy_from_slice(src);
                right.fill(0.0);
            }
        }
    }
}

thread_local! {
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output vectors of one image: `(row, first column, live lanes)`.
fn vectors(oh: usize, ow: usize) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::with_capacity(oh * ow.div_ceil(8));
    for r in 0..oh {
        for c in (0..ow).step_by(8) {
            v.push((r, c, 8.min(ow - c)));
        }
    }
    v
}

/// Whether the kernels take 16-lane AVX-512 vectors (detected once;
/// `APPROXTRAIN_NO_AVX512`, any value, keeps the 8-lane AVX2 ones). Both
/// compute every output element with the same fused multiply-adds in the
/// same order, so they give the same bits.
fn wide_kernels() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        is_x86_feature_detected!("avx512f") && std::env::var_os("APPROXTRAIN_NO_AVX512").is_none()
    })
}

/// `out = conv(x, wt)` for the geometry `g` (see [`Geometry`]), images in
/// parallel, with the widest kernels the CPU has.
fn conv_s1(g: &Geometry, x: &[f32], wt: &[f32], out: &mut [f32]) {
    conv_s1_with(g, x, wt, out, wide_kernels())
}

/// [`conv_s1`] with the AVX-512 kernels (`wide`, on a CPU that has them)
/// or the AVX2 ones.
fn conv_s1_with(g: &Geometry, x: &[f32], wt: &[f32], out: &mut [f32], wide: bool) {
    let (oh, ow) = (g.oh(), g.ow());
    let in_len = g.cin * g.h * g.w;
    let out_len = g.cout * oh * ow;
    let (vecs, vecs16) = if wide {
        (Vec::new(), vectors16(oh, ow))
    } else {
        (vectors(oh, ow), Vec::new())
    };
    out.par_chunks_mut(out_len)
        .zip(x.par_chunks(in_len))
        .for_each(|(y, img)| {
            PADDED.with(|p| {
                let mut xp = p.borrow_mut();
                g.pad_image(img, &mut xp);
                if wide {
                    // SAFETY: the caller saw AVX-512F; every load lies
                    // inside the padded copy (see `forward_tile16`).
                    unsafe { forward_image16(g, &xp, wt, &vecs16, y) };
                } else {
                    // SAFETY: AVX2 and FMA were detected (`applies`); every
                    // load lies inside the padded copy (see `forward_tile`).
                    unsafe { forward_image(g, &xp, wt, &vecs, y) };
                }
            });
        });
}

/// A 16-lane output vector of one image: `live` consecutive columns from
/// `(r, c)`, or, for rows of at most 8 columns (`two`), the whole of row
/// `r` in the low lanes and of row `r + 1` (when `r + 1 < oh`) in the high
/// lanes.
#[derive(Clone, Copy)]
struct Vec16 {
    r: usize,
    c: usize,
    live: usize,
    /// Row `r + 1` is in lanes 8.. (two-row vectors only).
    second: bool,
}

/// The 16-lane output vectors of one image.
fn vectors16(oh: usize, ow: usize) -> Vec<Vec16> {
    let mut v = Vec::new();
    if ow <= 8 {
        for r in (0..oh).step_by(2) {
            v.push(Vec16 {
                r,
                c: 0,
                live: ow,
                second: r + 1 < oh,
            });
        }
    } else {
        for r in 0..oh {
            for c in (0..ow).step_by(16) {
                v.push(Vec16 {
                    r,
                    c,
                    live: 16.min(ow - c),
                    second: false,
                });
            }
        }
    }
    v
}

/// [`forward_image`] in AVX-512: tiles of up to 8 output channels x two
/// 16-lane vectors (16 sums in registers). Each output element takes the
/// same fused multiply-adds in the same order as in [`forward_tile`].
#[target_feature(enable = "avx512f")]
unsafe fn forward_image16(g: &Geometry, xp: &[f32], wt: &[f32], vecs: &[Vec16], y: &mut [f32]) {
    let two = g.ow() <= 8;
    let mut co0 = 0;
    while co0 < g.cout {
        let cob = 8.min(g.cout - co0);
        for pair in vecs.chunks(2) {
            let v0 = pair[0];
            let v1 = *pair.get(1).unwrap_or(&v0);
            let both = pair.len() == 2;
            macro_rules! tile {
                ($($n:literal)*) => {
                    match (cob, two) {
                        $(($n, false) => forward_tile16::<$n, false>(g, xp, wt, co0, v0, v1, both, y),
                          ($n, true) => forward_tile16::<$n, true>(g, xp, wt, co0, v0, v1, both, y),)*
                        _ => unreachable!(),
                    }
                };
            }
            tile!(1 2 3 4 5 6 7 8);
        }
        co0 += cob;
    }
}

/// One 16-lane input vector of tap column `j`: `live` floats from `row`
/// (masked loads read nothing past them), or, with `TWO`, 8 floats from
/// `row` and 8 from `row2`.
#[inline(always)]
unsafe fn load16<const TWO: bool>(row: *const f32, row2: *const f32, mask: __mmask16) -> __m512 {
    if TWO {
        halves(_mm256_loadu_ps(row), _mm256_loadu_ps(row2))
    } else {
        _mm512_maskz_loadu_ps(mask, row)
    }
}

/// The lanes of a vector that hold output elements.
#[inline(always)]
fn lanes16<const TWO: bool>(v: Vec16) -> __mmask16 {
    let row = ((1u32 << v.live) - 1) as __mmask16;
    if TWO && v.second {
        row | (row << 8)
    } else {
        row
    }
}

/// [`forward_tile`] with 16-lane vectors, for `COB <= 8` channels.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn forward_tile16<const COB: usize, const TWO: bool>(
    g: &Geometry,
    xp: &[f32],
    wt: &[f32],
    co0: usize,
    v0: Vec16,
    v1: Vec16,
    both: bool,
    y: &mut [f32],
) {
    let (pw_, ph_) = (g.padded_w(), g.padded_h());
    let (oh, ow) = (g.oh(), g.ow());
    // Bounds: a masked load reads columns c + j .. c + j + live - 1 <=
    // ow - 1 + kw - 1 = w + 2 pw - 1; a two-row vector's 8-float loads end
    // at column ow - 1 + kw - 1 + 8 - ow < w + 2 pw + 8 (the padded row), and
    // its second row is r + 1 + i <= oh - 1 + kh - 1 = padded_h - 1 (a
    // vector without a second row reads its first row twice).
    debug_assert!(xp.len() == g.cin * ph_ * pw_);
    debug_assert!(wt.len() == g.cin * g.kh * g.kw * g.cout);
    let (m0, m1) = (lanes16::<TWO>(v0), lanes16::<TWO>(v1));
    let xp = xp.as_ptr();
    let second = |v: Vec16| if TWO && v.second { 1 } else { 0 };
    let (s0, s1) = (second(v0), second(v1));
    let mut acc = [[_mm512_setzero_ps(); 2]; COB];
    for c in 0..g.cin {
        for i in 0..g.kh {
            let r0 = xp.add((c * ph_ + v0.r + i) * pw_ + v0.c);
            let r1 = xp.add((c * ph_ + v1.r + i) * pw_ + v1.c);
            let (r0b, r1b) = (r0.add(s0 * pw_), r1.add(s1 * pw_));
            let wrow = wt.as_ptr().add((c * g.kh + i) * g.kw * g.cout + co0);
            for j in 0..g.kw {
                let a0 = load16::<TWO>(r0.add(j), r0b.add(j), m0);
                let a1 = load16::<TWO>(r1.add(j), r1b.add(j), m1);
                let wj = wrow.add(j * g.cout);
                for (o, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*wj.add(o));
                    acc[0] = _mm512_fmadd_ps(w, a0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(w, a1, acc[1]);
                }
            }
        }
    }
    for (o, acc) in acc.iter().enumerate() {
        let plane = &mut y[(co0 + o) * oh * ow..][..oh * ow];
        store16::<TWO>(plane, ow, v0, m0, acc[0]);
        if both {
            store16::<TWO>(plane, ow, v1, m1, acc[1]);
        }
    }
}

/// Store the live lanes of `v` (mask `m`): a two-row vector's rows `r` and
/// `r + 1` are consecutive in the plane, so its lanes are compressed into
/// one run from row `r`.
#[inline(always)]
unsafe fn store16<const TWO: bool>(
    plane: &mut [f32],
    ow: usize,
    v: Vec16,
    m: __mmask16,
    a: __m512,
) {
    let at = v.r * ow + v.c;
    let n = (m as u32).count_ones() as usize;
    let dst = plane[at..at + n].as_mut_ptr();
    if TWO {
        _mm512_mask_compressstoreu_ps(dst, m, a);
    } else {
        _mm512_mask_storeu_ps(dst, m, a);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn forward_image(
    g: &Geometry,
    xp: &[f32],
    wt: &[f32],
    vecs: &[(usize, usize, usize)],
    y: &mut [f32],
) {
    let mut co0 = 0;
    while co0 < g.cout {
        let cob = 6.min(g.cout - co0);
        for pair in vecs.chunks(2) {
            let v0 = pair[0];
            let v1 = *pair.get(1).unwrap_or(&v0);
            let both = pair.len() == 2;
            match cob {
                6 => forward_tile::<6>(g, xp, wt, co0, v0, v1, both, y),
                5 => forward_tile::<5>(g, xp, wt, co0, v0, v1, both, y),
                4 => forward_tile::<4>(g, xp, wt, co0, v0, v1, both, y),
                3 => forward_tile::<3>(g, xp, wt, co0, v0, v1, both, y),
                2 => forward_tile::<2>(g, xp, wt, co0, v0, v1, both, y),
                _ => forward_tile::<1>(g, xp, wt, co0, v0, v1, both, y),
            }
        }
        co0 += cob;
    }
}

/// Output channels `co0..co0 + COB` at the vectors `v0` and `v1` (`v1` is
/// a repeat of `v0`, not stored, unless `both`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn forward_tile<const COB: usize>(
    g: &Geometry,
    xp: &[f32],
    wt: &[f32],
    co0: usize,
    v0: (usize, usize, usize),
    v1: (usize, usize, usize),
    both: bool,
    y: &mut [f32],
) {
    let (pw_, ph_) = (g.padded_w(), g.padded_h());
    let (oh, ow) = (g.oh(), g.ow());
    // Bounds: the last load of a vector starts at column c + kw - 1 <=
    // ow - 1 + kw - 1 = w + 2 pw - 1 and reads 8 floats, inside the padded
    // row of w + 2 pw + 8; rows r + kh - 1 <= padded_h - 1.
    debug_assert!(xp.len() == g.cin * ph_ * pw_);
    debug_assert!(wt.len() == g.cin * g.kh * g.kw * g.cout);
    let xp = xp.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; COB];
    for c in 0..g.cin {
        for i in 0..g.kh {
            let r0 = xp.add((c * ph_ + v0.0 + i) * pw_ + v0.1);
            let r1 = xp.add((c * ph_ + v1.0 + i) * pw_ + v1.1);
            let wrow = wt.as_ptr().add((c * g.kh + i) * g.kw * g.cout + co0);
            for j in 0..g.kw {
                let a0 = _mm256_loadu_ps(r0.add(j));
                let a1 = _mm256_loadu_ps(r1.add(j));
                let wj = wrow.add(j * g.cout);
                for (o, acc) in acc.iter_mut().enumerate() {
                    let w = _mm256_broadcast_ss(&*wj.add(o));
                    acc[0] = _mm256_fmadd_ps(w, a0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(w, a1, acc[1]);
                }
            }
        }
    }
    for (o, acc) in acc.iter().enumerate() {
        let plane = &mut y[(co0 + o) * oh * ow..][..oh * ow];
        store(plane, ow, v0, acc[0]);
        if both {
            store(plane, ow, v1, acc[1]);
        }
    }
}

/// Store the live lanes of `v` at row `v.0`, columns `v.1..`.
#[inline(always)]
unsafe fn store(plane: &mut [f32], ow: usize, v: (usize, usize, usize), a: __m256) {
    let at = v.0 * ow + v.1;
    if v.2 == 8 {
        _mm256_storeu_ps(plane[at..at + 8].as_mut_ptr(), a);
    } else {
        let mut t = [0.0f32; 8];
        _mm256_storeu_ps(t.as_mut_ptr(), a);
        plane[at..at + v.2].copy_from_slice(&t[..v.2]);
    }
}

/// Forward pass: `y = conv(x, w)` (NCHW, weights `[o][c][kh][kw]`).
/// The caller checked [`applies`] and the buffer lengths.
pub(crate) fn forward(s: &Conv2dShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let g = Geometry::of(s);
    let taps = g.cin * g.kh * g.kw;
    // wt[tap][o] = w[o][tap].
    let mut wt = vec![0.0f32; taps * g.cout];
    for o in 0..g.cout {
        for t in 0..taps {
            wt[t * g.cout + o] = w[o * taps + t];
        }
    }
    conv_s1(&g, x, &wt, y);
}

/// Input gradient: `dx = conv(dy, flip(w)ᵀ)` with padding `K - 1 - pad`.
/// The caller checked [`applies`] and the buffer lengths.
pub(crate) fn grad_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (kh, kw) = (s.kernel_h, s.kernel_w);
    let g = Geometry {
        cin: s.out_channels,
        h: s.out_h(),
        w: s.out_w(),
        cout: s.in_channels,
        kh,
        kw,
        ph: kh - 1 - s.padding.0,
        pw: kw - 1 - s.padding.1,
    };
    debug_assert!(g.oh() == s.in_h && g.ow() == s.in_w);
    // wt[(o, i', j')][c] = w[o][c][kh-1-i'][kw-1-j'].
    let mut wt = vec![0.0f32; s.out_channels * kh * kw * s.in_channels];
    for o in 0..s.out_channels {
        for c in 0..s.in_channels {
            for i in 0..kh {
                for j in 0..kw {
                    let src = ((o * s.in_channels + c) * kh + (kh - 1 - i)) * kw + (kw - 1 - j);
                    wt[((o * kh + i) * kw + j) * s.in_channels + c] = w[src];
                }
            }
        }
    }
    conv_s1(&g, dy, &wt, dx);
}

/// Weight gradient: `dw[o][c][i][j] = sum over images and output positions
/// of dy[o][r][q] * xpad[c][r + i][q + j]`. The caller checked [`applies`]
/// and the buffer lengths.
pub(crate) fn grad_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    grad_weight_with(s, x, dy, dw, wide_kernels())
}

/// [`grad_weight`] with the AVX-512 kernel (`wide`, on a CPU that has it)
/// or the AVX2 one: the same sums in the same order, so the same bits.
fn grad_weight_with(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32], wide: bool) {
    let g = Geometry::of(s);
    let (oh, ow) = (g.oh(), g.ow());
    let taps = g.cin * g.kh * g.kw;
    let in_len = g.cin * g.h * g.w;
    let out_len = g.cout * oh * ow;
    let plen = g.cin * g.padded_h() * g.padded_w();
    let group = dw_group(oh * ow);
    let groups = s.batch.div_ceil(group);
    let mut pad_buf = Scratch::take();
    let xp_all = pad_buf.slice(s.batch * plen);
    xp_all
        .par_chunks_mut(plen)
        .zip(x.par_chunks(in_len))
        .for_each(|(d, img)| g.pad_into(img, d));
    let xp_all = &*xp_all;
    let offs = &g.tap_offsets()[..];
    // One partial [o][tap] per group of images, added in group order; the
    // blocks of output channels of a group (4, or 8 for the AVX-512
    // kernel) are jobs of their own.
    let cb_len = if wide { 8 } else { 4 };
    let mut parts = vec![0.0f32; groups * g.cout * taps];
    parts
        .par_chunks_mut(g.cout * taps)
        .enumerate()
        .for_each(|(gi, part)| {
            let n0 = gi * group;
            let n1 = (n0 + group).min(s.batch);
            let xps: Vec<&[f32]> = (n0..n1).map(|n| &xp_all[n * plen..][..plen]).collect();
            let dys: Vec<&[f32]> = (n0..n1).map(|n| &dy[n * out_len..][..out_len]).collect();
            part.par_chunks_mut(cb_len * taps)
                .enumerate()
                .for_each(|(cb, rows)| {
                    if wide {
                        // SAFETY: the caller saw AVX-512F (and `applies`
                        // AVX2 and FMA); loads as in `weight_tile`.
                        unsafe { grad_weight_block16(&g, offs, &xps, &dys, cb * 8, rows) };
                    } else {
                        // SAFETY: AVX2 and FMA were detected (`applies`);
                        // loads stay inside the padded copies and the
                        // output-gradient planes (see `weight_tile`).
                        unsafe { grad_weight_block(&g, offs, &xps, &dys, cb * 4, rows) };
                    }
                });
        });
    dw.fill(0.0);
    for part in parts.chunks_exact(g.cout * taps) {
        for (d, p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
}

/// Rows `co0..co0 + 4` (clipped) of a group's partial weight gradient,
/// `rows[o * taps + t]`, for the taps at `offs` ([`Geometry::tap_offsets`]).
///
/// The images are the outer loop and the tiles of 3 taps the inner one,
/// each tile's sums kept in `acc` between images: one image's output
/// gradients of 4 channels (16 KiB at 32x32) stay in L1 while every tile
/// reads them. Each sum still takes the images, then the output vectors,
/// in order.
#[target_feature(enable = "avx2,fma")]
unsafe fn grad_weight_block(
    g: &Geometry,
    offs: &[usize],
    xps: &[&[f32]],
    dys: &[&[f32]],
    co0: usize,
    rows: &mut [f32],
) {
    let taps = offs.len();
    let cob = 4.min(g.cout - co0);
    debug_assert!(rows.len() == cob * taps);
    let tiles = taps.div_ceil(3);
    let mut acc = vec![[[_mm256_setzero_ps(); 3]; 4]; tiles];
    for (xp, dy) in xps.iter().zip(dys) {
        for (tile, acc) in acc.iter_mut().enumerate() {
            let t0 = tile * 3;
            let tb = 3.min(taps - t0);
            let offs = &offs[t0..t0 + tb];
            let img = (xp, dy);
            match (cob, tb) {
                (4, 3) => weight_tile::<4, 3>(g, img, co0, offs, acc),
                (4, 2) => weight_tile::<4, 2>(g, img, co0, offs, acc),
                (4, _) => weight_tile::<4, 1>(g, img, co0, offs, acc),
                (3, 3) => weight_tile::<3, 3>(g, img, co0, offs, acc),
                (3, 2) => weight_tile::<3, 2>(g, img, co0, offs, acc),
                (3, _) => weight_tile::<3, 1>(g, img, co0, offs, acc),
                (2, 3) => weight_tile::<2, 3>(g, img, co0, offs, acc),
                (2, 2) => weight_tile::<2, 2>(g, img, co0, offs, acc),
                (2, _) => weight_tile::<2, 1>(g, img, co0, offs, acc),
                (_, 3) => weight_tile::<1, 3>(g, img, co0, offs, acc),
                (_, 2) => weight_tile::<1, 2>(g, img, co0, offs, acc),
                _ => weight_tile::<1, 1>(g, img, co0, offs, acc),
            }
        }
    }
    for (tile, acc) in acc.iter().enumerate() {
        let t0 = tile * 3;
        let tb = 3.min(taps - t0);
        for (o, acc) in acc.iter().enumerate().take(cob) {
            for (t, a) in acc.iter().enumerate().take(tb) {
                let mut l = [0.0f32; 8];
                _mm256_storeu_ps(l.as_mut_ptr(), *a);
                rows[o * taps + t0 + t] = fold8(&l);
            }
        }
    }
}

/// [`grad_weight_block`] in AVX-512 for rows `co0..co0 + 8` (clipped):
/// tiles of 8 channels x 6 taps, each 16-lane sum holding two taps' 8-lane
/// sums (taps `2p` and `2p + 1` of the tile in its low and high halves).
/// Each half takes exactly the fused multiply-adds of one AVX2 lane sum of
/// [`weight_tile`], in the same order, and the halves are folded as the
/// AVX2 lanes are: the same bits.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn grad_weight_block16(
    g: &Geometry,
    offs: &[usize],
    xps: &[&[f32]],
    dys: &[&[f32]],
    co0: usize,
    rows: &mut [f32],
) {
    let taps = offs.len();
    let cob = 8.min(g.cout - co0);
    debug_assert!(rows.len() == cob * taps);
    let tiles = taps.div_ceil(6);
    // The padded-image offsets of each tile's tap pairs (a pair with one
    // tap repeats it; its high half is not used).
    let pairs: Vec<[[usize; 2]; 3]> = (0..tiles)
        .map(|tile| {
            let (t0, t1) = (tile * 6, (tile * 6 + 6).min(taps));
            std::array::from_fn(|p| {
                let a = (t0 + 2 * p).min(t1 - 1);
                [offs[a], offs[(a + 1).min(t1 - 1)]]
            })
        })
        .collect();
    let mut acc = vec![[[_mm512_setzero_ps(); 3]; 8]; tiles];
    // Images whose output gradients (of these channels) fit in 16 KiB go
    // through a tile together, its sums staying in registers: small planes
    // would otherwise spend as long moving the sums as adding to them.
    let ib = (16384 / (cob * g.oh() * g.ow() * 4).max(1)).max(1);
    for (xp, dy) in xps.chunks(ib).zip(dys.chunks(ib)) {
        for (tile, acc) in acc.iter_mut().enumerate() {
            let tp = (6.min(taps - tile * 6)).div_ceil(2);
            let img = (xp, dy);
            let po = &pairs[tile];
            macro_rules! tile {
                ($($c:literal)*) => {
                    match (cob, tp) {
                        $(($c, 3) => weight_tile16::<$c, 3>(g, img, co0, po, acc),
                          ($c, 2) => weight_tile16::<$c, 2>(g, img, co0, po, acc),
                          ($c, _) => weight_tile16::<$c, 1>(g, img, co0, po, acc),)*
                        _ => unreachable!(),
                    }
                };
            }
            tile!(1 2 3 4 5 6 7 8);
        }
    }
    for (tile, acc) in acc.iter().enumerate() {
        let t0 = tile * 6;
        let tb = 6.min(taps - t0);
        for (o, acc) in acc.iter().enumerate().take(cob) {
            for (p, a) in acc.iter().enumerate().take(tb.div_ceil(2)) {
                let mut l = [0.0f32; 16];
                _mm512_storeu_ps(l.as_mut_ptr(), *a);
                for half in 0..2 {
                    let t = t0 + 2 * p + half;
                    if t < t0 + tb {
                        rows[o * taps + t] = fold8(&l[half * 8..half * 8 + 8]);
                    }
                }
            }
        }
    }
}

/// The 8 lane sums of a weight-gradient sum, added pairwise in a fixed
/// order.
#[inline(always)]
fn fold8(l: &[f32]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// Two 8-float vectors as the low and high halves of one.
#[inline(always)]
unsafe fn halves(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
        _mm256_castps_pd(hi),
    ))
}

/// [`weight_tile`] for `COB` channels and `TP` tap pairs with 16-lane
/// sums, over the images `xps`/`dys` in order: lane `l` of half `h` of pair
/// `p` takes the products of lane `l` of tap `po[p][h]`.
#[inline(always)]
unsafe fn weight_tile16<const COB: usize, const TP: usize>(
    g: &Geometry,
    (xps, dys): (&[&[f32]], &[&[f32]]),
    co0: usize,
    po: &[[usize; 2]; 3],
    sums: &mut [[__m512; 3]; 8],
) {
    let (oh, ow) = (g.oh(), g.ow());
    let pw_ = g.padded_w();
    let mut acc = [[_mm512_setzero_ps(); TP]; COB];
    for o in 0..COB {
        for p in 0..TP {
            acc[o][p] = sums[o][p];
        }
    }
    let full = ow / 8 * 8;
    let tail = _mm256_cmpgt_epi32(
        _mm256_set1_epi32((ow - full) as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    for (xp, dy) in xps.iter().zip(dys) {
        debug_assert!(dy.len() == g.cout * oh * ow);
        // Loads as in `weight_tile`: 8 floats of x per tap, inside the padded
        // copy; 8 of dy per channel, masked at the end of a row.
        let xt: [[*const f32; 2]; TP] =
            std::array::from_fn(|p| [xp.as_ptr().add(po[p][0]), xp.as_ptr().add(po[p][1])]);
        let dyo: [*const f32; COB] = std::array::from_fn(|o| dy.as_ptr().add((co0 + o) * oh * ow));
        for r in 0..oh {
            let (xr, dr) = (r * pw_, r * ow);
            let mut c = 0;
            while c < full {
                let a: [__m512; TP] = std::array::from_fn(|p| {
                    halves(
                        _mm256_loadu_ps(xt[p][0].add(xr + c)),
                        _mm256_loadu_ps(xt[p][1].add(xr + c)),
                    )
                });
                for (o, acc) in acc.iter_mut().enumerate() {
                    // Both halves from one broadcast load (no shuffle).
                    let d = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                        dyo[o].add(dr + c) as *const f64,
                    )));
                    for p in 0..TP {
                        acc[p] = _mm512_fmadd_ps(d, a[p], acc[p]);
                    }
                }
                c += 8;
            }
            if full < ow {
                let a: [__m512; TP] = std::array::from_fn(|p| {
                    halves(
                        _mm256_maskload_ps(xt[p][0].add(xr + full), tail),
                        _mm256_maskload_ps(xt[p][1].add(xr + full), tail),
                    )
                });
                for (o, acc) in acc.iter_mut().enumerate() {
                    let d = _mm256_maskload_ps(dyo[o].add(dr + full), tail);
                    let d = halves(d, d);
                    for p in 0..TP {
                        acc[p] = _mm512_fmadd_ps(d, a[p], acc[p]);
                    }
                }
            }
        }
    }
    for o in 0..COB {
        for p in 0..TP {
            sums[o][p] = acc[o][p];
        }
    }
}

/// Add one image's products `dy[co0 + o] * xpad[tap t]` over its output
/// positions to the lane sums `acc[o][t]`, for `COB` channels and `TB` taps
/// (the padded-image offsets `offs`).
#[inline(always)]
unsafe fn weight_tile<const COB: usize, const TB: usize>(
    g: &Geometry,
    (xp, dy): (&&[f32], &&[f32]),
    co0: usize,
    offs: &[usize],
    sums: &mut [[__m256; 3]; 4],
) {
    let (oh, ow) = (g.oh(), g.ow());
    let pw_ = g.padded_w();
    debug_assert!(dy.len() == g.cout * oh * ow);
    debug_assert!(offs.len() == TB);
    let mut acc = [[_mm256_setzero_ps(); TB]; COB];
    for o in 0..COB {
        for t in 0..TB {
            acc[o][t] = sums[o][t];
        }
    }
    // Loads of x stay inside the padded copy (see `forward_tile`); loads of
    // dy: the plane of co0 + o, row r, columns c..c + 8, masked to the live
    // lanes at the end of a row (the last vector of the last plane would
    // read past the buffer).
    let xt: [*const f32; TB] = std::array::from_fn(|t| xp.as_ptr().add(offs[t]));
    let dyo: [*const f32; COB] = std::array::from_fn(|o| dy.as_ptr().add((co0 + o) * oh * ow));
    let full = ow / 8 * 8;
    let tail = _mm256_cmpgt_epi32(
        _mm256_set1_epi32((ow - full) as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    for r in 0..oh {
        let (xr, dr) = (r * pw_, r * ow);
        // The taps' vectors are held and each channel's output gradient is
        // loaded as it is used: 12 sums, 3 taps and one gradient fill the
        // 16 registers (holding all 4 gradients too would spill, and reload
        // a tap per multiply-add).
        let mut c = 0;
        while c < full {
            let a: [__m256; TB] = std::array::from_fn(|t| _mm256_loadu_ps(xt[t].add(xr + c)));
            for (o, acc) in acc.iter_mut().enumerate() {
                let d = _mm256_loadu_ps(dyo[o].add(dr + c));
                for t in 0..TB {
                    acc[t] = _mm256_fmadd_ps(d, a[t], acc[t]);
                }
            }
            c += 8;
        }
        if full < ow {
            // Lanes past the row are zero in x too, so that an infinite
            // input there cannot make 0 * inf.
            let a: [__m256; TB] =
                std::array::from_fn(|t| _mm256_maskload_ps(xt[t].add(xr + full), tail));
            for (o, acc) in acc.iter_mut().enumerate() {
                let d = _mm256_maskload_ps(dyo[o].add(dr + full), tail);
                for t in 0..TB {
                    acc[t] = _mm256_fmadd_ps(d, a[t], acc[t]);
                }
            }
        }
    }
    for o in 0..COB {
        for t in 0..TB {
            sums[o][t] = acc[o][t];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    /// Whether the 16-lane kernels can run here (the skip says why not).
    fn avx512_here() -> bool {
        let here = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2");
        if !here {
            eprintln!("skipped: this CPU has no AVX-512F (the 16-lane kernels cannot run here)");
        }
        here
    }

    /// A stride-1 convolution the direct kernels take: kernels 1x1 to 5x5,
    /// any padding below the kernel, planes from the kernel's size up,
    /// 1-19 output channels (every block of 1 to 8 and tail).
    fn random_shape(rng: &mut ChaCha8Rng) -> Conv2dShape {
        let (kh, kw) = (rng.gen_range(1..=5), rng.gen_range(1..=5));
        let mut s = Conv2dShape::new(
            rng.gen_range(1..=3),
            rng.gen_range(1..=9),
            rng.gen_range(kh..=kh + 34),
            rng.gen_range(kw..=kw + 40),
            rng.gen_range(1..=19),
            kh,
        );
        s.kernel_w = kw;
        s.padding = (rng.gen_range(0..kh), rng.gen_range(0..kw));
        assert!(applies(&s));
        s
    }

    /// `len` values in [-2, 2), with NaN, infinities and -0.0 sprinkled in
    /// when `special`.
    fn operand(rng: &mut ChaCha8Rng, len: usize, special: bool) -> Vec<f32> {
        (0..len)
            .map(|_| {
                if special && rng.gen_range(0..50) == 0 {
                    [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0][rng.gen_range(0..4)]
                } else {
                    rng.gen_range(-2.0f32..2.0)
                }
            })
            .collect()
    }

    /// Every element the same bits, or NaN in both (which operand's payload
    /// a NaN carries follows the instruction forms the compiler picks).
    fn assert_same(narrow: &[f32], wide: &[f32], what: &str) {
        for (i, (a, b)) in narrow.iter().zip(wide).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{what}, element {i}: AVX2 {a} vs AVX-512 {b}"
            );
        }
    }

    /// The AVX-512 weight-gradient kernel gives the AVX2 kernel's bits:
    /// channel blocks of 1 to 8, tap tiles of 1 to 6, rows with and without
    /// a tail, images of small planes taken together, non-finite values
    /// included.
    #[test]
    fn avx512_weight_gradient_matches_avx2_bit_for_bit() {
        if !avx512_here() {
            return;
        }
        let mut rng = crate::engine::test_rng();
        for case in 0..60 {
            let s = random_shape(&mut rng);
            let x = operand(&mut rng, s.x_len(), case % 4 == 0);
            let dy = operand(&mut rng, s.y_len(), case % 4 == 0);
            let (mut narrow, mut wide) = (vec![1.0f32; s.w_len()], vec![2.0f32; s.w_len()]);
            grad_weight_with(&s, &x, &dy, &mut narrow, false);
            grad_weight_with(&s, &x, &dy, &mut wide, true);
            assert_same(&narrow, &wide, &format!("case {case} ({s:?})"));
        }
    }

    /// The AVX-512 forward kernels give the AVX2 kernels' bits: full,
    /// partial and two-row vectors, odd output heights, every channel block
    /// of 1 to 8, non-finite inputs and weights included.
    #[test]
    fn avx512_forward_matches_avx2_bit_for_bit() {
        if !avx512_here() {
            return;
        }
        let mut rng = crate::engine::test_rng();
        for case in 0..60 {
            let s = random_shape(&mut rng);
            let g = Geometry::of(&s);
            let x = operand(&mut rng, s.x_len(), case % 4 == 0);
            let wt = operand(&mut rng, s.w_len(), case % 4 == 0);
            let (mut narrow, mut wide) = (vec![1.0f32; s.y_len()], vec![2.0f32; s.y_len()]);
            conv_s1_with(&g, &x, &wt, &mut narrow, false);
            conv_s1_with(&g, &x, &wt, &mut wide, true);
            assert_same(&narrow, &wide, &format!("case {case} ({s:?})"));
        }
    }
}
