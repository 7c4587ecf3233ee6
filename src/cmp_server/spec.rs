//! The plugin's spec: Argo CD's `ConfigManagementPlugin` file
//! (`apiVersion: argoproj.io/v1alpha1`, `kind: ConfigManagementPlugin`),
//! read once at start-up.
//!
//! Missing and `null` fields take their zero value and unknown fields are
//! ignored, as Go's decoder does. Validation is Argo CD's (a name, the kind,
//! a generate command) plus one check of ours: the name must be usable as a
//! socket file name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::grpc::proto::repository::ParameterAnnouncement;

/// The only `kind` accepted.
pub const KIND: &str = "ConfigManagementPlugin";

/// A parsed plugin file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub api_version: String,
    #[serde(default, deserialize_with = "null_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: PluginSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// Appended to the socket name (`<name>-<version>.sock`) when set.
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
    /// Runs before `generate`, in the app directory; its output is ignored.
    #[serde(default, deserialize_with = "null_default")]
    pub init: Command,
    /// Prints the manifests (YAML or JSON documents) on stdout.
    #[serde(default, deserialize_with = "null_default")]
    pub generate: Command,
    #[serde(default, deserialize_with = "null_default")]
    pub discover: Discover,
    #[serde(default, deserialize_with = "null_default")]
    pub parameters: Parameters,
    /// Keep the executable bit of archived files (otherwise every file is
    /// extracted without it, as Argo CD does).
    #[serde(default, deserialize_with = "null_default")]
    pub preserve_file_mode: bool,
    /// Ask the repo-server to add the repository's git credentials to the
    /// environment.
    #[serde(default, deserialize_with = "null_default")]
    pub provide_git_creds: bool,
}

/// A program (`command`: the program and its first arguments) and more
/// arguments (`args`), run without a shell.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Command {
    #[serde(default, deserialize_with = "null_default")]
    pub command: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
}

impl Command {
    pub fn is_set(&self) -> bool {
        !self.command.is_empty()
    }

    /// The program and every argument, as run.
    pub fn argv(&self) -> impl Iterator<Item = &String> {
        self.command.iter().chain(self.args.iter())
    }

    /// The command line as shown in logs and errors.
    pub fn shown(&self) -> String {
        self.argv()
            .map(|arg| {
                if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("{arg:?}")
                } else {
                    arg.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How the plugin claims apps when the Application does not name it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Discover {
    #[serde(default, deserialize_with = "null_default")]
    pub find: Find,
    /// A `filepath.Glob` pattern, relative to the app directory.
    #[serde(default, deserialize_with = "null_default")]
    pub file_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Find {
    /// A command run in the app directory: any output claims the app.
    #[serde(default, deserialize_with = "null_default")]
    pub command: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    /// A zglob pattern (`*`, and `**/` for any directories), relative to
    /// the app directory.
    #[serde(default, deserialize_with = "null_default")]
    pub glob: String,
}

impl Find {
    pub fn as_command(&self) -> Command {
        Command {
            command: self.command.clone(),
            args: self.args.clone(),
        }
    }
}

impl Discover {
    /// Argo CD's `IsDefined`: any of the three rules is set.
    pub fn is_configured(&self) -> bool {
        !self.file_name.is_empty() || !self.find.glob.is_empty() || !self.find.command.is_empty()
    }
}

/// The parameters the plugin offers (shown in Argo CD's UI).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Parameters {
    #[serde(rename = "static", default, deserialize_with = "null_default")]
    pub static_announcements: Vec<Announcement>,
    /// Prints a JSON array of announcements; they come before the static
    /// ones in the answer.
    #[serde(default, deserialize_with = "null_default")]
    pub dynamic: Command,
}

/// One parameter announcement, with Argo CD's JSON names (used both in the
/// spec and in the output of the dynamic command).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub title: String,
    #[serde(default, deserialize_with = "null_default")]
    pub tooltip: String,
    #[serde(default, deserialize_with = "null_default")]
    pub required: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub item_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub collection_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub string: String,
    #[serde(default, deserialize_with = "null_default")]
    pub array: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub map: BTreeMap<String, String>,
}

impl From<Announcement> for ParameterAnnouncement {
    fn from(a: Announcement) -> Self {
        ParameterAnnouncement {
            name: a.name,
            title: a.title,
            tooltip: a.tooltip,
            required: a.required,
            item_type: a.item_type,
            collection_type: a.collection_type,
            string_value: a.string,
            array_value: a.array,
            map_value: a.map.into_iter().collect(),
        }
    }
}

/// `null` (or `~`, or an empty value) reads as the type's zero value.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl PluginConfig {
    /// Parses and validates a spec.
    pub fn parse(text: &str) -> Result<PluginConfig, String> {
        let config: PluginConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the spec at `path`.
    pub fn load(path: &Path) -> anyhow::Result<PluginConfig> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!(
                "cannot read the plugin configuration {}: {err}",
                path.display()
            )
        })?;
        PluginConfig::parse(&text).map_err(|message| {
            anyhow::anyhow!("invalid plugin configuration {}: {message}", path.display())
        })
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.metadata.name;
        if name.is_empty() {
            return Err("metadata.name must not be empty".to_string());
        }
        if self.kind != KIND {
            return Err(format!("kind must be {KIND}, found {:?}", self.kind));
        }
        if !self.spec.generate.is_set() {
            return Err("spec.generate.command must not be empty".to_string());
        }
        let file_name = self.socket_file_name();
        if name.contains('/')
            || self.spec.version.contains('/')
            || name.contains('\0')
            || self.spec.version.contains('\0')
            || name == "."
            || name == ".."
        {
            return Err(format!(
                "metadata.name and spec.version must make a file name; {file_name:?} does not"
            ));
        }
        Ok(())
    }

