//! `approxtrain lut`, `characterize` and `verify`: tables, their error
//! metrics and their agreement with the C models.

use std::path::{Path, PathBuf};

use amsim::int_lut::kind_name;
use amsim::int_metrics::{self, IntCharacterization};
use amsim::lut_file::{self, LutFormat};
use amsim::metrics::{self, Characterization};
use amsim::verify::{self, VerifyReport};
use amsim::{IntLut, IntModelInfo, Lut, ModelInfo, WideIntModelInfo, WideIntMul};
use anyhow::{bail, Context, Result};
use approxtrain::models::{INT_MODELS, MODELS, WIDE_INT_MODELS};
use experiments::eval::refuse_existing;

/// `approxtrain lut ...`
#[derive(clap::Subcommand)]
pub enum LutCommand {
    /// Tabulate a model and write a native LUT file.
    #[command(
        after_help = "Examples:\n  approxtrain lut build --model mbm --bits 7 -o mbm7.lut\n  approxtrain lut build --model mul8s_trunc4 -o mul8s_trunc4.ilut"
    )]
    Build {
        #[command(flatten)]
        model: ModelArgs,
        /// Output file (default: MODELBITS.lut, e.g. mbm7.lut, or MODEL.ilut for an integer model).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Tabulate a model and write it as an ApproxTrain .bin or native file.
    ///
    /// The ApproxTrain format keeps the top BITS fraction bits of each
    /// product and truncates the rest, as ApproxTrain's own generator does.
    #[command(
        after_help = "Example:\n  approxtrain lut export --model mbm --bits 7 --format approxtrain -o MBM_7.bin"
    )]
    Export {
        #[command(flatten)]
        model: ModelArgs,
        /// File format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Approxtrain)]
        format: ExportFormat,
        /// Output file (default: ApproxTrain's NAME_BITS.bin, e.g. MBM_7.bin, or MODELBITS.lut).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Convert an ApproxTrain .bin table to a native LUT file.
    #[command(after_help = "Example:\n  approxtrain lut import MBM_7.bin -o mbm7.lut")]
    Import {
        /// The ApproxTrain table (4^BITS bytes).
        file: PathBuf,
        /// Table width (default: from a NAME_BITS.bin file name, else from the size).
        #[arg(long)]
        bits: Option<u32>,
        /// Model name to store (default: NAME of NAME_BITS.bin, lower-cased).
        #[arg(long)]
        name: Option<String>,
        /// Output file (default: the input name with extension .lut).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Show a table: header, a corner of its entries, checksum and error metrics.
    #[command(
        after_help = "Examples:\n  approxtrain lut show mbm7.lut\n  approxtrain lut show --model mitchell --bits 5"
    )]
    Show {
        /// A LUT file (native or ApproxTrain .bin).
        #[arg(conflicts_with_all = ["model", "bits"], required_unless_present = "model")]
        file: Option<PathBuf>,
        /// Registered model to tabulate instead of reading a file.
        #[arg(long)]
        model: Option<String>,
        /// Table width for --model (not for an integer model).
        #[arg(long)]
        bits: Option<u32>,
        /// Rows and columns of the corner of entries to print.
        #[arg(long, default_value_t = 4)]
        entries: u32,
    },
}

/// `--model M --bits B`, or `--model M` for an integer model.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Registered model name (see `approxtrain models`).
    #[arg(long)]
    model: String,
    /// Mantissa bits of the table (float models only; an integer model's
    /// table is always 256 x 256).
    #[arg(long)]
    bits: Option<u32>,
}

/// Formats `lut export` writes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// ApproxTrain's one byte per entry (BITS <= 7).
    Approxtrain,
    /// This tool's format with header and checksum.
    Native,
}

