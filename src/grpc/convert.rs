//! Protobuf -> domain conversion and request validation. Bad input becomes
//! `INVALID_ARGUMENT` here, before any work starts.

use tonic::Status;

use std::collections::BTreeMap;

use super::proto::k8s::IntOrString;
use super::proto::repository::{ManifestRequest, UpdateRevisionForPathsRequest};
use super::proto::v1alpha1::{
    Application, ApplicationSource, ApplicationSourceDirectory, ApplicationSourceHelm,
    ApplicationSourceKustomize, JsonnetVar, KustomizeOptions, KustomizePatch, Repository,
};
use crate::domain::{RepoUrl, Tracking, TrackingMethod};
use crate::pipeline::{self, RepoType};
use crate::render::{kustomize, spec};

/// The repository URL and type, or `INVALID_ARGUMENT`.
pub fn repository(repo: Option<&Repository>) -> Result<(RepoUrl, RepoType), Status> {
    let repo = repo.ok_or_else(|| Status::invalid_argument("must pass a valid repo"))?;
    let repo_url = RepoUrl::parse(&repo.repo)
        .map_err(|err| Status::invalid_argument(format!("invalid repo: {err}")))?
        .with_credentials(credentials(repo)?);
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

/// The credential and transport fields of a `Repository`.
fn credentials(repo: &Repository) -> Result<crate::domain::Credentials, Status> {
    // Argo CD's precedence: a password or bearer token, an SSH key and a
    // GitHub App each win over a cloud identity; workload identity over a
    // service principal, which needs all three fields.
    let earlier = !repo.password.is_empty()
        || !repo.bearer_token.is_empty()
        || !repo.ssh_private_key.is_empty()
        || (!repo.github_app_private_key.is_empty() && repo.github_app_id != 0);
    let cloud = if earlier {
        None
    } else if !repo.gcp_service_account_key.is_empty() {
        Some(crate::domain::CloudIdentity::GoogleServiceAccount {
            key_json: repo.gcp_service_account_key.clone(),
        })
    } else if repo.use_azure_workload_identity {
        Some(crate::domain::CloudIdentity::AzureWorkloadIdentity)
    } else if !repo.azure_service_principal_client_id.is_empty()
        && !repo.azure_service_principal_client_secret.is_empty()
        && !repo.azure_service_principal_tenant_id.is_empty()
    {
        Some(crate::domain::CloudIdentity::AzureServicePrincipal {
            client_id: repo.azure_service_principal_client_id.clone(),
            client_secret: repo.azure_service_principal_client_secret.clone(),
            tenant_id: repo.azure_service_principal_tenant_id.clone(),
            authority: repo.azure_active_directory_endpoint.clone(),
        })
    } else {
        None
    };
    let github_app =
        (repo.github_app_id != 0 || !repo.github_app_private_key.is_empty()).then(|| {
            crate::domain::GitHubApp {
                app_id: repo.github_app_id,
                installation_id: repo.github_app_installation_id,
                private_key: repo.github_app_private_key.clone(),
                enterprise_base_url: repo.github_app_enterprise_base_url.clone(),
            }
        });
    Ok(crate::domain::Credentials {
        username: repo.username.clone(),
        password: repo.password.clone(),
        bearer_token: repo.bearer_token.clone(),
        ssh_private_key: repo.ssh_private_key.clone(),
        tls_client_cert: repo.tls_client_cert_data.clone(),
        tls_client_key: repo.tls_client_cert_key.clone(),
        insecure: repo.insecure || repo.insecure_ignore_host_key,
        force_http_basic_auth: repo.force_http_basic_auth,
        proxy: repo.proxy.clone(),
        no_proxy: repo.no_proxy.clone(),
        github_app,
        cloud,
        plain_http: repo.insecure_oci_force_http,
    })
}

fn helm_spec(helm: ApplicationSourceHelm) -> Result<spec::HelmSpec, Status> {
    let values = String::from_utf8(helm.values)
        .map_err(|_| Status::invalid_argument("helm values are not valid UTF-8"))?;
    let values_object = match helm.values_object.map(|raw| raw.raw) {
        Some(raw) if !raw.is_empty() => Some(serde_json::from_slice(&raw).map_err(|err| {
            Status::invalid_argument(format!("helm valuesObject is not valid JSON: {err}"))
        })?),
        _ => None,
    };
    Ok(spec::HelmSpec {
        value_files: helm.value_files,
        parameters: helm
            .parameters
            .into_iter()
            .map(|p| spec::HelmParameter {
                name: p.name,
                value: p.value,
                force_string: p.force_string,
            })
            .collect(),
        release_name: helm.release_name,
        values,
        file_parameters: helm
            .file_parameters
            .into_iter()
            .map(|p| spec::HelmFileParameter {
                name: p.name,
                path: p.path,
            })
            .collect(),
        version: helm.version,
        pass_credentials: helm.pass_credentials,
        ignore_missing_value_files: helm.ignore_missing_value_files,
        skip_crds: helm.skip_crds,
        values_object,
        namespace: helm.namespace,
        kube_version: helm.kube_version,
        api_versions: helm.api_versions,
        skip_tests: helm.skip_tests,
        skip_schema_validation: helm.skip_schema_validation,
    })
}

fn int_or_string(value: Option<IntOrString>) -> serde_json::Value {
    match value {
        // Type 1 is a string, anything else an int (Kubernetes' IntOrString).
        Some(v) if v.r#type == 1 => serde_json::Value::String(v.str_val),
        Some(v) => serde_json::Value::from(v.int_val),
        None => serde_json::Value::from(0),
    }
}

/// A Kustomize patch as it appears in kustomization.yaml (empty fields
/// left out, as Go's `omitempty` does).
fn kustomize_patch(patch: KustomizePatch) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if !patch.path.is_empty() {
        out.insert("path".into(), patch.path.into());
    }
    if !patch.patch.is_empty() {
        out.insert("patch".into(), patch.patch.into());
    }
    if let Some(target) = patch.target {
        let mut selector = serde_json::Map::new();
        if let Some(res_id) = target.res_id {
            if let Some(gvk) = res_id.gvk {
                for (key, value) in [
                    ("group", gvk.group),
                    ("version", gvk.version),
                    ("kind", gvk.kind),
                ] {
                    if !value.is_empty() {
                        selector.insert(key.into(), value.into());
                    }
                }
            }
            for (key, value) in [("name", res_id.name), ("namespace", res_id.namespace)] {
                if !value.is_empty() {
                    selector.insert(key.into(), value.into());
                }
            }
        }
        for (key, value) in [
            ("labelSelector", target.label_selector),
            ("annotationSelector", target.annotation_selector),
        ] {
            if !value.is_empty() {
                selector.insert(key.into(), value.into());
            }
        }
        if !selector.is_empty() {
            out.insert("target".into(), selector.into());
        }
    }
    if !patch.options.is_empty() {
        let options: BTreeMap<String, bool> = patch.options.into_iter().collect();
        out.insert(
            "options".into(),
            serde_json::to_value(options).unwrap_or_default(),
        );
    }
    serde_json::Value::Object(out)
}

