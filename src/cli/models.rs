//! `approxtrain models`: the registry of C models as a table or JSON.

use std::io::Write as _;

use approxtrain::models::{INT_MODELS, MODELS, WIDE_INT_MODELS};

/// Options of `approxtrain models`.
#[derive(clap::Args)]
pub struct ModelsArgs {
    /// Print the registry as a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// List the registered models.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let text = if args.json {
        serde_json::to_string_pretty(&registry_json())? + "\n"
    } else {
        registry_table()
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `approxtrain models | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// A declared hardware figure, or `-` when the model declares none.
fn figure(v: f64) -> String {
    if v > 0.0 {
        format!("{v}")
    } else {
        "-".into()
    }
}

fn optional(v: f64) -> serde_json::Value {
    if v > 0.0 {
        v.into()
    } else {
        serde_json::Value::Null
    }
}

fn registry_json() -> serde_json::Value {
    let ints = INT_MODELS.iter().map(|m| {
        serde_json::json!({
            "name": m.name,
            "description": m.description,
            "kind": "int8",
            "bits": 8,
            "signed": m.signed,
            "area_um2": optional(m.area_um2),
            "power_mw": optional(m.power_mw),
            "delay_ns": optional(m.delay_ns),
        })
    });
    let wide = WIDE_INT_MODELS.iter().map(|m| {
        serde_json::json!({
            "name": m.name,
            "description": m.description,
            "kind": format!("int{}", m.bits),
            "bits": m.bits,
            "signed": m.signed,
            "area_um2": optional(m.area_um2),
            "power_mw": optional(m.power_mw),
            "delay_ns": optional(m.delay_ns),
        })
    });
    MODELS
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "description": m.description,
                "min_bits": m.min_bits,
                "max_bits": m.max_bits,
                "area_um2": optional(m.area_um2),
                "power_mw": optional(m.power_mw),
                "delay_ns": optional(m.delay_ns),
            })
        })
        .chain(ints)
        .chain(wide)
        .collect()
}

/// Columns: name, bits range (`int8s`/`int8u`, `int12s`, ... for an
/// integer model: its width and signedness, used as `int8:NAME`,
/// `int12:NAME`, ...), area (um^2), power (mW), delay (ns), description; widths
/// fitted to the contents.
fn registry_table() -> String {
    let header = [
        "MODEL",
        "BITS",
        "AREA_UM2",
        "POWER_MW",
        "DELAY_NS",
        "DESCRIPTION",
    ];
    let mut rows = vec![header.map(String::from)];
    for m in MODELS {
        let bits = if m.min_bits == m.max_bits {
            m.min_bits.to_string()
        } else {
            format!("{}..={}", m.min_bits, m.max_bits)
        };
        rows.push([
            m.name.to_string(),
            bits,
            figure(m.area_um2),
            figure(m.power_mw),
            figure(m.delay_ns),
            m.description.to_string(),
        ]);
    }
    let ints = INT_MODELS.iter().map(|m| {
        (
            m.name,
            8,
            m.signed,
            [m.area_um2, m.power_mw, m.delay_ns],
            m.description,
        )
    });
    let wide = WIDE_INT_MODELS.iter().map(|m| {
        (
            m.name,
            m.bits,
            m.signed,
            [m.area_um2, m.power_mw, m.delay_ns],
            m.description,
        )
    });
    for (name, bits, signed, [area, power, delay], description) in ints.chain(wide) {
        rows.push([
            name.to_string(),
            amsim::int_wide::kind_name(bits, signed),
            figure(area),
            figure(power),
            figure(delay),
            description.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len() - 1)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[c], w = *w));
        }
        out.push_str(&r[header.len() - 1]);
        out.push('\n');
    }
    out
}
