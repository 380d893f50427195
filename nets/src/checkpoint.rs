//! Training checkpoints: a small hand-written little-endian binary format.
//!
//! Why not serde + a binary codec: the file must hold f32 values bit-exactly
//! (so a resumed run is bit-identical), be readable from any language with a
//! dozen lines (a Python `struct` loop), and not depend on a codec's
//! versioning; the format below is all of that with no extra dependency.
//!
//! Layout (all integers little-endian; `str` = `u32` byte length + UTF-8):
//!
//! ```text
//! magic        8 bytes  "APXTCKPT"
//! version      u32      1
//! network      str      network name (`lenet5`)
//! seed         u64      run seed (every random stream derives from it)
//! epoch        u64      epochs completed
//! global_step  u64      optimizer steps taken in the run
//! optimizer    str      `sgd`, `adam` or `adamw`
//! opt_steps    u64      the optimizer's step count (Adam's t)
//! n_params     u32
//!   per parameter: name str, n_dims u32, dims u64 x n_dims, values f32 x prod(dims)
//! n_slots      u32      optimizer buffers (momentum, or Adam m and v per parameter)
//!   per buffer:  len u64, values f32 x len
//! checksum     u64      FNV-1a 64 of every byte before it
//! ```
//!
//! Files are written whole: to `NAME.tmp` next to the target, flushed and
//! synced, then renamed over it, so an interrupted write never leaves a
//! truncated checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::layers::Param;
use crate::model::Network;
use crate::{NetError, Result};

/// File magic.
pub const MAGIC: &[u8; 8] = b"APXTCKPT";
/// Current format version.
pub const VERSION: u32 = 1;

/// One saved parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedParam {
    /// Qualified name (`conv1.weight`).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Network name.
    pub network: String,
    /// Run seed.
    pub seed: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Optimizer steps taken in the run.
    pub global_step: u64,
    /// Optimizer name (`sgd`, `adam`, `adamw`).
    pub optimizer: String,
    /// The optimizer's own step count.
    pub optimizer_steps: u64,
    /// Parameters in network order.
    pub params: Vec<SavedParam>,
    /// Optimizer state buffers.
    pub optimizer_slots: Vec<Vec<f32>>,
}

/// FNV-1a, 64-bit (Fowler, Noll and Vo; parameters from the IETF draft
/// draft-eastlake-fnv): enough to catch truncation and bit rot.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.reserve(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

