//! Build script of the `approxtrain` package: turns the C multiplier models
//! in `multipliers/` into the Rust model registry.
//!
//! 1. Discovers every `multipliers/*.c`. By the convention of
//!    `multipliers/approx_model.h`, `NAME.c` defines either `NAME_mul` and the
//!    record `NAME_info` (a floating-point model) or a function `NAME` with
//!    the signature of an 8-bit integer multiplier, in EvoApprox's form, and
//!    optionally the record `NAME_info` (an integer model); the file stem is
//!    the model name. A 12- or 16-bit model (`uint32_t NAME(uint16_t,
//!    uint16_t)` or `int32_t NAME(int16_t, int16_t)`, one signature for both
//!    widths) takes its width from the first number in its name
//!    (`mul12u_2NDH`, `exact16s`), as EvoApprox names them.
//! 2. Compiles them with `cc` into one static library.
//! 3. Generates the Rust view of the ABI header with bindgen where libclang
//!    can be loaded; elsewhere copies the committed `src/bindings.rs`. Either
//!    way the result is `$OUT_DIR/approx_model_abi.rs`; a test compares a
//!    fresh generation with the committed copy.
//! 4. Reads each `NAME_info` initializer from the source and writes
//!    `$OUT_DIR/model_registry.rs`: the `extern "C"` declarations, a safe
//!    wrapper per model, `MODELS`, `INT_MODELS` (8-bit) and
//!    `WIDE_INT_MODELS` (12- and 16-bit), included by
//!    `src/models.rs`.
//!
//! Bad input (a file name that is not a model name, a missing function, an
//! info record it cannot read) stops the build with one line naming the file.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

const MODEL_DIR: &str = "multipliers";
/// Set to any value to skip bindgen and use the committed bindings, as a
/// machine without libclang does.
const NO_BINDGEN_ENV: &str = "APPROXTRAIN_NO_BINDGEN";
/// Widest mantissa a model may declare (the FP32 fraction).
const MAX_MODEL_BITS: u32 = 23;

// `ABI_HEADER`, `COMMITTED_BINDINGS` and `committed_bindings_warning`.
include!("build/committed_bindings.rs");

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// What build.rs read from one `NAME.c`.
struct ModelSource {
    /// File name relative to the package, for messages.
    file: String,
    name: String,
    kind: ModelKind,
}

/// The two model conventions of `approx_model.h`.
enum ModelKind {
    /// `float NAME_mul(float, float, unsigned)` and its record.
    Float(InfoRecord),
    /// `uint16_t NAME(uint8_t, uint8_t)` or `int16_t NAME(int8_t, int8_t)`
    /// (8 bits); `uint32_t NAME(uint16_t, uint16_t)` or `int32_t
    /// NAME(int16_t, int16_t)` (12 or 16 bits, from the name).
    Int {
        signed: bool,
        /// Operand width: 8, 12 or 16.
        bits: u32,
        info: IntInfoRecord,
        /// Whether the source defines `NAME_info` (the record is optional).
        has_record: bool,
    },
}

/// The values of an integer model's `NAME_info` (defaults where absent).
struct IntInfoRecord {
    description: String,
    area_um2: f64,
    power_mw: f64,
    delay_ns: f64,
}

/// The values of a `NAME_info` designated initializer.
struct InfoRecord {
    name: String,
    description: String,
    min_bits: u32,
    max_bits: u32,
    area_um2: f64,
    power_mw: f64,
    delay_ns: f64,
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    println!("cargo:rerun-if-changed={MODEL_DIR}");
    println!("cargo:rerun-if-changed={COMMITTED_BINDINGS}");
    println!("cargo:rerun-if-env-changed={NO_BINDGEN_ENV}");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    let models = discover_models(&manifest_dir)?;
    compile_models(&manifest_dir, &models);
    write_bindings(&manifest_dir, &out_dir)?;
    let registry = registry_source(&models);
    write(&out_dir.join("model_registry.rs"), &registry)
}

