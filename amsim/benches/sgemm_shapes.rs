//! Criterion benches of native FP32 GEMM on the shapes our layers lower to:
//! one single-threaded `matrixmultiply` call (the kernel), and
//! `amsim::gemm::gemm` with the `fp32` multiplier (the same kernel on the
//! rayon pool, by output blocks or ranges of `k`: the path the layers
//! take), side by side per shape.
//!
//! Shapes (batch 128), with the exact strides of `amsim::conv` and
//! `nets::layers::dense`:
//! - the convolutions of ResNet-20 (CIFAR-10) and LeNet-5 (MNIST): forward
//!   (`rows x kc` column matrix stored transposed, times the `kc x C_out`
//!   weights, one chunk of [`COL_CHUNK_ELEMS`]), input gradient (columns of
//!   `dy` times the re-laid weights) and weight gradient (`kc x N·OH·OW`
//!   columns times `dyᵀ`, `k` up to 131072);
//! - the dense layers of LeNet-300-100 and LeNet-5 (forward, input and
//!   weight gradient);
//! - 1024³.
//!
//! Threads: `RAYON_NUM_THREADS` sets the rayon pool, e.g.
//! `RAYON_NUM_THREADS=1 cargo bench -p amsim --bench sgemm_shapes`.
//! Throughput is reported in multiply-adds per second (`elem/s`; GFLOP/s is
//! twice that). Filter with e.g. `-- resnet20/s1.conv/dw`.

use std::hint::black_box;
use std::time::Duration;

use amsim::conv::COL_CHUNK_ELEMS;
use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::Multiplier;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a dense operand is stored.
#[derive(Clone, Copy)]
enum Layout {
    RowMajor,
    ColMajor,
}

impl Layout {
    /// `(row stride, column stride)` of a dense `rows x cols` matrix.
    fn strides(self, rows: usize, cols: usize) -> (usize, usize) {
        match self {
            Layout::RowMajor => (cols, 1),
            Layout::ColMajor => (1, rows),
        }
    }
}

/// `C (m x n) = A (m x k) · B (k x n)` with each operand's layout.
struct Product {
    name: String,
    m: usize,
    k: usize,
    n: usize,
    a: Layout,
    b: Layout,
    c: Layout,
}

/// A convolution layer at batch 128 (one group, square images and kernels,
/// dilation 1): net, layer, `C_in`, `C_out`, input size, kernel, stride,
/// padding, and whether its input gradient is computed (not for the first
/// layer).
type ConvLayer = (
    &'static str,
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
);

const CONVS: [ConvLayer; 8] = [
    // ResNet-20 on CIFAR-10: the stem, then per stage the first convolution
    // (stride 2 from stage 2) and the others; shortcuts pad with zeros.
    ("resnet20", "conv1", 3, 16, 32, 3, 1, 1, false),
    ("resnet20", "s1.conv", 16, 16, 32, 3, 1, 1, true),
    ("resnet20", "s2b1.conv1", 16, 32, 32, 3, 2, 1, true),
    ("resnet20", "s2.conv", 32, 32, 16, 3, 1, 1, true),
    ("resnet20", "s3b1.conv1", 32, 64, 16, 3, 2, 1, true),
    ("resnet20", "s3.conv", 64, 64, 8, 3, 1, 1, true),
    // LeNet-5 on MNIST.
    ("lenet5", "conv1", 1, 6, 28, 5, 1, 2, false),
    ("lenet5", "conv2", 6, 16, 14, 5, 1, 0, true),
];

/// Dense layers at batch 128: net, layer, inputs, outputs.
const DENSES: [(&str, &str, usize, usize); 7] = [
    ("resnet20", "fc", 64, 10),
    ("lenet5", "fc1", 400, 120),
    ("lenet5", "fc2", 120, 84),
    ("lenet5", "fc3", 84, 10),
    ("lenet300100", "fc1", 784, 300),
    ("lenet300100", "fc2", 300, 100),
    ("lenet300100", "fc3", 100, 10),
];

const BATCH: usize = 128;