impl Checkpoint {
    /// The encoded file contents.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        put_str(&mut out, &self.network);
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.global_step.to_le_bytes());
        put_str(&mut out, &self.optimizer);
        out.extend_from_slice(&self.optimizer_steps.to_le_bytes());
        out.extend_from_slice(&(self.params.len() as u32).to_le_bytes());
        for p in &self.params {
            put_str(&mut out, &p.name);
            out.extend_from_slice(&(p.shape.len() as u32).to_le_bytes());
            for &d in &p.shape {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            put_f32s(&mut out, &p.values);
        }
        out.extend_from_slice(&(self.optimizer_slots.len() as u32).to_le_bytes());
        for s in &self.optimizer_slots {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            put_f32s(&mut out, s);
        }
        let sum = fnv1a64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decode file contents; `path` only names the file in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
        let bad = |reason: String| NetError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < MAGIC.len() + 4 + 8 || &bytes[..8] != MAGIC {
            return Err(bad("not an approxtrain checkpoint (bad magic)".into()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if fnv1a64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err(bad(
                "checksum mismatch: the file is truncated or corrupt".into()
            ));
        }
        let mut r = Reader { buf: body, pos: 8 };
        let version = r.u32().map_err(&bad)?;
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads version {VERSION}"
            )));
        }
        let mut read = || -> std::result::Result<Checkpoint, String> {
            let network = r.str()?;
            let seed = r.u64()?;
            let epoch = r.u64()?;
            let global_step = r.u64()?;
            let optimizer = r.str()?;
            let optimizer_steps = r.u64()?;
            let n_params = r.u32()? as usize;
            let mut params = Vec::new();
            for _ in 0..n_params {
                let name = r.str()?;
                let dims = r.u32()? as usize;
                let shape = (0..dims)
                    .map(|_| r.u64().map(|d| d as usize))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let len = shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or("parameter shape overflows")?;
                let values = r.f32s(len)?;
                params.push(SavedParam {
                    name,
                    shape,
                    values,
                });
            }
            let n_slots = r.u32()? as usize;
            let mut optimizer_slots = Vec::new();
            for _ in 0..n_slots {
                let len = r.u64()? as usize;
                optimizer_slots.push(r.f32s(len)?);
            }
            if r.pos != r.buf.len() {
                return Err(format!(
                    "{} unexpected bytes at the end",
                    r.buf.len() - r.pos
                ));
            }
            Ok(Checkpoint {
                network,
                seed,
                epoch,
                global_step,
                optimizer,
                optimizer_steps,
                params,
                optimizer_slots,
            })
        };
        read().map_err(bad)
    }

    /// Write the checkpoint whole (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.to_bytes())
    }

    /// Read a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|error| NetError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Checkpoint::from_bytes(path, &bytes)
    }

    /// Copy the saved parameters into `network`, leaving everything else
    /// (plans, optimizer, counters) alone: what evaluation and fine-tuning
    /// from a checkpoint need. An error naming the file and the mismatch,
    /// with `network` unchanged, when the checkpoint was saved from another
    /// network or its parameters do not have the network's names and shapes.
    pub fn apply_weights(&self, path: &Path, network: &mut Network) -> Result<()> {
        self.check_network(path, network.name())?;
        self.check_params(path, &network.params())?;
        self.copy_params(network.params_mut());
        Ok(())
    }

    /// An error naming the file unless the checkpoint was saved from the
    /// network called `name`.
    pub fn check_network(&self, path: &Path, name: &str) -> Result<()> {
        if self.network != name {
            return Err(NetError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("saved from network '{}', not '{name}'", self.network),
            });
        }
        Ok(())
    }

    /// An error naming the file and the first mismatch unless the saved
    /// parameters have the names and shapes of `params`, in order.
    pub fn check_params(&self, path: &Path, params: &[&Param]) -> Result<()> {
        let bad = |reason: String| NetError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if params.len() != self.params.len() {
            return Err(bad(format!(
                "holds {} parameters, the network has {}",
                self.params.len(),
                params.len()
            )));
        }
        for (p, s) in params.iter().zip(&self.params) {
            if p.name != s.name || p.shape != s.shape || s.values.len() != p.len() {
                return Err(bad(format!(
                    "parameter '{}' {:?} does not match the network's '{}' {:?}",
                    s.name, s.shape, p.name, p.shape
                )));
            }
        }
        Ok(())
    }

    /// An error naming the file unless the saved optimizer state is empty
    /// or holds the same number of buffers for each of `params`, each of its
    /// parameter's length.
    pub fn check_optimizer_slots(&self, path: &Path, params: &[&Param]) -> Result<()> {
        let slots = &self.optimizer_slots;
        let per = slots.len() / params.len().max(1);
        let fits = slots.is_empty()
            || (slots.len() == per * params.len()
                && slots
                    .iter()
                    .enumerate()
                    .all(|(i, s)| s.len() == params[i / per.max(1)].len()));
        if !fits {
            return Err(NetError::Checkpoint {
                path: path.to_path_buf(),
                reason: "optimizer state does not fit the network's parameters".into(),
            });
        }
        Ok(())
    }

    /// Copy the saved values into `params` (checked by
    /// [`Checkpoint::check_params`]).
    pub fn copy_params(&self, params: Vec<&mut Param>) {
        for (p, s) in params.into_iter().zip(&self.params) {
            p.value.copy_from_slice(&s.values);
        }
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> std::result::Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
    fn f32s(&mut self, n: usize) -> std::result::Result<Vec<f32>, String> {
        let bytes = self.take(n.checked_mul(4).ok_or("length overflows")?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
}

/// Write `bytes` to `path` whole: a sibling temp file, synced, then renamed
/// over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p: PathBuf = p.to_path_buf();
        move |error| NetError::Io { path: p, error }
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        match injected_write_failure(path) {
            // Half the bytes reach the disk, as when it fills up.
            Some(e) => {
                let _ = f.write_all(&bytes[..bytes.len() / 2]);
                return Err(io(&tmp)(e));
            }
            None => f.write_all(bytes).map_err(io(&tmp))?,
        }
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if written.is_err() {
        // A full disk stays full while the temp file lies there.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Test hook for the fault-injection tests: `APPROXTRAIN_TEST_FAIL_WRITES`
/// names files (`checkpoint.bin`, `metrics.csv`, comma-separated); the
/// whole-file writes of a file of that name fail with "no space left on
/// device" half-way through. `NAME@K` lets the first K-1 writes of that
/// name succeed. Unset, nothing changes.
pub const FAIL_WRITES_ENV: &str = "APPROXTRAIN_TEST_FAIL_WRITES";

fn injected_write_failure(path: &Path) -> Option<std::io::Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let spec = std::env::var(FAIL_WRITES_ENV).ok()?;
    let name = path.file_name()?.to_str()?;
    let (after, _) = spec.split(',').find_map(|item| {
        let (n, k) = item.split_once('@').unwrap_or((item, "1"));
        (n == name).then(|| (k.parse::<usize>().unwrap_or(1), ()))
    })?;
    // Writes of the named files, counted together over the process.
    let count = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    (count >= after).then(|| {
        std::io::Error::other(format!(
            "No space left on device (injected by {FAIL_WRITES_ENV})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            network: "lenet5".into(),
            seed: 7,
            epoch: 3,
            global_step: 2814,
            optimizer: "adam".into(),
            optimizer_steps: 2814,
            params: vec![SavedParam {
                name: "fc.weight".into(),
                shape: vec![2, 3],
                values: vec![1.0, -0.0, f32::MIN_POSITIVE, 3.5, f32::NAN, 1e-40],
            }],
            optimizer_slots: vec![vec![0.5; 6], vec![0.25; 6]],
        }
    }

    #[test]
    fn encoding_round_trips_every_bit() {
        let ck = sample();
        let bytes = ck.to_bytes();
        assert_eq!(&bytes[..8], MAGIC);
        let back = Checkpoint::from_bytes(Path::new("x.ckpt"), &bytes).unwrap();
        let bits = |c: &Checkpoint| -> Vec<u32> {
            c.params[0].values.iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&back), bits(&ck));
        assert_eq!(back.optimizer_slots, ck.optimizer_slots);
        assert_eq!(
            (
                back.network.as_str(),
                back.seed,
                back.epoch,
                back.global_step
            ),
            ("lenet5", 7, 3, 2814)
        );
    }

    #[test]
    fn apply_weights_copies_parameters_and_refuses_another_network_unchanged() {
        use amsim::{Multiplier, MultiplierPlan};
        let plan = || MultiplierPlan::uniform(Multiplier::Fp32);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1);
        eprintln!("seed {seed}");
        let source = Network::lenet5(plan(), seed);
        let ck = Checkpoint {
            network: "lenet5".into(),
            seed,
            epoch: 1,
            global_step: 1,
            optimizer: "sgd".into(),
            optimizer_steps: 0,
            params: source
                .params()
                .iter()
                .map(|p| SavedParam {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    values: p.value.clone(),
                })
                .collect(),
            optimizer_slots: Vec::new(),
        };
        let mut target = Network::lenet5(plan(), seed.wrapping_add(1));
        ck.apply_weights(Path::new("c.bin"), &mut target).unwrap();
        let values =
            |n: &Network| -> Vec<Vec<f32>> { n.params().iter().map(|p| p.value.clone()).collect() };
        assert_eq!(values(&target), values(&source));
        let mut other = Network::lenet300100(plan(), seed);
        let before = values(&other);
        let e = ck
            .apply_weights(Path::new("c.bin"), &mut other)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.bin") && e.contains("'lenet5'") && e.contains("'lenet300100'"),
            "{e}"
        );
        assert_eq!(values(&other), before);
    }

    #[test]
    fn truncated_or_foreign_files_are_errors_naming_the_file() {
        let bytes = sample().to_bytes();
        for cut in [0, 5, 20, bytes.len() - 1] {
            let err = Checkpoint::from_bytes(Path::new("run/state.ckpt"), &bytes[..cut])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("checkpoint run/state.ckpt:"), "{err}");
        }
        let err = Checkpoint::from_bytes(Path::new("a.toml"), b"[run]\nseed = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad magic"), "{err}");
    }
}
