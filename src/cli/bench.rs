//! `approxtrain bench`: time GEMM and convolution for each multiplier
//! against native FP32 in the same run (the harness is `amsim::bench`).

use amsim::bench::{
    bench_conv, bench_gemm, named_conv_shape, BenchOptions, ConvBenchRow, ConvProduct,
    GemmBenchRow, CONV_SHAPE_NAMES,
};
use amsim::conv::Conv2dShape;
use amsim::spec::Resolver;
use amsim::{Multiplier, MultiplierSpec};
use anyhow::{bail, Context};
use approxtrain::models::MODELS;
use experiments::bench::{time_lm_training, time_training, Timed};
use experiments::device::Device;
use serde_json::json;

/// Multipliers timed when `--multiplier` is not given.
const DEFAULT_MULTIPLIERS: &[&str] = &["fp32", "bf16", "mbm:7", "mitchell:7"];

/// `approxtrain bench ...`
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Time C = A·B (row-major m x k by k x n) per multiplier against FP32.
    ///
    /// Example: approxtrain --threads 4 bench gemm --m 512 --n 512 --k 512 --multiplier fp32,mbm:7 --json
    Gemm(GemmArgs),
    /// Time the forward, input-gradient and weight-gradient products of a
    /// convolution layer per multiplier against FP32.
    ///
    /// Example: approxtrain bench conv --shape resnet20-layer1 --batch 32 --multiplier mbm:7,mitchell:7
    Conv(ConvArgs),
    /// Time full training steps (forward, backward, update) of a network
    /// per multiplier against FP32, over one epoch of real images, and the
    /// share of that time spent in AMSim products (GEMM and convolution
    /// calls).
    ///
    /// Example: approxtrain bench train --net resnet20 --data-dir ../shared/datasets --multiplier fp32,mbm:7 --batch-size 128 --json
    ///
    /// The Transformer (the default model of `train --net transformer`) is
    /// timed over `--steps` optimizer steps on a text file instead:
    /// approxtrain bench train --net transformer --dataset text:../shared/datasets/shakespeare/first-folio.txt --multiplier fp32,mbm:7
    Train(TrainBenchArgs),
}

/// Options of `bench train`.
#[derive(clap::Args)]
pub struct TrainBenchArgs {
    /// Network: lenet5, lenet300100, resnet20, resnet32, resnet56, resnet18, resnet34, resnet50, transformer.
    #[arg(long, default_value = "lenet5")]
    net: String,
    /// Dataset: mnist, fashion-mnist or cifar10 [default: cifar10 for the ResNets, else mnist];
    /// text:PATH for the transformer.
    #[arg(long)]
    dataset: Option<String>,
    /// Data directory holding mnist/ ... [default: $APPROXTRAIN_DATA, ./data, then the shipped MNIST subset].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Mini-batch size [default: 128; 32 windows for the transformer].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Transformer: timed optimizer steps per repeat (after one untimed step).
    #[arg(long, default_value_t = 10, value_name = "N")]
    steps: usize,
    /// Training images per timed epoch [default: the whole training set for the LeNets, 8 batches for the ResNets].
    #[arg(long, value_name = "N")]
    images: Option<usize>,
    /// Comma-separated multiplier specs [default: fp32,bf16,mbm:7,mitchell:7].
    /// FP32 is always timed first as the baseline.
    #[arg(long, value_delimiter = ',', value_name = "SPEC,...")]
    multiplier: Vec<String>,
    /// Timed epochs per multiplier; the median is reported.
    #[arg(long, default_value_t = 1, value_name = "R")]
    repeats: usize,
    /// Print one JSON object per row instead of a table.
    #[arg(long)]
    json: bool,
    /// Also print where the time of the median run went, per operation
    /// (products, lowering, bias, quantize, norm, activation, pooling, residual,
    /// attention, loss, optimizer, data, other).
    #[arg(long)]
    profile: bool,
    /// Compute device: cpu or cuda (the layers' products on the GPU, as
    /// `train --device cuda` runs them; the products column is then the
    /// time the host spends in product calls, transfers included).
    #[arg(long, default_value_t = Device::Cpu)]
    device: Device,
}

