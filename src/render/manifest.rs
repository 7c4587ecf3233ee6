//! Manifests: splitting YAML/JSON streams into objects, flattening lists,
//! applying Argo CD's resource-tracking metadata, and encoding objects as
//! Go's `encoding/json` does (sorted keys, HTML-safe escapes, Go number
//! formatting), since the controller compares these strings.

use serde_json::{Map, Value};

use super::Error;
use crate::domain::{Tracking, TrackingMethod};

/// A Kubernetes object as parsed.
pub type Object = Map<String, Value>;

const ANNOTATION_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
const ANNOTATION_INSTALLATION_ID: &str = "argocd.argoproj.io/installation-id";
/// Argo CD's legacy label key; only with it are pod templates labelled too.
const LABEL_LEGACY_APP_NAME: &str = "applications.argoproj.io/app-name";
const LABEL_MAX_LENGTH: usize = 63;

/// The result of splitting one file: the objects read before the first
/// failure, and that failure.
#[derive(Debug, Default)]
pub struct Documents {
    pub objects: Vec<Object>,
    pub error: Option<String>,
}

/// Splits a YAML (or, when it starts with `{`, a JSON) stream into objects
/// the way Kubernetes' YAML-or-JSON decoder does: documents are separated
/// by lines starting with `---`; empty and `null` documents are skipped;
/// every other document must be an object with a non-empty `kind`.
pub fn split_documents(text: &str) -> Documents {
    let mut out = Documents::default();
    if text.trim_start().starts_with('{') {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for value in stream {
            match value.map_err(|e| e.to_string()).and_then(into_object) {
                Ok(Some(object)) => out.objects.push(object),
                Ok(None) => {}
                Err(message) => {
                    out.error = Some(message);
                    break;
                }
            }
        }
        return out;
    }
    for document in yaml_documents(text) {
        let parsed = match document {
            Ok(document) => parse_yaml_document(document),
            Err(message) => Err(message),
        };
        match parsed.and_then(into_object) {
            Ok(Some(object)) => out.objects.push(object),
            Ok(None) => {}
            Err(message) => {
                out.error = Some(message);
                break;
            }
        }
    }
    out
}

/// The documents of a YAML stream, split at `---` lines. A separator line
/// may carry only a comment after the dashes.
fn yaml_documents(text: &str) -> impl Iterator<Item = Result<&str, String>> {
    let mut rest = Some(text);
    std::iter::from_fn(move || loop {
        let remaining = rest?;
        let mut offset = 0;
        let mut document_end = None;
        for line in remaining.split_inclusive('\n') {
            if let Some(after) = line.strip_prefix("---") {
                let trimmed = after.trim();
                if !trimmed.is_empty() && !trimmed.starts_with('#') {
                    rest = None;
                    return Some(Err(format!("invalid Yaml document separator: {trimmed}")));
                }
                document_end = Some((offset, offset + line.len()));
                break;
            }
            offset += line.len();
        }
        match document_end {
            Some((end, next)) => {
                rest = Some(&remaining[next..]);
                if end > 0 {
                    return Some(Ok(&remaining[..end]));
                }
            }
            None => {
                rest = None;
                return Some(Ok(remaining));
            }
        }
    })
}

fn has_content(document: &str) -> bool {
    document.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    })
}

fn parse_yaml_document(document: &str) -> Result<Value, String> {
    if !has_content(document) {
        return Ok(Value::Null);
    }
    let options = serde_saphyr::options! {
        // Kubernetes' YAML (goyaml v2) reads 0755 as octal.
        legacy_octal_numbers: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    };
    serde_saphyr::from_str_with_options::<Value>(document, options).map_err(|err| err.to_string())
}

/// `null` is skipped; anything else must be an object with a `kind`.
fn into_object(value: Value) -> Result<Option<Object>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Object(object) => match object.get("kind") {
            Some(Value::String(kind)) if !kind.is_empty() => Ok(Some(object)),
            _ => Err("Object 'Kind' is missing".to_string()),
        },
        other => Err(format!(
            "cannot unmarshal {} into an object",
            json_type_name(&other)
        )),
    }
}

