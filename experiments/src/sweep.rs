//! Sweep files: many [`RunSpec`]s from one TOML file, for
//! `approxtrain sweep FILE [--shard I/N]`.
//!
//! ```toml
//! # The cross product of these lists gives the entries.
//! nets = ["lenet5", "lenet300100"]
//! datasets = ["mnist", "fashion-mnist"]
//! multipliers = ["fp32", "bf16", "mbm:7", "fwd=mbm:7,dx=fp32,dw=mbm:7"]
//! seeds = [1, 2]
//!
//! # Shared settings: any RunSpec field but the four the lists set. (As
//! # everywhere in TOML, top-level keys go before the first [table].)
//! epochs = 2
//! train_limit = 6000
//! [optimizer]
//! lr = 0.05
//!
//! # Settings for the entries an override matches (by any of net, dataset,
//! # multiplier; an absent key matches everything). Later overrides win.
//! [[override]]
//! net = "lenet300100"
//! [override.set]
//! optimizer.lr = 0.1
//!
//! # Drop combinations that make no sense (an exclude matches like an
//! # override; every exclude must drop something).
//! [[exclude]]
//! net = "lenet300100"
//! dataset = "fashion-mnist"
//! ```
//!
//! Entries are ordered with the lists nested as written above: nets
//! outermost, then datasets, then multipliers, seeds innermost, each list
//! in file order, excluded combinations left out. Entry `k` (0-based)
//! belongs to shard `k % N` of `N` ([`Shard`]), so shards are disjoint,
//! together cover the sweep, and differ in size by at most one entry.
//!
//! A spec is built as: the defaults of `approxtrain train`
//! ([`RunSpec::with_defaults`]), then the shared settings, then every
//! matching override in file order, then the entry's net, dataset,
//! multiplier and seed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use amsim::{ModelInfo, PlanSpec, Role};

use crate::error::{ExperimentError, Result};
use crate::plan_file::check_model;
use crate::run::{StartMode, RUN_TOML};
use crate::spec::{RunFile, RunSpec, RunStatus};

/// Keys of a sweep file that are not shared settings.
const LIST_KEYS: &[&str] = &[
    "nets",
    "datasets",
    "multipliers",
    "seeds",
    "override",
    "exclude",
];
/// RunSpec fields that a list sets, by the list's key.
const LIST_FIELDS: &[(&str, &str)] = &[
    ("net", "nets"),
    ("dataset", "datasets"),
    ("multiplier", "multipliers"),
    ("seed", "seeds"),
];
/// Optional RunSpec fields (absent from the defaults) and their TOML type,
/// listed in the message for an unknown key; a field missing here is
/// still accepted when a spec holding it deserialises ([`spec_accepts`]).
const OPTIONAL_FIELDS: &[(&str, &str)] = &[
    ("data_dir", "string"),
    ("train_limit", "integer"),
    ("test_limit", "integer"),
    ("layers", "table"),
    ("init", "string"),
    ("augment", "boolean"),
    ("label_smoothing", "float"),
];

/// Which entries of an override apply: an absent key matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverrideMatch {
    /// Network name.
    pub net: Option<String>,
    /// Dataset name.
    pub dataset: Option<String>,
    /// Multiplier plan (normalised, as in [`SweepEntry::spec`]).
    pub multiplier: Option<String>,
}

/// One entry of a sweep: its position in the full sweep and its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepEntry {
    /// 0-based position in the cross product.
    pub index: usize,
    /// The run's specification; it runs in `OUT/spec.run_id()`.
    pub spec: RunSpec,
}

/// A parsed sweep file.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The file (for messages).
    pub path: PathBuf,
    /// All entries, in sweep order.
    pub entries: Vec<SweepEntry>,
}

/// `I/N`: the `I`-th (0-based) of `N` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards, at least 1.
    pub count: usize,
}