/// Options shared by every benchmark.
#[derive(clap::Args)]
pub struct CommonArgs {
    /// Comma-separated multiplier specs [default: fp32,bf16,mbm:7,mitchell:7;
    /// defaults whose model is not compiled in are skipped]. FP32 is always
    /// timed as the baseline. `direct:MODEL` calls the model for every
    /// product and is timed once (no warm-up) at the size given.
    /// `int8:MODEL` times the integer products (8-bit codes, the CPU
    /// engines) against that baseline, and so do `int12:MODEL` (4096 x
    /// 4096 table) and `int16:MODEL` (the model called per product).
    #[arg(long, value_delimiter = ',', value_name = "SPEC,...")]
    multiplier: Vec<String>,
    /// Timed calls per measurement; the median is reported.
    #[arg(long, default_value_t = 5, value_name = "R")]
    repeats: usize,
    /// Untimed warm-up calls before timing.
    #[arg(long, default_value_t = 1, value_name = "W")]
    warmup: usize,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value_t = Device::Cpu)]
    device: Device,
    /// Print one JSON object per row instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of `bench gemm`.
#[derive(clap::Args)]
pub struct GemmArgs {
    /// Rows of A and C.
    #[arg(long, default_value_t = 512)]
    m: usize,
    /// Columns of B and C.
    #[arg(long, default_value_t = 512)]
    n: usize,
    /// Columns of A, rows of B (the dot-product length).
    #[arg(long, default_value_t = 512)]
    k: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `bench conv`: a named layer (`--shape`) or an explicit one
/// (`--in-c --hw --out-c --kernel`, with `--stride --pad` optional).
#[derive(clap::Args)]
pub struct ConvArgs {
    /// Named layers, comma-separated: lenet5-conv1, lenet5-conv2,
    /// resnet20-layer1, resnet20-layer2, resnet20-layer3, resnet20-down2,
    /// resnet20-down3, resnet20-shortcut2, or `all` [default: resnet20-layer1].
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        conflicts_with_all = ["in_c", "hw", "out_c", "kernel"]
    )]
    shape: Vec<String>,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Input channels (explicit shape).
    #[arg(long, value_name = "C")]
    in_c: Option<usize>,
    /// Input height and width: `32` or `32x16` (explicit shape).
    #[arg(long, value_name = "H[xW]")]
    hw: Option<String>,
    /// Output channels (explicit shape).
    #[arg(long, value_name = "C")]
    out_c: Option<usize>,
    /// Square kernel size (explicit shape).
    #[arg(long, value_name = "K")]
    kernel: Option<usize>,
    /// Stride (explicit shape).
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Zero padding on each side (explicit shape).
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Groups (explicit shape; the input channels for depthwise).
    #[arg(long, default_value_t = 1)]
    groups: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Run `bench`.
pub fn run(c: BenchCommand) -> anyhow::Result<()> {
    match c {
        BenchCommand::Gemm(a) => run_gemm(a),
        BenchCommand::Conv(a) => run_conv(a),
        BenchCommand::Train(a) => run_train(a),
    }
}

/// Check the device and resolve the multipliers and options.
fn prepare(common: &CommonArgs) -> anyhow::Result<(Vec<Multiplier>, BenchOptions)> {
    if common.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let resolver = Resolver::new(MODELS);
    let mut mults = Vec::new();
    if common.multiplier.is_empty() {
        for spec in DEFAULT_MULTIPLIERS {
            match spec
                .parse::<MultiplierSpec>()
                .and_then(|s| resolver.resolve(&s))
            {
                Ok(m) => mults.push(m),
                Err(e) => eprintln!("note: skipping default multiplier {spec}: {e}"),
            }
        }
    } else {
        for spec in &common.multiplier {
            let parsed: MultiplierSpec = spec.parse()?;
            mults.push(
                resolver
                    .resolve(&parsed)
                    .with_context(|| format!("--multiplier {spec}"))?,
            );
        }
    }
    for m in &mults {
        if matches!(m, Multiplier::Direct { .. }) {
            eprintln!(
                "note: {m} calls the model for every product; it is timed once, without warm-up"
            );
        }
    }
    let opts = BenchOptions {
        warmup: common.warmup,
        repeats: common.repeats,
    };
    Ok((mults, opts))
}

