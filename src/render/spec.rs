//! What an Application asks to render: the source spec in domain types,
//! with Argo CD's JSON field names so that parameter-override files
//! (`.argocd-source.yaml`, `.argocd-source-<app>.yaml`) merge into it the
//! way they merge into Argo CD's `ApplicationSource` (a JSON merge patch).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, SourceType};

fn is_false(value: &bool) -> bool {
    !*value
}

/// `ApplicationSource`, minus what only the controller uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SourceSpec {
    #[serde(rename = "repoURL", skip_serializing_if = "String::is_empty")]
    pub repo_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target_revision: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub chart: String,
    #[serde(rename = "ref", skip_serializing_if = "String::is_empty")]
    pub ref_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectorySpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSpec>,
    /// Git tags considered for a semver `targetRevision` start with this
    /// (stripped to compare).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag_prefix: String,
}

/// `ApplicationSourcePlugin`: which config management plugin renders the
/// app (empty: discovery), its environment and parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PluginSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<PluginEnv>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<PluginParameter>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginEnv {
    pub name: String,
    pub value: String,
}

/// One plugin parameter: a string, a map or an array (presence matters:
/// a parameter may be an empty map).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginParameter {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HelmParameter {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(skip_serializing_if = "is_false")]
    pub force_string: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HelmFileParameter {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HelmSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub value_files: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<HelmParameter>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub release_name: String,
    /// Inline values as YAML text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub values: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub file_parameters: Vec<HelmFileParameter>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "is_false")]
    pub pass_credentials: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_missing_value_files: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub skip_crds: bool,
    /// Inline values as an object; wins over `values` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_object: Option<Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kube_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub skip_tests: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub skip_schema_validation: bool,
}

