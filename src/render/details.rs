//! The parts of Argo CD's `GetAppDetails` that read an app rather than run a
//! tool: the value files a Helm app offers, the parameters its values
//! documents flatten to, and the images a built Kustomize app uses.
//!
//! References (Argo CD): `reposerver/repository/repository.go`
//! (`populateHelmAppDetails`, `walkHelmValueFilesInPath`,
//! `populateKustomizeAppDetails`), `util/helm/helm.go` (`GetParameters`,
//! `flatVals`) and `util/kustomize/kustomize.go` (`getImageParameters`,
//! `getImages`).
//!
//! Values are read the way `sigs.k8s.io/yaml` (v1.6, over goyaml v2) reads
//! them into a `map[string]any`: YAML 1.1 scalars (`yes`/`no`/`on`/`off`,
//! `0755` octal), non-string keys turned into strings, and every number a
//! float64 after the trip through JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why values could not be flattened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `documents[document]` is not YAML, is not a map, or holds something
    /// JSON cannot (a non-string-convertible key, an infinite number).
    #[error("failed to parse values (document {document}): {message}")]
    InvalidValues { document: usize, message: String },
}

// ---------------------------------------------------------------------------
// Helm value files
// ---------------------------------------------------------------------------

/// Value files Argo CD offers for a Helm app: every entry under `app_dir`
/// (recursively, in `filepath.Walk` order: lexical per directory, symlinks
/// not followed) whose name contains `values` (case-sensitive) and whose
/// extension, lower-cased, is `.yaml` or `.yml`. Paths are relative to
/// `app_dir`, with `/` separators.
///
/// As in Argo CD, directories are tested too (a directory named
/// `values.yaml` is listed, and still walked), `app_dir` itself is reported
/// as `.` when its own name qualifies, and an `app_dir` that is itself a
/// symlink is not walked (`filepath.Walk` uses `Lstat` on the root). Any
/// entry that cannot be read fails the whole walk.
pub fn helm_value_files(app_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let metadata = std::fs::symlink_metadata(app_dir).map_err(|err| walk_error(app_dir, err))?;
    // filepath.Walk hands the root to the walk function exactly as given;
    // `Ext` is taken from that path, `Name` from its base name.
    let root_name = go_base(&app_dir.as_os_str().to_string_lossy());
    let root_ext = go_ext(&app_dir.as_os_str().to_string_lossy());
    walk(
        app_dir,
        &metadata,
        &root_name,
        &root_ext,
        &mut Vec::new(),
        &mut found,
    )?;
    Ok(found)
}

fn walk(
    path: &Path,
    metadata: &std::fs::Metadata,
    name: &str,
    ext: &str,
    relative: &mut Vec<String>,
    found: &mut Vec<String>,
) -> std::io::Result<()> {
    if !metadata.is_dir() {
        visit(name, ext, relative, found);
        return Ok(());
    }
    // Walk reads the directory before calling the walk function on it, and
    // a read error is returned (by Argo CD's walk function) before the
    // directory's own name is considered.
    let mut names = Vec::new();
    let entries = std::fs::read_dir(path).map_err(|err| walk_error(path, err))?;
    for entry in entries {
        let entry = entry.map_err(|err| walk_error(path, err))?;
        names.push(entry.file_name());
    }
    visit(name, ext, relative, found);
    // On Unix, OsString orders by bytes, as Go's sort.Strings does.
    names.sort();
    for child in names {
        let child_path = path.join(&child);
        let child_metadata =
            std::fs::symlink_metadata(&child_path).map_err(|err| walk_error(&child_path, err))?;
        let child_name = child.to_string_lossy().into_owned();
        let child_ext = go_ext(&child_name);
        relative.push(child_name.clone());
        let result = walk(
            &child_path,
            &child_metadata,
            &child_name,
            &child_ext,
            relative,
            found,
        );
        relative.pop();
        result?;
    }
    Ok(())
}

/// `walkHelmValueFilesInPath`'s test on one entry.
fn visit(name: &str, ext: &str, relative: &[String], found: &mut Vec<String>) {
    let ext = ext.to_lowercase();
    if name.contains("values") && (ext == ".yaml" || ext == ".yml") {
        found.push(if relative.is_empty() {
            ".".to_string()
        } else {
            relative.join("/")
        });
    }
}