/// The GPU engine for `--device cuda`, named on standard error (a clear
/// error naming what is missing without a GPU), `None` for the CPU.
pub fn cuda_engine(
    device: Device,
) -> anyhow::Result<Option<std::sync::Arc<amsim::cuda::CudaEngine>>> {
    let engine = device.engine()?;
    if let Some(e) = &engine {
        eprintln!("device: {} ({})", e.device_name(), e.arch());
    }
    Ok(engine)
}

/// The name of the device a benchmark ran on: the GPU's, or `cpu`.
fn device_label(engine: &Option<std::sync::Arc<amsim::cuda::CudaEngine>>) -> String {
    engine
        .as_ref()
        .map_or("cpu".to_string(), |e| e.device_name().to_string())
}

/// The integer multipliers of `--multiplier`.
#[derive(Default)]
struct IntSpecs {
    /// `int8:MODEL`, tabulated.
    luts: Vec<amsim::IntLut>,
    /// `int12:MODEL` (tabulated) and `int16:MODEL`.
    wide: Vec<amsim::WideIntMul>,
}

/// The integer specs of `--multiplier`, resolved, and the rest.
fn split_int_specs(specs: &[String]) -> anyhow::Result<(IntSpecs, Vec<String>)> {
    let resolver = amsim::spec::Resolver::new(approxtrain::models::MODELS);
    let mut ints = IntSpecs::default();
    let mut rest = Vec::new();
    for spec in specs {
        if !spec.trim().starts_with("int") {
            rest.push(spec.clone());
            continue;
        }
        let parsed: amsim::MultiplierSpec = spec
            .parse()
            .with_context(|| format!("--multiplier {spec}"))?;
        match resolver
            .resolve(&parsed)
            .with_context(|| format!("--multiplier {spec}"))?
        {
            amsim::Multiplier::Int8 { lut, .. } => ints.luts.push((*lut).clone()),
            amsim::Multiplier::IntWide { mul, .. } => ints.wide.push((*mul).clone()),
            _ => rest.push(spec.clone()),
        }
    }
    Ok((ints, rest))
}

/// Take the integer specs out of `--multiplier` of `bench WHAT`, making
/// sure an `fp32` row is left to compare them with.
fn take_int_specs(common: &mut CommonArgs, what: &str) -> anyhow::Result<IntSpecs> {
    let (ints, float_specs) = split_int_specs(&common.multiplier)?;
    if !ints.luts.is_empty() || !ints.wide.is_empty() {
        if common.device != Device::Cpu {
            bail!("bench {what}: integer products run on the CPU engine only so far; leave out --device or the integer specs");
        }
        // The integer rows are compared with the FP32 rows of the same run.
        common.multiplier = float_specs;
        if !common.multiplier.iter().any(|s| s.trim() == "fp32") {
            common.multiplier.insert(0, "fp32".into());
        }
    }
    Ok(ints)
}