fn env(key: &str) -> Result<String, String> {
    std::env::var(key).map_err(|_| format!("build.rs: environment variable {key} is not set"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Every `multipliers/*.c`, sorted by name, parsed and validated.
fn discover_models(manifest_dir: &Path) -> Result<Vec<ModelSource>, String> {
    let dir = manifest_dir.join(MODEL_DIR);
    let entries = fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|x| x == "c") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(format!("{MODEL_DIR}/ holds no model (*.c file)"));
    }
    let mut models = Vec::with_capacity(paths.len());
    for path in paths {
        models.push(read_model(&path)?);
    }
    Ok(models)
}

/// One `multipliers/NAME.c`, parsed and validated.
fn read_model(path: &Path) -> Result<ModelSource, String> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let file = format!("{MODEL_DIR}/{file_name}");
    println!("cargo:rerun-if-changed={file}");
    let name = path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if !is_int_model_name(&name) {
        return Err(format!(
            "{file}: '{name}' is not a model name (use a lowercase letter followed by [a-z0-9_])"
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {file}: {e}"))?;
    let code = strip_comments(&text);
    let kind = if contains_identifier(&code, &format!("{name}_mul")) {
        if !is_model_name(&name) {
            return Err(format!(
                    "{file}: '{name}' is not a floating-point model name (use a lowercase letter followed by [a-z0-9_])"
                ));
        }
        let info = parse_info(&code, &name).map_err(|e| format!("{file}: {e}"))?;
        validate_info(&info, &name).map_err(|e| format!("{file}: {e}"))?;
        ModelKind::Float(info)
    } else if let Some((signed, bits)) =
        int_signature(&code, &name).map_err(|e| format!("{file}: {e}"))?
    {
        let fields = record_fields(&code, &name).map_err(|e| format!("{file}: {e}"))?;
        let has_record = fields.is_some();
        let info =
            int_info(fields.unwrap_or_default(), &name).map_err(|e| format!("{file}: {e}"))?;
        ModelKind::Int {
            signed,
            bits,
            info,
            has_record,
        }
    } else {
        return Err(format!(
                "{file}: no function '{name}_mul' and no function '{name}' (a floating-point model defines float {name}_mul(float, float, unsigned); an integer model defines uint16_t {name}(uint8_t, uint8_t) or int16_t {name}(int8_t, int8_t), or for 12 and 16 bits uint32_t {name}(uint16_t, uint16_t) or int32_t {name}(int16_t, int16_t))"
            ));
    };
    Ok(ModelSource { file, name, kind })
}

/// `[a-z][A-Za-z0-9_]*`: integer models keep EvoApprox's names
/// (`mul8u_1JFF`), whose suffixes are upper case.
fn is_int_model_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `code` defines (or declares) the function `name` with an integer
/// model's signature, as `Some((signed, bits))`: `(false, 8)` for `uint16_t
/// name(uint8_t, uint8_t)`, `(true, 8)` for `int16_t name(int8_t, int8_t)`,
/// `(false, w)` for `uint32_t name(uint16_t, uint16_t)` and `(true, w)` for
/// `int32_t name(int16_t, int16_t)` with `w` the first number in `name`
/// (12 or 16); `None` when no function `name` is declared, an error for a
/// function `name` of another signature or a wide one whose name gives no
/// width.
fn int_signature(code: &str, name: &str) -> Result<Option<(bool, u32)>, String> {
    for (at, _) in code.match_indices(name) {
        let before = &code[..at];
        if before.chars().next_back().is_some_and(is_ident_char) {
            continue;
        }
        let after = &code[at + name.len()..];
        if after.chars().next().is_some_and(is_ident_char) {
            continue;
        }
        let Some(params) = after.trim_start().strip_prefix('(') else {
            continue;
        };
        // A declaration has a type right before the name; a call does not.
        let before = before.trim_end();
        let ret_start = before
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_ident_char(c))
            .last()
            .map(|(i, _)| i);
        let Some(ret_start) = ret_start else {
            continue;
        };
        let ret = &before[ret_start..];
        if ret == "return" {
            continue;
        }
        let Some(close) = params.find(')') else {
            continue;
        };
        let types: Vec<&str> = params[..close]
            .split(',')
            .map(|p| {
                let p = p.trim();
                let p = p.strip_prefix("const ").unwrap_or(p).trim_start();
                p.split(|c: char| !is_ident_char(c)).next().unwrap_or("")
            })
            .collect();
        return match (ret, types.as_slice()) {
            ("uint16_t", ["uint8_t", "uint8_t"]) => Ok(Some((false, 8))),
            ("int16_t", ["int8_t", "int8_t"]) => Ok(Some((true, 8))),
            ("uint32_t", ["uint16_t", "uint16_t"]) => Ok(Some((false, wide_bits(name)?))),
            ("int32_t", ["int16_t", "int16_t"]) => Ok(Some((true, wide_bits(name)?))),
            _ => Err(format!(
                "function '{name}' is {ret} {name}({}); an integer model is uint16_t {name}(uint8_t, uint8_t) or int16_t {name}(int8_t, int8_t) (8 bits), or uint32_t {name}(uint16_t, uint16_t) or int32_t {name}(int16_t, int16_t) (12 or 16 bits)",
                types.join(", ")
            )),
        };
    }
    Ok(None)
}

/// The operand width of a model with 16-bit operands: the first number in
/// its name, which must be 12 or 16 (`mul12u_2NDH`, `exact16s`).
fn wide_bits(name: &str) -> Result<u32, String> {
    let digits: String = name
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    match digits.as_str() {
        "12" => Ok(12),
        "16" => Ok(16),
        _ => Err(format!(
            "'{name}' has 16-bit operands but its name does not give its width: name it with 12 or 16 as its first number (mul12u_NAME, mul16s_NAME, exact12s), as EvoApprox does"
        )),
    }
}

/// The optional record of an integer model: `.description` required,
/// `.name` (if given) equal to the file stem, hardware figures default 0.
fn int_info(mut fields: Vec<(String, Value)>, name: &str) -> Result<IntInfoRecord, String> {
    let symbol = format!("{name}_info");
    let has_record = !fields.is_empty();
    let mut take = |field: &str| -> Option<Value> {
        let at = fields.iter().position(|(f, _)| f == field)?;
        Some(fields.remove(at).1)
    };
    let string = |field: &str, v: Value| match v {
        Value::Str(s) => Ok(s),
        Value::Number(_) => Err(format!("{symbol}.{field} must be a string literal")),
    };
    let double = |field: &str, v: Option<Value>| match v {
        None => Ok(0.0),
        Some(Value::Number(n)) => {
            parse_c_double(&n).ok_or_else(|| format!("{symbol}.{field} = {n} is not a number"))
        }
        Some(Value::Str(_)) => Err(format!("{symbol}.{field} must be a number")),
    };
    if let Some(v) = take("name") {
        let given = string("name", v)?;
        if given != name {
            return Err(format!(
                "{symbol}.name is \"{given}\" but the file declares model '{name}'"
            ));
        }
    }
    let description = match take("description") {
        Some(v) => string("description", v)?,
        None if has_record => return Err(format!("{symbol} does not set .description")),
        None => format!("integer model {name} (no info record)"),
    };
    if description.trim().is_empty() || description.contains('\n') {
        return Err(format!("{symbol}.description must be one non-empty line"));
    }
    let info = IntInfoRecord {
        description,
        area_um2: double("area_um2", take("area_um2"))?,
        power_mw: double("power_mw", take("power_mw"))?,
        delay_ns: double("delay_ns", take("delay_ns"))?,
    };
    if let Some((field, _)) = fields.first() {
        return Err(format!(
            "{symbol}.{field} is not a field of approx_model_int_info"
        ));
    }
    check_figures(&symbol, [info.area_um2, info.power_mw, info.delay_ns])?;
    Ok(info)
}

/// `[a-z][a-z0-9_]*`: a C identifier prefix, a Rust identifier and a
/// spec token at once.
fn is_model_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `ident` occurs in `code` as a whole identifier.
fn contains_identifier(code: &str, ident: &str) -> bool {
    code.match_indices(ident).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + ident.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// The source with `/* */` and `//` comments replaced by spaces; string and
/// character literals are kept intact.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// A token of a designated initializer.
#[derive(Debug, PartialEq)]
enum Token {
    Punct(char),
    Ident(String),
    Str(String),
    Number(String),
}

fn tokenize(body: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated string literal in the info record".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(e @ ('"' | '\\' | '\'' | '?')) => s.push(e),
                        Some(e) => {
                            return Err(format!(
                                "unsupported escape '\\{e}' in a string of the info record"
                            ))
                        }
                        None => return Err("unterminated string literal in the info record".into()),
                    },
                    Some(d) => s.push(d),
                }
            }
            // Adjacent string literals concatenate, as in C.
            if let Some(Token::Str(prev)) = tokens.last_mut() {
                prev.push_str(&s);
            } else {
                tokens.push(Token::Str(s));
            }
        } else if c.is_ascii_digit() || (c == '.' && tokens.last() == Some(&Token::Punct('='))) {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                let exponent_sign = (d == '+' || d == '-') && s.ends_with(['e', 'E']);
                if d.is_ascii_alphanumeric() || d == '.' || exponent_sign {
                    s.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Number(s));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if is_ident_char(d) {
                    s.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Ident(s));
        } else if ".=,-+".contains(c) {
            tokens.push(Token::Punct(c));
            chars.next();
        } else {
            return Err(format!(
                "unexpected '{c}' in the info record (use literal values only)"
            ));
        }
    }
    Ok(tokens)
}