fn walk_error(path: &Path, err: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        err.kind(),
        format!(
            "error reading helm values file from {}: {err}",
            path.display()
        ),
    )
}

/// Go's `filepath.Ext`: the suffix from the last `.` of the final element.
fn go_ext(path: &str) -> String {
    for (index, byte) in path.bytes().enumerate().rev() {
        match byte {
            b'/' => break,
            b'.' => return path[index..].to_string(),
            _ => {}
        }
    }
    String::new()
}

/// Go's `filepath.Base` (what `Lstat(...).Name()` reports for the root).
fn go_base(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    match trimmed.rfind('/') {
        Some(index) => trimmed[index + 1..].to_string(),
        None => trimmed.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Helm parameters
// ---------------------------------------------------------------------------

/// Flattens Helm values documents (YAML text, in order) into Argo CD's
/// parameter map (`GetParameters` + `flatVals`): nested keys joined by `.`,
/// list items as `name[i]`, leaves printed as Go's `%v` prints what
/// `sigs.k8s.io/yaml` produces (numbers are float64, so `100000000` is
/// `1e+08`; `null` is `<nil>`). Empty maps and lists produce nothing.
///
/// Every document writes into the same map, so a later document overrides
/// the keys it sets and leaves the others (including deeper keys of a value
/// it replaces) in place. Only the first YAML document of each text is read,
/// as goyaml v2 does; an empty or `null` document contributes nothing.
///
/// Fails, naming the document's index in `documents`, when a document is
/// not YAML or not a map, or holds a key or number JSON cannot represent
/// (Argo CD: "failed to parse values: ...").
pub fn flatten_helm_values(documents: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut output = BTreeMap::new();
    for (index, text) in documents.iter().enumerate() {
        let invalid = |message: String| Error::InvalidValues {
            document: index,
            message,
        };
        let yaml = parse_first_document(text).map_err(invalid)?;
        let json = to_json(yaml)
            .map_err(|message| invalid(format!("error converting YAML to JSON: {message}")))?;
        match json {
            Value::Null => {}
            Value::Object(map) => {
                let mut prefixes = Vec::new();
                for (key, value) in &map {
                    prefixes.push(key.clone());
                    flat_vals(value, &mut prefixes, &mut output);
                    prefixes.pop();
                }
            }
            other => {
                return Err(invalid(format!(
                    "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                    json_kind(&other)
                )))
            }
        }
    }
    Ok(output)
}

/// `flatVals`: `prefixes` is never empty here (the top level is a map).
fn flat_vals(value: &Value, prefixes: &mut Vec<String>, output: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                prefixes.push(key.clone());
                flat_vals(value, prefixes, output);
                prefixes.pop();
            }
        }
        Value::Array(items) => {
            let last = prefixes.len() - 1;
            let name = prefixes[last].clone();
            for (index, item) in items.iter().enumerate() {
                prefixes[last] = format!("{name}[{index}]");
                flat_vals(item, prefixes, output);
            }
            prefixes[last] = name;
        }
        leaf => {
            output.insert(prefixes.join("."), go_v(leaf));
        }
    }
}