/// A convolution's products as `amsim::conv` lowers them.
fn conv_products(
    (net, layer, cin, cout, size, kernel, stride, padding, with_dx): ConvLayer,
) -> Vec<Product> {
    use Layout::*;
    let batch = BATCH;
    let out = (size + 2 * padding - kernel) / stride + 1;
    let spatial = out * out;
    let kc = cin * kernel * kernel;
    let chunk = |per_image: usize| (COL_CHUNK_ELEMS / per_image).clamp(1, batch);
    let name = |p: &str| format!("{net}/{layer}/{p}");
    let mut v = vec![Product {
        name: name("fwd"),
        m: chunk(spatial * kc) * spatial,
        k: kc,
        n: cout,
        a: ColMajor,
        b: ColMajor,
        c: ColMajor,
    }];
    if with_dx {
        let kd = cout * kernel * kernel;
        let plane = size * size;
        v.push(Product {
            name: name("dx"),
            m: chunk(plane * kd) * plane,
            k: kd,
            n: cin,
            a: ColMajor,
            b: RowMajor,
            c: ColMajor,
        });
    }
    v.push(Product {
        name: name("dw"),
        m: kc,
        k: batch * spatial,
        n: cout,
        a: RowMajor,
        b: ColMajor,
        c: ColMajor,
    });
    v
}

/// A dense layer's three products (`nets::layers::dense`).
fn dense_products((net, layer, inf, outf): (&str, &str, usize, usize)) -> Vec<Product> {
    use Layout::*;
    let batch = BATCH;
    let name = |p: &str| format!("{net}/{layer}/{p}");
    vec![
        Product {
            name: name("fwd"),
            m: batch,
            k: inf,
            n: outf,
            a: RowMajor,
            b: RowMajor,
            c: RowMajor,
        },
        Product {
            name: name("dx"),
            m: batch,
            k: outf,
            n: inf,
            a: RowMajor,
            b: ColMajor,
            c: RowMajor,
        },
        Product {
            name: name("dw"),
            m: inf,
            k: batch,
            n: outf,
            a: ColMajor,
            b: RowMajor,
            c: RowMajor,
        },
    ]
}

fn products() -> Vec<Product> {
    let mut v = Vec::new();
    for conv in CONVS {
        v.extend(conv_products(conv));
    }
    // Ordered by network, as the convolutions.
    for net in ["resnet20", "lenet5", "lenet300100"] {
        for dense in DENSES.iter().filter(|d| d.0 == net) {
            v.extend(dense_products(*dense));
        }
    }
    v.push(Product {
        name: "square/1024".into(),
        m: 1024,
        k: 1024,
        n: 1024,
        a: Layout::RowMajor,
        b: Layout::RowMajor,
        c: Layout::RowMajor,
    });
    v
}

fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn sgemm_shapes(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    eprintln!("sgemm_shapes: {threads} rayon threads");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for p in products() {
        let (m, k, n) = (p.m, p.k, p.n);
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let mut out = vec![0.0f32; m * n];
        let (ars, acs) = p.a.strides(m, k);
        let (brs, bcs) = p.b.strides(k, n);
        let (crs, ccs) = p.c.strides(m, n);
        let mut g = c.benchmark_group(&p.name);
        g.throughput(Throughput::Elements((m * n * k) as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        let label = format!("{m}x{k}x{n}/t{threads}");
        g.bench_function(BenchmarkId::new("matrixmultiply", &label), |bench| {
            bench.iter(|| {
                // SAFETY: the strides describe `a`, `b` and `out` exactly;
                // `out` is borrowed mutably, so nothing aliases it.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        black_box(a.as_ptr()),
                        ars as isize,
                        acs as isize,
                        black_box(b.as_ptr()),
                        brs as isize,
                        bcs as isize,
                        0.0,
                        out.as_mut_ptr(),
                        crs as isize,
                        ccs as isize,
                    )
                }
            })
        });
        g.bench_function(BenchmarkId::new("amsim", &label), |bench| {
            bench.iter(|| {
                let av = MatRef::new(&a, m, k, ars, acs).unwrap();
                let bv = MatRef::new(&b, k, n, brs, bcs).unwrap();
                let cv = MatMut::new(&mut out, m, n, crs, ccs).unwrap();
                gemm(&Multiplier::Fp32, black_box(av), black_box(bv), cv, false).unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, sgemm_shapes);
criterion_main!(benches);