/// A value of the initializer: a string or a number (with its sign).
enum Value {
    Str(String),
    Number(String),
}

/// Reads `NAME_info = { .field = value, ... }` from comment-free source.
fn parse_info(code: &str, name: &str) -> Result<InfoRecord, String> {
    let symbol = format!("{name}_info");
    let mut fields = record_fields(code, name)?.ok_or_else(|| {
        format!(
            "no record '{symbol} = {{ ... }}' (a model NAME.c defines const struct approx_model_info NAME_info)"
        )
    })?;
    let mut take = |field: &str| -> Result<Value, String> {
        let at = fields
            .iter()
            .position(|(f, _)| f == field)
            .ok_or_else(|| format!("{symbol} does not set .{field}"))?;
        Ok(fields.remove(at).1)
    };
    let string = |field: &str, v: Value| match v {
        Value::Str(s) => Ok(s),
        Value::Number(_) => Err(format!("{symbol}.{field} must be a string literal")),
    };
    let unsigned = |field: &str, v: Value| match v {
        Value::Number(n) => parse_c_unsigned(&n)
            .ok_or_else(|| format!("{symbol}.{field} = {n} is not an unsigned integer")),
        Value::Str(_) => Err(format!("{symbol}.{field} must be a number")),
    };
    let double = |field: &str, v: Value| match v {
        Value::Number(n) => {
            parse_c_double(&n).ok_or_else(|| format!("{symbol}.{field} = {n} is not a number"))
        }
        Value::Str(_) => Err(format!("{symbol}.{field} must be a number")),
    };
    let record = InfoRecord {
        name: string("name", take("name")?)?,
        description: string("description", take("description")?)?,
        min_bits: unsigned("min_bits", take("min_bits")?)?,
        max_bits: unsigned("max_bits", take("max_bits")?)?,
        area_um2: double("area_um2", take("area_um2")?)?,
        power_mw: double("power_mw", take("power_mw")?)?,
        delay_ns: double("delay_ns", take("delay_ns")?)?,
    };
    if let Some((field, _)) = fields.first() {
        return Err(format!(
            "{symbol}.{field} is not a field of approx_model_info"
        ));
    }
    Ok(record)
}