/// Options of `approxtrain characterize`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  approxtrain characterize --model mitchell --bits 7 --csv mit7.csv --heatmap mit7.png\n  approxtrain characterize --lut MBM_7.bin"
)]
pub struct CharacterizeArgs {
    /// Registered model name.
    #[arg(long, conflicts_with = "lut", required_unless_present = "lut")]
    model: Option<String>,
    /// Mantissa bits (1..=11 exhaustive; up to 23 sampled, without a heat
    /// map); not for an integer model, which is always characterized over
    /// all 65536 operand pairs.
    #[arg(long)]
    bits: Option<u32>,
    /// A LUT file (native, ApproxTrain .bin or integer .ilut) instead of a model.
    #[arg(long, value_name = "FILE")]
    lut: Option<PathBuf>,
    /// Write the metrics as a one-row CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write one CSV row per mantissa pair (tables up to 8 bits).
    #[arg(long, value_name = "FILE")]
    pairs_csv: Option<PathBuf>,
    /// Write a PNG heat map of the relative error.
    #[arg(long, value_name = "FILE")]
    heatmap: Option<PathBuf>,
    /// Pairs sampled above 11 bits.
    #[arg(long, default_value_t = 1_000_000)]
    samples: u64,
    /// Seed of the sampling above 11 bits (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
}

/// Options of `approxtrain verify`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  approxtrain verify --model mbm --bits 7 --samples 1000000 --seed 42\n  approxtrain verify --all --bits 7\n\nExits with status 1 when any product differs."
)]
pub struct VerifyArgs {
    /// Registered model name.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    model: Option<String>,
    /// Verify every registered model that supports --bits.
    #[arg(long)]
    all: bool,
    /// Table width (float models; an integer model is checked on all 65536
    /// operand pairs).
    #[arg(long)]
    bits: Option<u32>,
    /// Random FP32 pairs to compare.
    #[arg(long, default_value_t = verify::DEFAULT_SAMPLES)]
    samples: u64,
    /// Seed of the operand generator (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
}

/// Look `name` up in the registry and check that it supports `bits`.
fn resolve_model(name: &str, bits: u32) -> Result<&'static ModelInfo> {
    let info = amsim::model::find(MODELS, name)?;
    if !info.supports_bits(bits) {
        bail!(
            "model '{}' supports {}..={} bits, not {bits}",
            info.name,
            info.min_bits,
            info.max_bits
        );
    }
    Ok(info)
}

/// Tabulate a registered model.
fn build_lut(name: &str, bits: u32) -> Result<Lut> {
    let info = resolve_model(name, bits)?;
    Ok(Lut::build(info.name, info.func, bits)?)
}

/// The integer model `name`, if it is one; `bits` must then be absent.
fn int_model(name: &str, bits: Option<u32>) -> Result<Option<&'static IntModelInfo>> {
    let Ok(info) = amsim::model::find_int(INT_MODELS, name) else {
        return Ok(None);
    };
    if let Some(b) = bits {
        bail!(
            "model '{name}' is an 8-bit integer model ({}): leave out --bits {b} (its table is always 256 x 256)",
            kind_name(info.signed)
        );
    }
    Ok(Some(info))
}

/// The 12- or 16-bit integer model `name`, if it is one; `bits` must then
/// be absent.
fn wide_int_model(name: &str, bits: Option<u32>) -> Result<Option<&'static WideIntModelInfo>> {
    let Ok(info) = amsim::model::find_wide_int(WIDE_INT_MODELS, name) else {
        return Ok(None);
    };
    if let Some(b) = bits {
        bail!(
            "model '{name}' is a {}-bit integer model ({}): leave out --bits {b}",
            info.bits,
            amsim::int_wide::kind_name(info.bits, info.signed)
        );
    }
    Ok(Some(info))
}