/// `fmt.Sprintf("%v", v)` for a JSON leaf decoded into `any`.
fn go_v(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        // Containers are flattened before reaching here.
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A YAML node as goyaml v2 decodes it into `interface{}`, keys included.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Null,
    Bool(bool),
    /// Go `int`.
    Int(i64),
    /// Go `uint64` (above `i64::MAX`).
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(Yaml, Yaml)>),
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Yaml, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => Yaml::Int(v),
            Err(_) => Yaml::Uint(v),
        })
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Yaml, E> {
        Ok(match (i64::try_from(v), u64::try_from(v)) {
            (Ok(v), _) => Yaml::Int(v),
            (_, Ok(v)) => Yaml::Uint(v),
            _ => Yaml::Float(v as f64),
        })
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Yaml, E> {
        Ok(match (i64::try_from(v), u64::try_from(v)) {
            (Ok(v), _) => Yaml::Int(v),
            (_, Ok(v)) => Yaml::Uint(v),
            _ => Yaml::Float(v as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Yaml, E> {
        Ok(Yaml::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Yaml>()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Yaml, Yaml>()? {
            entries.push(entry);
        }
        Ok(Yaml::Map(entries))
    }
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // goyaml v2 reads 0755 as octal.
        legacy_octal_numbers: true,
        // goyaml v2 (non-strict) keeps the last of duplicate keys.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        // Infinite numbers reach the JSON step, which rejects them as Go's
        // json.Marshal does; infinite keys become `.inf` like Go's.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
    }
}

/// The first YAML document of `text` (goyaml v2's `Unmarshal` reads only
/// that one, and never looks at the rest).
fn parse_first_document(text: &str) -> Result<Yaml, String> {
    let parse = |text: &str| serde_saphyr::from_str_with_options::<Yaml>(text, yaml_options());
    match parse(text) {
        Ok(yaml) => Ok(yaml),
        Err(err) if is_multiple_documents(&err) => match parse(first_document(text)) {
            Ok(yaml) => Ok(yaml),
            // The cut did not isolate one document after all: take the
            // first non-empty document serde-saphyr finds.
            Err(err) if is_multiple_documents(&err) => {
                serde_saphyr::from_multiple_with_options::<Yaml>(text, yaml_options())
                    .map(|documents| documents.into_iter().next().unwrap_or(Yaml::Null))
                    .map_err(|err| err.to_string())
            }
            Err(err) => Err(err.to_string()),
        },
        Err(err) => Err(err.to_string()),
    }
}

/// The text of a stream's first document: up to the `...` line that ends
/// it, or the `---` line that starts a second one (a `---` line before any
/// content starts the first document).
fn first_document(text: &str) -> &str {
    let is_marker = |line: &str, marker: &str| {
        line.strip_prefix(marker)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
    };
    let mut started = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if is_marker(line, "...") {
            return &text[..offset];
        }
        if is_marker(line, "---") {
            if started {
                return &text[..offset];
            }
            started = true;
        } else {
            let trimmed = line.trim();
            let content = !trimmed.is_empty() && !trimmed.starts_with('#');
            // Directives (`%YAML 1.1`) may precede the first `---`.
            if content && (started || !line.starts_with('%')) {
                started = true;
            }
        }
        offset += line.len();
    }
    text
}

fn is_multiple_documents(err: &serde_saphyr::Error) -> bool {
    // Snippets are off, but match the message too in case of other wrapping.
    matches!(err, serde_saphyr::Error::MultipleDocuments { .. })
        || err.to_string().contains("only one document is supported")
}

/// `sigs.k8s.io/yaml`'s YAML → JSON step followed by `json.Unmarshal` into
/// `any`: keys become strings, numbers become float64.
fn to_json(yaml: Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Int(i) => float_value(i as f64)?,
        Yaml::Uint(u) => float_value(u as f64)?,
        Yaml::Float(f) => float_value(f)?,
        Yaml::Str(s) => Value::String(s),
        Yaml::Seq(items) => Value::Array(
            items
                .into_iter()
                .map(to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Yaml::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = json_key(&key)?;
                // Keys that collide once stringified: the last one wins.
                map.insert(key, to_json(value)?);
            }
            Value::Object(map)
        }
    })
}

fn float_value(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("json: unsupported value: {}", go_special_float(f)))
}

