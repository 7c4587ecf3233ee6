//! `GetAppDetails`: what the UI shows of an app before it is created —
//! its source type and, for Helm, the value files, values and parameters;
//! for Kustomize, the images of a build with the app's overrides.

use std::path::Path;

use super::{join_error, Error, ManifestRequest, Pipeline};
use crate::git::Resolved;
use crate::render::{self, SourceType};

/// An app's details by source type.
#[derive(Debug, Clone, PartialEq)]
pub enum AppDetails {
    Helm {
        /// Value files found under the chart directory.
        value_files: Vec<String>,
        /// The chart's `values.yaml`.
        values: String,
        /// `values.yaml` and the selected value files, flattened, sorted.
        parameters: Vec<(String, String)>,
        file_parameters: Vec<(String, String)>,
    },
    Kustomize {
        images: Vec<String>,
    },
    Directory,
    Plugin {
        announcements: Vec<crate::grpc::proto::repository::ParameterAnnouncement>,
    },
}

impl Pipeline {
    /// Argo CD's `GetAppDetails` for the source of `request` at its
    /// target revision.
    pub async fn app_details(
        &self,
        request: ManifestRequest,
    ) -> Result<(SourceType, AppDetails), Error> {
        let oci = request.repo_type == super::RepoType::Oci
            || request.repo_url.as_str().starts_with("oci://")
            || request.enable_oci;
        let (snapshot, request, sha) = if oci
            || request.repo_type == super::RepoType::Helm
            || !request.source.chart.is_empty()
        {
            self.chart_tree(request, oci).await?
        } else {
            self.git_tree(request).await?
        };
        self.details_of(request, snapshot, sha).await
    }

    /// The commit's tree of a git source.
    async fn git_tree(
        &self,
        request: ManifestRequest,
    ) -> Result<
        (
            std::sync::Arc<crate::source::Snapshot>,
            ManifestRequest,
            String,
        ),
        Error,
    > {
        let fresh = request.no_cache || request.no_revision_cache;
        // As Argo CD, an unknown revision is the caller's mistake.
        let sha = self
            .resolve_revision(
                &request.repo_url,
                &request.revision,
                &request.source.tag_prefix,
                fresh,
            )
            .await
            .map_err(|err| match err {
                Error::Git(crate::git::Error::RevisionNotFound { .. }) => Error::Invalid {
                    message: err.to_string(),
                },
                other => other,
            })?;
        let (store, sha) = self
            .stores
            .ensure_commit(&request.repo_url, &Resolved::Commit(sha), &request.revision)
            .await?;
        let snapshot = self.renderer.snapshot(&request, &store, &sha, None).await?;
        Ok((snapshot, request, sha))
    }

    /// The details of the app at the request's path of `snapshot`.
    async fn details_of(
        &self,
        request: ManifestRequest,
        snapshot: std::sync::Arc<crate::source::Snapshot>,
        sha: String,
    ) -> Result<(SourceType, AppDetails), Error> {
        let app_dir = snapshot.app_dir(&request.source.path)?;
        let prepared = self
            .renderer
            .prepare(&request, &snapshot, app_dir.clone())
            .await?;
        let source_type = prepared.source_type;
        let details = match source_type {
            SourceType::Directory => AppDetails::Directory,
            SourceType::Plugin => {
                let source = prepared.source.clone();
                let plugin_request = self.renderer.plugin_request(
                    &request,
                    &source,
                    snapshot.root(),
                    &app_dir,
                    &sha,
                )?;
                let named = source
                    .plugin
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .filter(|name| !name.is_empty());
                let name = named.or(prepared.discovered_plugin.as_deref());
                AppDetails::Plugin {
                    announcements: render::plugin::parameters(&plugin_request, name).await?,
                }
            }
            SourceType::Helm => {
                let (dir, root) = (app_dir.clone(), snapshot.root().to_path_buf());
                let source = prepared.source.clone();
                tokio::task::spawn_blocking(move || helm_details(&dir, &root, &source))
                    .await
                    .map_err(join_error)??
            }
            SourceType::Kustomize => {
                let result = self
                    .renderer
                    .render_prepared(&request, snapshot.clone(), prepared, sha)
                    .await?;
                let objects: Vec<serde_json::Value> = result
                    .manifests
                    .iter()
                    .filter_map(|m| serde_json::from_str(m).ok())
                    .collect();
                AppDetails::Kustomize {
                    images: render::details::kustomize_images(&objects),
                }
            }
        };
        Ok((source_type, details))
    }
}

/// The Helm details of the chart at `app_dir` (in the tree at `root`).
fn helm_details(
    app_dir: &Path,
    root: &Path,
    source: &render::spec::SourceSpec,
) -> Result<AppDetails, Error> {
    let io = |err: std::io::Error| Error::Internal {
        message: format!("cannot read the chart: {err}"),
    };
    let value_files = render::details::helm_value_files(app_dir).map_err(io)?;
    // `values.yaml` only when it resolves inside the repository.
    let inside = |path: &Path| -> Option<std::path::PathBuf> {
        let resolved = path.canonicalize().ok()?;
        (resolved.starts_with(root) && resolved.is_file()).then_some(resolved)
    };
    let values = inside(&app_dir.join("values.yaml"))
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    let mut documents = vec![values.clone()];
    let helm = source.helm.clone().unwrap_or_default();
    for file in &helm.value_files {
        // Remote value files and other sources' files are not read here.
        if file.contains("://") || file.starts_with('$') {
            continue;
        }
        let path = match file.strip_prefix('/') {
            Some(from_root) => root.join(from_root),
            None => app_dir.join(file),
        };
        if let Some(content) = inside(&path).and_then(|p| std::fs::read_to_string(p).ok()) {
            documents.push(content);
        }
    }
    let parameters = render::details::flatten_helm_values(&documents)
        .map_err(|err| render::Error::InvalidSpec {
            message: format!("failed to parse values: {err}"),
        })?
        .into_iter()
        .collect();
    let file_parameters = helm
        .file_parameters
        .iter()
        .map(|p| (p.name.clone(), p.path.clone()))
        .collect();
    Ok(AppDetails::Helm {
        value_files,
        values,
        parameters,
        file_parameters,
    })
}
