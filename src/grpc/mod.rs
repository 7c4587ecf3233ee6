//! The gRPC transport: Argo CD's `repository.RepoServerService` (plus
//! health and version), converting protobuf to domain types and domain
//! errors to status codes. The only module that knows protobuf.

mod convert;
mod status;

use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::pipeline::Pipeline;
use proto::repository::repo_server_service_server::RepoServerService;
use proto::repository::*;
use proto::v1alpha1;

/// Code generated from `proto/` at build time.
pub mod metrics;

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    pub mod k8s {
        tonic::include_proto!("k8s");
    }
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");
    }
    pub mod repository {
        tonic::include_proto!("repository");
    }
    pub mod version {
        tonic::include_proto!("version");
    }
    pub mod plugin {
        tonic::include_proto!("plugin");
    }
}

/// The RepoServerService implementation.
pub struct RepoServer {
    pipeline: Arc<Pipeline>,
    /// Local directories that must never appear in an error message.
    private_paths: Vec<PathBuf>,
}

impl RepoServer {
    pub fn new(pipeline: Arc<Pipeline>, private_paths: Vec<PathBuf>) -> Self {
        RepoServer {
            pipeline,
            private_paths,
        }
    }

    fn status(&self, err: crate::pipeline::Error) -> Status {
        status::to_status(err, &self.private_paths)
    }
}

/// A manifest result as Argo CD's response.
fn manifest_response(result: crate::pipeline::ManifestResult) -> ManifestResponse {
    ManifestResponse {
        manifests: result.manifests,
        revision: result.revision,
        source_type: result
            .source_type
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        commands: result.commands,
        ..Default::default()
    }
}

/// The caller's W3C trace context (Argo CD's clients send it), for the
/// request's span (not recorded when absent).
fn traceparent(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
}

/// Git-only RPCs on a Helm or OCI repository: the caller's mistake.
fn only_git(repo_type: crate::pipeline::RepoType, method: &str) -> Result<(), Status> {
    if repo_type == crate::pipeline::RepoType::Git {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "{method} reads a git repository; this is a Helm or OCI repository"
    )))
}