fn go_special_float(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// `convertToJSONableObject`'s key conversion.
fn json_key(key: &Yaml) -> Result<String, String> {
    match key {
        Yaml::Str(s) => Ok(s.clone()),
        Yaml::Int(i) => Ok(i.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Float(f) => {
            let f = *f as f32;
            Ok(if f.is_nan() {
                ".nan".to_string()
            } else if f.is_infinite() {
                if f > 0.0 { ".inf" } else { "-.inf" }.to_string()
            } else {
                go_float32(f)
            })
        }
        Yaml::Uint(u) => Err(format!("unsupported map key of type: uint64, key: {u}")),
        Yaml::Null => Err("unsupported map key of type: <nil>".to_string()),
        Yaml::Seq(_) | Yaml::Map(_) => Err("invalid map key".to_string()),
    }
}

/// Go's `fmt.Sprintf("%v", f)` for a float64, which is
/// `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits that read back
/// as `f`, in exponent form when the decimal exponent is below -4 or at
/// least 6 (`1e+06`, `1.5e-05`), otherwise plain (`123456`, `0.0001`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    format_shortest_g(&format!("{v:e}"))
}

/// `strconv.FormatFloat(f, 'g', -1, 32)` (shortest digits for a float32).
fn go_float32(v: f32) -> String {
    format_shortest_g(&format!("{v:e}"))
}

/// Lays out Rust's shortest `{:e}` rendering (`-1.2345e-7`) as Go's `%g`
/// with shortest precision.
fn format_shortest_g(exp_form: &str) -> String {
    let (negative, rest) = match exp_form.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, exp_form),
    };
    let (mantissa, exponent) = rest.split_once('e').unwrap_or((rest, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Shortest digits never carry trailing zeros except for zero itself.
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if !(-4..6).contains(&exponent) {
        // %e: d.ddde±dd
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
    } else if exponent < 0 {
        out.push_str("0.");
        for _ in 0..(-exponent - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let integer_digits = exponent as usize + 1;
        if digits.len() <= integer_digits {
            out.push_str(&digits);
            for _ in digits.len()..integer_digits {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..integer_digits]);
            out.push('.');
            out.push_str(&digits[integer_digits..]);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Kustomize images
// ---------------------------------------------------------------------------

/// The images Argo CD reports for a Kustomize app (`getImageParameters`):
/// every `image` of an element of a `containers` or `initContainers` list
/// found anywhere in the built objects (maps and lists of maps are searched
/// at any depth; other container lists, such as `ephemeralContainers`, are
/// not), sorted bytewise. Duplicates are kept, as Argo CD keeps them.
pub fn kustomize_images(objects: &[Value]) -> Vec<String> {
    let mut images = Vec::new();
    for object in objects {
        if let Value::Object(map) = object {
            collect_images(map, &mut images);
        }
    }
    images.sort();
    images
}

/// `getImages`.
fn collect_images(object: &Map<String, Value>, images: &mut Vec<String>) {
    for (key, value) in object {
        match value {
            Value::Array(items) if key == "containers" || key == "initContainers" => {
                for item in items {
                    if let Some(image) = item.as_object().and_then(|c| c.get("image")) {
                        images.push(go_s(image));
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(map) = item {
                        collect_images(map, images);
                    }
                }
            }
            Value::Object(map) => collect_images(map, images),
            _ => {}
        }
    }
}

/// `fmt.Sprintf("%s", v)` for a value of an unstructured object (numbers
/// decoded as apimachinery does: int64 when integral, else float64).
fn go_s(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "%!s(<nil>)".to_string(),
        Value::Bool(b) => format!("%!s(bool={b})"),
        Value::Number(n) => match unstructured_int(n) {
            Some(i) => format!("%!s(int64={i})"),
            None => format!("%!s(float64={})", go_float(n.as_f64().unwrap_or(0.0))),
        },
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_s).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            // fmt prints map keys sorted; serde_json's map is sorted already
            // unless preserve_order is on, so sort explicitly.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let entries: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_s(v)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

/// Whether a number survives sigs.k8s.io/yaml (Go's JSON encoding of a
/// float64 prints integral values below 1e21 without a fraction) and
/// apimachinery's `ParseInt` as an int64.
fn unstructured_int(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    // 2^63: the first float64 beyond int64.
    let limit = -(i64::MIN as f64);
    if f.fract() == 0.0 && f >= -limit && f < limit {
        Some(f as i64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    fn flat(texts: &[&str]) -> BTreeMap<String, String> {
        flatten_helm_values(&docs(texts)).unwrap()
    }

    fn pairs(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn touch(root: &Path, relative: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "a: b\n").unwrap();
    }

    // --- value files -------------------------------------------------------

    #[test]
    fn value_files_match_argo_testdata() {
        // reposerver/repository/testdata/values-files: Argo CD finds 5.
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "Chart.yaml",
            "caps-extn-values.YAML",
            "dir/values.yaml",
            "exclude.yaml",
            "has-the-word-values.yaml",
            "values.yaml",
            "values.yml",
        ] {
            touch(dir.path(), file);
        }
        assert_eq!(
            helm_value_files(dir.path()).unwrap(),
            [
                "caps-extn-values.YAML",
                "dir/values.yaml",
                "has-the-word-values.yaml",
                "values.yaml",
                "values.yml",
            ]
        );
    }

    #[test]
    fn value_files_dependency_chart() {
        // TestGetAppDetailsHelm (util/helm/testdata/dependency).
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "Chart.yaml",
            "requirements.yaml",
            "values.yaml",
            "values-production.yaml",
        ] {
            touch(dir.path(), file);
        }
        assert_eq!(
            helm_value_files(dir.path()).unwrap(),
            ["values-production.yaml", "values.yaml"]
        );
    }

    #[test]
    fn value_files_rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "VALUES.YAML",          // name check is case-sensitive
            "my-values.json",       // wrong extension
            "values",               // no extension
            "values-prod.yml",      // included
            "a/b/prod.values.YaMl", // nested, mixed-case extension
            "a/values.yaml",
            "a/values.yaml.bak",
            "b-values.yaml",
            "B/values.yaml", // uppercase sorts before lowercase
            "target/values.yaml",
        ] {
            touch(root, file);
        }
        // A directory whose name qualifies is listed (and walked).
        std::fs::create_dir_all(root.join("dir-values.yaml")).unwrap();
        touch(root, "dir-values.yaml/values.yml");
        // A symlinked directory is not walked, but the link itself is an
        // entry like any file.
        std::os::unix::fs::symlink(root.join("target"), root.join("linked")).unwrap();
        std::os::unix::fs::symlink(root.join("target"), root.join("link-values.yaml")).unwrap();
        assert_eq!(
            helm_value_files(root).unwrap(),
            [
                "B/values.yaml",
                "a/b/prod.values.YaMl",
                "a/values.yaml",
                "b-values.yaml",
                "dir-values.yaml",
                "dir-values.yaml/values.yml",
                "link-values.yaml",
                "target/values.yaml",
                "values-prod.yml",
            ]
        );
    }

    #[test]
    fn value_files_root_and_errors() {
        assert!(helm_value_files(Path::new("/obviously/does/not/exist")).is_err());

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(helm_value_files(&empty).unwrap().is_empty());

        // The root's own name is tested too.
        let named = dir.path().join("chart-values.yaml");
        touch(&named, "values.yaml");
        assert_eq!(helm_value_files(&named).unwrap(), [".", "values.yaml"]);

        // A root that is a symlink is not walked (Lstat).
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("empty"), &link).unwrap();
        touch(&empty, "values.yaml");
        assert!(helm_value_files(&link).unwrap().is_empty());
        assert_eq!(helm_value_files(&empty).unwrap(), ["values.yaml"]);
    }

    #[test]
    fn go_path_helpers() {
        assert_eq!(go_ext("a/b.c/values"), "");
        assert_eq!(go_ext("values.yaml"), ".yaml");
        assert_eq!(go_ext("dir.yaml/"), "");
        assert_eq!(go_base("/x/y/"), "y");
        assert_eq!(go_base("."), ".");
        assert_eq!(go_base("/"), "/");
    }

    // --- go_float ----------------------------------------------------------

    #[test]
    fn go_float_matches_percent_v() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (0.5, "0.5"),
            (0.1, "0.1"),
            (100000.0, "100000"),
            (999999.0, "999999"),
            (999999.5, "999999.5"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (100000000.0, "1e+08"),
            (123456789.0, "1.23456789e+08"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5e-300, "-2.5e-300"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            (2.71, "2.71"),
            (123456.7, "123456.7"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (value, expected) in cases {
            assert_eq!(go_float(*value), *expected, "{value:e}");
        }
        assert_eq!(go_float32(1.1), "1.1");
        assert_eq!(go_float32(16777217.0), "1.6777216e+07");
    }

    // --- flattening --------------------------------------------------------

    #[test]
    fn flat_vals_cases_from_argo() {
        // util/helm/helm_test.go Test_flatVals.
        assert_eq!(flat(&["foo:\n  bar: baz\n"]), pairs(&[("foo.bar", "baz")]));
        assert_eq!(
            flat(&["foo: [bar, baz]\n"]),
            pairs(&[("foo[0]", "bar"), ("foo[1]", "baz")])
        );
        assert_eq!(flat(&["foo: 1\n"]), pairs(&[("foo", "1")]));
    }

    #[test]
    fn later_documents_override() {
        // TestHelmGetParamsValueFiles: values-production.yaml overrides
        // cluster.slaveCount from values.yaml.
        let values = "cluster:\n  enabled: true\n  slaveCount: 1\nimage:\n  registry: docker.io\n  tag: 4.0.10-debian-9\n";
        let production = "cluster:\n  enabled: true\n  slaveCount: 3\n";
        assert_eq!(flat(&[values])["cluster.slaveCount"], "1");
        let both = flat(&[values, production]);
        assert_eq!(both["cluster.slaveCount"], "3");
        assert_eq!(both["cluster.enabled"], "true");
        assert_eq!(both["image.tag"], "4.0.10-debian-9");

        // Keys are overridden one by one: nothing is removed.
        let merged = flat(&[
            "a:\n  b: 1\nlist: [p, q, r]\nkeep: k\n",
            "a: 5\nlist: [s]\n",
        ]);
        assert_eq!(
            merged,
            pairs(&[
                ("a", "5"),
                ("a.b", "1"),
                ("keep", "k"),
                ("list[0]", "s"),
                ("list[1]", "q"),
                ("list[2]", "r"),
            ])
        );
    }

    #[test]
    fn nested_structures() {
        let out = flat(&[concat!(
            "top:\n",
            "  mid:\n",
            "    leaf: v\n",
            "servers:\n",
            "  - name: a\n",
            "    ports: [80, 443]\n",
            "  - name: b\n",
            "matrix:\n",
            "  - [1, 2]\n",
            "  - []\n",
            "  - [[x]]\n",
            "dotted.key:\n",
            "  inner: 1\n",
        )]);
        assert_eq!(
            out,
            pairs(&[
                ("dotted.key.inner", "1"),
                ("matrix[0][0]", "1"),
                ("matrix[0][1]", "2"),
                ("matrix[2][0][0]", "x"),
                ("servers[0].name", "a"),
                ("servers[0].ports[0]", "80"),
                ("servers[0].ports[1]", "443"),
                ("servers[1].name", "b"),
                ("top.mid.leaf", "v"),
            ])
        );
    }

    #[test]
    fn scalars_print_like_go() {
        let out = flat(&[concat!(
            "one: 1\n",
            "onePointZero: 1.0\n",
            "half: 0.5\n",
            "big: 1e21\n",
            "small: 1e-5\n",
            "nine: 123456789\n",
            "hundredMillion: 100000000\n",
            "huge: 12345678901234567890\n",
            "negative: -42\n",
            "octal: 0755\n",
            "hex: 0x1F\n",
            "yes: true\n",
            "no: false\n",
            "legacyYes: yes\n",
            "legacyOff: off\n",
            "nothing: null\n",
            "tilde: ~\n",
            "empty:\n",
            "emptyMap: {}\n",
            "emptyList: []\n",
            "quoted: \"1\"\n",
            "quotedFloat: '1.0'\n",
            "quotedBool: \"true\"\n",
            "text: hello world\n",
            "date: 2024-01-02\n",
            "version: 1.10\n",
        )]);
        assert_eq!(
            out,
            pairs(&[
                ("big", "1e+21"),
                ("date", "2024-01-02"),
                ("empty", "<nil>"),
                ("false", "false"),
                ("half", "0.5"),
                ("hex", "31"),
                ("huge", "1.2345678901234567e+19"),
                ("hundredMillion", "1e+08"),
                ("legacyOff", "false"),
                ("legacyYes", "true"),
                ("negative", "-42"),
                ("nine", "1.23456789e+08"),
                ("nothing", "<nil>"),
                ("octal", "493"),
                ("one", "1"),
                ("onePointZero", "1"),
                ("quoted", "1"),
                ("quotedBool", "true"),
                ("quotedFloat", "1.0"),
                ("small", "1e-05"),
                ("text", "hello world"),
                ("tilde", "<nil>"),
                ("true", "true"),
                ("version", "1.1"),
            ])
        );
    }

    #[test]
    fn non_string_keys() {
        let out = flat(&["1: a\n2.5: b\ntrue: c\nnested:\n  10: d\n  on: e\n"]);
        assert_eq!(
            out,
            pairs(&[
                ("1", "a"),
                ("2.5", "b"),
                ("nested.10", "d"),
                ("nested.true", "e"),
                ("true", "c"),
            ])
        );
        // goyaml v2 reads the YAML 1.1 booleans `y`/`n` too, keys included.
        assert_eq!(
            flat(&["point:\n  x: 1\n  y: 2\nflags: [y, n, Y]\n"]),
            pairs(&[
                ("flags[0]", "true"),
                ("flags[1]", "false"),
                ("flags[2]", "true"),
                ("point.true", "2"),
                ("point.x", "1"),
            ])
        );
        // A null key cannot become a JSON key.
        assert!(flatten_helm_values(&docs(&["~: a\n"])).is_err());
    }

    #[test]
    fn empty_and_null_documents() {
        assert!(flat(&[]).is_empty());
        assert!(flat(&["", "   \n", "# only a comment\n", "null\n", "~\n", "---\n"]).is_empty());
        assert_eq!(flat(&["", "a: 1\n", ""]), pairs(&[("a", "1")]));
    }

    #[test]
    fn only_first_yaml_document_is_read() {
        assert_eq!(flat(&["a: 1\n---\nb: 2\n"]), pairs(&[("a", "1")]));
        assert_eq!(flat(&["---\na: 1\n"]), pairs(&[("a", "1")]));
        assert_eq!(flat(&["# c\n---\na: 1\n---\n"]), pairs(&[("a", "1")]));
        assert_eq!(
            flat(&["%YAML 1.1\n---\na: 1\n...\nb: 2\n"]),
            pairs(&[("a", "1")])
        );
        assert_eq!(flat(&["--- {a: 1}\n--- {b: 2}\n"]), pairs(&[("a", "1")]));
        // A null first document is the whole result; later ones, even
        // broken ones, are never read.
        assert!(flat(&["null\n---\na: 1\n"]).is_empty());
        assert_eq!(flat(&["a: 1\n---\nb: [\n"]), pairs(&[("a", "1")]));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let out = flat(&["base: &b\n  u: 1\n  v: 2\nderived:\n  <<: *b\n  v: 3\n"]);
        assert_eq!(
            out,
            pairs(&[
                ("base.u", "1"),
                ("base.v", "2"),
                ("derived.u", "1"),
                ("derived.v", "3"),
            ])
        );
    }

    #[test]
    fn duplicate_keys_last_wins() {
        assert_eq!(flat(&["a:\n  u: 1\na:\n  v: 2\n"]), pairs(&[("a.v", "2")]));
    }

    #[test]
    fn invalid_documents_are_errors() {
        for (bad, kind) in [
            ("- a\n- b\n", "array"),
            ("just a string\n", "string"),
            ("42\n", "number"),
        ] {
            let err = flatten_helm_values(&docs(&["a: 1\n", bad])).unwrap_err();
            let Error::InvalidValues { document, message } = &err;
            assert_eq!(*document, 1);
            assert!(message.contains(kind), "{message}");
            assert!(err.to_string().starts_with("failed to parse values"));
        }
        let err = flatten_helm_values(&docs(&["a: [unclosed\n"])).unwrap_err();
        assert!(matches!(err, Error::InvalidValues { document: 0, .. }));
        // Infinite numbers cannot be encoded as JSON.
        let err = flatten_helm_values(&docs(&["a: .inf\n"])).unwrap_err();
        assert!(err.to_string().contains("+Inf"), "{err}");
    }

    // --- kustomize images --------------------------------------------------

    fn pod_spec(containers: Value) -> Value {
        json!({ "containers": containers })
    }

    #[test]
    fn images_from_argo_tests() {
        // TestGetAppDetailsKustomize (kustomization_yaml testdata).
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "nginx-deployment", "labels": { "app": "nginx" } },
            "spec": { "replicas": 3, "template": { "spec": pod_spec(json!([
                { "name": "nginx", "image": "nginx:1.15.4", "ports": [{ "containerPort": 80 }] }
            ]))}}
        });
        let statefulset = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "web" },
            "spec": {
                "template": { "spec": pod_spec(json!([
                    { "name": "nginx", "image": "registry.k8s.io/nginx-slim:0.8" }
                ]))},
                "volumeClaimTemplates": [{ "metadata": { "name": "www" }, "spec": { "accessModes": ["ReadWriteOnce"] } }]
            }
        });
        assert_eq!(
            kustomize_images(&[deployment, statefulset]),
            ["nginx:1.15.4", "registry.k8s.io/nginx-slim:0.8"]
        );

        // Test_getImageParameters_sorted.
        let a = json!({ "kind": "Deployment", "spec": { "template": { "spec":
            pod_spec(json!([{ "name": "nginx", "image": "nginx:1.15.6" }])) } } });
        let b = json!({ "kind": "Deployment", "spec": { "template": { "spec":
            pod_spec(json!([{ "name": "nginx", "image": "nginx:1.15.5" }])) } } });
        assert_eq!(kustomize_images(&[a, b]), ["nginx:1.15.5", "nginx:1.15.6"]);
    }

    #[test]
    fn images_from_workload_kinds() {
        let template = |image: &str, init: &str| {
            json!({ "spec": {
                "initContainers": [{ "name": "init", "image": init }],
                "containers": [{ "name": "main", "image": image }]
            }})
        };
        let objects = [
            json!({ "kind": "Deployment", "spec": { "template": template("deploy:1", "init:1") } }),
            json!({ "kind": "StatefulSet", "spec": { "template": template("sts:1", "init:1") } }),
            json!({ "kind": "DaemonSet", "spec": { "template": template("ds:1", "init:2") } }),
            json!({ "kind": "Job", "spec": { "template": template("job:1", "init:3") } }),
            json!({ "kind": "CronJob", "spec": { "jobTemplate": { "spec": {
                "template": template("cron:1", "init:4") } } } }),
            json!({ "kind": "Pod", "spec": {
                "containers": [{ "name": "a", "image": "pod:1" }, { "name": "b", "image": "deploy:1" }],
                "ephemeralContainers": [{ "name": "debug", "image": "busybox:ephemeral" }]
            }}),
            json!({ "kind": "ConfigMap", "data": { "image": "not-an-image" } }),
            json!({ "kind": "Custom", "spec": { "workers": [
                { "template": { "containers": [{ "image": "custom:1" }] } }
            ]}}),
            json!("not an object"),
        ];
        // Sorted bytewise; duplicates (deploy:1, init:1) are kept as Argo CD
        // keeps them; ephemeral containers are not reported.
        assert_eq!(
            kustomize_images(&objects),
            [
                "cron:1", "custom:1", "deploy:1", "deploy:1", "ds:1", "init:1", "init:1", "init:2",
                "init:3", "init:4", "job:1", "pod:1", "sts:1",
            ]
        );
    }

    #[test]
    fn images_edge_cases() {
        // Containers without an image, non-map entries, and a containers
        // map (not a list), which is searched like any map.
        let object = json!({ "spec": {
            "containers": [{ "name": "no-image" }, "string-entry", { "image": "a:1",
                "containers": [{ "image": "not-searched-inside-a-container" }] }],
            "nested": { "containers": { "inner": { "containers": [{ "image": "b:1" }] } } }
        }});
        assert_eq!(kustomize_images(&[object]), ["a:1", "b:1"]);

        // Non-string images print as Go's %s does.
        let odd = json!({ "containers": [
            { "image": null }, { "image": 7 }, { "image": 1.5 }, { "image": true }
        ]});
        assert_eq!(
            kustomize_images(&[odd]),
            [
                "%!s(<nil>)",
                "%!s(bool=true)",
                "%!s(float64=1.5)",
                "%!s(int64=7)",
            ]
        );
        assert!(kustomize_images(&[]).is_empty());
    }
}
