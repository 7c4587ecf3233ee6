//! Protobuf -> domain conversion and request validation. Bad input becomes
//! `INVALID_ARGUMENT` here, before any work starts.

use tonic::Status;

use super::proto::repository::ManifestRequest;
use super::proto::v1alpha1::{Application, ApplicationSource, Repository};
use crate::domain::{RepoUrl, Tracking, TrackingMethod};
use crate::pipeline::{self, RepoType};
use crate::render::{directory, SourceType};

/// The repository URL and type, or `INVALID_ARGUMENT`.
pub fn repository(repo: Option<&Repository>) -> Result<(RepoUrl, RepoType), Status> {
    let repo = repo.ok_or_else(|| Status::invalid_argument("must pass a valid repo"))?;
    let repo_url = RepoUrl::parse(&repo.repo)
        .map_err(|err| Status::invalid_argument(format!("invalid repo: {err}")))?;
    let repo_type = match repo.r#type.as_str() {
        "" | "git" => RepoType::Git,
        "helm" => RepoType::Helm,
        "oci" => RepoType::Oci,
        other => {
            return Err(Status::invalid_argument(format!(
                "unsupported repository type {other:?}"
            )))
        }
    };
    Ok((repo_url, repo_type))
}

pub fn source(
    source: Option<&ApplicationSource>,
    enabled: &std::collections::HashMap<String, bool>,
) -> pipeline::Source {
    let default = ApplicationSource::default();
    let source = source.unwrap_or(&default);
    let mut explicit_types = Vec::new();
    // Argo CD's order, which its "multiple sources" error lists.
    if source.kustomize.is_some() {
        explicit_types.push(SourceType::Kustomize);
    }
    if source.helm.is_some() {
        explicit_types.push(SourceType::Helm);
    }
    if source.directory.is_some() {
        explicit_types.push(SourceType::Directory);
    }
    if source.plugin.is_some() {
        explicit_types.push(SourceType::Plugin);
    }
    let dir = source.directory.clone().unwrap_or_default();
    pipeline::Source {
        path: source.path.clone(),
        chart: source.chart.clone(),
        ref_name: source.r#ref.clone(),
        explicit_types,
        directory: directory::Options {
            recurse: dir.recurse,
            include: dir.include,
            exclude: dir.exclude,
            disable_extension_filter: dir.disable_extension_filter,
            jsonnet_enabled: enabled.get("Directory").copied().unwrap_or(true),
            jsonnet: Default::default(),
        },
    }
}

pub fn manifest_request(request: ManifestRequest) -> Result<pipeline::ManifestRequest, Status> {
    let (repo_url, repo_type) = repository(request.repo.as_ref())?;
    if request.repo.as_ref().is_some_and(|repo| repo.enable_lfs) {
        return Err(Status::unimplemented(
            "Git LFS (enableLfs) is not implemented yet",
        ));
    }
    let application_source = request.application_source.as_ref();
    let source = source(application_source, &request.enabled_source_types);
    let revision = if request.revision.is_empty() {
        application_source
            .map(|s| s.target_revision.clone())
            .unwrap_or_default()
    } else {
        request.revision.clone()
    };
    Ok(pipeline::ManifestRequest {
        repo_url,
        repo_type,
        revision,
        source,
        tracking: Tracking {
            method: TrackingMethod::parse(&request.tracking_method),
            app_label_key: request.app_label_key,
            app_name: request.app_name,
            namespace: request.namespace,
            installation_id: request.installation_id,
        },
        enabled_source_types: request.enabled_source_types,
        has_multiple_sources: request.has_multiple_sources,
    })
}

/// The source an Application's `sourceIndex` selects, as Argo CD picks it:
/// with a source hydrator, a negative index is the dry source and any other
/// the sync source; else `sources[index]` (0 when negative); else `source`.
pub fn source_by_index(app: Option<&Application>, index: i64) -> ApplicationSource {
    let Some(spec) = app.and_then(|a| a.spec.as_ref()) else {
        return ApplicationSource::default();
    };
    if let Some(hydrator) = &spec.source_hydrator {
        if index < 0 {
            let dry = hydrator.dry_source.clone().unwrap_or_default();
            return ApplicationSource {
                repo_url: dry.repo_url,
                target_revision: dry.target_revision,
                path: dry.path,
                helm: dry.helm,
                kustomize: dry.kustomize,
                directory: dry.directory,
                plugin: dry.plugin,
                ..Default::default()
            };
        }
        let sync = hydrator.sync_source.clone().unwrap_or_default();
        return ApplicationSource {
            repo_url: dry_repo_or(&hydrator.dry_source, &sync.repo_url),
            target_revision: sync.target_branch,
            path: sync.path,
            ..Default::default()
        };
    }
    if !spec.sources.is_empty() {
        let i = usize::try_from(index.max(0)).unwrap_or(0);
        return spec.sources.get(i).cloned().unwrap_or_default();
    }
    spec.source.clone().unwrap_or_default()
}

fn dry_repo_or(dry: &Option<super::proto::v1alpha1::DrySource>, sync_repo: &str) -> String {
    if !sync_repo.is_empty() {
        return sync_repo.to_string();
    }
    dry.as_ref().map(|d| d.repo_url.clone()).unwrap_or_default()
}