/// The error of `lut build`/`lut export` for a 12- or 16-bit model: there
/// is no file of its products.
fn no_wide_file(info: &WideIntModelInfo) -> anyhow::Error {
    if info.bits <= amsim::int_wide::MAX_TABLE_BITS {
        anyhow::anyhow!(
            "model '{}' is a {}-bit integer model: its 4096 x 4096 table (64 MiB) is built in memory by int{}:{} specs and has no file format; table files (.ilut) are 8-bit",
            info.name,
            info.bits,
            info.bits,
            info.name
        )
    } else {
        anyhow::anyhow!(
            "model '{}' is a 16-bit integer model: it has no table (2^32 entries); int16:{} calls it for every product",
            info.name,
            info.name
        )
    }
}

/// The `--bits` a float model needs.
fn float_bits(name: &str, bits: Option<u32>) -> Result<u32> {
    bits.with_context(|| format!("give --bits for the floating-point model '{name}'"))
}

/// Whether `path` holds an integer table (by its magic).
fn is_int_file(path: &Path) -> Result<bool> {
    use std::io::Read as _;
    let mut magic = [0u8; 8];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(amsim::int_lut::is_int_table(&magic[..n]))
}

/// Write an integer table and say so.
fn write_int_lut(lut: &IntLut, output: Option<PathBuf>, force: bool) -> Result<()> {
    let out = output.unwrap_or_else(|| PathBuf::from(format!("{}.ilut", lut.model_name())));
    refuse_existing(&out, force)?;
    lut.write(&out)?;
    println!(
        "wrote {} ({}, {}, {} entries, checksum {:016x})",
        out.display(),
        lut.model_name(),
        kind_name(lut.signed()),
        lut.table().len(),
        lut.checksum()
    );
    Ok(())
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Run `lut`.
pub fn run_lut(c: LutCommand) -> Result<()> {
    match c {
        LutCommand::Build {
            model,
            output,
            force,
        } => {
            if let Some(info) = int_model(&model.model, model.bits)? {
                return write_int_lut(&IntLut::of(info)?, output, force);
            }
            if let Some(info) = wide_int_model(&model.model, model.bits)? {
                return Err(no_wide_file(info));
            }
            let lut = build_lut(&model.model, float_bits(&model.model, model.bits)?)?;
            let out = output.unwrap_or_else(|| native_name(&lut));
            refuse_existing(&out, force)?;
            lut_file::write_native(&lut, &out)?;
            println!(
                "wrote {} ({} at {} bits, {} entries, checksum {:016x})",
                out.display(),
                lut.model_name(),
                lut.bits(),
                lut.table().len(),
                lut_file::checksum(&lut)
            );
        }
        LutCommand::Export {
            model,
            format,
            output,
            force,
        } => {
            if let Some(info) = int_model(&model.model, model.bits)? {
                if format == ExportFormat::Approxtrain {
                    bail!(
                        "model '{}' is an integer model: ApproxTrain's .bin holds float tables only; use --format native (an .ilut file)",
                        info.name
                    );
                }
                return write_int_lut(&IntLut::of(info)?, output, force);
            }
            if let Some(info) = wide_int_model(&model.model, model.bits)? {
                return Err(no_wide_file(info));
            }
            let lut = build_lut(&model.model, float_bits(&model.model, model.bits)?)?;
            match format {
                ExportFormat::Native => {
                    let out = output.unwrap_or_else(|| native_name(&lut));
                    refuse_existing(&out, force)?;
                    lut_file::write_native(&lut, &out)?;
                    println!(
                        "wrote {} (native, {} entries)",
                        out.display(),
                        lut.table().len()
                    );
                }
                ExportFormat::Approxtrain => {
                    let out = output.unwrap_or_else(|| {
                        PathBuf::from(lut_file::approxtrain_file_name(
                            lut.model_name(),
                            lut.bits(),
                        ))
                    });
                    refuse_existing(&out, force)?;
                    lut_file::write_approxtrain(&lut, &out)?;
                    println!(
                        "wrote {} (ApproxTrain, {} bytes)",
                        out.display(),
                        lut.table().len()
                    );
                    if let Some((ta, tb, v)) = lut_file::approxtrain_first_lossy_entry(&lut) {
                        eprintln!(
                            "note: entries have fraction bits below the top {}, truncated as ApproxTrain does (first: L[{ta}][{tb}] = {v})",
                            lut.bits()
                        );
                    }
                }
            }
        }
        LutCommand::Import {
            file,
            bits,
            name,
            output,
            force,
        } => {
            let lut = lut_file::read_approxtrain(&file, bits, name.as_deref())?;
            let out = output.unwrap_or_else(|| file.with_extension("lut"));
            if out == file {
                bail!(
                    "{}: the output would overwrite the input; give -o FILE",
                    file.display()
                );
            }
            refuse_existing(&out, force)?;
            lut_file::write_native(&lut, &out)?;
            println!(
                "wrote {} ({} at {} bits from {})",
                out.display(),
                lut.model_name(),
                lut.bits(),
                file.display()
            );
        }
        LutCommand::Show {
            file,
            model,
            bits,
            entries,
        } => show(file.as_deref(), model.as_deref(), bits, entries)?,
    }
    Ok(())
}

fn native_name(lut: &Lut) -> PathBuf {
    PathBuf::from(format!("{}{}.lut", lut.model_name(), lut.bits()))
}

/// `lut show` of an integer table: header, a corner of entries, metrics.
fn show_int(lut: &IntLut, source: &str, corner: u32) {
    println!("format      {source}");
    println!(
        "checksum    {:016x} (FNV-1a 64 of the i32 entries)",
        lut.checksum()
    );
    println!("model       {}", lut.model_name());
    println!("operands    {}", kind_name(lut.signed()));
    println!("entries     {}", lut.table().len());
    let lo = *lut.operand_range().start();
    let k = corner.min(256) as i32;
    println!("products p(a, b), a, b from {lo}:");
    for a in lo..lo + k {
        let row: Vec<String> = (lo..lo + k)
            .map(|b| format!("{:>7}", lut.mul(a, b)))
            .collect();
        println!("  {a:>5} {}", row.join(" "));
    }
    println!();
    print_int_characterization(&int_metrics::characterize_int_lut(lut));
}

fn show(file: Option<&Path>, model: Option<&str>, bits: Option<u32>, corner: u32) -> Result<()> {
    if let Some(path) = file {
        if is_int_file(path)? {
            println!("file        {}", path.display());
            show_int(
                &IntLut::read(path)?,
                "integer table (.ilut), checksum verified",
                corner,
            );
            return Ok(());
        }
    }
    if let Some(info) = model.map(|m| int_model(m, bits)).transpose()?.flatten() {
        show_int(
            &IntLut::of(info)?,
            "tabulated from the registered integer model",
            corner,
        );
        return Ok(());
    }
    let lut = match (file, model, bits) {
        (Some(path), _, _) => {
            let (lut, format) = lut_file::read_with_format(path)?;
            println!("file        {}", path.display());
            match format {
                LutFormat::Native => {
                    let (header, _) = lut_file::read_native_with_header(path)?;
                    println!("format      native (version {})", header.version);
                    println!(
                        "checksum    {:016x} (FNV-1a 64 of the entries, verified)",
                        header.checksum
                    );
                }
                LutFormat::ApproxTrain => {
                    println!("format      ApproxTrain .bin (1 byte per entry)");
                    println!(
                        "checksum    {:016x} (FNV-1a 64 of the f32 entries)",
                        lut_file::checksum(&lut)
                    );
                }
            }
            lut
        }
        (None, Some(m), Some(b)) => {
            let lut = build_lut(m, b)?;
            println!("format      tabulated from the registered model");
            println!(
                "checksum    {:016x} (FNV-1a 64 of the f32 entries)",
                lut_file::checksum(&lut)
            );
            lut
        }
        (None, Some(m), None) => bail!("give --bits for the floating-point model '{m}'"),
        _ => bail!("give a LUT file or --model and --bits"),
    };
    println!("model       {}", lut.model_name());
    println!("bits        {}", lut.bits());
    println!("entries     {}", lut.table().len());
    if lut.bits() <= lut_file::MAX_APPROXTRAIN_BITS {
        match lut_file::approxtrain_first_lossy_entry(&lut) {
            None => println!("ApproxTrain export lossless"),
            Some((ta, tb, v)) => {
                println!("ApproxTrain export truncates (first: L[{ta}][{tb}] = {v})")
            }
        }
    }
    let k = corner.min(1 << lut.bits());
    println!("entries L[ta][tb], ta, tb < {k}:");
    for ta in 0..k {
        let row: Vec<String> = (0..k)
            .map(|tb| format!("{:>11}", lut.get(ta, tb)))
            .collect();
        println!("  {ta:>4} {}", row.join(" "));
    }
    println!();
    print_characterization(&metrics::characterize_lut(&lut));
    Ok(())
}

fn percent(x: f64) -> String {
    format!("{:+.4}%", 100.0 * x)
}

/// Print the metrics as a two-column table.
fn print_characterization(c: &Characterization) {
    let coverage = if c.exhaustive {
        format!("{} (all pairs)", c.pairs)
    } else {
        format!("{} (sampled)", c.pairs)
    };
    let rows = [
        ("model", format!("{} at {} bits", c.model, c.bits)),
        ("pairs", coverage),
        ("error rate", format!("{:.4}%", 100.0 * c.error_rate)),
        ("mean error (bias)", format!("{:+.6e}", c.mean_error)),
        ("mean absolute error", format!("{:.6e}", c.mean_abs_error)),
        ("mean relative error", percent(c.mean_relative_error)),
        ("MRED", format!("{:.4}%", 100.0 * c.mred)),
        (
            "worst relative error",
            format!(
                "{} at [{}][{}]",
                percent(c.max_relative_error),
                c.max_relative_error_at.0,
                c.max_relative_error_at.1
            ),
        ),
        (
            "RMS relative error",
            format!("{:.4}%", 100.0 * c.rms_relative_error),
        ),
        (
            "std of relative error",
            format!("{:.4}%", 100.0 * c.std_relative_error),
        ),
        ("within 1 ulp", format!("{:.4}%", 100.0 * c.within_one_ulp)),
    ];
    for (name, value) in rows {
        println!("{name:<22} {value}");
    }
}

/// Print the integer metrics as a two-column table.
fn print_int_characterization(c: &IntCharacterization) {
    let rows = [
        (
            "model",
            format!(
                "{} ({})",
                c.model,
                amsim::int_wide::kind_name(c.bits, c.signed)
            ),
        ),
        (
            "pairs",
            if c.bits == 16 {
                format!("{} (random)", c.pairs)
            } else {
                format!("{} (all pairs)", c.pairs)
            },
        ),
        (
            "error probability",
            format!("{:.4}%", 100.0 * c.error_probability),
        ),
        ("bias (mean error)", format!("{:+.4}", c.bias)),
        (
            "MAE",
            format!("{:.4} ({:.4}% of 2^{})", c.mae, c.mae_percent, 2 * c.bits),
        ),
        ("MRED", format!("{:.4}%", 100.0 * c.mred)),
        (
            "WCE",
            format!("{} at ({}, {})", c.wce, c.wce_at.0, c.wce_at.1),
        ),
        ("MSE", format!("{:.4}", c.mse)),
    ];
    for (name, value) in rows {
        println!("{name:<22} {value}");
    }
}

/// `characterize` of an integer table: metrics, CSV, heat map.
fn characterize_int(lut: &IntLut, a: &CharacterizeArgs) -> Result<()> {
    if a.pairs_csv.is_some() {
        bail!("--pairs-csv is for float tables; an integer table's pairs are its 65536 entries (write them with `approxtrain lut build`)");
    }
    let c = int_metrics::characterize_int_lut(lut);
    print_int_characterization(&c);
    if let Some(path) = &a.csv {
        int_metrics::write_int_csv(&[c], path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &a.heatmap {
        experiments::figure::heatmap::write_int_heatmap(lut, path)
            .with_context(|| format!("heat map of {}", lut.model_name()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `characterize` of a 12- or 16-bit model: all pairs of its table (12
/// bits) or `--samples` random pairs (16 bits); the heat map of 12-bit
/// tables in 16 x 16 blocks.
fn characterize_wide(info: &WideIntModelInfo, a: &CharacterizeArgs) -> Result<()> {
    if a.pairs_csv.is_some() {
        bail!(
            "--pairs-csv is for float tables; leave it out for the integer model '{}'",
            info.name
        );
    }
    let mul = WideIntMul::of(info)?;
    if a.heatmap.is_some() && !mul.is_table() {
        bail!(
            "--heatmap draws a table; '{}' is a 16-bit model with no table (2^32 pairs): leave out --heatmap",
            info.name
        );
    }
    let seed = a.seed.unwrap_or_else(clock_seed);
    if !mul.is_table() {
        eprintln!("sampling {} pairs with seed {seed}", a.samples);
    }
    let c = int_metrics::characterize_wide(&mul, a.samples, seed);
    print_int_characterization(&c);
    if let Some(path) = &a.csv {
        int_metrics::write_int_csv(&[c], path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &a.heatmap {
        experiments::figure::heatmap::write_wide_int_heatmap(&mul, path)
            .with_context(|| format!("heat map of {}", info.name))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Run `characterize`.
pub fn run_characterize(a: CharacterizeArgs) -> Result<()> {
    if let Some(path) = &a.lut {
        if is_int_file(path)? {
            return characterize_int(&IntLut::read(path)?, &a);
        }
    }
    if let Some(info) = a
        .model
        .as_deref()
        .map(|m| int_model(m, a.bits))
        .transpose()?
        .flatten()
    {
        return characterize_int(&IntLut::of(info)?, &a);
    }
    if let Some(info) = a
        .model
        .as_deref()
        .map(|m| wide_int_model(m, a.bits))
        .transpose()?
        .flatten()
    {
        return characterize_wide(info, &a);
    }
    let (c, lut) = match (&a.lut, &a.model, a.bits) {
        (Some(path), _, _) => {
            let lut = lut_file::read(path)?;
            (metrics::characterize_lut(&lut), Some(lut))
        }
        (None, Some(name), Some(bits)) if bits <= amsim::MAX_LUT_BITS => {
            let lut = build_lut(name, bits)?;
            (metrics::characterize_lut(&lut), Some(lut))
        }
        (None, Some(name), Some(bits)) => {
            let info = resolve_model(name, bits)?;
            if a.heatmap.is_some() || a.pairs_csv.is_some() {
                bail!(
                    "--heatmap and --pairs-csv need a table; {bits} bits is above the table limit of {}",
                    amsim::MAX_LUT_BITS
                );
            }
            let seed = a.seed.unwrap_or_else(clock_seed);
            eprintln!("sampling {} pairs with seed {seed}", a.samples);
            let c = metrics::characterize_model(info.name, info.func, bits, a.samples, seed)?;
            (c, None)
        }
        _ => bail!("give --model and --bits, or --lut FILE"),
    };
    print_characterization(&c);
    if let Some(path) = &a.csv {
        metrics::write_csv(&[(c.clone(), lut.as_ref())], path)?;
        println!("wrote {}", path.display());
    }
    if let (Some(path), Some(lut)) = (&a.pairs_csv, &lut) {
        metrics::write_pairs_csv(lut, path)?;
        println!("wrote {}", path.display());
    }
    if let (Some(path), Some(lut)) = (&a.heatmap, &lut) {
        experiments::figure::heatmap::write_heatmap(lut, path)
            .with_context(|| format!("heat map of {}", lut.model_name()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_verify_header() {
    println!(
        "{:<12} {:>4} {:>10} {:>10} {:>12} {:>12}",
        "model", "bits", "samples", "mismatches", "bit-exact", "worst rel"
    );
}

fn print_verify_row(r: &VerifyReport) {
    println!(
        "{:<12} {:>4} {:>10} {:>10} {:>11.4}% {:>12.3e}",
        r.model,
        r.bits,
        r.samples,
        r.mismatches,
        100.0 * r.bit_exact_rate(),
        r.worst_relative_difference
    );
}

/// `verify` of an integer model: its table against the model on every
/// operand pair.
fn verify_int(info: &IntModelInfo) -> Result<()> {
    let lut = IntLut::of(info)?;
    let r = int_metrics::verify_int_lut(&lut, info.func);
    report_int_verify(&r, kind_name(info.signed), info.name)
}

/// Print an integer table's `verify` report; an error naming the first
/// mismatch if there is one.
fn report_int_verify(r: &int_metrics::IntVerifyReport, kind: &str, name: &str) -> Result<()> {
    println!(
        "{:<16} {:>6} {:>10} {:>10}",
        "model", "kind", "pairs", "mismatches"
    );
    println!(
        "{:<16} {:>6} {:>10} {:>10}",
        r.model, kind, r.pairs, r.mismatches
    );
    if let Some((x, y, t, m)) = r.first_mismatch {
        bail!(
            "table and model products of {name} differ ({} pairs; first: {x} x {y}: table {t}, model {m})",
            r.mismatches
        );
    }
    Ok(())
}

/// `verify` of a 12-bit model: its table against the model on all 16M
/// pairs. A 16-bit model has no table (its products are the model's calls).
fn verify_wide(info: &WideIntModelInfo) -> Result<()> {
    let mul = WideIntMul::of(info)?;
    let Some(r) = int_metrics::verify_wide(&mul, info.func) else {
        println!(
            "{}: a 16-bit model has no table; int16:{} calls it for every product, so there is nothing to compare",
            info.name, info.name
        );
        return Ok(());
    };
    report_int_verify(
        &r,
        &amsim::int_wide::kind_name(info.bits, info.signed),
        info.name,
    )
}

/// Run `verify`.
pub fn run_verify(a: VerifyArgs) -> Result<()> {
    if let Some(info) = a
        .model
        .as_deref()
        .map(|m| int_model(m, a.bits))
        .transpose()?
        .flatten()
    {
        return verify_int(info);
    }
    if let Some(info) = a
        .model
        .as_deref()
        .map(|m| wide_int_model(m, a.bits))
        .transpose()?
        .flatten()
    {
        return verify_wide(info);
    }
    let bits = a
        .bits
        .context("give --bits (the table width of a floating-point model)")?;
    amsim::lut::check_bits(bits)?;
    let seed = a.seed.unwrap_or_else(clock_seed);
    let models: Vec<&ModelInfo> = if a.all {
        let supported: Vec<_> = MODELS.iter().filter(|m| m.supports_bits(bits)).collect();
        if supported.is_empty() {
            bail!("no registered model supports {} bits", bits);
        }
        supported
    } else {
        let name = a.model.as_deref().context("give --model NAME or --all")?;
        vec![resolve_model(name, bits)?]
    };
    println!("seed {seed}, {} random FP32 pairs per model", a.samples);
    print_verify_header();
    let mut failed = Vec::new();
    for info in models {
        let r = verify::verify_model(info.name, info.func, bits, a.samples, seed)?;
        print_verify_row(&r);
        if let Some(m) = r.first_mismatch {
            eprintln!(
                "  {}: first mismatch {:e} x {:e}: table {:e}, model {:e}",
                info.name, m.a, m.b, m.table, m.direct
            );
            failed.push(info.name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "table and model products differ for {} at {} bits (seed {seed})",
            failed.join(", "),
            bits
        );
    }
    Ok(())
}
