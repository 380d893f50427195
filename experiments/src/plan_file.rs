//! Per-layer multiplier plan files (`--plan FILE.toml`).
//!
//! ```toml
//! multiplier = "mbm:7"          # default for every layer (or fwd/dx/dw keys)
//! [layers.conv1]
//! multiplier = "fp32"
//! [layers.fc3]
//! fwd = "mbm:7"
//! dx = "fp32"
//! dw = "fp32"
//! ```
//!
//! At the top level and in each `[layers.NAME]` table, `multiplier` takes a
//! spec or a plan string (`fwd=mbm:7,dx=fp32`), and the role keys `fwd`,
//! `dx`, `dw`, `attn_qk`, `attn_av` take one spec each and replace that role
//! afterwards. A layer starts from the file's default plan (itself starting
//! from the command line's plan), so `[layers.fc3] dx = "fp32"` changes only
//! the input gradient of `fc3`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amsim::{ModelInfo, MultiplierSpec, PlanSpec, Role};

use crate::error::{ExperimentError, Result};

/// The multiplier settings of one table of a plan file, not yet applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanOverride {
    /// `multiplier = "..."`: a whole plan.
    pub plan: Option<PlanSpec>,
    /// Role keys, applied after `plan`.
    pub roles: Vec<(Role, MultiplierSpec)>,
}

impl PlanOverride {
    /// Whether the table sets nothing.
    pub fn is_empty(&self) -> bool {
        self.plan.is_none() && self.roles.is_empty()
    }

    /// `base` with this table's settings applied.
    pub fn apply(&self, base: &PlanSpec) -> PlanSpec {
        let mut out = self.plan.clone().unwrap_or_else(|| base.clone());
        for (role, spec) in &self.roles {
            out.set(*role, spec.clone());
        }
        out
    }
}

/// A parsed plan file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFile {
    /// The file it came from.
    pub path: PathBuf,
    /// The top-level default.
    pub default: PlanOverride,
    /// `[layers.NAME]` tables, by layer name.
    pub layers: BTreeMap<String, PlanOverride>,
}

/// Per-layer plans after applying a plan file to a base plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPlans {
    /// The plan of every layer not listed in `layers`.
    pub default: PlanSpec,
    /// Layers with their own plan.
    pub layers: BTreeMap<String, PlanSpec>,
}

fn parse_table(path: &Path, prefix: &str, table: &toml::Table) -> Result<PlanOverride> {
    let key_name = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let bad = |key: String, reason: String| ExperimentError::BadFile {
        path: path.to_path_buf(),
        reason: format!("key '{key}': {reason}"),
    };
    let mut out = PlanOverride::default();
    for (k, v) in table {
        if prefix.is_empty() && k == "layers" {
            continue;
        }
        let role = Role::from_key(k);
        if k != "multiplier" && role.is_none() {
            return Err(bad(
                key_name(k),
                "unknown key (expected multiplier, fwd, dx, dw, attn_qk, attn_av or [layers.NAME])"
                    .into(),
            ));
        }
        let Some(s) = v.as_str() else {
            return Err(bad(
                key_name(k),
                format!(
                    "expected a string such as \"mbm:7\", found a {}",
                    v.type_str()
                ),
            ));
        };
        let spec_err = |error| ExperimentError::BadPlanKey {
            path: path.to_path_buf(),
            key: key_name(k),
            error,
        };
        match role {
            None => out.plan = Some(s.parse().map_err(spec_err)?),
            Some(role) => out.roles.push((role, s.parse().map_err(spec_err)?)),
        }
    }
    Ok(out)
}

