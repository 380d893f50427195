//! `approxtrain models`: the registry of C models as a table or JSON.

use std::io::Write as _;

use approxtrain::models::{INT_MODELS, MODELS};

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
        .collect()
}

/// Columns: name, bits range (`int8s`/`int8u` for an integer model, used as
/// `int8:NAME`), area (um^2), power (mW), delay (ns), description; widths
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
    for m in INT_MODELS {
        rows.push([
            m.name.to_string(),
            if m.signed { "int8s" } else { "int8u" }.to_string(),
            figure(m.area_um2),
            figure(m.power_mw),
            figure(m.delay_ns),
            m.description.to_string(),
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