fn run_gemm(mut a: GemmArgs) -> anyhow::Result<()> {
    let ints = take_int_specs(&mut a.common, "gemm")?;
    let (mults, opts) = prepare(&a.common)?;
    let eng = cuda_engine(a.common.device)?;
    let mut rows = match &eng {
        Some(e) => amsim::cuda::bench::bench_gemm_cuda(e, &mults, a.m, a.n, a.k, opts)?,
        None => bench_gemm(&mults, a.m, a.n, a.k, opts)?,
    };
    if !ints.luts.is_empty() || !ints.wide.is_empty() {
        let fp32 = rows
            .iter()
            .find(|r| r.multiplier == "fp32")
            .map(|r| r.seconds)
            .context("bench gemm: no fp32 row to compare the integer rows with")?;
        rows.extend(amsim::bench::bench_int_gemm(
            &ints.luts, a.m, a.n, a.k, opts, fp32,
        )?);
        rows.extend(amsim::bench::bench_wide_int_gemm(
            &ints.wide, a.m, a.n, a.k, opts, fp32,
        )?);
    }
    let device = device_label(&eng);
    if a.common.json {
        for r in &rows {
            let mut j = gemm_json(r);
            j["device"] = json!(device);
            println!("{j}");
        }
    } else {
        print_gemm_table(&rows, &device);
    }
    Ok(())
}

fn gemm_json(r: &GemmBenchRow) -> serde_json::Value {
    json!({
        "bench": "gemm",
        "device": "cpu",
        "multiplier": r.multiplier,
        "m": r.m,
        "n": r.n,
        "k": r.k,
        "threads": r.threads,
        "repeats": r.repeats,
        "seconds": r.seconds,
        "gmacs": r.gmacs,
        "ratio_vs_fp32": r.ratio_vs_fp32,
    })
}

fn print_gemm_table(rows: &[GemmBenchRow], device: &str) {
    if let Some(r) = rows.first() {
        if device == "cpu" {
            println!(
                "gemm {}x{}x{} (m x k x n), {} threads, cpu",
                r.m, r.k, r.n, r.threads
            );
        } else {
            println!(
                "gemm {}x{}x{} (m x k x n), {device} (fp32 = cuBLAS SGEMM, TF32 off)",
                r.m, r.k, r.n
            );
        }
    }
    let w = label_width(rows.iter().map(|r| r.multiplier.as_str()));
    println!(
        "{:<w$} {:>8} {:>12} {:>10} {:>9}",
        "multiplier", "repeats", "seconds", "GMAC/s", "vs fp32"
    );
    for r in rows {
        println!(
            "{:<w$} {:>8} {:>12.6} {:>10.3} {:>8.2}x",
            r.multiplier, r.repeats, r.seconds, r.gmacs, r.ratio_vs_fp32
        );
    }
}

/// `32` -> (32, 32), `32x16` -> (32, 16).
fn parse_hw(s: &str) -> anyhow::Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--hw '{s}': expected a size like 32 or 32x16");
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((
            h.trim().parse().map_err(|_| bad())?,
            w.trim().parse().map_err(|_| bad())?,
        )),
        None => {
            let v = s.trim().parse().map_err(|_| bad())?;
            Ok((v, v))
        }
    }
}

/// The layers to time and their names (`None` for an explicit shape).
fn conv_shapes(a: &ConvArgs) -> anyhow::Result<Vec<(Conv2dShape, Option<String>)>> {
    let explicit = [
        a.in_c.is_some(),
        a.hw.is_some(),
        a.out_c.is_some(),
        a.kernel.is_some(),
    ];
    if explicit.iter().any(|&e| e) {
        let (Some(in_c), Some(hw), Some(out_c), Some(kernel)) =
            (a.in_c, a.hw.as_deref(), a.out_c, a.kernel)
        else {
            bail!("an explicit layer needs all of --in-c, --hw, --out-c and --kernel (or use --shape NAME)");
        };
        let (h, w) = parse_hw(hw)?;
        let mut s = Conv2dShape::new(a.batch, in_c, h, w, out_c, kernel);
        s.stride = (a.stride, a.stride);
        s.padding = (a.pad, a.pad);
        s.groups = a.groups;
        s.validate()?;
        return Ok(vec![(s, None)]);
    }
    let names: Vec<&str> = match a.shape.as_slice() {
        [] => vec!["resnet20-layer1"],
        [all] if all == "all" => CONV_SHAPE_NAMES.to_vec(),
        given => given.iter().map(String::as_str).collect(),
    };
    names
        .into_iter()
        .map(|name| Ok((named_conv_shape(name, a.batch)?, Some(name.to_string()))))
        .collect()
}