pub(super) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Expands lists (any object whose `items` is an array) into their items,
/// drops `items: null` lists, applies tracking metadata (except to CRDs)
/// and encodes each object as JSON. `origin` names the source in errors.
pub fn finalize(
    objects: Vec<Object>,
    tracking: Option<&Tracking>,
    origin: &str,
) -> Result<Vec<String>, Error> {
    let mut manifests = Vec::with_capacity(objects.len());
    for object in objects {
        let targets: Vec<Object> = match object.get("items") {
            Some(Value::Array(_)) => {
                let mut object = object;
                let Some(Value::Array(items)) = object.remove("items") else {
                    unreachable!("items was checked to be an array")
                };
                items
                    .into_iter()
                    .map(|item| match item {
                        Value::Object(object) => Ok(object),
                        _ => Err(Error::ListItemNotObject {
                            file: origin.to_string(),
                        }),
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(Value::Null) if !object.contains_key("spec") && !object.contains_key("status") => {
                Vec::new()
            }
            _ => vec![object],
        };
        for mut target in targets {
            if let Some(tracking) = tracking {
                if !tracking.app_label_key.is_empty()
                    && !tracking.app_name.is_empty()
                    && !is_crd(&target)
                {
                    apply_tracking(&mut target, tracking)?;
                }
            }
            manifests.push(to_go_json(&Value::Object(target)));
        }
    }
    Ok(manifests)
}

fn str_field<'a>(object: &'a Object, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

fn api_group(object: &Object) -> &str {
    match str_field(object, "apiVersion").rsplit_once('/') {
        Some((group, _version)) => group,
        None => "",
    }
}

fn is_crd(object: &Object) -> bool {
    str_field(object, "kind") == "CustomResourceDefinition"
        && api_group(object) == "apiextensions.k8s.io"
}

/// Writes Argo CD's tracking label and/or annotation, exactly as its
/// repo-server does.
pub fn apply_tracking(object: &mut Object, tracking: &Tracking) -> Result<(), Error> {
    let set_annotations = |object: &mut Object| -> Result<(), Error> {
        let metadata = object.get("metadata").and_then(Value::as_object);
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(&tracking.namespace)
            .to_string();
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let tracking_id = format!(
            "{}:{}/{}:{}/{}",
            tracking.app_name,
            api_group(object),
            str_field(object, "kind"),
            namespace,
            name
        );
        let annotations = string_map(object, "annotations")?;
        if tracking.installation_id.is_empty() {
            annotations.remove(ANNOTATION_INSTALLATION_ID);
        } else {
            annotations.insert(
                ANNOTATION_INSTALLATION_ID.to_string(),
                Value::String(tracking.installation_id.clone()),
            );
        }
        annotations.insert(
            ANNOTATION_TRACKING_ID.to_string(),
            Value::String(tracking_id),
        );
        Ok(())
    };
    match tracking.method {
        TrackingMethod::Label => set_label(object, &tracking.app_label_key, &tracking.app_name),
        TrackingMethod::Annotation => set_annotations(object),
        TrackingMethod::AnnotationAndLabel => {
            set_annotations(object)?;
            let value = truncate_label(&tracking.app_name)?;
            set_label(object, &tracking.app_label_key, &value)
        }
    }
}

/// Truncates a label value to 63 bytes, then trims until it ends in an
/// ASCII letter or digit.
fn truncate_label(value: &str) -> Result<String, Error> {
    if value.len() <= LABEL_MAX_LENGTH {
        return Ok(value.to_string());
    }
    let mut bytes = &value.as_bytes()[..LABEL_MAX_LENGTH];
    while !bytes.last().is_some_and(u8::is_ascii_alphanumeric) {
        if bytes.len() <= 1 {
            return Err(Error::InvalidMetadata {
                message: "unable to truncate label to not end with a special character".to_string(),
            });
        }
        bytes = &bytes[..bytes.len() - 1];
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn set_label(object: &mut Object, key: &str, value: &str) -> Result<(), Error> {
    string_map(object, "labels")?.insert(key.to_string(), Value::String(value.to_string()));
    if key != LABEL_LEGACY_APP_NAME {
        return Ok(());
    }
    // With the legacy key, Argo CD also labels the pod templates of
    // workloads (and, for old API versions without a selector, pins the
    // selector so the label does not leak into it).
    let group = api_group(object).to_string();
    let kind = str_field(object, "kind").to_string();
    let api_version = str_field(object, "apiVersion").to_string();
    let workload = matches!(group.as_str(), "apps" | "extensions")
        && matches!(
            kind.as_str(),
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        );
    let job = group == "batch" && kind == "Job";
    if !workload && !job {
        return Ok(());
    }
    let template_labels = nested_object(object, &["spec", "template", "metadata", "labels"]);
    let mut selector_labels = template_labels.clone();
    template_labels.insert(key.to_string(), Value::String(value.to_string()));
    if workload && matches!(api_version.as_str(), "apps/v1beta1" | "extensions/v1beta1") {
        let selector_empty = object
            .get("spec")
            .and_then(|s| s.get("selector"))
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
        if selector_empty {
            selector_labels.remove(key);
            *nested_object(object, &["spec", "selector", "matchLabels"]) = selector_labels;
        }
    }
    Ok(())
}

/// `metadata.<field>` as a mutable map, created when absent or null.
/// Non-string values are refused, as Kubernetes does.
fn string_map<'a>(object: &'a mut Object, field: &str) -> Result<&'a mut Object, Error> {
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if metadata.is_null() {
        *metadata = Value::Object(Map::new());
    }
    let Value::Object(metadata) = metadata else {
        return Err(Error::InvalidMetadata {
            message: "metadata is not an object".to_string(),
        });
    };
    let map = metadata
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if map.is_null() {
        *map = Value::Object(Map::new());
    }
    match map {
        Value::Object(map) => {
            if let Some((key, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(Error::InvalidMetadata {
                    message: format!(".metadata.{field} accessor error: contains non-string value in the map under key {key:?}"),
                });
            }
            Ok(map)
        }
        _ => Err(Error::InvalidMetadata {
            message: format!("metadata.{field} is not a map"),
        }),
    }
}

/// The object at `path`, replacing anything that is not an object.
fn nested_object<'a>(object: &'a mut Object, path: &[&str]) -> &'a mut Object {
    let mut current = object;
    for key in path {
        let slot = current
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        current = slot.as_object_mut().expect("slot was just made an object");
    }
    current
}

/// Encodes `value` as Go's `encoding/json` would: object keys sorted by
/// bytes, `<`, `>`, `&`, U+2028 and U+2029 escaped, integral floats
/// without a fraction, exponents as `1e+21` / `1e-7`.
pub fn to_go_json(value: &Value) -> String {
    let mut out = String::new();
    write_go_json(value, &mut out);
    out
}

fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&go_float(n.as_f64().unwrap_or(0.0)));
            }
        }
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(key, out);
                out.push(':');
                write_go_json(&map[key], out);
            }
            out.push('}');
        }
    }
}

fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        // Rust's shortest round-trip form, like Go's 'f' with precision -1.
        format!("{f}")
    } else {
        let text = format!("{f:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => {
                format!("{mantissa}e+{exponent}")
            }
            _ => text,
        }
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tracking(method: TrackingMethod) -> Tracking {
        Tracking {
            method,
            app_label_key: "app.kubernetes.io/instance".into(),
            app_name: "guestbook".into(),
            namespace: "default".into(),
            installation_id: String::new(),
        }
    }

    fn object(value: Value) -> Object {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn splits_multi_document_yaml() {
        let docs = split_documents(
            "# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---   # just a comment\nnull\n---\nkind: Secret\nmetadata:\n  name: b\ndata:\n  mode: 0755\n  flag: yes\n",
        );
        assert!(docs.error.is_none(), "{:?}", docs.error);
        assert_eq!(docs.objects.len(), 2);
        assert_eq!(docs.objects[1]["data"]["mode"], json!(493));
        assert_eq!(docs.objects[1]["data"]["flag"], json!(true));
    }

    #[test]
    fn reports_first_failure_with_objects_read_so_far() {
        let docs = split_documents("kind: A\n---\nfoo: [unclosed\n---\nkind: B\n");
        assert_eq!(docs.objects.len(), 1);
        assert!(docs.error.is_some());
        let docs = split_documents("name: not-a-resource\n");
        assert_eq!(docs.error.as_deref(), Some("Object 'Kind' is missing"));
        let docs = split_documents("--- !tag\nkind: A\n");
        assert!(docs.error.unwrap().contains("separator"));
    }

    #[test]
    fn reads_json_streams() {
        let docs = split_documents("{\"kind\":\"A\",\"x\":1.0}\n{\"kind\":\"B\"}");
        assert_eq!(docs.objects.len(), 2);
        assert_eq!(
            to_go_json(&Value::Object(docs.objects[0].clone())),
            r#"{"kind":"A","x":1}"#
        );
    }

    #[test]
    fn encodes_like_go() {
        let value = json!({"b": "<a&b>\u{2028}", "a": [1.5, 1e21, 1e-7, 0.000001, -0.0, 12345678.0], "c": "\u{1}\n"});
        assert_eq!(
            to_go_json(&value),
            r#"{"a":[1.5,1e+21,1e-7,0.000001,-0,12345678],"b":"\u003ca\u0026b\u003e\u2028","c":"\u0001\n"}"#
        );
    }

    #[test]
    fn flattens_lists_and_drops_null_lists() {
        let list = object(json!({"kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]}));
        let null_list = object(json!({"kind": "ConfigMapList", "items": null}));
        let out = finalize(vec![list, null_list], None, "x").unwrap();
        assert_eq!(out, vec![r#"{"kind":"A"}"#, r#"{"kind":"B"}"#]);
        let bad = object(json!({"kind": "List", "items": [1]}));
        assert!(matches!(
            finalize(vec![bad], None, "x"),
            Err(Error::ListItemNotObject { .. })
        ));
    }

    #[test]
    fn annotation_tracking_uses_request_namespace_as_default() {
        let mut svc =
            object(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ui"}}));
        let mut t = tracking(TrackingMethod::Annotation);
        t.installation_id = "inst".into();
        apply_tracking(&mut svc, &t).unwrap();
        assert_eq!(
            svc["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
            json!("guestbook:/Service:default/ui")
        );
        assert_eq!(
            svc["metadata"]["annotations"]["argocd.argoproj.io/installation-id"],
            json!("inst")
        );
        assert!(svc["metadata"].get("labels").is_none());

        let mut dep = object(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "prod", "annotations": {"argocd.argoproj.io/installation-id": "old"}}}),
        );
        apply_tracking(&mut dep, &tracking(TrackingMethod::Annotation)).unwrap();
        assert_eq!(
            dep["metadata"]["annotations"],
            json!({"argocd.argoproj.io/tracking-id": "guestbook:apps/Deployment:prod/d"})
        );
    }

    #[test]
    fn label_tracking_and_truncation() {
        let mut cm = object(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": null}}),
        );
        let mut t = tracking(TrackingMethod::Label);
        t.app_name = "x".repeat(70);
        apply_tracking(&mut cm, &t).unwrap();
        assert_eq!(
            cm["metadata"]["labels"]["app.kubernetes.io/instance"]
                .as_str()
                .unwrap()
                .len(),
            70
        );

        let mut cm =
            object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
        let mut t = tracking(TrackingMethod::AnnotationAndLabel);
        t.app_name = format!("{}-{}", "a".repeat(62), "b");
        apply_tracking(&mut cm, &t).unwrap();
        assert_eq!(
            cm["metadata"]["labels"]["app.kubernetes.io/instance"],
            json!("a".repeat(62))
        );
        assert!(cm["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"].is_string());
    }

    #[test]
    fn crds_are_not_tracked_and_bad_labels_are_refused() {
        let crd = object(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"}}),
        );
        let out = finalize(vec![crd], Some(&tracking(TrackingMethod::Label)), "f").unwrap();
        assert!(!out[0].contains("instance"));
        let bad = object(json!({"kind": "ConfigMap", "metadata": {"labels": {"a": 1}}}));
        assert!(finalize(vec![bad], Some(&tracking(TrackingMethod::Label)), "f").is_err());
    }

    #[test]
    fn legacy_label_key_labels_pod_templates() {
        let mut dep = object(
            json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}}),
        );
        let mut t = tracking(TrackingMethod::Label);
        t.app_label_key = LABEL_LEGACY_APP_NAME.into();
        apply_tracking(&mut dep, &t).unwrap();
        assert_eq!(
            dep["spec"]["template"]["metadata"]["labels"][LABEL_LEGACY_APP_NAME],
            json!("guestbook")
        );
        assert_eq!(dep["spec"]["selector"]["matchLabels"], json!({"app": "x"}));
    }
}