fn kustomize_spec(k: ApplicationSourceKustomize) -> spec::KustomizeSpec {
    spec::KustomizeSpec {
        name_prefix: k.name_prefix,
        name_suffix: k.name_suffix,
        images: k.images,
        common_labels: k.common_labels.into_iter().collect(),
        version: k.version,
        common_annotations: k.common_annotations.into_iter().collect(),
        force_common_labels: k.force_common_labels,
        force_common_annotations: k.force_common_annotations,
        namespace: k.namespace,
        common_annotations_envsubst: k.common_annotations_envsubst,
        replicas: k
            .replicas
            .into_iter()
            .map(|r| spec::KustomizeReplica {
                name: r.name,
                count: int_or_string(r.count),
            })
            .collect(),
        patches: k.patches.into_iter().map(kustomize_patch).collect(),
        components: k.components,
        label_without_selector: k.label_without_selector,
        kube_version: k.kube_version,
        api_versions: k.api_versions,
        ignore_missing_components: k.ignore_missing_components,
        label_include_templates: k.label_include_templates,
    }
}

fn jsonnet_vars(vars: Vec<JsonnetVar>) -> Vec<spec::JsonnetVar> {
    vars.into_iter()
        .map(|v| spec::JsonnetVar {
            name: v.name,
            value: v.value,
            code: v.code,
        })
        .collect()
}

fn directory_spec(d: ApplicationSourceDirectory) -> spec::DirectorySpec {
    let jsonnet = d.jsonnet.unwrap_or_default();
    spec::DirectorySpec {
        recurse: d.recurse,
        jsonnet: spec::JsonnetSpec {
            ext_vars: jsonnet_vars(jsonnet.ext_vars),
            tlas: jsonnet_vars(jsonnet.tlas),
            libs: jsonnet.libs,
        },
        exclude: d.exclude,
        include: d.include,
        disable_extension_filter: d.disable_extension_filter,
    }
}

/// The source to render, in domain terms.
pub fn source(source: Option<&ApplicationSource>) -> Result<spec::SourceSpec, Status> {
    let source = source.cloned().unwrap_or_default();
    Ok(spec::SourceSpec {
        repo_url: source.repo_url,
        path: source.path,
        target_revision: source.target_revision,
        chart: source.chart,
        ref_name: source.r#ref,
        name: source.name,
        helm: source.helm.map(helm_spec).transpose()?,
        kustomize: source.kustomize.map(kustomize_spec),
        directory: source.directory.map(directory_spec),
        // Plugins are a later milestone; only presence matters for now.
        plugin: source.plugin.map(plugin_spec),
        tag_prefix: source.tag_prefix,
    })
}

fn plugin_spec(plugin: super::proto::v1alpha1::ApplicationSourcePlugin) -> spec::PluginSpec {
    spec::PluginSpec {
        name: plugin.name,
        env: plugin
            .env
            .into_iter()
            .map(|e| spec::PluginEnv {
                name: e.name,
                value: e.value,
            })
            .collect(),
        parameters: plugin
            .parameters
            .into_iter()
            .map(|p| spec::PluginParameter {
                name: p.name,
                string: p.string_value,
                map: p.map_value.map(|m| m.map.into_iter().collect()),
                array: p.array_value.map(|a| a.array),
            })
            .collect(),
    }
}