fn run_conv(mut a: ConvArgs) -> anyhow::Result<()> {
    let shapes = conv_shapes(&a)?;
    let ints = take_int_specs(&mut a.common, "conv")?;
    let (mults, opts) = prepare(&a.common)?;
    let eng = cuda_engine(a.common.device)?;
    let device = device_label(&eng);
    for (i, (shape, name)) in shapes.iter().enumerate() {
        let mut rows = match &eng {
            Some(e) => amsim::cuda::bench::bench_conv_cuda(e, &mults, shape, opts)?,
            None => bench_conv(&mults, shape, opts)?,
        };
        if !ints.luts.is_empty() || !ints.wide.is_empty() {
            let mut fp32 = [0.0; 3];
            for (t, p) in fp32.iter_mut().zip(ConvProduct::ALL) {
                *t = rows
                    .iter()
                    .find(|r| r.multiplier == "fp32" && r.product == p)
                    .map(|r| r.seconds)
                    .context("bench conv: no fp32 row to compare the integer rows with")?;
            }
            rows.extend(amsim::bench::bench_int_conv(&ints.luts, shape, opts, fp32)?);
            rows.extend(amsim::bench::bench_wide_int_conv(
                &ints.wide, shape, opts, fp32,
            )?);
        }
        if a.common.json {
            for r in &rows {
                let mut j = conv_json(r, name.as_deref());
                j["device"] = json!(device);
                println!("{j}");
            }
        } else {
            if i > 0 {
                println!();
            }
            print_conv_table(&rows, shape, name.as_deref());
        }
    }
    Ok(())
}

fn conv_json(r: &ConvBenchRow, name: Option<&str>) -> serde_json::Value {
    let s = &r.shape;
    json!({
        "bench": "conv",
        "device": "cpu",
        "multiplier": r.multiplier,
        "shape": name,
        "product": r.product.key(),
        "batch": s.batch,
        "in_channels": s.in_channels,
        "in_h": s.in_h,
        "in_w": s.in_w,
        "out_channels": s.out_channels,
        "kernel_h": s.kernel_h,
        "kernel_w": s.kernel_w,
        "stride": [s.stride.0, s.stride.1],
        "padding": [s.padding.0, s.padding.1],
        "dilation": [s.dilation.0, s.dilation.1],
        "groups": s.groups,
        "macs": s.macs(),
        "threads": r.threads,
        "repeats": r.repeats,
        "seconds": r.seconds,
        "gmacs": r.gmacs,
        "ratio_vs_fp32": r.ratio_vs_fp32,
    })
}

/// The width of a table's first column: 16, or its longest label.
fn label_width<'a>(labels: impl Iterator<Item = &'a str>) -> usize {
    labels.map(str::len).chain([16]).max().unwrap_or(16)
}

fn print_conv_table(rows: &[ConvBenchRow], s: &Conv2dShape, name: Option<&str>) {
    let threads = rows
        .first()
        .map_or(rayon::current_num_threads(), |r| r.threads);
    println!(
        "conv {}batch {}, {} -> {} channels, {}x{} kernel on {}x{}, stride {:?}, padding {:?}, groups {}; {} MMAC per product, {}",
        name.map(|n| format!("{n}: ")).unwrap_or_default(),
        s.batch,
        s.in_channels,
        s.out_channels,
        s.kernel_h,
        s.kernel_w,
        s.in_h,
        s.in_w,
        s.stride,
        s.padding,
        s.groups,
        s.macs() as f64 / 1e6,
        if threads == 0 {
            "GPU".to_string()
        } else {
            format!("{threads} threads, cpu")
        },
    );
    let w = label_width(rows.iter().map(|r| r.multiplier.as_str()));
    println!(
        "{:<w$} {:<12} {:>8} {:>12} {:>10} {:>9}",
        "multiplier", "product", "repeats", "seconds", "GMAC/s", "vs fp32"
    );
    for r in rows {
        println!(
            "{:<w$} {:<12} {:>8} {:>12.6} {:>10.3} {:>8.2}x",
            r.multiplier,
            r.product.key(),
            r.repeats,
            r.seconds,
            r.gmacs,
            r.ratio_vs_fp32
        );
    }
}

