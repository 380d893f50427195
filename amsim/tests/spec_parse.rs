//! Multiplier spec and plan strings: what parses, what it means, and the
//! one-line errors for what does not.

use amsim::spec::{MultiplierSpec, PlanSpec, Resolver};
use amsim::{ModelInfo, Multiplier, Role};

fn truncating(a: f32, b: f32, bits: u32) -> f32 {
    let mask = !((1u32 << (23 - bits)) - 1);
    let t = |x: f32| f32::from_bits(x.to_bits() & mask);
    let p = t(a) * t(b);
    if p >= 2.0 {
        2.0 * t(p / 2.0)
    } else {
        t(p)
    }
}

const MODELS: &[ModelInfo] = &[ModelInfo {
    name: "trunc",
    description: "truncating test model",
    min_bits: 1,
    max_bits: 23,
    area_um2: 0.0,
    power_mw: 0.0,
    delay_ns: 0.0,
    func: truncating,
}];

#[test]
fn simple_specs_parse_and_print_canonically() {
    for (s, want) in [
        ("fp32", MultiplierSpec::Fp32),
        ("bf16", MultiplierSpec::Bf16),
        (
            "mbm:7",
            MultiplierSpec::Model {
                name: "mbm".into(),
                bits: 7,
            },
        ),
        (
            "direct:mbm",
            MultiplierSpec::Direct {
                name: "mbm".into(),
                bits: 23,
            },
        ),
        (
            "direct:mbm:10",
            MultiplierSpec::Direct {
                name: "mbm".into(),
                bits: 10,
            },
        ),
        (
            "lut:tables/x.lut",
            MultiplierSpec::LutFile("tables/x.lut".into()),
        ),
    ] {
        let got: MultiplierSpec = s.parse().unwrap();
        assert_eq!(got, want, "{s}");
        let again: MultiplierSpec = got.to_string().parse().unwrap();
        assert_eq!(again, want, "round trip of {s}");
    }
}

#[test]
fn malformed_specs_are_one_line_errors_naming_the_spec() {
    for s in [
        "",
        "mbm",
        "mbm:",
        "mbm:0",
        "mbm:12",
        "mbm:x",
        "mbm:7:1",
        "m-b:7",
        "lut:",
        "direct:",
        "direct:mbm:24",
        "fp16",
    ] {
        let e = s.parse::<MultiplierSpec>().unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains(&format!("'{}'", s.trim())), "{s}: {e}");
    }
}

#[test]
fn plans_give_each_role_its_spec() {
    let p: PlanSpec = "fwd=mbm:7,dx=fp32,dw=bf16".parse().unwrap();
    assert_eq!(p.get(Role::Forward).to_string(), "mbm:7");
    assert_eq!(p.get(Role::GradInput).to_string(), "fp32");
    assert_eq!(p.get(Role::GradWeight).to_string(), "bf16");
    // Attention products follow the forward multiplier unless named.
    assert_eq!(p.get(Role::AttnQk).to_string(), "mbm:7");
    assert_eq!(p.to_string(), "fwd=mbm:7,dx=fp32,dw=bf16");
    let u: PlanSpec = "mitchell:5".parse().unwrap();
    assert!(Role::ALL
        .iter()
        .all(|r| u.get(*r).to_string() == "mitchell:5"));
    assert_eq!(u.to_string(), "mitchell:5");
    let a: PlanSpec = "fwd=mbm:7,dx=mbm:7,dw=mbm:7,attn_qk=fp32".parse().unwrap();
    assert_eq!(a.get(Role::AttnQk).to_string(), "fp32");
    assert_eq!(a.get(Role::AttnAv).to_string(), "mbm:7");
}

#[test]
fn malformed_plans_are_errors() {
    for s in [
        "fwd=mbm:7,up=fp32",
        "fwd=mbm:7,fwd=fp32",
        "fwd=mbm:7,dx",
        "fwd=nope",
    ] {
        let e = s.parse::<PlanSpec>().unwrap_err().to_string();
        assert!(
            !e.contains('\n') && e.contains("invalid multiplier spec"),
            "{s}: {e}"
        );
    }
}

