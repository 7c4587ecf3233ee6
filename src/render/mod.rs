//! Renderers: turning an app directory into Kubernetes objects, and the
//! post-processing every source type shares (list flattening, tracking
//! metadata, Go-compatible JSON).
//!
//! Renderers read a snapshot directory; they never run git and never write
//! into the snapshot.

pub mod details;
pub mod directory;
pub mod env;
pub mod helm;
pub mod jsonnet;
pub mod kustomize;
pub mod kustomize_edit;
pub mod manifest;
pub mod plugin;
pub mod scratch;
pub mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::exec;

/// Where the rendering tools are.
#[derive(Debug, Clone)]
pub struct Config {
    /// The helm binary (helm v3 or v4).
    pub helm: PathBuf,
    /// The kustomize binary used when a source names no version.
    pub kustomize: PathBuf,
    /// Where config management plugin sidecars put their sockets
    /// (`ARGOCD_PLUGINSOCKFILEPATH`).
    pub plugin_sockets: PathBuf,
    /// How files reach plugins.
    pub plugin_files: PluginFiles,
}

/// What the repo-server streams to a config management plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFiles {
    /// Globs of repository-relative paths left out (`--plugin-tar-exclude`).
    pub exclude: Vec<String>,
    /// Bytes per chunk of the stream (`ARGOCD_CMP_CHUNK_SIZE`).
    pub chunk_size: usize,
    /// Plugins (by name, `*` for all) that get the whole repository
    /// instead of the app directory and its `manifest-generate-paths`.
    pub whole_repository: Vec<String>,
}

impl Default for PluginFiles {
    fn default() -> Self {
        PluginFiles {
            exclude: Vec::new(),
            chunk_size: 1024,
            whole_repository: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            helm: PathBuf::from("helm"),
            kustomize: PathBuf::from("kustomize"),
            plugin_sockets: PathBuf::from("/home/argocd/cmp-server/plugins"),
            plugin_files: PluginFiles::default(),
        }
    }
}