/// The `.field = value` pairs of `NAME_info = { ... }` in comment-free
/// source, in order; `None` when the source has no such record.
fn record_fields(code: &str, name: &str) -> Result<Option<Vec<(String, Value)>>, String> {
    let symbol = format!("{name}_info");
    let body = code.match_indices(&symbol).find_map(|(at, _)| {
        if code[..at].chars().next_back().is_some_and(is_ident_char) {
            return None;
        }
        let rest = code[at + symbol.len()..].trim_start();
        let rest = rest.strip_prefix('=')?.trim_start();
        let rest = rest.strip_prefix('{')?;
        Some(&rest[..closing_brace(rest)?])
    });
    let Some(body) = body else {
        return Ok(None);
    };
    let tokens = tokenize(body)?;
    let mut fields: Vec<(String, Value)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let field = match (&tokens[i], tokens.get(i + 1), tokens.get(i + 2)) {
            (Token::Punct('.'), Some(Token::Ident(f)), Some(Token::Punct('='))) => f.clone(),
            _ => {
                return Err(format!(
                    "cannot read the fields of {symbol}: write them as .field = value"
                ))
            }
        };
        i += 3;
        let mut sign = String::new();
        while let Some(Token::Punct(p @ ('-' | '+'))) = tokens.get(i) {
            if *p == '-' {
                sign = if sign.is_empty() {
                    "-".into()
                } else {
                    String::new()
                };
            }
            i += 1;
        }
        let value = match tokens.get(i) {
            Some(Token::Str(s)) if sign.is_empty() => Value::Str(s.clone()),
            Some(Token::Number(n)) => Value::Number(format!("{sign}{n}")),
            _ => {
                return Err(format!(
                    "{symbol}.{field} is not a literal string or number"
                ))
            }
        };
        i += 1;
        match tokens.get(i) {
            None => {}
            Some(Token::Punct(',')) => i += 1,
            Some(_) => {
                return Err(format!(
                    "{symbol}.{field} is not a literal string or number"
                ))
            }
        }
        if fields.iter().any(|(f, _)| *f == field) {
            return Err(format!("{symbol}.{field} is set twice"));
        }
        fields.push((field, value));
    }
    Ok(Some(fields))
}

