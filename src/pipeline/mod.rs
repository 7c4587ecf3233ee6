//! The request pipeline of DESIGN.md, in domain types: resolve the
//! revision, make the commit local, take its snapshot, render, post-process.
//!
//! It knows nothing of protobuf (the gRPC layer converts) and spawns no
//! processes itself (git and tools run through [`crate::exec`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{self, flight::Flights};
use crate::domain::{RepoUrl, Tracking, TrackingMethod};
use crate::git::{self, Resolved};
use crate::metrics::RenderMetrics;
use crate::render::env::{BuildEnv, BuildEnvInput};
use crate::render::helm::{HelmRequest, Rendered};
use crate::render::kustomize::{KustomizeOptions, KustomizeRequest};
use crate::render::spec::SourceSpec;
use crate::render::{self, directory, jsonnet, manifest, SourceType};
use crate::source;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Render(#[from] render::Error),
    /// A feature a later milestone builds (e.g. Helm repositories).
    #[error("{what} is not implemented yet")]
    NotImplemented { what: String },
    #[error("internal error: {message}")]
    Internal { message: String },
    /// The error of a render this request shared with others.
    #[error(transparent)]
    Shared(Arc<Error>),
}

/// Limits and concurrency of the render stage.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Most manifest generations at once (`--parallelismlimit`); `None`
    /// means unlimited.
    pub parallelism_limit: Option<usize>,
    /// Most bytes of manifest files a Directory app may combine
    /// (`--max-combined-directory-manifests-size`); `None` means unlimited.
    pub max_combined_directory_manifests_bytes: Option<u64>,
}

/// The kind of repository a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoType {
    Git,
    Helm,
    Oci,
}

/// A GenerateManifest request in domain terms.
#[derive(Debug, Clone)]
pub struct ManifestRequest {
    pub repo_url: RepoUrl,
    pub repo_type: RepoType,
    /// As asked (branch, tag, HEAD, SHA); empty means HEAD.
    pub revision: String,
    pub source: SourceSpec,
    pub tracking: Tracking,
    pub project_name: String,
    /// The cluster's Kubernetes version and API versions.
    pub kube_version: String,
    pub api_versions: Vec<String>,
    pub kustomize_options: KustomizeOptions,
    /// `helm.valuesFileSchemes`; `None` when the request has no Helm
    /// options (then no URL is allowed).
    pub values_file_schemes: Option<Vec<String>>,
    pub enabled_source_types: HashMap<String, bool>,
    pub has_multiple_sources: bool,
}

#[derive(Debug, Clone)]
pub struct ManifestResult {
    pub manifests: Vec<String>,
    /// The resolved commit SHA.
    pub revision: String,
    /// `None` for a ref-only source, which renders nothing.
    pub source_type: Option<SourceType>,
    /// The tool command lines, as Argo CD reports them.
    pub commands: Vec<String>,
}

/// Branches and tags of a remote, sorted.
#[derive(Debug, Clone)]
pub struct Refs {
    pub branches: Vec<String>,
    pub tags: Vec<String>,
}

/// Whether `revision` reads as a semver range (`1.x`, `>=1.2 <2`, `^1.0`,
/// `~1.2`, `*`), which Argo CD resolves to the highest matching tag.
fn looks_like_semver_constraint(revision: &str) -> bool {
    let trimmed = revision.trim().trim_start_matches('v');
    if trimmed.is_empty() {
        return false;
    }
    let operators = trimmed.contains(['>', '<', '=', '^', '~', '*', '|', ','])
        && trimmed.chars().any(|c| c.is_ascii_digit() || c == '*');
    let wildcard = trimmed.split('.').count() <= 3
        && trimmed.split('.').all(|part| {
            matches!(part, "x" | "X" | "*")
                || part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty()
        })
        && trimmed.contains(['x', 'X', '*']);
    operators || wildcard
}

pub struct Pipeline {
    stores: Arc<git::Stores>,
    renderer: Arc<Renderer>,
    /// Renders in progress, shared by identical concurrent requests.
    renders: Flights<Result<ManifestResult, Arc<Error>>>,
}

