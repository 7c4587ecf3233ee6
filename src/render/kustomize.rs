//! Kustomize: per-app overrides applied in-process to a private copy of
//! the kustomization (the snapshot is never written), then
//! `kustomize build` with Argo CD's arguments.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::env::{command_line, normalize_kube_version, BuildEnv};
use super::helm::Rendered;
use super::kustomize_edit::{self, Edits};
use super::manifest::split_documents;
use super::scratch::Scratch;
use super::spec::SourceSpec;
use super::{show_paths, Error, Tools};
use crate::exec::Invocation;

/// A kustomize binary registered under a version name
/// (`kustomize.buildOptions`/`versions` in argocd-cm).
#[derive(Debug, Clone, Default)]
pub struct KustomizeVersion {
    pub name: String,
    pub path: String,
}

/// The request's kustomize settings.
#[derive(Debug, Clone, Default)]
pub struct KustomizeOptions {
    pub build_options: String,
    /// Deprecated single binary path; wins over `versions` when set.
    pub binary_path: String,
    pub versions: Vec<KustomizeVersion>,
}

/// One Kustomize render.
#[derive(Debug, Clone, Copy)]
pub struct KustomizeRequest<'a> {
    pub app_dir: &'a Path,
    pub repo_root: &'a Path,
    pub source: &'a SourceSpec,
    pub env: &'a BuildEnv,
    pub options: &'a KustomizeOptions,
    pub kube_version: &'a str,
    pub api_versions: &'a [String],
    /// Whether `.argocd-allow-concurrency` marks the app as safe to render
    /// directly in the shared snapshot (then chart inflation runs there).
    pub allow_concurrency: bool,
}

/// The kustomization file names kustomize looks for, in its order.
pub const KUSTOMIZATION_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
}

/// Versions as `(major, minor, patch)`, for the feature checks Argo CD
/// makes (`--helm-kube-version` needs kustomize 5.3.0).
type Semver = (u64, u64, u64);

fn parse_semver(text: &str) -> Option<Semver> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Probed kustomize versions, per binary.
#[derive(Default)]
pub struct VersionProbe {
    /// Binary path -> its version (`None`: unknown, treated as newest).
    /// Guards only the map.
    known: Mutex<HashMap<PathBuf, Option<Semver>>>,
}

