//! `metrics.csv`: one row per epoch of a run.
//!
//! Columns (DESIGN.md, "Results"): `run_id, net, dataset, plan, seed, epoch,
//! step, train_loss, train_accuracy, test_loss, test_accuracy, seconds, macs`.
//! Accuracies are fractions in [0, 1]; losses are mean softmax cross-entropy
//! in nats; `seconds` is the wall time of that epoch (training and
//! evaluation); `macs` counts the multiply-accumulates of the epoch (see
//! [`crate::run`] for what is counted). The file is always rewritten whole
//! ([`crate::atomic::write_atomic`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ExperimentError, Result};

/// The exact header line of `metrics.csv`.
pub const METRICS_HEADER: &str = "run_id,net,dataset,plan,seed,epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,seconds,macs";

/// One row of `metrics.csv`. Losses and accuracies are the trainer's f32
/// values, written in their shortest round-trip form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Deterministic run name ([`crate::spec::RunSpec::run_id`]).
    pub run_id: String,
    /// Network name.
    pub net: String,
    /// Dataset name.
    pub dataset: String,
    /// Multiplier plan, including per-layer overrides.
    pub plan: String,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// 1-based epoch this row reports.
    pub epoch: usize,
    /// Optimizer steps taken since the start of the run.
    pub step: u64,
    /// Mean training loss over the epoch's batches (nats).
    pub train_loss: f32,
    /// Fraction of training images classified correctly during the epoch.
    pub train_accuracy: f32,
    /// Mean loss on the test set after the epoch (nats).
    pub test_loss: f32,
    /// Fraction of test images classified correctly after the epoch.
    pub test_accuracy: f32,
    /// Wall time of the epoch, seconds.
    pub seconds: f64,
    /// Multiply-accumulates performed during the epoch.
    pub macs: u64,
}

/// Serialise `rows` (header included) to CSV text.
pub fn metrics_csv(rows: &[MetricsRow]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let mut out = Vec::new();
    out.extend_from_slice(METRICS_HEADER.as_bytes());
    out.push(b'\n');
    for r in rows {
        w.serialize(r)
            .map_err(|e| ExperimentError::Other(format!("cannot serialise metrics row: {e}")))?;
    }
    let body = w
        .into_inner()
        .map_err(|e| ExperimentError::Other(format!("cannot serialise metrics: {e}")))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Write `rows` to `path` whole (temp file + rename).
pub fn write_metrics(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    write_atomic(path, &metrics_csv(rows)?)
}

/// The extra last column of a language model's `metrics.csv`.
pub const PERPLEXITY_COLUMN: &str = "test_perplexity";

/// [`write_metrics`] with the extra last column [`PERPLEXITY_COLUMN`],
/// `exp(test_loss)` (the validation perplexity per character of a
/// language model). [`read_metrics`] reads such files too.
pub fn write_metrics_with_perplexity(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    let plain = metrics_csv(rows)?;
    let text = String::from_utf8(plain)
        .map_err(|e| ExperimentError::Other(format!("metrics are not UTF-8: {e}")))?;
    let mut out = String::with_capacity(text.len() + 16 * (rows.len() + 1));
    for (i, line) in text.lines().enumerate() {
        out.push_str(line);
        match i {
            0 => out.push_str(&format!(",{PERPLEXITY_COLUMN}")),
            _ => out.push_str(&format!(",{}", (rows[i - 1].test_loss as f64).exp() as f32)),
        }
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

/// Read a `metrics.csv`, checking its header.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
    let bad = |reason: String| ExperimentError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let header = text.lines().next().unwrap_or_default();
    let with_perplexity = header
        .strip_prefix(METRICS_HEADER)
        .is_some_and(|rest| rest == format!(",{PERPLEXITY_COLUMN}"));
    if header != METRICS_HEADER && !with_perplexity {
        return Err(bad(format!(
            "unexpected header '{header}' (expected '{METRICS_HEADER}')"
        )));
    }
    let mut r = csv::Reader::from_reader(text.as_bytes());
    r.records()
        .zip(2..)
        .map(|(rec, line)| {
            // The perplexity column, when present, is derived from
            // test_loss: only the first columns are read.
            rec.and_then(|rec| {
                let columns = METRICS_HEADER.split(',').count();
                let fields: csv::StringRecord = rec.iter().take(columns).collect();
                fields.deserialize(None)
            })
            .map_err(|e| bad(format!("line {line}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, loss: f32) -> MetricsRow {
        MetricsRow {
            run_id: "lenet5-mnist-fwd_mbm7.dx_fp32-s1".into(),
            net: "lenet5".into(),
            dataset: "mnist".into(),
            plan: "fwd=mbm:7,dx=fp32,dw=fp32".into(),
            seed: 1,
            epoch,
            step: 47 * epoch as u64,
            train_loss: loss,
            train_accuracy: 0.875,
            test_loss: 0.1f32 + 0.2,
            test_accuracy: 0.9,
            seconds: 1.25,
            macs: 123_456_789_012,
        }
    }

    #[test]
    fn metrics_csv_has_the_exact_header_and_round_trips_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        let rows = vec![row(1, 0.12345679), row(2, f32::NAN)];
        write_metrics(&p, &rows).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().next().unwrap(), METRICS_HEADER);
        assert_eq!(text.lines().count(), 3);
        let back = read_metrics(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], rows[0]);
        assert!(back[1].train_loss.is_nan());
        assert_eq!(back[1].test_loss.to_bits(), (0.1f32 + 0.2).to_bits());
        assert!(text.contains(",0.875,"), "{text}");
    }

    #[test]
    fn read_metrics_rejects_a_wrong_header_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        std::fs::write(&p, "epoch,loss\n1,2\n").unwrap();
        let e = read_metrics(&p).unwrap_err().to_string();
        assert!(e.contains("metrics.csv") && e.contains("header"), "{e}");
    }
}