/// The render stage (DESIGN.md step 6 and 7): everything after the
/// revision is resolved, run as one shared, cancellable task per render.
struct Renderer {
    stores: Arc<git::Stores>,
    snapshots: Arc<source::Snapshots>,
    tools: Arc<render::Tools>,
    config: Config,
    permits: Option<Arc<Semaphore>>,
    metrics: RenderMetrics,
}

/// A held parallelism permit, counted in the metrics.
struct Permit {
    _permit: Option<OwnedSemaphorePermit>,
    metrics: RenderMetrics,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self._permit.is_some() {
            self.metrics.permits_in_use.dec();
        }
    }
}

/// Every field of a request that can change a render's output, in a
/// deterministic encoding, for [`cache::key::render`].
#[derive(Serialize)]
struct RenderInputs<'a> {
    repo_url: String,
    repo_type: &'static str,
    source: &'a SourceSpec,
    tracking_method: &'static str,
    app_label_key: &'a str,
    app_name: &'a str,
    namespace: &'a str,
    installation_id: &'a str,
    project_name: &'a str,
    kube_version: &'a str,
    api_versions: &'a [String],
    kustomize_build_options: &'a str,
    kustomize_binary_path: &'a str,
    kustomize_versions: Vec<(&'a str, &'a str)>,
    values_file_schemes: Option<&'a [String]>,
    enabled_source_types: BTreeMap<&'a str, bool>,
    has_multiple_sources: bool,
}

impl<'a> RenderInputs<'a> {
    fn of(request: &'a ManifestRequest) -> Self {
        RenderInputs {
            repo_url: request.repo_url.redacted(),
            repo_type: match request.repo_type {
                RepoType::Git => "git",
                RepoType::Helm => "helm",
                RepoType::Oci => "oci",
            },
            source: &request.source,
            tracking_method: match request.tracking.method {
                TrackingMethod::Label => "label",
                TrackingMethod::Annotation => "annotation",
                TrackingMethod::AnnotationAndLabel => "annotation+label",
            },
            app_label_key: &request.tracking.app_label_key,
            app_name: &request.tracking.app_name,
            namespace: &request.tracking.namespace,
            installation_id: &request.tracking.installation_id,
            project_name: &request.project_name,
            kube_version: &request.kube_version,
            api_versions: &request.api_versions,
            kustomize_build_options: &request.kustomize_options.build_options,
            kustomize_binary_path: &request.kustomize_options.binary_path,
            kustomize_versions: request
                .kustomize_options
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.path.as_str()))
                .collect(),
            values_file_schemes: request.values_file_schemes.as_deref(),
            enabled_source_types: request
                .enabled_source_types
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect(),
            has_multiple_sources: request.has_multiple_sources,
        }
    }
}

fn jsonnet_vars(vars: &[render::spec::JsonnetVar], env: &BuildEnv) -> Vec<jsonnet::Var> {
    vars.iter()
        .map(|v| jsonnet::Var {
            name: v.name.clone(),
            value: env.substitute(&v.value),
            code: v.code,
        })
        .collect()
}

/// The Directory renderer's options for a source.
fn directory_options(
    source: &SourceSpec,
    enabled: &HashMap<String, bool>,
    env: &BuildEnv,
    max_combined_bytes: Option<u64>,
) -> directory::Options {
    let dir = source.directory.clone().unwrap_or_default();
    directory::Options {
        recurse: dir.recurse,
        include: dir.include,
        exclude: dir.exclude,
        disable_extension_filter: dir.disable_extension_filter,
        jsonnet_enabled: enabled.get("Directory").copied().unwrap_or(true),
        jsonnet: jsonnet::Options {
            tlas: jsonnet_vars(&dir.jsonnet.tlas, env),
            ext_vars: jsonnet_vars(&dir.jsonnet.ext_vars, env),
            libs: dir.jsonnet.libs.clone(),
        },
        max_combined_bytes,
    }
}

fn join_error(err: tokio::task::JoinError) -> Error {
    Error::Internal {
        message: format!("render task failed: {err}"),
    }
}