impl PlanFile {
    /// Parse plan-file text; `path` names the file in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let root: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ExperimentError::BadFile {
                    path: path.to_path_buf(),
                    reason: e.message().to_string(),
                })?;
        let default = parse_table(path, "", &root)?;
        let mut layers = BTreeMap::new();
        if let Some(l) = root.get("layers") {
            let Some(l) = l.as_table() else {
                return Err(ExperimentError::BadFile {
                    path: path.to_path_buf(),
                    reason: "key 'layers': expected tables [layers.NAME]".into(),
                });
            };
            for (name, t) in l {
                let Some(t) = t.as_table() else {
                    return Err(ExperimentError::BadFile {
                        path: path.to_path_buf(),
                        reason: format!(
                            "key 'layers.{name}': expected a table [layers.{name}] with multiplier or fwd/dx/dw keys"
                        ),
                    });
                };
                layers.insert(
                    name.clone(),
                    parse_table(path, &format!("layers.{name}"), t)?,
                );
            }
        }
        Ok(PlanFile {
            path: path.to_path_buf(),
            default,
            layers,
        })
    }

    /// Read and parse a plan file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Check that every model the file names is in `models` and supports
    /// the width asked for, so that a typo is reported with the file and key
    /// rather than later without them.
    pub fn check_models(&self, models: &[ModelInfo]) -> Result<()> {
        let tables = std::iter::once((String::new(), &self.default))
            .chain(self.layers.iter().map(|(n, o)| (format!("layers.{n}."), o)));
        for (prefix, o) in tables {
            let mut specs: Vec<(String, &MultiplierSpec)> = Vec::new();
            if let Some(plan) = &o.plan {
                specs.extend(
                    Role::ALL
                        .iter()
                        .map(|r| (format!("{prefix}multiplier"), plan.get(*r))),
                );
            }
            specs.extend(
                o.roles
                    .iter()
                    .map(|(r, s)| (format!("{prefix}{}", r.key()), s)),
            );
            for (key, spec) in specs {
                check_model(spec, models).map_err(|error| ExperimentError::BadPlanKey {
                    path: self.path.clone(),
                    key,
                    error,
                })?;
            }
        }
        Ok(())
    }

    /// Apply the file on top of `base` (the command line's plan).
    pub fn resolve(&self, base: &PlanSpec) -> ResolvedPlans {
        let default = self.default.apply(base);
        let layers = self
            .layers
            .iter()
            .map(|(name, o)| (name.clone(), o.apply(&default)))
            .collect();
        ResolvedPlans { default, layers }
    }
}

/// Whether the model of `spec` (if it names one) is in `models` and
/// supports its width.
pub(crate) fn check_model(spec: &MultiplierSpec, models: &[ModelInfo]) -> amsim::Result<()> {
    let (name, bits) = match spec {
        MultiplierSpec::Model { name, bits } | MultiplierSpec::Direct { name, bits } => {
            (name, *bits)
        }
        MultiplierSpec::Int { .. } => return amsim::spec::Resolver::new(models).check_int(spec),
        _ => return Ok(()),
    };
    let info = amsim::model::find(models, name)?;
    if matches!(spec, MultiplierSpec::Model { .. }) && !info.supports_bits(bits) {
        return Err(amsim::AmsimError::BadSpec {
            spec: spec.to_string(),
            reason: format!(
                "model '{}' supports {}..={} bits",
                info.name, info.min_bits, info.max_bits
            ),
        });
    }
    Ok(())
}