#[test]
fn resolver_builds_tables_once_and_checks_names() {
    let r = Resolver::new(MODELS);
    let a = r.resolve(&"trunc:6".parse().unwrap()).unwrap();
    let b = r.resolve(&"trunc:6".parse().unwrap()).unwrap();
    match (&a, &b) {
        (Multiplier::Lut(x), Multiplier::Lut(y)) => assert!(std::sync::Arc::ptr_eq(x, y)),
        _ => panic!("expected LUT multipliers, got {a:?} and {b:?}"),
    }
    assert_eq!(a.label(), "trunc:6");
    let e = r
        .resolve(&"nope:6".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'nope'") && e.contains("trunc"), "{e}");
    let d = r.resolve(&"direct:trunc".parse().unwrap()).unwrap();
    assert_eq!(d.label(), "direct:trunc:23");
    let plan = r
        .resolve_plan(&"fwd=trunc:4,dx=fp32,dw=bf16".parse().unwrap())
        .unwrap();
    assert_eq!(plan.label(), "fwd=trunc:4,dx=fp32,dw=bf16");
}

#[test]
fn direct_mode_agrees_with_the_table_for_a_truncating_model() {
    let r = Resolver::new(MODELS);
    let t = r.resolve(&"trunc:7".parse().unwrap()).unwrap();
    let d = r.resolve(&"direct:trunc:7".parse().unwrap()).unwrap();
    let mut x = 0.37f32;
    for _ in 0..10_000 {
        x = (x * 3.7 + 0.11) % 17.0 - 8.0;
        let y = x * 1.37 - 0.5;
        assert_eq!(t.mul(x, y).to_bits(), d.mul(x, y).to_bits(), "{x} x {y}");
    }
}

const INT_MODELS: &[amsim::IntModelInfo] = &[
    amsim::IntModelInfo {
        name: "exact8s",
        description: "exact signed test model",
        signed: true,
        area_um2: 0.0,
        power_mw: 0.0,
        delay_ns: 0.0,
        func: |a, b| a * b,
    },
    amsim::IntModelInfo {
        name: "exact8u",
        description: "exact unsigned test model",
        signed: false,
        area_um2: 0.0,
        power_mw: 0.0,
        delay_ns: 0.0,
        func: |a, b| a * b,
    },
];

#[test]
fn int8_specs_parse_resolve_and_print_with_their_quantization_options() {
    amsim::model::register_int_models(INT_MODELS);
    let r = Resolver::new(MODELS);
    for (text, label, per_channel, asymmetric) in [
        ("int8:exact8s", "int8:exact8s", true, false),
        ("int8:exact8u", "int8:exact8u", true, true),
        ("int8:exact8s:asym", "int8:exact8s:asym", true, true),
        (
            "int8:exact8u:sym:per-tensor",
            "int8:exact8u:per-tensor:sym",
            false,
            false,
        ),
        ("int8:exact8s:per-channel:sym", "int8:exact8s", true, false),
    ] {
        let spec: MultiplierSpec = text.parse().unwrap();
        let m = r.resolve(&spec).unwrap();
        let Multiplier::Int8 { lut, scheme } = &m else {
            panic!("{text} resolved to {m}");
        };
        assert_eq!(m.label(), label, "{text}");
        assert_eq!(scheme.per_channel, per_channel, "{text}");
        assert_eq!(scheme.asymmetric, asymmetric, "{text}");
        assert_eq!(
            lut.mul(-3, 5),
            if lut.signed() { -15 } else { lut.mul(253, 5) }
        );
        let reparsed: MultiplierSpec = spec.to_string().parse().unwrap();
        assert_eq!(reparsed, spec, "{text}");
    }
    let plan: PlanSpec = "fwd=int8:exact8s,dx=fp32,dw=int8:exact8s".parse().unwrap();
    let plan = r.resolve_plan(&plan).unwrap();
    assert_eq!(plan.label(), "fwd=int8:exact8s,dx=fp32,dw=int8:exact8s");
}

#[test]
fn int8_specs_with_float_options_or_wrong_models_are_one_line_errors() {
    amsim::model::register_int_models(INT_MODELS);
    let r = Resolver::new(MODELS);
    let err = |text: &str| -> String {
        let e = match text.parse::<MultiplierSpec>() {
            Ok(spec) => r.resolve(&spec).unwrap_err(),
            Err(e) => e,
        }
        .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    let e = err("int8:exact8s:7");
    assert!(
        e.contains("no bit width") && e.contains("per-tensor"),
        "{e}"
    );
    let e = err("int8:exact8s:fast");
    assert!(e.contains("unknown int8 option 'fast'"), "{e}");
    let e = err("int8:exact8s:sym:asym");
    assert!(e.contains("conflicts"), "{e}");
    let e = err("int8:");
    assert!(e.contains("int8:exact8s"), "{e}");
    let e = err("int8:trunc");
    assert!(
        e.contains("floating-point model") && e.contains("trunc:BITS"),
        "{e}"
    );
    let e = err("int8:nosuch");
    assert!(e.contains("'nosuch'") && e.contains("exact8u"), "{e}");
    for float_form in ["exact8s:7", "direct:exact8s"] {
        let e = err(float_form);
        assert!(e.contains("use int8:exact8s"), "{float_form}: {e}");
    }
    // A float product given an int8 multiplier.
    let m = r.resolve(&"int8:exact8s".parse().unwrap()).unwrap();
    let a = [1.0f32; 4];
    let mut c = [0.0f32; 4];
    let e = amsim::gemm::gemm(
        &m,
        amsim::gemm::MatRef::row_major(&a, 2, 2).unwrap(),
        amsim::gemm::MatRef::row_major(&a, 2, 2).unwrap(),
        amsim::gemm::MatMut::row_major(&mut c, 2, 2).unwrap(),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("int8:exact8s") && e.contains("dense, convolution and attention layers"),
        "{e}"
    );
}

#[test]
fn int8_specs_take_integer_table_files_and_name_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    // A table unlike any registered model: products off by one.
    let lut = amsim::IntLut::build("exact_plus_one", true, |a, b| a * b + 1).unwrap();
    let path = dir.path().join("plus-one.ilut");
    lut.write(&path).unwrap();
    let r = Resolver::new(MODELS);
    let text = format!("int8:{}:per-tensor", path.display());
    let spec: MultiplierSpec = text.parse().unwrap();
    assert_eq!(spec.to_string(), text);
    let m = r.resolve(&spec).unwrap();
    let Multiplier::Int8 { lut: got, scheme } = &m else {
        panic!("{text} resolved to {m}");
    };
    assert_eq!(got.table(), lut.table());
    assert_eq!(got.mul(-3, 5), -14);
    assert!(!scheme.per_channel && !scheme.asymmetric);
    // A missing file and a file that is no integer table: one line naming it.
    let missing = dir.path().join("missing.ilut");
    let junk = dir.path().join("junk.ilut");
    std::fs::write(&junk, b"not a table").unwrap();
    for bad in [&missing, &junk] {
        let spec: MultiplierSpec = format!("int8:{}", bad.display()).parse().unwrap();
        let e = r.resolve(&spec).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(&bad.display().to_string()), "{e}");
    }
}