impl Pipeline {
    pub fn new(
        stores: Arc<git::Stores>,
        snapshots: Arc<source::Snapshots>,
        tools: Arc<render::Tools>,
        config: Config,
        metrics: RenderMetrics,
    ) -> Self {
        // Beyond what a semaphore can count is as good as unlimited.
        let permits = config
            .parallelism_limit
            .filter(|limit| *limit <= Semaphore::MAX_PERMITS)
            .map(|limit| Arc::new(Semaphore::new(limit)));
        Pipeline {
            stores: stores.clone(),
            renderer: Arc::new(Renderer {
                stores,
                snapshots,
                tools,
                config,
                permits,
                metrics,
            }),
            renders: Flights::default(),
        }
    }

    /// Resolves `revision` against the remote's refs. A full SHA needs no
    /// network.
    async fn resolve(&self, repo_url: &RepoUrl, revision: &str) -> Result<Resolved, Error> {
        if git::is_full_sha(revision) {
            return Ok(Resolved::Commit(revision.to_ascii_lowercase()));
        }
        let refs = self.stores.list_refs(repo_url).await?;
        match refs.resolve(revision) {
            Some(resolved) => Ok(resolved),
            None if looks_like_semver_constraint(revision) => Err(Error::NotImplemented {
                what: format!("resolving semver constraint '{revision}' against tags"),
            }),
            None => Err(Error::Git(git::Error::RevisionNotFound {
                repo_url: repo_url.redacted(),
                revision: revision.to_string(),
            })),
        }
    }

    /// Resolves `revision` to a full commit SHA, fetching when it is an
    /// abbreviated SHA that only the history can expand.
    pub async fn resolve_revision(
        &self,
        repo_url: &RepoUrl,
        revision: &str,
    ) -> Result<String, Error> {
        match self.resolve(repo_url, revision).await? {
            Resolved::Commit(sha) => Ok(sha),
            abbreviated @ Resolved::Abbreviated(_) => {
                let (_, sha) = self
                    .stores
                    .ensure_commit(repo_url, &abbreviated, revision)
                    .await?;
                Ok(sha)
            }
        }
    }

    pub async fn list_refs(&self, repo_url: &RepoUrl) -> Result<Refs, Error> {
        let refs = self.stores.list_refs(repo_url).await?;
        Ok(Refs {
            branches: refs.branches(),
            tags: refs.tags(),
        })
    }

    /// Checks that the repository answers (and, later, that the
    /// credentials work).
    pub async fn test_repository(
        &self,
        repo_url: &RepoUrl,
        repo_type: RepoType,
    ) -> Result<(), Error> {
        match repo_type {
            RepoType::Git => {
                self.stores.list_refs(repo_url).await?;
                Ok(())
            }
            RepoType::Helm | RepoType::Oci => Err(Error::NotImplemented {
                what: "testing Helm and OCI repositories".to_string(),
            }),
        }
    }

    pub async fn generate_manifest(
        &self,
        request: ManifestRequest,
    ) -> Result<ManifestResult, Error> {
        if request.repo_type != RepoType::Git || !request.source.chart.is_empty() {
            return Err(Error::NotImplemented {
                what: "rendering Helm-repository and OCI sources".to_string(),
            });
        }
        // A multi-source entry without path or chart (typically a `ref:`
        // source for `$ref` value files) renders nothing; the controller
        // only needs its revision.
        if request.has_multiple_sources
            && request.source.path.is_empty()
            && request.source.chart.is_empty()
        {
            let revision = self
                .resolve_revision(&request.repo_url, &request.revision)
                .await?;
            return Ok(ManifestResult {
                manifests: Vec::new(),
                revision,
                source_type: None,
                commands: Vec::new(),
            });
        }

        let commit_sha = self
            .resolve_revision(&request.repo_url, &request.revision)
            .await?;
        let key = cache::key::render(
            &request.repo_url.normalized(),
            &commit_sha,
            &RenderInputs::of(&request),
        );
        let renderer = self.renderer.clone();
        let flight = self.renders.join(key, move || async move {
            renderer.render(request, commit_sha).await.map_err(Arc::new)
        });
        if !flight.is_leader() {
            tracing::debug!("joined an identical render in progress");
        }
        match flight.wait().await {
            Ok(result) => {
                result.map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(Error::Shared))
            }
            Err(lost) => Err(Error::Internal {
                message: lost.to_string(),
            }),
        }
    }
}