/// Check that every name in `layers` is one of `valid`; `origin` says where
/// the names came from (a plan file) for the error message.
pub fn check_layer_names<'a>(
    layers: impl IntoIterator<Item = &'a String>,
    valid: &[String],
    net: &str,
    origin: &str,
) -> Result<()> {
    for name in layers {
        if !valid.iter().any(|v| v == name) {
            return Err(ExperimentError::UnknownLayer {
                origin: origin.to_string(),
                layer: name.clone(),
                net: net.to_string(),
                valid: valid.join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> MultiplierSpec {
        s.parse().unwrap()
    }

    #[test]
    fn plan_file_layers_start_from_the_file_default_and_replace_only_named_roles() {
        let text = r#"
multiplier = "mbm:7"
[layers.conv1]
multiplier = "fp32"
[layers.fc3]
dx = "fp32"
dw = "bf16"
"#;
        let f = PlanFile::parse(Path::new("p.toml"), text).unwrap();
        let r = f.resolve(&PlanSpec::uniform(MultiplierSpec::Fp32));
        assert_eq!(r.default, PlanSpec::uniform(spec("mbm:7")));
        assert_eq!(r.layers["conv1"], PlanSpec::uniform(MultiplierSpec::Fp32));
        let fc3 = &r.layers["fc3"];
        assert_eq!(fc3.forward, spec("mbm:7"));
        assert_eq!(fc3.grad_input, MultiplierSpec::Fp32);
        assert_eq!(fc3.grad_weight, MultiplierSpec::Bf16);
        assert_eq!(r.layers.len(), 2);
    }

    #[test]
    fn plan_file_without_default_keeps_the_base_plan() {
        let f =
            PlanFile::parse(Path::new("p.toml"), "[layers.fc1]\nfwd = \"mitchell:5\"\n").unwrap();
        let base: PlanSpec = "fwd=mbm:7,dx=fp32,dw=mbm:7".parse().unwrap();
        let r = f.resolve(&base);
        assert_eq!(r.default, base);
        assert_eq!(r.layers["fc1"].forward, spec("mitchell:5"));
        assert_eq!(r.layers["fc1"].grad_weight, spec("mbm:7"));
    }

    #[test]
    fn malformed_spec_error_names_the_file_and_key() {
        let e = PlanFile::parse(
            Path::new("plans/bad.toml"),
            "[layers.fc3]\ndx = \"mbm:99\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("plans/bad.toml") && e.contains("layers.fc3.dx"),
            "{e}"
        );
        let e = PlanFile::parse(Path::new("p.toml"), "[layers.fc3]\nfwdd = \"fp32\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml") && e.contains("layers.fc3.fwdd"), "{e}");
        let e = PlanFile::parse(Path::new("p.toml"), "multiplier = 7\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'multiplier'") && e.contains("integer"), "{e}");
        let e = PlanFile::parse(Path::new("p.toml"), "multiplier = \"fp32\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml: "), "{e}");
    }

    fn model(_: f32, _: f32, _: u32) -> f32 {
        1.0
    }

    #[test]
    fn unknown_model_error_names_the_file_and_key() {
        let models = [ModelInfo {
            name: "mbm",
            description: "",
            min_bits: 1,
            max_bits: 8,
            area_um2: 0.0,
            power_mw: 0.0,
            delay_ns: 0.0,
            func: model,
        }];
        let ok = "multiplier = \"mbm:7\"\n[layers.fc3]\ndw = \"direct:mbm\"\n";
        PlanFile::parse(Path::new("p.toml"), ok)
            .unwrap()
            .check_models(&models)
            .unwrap();
        let f = PlanFile::parse(Path::new("p.toml"), "[layers.fc3]\ndx = \"mbmm:7\"\n").unwrap();
        let e = f.check_models(&models).unwrap_err().to_string();
        assert!(
            e.contains("p.toml") && e.contains("layers.fc3.dx") && e.contains("'mbmm'"),
            "{e}"
        );
        let f = PlanFile::parse(Path::new("p.toml"), "multiplier = \"fwd=mbm:9\"\n").unwrap();
        let e = f.check_models(&models).unwrap_err().to_string();
        assert!(e.contains("key 'multiplier'") && e.contains("1..=8"), "{e}");
    }

    #[test]
    fn unknown_layer_error_names_it_and_lists_valid_layers() {
        let valid = vec!["fc1".to_string(), "fc2".to_string(), "fc3".to_string()];
        let e = check_layer_names(
            &["conv9".to_string()],
            &valid,
            "lenet300100",
            "plan file p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'conv9'") && e.contains("fc1, fc2, fc3"), "{e}");
        check_layer_names(&["fc2".to_string()], &valid, "lenet300100", "x").unwrap();
    }
}