const WIDE_INT_MODELS: &[amsim::WideIntModelInfo] = &[
    amsim::WideIntModelInfo {
        name: "exact12s",
        description: "exact signed 12-bit test model",
        bits: 12,
        signed: true,
        area_um2: 0.0,
        power_mw: 0.0,
        delay_ns: 0.0,
        func: |a, b| i64::from(a) * i64::from(b),
    },
    amsim::WideIntModelInfo {
        name: "exact16u",
        description: "exact unsigned 16-bit test model",
        bits: 16,
        signed: false,
        area_um2: 0.0,
        power_mw: 0.0,
        delay_ns: 0.0,
        func: |a, b| i64::from(a) * i64::from(b),
    },
];

#[test]
fn int12_and_int16_specs_parse_resolve_and_print_with_their_options() {
    amsim::model::register_int_models(INT_MODELS);
    amsim::model::register_wide_int_models(WIDE_INT_MODELS);
    let r = Resolver::new(MODELS);
    for (text, label, bits, per_channel, asymmetric, table) in [
        ("int12:exact12s", "int12:exact12s", 12, true, false, true),
        (
            "int12:exact12s:asym:per-tensor",
            "int12:exact12s:per-tensor:asym",
            12,
            false,
            true,
            true,
        ),
        ("int16:exact16u", "int16:exact16u", 16, true, true, false),
        (
            "int16:exact16u:sym",
            "int16:exact16u:sym",
            16,
            true,
            false,
            false,
        ),
    ] {
        let spec: MultiplierSpec = text.parse().unwrap();
        assert_eq!(spec.to_string().parse::<MultiplierSpec>().unwrap(), spec);
        let m = r.resolve(&spec).unwrap();
        let Multiplier::IntWide { mul, scheme } = &m else {
            panic!("{text} resolved to {m}");
        };
        assert_eq!(m.label(), label, "{text}");
        assert_eq!((mul.bits(), mul.is_table()), (bits, table), "{text}");
        assert_eq!(
            (scheme.per_channel, scheme.asymmetric),
            (per_channel, asymmetric),
            "{text}"
        );
        assert_eq!(mul.mul(-2048, 2047), -2048 * 2047, "{text}");
    }
    // One table per model and resolver.
    let (a, b) = (
        r.resolve(&"int12:exact12s".parse().unwrap()).unwrap(),
        r.resolve(&"int12:exact12s:asym".parse().unwrap()).unwrap(),
    );
    let (Multiplier::IntWide { mul: a, .. }, Multiplier::IntWide { mul: b, .. }) = (&a, &b) else {
        panic!("not wide");
    };
    assert!(std::sync::Arc::ptr_eq(a, b));
}