/// The byte offset of the first `}` outside string literals.
fn closing_brace(text: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '}' {
            return Some(at);
        }
    }
    None
}

/// A decimal or hexadecimal C integer literal with an optional `u`/`U` suffix.
fn parse_c_unsigned(n: &str) -> Option<u32> {
    let digits = n.trim_end_matches(['u', 'U']);
    if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u32::from_str_radix(hex, 16).ok()
    } else if digits.chars().all(|c| c.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// A decimal C floating or integer literal with an optional `f`/`F` suffix.
fn parse_c_double(n: &str) -> Option<f64> {
    let digits = n
        .strip_suffix(['f', 'F'])
        .filter(|d| d.contains(['.', 'e', 'E']))
        .unwrap_or(n);
    digits.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn validate_info(info: &InfoRecord, name: &str) -> Result<(), String> {
    if info.name != name {
        return Err(format!(
            "{name}_info.name is \"{}\" but the file declares model '{name}'",
            info.name
        ));
    }
    if info.description.trim().is_empty() || info.description.contains('\n') {
        return Err(format!(
            "{name}_info.description must be one non-empty line"
        ));
    }
    if !(1 <= info.min_bits && info.min_bits <= info.max_bits && info.max_bits <= MAX_MODEL_BITS) {
        return Err(format!(
            "{name}_info declares bits {}..={}; need 1 <= min_bits <= max_bits <= {MAX_MODEL_BITS}",
            info.min_bits, info.max_bits
        ));
    }
    check_figures(
        &format!("{name}_info"),
        [info.area_um2, info.power_mw, info.delay_ns],
    )?;
    Ok(())
}

/// The hardware figures `[area_um2, power_mw, delay_ns]` of the record
/// `symbol`: none negative.
fn check_figures(symbol: &str, figures: [f64; 3]) -> Result<(), String> {
    for (field, v) in ["area_um2", "power_mw", "delay_ns"]
        .into_iter()
        .zip(figures)
    {
        if v < 0.0 {
            return Err(format!(
                "{symbol}.{field} = {v} is negative (use 0 for \"not declared\")"
            ));
        }
    }
    Ok(())
}

fn compile_models(manifest_dir: &Path, models: &[ModelSource]) {
    let mut build = cc::Build::new();
    build
        .include(manifest_dir.join(MODEL_DIR))
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-std=c99")
        // Keep a * b + c as two rounded operations on every target, so a
        // model written with floats means the same everywhere.
        .flag_if_supported("-ffp-contract=off")
        // The ABI header first in every file, so that an integer model in
        // EvoApprox's form needs only its one-line record added.
        .flag("-include")
        .flag(manifest_dir.join(ABI_HEADER).to_string_lossy().as_ref());
    for m in models {
        build.file(manifest_dir.join(&m.file));
    }
    build.compile("approx_models");
}

/// `$OUT_DIR/approx_model_abi.rs`: fresh from bindgen where libclang loads,
/// else the committed copy. Tells the crate which it got through
/// `APPROXTRAIN_BINDINGS_FRESH` (the fresh file, or empty) and
/// `APPROXTRAIN_BINDINGS_NOTE` (why there is no fresh file).
fn write_bindings(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let target = out_dir.join("approx_model_abi.rs");
    let committed = manifest_dir.join(COMMITTED_BINDINGS);
    let fresh = if std::env::var_os(NO_BINDGEN_ENV).is_some() {
        Err(format!("{NO_BINDGEN_ENV} is set"))
    } else {
        generate_bindings(&manifest_dir.join(ABI_HEADER))
    };
    match fresh {
        Ok(text) => {
            write(&target, &text)?;
            println!(
                "cargo:rustc-env=APPROXTRAIN_BINDINGS_FRESH={}",
                target.display()
            );
            println!("cargo:rustc-env=APPROXTRAIN_BINDINGS_NOTE=generated by bindgen");
        }
        Err(why) => {
            let text = fs::read_to_string(&committed).map_err(|e| {
                format!("bindgen unavailable ({why}) and cannot read {COMMITTED_BINDINGS}: {e}")
            })?;
            write(&target, &text)?;
            // Cargo repeats a build script's warnings on every build: say
            // nothing in the normal case, where the header is older.
            let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
            if let Some(warning) = committed_bindings_warning(
                modified(&manifest_dir.join(ABI_HEADER)),
                modified(&committed),
                &why,
            ) {
                println!("cargo:warning={warning}");
            }
            println!("cargo:rustc-env=APPROXTRAIN_BINDINGS_FRESH=");
            println!("cargo:rustc-env=APPROXTRAIN_BINDINGS_NOTE={why}");
        }
    }
    Ok(())
}

fn generate_bindings(header: &Path) -> Result<String, String> {
    // bindgen panics when libclang cannot be loaded; probe for it first.
    clang_sys::load().map_err(|e| format!("libclang not available: {e}"))?;
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_type("approx_model_.*")
        // Layout assertions depend on the pointer width of the machine that
        // ran bindgen; the committed copy must serve every target.
        .layout_tests(false)
        .generate()
        .map_err(|e| format!("bindgen failed on {ABI_HEADER}: {e}"))?;
    Ok(bindings.to_string())
}

/// The Rust source of the registry.
fn registry_source(all: &[ModelSource]) -> String {
    let models: Vec<(&ModelSource, &InfoRecord)> = all
        .iter()
        .filter_map(|m| match &m.kind {
            ModelKind::Float(info) => Some((m, info)),
            ModelKind::Int { .. } => None,
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by build.rs from multipliers/*.c; do not edit.\n\n\
         mod ffi {{\n    use super::abi::approx_model_info;\n    extern \"C\" {{"
    );
    for (m, _) in &models {
        let n = &m.name;
        let _ = writeln!(
            s,
            "        pub fn {n}_mul(a: f32, b: f32, bits: ::std::os::raw::c_uint) -> f32;\n        \
             pub static {n}_info: approx_model_info;"
        );
    }
    let _ = writeln!(s, "    }}\n}}\n");
    // The declarations above must agree with the ABI header's typedef.
    for (m, _) in &models {
        let _ = writeln!(
            s,
            "const _: abi::approx_model_fn = Some(ffi::{}_mul);",
            m.name
        );
    }
    let _ = writeln!(s);
    for (m, _) in &models {
        let n = &m.name;
        let _ = writeln!(
            s,
            "/// Model `{n}` ({file}).\nfn model_{n}(a: f32, b: f32, bits: u32) -> f32 {{\n    \
             // SAFETY: by the ABI of approx_model.h a model is a pure function\n    \
             // defined for every float input and every `bits`.\n    \
             unsafe {{ ffi::{n}_mul(a, b, bits) }}\n}}\n",
            file = m.file
        );
    }
    let _ = writeln!(
        s,
        "/// Every model compiled from `multipliers/*.c`, sorted by name.\n\
         pub static MODELS: &[amsim::ModelInfo] = &["
    );
    for (m, i) in &models {
        let _ = writeln!(
            s,
            "    amsim::ModelInfo {{\n        name: {:?},\n        description: {:?},\n        \
             min_bits: {},\n        max_bits: {},\n        area_um2: {:?},\n        \
             power_mw: {:?},\n        delay_ns: {:?},\n        func: model_{},\n    }},",
            i.name,
            i.description,
            i.min_bits,
            i.max_bits,
            i.area_um2,
            i.power_mw,
            i.delay_ns,
            m.name
        );
    }
    let _ = writeln!(s, "];\n");
    let _ = writeln!(
        s,
        "/// The C info records, in the order of [`MODELS`].\n\
         fn raw_info_records() -> Vec<&'static abi::approx_model_info> {{\n    \
         // SAFETY: the records are immutable C objects that live for the\n    \
         // whole program.\n    unsafe {{\n        vec![",
    );
    for (m, _) in &models {
        let _ = writeln!(s, "            &ffi::{}_info,", m.name);
    }
    let _ = writeln!(s, "        ]\n    }}\n}}\n");
    int_registry_source(&mut s, all);
    wide_int_registry_source(&mut s, all);
    s
}

/// The integer part of the registry: declarations, wrappers taking and
/// returning `i32` (operand values -128..=127 or 0..=255), `INT_MODELS` and
/// the optional C records.
fn int_registry_source(s: &mut String, all: &[ModelSource]) {
    let models: Vec<(&ModelSource, bool, &IntInfoRecord, bool)> = all
        .iter()
        .filter_map(|m| match &m.kind {
            ModelKind::Int {
                signed,
                bits: 8,
                info,
                has_record,
            } => Some((m, *signed, info, *has_record)),
            _ => None,
        })
        .collect();
    let _ = writeln!(
        s,
        "// EvoApprox names keep their upper-case suffixes.\n\
         #[allow(non_snake_case, non_upper_case_globals)]\n\
         mod int_ffi {{\n    use super::abi::approx_model_int_info;\n    extern \"C\" {{"
    );
    for &(m, signed, _, has_record) in &models {
        let n = &m.name;
        let (op, ret) = if signed { ("i8", "i16") } else { ("u8", "u16") };
        let _ = writeln!(s, "        pub fn {n}(a: {op}, b: {op}) -> {ret};");
        if has_record {
            let _ = writeln!(s, "        pub static {n}_info: approx_model_int_info;");
        }
    }
    let _ = writeln!(s, "    }}\n}}\n");
    for &(m, signed, _, _) in &models {
        let fn_type = if signed { "mul8s" } else { "mul8u" };
        let _ = writeln!(
            s,
            "const _: abi::approx_model_{fn_type}_fn = Some(int_ffi::{});",
            m.name
        );
    }
    let _ = writeln!(s);
    for &(m, signed, _, _) in &models {
        let n = &m.name;
        let op = if signed { "i8" } else { "u8" };
        let _ = writeln!(
            s,
            "/// Integer model `{n}` ({file}).\n#[allow(non_snake_case)]\n\
             fn int_model_{n}(a: i32, b: i32) -> i32 {{\n    \
             // SAFETY: by the ABI of approx_model.h an integer model is a pure\n    \
             // function defined for every operand pair.\n    \
             i32::from(unsafe {{ int_ffi::{n}(a as {op}, b as {op}) }})\n}}\n",
            file = m.file
        );
    }
    let _ = writeln!(
        s,
        "/// Every integer model compiled from `multipliers/*.c`, sorted by name.\n\
         pub static INT_MODELS: &[amsim::IntModelInfo] = &["
    );
    for &(m, signed, i, _) in &models {
        let _ = writeln!(
            s,
            "    amsim::IntModelInfo {{\n        name: {:?},\n        description: {:?},\n        \
             signed: {signed},\n        area_um2: {:?},\n        \
             power_mw: {:?},\n        delay_ns: {:?},\n        func: int_model_{},\n    }},",
            m.name, i.description, i.area_um2, i.power_mw, i.delay_ns, m.name
        );
    }
    let _ = writeln!(s, "];\n");
    let _ = writeln!(
        s,
        "/// The C records of the integer models, in the order of\n\
         /// [`INT_MODELS`] (`None` for a model without one).\n\
         fn raw_int_info_records() -> Vec<Option<&'static abi::approx_model_int_info>> {{\n    \
         // SAFETY: the records are immutable C objects that live for the\n    \
         // whole program.\n    unsafe {{\n        vec!["
    );
    for &(m, _, _, has_record) in &models {
        if has_record {
            let _ = writeln!(s, "            Some(&int_ffi::{}_info),", m.name);
        } else {
            let _ = writeln!(s, "            None,");
        }
    }
    let _ = writeln!(s, "        ]\n    }}\n}}");
}

/// The 12- and 16-bit part of the registry: declarations, wrappers taking
/// `i32` operand values and returning the `int32_t`/`uint32_t` product as
/// `i64`, `WIDE_INT_MODELS` and the optional C records.
fn wide_int_registry_source(s: &mut String, all: &[ModelSource]) {
    let models: Vec<(&ModelSource, bool, u32, &IntInfoRecord, bool)> = all
        .iter()
        .filter_map(|m| match &m.kind {
            ModelKind::Int {
                signed,
                bits,
                info,
                has_record,
            } if *bits != 8 => Some((m, *signed, *bits, info, *has_record)),
            _ => None,
        })
        .collect();
    let _ = writeln!(
        s,
        "\n// EvoApprox names keep their upper-case suffixes.\n\
         #[allow(non_snake_case, non_upper_case_globals)]\n\
         mod wide_int_ffi {{\n    use super::abi::approx_model_int_info;\n    extern \"C\" {{"
    );
    for &(m, signed, _, _, has_record) in &models {
        let n = &m.name;
        let (op, ret) = if signed {
            ("i16", "i32")
        } else {
            ("u16", "u32")
        };
        let _ = writeln!(s, "        pub fn {n}(a: {op}, b: {op}) -> {ret};");
        if has_record {
            let _ = writeln!(s, "        pub static {n}_info: approx_model_int_info;");
        }
    }
    let _ = writeln!(s, "    }}\n}}\n");
    for &(m, signed, ..) in &models {
        let fn_type = if signed { "mul16s" } else { "mul16u" };
        let _ = writeln!(
            s,
            "const _: abi::approx_model_{fn_type}_fn = Some(wide_int_ffi::{});",
            m.name
        );
    }
    let _ = writeln!(s);
    for &(m, signed, ..) in &models {
        let n = &m.name;
        let op = if signed { "i16" } else { "u16" };
        let _ = writeln!(
            s,
            "/// Integer model `{n}` ({file}).\n#[allow(non_snake_case)]\n\
             fn wide_int_model_{n}(a: i32, b: i32) -> i64 {{\n    \
             // SAFETY: by the ABI of approx_model.h an integer model is a pure\n    \
             // function defined for every operand pair.\n    \
             i64::from(unsafe {{ wide_int_ffi::{n}(a as {op}, b as {op}) }})\n}}\n",
            file = m.file
        );
    }
    let _ = writeln!(
        s,
        "/// Every 12- and 16-bit integer model compiled from `multipliers/*.c`,\n\
         /// sorted by name.\n\
         pub static WIDE_INT_MODELS: &[amsim::WideIntModelInfo] = &["
    );
    for &(m, signed, bits, i, _) in &models {
        let _ = writeln!(
            s,
            "    amsim::WideIntModelInfo {{\n        name: {:?},\n        description: {:?},\n        \
             bits: {bits},\n        signed: {signed},\n        area_um2: {:?},\n        \
             power_mw: {:?},\n        delay_ns: {:?},\n        func: wide_int_model_{},\n    }},",
            m.name, i.description, i.area_um2, i.power_mw, i.delay_ns, m.name
        );
    }
    let _ = writeln!(s, "];\n");
    let _ = writeln!(
        s,
        "/// The C records of the 12- and 16-bit integer models, in the order of\n\
         /// [`WIDE_INT_MODELS`] (`None` for a model without one).\n\
         fn raw_wide_int_info_records() -> Vec<Option<&'static abi::approx_model_int_info>> {{\n    \
         // SAFETY: the records are immutable C objects that live for the\n    \
         // whole program.\n    unsafe {{\n        vec!["
    );
    for &(m, _, _, _, has_record) in &models {
        if has_record {
            let _ = writeln!(s, "            Some(&wide_int_ffi::{}_info),", m.name);
        } else {
            let _ = writeln!(s, "            None,");
        }
    }
    let _ = writeln!(s, "        ]\n    }}\n}}");
}