/// The names of the plugins whose sidecars listen in `dir` (a socket
/// `<name>.sock` each), sorted; none when the directory does not exist.
pub fn plugin_names(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::FileTypeExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_socket() {
            let name = entry.file_name().to_string_lossy().into_owned();
            names.push(name.strip_suffix(".sock").unwrap_or(&name).to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Runs helm and kustomize for renders: the supervisor, the tool paths,
/// and a private directory for scratch views, helm homes and the helm
/// dependency cache.
pub struct Tools {
    supervisor: exec::Supervisor,
    config: Config,
    /// Private to this process: `views/`, `helm/` (shared cache and data
    /// homes, per-run config homes) and `helm-deps/`.
    work: PathBuf,
    helm_deps: Arc<helm::DepsCache>,
    kustomize_versions: kustomize::VersionProbe,
    /// The configured tools and their versions, once both probes worked:
    /// read without waiting by every request; concurrent first requests
    /// probe once.
    fingerprint: tokio::sync::OnceCell<String>,
    /// Whether a plugin sidecar with discovery is listening, and when
    /// that was last asked.
    plugin_discovery: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

/// How long the answer to "does any sidecar do discovery" is kept.
const PLUGIN_DISCOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Tools {
    /// Where plugin sidecars listen.
    pub fn plugin_sockets(&self) -> &std::path::Path {
        &self.config.plugin_sockets
    }

    /// How files reach plugins.
    pub fn plugin_files(&self) -> &PluginFiles {
        &self.config.plugin_files
    }

    /// How long one call to a plugin sidecar may take: its commands' exec
    /// timeout and kill grace, and a margin for the transfer.
    pub fn plugin_timeout(&self) -> std::time::Duration {
        self.supervisor
            .timeout()
            .unwrap_or(std::time::Duration::from_secs(24 * 3600))
            + self.supervisor.fatal_timeout()
            + std::time::Duration::from_secs(10)
    }

    /// Where plugin archives are spooled.
    pub fn spool_dir(&self) -> &Path {
        &self.work
    }

    /// Whether a sidecar with discovery configured is listening (then an
    /// app naming no source type may be a plugin app). Asked at most every
    /// 30 s.
    pub async fn plugin_discovery_possible(&self) -> bool {
        let mut known = self.plugin_discovery.lock().await;
        if let Some((at, answer)) = *known {
            if at.elapsed() < PLUGIN_DISCOVERY_TTL {
                return answer;
            }
        }
        let answer = plugin::any_discovery(&self.config.plugin_sockets).await;
        *known = Some((std::time::Instant::now(), answer));
        answer
    }

    pub fn new(
        supervisor: exec::Supervisor,
        config: Config,
        work: PathBuf,
    ) -> std::io::Result<Self> {
        for dir in [
            "views",
            "helm/cache",
            "helm/data",
            "helm/homes",
            "helm-deps",
        ] {
            std::fs::create_dir_all(work.join(dir))?;
        }
        let helm_deps = Arc::new(helm::DepsCache::new(work.join("helm-deps")));
        Ok(Tools {
            supervisor,
            config,
            work,
            helm_deps,
            kustomize_versions: Default::default(),
            fingerprint: Default::default(),
            plugin_discovery: Default::default(),
        })
    }

    /// The configured helm and kustomize binaries with the versions they
    /// report, probed once: part of every cache key, so a new tool
    /// version never serves what an old one rendered.
    pub async fn fingerprint(&self) -> String {
        if let Some(known) = self.fingerprint.get() {
            return known.clone();
        }
        // Boxed: the probes' state is only needed until both worked, and
        // would otherwise enlarge every request's future.
        Box::pin(
            self.fingerprint
                .get_or_try_init(|| self.probe_fingerprint()),
        )
        .await
        .cloned()
        .unwrap_or_else(|partial| partial)
    }

    /// The fingerprint when both probes worked, else `Err` with what is
    /// known: a probe that failed (a tool missing, a timeout under load)
    /// is tried again by the next request.
    async fn probe_fingerprint(&self) -> Result<String, String> {
        let (fingerprint, complete) = {
            let probe = |program: &Path, args: &[&str]| {
                let home = self.work.join("helm/homes");
                exec::Invocation::new(program.as_os_str(), &self.work)
                    .args(args.iter().copied())
                    .env("HOME", &home)
                    .env("HELM_CONFIG_HOME", home.join("probe-config"))
                    .env("HELM_CACHE_HOME", self.work.join("helm/cache"))
                    .env("HELM_DATA_HOME", self.work.join("helm/data"))
            };
            let version = |output: Result<exec::Output, exec::Error>| match output {
                Ok(output) => Some(String::from_utf8_lossy(&output.stdout).trim().to_string()),
                Err(_) => None,
            };
            let quick = self
                .supervisor
                .with_timeout(std::time::Duration::from_secs(10));
            let helm = version(
                quick
                    .run(probe(&self.config.helm, &["version", "--short"]))
                    .await,
            );
            let kustomize = version(quick.run(probe(&self.config.kustomize, &["version"])).await);
            let complete = helm.is_some() && kustomize.is_some();
            let shown = |v: Option<String>| v.unwrap_or_else(|| "unavailable".to_string());
            (
                format!(
                    "helm={}@{};kustomize={}@{}",
                    self.config.helm.display(),
                    shown(helm),
                    self.config.kustomize.display(),
                    shown(kustomize)
                ),
                complete,
            )
        };
        if complete {
            Ok(fingerprint)
        } else {
            Err(fingerprint)
        }
    }

    fn views_dir(&self) -> PathBuf {
        self.work.join("views")
    }

    /// Runs one tool invocation. `command` is the line reported to users
    /// (local paths already replaced); failures carry it and the redacted
    /// stderr tail, with `shown` paths replaced by `.`.
    async fn run(
        &self,
        tool: &'static str,
        invocation: exec::Invocation,
        command: &str,
        shown: &[&Path],
    ) -> Result<exec::Output, Error> {
        match self.supervisor.run(invocation).await {
            Ok(output) => Ok(output),
            Err(exec::Error::Failed {
                exit, stderr_tail, ..
            }) => Err(Error::ToolFailed {
                tool,
                command: command.to_string(),
                exit,
                stderr: show_paths(&crate::domain::redact_url(stderr_tail.trim()), shown),
            }),
            Err(exec::Error::TimedOut {
                after,
                killed_after,
                ..
            }) => Err(Error::ToolTimedOut {
                tool,
                command: command.to_string(),
                after,
                killed_after,
            }),
            Err(err @ exec::Error::Spawn { .. }) => Err(Error::ToolUnavailable {
                tool,
                message: err.to_string(),
            }),
            Err(err) => Err(Error::ToolFailed {
                tool,
                command: command.to_string(),
                exit: "abnormally".to_string(),
                stderr: err.to_string(),
            }),
        }
    }
}

impl Error {
    /// Rewrites the command and stderr of a tool failure; other errors
    /// pass unchanged.
    fn map_tool_failure(
        self,
        command: impl FnOnce(String) -> String,
        stderr: impl FnOnce(String) -> String,
    ) -> Self {
        match self {
            Error::ToolFailed {
                tool,
                command: line,
                exit,
                stderr: tail,
            } => Error::ToolFailed {
                tool,
                command: command(line),
                exit,
                stderr: stderr(tail),
            },
            other => other,
        }
    }
}

/// Replaces each of `roots` in `text` with `.`, longest first, as Argo CD
/// shows clone paths.
pub fn show_paths(text: &str, roots: &[&Path]) -> String {
    let mut roots: Vec<String> = roots
        .iter()
        .map(|r| r.to_string_lossy().into_owned())
        .filter(|r| !r.is_empty())
        .collect();
    roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
    let mut text = text.to_string();
    for root in roots {
        text = text.replace(&root, ".");
    }
    text
}

/// The source types Argo CD knows, as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    Helm,
    Kustomize,
    Directory,
    Plugin,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Helm => "Helm",
            SourceType::Kustomize => "Kustomize",
            SourceType::Directory => "Directory",
            SourceType::Plugin => "Plugin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that looks like a manifest could not be parsed.
    #[error("Failed to unmarshal {file:?}: {message}")]
    Unparsable { file: String, message: String },
    #[error("Found multiple objects in {file:?}. Only single objects are allowed in JSON files.")]
    MultipleJsonObjects { file: String },
    /// Helm and kustomize follow symlinks anywhere they read, so their
    /// renders refuse a repository with any escaping symlink (Argo CD's
    /// rule for every source type).
    #[error("repository contains out-of-bounds symlinks. file: {file}")]
    OutOfBoundsSymlink { file: String },
    #[error("illegal filepath in symlink at {file:?}")]
    SymlinkOutsideRepository { file: String },
    #[error("failed to get potentially valid manifests: exceeded max combined manifest file size: the app's manifest files add up to more than {limit} bytes (--max-combined-directory-manifests-size)")]
    ManifestsTooLarge { limit: u64 },
    #[error("failed to evaluate symlink at {file:?}: {message}")]
    BadSymlink { file: String, message: String },
    #[error("invalid {field} glob {pattern:?}: {message}")]
    InvalidGlob {
        field: &'static str,
        pattern: String,
        message: String,
    },
    #[error("multiple application sources defined: {types}")]
    MultipleSourceTypes { types: String },
    /// An object whose metadata cannot take tracking labels/annotations.
    #[error("failed to set app instance tracking info on manifest: {message}")]
    InvalidMetadata { message: String },
    #[error("resource list item has unexpected type in {file:?}")]
    ListItemNotObject { file: String },
    #[error("Failed to evaluate jsonnet {file:?}: {message}")]
    Jsonnet { file: String, message: String },
    #[error("Failed to unmarshal generated json {file:?}: {message}")]
    JsonnetOutput { file: String, message: String },
    #[error("{what} is not implemented yet")]
    NotImplemented { what: String },
    /// The source asks for something that cannot be: an unknown tool
    /// version, an unparsable Kubernetes version, a bad override file.
    #[error("{message}")]
    InvalidSpec { message: String },
    /// A value file (or `--set-file` path) that is not allowed.
    #[error("error resolving helm value files: {message}")]
    ValueFile { message: String },
    #[error("error resolving helm value files: values file glob {pattern:?} matched no files")]
    GlobNoMatch { pattern: String },
    #[error("failed running {tool}: `{command}` failed {exit}: {stderr}")]
    ToolFailed {
        tool: &'static str,
        command: String,
        exit: String,
        stderr: String,
    },
    #[error("`{command}` failed timeout after {after:?}{}", exec::killed_note(.killed_after))]
    ToolTimedOut {
        tool: &'static str,
        command: String,
        after: std::time::Duration,
        killed_after: Option<std::time::Duration>,
    },
    #[error("{tool} is not available: {message}")]
    ToolUnavailable { tool: &'static str, message: String },
    /// The output of a tool is not a stream of Kubernetes objects.
    #[error("failed to unmarshal manifests from {tool}: {message}")]
    ToolOutput { tool: &'static str, message: String },
    #[error("failed to read {file:?}: {message}")]
    Io { file: String, message: String },
    /// No plugin sidecar takes the app (named: that one does not).
    #[error("{message}")]
    PluginNotFound { message: String },
    /// The sidecar answered with an error, or could not be reached.
    #[error("plugin {plugin:?}: {message}")]
    PluginFailed {
        plugin: String,
        message: String,
        unavailable: bool,
        timed_out: bool,
    },
    /// The sidecar's output is not a stream of Kubernetes objects.
    #[error(
        "failed to convert CMP manifests to unstructured objects (plugin {plugin:?}): {message}"
    )]
    PluginOutput { plugin: String, message: String },
}

/// Which source type renders an app: the explicitly configured one, else
/// by the files directly in the app directory (`*Chart.yaml` → Helm,
/// `kustomization.yaml|yml` or `Kustomization` → Kustomize, Kustomize
/// winning), else Directory. A type disabled in `enabled` falls back to
/// Directory, as in Argo CD.
pub fn detect_source_type(
    app_dir: &Path,
    explicit: &[SourceType],
    enabled: &HashMap<String, bool>,
) -> Result<SourceType, Error> {
    let is_enabled = |t: SourceType| enabled.get(t.as_str()).copied().unwrap_or(true);
    match explicit {
        [] => {}
        [only] => {
            return Ok(if is_enabled(*only) {
                *only
            } else {
                SourceType::Directory
            })
        }
        many => {
            let types: Vec<&str> = many.iter().map(|t| t.as_str()).collect();
            return Err(Error::MultipleSourceTypes {
                types: types.join(","),
            });
        }
    }
    // Argo CD's discovery visits the files in name order; the last match
    // wins (so `kustomization.yaml` beats `Chart.yaml`, but `MyChart.yaml`
    // beats `Kustomization`), and disabled types are not discovered.
    let entries = std::fs::read_dir(app_dir).map_err(|err| Error::Io {
        file: ".".to_string(),
        message: err.to_string(),
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut detected = SourceType::Directory;
    for name in names {
        if matches!(
            name.as_str(),
            "kustomization.yaml" | "kustomization.yml" | "Kustomization"
        ) && is_enabled(SourceType::Kustomize)
        {
            detected = SourceType::Kustomize;
        } else if name.ends_with("Chart.yaml") && is_enabled(SourceType::Helm) {
            detected = SourceType::Helm;
        }
    }
    Ok(detected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_types_like_argo_cd() {
        let dir = tempfile::tempdir().unwrap();
        let none = HashMap::new();
        assert_eq!(
            detect_source_type(dir.path(), &[], &none).unwrap(),
            SourceType::Directory
        );
        std::fs::write(dir.path().join("Chart.yaml"), "").unwrap();
        assert_eq!(
            detect_source_type(dir.path(), &[], &none).unwrap(),
            SourceType::Helm
        );
        std::fs::write(dir.path().join("kustomization.yaml"), "").unwrap();
        assert_eq!(
            detect_source_type(dir.path(), &[], &none).unwrap(),
            SourceType::Kustomize
        );
        let disabled = HashMap::from([("Kustomize".to_string(), false)]);
        assert_eq!(
            detect_source_type(dir.path(), &[], &disabled).unwrap(),
            SourceType::Helm
        );
        std::fs::write(dir.path().join("MyChart.yaml"), "").unwrap();
        std::fs::rename(
            dir.path().join("kustomization.yaml"),
            dir.path().join("Kustomization"),
        )
        .unwrap();
        assert_eq!(
            detect_source_type(dir.path(), &[], &none).unwrap(),
            SourceType::Helm
        );
        assert_eq!(
            detect_source_type(dir.path(), &[SourceType::Directory], &none).unwrap(),
            SourceType::Directory
        );
        let err = detect_source_type(
            dir.path(),
            &[SourceType::Kustomize, SourceType::Helm],
            &none,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "multiple application sources defined: Kustomize,Helm"
        );
    }
}