/// GPG verification (a project's signature keys, source integrity
/// policies) is not built: refuse rather than answer unverified.
fn refuse_signature_checks(check: bool, policy: bool) -> Result<(), Status> {
    if check || policy {
        return Err(Status::unimplemented(
            "GPG signature verification (signature keys / source integrity) is not implemented yet",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl RepoServerService for RepoServer {
    #[tracing::instrument(name = "GenerateManifest", skip_all, fields(traceparent = traceparent(request.metadata()), app = %request.get_ref().app_name))]
    async fn generate_manifest(
        &self,
        request: Request<ManifestRequest>,
    ) -> Result<Response<ManifestResponse>, Status> {
        let request = convert::manifest_request(request.into_inner())?;
        let result = self
            .pipeline
            .generate_manifest(request)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(manifest_response(result)))
    }

    #[tracing::instrument(name = "GenerateManifestWithFiles", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn generate_manifest_with_files(
        &self,
        request: Request<Streaming<ManifestRequestWithFiles>>,
    ) -> Result<Response<ManifestResponse>, Status> {
        use manifest_request_with_files::Part;
        let mut stream = request.into_inner();
        // The order is fixed: the request, the metadata, then chunks.
        let request = match stream.message().await?.and_then(|m| m.part) {
            Some(Part::Request(request)) => convert::manifest_request(request)?,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must carry the manifest request",
                ))
            }
        };
        let checksum = match stream.message().await?.and_then(|m| m.part) {
            Some(Part::Metadata(metadata)) => metadata.checksum,
            _ => {
                return Err(Status::invalid_argument(
                    "the second message must carry the file metadata (checksum)",
                ))
            }
        };
        let mut upload = self.pipeline.new_upload().map_err(|err| self.status(err))?;
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(Part::Chunk(chunk)) => upload
                    .push(&chunk.chunk)
                    .map_err(|err| self.status(crate::pipeline::Error::Upload(err)))?,
                _ => {
                    return Err(Status::invalid_argument(
                        "after the metadata, only file chunks may follow",
                    ))
                }
            }
        }
        let result = self
            .pipeline
            .generate_from_upload(request, upload, checksum)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(manifest_response(result)))
    }

    #[tracing::instrument(name = "TestRepository", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn test_repository(
        &self,
        request: Request<TestRepositoryRequest>,
    ) -> Result<Response<TestRepositoryResponse>, Status> {
        let (repo_url, repo_type) = convert::repository(request.get_ref().repo.as_ref())?;
        self.pipeline
            .test_repository(&repo_url, repo_type)
            .await
            .map_err(|err| self.status(err))?;
        // Argo CD always answers false here; success is the OK status.
        Ok(Response::new(TestRepositoryResponse {
            verified_repository: false,
        }))
    }

    #[tracing::instrument(name = "ResolveRevision", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn resolve_revision(
        &self,
        request: Request<ResolveRevisionRequest>,
    ) -> Result<Response<ResolveRevisionResponse>, Status> {
        let request = request.into_inner();
        let (repo_url, repo_type) = convert::repository(request.repo.as_ref())?;
        let source = convert::source_by_index(request.app.as_ref(), request.source_index);
        let is_oci = source.repo_url.to_ascii_lowercase().starts_with("oci://")
            || repo_url.as_str().to_ascii_lowercase().starts_with("oci://");
        let revision =
            if is_oci || !source.chart.is_empty() || repo_type != crate::pipeline::RepoType::Git {
                self.pipeline
                    .resolve_chart_revision(
                        &repo_url,
                        &source.chart,
                        &request.ambiguous_revision,
                        request.repo.as_ref().is_some_and(|r| r.enable_oci),
                        request.no_revision_cache,
                    )
                    .await
            } else {
                self.pipeline
                    .resolve_revision(
                        &repo_url,
                        &request.ambiguous_revision,
                        &source.tag_prefix,
                        request.no_revision_cache,
                    )
                    .await
            }
            .map_err(|err| self.status(err))?;
        Ok(Response::new(ResolveRevisionResponse {
            ambiguous_revision: format!("{} ({})", request.ambiguous_revision, revision),
            revision,
        }))
    }

    #[tracing::instrument(name = "ListRefs", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn list_refs(&self, request: Request<ListRefsRequest>) -> Result<Response<Refs>, Status> {
        let (repo_url, _) = convert::repository(request.get_ref().repo.as_ref())?;
        let refs = self
            .pipeline
            .list_refs(&repo_url)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(Refs {
            branches: refs.branches,
            tags: refs.tags,
        }))
    }

    #[tracing::instrument(name = "ListOCITags", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn list_oci_tags(
        &self,
        request: Request<ListRefsRequest>,
    ) -> Result<Response<Refs>, Status> {
        let (repo_url, _) = convert::repository(request.get_ref().repo.as_ref())?;
        let tags = self
            .pipeline
            .oci_tags(&repo_url)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(Refs {
            tags,
            ..Default::default()
        }))
    }

    #[tracing::instrument(name = "ListApps", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn list_apps(
        &self,
        request: Request<ListAppsRequest>,
    ) -> Result<Response<AppList>, Status> {
        let request = request.into_inner();
        let (repo_url, repo_type) = convert::repository(request.repo.as_ref())?;
        only_git(repo_type, "ListApps")?;
        let apps = self
            .pipeline
            .list_apps(&repo_url, &request.revision, &request.enabled_source_types)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(AppList {
            apps: apps.into_iter().collect(),
        }))
    }

    #[tracing::instrument(name = "ListPlugins", skip_all)]
    async fn list_plugins(&self, _request: Request<()>) -> Result<Response<PluginList>, Status> {
        let names = self
            .pipeline
            .plugin_names()
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(PluginList {
            items: names.into_iter().map(|name| PluginInfo { name }).collect(),
        }))
    }

    #[tracing::instrument(name = "GetAppDetails", skip_all, fields(traceparent = traceparent(request.metadata()), app = %request.get_ref().app_name))]
    async fn get_app_details(
        &self,
        request: Request<RepoServerAppDetailsQuery>,
    ) -> Result<Response<RepoAppDetailsResponse>, Status> {
        use crate::pipeline::AppDetails;
        let query = request.into_inner();
        let source = query.source.clone();
        let request = convert::manifest_request(ManifestRequest {
            repo: query.repo,
            revision: source
                .as_ref()
                .map(|s| s.target_revision.clone())
                .unwrap_or_default(),
            app_name: query.app_name,
            application_source: source,
            kustomize_options: query.kustomize_options,
            enabled_source_types: query.enabled_source_types,
            helm_options: query.helm_options,
            no_cache: query.no_cache,
            no_revision_cache: query.no_revision_cache,
            tracking_method: query.tracking_method,
            ..Default::default()
        })?;
        let (source_type, details) = self
            .pipeline
            .app_details(request)
            .await
            .map_err(|err| self.status(err))?;
        let mut response = RepoAppDetailsResponse {
            r#type: source_type.as_str().to_string(),
            ..Default::default()
        };
        match details {
            AppDetails::Directory => response.directory = Some(DirectoryAppSpec {}),
            AppDetails::Plugin { announcements } => {
                response.plugin = Some(PluginAppSpec {
                    parameters_announcement: announcements,
                })
            }
            AppDetails::Kustomize { images } => {
                response.kustomize = Some(KustomizeAppSpec { images })
            }
            AppDetails::Helm {
                value_files,
                values,
                parameters,
                file_parameters,
            } => {
                response.helm = Some(HelmAppSpec {
                    value_files,
                    values,
                    parameters: parameters
                        .into_iter()
                        .map(|(name, value)| v1alpha1::HelmParameter {
                            name,
                            value,
                            ..Default::default()
                        })
                        .collect(),
                    file_parameters: file_parameters
                        .into_iter()
                        .map(|(name, path)| v1alpha1::HelmFileParameter { name, path })
                        .collect(),
                    ..Default::default()
                })
            }
        }
        Ok(Response::new(response))
    }

    #[tracing::instrument(name = "GetRevisionMetadata", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn get_revision_metadata(
        &self,
        request: Request<RepoServerRevisionMetadataRequest>,
    ) -> Result<Response<v1alpha1::RevisionMetadata>, Status> {
        let request = request.into_inner();
        let (repo_url, repo_type) = convert::repository(request.repo.as_ref())?;
        only_git(repo_type, "GetRevisionMetadata")?;
        refuse_signature_checks(request.check_signature, request.source_integrity.is_some())?;
        let metadata = self
            .pipeline
            .revision_metadata(&repo_url, &request.revision)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(convert::revision_metadata(metadata)))
    }

    #[tracing::instrument(name = "GetOCIMetadata", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn get_oci_metadata(
        &self,
        request: Request<RepoServerRevisionChartDetailsRequest>,
    ) -> Result<Response<v1alpha1::OciMetadata>, Status> {
        let request = request.into_inner();
        let (repo_url, _) = convert::repository(request.repo.as_ref())?;
        let annotations = self
            .pipeline
            .oci_metadata(&repo_url, &request.revision)
            .await
            .map_err(|err| self.status(err))?;
        let get = |name: &str| annotations.get(name).cloned().unwrap_or_default();
        // As Argo CD: the image URL is not reported yet.
        Ok(Response::new(v1alpha1::OciMetadata {
            created_at: get("org.opencontainers.image.created"),
            authors: get("org.opencontainers.image.authors"),
            docs_url: get("org.opencontainers.image.documentation"),
            source_url: get("org.opencontainers.image.source"),
            version: get("org.opencontainers.image.version"),
            description: get("org.opencontainers.image.description"),
            ..Default::default()
        }))
    }

    #[tracing::instrument(name = "GetRevisionChartDetails", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn get_revision_chart_details(
        &self,
        request: Request<RepoServerRevisionChartDetailsRequest>,
    ) -> Result<Response<v1alpha1::ChartDetails>, Status> {
        let request = request.into_inner();
        let (repo_url, _) = convert::repository(request.repo.as_ref())?;
        let oci = repo_url.as_str().to_ascii_lowercase().starts_with("oci://")
            || request.repo.as_ref().is_some_and(|r| r.enable_oci);
        let details = self
            .pipeline
            .chart_details(&repo_url, &request.name, &request.revision, oci)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(v1alpha1::ChartDetails {
            description: details.description,
            home: details.home,
            maintainers: details.maintainers,
        }))
    }

    #[tracing::instrument(name = "GetHelmCharts", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn get_helm_charts(
        &self,
        request: Request<HelmChartsRequest>,
    ) -> Result<Response<HelmChartsResponse>, Status> {
        let (repo_url, _) = convert::repository(request.get_ref().repo.as_ref())?;
        if repo_url.as_str().starts_with("oci://")
            || request
                .get_ref()
                .repo
                .as_ref()
                .is_some_and(|r| r.enable_oci)
        {
            return Err(Status::invalid_argument(format!(
                "GetHelmCharts lists the index of a Helm repository; {} is an OCI registry, \
                 which has none (ListOCITags lists its versions)",
                repo_url.redacted()
            )));
        }
        let charts = self
            .pipeline
            .helm_charts(&repo_url)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(HelmChartsResponse {
            items: charts
                .into_iter()
                .map(|(name, versions)| HelmChart { name, versions })
                .collect(),
        }))
    }

    #[tracing::instrument(name = "GetGitFiles", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn get_git_files(
        &self,
        request: Request<GitFilesRequest>,
    ) -> Result<Response<GitFilesResponse>, Status> {
        let request = request.into_inner();
        let (repo_url, repo_type) = convert::repository(request.repo.as_ref())?;
        only_git(repo_type, "GetGitFiles")?;
        refuse_signature_checks(request.verify_commit, request.source_integrity.is_some())?;
        let files = self
            .pipeline
            .git_files(
                crate::pipeline::Commit {
                    repo_url: &repo_url,
                    revision: &request.revision,
                    fresh: request.no_revision_cache,
                    submodules: request.submodule_enabled,
                },
                &request.path,
                request.new_git_file_globbing_enabled,
            )
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(GitFilesResponse {
            map: files.into_iter().collect(),
        }))
    }

    #[tracing::instrument(name = "GetGitDirectories", skip_all, fields(traceparent = traceparent(request.metadata())))]
    async fn get_git_directories(
        &self,
        request: Request<GitDirectoriesRequest>,
    ) -> Result<Response<GitDirectoriesResponse>, Status> {
        let request = request.into_inner();
        let (repo_url, repo_type) = convert::repository(request.repo.as_ref())?;
        only_git(repo_type, "GetGitDirectories")?;
        refuse_signature_checks(request.verify_commit, request.source_integrity.is_some())?;
        let paths = self
            .pipeline
            .git_directories(crate::pipeline::Commit {
                repo_url: &repo_url,
                revision: &request.revision,
                fresh: request.no_revision_cache,
                submodules: request.submodule_enabled,
            })
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(GitDirectoriesResponse { paths }))
    }

    #[tracing::instrument(name = "UpdateRevisionForPaths", skip_all, fields(traceparent = traceparent(request.metadata()), app = %request.get_ref().app_name))]
    async fn update_revision_for_paths(
        &self,
        request: Request<UpdateRevisionForPathsRequest>,
    ) -> Result<Response<UpdateRevisionForPathsResponse>, Status> {
        let request = convert::update_revision_request(request.into_inner())?;
        let result = self
            .pipeline
            .update_revision_for_paths(request)
            .await
            .map_err(|err| self.status(err))?;
        Ok(Response::new(UpdateRevisionForPathsResponse {
            changes: result.changes,
            revision: result.revision,
        }))
    }
}

/// Argo CD's VersionService.
pub struct VersionServer;

#[tonic::async_trait]
impl proto::version::version_service_server::VersionService for VersionServer {
    async fn version(
        &self,
        _request: Request<()>,
    ) -> Result<Response<proto::version::VersionMessage>, Status> {
        Ok(Response::new(proto::version::VersionMessage {
            version: format!("manifold-v{}", env!("CARGO_PKG_VERSION")),
            platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
            ..Default::default()
        }))
    }
}