/// Print the breakdown of each row: seconds and share of the run.
fn print_breakdown(rows: &[(String, &Timed)]) {
    println!();
    println!("where the time went (exclusive seconds on the training thread, share of the run):");
    let names: Vec<&str> = rows[0].1.breakdown().iter().map(|r| r.0).collect();
    print!("{:<12}", "operation");
    for (label, _) in rows {
        print!(" {:>18}", label);
    }
    println!();
    for (i, name) in names.iter().enumerate() {
        print!("{name:<12}");
        for (_, t) in rows {
            let s = t.breakdown()[i].1;
            print!(" {:>10.3} {:>6.1}%", s, 100.0 * s / t.seconds);
        }
        println!();
    }
}

/// The breakdown as a JSON object of seconds.
fn breakdown_json(t: &Timed) -> serde_json::Value {
    serde_json::Value::Object(
        t.breakdown()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// One row of `bench train`.
struct TrainBenchRow {
    multiplier: String,
    /// The median timed epoch.
    timed: Timed,
    images: usize,
    threads: usize,
}

fn run_train(a: TrainBenchArgs) -> anyhow::Result<()> {
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if a.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    let lm = experiments::Task::of_net(&a.net) == experiments::Task::LanguageModel;
    if lm && a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let resolver = Resolver::new(MODELS);
    let specs: Vec<String> = if a.multiplier.is_empty() {
        DEFAULT_MULTIPLIERS.iter().map(|s| s.to_string()).collect()
    } else {
        a.multiplier.clone()
    };
    let mut mults = vec![Multiplier::Fp32];
    for spec in &specs {
        let parsed: MultiplierSpec = spec.parse()?;
        let m = resolver
            .resolve(&parsed)
            .with_context(|| format!("--multiplier {spec}"))?;
        if !matches!(m, Multiplier::Fp32) {
            mults.push(m);
        }
    }
    let engine = cuda_engine(a.device)?;
    let device = device_label(&engine);
    nets::device::use_cuda(engine);
    if lm {
        return run_train_lm(&a, &mults, &device);
    }
    let resnet = a.net.starts_with("resnet");
    let dataset = a
        .dataset
        .clone()
        .unwrap_or_else(|| if resnet { "cifar10" } else { "mnist" }.to_string());
    let location = nets::data::resolve_dataset_dir(a.data_dir.as_deref(), &dataset)?;
    if let Some(notice) = &location.notice {
        eprintln!("{notice}");
    }
    let images = a
        .images
        .or(resnet.then_some(8 * a.batch_size.unwrap_or(128)));
    let data = location.load_images(nets::data::Split::Train, images)?;
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for m in &mults {
        let timed = time_training(&a.net, m, &data, a.batch_size.unwrap_or(128), a.repeats)?;
        rows.push(TrainBenchRow {
            multiplier: m.label(),
            timed,
            images: data.len,
            threads,
        });
    }
    let base = rows[0].timed.seconds;
    if !a.json {
        println!(
            "train {} on {} ({} images per epoch, batch {}), {} threads, {device}",
            a.net,
            dataset,
            data.len,
            a.batch_size.unwrap_or(128),
            threads
        );
        println!(
            "{:<16} {:>12} {:>12} {:>9} {:>9}",
            "multiplier", "s/epoch", "images/s", "vs fp32", "products"
        );
    }
    for r in &rows {
        let (seconds, product_seconds) = (r.timed.seconds, r.timed.product_seconds);
        let ips = r.images as f64 / seconds;
        let ratio = seconds / base;
        let share = product_seconds / seconds;
        if a.json {
            println!(
                "{}",
                json!({
                    "bench": "train",
                    "device": device,
                    "net": a.net,
                    "dataset": dataset,
                    "multiplier": r.multiplier,
                    "batch_size": a.batch_size.unwrap_or(128),
                    "images": r.images,
                    "threads": r.threads,
                    "repeats": a.repeats,
                    "seconds": seconds,
                    "images_per_s": ips,
                    "ratio_vs_fp32": ratio,
                    "product_seconds": product_seconds,
                    "product_share": share,
                    "profile": breakdown_json(&r.timed),
                })
            );
        } else {
            println!(
                "{:<16} {:>12.2} {:>12.1} {:>8.2}x {:>8.1}%",
                r.multiplier,
                seconds,
                ips,
                ratio,
                100.0 * share
            );
        }
    }
    if a.profile && !a.json {
        let rows: Vec<(String, &Timed)> = rows
            .iter()
            .map(|r| (r.multiplier.clone(), &r.timed))
            .collect();
        print_breakdown(&rows);
    }
    Ok(())
}

/// `bench train --net transformer`: seconds per step per multiplier
/// against FP32, and the share in AMSim products.
fn run_train_lm(a: &TrainBenchArgs, mults: &[Multiplier], device: &str) -> anyhow::Result<()> {
    let dataset = a.dataset.clone().unwrap_or_default();
    let Some(path) = experiments::lm::text_path(&dataset) else {
        bail!("--net transformer needs --dataset text:PATH (a UTF-8 text file), got '{dataset}'");
    };
    let corpus = nets::data::load_text(path)?;
    let batch = a.batch_size.unwrap_or(32);
    let context = experiments::lm::TransformerSpec::default().context;
    if corpus.train.len() <= context {
        bail!(
            "{}: its training split holds {} characters, too few for windows of {} characters",
            path.display(),
            corpus.train.len(),
            context + 1
        );
    }
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for m in mults {
        let timed = time_lm_training(m, &corpus, batch, a.steps, a.repeats)?;
        rows.push((m.label(), timed));
    }
    let base = rows[0].1.seconds;
    if !a.json {
        let spec = experiments::lm::TransformerSpec::default();
        println!(
            "train transformer ({} layers, width {}, {} heads, context {context}) on {dataset}, \
             {} steps of batch {batch}, {threads} threads, {device}",
            spec.layers, spec.width, spec.heads, a.steps
        );
        println!(
            "{:<16} {:>12} {:>12} {:>9} {:>9}",
            "multiplier", "s/step", "chars/s", "vs fp32", "products"
        );
    }
    for (label, timed) in &rows {
        let (seconds, product_seconds) = (timed.seconds, timed.product_seconds);
        let per_step = seconds / a.steps as f64;
        let chars = (a.steps * batch * context) as f64 / seconds;
        let ratio = seconds / base;
        let share = product_seconds / seconds;
        if a.json {
            println!(
                "{}",
                json!({
                    "bench": "train",
                    "device": device,
                    "net": experiments::lm::TRANSFORMER,
                    "dataset": dataset,
                    "multiplier": label,
                    "batch_size": batch,
                    "steps": a.steps,
                    "threads": threads,
                    "repeats": a.repeats,
                    "seconds": seconds,
                    "seconds_per_step": per_step,
                    "chars_per_s": chars,
                    "ratio_vs_fp32": ratio,
                    "product_seconds": product_seconds,
                    "product_share": share,
                    "profile": breakdown_json(timed),
                })
            );
        } else {
            println!(
                "{:<16} {:>12.3} {:>12.0} {:>8.2}x {:>8.1}%",
                label,
                per_step,
                chars,
                ratio,
                100.0 * share
            );
        }
    }
    if a.profile && !a.json {
        let rows: Vec<(String, &Timed)> = rows.iter().map(|(l, t)| (l.clone(), t)).collect();
        print_breakdown(&rows);
    }
    Ok(())
}