#[test]
fn integer_specs_of_the_wrong_width_are_one_line_errors_naming_the_right_prefix() {
    amsim::model::register_int_models(INT_MODELS);
    amsim::model::register_wide_int_models(WIDE_INT_MODELS);
    let r = Resolver::new(MODELS);
    let err = |text: &str| -> String {
        let e = match text.parse::<MultiplierSpec>() {
            Ok(spec) => r.resolve(&spec).unwrap_err(),
            Err(e) => e,
        }
        .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    for (text, want) in [
        ("int12:exact8s", "use int8:exact8s"),
        ("int16:exact12s", "use int12:exact12s"),
        ("int8:exact16u", "use int16:exact16u"),
        ("int12:exact16u", "use int16:exact16u"),
        ("exact12s:7", "use int12:exact12s"),
        ("direct:exact16u", "use int16:exact16u"),
        ("int12:trunc", "trunc:BITS"),
        ("int16:exact16u:9", "no bit width"),
        ("int12:exact12s:fast", "unknown int12 option 'fast'"),
        ("int12:", "int12:exact12s"),
        ("int16:table.ilut", "table files are 8-bit"),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{text}: {e}");
    }
    let e = err("int12:nosuch");
    assert!(
        e.contains("'nosuch'") && e.contains("exact12s") && !e.contains("exact16u"),
        "{e}"
    );
    // The check a plan file runs names the same prefix without a table.
    let check = |text: &str| r.check_int(&text.parse().unwrap());
    assert!(check("int12:exact12s").is_ok() && check("int16:exact16u:sym").is_ok());
    let e = check("int12:exact16u").unwrap_err().to_string();
    assert!(e.contains("use int16:exact16u"), "{e}");
}