impl Tools {
    fn edits(&self, request: &KustomizeRequest<'_>, app_dir: &Path) -> Result<Edits, Error> {
        let Some(spec) = &request.source.kustomize else {
            return Ok(Edits::default());
        };
        let env = request.env;
        let mut replicas = Vec::new();
        for replica in &spec.replicas {
            replicas.push((replica.name.clone(), replica.int_count()?));
        }
        let labels = spec
            .common_labels
            .iter()
            .map(|(k, v)| (k.clone(), env.substitute(v)))
            .collect();
        let annotations = spec
            .common_annotations
            .iter()
            .map(|(k, v)| {
                let v = if spec.common_annotations_envsubst {
                    env.substitute(v)
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        let components = if spec.ignore_missing_components {
            spec.components
                .iter()
                .filter(|c| {
                    let path = app_dir.join(c);
                    path.canonicalize()
                        .map(|p| p.starts_with(request.repo_root))
                        .unwrap_or(false)
                })
                .cloned()
                .collect()
        } else {
            spec.components.clone()
        };
        Ok(Edits {
            name_prefix: spec.name_prefix.clone(),
            name_suffix: spec.name_suffix.clone(),
            images: spec.images.iter().map(|i| env.substitute(i)).collect(),
            replicas,
            labels,
            force_labels: spec.force_common_labels,
            label_without_selector: spec.label_without_selector,
            label_include_templates: spec.label_include_templates,
            annotations,
            force_annotations: spec.force_common_annotations,
            namespace: spec.namespace.clone(),
            patches: spec.patches.clone(),
            components,
        })
    }

    fn kustomize_binary(&self, request: &KustomizeRequest<'_>) -> Result<PathBuf, Error> {
        let options = request.options;
        if !options.binary_path.is_empty() {
            return Ok(PathBuf::from(&options.binary_path));
        }
        let version = request
            .source
            .kustomize
            .as_ref()
            .map(|k| k.version.as_str())
            .unwrap_or("");
        if version.is_empty() {
            return Ok(self.config.kustomize.clone());
        }
        options
            .versions
            .iter()
            .find(|v| v.name == version)
            .map(|v| PathBuf::from(&v.path))
            .ok_or_else(|| Error::InvalidSpec {
                message: format!(
                    "error getting kustomize binary path: kustomize version {version} is not registered"
                ),
            })
    }

    /// The version of a kustomize binary a request names (its
    /// `binaryPath`, or the binary registered for its `kustomize.version`),
    /// probed once per binary: part of the cache keys, so replacing a
    /// binary never serves what the old one rendered. `None` when the
    /// request names none.
    pub async fn requested_kustomize(
        &self,
        source: &SourceSpec,
        options: &KustomizeOptions,
    ) -> Option<String> {
        let named = source
            .kustomize
            .as_ref()
            .is_some_and(|k| !k.version.is_empty());
        if options.binary_path.is_empty() && !named {
            return None;
        }
        let binary = options.binary_path.clone();
        let path = if !binary.is_empty() {
            PathBuf::from(binary)
        } else {
            let version = source.kustomize.as_ref().map(|k| k.version.as_str())?;
            PathBuf::from(&options.versions.iter().find(|v| v.name == version)?.path)
        };
        // Boxed: a probe is rare, and its state would otherwise enlarge
        // every request's future.
        let version = Box::pin(self.kustomize_version(&path)).await;
        Some(format!("{}@{version:?}", path.display()))
    }

    async fn kustomize_version(&self, binary: &Path) -> Option<Semver> {
        if let Some(known) = self
            .kustomize_versions
            .known
            .lock()
            .expect("version map lock poisoned")
            .get(binary)
        {
            return *known;
        }
        let probe = Invocation::new(binary.as_os_str(), &self.work).arg("version");
        let version = match self.supervisor.run(probe).await {
            Ok(output) => parse_semver(&String::from_utf8_lossy(&output.stdout)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot probe the kustomize version");
                None
            }
        };
        self.kustomize_versions
            .known
            .lock()
            .expect("version map lock poisoned")
            .insert(binary.to_path_buf(), version);
        version
    }

    /// Renders a kustomization from a snapshot.
    pub async fn kustomize(&self, request: KustomizeRequest<'_>) -> Result<Rendered, Error> {
        let binary = self.kustomize_binary(&request)?;
        let shown_binary = binary.to_string_lossy().into_owned();
        let raw_kube_version = request.source.kube_version_or(request.kube_version);
        let kube_version =
            normalize_kube_version(raw_kube_version).ok_or_else(|| Error::InvalidSpec {
                message: format!("could not parse kubernetes version {raw_kube_version}"),
            })?;
        let api_versions = request.source.api_versions_or(request.api_versions);
        let build_options = request.options.build_options.clone();
        let enable_helm = build_options.contains("--enable-helm");

        let edits = self.edits(&request, request.app_dir)?;
        let has_edits = !kustomize_edit::command_lines(&edits).is_empty();
        let mut commands: Vec<String> = kustomize_edit::command_lines(&edits)
            .into_iter()
            .map(|line| match line.strip_prefix("kustomize ") {
                Some(rest) => format!("{shown_binary} {rest}"),
                None => line,
            })
            .collect();

        // Overrides and chart inflation write next to the kustomization:
        // they get a private view; everything else builds the snapshot.
        // Chart inflation may write next to any kustomization of the
        // repository, so it gets a whole copy, unless the app is marked
        // safe to render in the shared snapshot.
        let inflate_in_copy = enable_helm && !request.allow_concurrency;
        let view = if has_edits || inflate_in_copy {
            let views = self.views_dir();
            let (root, app) = (
                request.repo_root.to_path_buf(),
                request.app_dir.to_path_buf(),
            );
            let edits = edits.clone();
            let view = tokio::task::spawn_blocking(move || -> Result<Scratch, Error> {
                let view = if inflate_in_copy {
                    Scratch::create_full(&views, &root, &app)
                } else {
                    Scratch::create(&views, &root, &app)
                };
                let view = view.map_err(|err| Error::Io {
                    file: ".".into(),
                    message: format!("cannot prepare the kustomization: {err}"),
                })?;
                if has_edits {
                    apply_edits(view.app_dir(), &edits)?;
                }
                Ok(view)
            })
            .await
            .map_err(|err| Error::Io {
                file: ".".into(),
                message: err.to_string(),
            })??;
            Some(view)
        } else {
            None
        };
        let (root, app_dir) = match &view {
            Some(view) => (view.root().to_path_buf(), view.app_dir().to_path_buf()),
            None => (
                request.repo_root.to_path_buf(),
                request.app_dir.to_path_buf(),
            ),
        };

        let mut args: Vec<String> = vec!["build".into(), app_dir.to_string_lossy().into_owned()];
        args.extend(build_options.split_whitespace().map(str::to_string));
        if enable_helm
            && self
                .kustomize_version(&binary)
                .await
                .is_none_or(|v| v >= (5, 3, 0))
        {
            if !kube_version.is_empty() {
                args.extend(["--helm-kube-version".into(), kube_version.clone()]);
            }
            for api_version in api_versions {
                args.extend(["--helm-api-versions".into(), api_version.clone()]);
            }
        }
        let roots: Vec<&Path> = vec![request.repo_root, &root];
        let command = show_paths(&command_line(&shown_binary, &args), &roots);
        let mut invocation = Invocation::new(binary.as_os_str(), &root).args(&args);
        for (name, value) in request.env.vars() {
            invocation = invocation.env(name, value);
        }
        let output = self.run("kustomize", invocation, &command, &roots).await;
        commands.push(command);
        let output = output?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let documents = split_documents(&text);
        if let Some(message) = documents.error {
            return Err(Error::ToolOutput {
                tool: "kustomize",
                message,
            });
        }
        drop(view);
        Ok(Rendered {
            objects: documents.objects,
            commands,
        })
    }
}

/// Applies the overrides to the view's kustomization file, rewriting it
/// (as JSON, which kustomize reads as YAML).
fn apply_edits(app_dir: &Path, edits: &Edits) -> Result<(), Error> {
    let Some(path) = kustomization_file(app_dir) else {
        return Err(Error::InvalidSpec {
            message: "kustomization file not found in the path".to_string(),
        });
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(&path).map_err(|err| Error::Io {
        file: name.clone(),
        message: err.to_string(),
    })?;
    let mut kustomization: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(&text).map_err(|err| Error::InvalidSpec {
            message: format!("failed to unmarshal {name}: {err}"),
        })?
    };
    if kustomization.is_null() {
        kustomization = Value::Object(Default::default());
    }
    kustomize_edit::apply(&mut kustomization, edits, app_dir).map_err(|err| {
        Error::InvalidSpec {
            message: err.to_string(),
        }
    })?;
    let json = serde_json::to_string_pretty(&kustomization).expect("JSON values serialize");
    // A new file, not a write through the old one.
    std::fs::remove_file(&path)
        .and_then(|_| std::fs::write(&path, json))
        .map_err(|err| Error::Io {
            file: name,
            message: err.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kustomize_versions() {
        assert_eq!(parse_semver("v5.5.0\n"), Some((5, 5, 0)));
        assert_eq!(parse_semver("kustomize/v4.5.7"), Some((4, 5, 7)));
        assert_eq!(
            parse_semver("{Version:kustomize/v3.8.1 GitCommit:abc}"),
            Some((3, 8, 1))
        );
        assert_eq!(parse_semver("unknown"), None);
    }
}