impl Renderer {
    /// The app path, when the request is for a Directory app (as far as
    /// the request says) whose directory reads nothing outside itself.
    async fn directory_subtree(
        &self,
        request: &ManifestRequest,
        store: &Arc<git::RepoStore>,
        commit_sha: &str,
    ) -> Result<Option<String>, Error> {
        let explicit = request.source.explicit_types();
        if explicit.iter().any(|t| *t != SourceType::Directory) {
            return Ok(None);
        }
        // Only a plain relative path of names; anything else (absolute,
        // `.`, `..`, the root) is left to the whole-tree snapshot and its
        // checks.
        let raw = &request.source.path;
        let components: Vec<&str> = raw.split('/').filter(|c| !c.is_empty()).collect();
        if raw.starts_with('/')
            || components.is_empty()
            || components.iter().any(|c| *c == "." || *c == "..")
        {
            return Ok(None);
        }
        let path = components.join("/");
        let (store, sha) = (store.clone(), commit_sha.to_string());
        let contained = tokio::task::spawn_blocking(move || {
            store
                .is_self_contained_directory(&sha, &path)
                .then_some(path)
        })
        .await
        .map_err(join_error)?;
        Ok(contained)
    }

    /// Waits for a parallelism permit when there is a limit; the wait is
    /// measured, also when the caller goes away during it.
    async fn permit(&self) -> Result<Permit, Error> {
        let Some(permits) = &self.permits else {
            return Ok(Permit {
                _permit: None,
                metrics: self.metrics.clone(),
            });
        };
        struct Measure<'a>(Instant, &'a RenderMetrics);
        impl Drop for Measure<'_> {
            fn drop(&mut self) {
                self.1
                    .parallelism_wait
                    .observe(self.0.elapsed().as_secs_f64());
            }
        }
        let _measure = Measure(Instant::now(), &self.metrics);
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal {
                message: "the parallelism limit is closed".to_string(),
            })?;
        self.metrics.permits_in_use.inc();
        Ok(Permit {
            _permit: Some(permit),
            metrics: self.metrics.clone(),
        })
    }

    /// Fetches, snapshots and renders `commit_sha` for `request`.
    async fn render(
        &self,
        request: ManifestRequest,
        commit_sha: String,
    ) -> Result<ManifestResult, Error> {
        let _permit = self.permit().await?;
        let (store, commit_sha) = self
            .stores
            .ensure_commit(
                &request.repo_url,
                &Resolved::Commit(commit_sha),
                &request.revision,
            )
            .await?;
        // A Directory app that reads nothing outside its directory gets a
        // snapshot of that directory alone; anything else, the whole tree.
        let subtree = self
            .directory_subtree(&request, &store, &commit_sha)
            .await?;
        let mut snapshot = self
            .snapshots
            .get(&request.repo_url, &store, &commit_sha, subtree.as_deref())
            .await?;
        let (app_dir, source, source_type, allow_concurrency) = loop {
            let app_dir = snapshot.app_dir(&request.source.path)?;
            // Refuse, rather than render less than Argo CD would, what
            // later milestones build.
            let recurse = request.source.directory.as_ref().is_some_and(|d| d.recurse);
            if let Some(submodule) = snapshot.submodules_under(&app_dir, recurse).first() {
                return Err(Error::NotImplemented {
                    what: format!("rendering git submodules (submodule {submodule:?})"),
                });
            }
            let mut source = request.source.clone();
            let (dir, shared) = (app_dir.clone(), snapshot.clone());
            let (app_name, enabled) = (
                request.tracking.app_name.clone(),
                request.enabled_source_types.clone(),
            );
            let (source, source_type, allow_concurrency) =
                tokio::task::spawn_blocking(move || -> Result<_, Error> {
                    source.merge_override_files(&dir, shared.root(), &app_name)?;
                    let source_type =
                        render::detect_source_type(&dir, &source.explicit_types(), &enabled)?;
                    let allow_concurrency = shared.allows_concurrency(&dir);
                    Ok((source, source_type, allow_concurrency))
                })
                .await
                .map_err(join_error)??;
            // An override file made it another source type: that reads
            // more than the directory.
            if snapshot.subtree().is_some() && source_type != SourceType::Directory {
                snapshot = self
                    .snapshots
                    .get(&request.repo_url, &store, &commit_sha, None)
                    .await?;
                continue;
            }
            break (app_dir, source, source_type, allow_concurrency);
        };
        let repo_url_shown = request.repo_url.redacted();
        let env = BuildEnv::new(BuildEnvInput {
            app_name: &request.tracking.app_name,
            app_namespace: &request.tracking.namespace,
            project_name: &request.project_name,
            revision: &commit_sha,
            repo_url: &repo_url_shown,
            source_path: &source.path,
            target_revision: &source.target_revision,
        });
        let repo_root = snapshot.root().to_path_buf();
        if matches!(source_type, SourceType::Helm | SourceType::Kustomize) {
            let snapshot = snapshot.clone();
            let escaping = tokio::task::spawn_blocking(move || {
                snapshot.escaping_symlink().map(str::to_string)
            })
            .await
            .map_err(join_error)?;
            if let Some(file) = escaping {
                return Err(render::Error::OutOfBoundsSymlink { file }.into());
            }
        }
        let rendered = match source_type {
            SourceType::Directory => {
                let options = directory_options(
                    &source,
                    &request.enabled_source_types,
                    &env,
                    self.config.max_combined_directory_manifests_bytes,
                );
                let (app_dir, repo_root) = (app_dir.clone(), repo_root.clone());
                let objects = tokio::task::spawn_blocking(move || {
                    directory::render(&app_dir, &repo_root, &options)
                })
                .await
                .map_err(join_error)??;
                Rendered {
                    objects,
                    commands: Vec::new(),
                }
            }
            SourceType::Helm => {
                self.tools
                    .helm(HelmRequest {
                        app_dir: &app_dir,
                        repo_root: &repo_root,
                        source: &source,
                        env: &env,
                        app_name: &request.tracking.app_name,
                        namespace: &request.tracking.namespace,
                        kube_version: &request.kube_version,
                        api_versions: &request.api_versions,
                        values_file_schemes: request.values_file_schemes.as_deref(),
                    })
                    .await?
            }
            SourceType::Kustomize => {
                self.tools
                    .kustomize(KustomizeRequest {
                        app_dir: &app_dir,
                        repo_root: &repo_root,
                        source: &source,
                        env: &env,
                        options: &request.kustomize_options,
                        kube_version: &request.kube_version,
                        api_versions: &request.api_versions,
                        allow_concurrency,
                    })
                    .await?
            }
            SourceType::Plugin => {
                return Err(Error::NotImplemented {
                    what: "rendering config management plugin sources".to_string(),
                })
            }
        };
        let tracking = request.tracking.clone();
        let path = source.path.clone();
        let objects = rendered.objects;
        let manifests = tokio::task::spawn_blocking(move || {
            manifest::finalize(objects, Some(&tracking), &path)
        })
        .await
        .map_err(join_error)??;
        // Keep the snapshot alive until rendering is done.
        drop(snapshot);
        Ok(ManifestResult {
            manifests,
            revision: commit_sha,
            source_type: Some(source_type),
            commands: rendered.commands,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_semver_constraint;

    #[test]
    fn recognises_semver_constraints() {
        for yes in [
            "1.x",
            "v1.2.X",
            "*",
            ">=1.0.0 <2",
            "^1.2",
            "~1.2.3",
            "1.2 || 2.x",
        ] {
            assert!(looks_like_semver_constraint(yes), "{yes}");
        }
        for no in ["main", "feature/x", "v1.2.3", "release-1.x-old", "HEAD", ""] {
            assert!(!looks_like_semver_constraint(no), "{no}");
        }
    }
}