impl HelmSpec {
    /// The inline values as YAML (JSON is YAML), `valuesObject` first.
    pub fn values_yaml(&self) -> String {
        match &self.values_object {
            Some(Value::Null) | None => self.values.clone(),
            Some(object) => serde_json::to_string(object).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KustomizeReplica {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// An int or a string holding one (Kubernetes' IntOrString).
    pub count: Value,
}

impl KustomizeReplica {
    pub fn int_count(&self) -> Result<i64, Error> {
        match &self.count {
            Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
            Value::String(s) => s.trim().parse().map_err(|_| Error::InvalidSpec {
                message: format!("expected integer value for count. Received: {s}"),
            }),
            other => Err(Error::InvalidSpec {
                message: format!("expected integer value for count. Received: {other}"),
            }),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KustomizeSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name_prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name_suffix: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub common_labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_false")]
    pub force_common_labels: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub force_common_annotations: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "is_false")]
    pub common_annotations_envsubst: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<KustomizeReplica>,
    /// Kustomize patches, as objects in kustomization.yaml form.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub label_without_selector: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kube_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_missing_components: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub label_include_templates: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JsonnetVar {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(skip_serializing_if = "is_false")]
    pub code: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JsonnetSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ext_vars: Vec<JsonnetVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tlas: Vec<JsonnetVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DirectorySpec {
    #[serde(skip_serializing_if = "is_false")]
    pub recurse: bool,
    #[serde(skip_serializing_if = "JsonnetSpec::is_empty")]
    pub jsonnet: JsonnetSpec,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exclude: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub include: String,
    #[serde(skip_serializing_if = "is_false")]
    pub disable_extension_filter: bool,
}

impl JsonnetSpec {
    fn is_empty(&self) -> bool {
        self.ext_vars.is_empty() && self.tlas.is_empty() && self.libs.is_empty()
    }
}

impl SourceSpec {
    /// The source types set explicitly, in the order Argo CD lists them.
    pub fn explicit_types(&self) -> Vec<SourceType> {
        let mut types = Vec::new();
        if self.kustomize.is_some() {
            types.push(SourceType::Kustomize);
        }
        if self.helm.is_some() {
            types.push(SourceType::Helm);
        }
        if self.directory.is_some() {
            types.push(SourceType::Directory);
        }
        if self.plugin.is_some() {
            types.push(SourceType::Plugin);
        }
        types
    }

    /// Helm's, then Kustomize's namespace, else `default`.
    pub fn namespace_or<'a>(&'a self, default: &'a str) -> &'a str {
        if let Some(helm) = self.helm.as_ref().filter(|h| !h.namespace.is_empty()) {
            return &helm.namespace;
        }
        if let Some(k) = self.kustomize.as_ref().filter(|k| !k.namespace.is_empty()) {
            return &k.namespace;
        }
        default
    }

    /// Helm's, then Kustomize's kube version, else `default`.
    pub fn kube_version_or<'a>(&'a self, default: &'a str) -> &'a str {
        if let Some(helm) = self.helm.as_ref().filter(|h| !h.kube_version.is_empty()) {
            return &helm.kube_version;
        }
        if let Some(k) = self
            .kustomize
            .as_ref()
            .filter(|k| !k.kube_version.is_empty())
        {
            return &k.kube_version;
        }
        default
    }

    /// Helm's, then Kustomize's API versions, else `default`.
    pub fn api_versions_or<'a>(&'a self, default: &'a [String]) -> &'a [String] {
        if let Some(helm) = self.helm.as_ref().filter(|h| !h.api_versions.is_empty()) {
            return &helm.api_versions;
        }
        if let Some(k) = self
            .kustomize
            .as_ref()
            .filter(|k| !k.api_versions.is_empty())
        {
            return &k.api_versions;
        }
        default
    }

    /// Merges the parameter-override files found in `app_dir` into this
    /// source, as Argo CD does: `.argocd-source.yaml`, then
    /// `.argocd-source-<app_name>.yaml`, each a JSON merge patch over the
    /// source; `chart`, `path`, `repoURL` and `targetRevision` keep their
    /// original values. Returns the override files that were applied.
    pub fn merge_override_files(
        &mut self,
        app_dir: &Path,
        repo_root: &Path,
        app_name: &str,
    ) -> Result<Vec<String>, Error> {
        let mut names = vec![".argocd-source.yaml".to_string()];
        // Application names are Kubernetes names: never a path.
        if !app_name.is_empty() && !app_name.contains('/') && app_name != ".." {
            names.push(format!(".argocd-source-{app_name}.yaml"));
        }
        let mut applied = Vec::new();
        let mut merged: Option<Value> = None;
        for name in names {
            let path = app_dir.join(&name);
            // A directory of that name is ignored, as is a missing file.
            let Ok(metadata) = std::fs::metadata(&path) else {
                continue;
            };
            if metadata.is_dir() {
                continue;
            }
            let bad = |message: String| Error::InvalidSpec {
                message: format!("error while parsing source parameters: {name}: {message}"),
            };
            // Only a regular file inside the repository, of sane size: a
            // link elsewhere must not become an error message.
            let real = path
                .canonicalize()
                .map_err(|err| bad(err.kind().to_string()))?;
            if !real.starts_with(repo_root) {
                return Err(bad("resolves outside the repository".to_string()));
            }
            let metadata = std::fs::metadata(&real).map_err(|err| bad(err.kind().to_string()))?;
            if !metadata.is_file() {
                return Err(bad("not a regular file".to_string()));
            }
            if metadata.len() > MAX_OVERRIDE_FILE_BYTES {
                return Err(bad(format!("larger than {MAX_OVERRIDE_FILE_BYTES} bytes")));
            }
            let text = std::fs::read_to_string(&real).map_err(|err| bad(err.to_string()))?;
            let patch: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_saphyr::from_str(&text).map_err(|err| bad(err.to_string()))?
            };
            let base = merged.get_or_insert_with(|| {
                serde_json::to_value(&*self).expect("a source serializes to JSON")
            });
            merge_patch(base, &patch);
            applied.push(name);
        }
        if let Some(merged) = merged {
            let mut source: SourceSpec =
                serde_json::from_value(merged).map_err(|err| Error::InvalidSpec {
                    message: format!("error while parsing source parameters: {err}"),
                })?;
            source.chart = std::mem::take(&mut self.chart);
            source.path = std::mem::take(&mut self.path);
            source.repo_url = std::mem::take(&mut self.repo_url);
            source.target_revision = std::mem::take(&mut self.target_revision);
            *self = source;
        }
        Ok(applied)
    }
}

/// The largest parameter-override file read.
const MAX_OVERRIDE_FILE_BYTES: u64 = 1 << 20;

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(target) = target else {
        unreachable!("target was made an object")
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn override_files_merge_like_a_json_merge_patch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".argocd-source.yaml"),
            "helm:\n  parameters:\n  - name: a\n    value: '1'\n  releaseName: shared\npath: elsewhere\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".argocd-source-app.yaml"),
            "helm:\n  releaseName: mine\n  valueFiles: [prod.yaml]\nunknownField: 1\n",
        )
        .unwrap();
        let mut source = SourceSpec {
            path: "apps/x".into(),
            repo_url: "https://example.com/r.git".into(),
            helm: Some(HelmSpec {
                value_files: vec!["base.yaml".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let applied = source
            .merge_override_files(dir.path(), dir.path(), "app")
            .unwrap();
        assert_eq!(
            applied,
            vec![".argocd-source.yaml", ".argocd-source-app.yaml"]
        );
        let helm = source.helm.as_ref().unwrap();
        assert_eq!(helm.release_name, "mine");
        assert_eq!(helm.value_files, vec!["prod.yaml"]);
        assert_eq!(helm.parameters[0].value, "1");
        assert_eq!(source.path, "apps/x");
        assert_eq!(source.repo_url, "https://example.com/r.git");

        // `null` removes; a directory with the file's name is ignored.
        std::fs::write(dir.path().join(".argocd-source.yaml"), "helm: null\n").unwrap();
        std::fs::remove_file(dir.path().join(".argocd-source-app.yaml")).unwrap();
        std::fs::create_dir(dir.path().join(".argocd-source-app.yaml")).unwrap();
        source
            .merge_override_files(dir.path(), dir.path(), "app")
            .unwrap();
        assert!(source.helm.is_none());

        std::fs::write(dir.path().join(".argocd-source.yaml"), "helm: [1").unwrap();
        let err = source
            .merge_override_files(dir.path(), dir.path(), "app")
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("error while parsing source parameters: .argocd-source.yaml: "));
    }

    #[test]
    fn replica_counts_accept_ints_and_numeric_strings() {
        let replica = |count| KustomizeReplica {
            name: "x".into(),
            count,
        };
        assert_eq!(replica(json!(3)).int_count().unwrap(), 3);
        assert_eq!(replica(json!("4")).int_count().unwrap(), 4);
        assert_eq!(
            replica(json!("four")).int_count().unwrap_err().to_string(),
            "expected integer value for count. Received: four"
        );
    }
}