    /// The name the repo-server knows the plugin by: `<name>` or
    /// `<name>-<version>`.
    pub fn full_name(&self) -> String {
        if self.spec.version.is_empty() {
            self.metadata.name.clone()
        } else {
            format!("{}-{}", self.metadata.name, self.spec.version)
        }
    }

    /// `<name>.sock`, or `<name>-<version>.sock` when a version is set.
    pub fn socket_file_name(&self) -> String {
        format!("{}.sock", self.full_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata:
  name: demo
spec:
  version: v1.2
  init:
    command: [sh, -c]
    args: ["echo init"]
  generate:
    command: [sh, -c, "cat *.yaml"]
  discover:
    fileName: "*.demo.yaml"
    find:
      glob: "**/x.yaml"
      command: [sh, -c, "ls"]
  parameters:
    static:
      - name: replicas
        title: Replicas
        required: true
        string: "2"
      - name: labels
        collectionType: map
        map: {a: b}
    dynamic:
      command: [sh, -c, "echo []"]
  preserveFileMode: true
  provideGitCreds: true
  somethingNew: ignored
"#;

    #[test]
    fn parses_every_field() {
        let config = PluginConfig::parse(FULL).unwrap();
        assert_eq!(config.metadata.name, "demo");
        assert_eq!(config.full_name(), "demo-v1.2");
        assert_eq!(config.socket_file_name(), "demo-v1.2.sock");
        assert_eq!(config.spec.init.shown(), "sh -c \"echo init\"");
        assert_eq!(config.spec.generate.command, ["sh", "-c", "cat *.yaml"]);
        assert_eq!(config.spec.discover.file_name, "*.demo.yaml");
        assert_eq!(config.spec.discover.find.glob, "**/x.yaml");
        assert_eq!(config.spec.discover.find.command, ["sh", "-c", "ls"]);
        assert!(config.spec.discover.is_configured());
        let statics = &config.spec.parameters.static_announcements;
        assert_eq!(statics.len(), 2);
        assert!(statics[0].required);
        assert_eq!(statics[0].string, "2");
        assert_eq!(statics[1].collection_type, "map");
        assert_eq!(statics[1].map["a"], "b");
        assert!(config.spec.parameters.dynamic.is_set());
        assert!(config.spec.preserve_file_mode);
        assert!(config.spec.provide_git_creds);
    }

    #[test]
    fn nulls_and_missing_fields_are_zero_values() {
        let config = PluginConfig::parse(
            "kind: ConfigManagementPlugin\nmetadata: {name: bare}\nspec:\n  version:\n  \
             generate: {command: [cat], args: null}\n  discover: null\n  parameters: ~\n",
        )
        .unwrap();
        assert_eq!(config.socket_file_name(), "bare.sock");
        assert!(!config.spec.discover.is_configured());
        assert!(!config.spec.init.is_set());
        assert!(config.spec.parameters.static_announcements.is_empty());
    }

    #[test]
    fn refuses_what_argo_cd_refuses_and_unusable_names() {
        let cases = [
            ("kind: ConfigManagementPlugin\nspec: {generate: {command: [x]}}", "metadata.name"),
            ("kind: Plugin\nmetadata: {name: a}\nspec: {generate: {command: [x]}}", "kind must be"),
            ("kind: ConfigManagementPlugin\nmetadata: {name: a}\nspec: {}", "spec.generate"),
            (
                "kind: ConfigManagementPlugin\nmetadata: {name: a/b}\nspec: {generate: {command: [x]}}",
                "file name",
            ),
            ("kind: [", ""),
        ];
        for (text, expected) in cases {
            let err = PluginConfig::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