fn kustomize_options(options: Option<KustomizeOptions>) -> kustomize::KustomizeOptions {
    let options = options.unwrap_or_default();
    kustomize::KustomizeOptions {
        build_options: options.build_options,
        binary_path: options.binary_path,
        versions: options
            .versions
            .into_iter()
            .map(|v| kustomize::KustomizeVersion {
                name: v.name,
                path: v.path,
            })
            .collect(),
    }
}

pub fn manifest_request(request: ManifestRequest) -> Result<pipeline::ManifestRequest, Status> {
    let (repo_url, repo_type) = repository(request.repo.as_ref())?;
    let application_source = request.application_source.as_ref();
    let source = source(application_source)?;
    let revision = if request.revision.is_empty() {
        source.target_revision.clone()
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
        project_name: request.project_name,
        kube_version: request.kube_version,
        api_versions: request.api_versions,
        kustomize_options: kustomize_options(request.kustomize_options),
        values_file_schemes: request.helm_options.map(|h| h.values_file_schemes),
        enabled_source_types: request.enabled_source_types,
        has_multiple_sources: request.has_multiple_sources,
        no_cache: request.no_cache,
        no_revision_cache: request.no_revision_cache,
        manifest_generate_paths: request.annotation_manifest_generate_paths,
        enable_oci: request.repo.as_ref().is_some_and(|repo| repo.enable_oci),
        enable_lfs: request.repo.as_ref().is_some_and(|repo| repo.enable_lfs),
        ref_sources: ref_sources(request.ref_sources)?,
        ref_commits: Default::default(),
    })
}

/// The `ref:` sources of a multi-source application, by `$name`.
pub fn ref_sources(
    sources: std::collections::HashMap<String, super::proto::v1alpha1::RefTarget>,
) -> Result<BTreeMap<String, pipeline::RefSource>, Status> {
    sources
        .into_iter()
        .map(|(name, target)| {
            let (repo_url, _) = repository(target.repo.as_ref()).map_err(|status| {
                Status::invalid_argument(format!("ref source {name}: {}", status.message()))
            })?;
            Ok((
                name,
                pipeline::RefSource {
                    repo_url,
                    target_revision: target.target_revision,
                    chart: target.chart,
                },
            ))
        })
        .collect()
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

/// An `UpdateRevisionForPathsRequest` in domain terms.
pub fn update_revision_request(
    request: UpdateRevisionForPathsRequest,
) -> Result<pipeline::UpdateRevisionRequest, Status> {
    let repo = request
        .repo
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("must pass a valid repo"))?;
    let type_given = !repo.r#type.is_empty();
    let (repo_url, repo_type) = repository(Some(repo))?;
    let source = source(request.application_source.as_ref())?;
    // Argo CD's rule: a repository without a type is git, unless the
    // source is a Helm chart or an OCI artifact.
    let is_oci = repo.repo.trim().to_ascii_lowercase().starts_with("oci://");
    let is_git = repo_type == RepoType::Git && (type_given || (source.chart.is_empty() && !is_oci));
    let uses_ref_sources = request.has_multiple_sources
        && !request.ref_sources.is_empty()
        && source.helm.as_ref().is_some_and(|helm| {
            helm.value_files
                .iter()
                .chain(helm.file_parameters.iter().map(|p| &p.path))
                .any(|file| file.starts_with('$'))
        });
    Ok(pipeline::UpdateRevisionRequest {
        repo_url,
        is_git,
        source,
        tracking: Tracking {
            method: TrackingMethod::parse(&request.tracking_method),
            app_label_key: request.app_label_key,
            app_name: request.app_name,
            namespace: request.namespace,
            installation_id: request.installation_id,
        },
        kube_version: request.kube_version,
        api_versions: request.api_versions,
        has_multiple_sources: request.has_multiple_sources,
        synced_revision: request.synced_revision,
        revision: request.revision,
        paths: request.paths,
        no_revision_cache: request.no_revision_cache,
        uses_ref_sources,
    })
}

/// Revision metadata as Argo CD's message.
pub fn revision_metadata(
    metadata: crate::git::inspect::RevisionMetadata,
) -> super::proto::v1alpha1::RevisionMetadata {
    use super::proto::v1alpha1::{CommitMetadata, RevisionMetadata, RevisionReference};
    RevisionMetadata {
        author: metadata.author,
        date: Some(super::proto::k8s::Time {
            seconds: metadata.date_seconds,
            nanos: 0,
        }),
        tags: metadata.tags,
        message: metadata.message,
        references: metadata
            .references
            .into_iter()
            .map(|reference| RevisionReference {
                commit: reference.commit.map(|commit| CommitMetadata {
                    author: commit.author,
                    date: commit.date,
                    subject: commit.subject,
                    body: commit.body,
                    sha: commit.sha,
                    repo_url: commit.repo_url,
                }),
            })
            .collect(),
        ..Default::default()
    }
}