impl Shard {
    /// The whole sweep as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether entry `index` of the sweep belongs to this shard.
    pub fn contains(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ExperimentError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            ExperimentError::Other(format!(
                "bad shard '{s}': {why}; write I/N with 0 <= I < N (0-based, e.g. 0/4 .. 3/4)"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let index: usize = i.trim().parse().map_err(|_| bad("I is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad("I must be less than N"));
        }
        Ok(Shard { index, count })
    }
}

impl Sweep {
    /// Read and parse a sweep file.
    pub fn read(path: &Path) -> Result<Sweep> {
        let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
        Sweep::parse(path, &text)
    }

    /// Parse sweep file text; `path` names the file in errors, which also
    /// name the offending key.
    pub fn parse(path: &Path, text: &str) -> Result<Sweep> {
        let bad = |key: &str, reason: String| ExperimentError::BadFile {
            path: path.to_path_buf(),
            reason: match key_line(text, key) {
                Some(line) => format!("line {line}: key '{key}': {reason}"),
                None => format!("key '{key}': {reason}"),
            },
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ExperimentError::BadFile {
                path: path.to_path_buf(),
                reason: match e.span() {
                    Some(span) => format!(
                        "line {}: {}",
                        line_of_offset(text, span.start),
                        e.message().replace('\n', " ")
                    ),
                    None => e.message().replace('\n', " "),
                },
            })?;

        let nets = string_list(&mut table, "nets", &bad)?;
        let datasets = string_list(&mut table, "datasets", &bad)?;
        let multipliers = string_list(&mut table, "multipliers", &bad)?
            .into_iter()
            .map(|m| {
                m.parse::<PlanSpec>()
                    .map(|p| p.to_string())
                    .map_err(|e| bad("multipliers", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let seeds = match table.remove("seeds") {
            None => return Err(bad("seeds", "missing; give a list such as [1]".into())),
            Some(toml::Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
                    other => Err(bad(
                        "seeds",
                        format!("{other} is not a non-negative integer"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(toml::Value::Array(_)) => return Err(bad("seeds", "empty list".into())),
            Some(_) => return Err(bad("seeds", "not a list of integers".into())),
        };

        let overrides = match table.remove("override") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_override(i, v, &bad))
                .collect::<Result<Vec<_>>>()?,
            Some(_) => {
                return Err(bad(
                    "override",
                    "must be an array of tables ([[override]])".into(),
                ))
            }
        };

        let excludes = match table.remove("exclude") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_exclude(i, v, &bad))
                .collect::<Result<Vec<_>>>()?,
            Some(_) => {
                return Err(bad(
                    "exclude",
                    "must be an array of tables ([[exclude]])".into(),
                ))
            }
        };

        let defaults = toml::Value::try_from(RunSpec::with_defaults("lenet5", "mnist"))
            .map_err(|e| ExperimentError::Other(format!("cannot serialise defaults: {e}")))?;
        let toml::Value::Table(defaults) = defaults else {
            unreachable!("a RunSpec serialises to a table")
        };
        check_settings(&defaults, &table, "", &bad)?;
        for (i, (_, set)) in overrides.iter().enumerate() {
            check_settings(&defaults, set, &format!("override[{i}].set."), &bad)?;
        }

        let mut entries = Vec::new();
        let mut used = vec![false; overrides.len()];
        let mut excluded = vec![false; excludes.len()];
        for net in &nets {
            for dataset in &datasets {
                for multiplier in &multipliers {
                    let drop: Vec<usize> = (0..excludes.len())
                        .filter(|&i| excludes[i].matches(net, dataset, multiplier))
                        .collect();
                    if !drop.is_empty() {
                        drop.iter().for_each(|&i| excluded[i] = true);
                        continue;
                    }
                    for &seed in &seeds {
                        let mut spec = RunSpec::with_defaults(net, dataset);
                        let mut value = toml::Value::try_from(&spec).map_err(|e| {
                            ExperimentError::Other(format!("cannot serialise spec: {e}"))
                        })?;
                        merge(&mut value, &table);
                        for (i, (m, set)) in overrides.iter().enumerate() {
                            if m.matches(net, dataset, multiplier) {
                                used[i] = true;
                                merge(&mut value, set);
                            }
                        }
                        spec = value.try_into().map_err(|e: toml::de::Error| {
                            ExperimentError::BadFile {
                                path: path.to_path_buf(),
                                reason: e.message().replace('\n', " "),
                            }
                        })?;
                        spec.net = net.clone();
                        spec.dataset = dataset.clone();
                        spec.multiplier = multiplier.clone();
                        spec.seed = seed;
                        spec.validate().map_err(|e| ExperimentError::BadFile {
                            path: path.to_path_buf(),
                            reason: format!("entry {}: {e}", spec.run_id()),
                        })?;
                        entries.push(SweepEntry {
                            index: entries.len(),
                            spec,
                        });
                    }
                }
            }
        }
        if let Some(i) = excluded.iter().position(|u| !u) {
            return Err(bad(
                &format!("exclude[{i}]"),
                "matches no entry of the sweep (check its net, dataset, multiplier)".into(),
            ));
        }
        if entries.is_empty() {
            return Err(ExperimentError::BadFile {
                path: path.to_path_buf(),
                reason: "the excludes drop every entry of the sweep".into(),
            });
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(bad(
                &format!("override[{i}]"),
                "matches no entry of the sweep (check its net, dataset, multiplier)".into(),
            ));
        }
        let mut ids: Vec<(String, usize)> =
            entries.iter().map(|e| (e.spec.run_id(), e.index)).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ExperimentError::BadFile {
                path: path.to_path_buf(),
                reason: format!(
                    "entries {} and {} are the same run {}; remove the duplicate from the lists",
                    w[0].1, w[1].1, w[0].0
                ),
            });
        }
        Ok(Sweep {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Check that every model the entries name is in `models` and supports
    /// the width asked for, so that a typo stops the sweep before any
    /// entry runs, with the file and key.
    pub fn check_models(&self, models: &[ModelInfo]) -> Result<()> {
        for entry in &self.entries {
            let plans = std::iter::once(("multipliers".to_string(), &entry.spec.multiplier)).chain(
                entry
                    .spec
                    .layers
                    .iter()
                    .map(|(layer, plan)| (format!("layers.{layer}"), plan)),
            );
            for (key, plan) in plans {
                let plan: PlanSpec = plan.parse()?;
                for role in Role::ALL {
                    check_model(plan.get(role), models).map_err(|error| {
                        ExperimentError::BadPlanKey {
                            path: self.path.clone(),
                            key: key.clone(),
                            error,
                        }
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The entries of `shard`, in sweep order.
    pub fn shard(&self, shard: Shard) -> Vec<&SweepEntry> {
        self.entries
            .iter()
            .filter(|e| shard.contains(e.index))
            .collect()
    }
}

/// How a sweep starts the entry whose run directory is `dir`: an
/// interrupted run (recorded as running) is resumed from its checkpoint;
/// anything else starts with [`StartMode::New`], which leaves a finished
/// run alone ([`crate::run::RunOutcome::AlreadyFinished`]) and refuses a
/// diverged one or a different spec.
pub fn start_mode(dir: &Path) -> StartMode {
    match RunFile::read(&dir.join(RUN_TOML)) {
        Ok(f) if matches!(f.run.status, RunStatus::Running | RunStatus::Failed) => {
            StartMode::Resume
        }
        _ => StartMode::New,
    }
}

/// Remove list `key` of non-empty strings from `table`.
fn string_list(
    table: &mut toml::Table,
    key: &str,
    bad: &dyn Fn(&str, String) -> ExperimentError,
) -> Result<Vec<String>> {
    match table.remove(key) {
        None => Err(bad(key, "missing; give a list of strings".into())),
        Some(toml::Value::Array(a)) if a.is_empty() => Err(bad(key, "empty list".into())),
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                other => Err(bad(key, format!("{other} is not a string"))),
            })
            .collect(),
        Some(_) => Err(bad(key, "not a list of strings".into())),
    }
}

/// Take the match keys (`net`, `dataset`, `multiplier`) of the table
/// named `key` out of `t`.
fn parse_matcher(
    key: &str,
    t: &mut toml::Table,
    bad: &dyn Fn(&str, String) -> ExperimentError,
) -> Result<OverrideMatch> {
    let mut matcher = OverrideMatch::default();
    for (field, slot) in [
        ("net", &mut matcher.net),
        ("dataset", &mut matcher.dataset),
        ("multiplier", &mut matcher.multiplier),
    ] {
        match t.remove(field) {
            None => {}
            Some(toml::Value::String(s)) => *slot = Some(s),
            Some(_) => return Err(bad(&format!("{key}.{field}"), "not a string".into())),
        }
    }
    if let Some(m) = &mut matcher.multiplier {
        *m = m
            .parse::<PlanSpec>()
            .map_err(|e| bad(&format!("{key}.multiplier"), e.to_string()))?
            .to_string();
    }
    Ok(matcher)
}

impl OverrideMatch {
    /// Whether the entry (net, dataset, normalised plan) matches.
    pub fn matches(&self, net: &str, dataset: &str, multiplier: &str) -> bool {
        self.net.as_deref().is_none_or(|n| n == net)
            && self.dataset.as_deref().is_none_or(|d| d == dataset)
            && self.multiplier.as_deref().is_none_or(|p| p == multiplier)
    }
}

/// Parse `[[override]]` number `i` into its match and its settings.
fn parse_override(
    i: usize,
    value: toml::Value,
    bad: &dyn Fn(&str, String) -> ExperimentError,
) -> Result<(OverrideMatch, toml::Table)> {
    let key = format!("override[{i}]");
    let toml::Value::Table(mut t) = value else {
        return Err(bad(&key, "not a table".into()));
    };
    let matcher = parse_matcher(&key, &mut t, bad)?;
    let set = match t.remove("set") {
        Some(toml::Value::Table(s)) => s,
        Some(_) => return Err(bad(&format!("{key}.set"), "not a table".into())),
        None => {
            return Err(bad(
                &format!("{key}.set"),
                "missing; put the settings under [override.set]".into(),
            ))
        }
    };
    if let Some(k) = t.keys().next() {
        return Err(bad(
            &format!("{key}.{k}"),
            "unknown key; an override has net, dataset, multiplier (to match) and set".into(),
        ));
    }
    Ok((matcher, set))
}

/// Parse `[[exclude]]` number `i`: the entries it drops from the cross
/// product.
fn parse_exclude(
    i: usize,
    value: toml::Value,
    bad: &dyn Fn(&str, String) -> ExperimentError,
) -> Result<OverrideMatch> {
    let key = format!("exclude[{i}]");
    let toml::Value::Table(mut t) = value else {
        return Err(bad(&key, "not a table".into()));
    };
    let matcher = parse_matcher(&key, &mut t, bad)?;
    if let Some(k) = t.keys().next() {
        return Err(bad(
            &format!("{key}.{k}"),
            "unknown key; an exclude has net, dataset, multiplier (to match)".into(),
        ));
    }
    if matcher == OverrideMatch::default() {
        return Err(bad(
            &key,
            "matches every entry; give at least one of net, dataset, multiplier".into(),
        ));
    }
    Ok(matcher)
}

/// Check that every key of `settings` is a RunSpec field with a value of
/// the field's type; `prefix` is prepended to keys in errors.
fn check_settings(
    defaults: &toml::Table,
    settings: &toml::Table,
    prefix: &str,
    bad: &dyn Fn(&str, String) -> ExperimentError,
) -> Result<()> {
    for (k, v) in settings {
        let key = format!("{prefix}{k}");
        if LIST_KEYS.contains(&k.as_str()) && !prefix.is_empty() {
            return Err(bad(&key, "a list of the sweep, not a setting".into()));
        }
        if let Some((_, list)) = LIST_FIELDS.iter().find(|(f, _)| f == k) {
            return Err(bad(
                &key,
                format!("set by the list '{list}'; give it there (or match on it in an override)"),
            ));
        }
        if k == "threads" {
            return Err(bad(
                &key,
                "set by --threads and --jobs of the command".into(),
            ));
        }
        let expected = match defaults.get(k) {
            Some(d) => d.type_str(),
            None => match OPTIONAL_FIELDS.iter().find(|(f, _)| f == k) {
                Some((_, t)) => t,
                // A field that the defaults leave out (an optional or
                // skipped one, added to RunSpec later): valid when a spec
                // holding it deserialises.
                None if spec_accepts(defaults, &[k], v) => continue,
                None => {
                    let mut valid: Vec<&str> = defaults
                        .keys()
                        .map(|s| s.as_str())
                        .chain(OPTIONAL_FIELDS.iter().map(|(f, _)| *f))
                        .filter(|f| !LIST_FIELDS.iter().any(|(l, _)| l == f) && *f != "threads")
                        .collect();
                    valid.sort();
                    return Err(bad(
                        &key,
                        format!("unknown setting; valid settings: {}", valid.join(", ")),
                    ));
                }
            },
        };
        let found = v.type_str();
        let compatible = found == expected || (expected == "float" && found == "integer");
        if !compatible {
            return Err(bad(&key, format!("expected a {expected}, found a {found}")));
        }
        if k == "layers" {
            let toml::Value::Table(layers) = v else {
                unreachable!("checked above")
            };
            for (layer, plan) in layers {
                let toml::Value::String(plan) = plan else {
                    return Err(bad(&format!("{key}.{layer}"), "not a plan string".into()));
                };
                plan.parse::<PlanSpec>()
                    .map_err(|e| bad(&format!("{key}.{layer}"), e.to_string()))?;
            }
        } else if let (toml::Value::Table(sub), Some(toml::Value::Table(sub_defaults))) =
            (v, defaults.get(k))
        {
            let inner = format!("{key}.");
            for (sk, sv) in sub {
                let skey = format!("{inner}{sk}");
                let Some(d) = sub_defaults.get(sk) else {
                    if spec_accepts(defaults, &[k, sk], sv) {
                        continue;
                    }
                    let valid: Vec<&str> = sub_defaults.keys().map(|s| s.as_str()).collect();
                    let hint = if LIST_KEYS.contains(&sk.as_str()) || defaults.contains_key(sk) {
                        format!(
                            " ('{sk}' belongs at the top level, not in [{k}]: move it above the first [table])"
                        )
                    } else {
                        String::new()
                    };
                    return Err(bad(
                        &skey,
                        format!(
                            "unknown setting; valid settings: {}{hint}",
                            valid.join(", ")
                        ),
                    ));
                };
                let ok = sv.type_str() == d.type_str()
                    || (d.type_str() == "float" && sv.type_str() == "integer");
                if !ok {
                    return Err(bad(
                        &skey,
                        format!("expected a {}, found a {}", d.type_str(), sv.type_str()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether a spec of the `defaults` with `value` set at `path` (a
/// top-level key, or a key of one of its tables) deserialises: the check
/// for fields that [`RunSpec::with_defaults`] does not serialise (skipped
/// when off or empty), which the spec's `deny_unknown_fields` would
/// otherwise reject by name.
fn spec_accepts(defaults: &toml::Table, path: &[&str], value: &toml::Value) -> bool {
    let mut spec = defaults.clone();
    let mut table = &mut spec;
    for key in &path[..path.len() - 1] {
        match table.get_mut(*key) {
            Some(toml::Value::Table(t)) => table = t,
            _ => return false,
        }
    }
    table.insert(path[path.len() - 1].to_string(), value.clone());
    toml::Value::Table(spec).try_into::<RunSpec>().is_ok()
}

/// Merge `settings` into the table `value`, tables key by key, integers
/// given for floats converted.
fn merge(value: &mut toml::Value, settings: &toml::Table) {
    let toml::Value::Table(target) = value else {
        return;
    };
    for (k, v) in settings {
        match (target.get_mut(k), v) {
            (Some(t @ toml::Value::Table(_)), toml::Value::Table(sub)) if k != "layers" => {
                merge(t, sub)
            }
            (Some(toml::Value::Float(f)), toml::Value::Integer(i)) => *f = *i as f64,
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// 1-based line number of byte `offset` in `text`.
fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `line` up to a `#` comment that is not inside a quoted string.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

/// A dotted TOML key (`a.b`, `"a".b`) as its plain segments.
fn key_segments(key: &str) -> Vec<String> {
    key.split('.')
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .collect()
}

/// 1-based line of the key named `path` in a sweep file, as errors name
/// keys: dotted, with `[[override]]` tables numbered from 0
/// (`optimizer.lr`, `override[1].set.epochs`). The line assigning the key
/// if there is one, else the line of the innermost table or assignment
/// that contains it (an inline table, a `[table]` header). A line scanner,
/// not a TOML parser: the file has already parsed, this only points the
/// user at the place.
fn key_line(text: &str, path: &str) -> Option<usize> {
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut prefix = String::new();
    let mut best: Option<(usize, usize)> = None; // (matched length, line)
    let consider = |full: &str, line: usize, best: &mut Option<(usize, usize)>| {
        let contains = path.len() > full.len()
            && path.starts_with(full)
            && matches!(path.as_bytes()[full.len()], b'.' | b'[');
        if (full == path || contains) && best.is_none_or(|(len, _)| full.len() > len) {
            *best = Some((full.len(), line));
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        let number = i + 1;
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let name = key_segments(name).join(".");
            let k = match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    arrays.push((name.clone(), 1));
                    0
                }
            };
            prefix = format!("{name}[{k}]");
            consider(&prefix, number, &mut best);
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let segments = key_segments(name);
            // `[override.set]` belongs to the latest `[[override]]`.
            prefix = match arrays.iter().find(|(n, _)| *n == segments[0]) {
                Some((n, count)) => {
                    let mut p = format!("{n}[{}]", count - 1);
                    for s in &segments[1..] {
                        p.push('.');
                        p.push_str(s);
                    }
                    p
                }
                None => segments.join("."),
            };
            consider(&prefix, number, &mut best);
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key_segments(key).join(".");
            let full = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            consider(&full, number, &mut best);
        }
        if best.is_some_and(|(len, _)| len == path.len()) {
            break;
        }
    }
    best.map(|(_, line)| line)
}

// The one lock of a run directory, used by every entry (through
// [`crate::run::train`]).
pub use crate::run_dir::{lock_run_dir, RunDirLock, LOCK_FILE};
