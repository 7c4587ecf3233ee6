//! Helm charts from Helm repositories (a source with `chart` and a
//! repository of type `helm`): the index (cached for the revision-cache
//! period), the version a `targetRevision` names (a version, or the
//! highest satisfying a constraint), the archive (downloaded once), and a
//! render of the extracted chart, cached by chart version.

use std::sync::Arc;

use super::{Error, ManifestRequest, ManifestResult, Pipeline, RenderInputs, Served};
use crate::cache;
use crate::charts::{oci, Index};
use crate::domain::RepoUrl;

/// The registry repository `repo_url` (plus `chart`) names.
fn registry_reference(repo_url: &RepoUrl, chart: &str) -> Result<oci::Reference, Error> {
    let plain_http = repo_url.credentials().is_some_and(|c| c.plain_http);
    oci::Reference::parse(repo_url.as_str(), chart, plain_http).ok_or_else(|| Error::Invalid {
        message: format!("{} does not name an OCI repository", repo_url.redacted()),
    })
}

/// Where a chart or artifact comes from.
enum Origin {
    Repository(Index),
    Registry(oci::Reference),
}

/// Extracts the chart (or artifact) at `version` into a new uploaded
/// snapshot; the request's app path then points into it (a chart archive
/// holds the chart in a directory named after the chart's last path
/// segment; an artifact is the tree itself).
async fn materialise(
    renderer: &super::Renderer,
    charts: &crate::charts::Charts,
    origin: &Origin,
    mut request: ManifestRequest,
    version: &str,
) -> Result<(Arc<crate::source::Snapshot>, ManifestRequest), Error> {
    let dir = renderer.snapshots.new_upload_dir()?;
    match origin {
        Origin::Repository(index) => charts
            .extract(
                &request.repo_url,
                index,
                &request.source.chart,
                version,
                dir.path(),
            )
            .await
            .map_err(Error::Charts)?,
        Origin::Registry(reference) => {
            extract_artifact(
                &renderer.metrics.oci,
                charts,
                &request.repo_url,
                reference,
                version,
                dir.path(),
            )
            .await?
        }
    }
    let snapshot = renderer.snapshots.adopt(dir, version)?;
    if !request.source.chart.is_empty() {
        request.source.path = request
            .source
            .chart
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
    }
    Ok((snapshot, request))
}

/// Extracts the artifact `version` names into `destination`: its Helm
/// chart layer, or its one tar+gzip layer.
async fn extract_artifact(
    metrics: &crate::metrics::OciMetrics,
    charts: &crate::charts::Charts,
    repo_url: &RepoUrl,
    reference: &oci::Reference,
    version: &str,
    destination: &std::path::Path,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let extracted = extract_layer(charts, repo_url, reference, version, destination).await;
    metrics.record(
        &repo_url.redacted(),
        "extract",
        version,
        started,
        extracted.is_err(),
    );
    extracted
}

async fn extract_layer(
    charts: &crate::charts::Charts,
    repo_url: &RepoUrl,
    reference: &oci::Reference,
    version: &str,
    destination: &std::path::Path,
) -> Result<(), Error> {
    let manifest = charts
        .oci_manifest(repo_url, reference, version)
        .await
        .map_err(Error::Charts)?;
    let layers = manifest.content_layers();
    let [layer] = layers.as_slice() else {
        return Err(Error::NotImplemented {
            what: format!(
                "OCI artifacts with {} content layers (one Helm chart or tar+gzip layer is supported)",
                layers.len()
            ),
        });
    };
    let blob = charts
        .oci_blob(repo_url, reference, layer)
        .await
        .map_err(Error::Charts)?;
    let limits = charts.extraction_limits();
    let destination = destination.to_path_buf();
    let chart = reference.repository.clone();
    let version = version.to_string();
    tokio::task::spawn_blocking(move || {
        crate::source::tarball::extract(&blob[..], &destination, &limits)
    })
    .await
    .map_err(super::join_error)?
    .map(|_| ())
    .map_err(|source| {
        Error::Charts(crate::charts::Error::Archive {
            chart,
            version,
            source,
        })
    })
}

/// What `GetRevisionChartDetails` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartDetails {
    pub description: String,
    pub home: String,
    pub maintainers: Vec<String>,
}

impl Pipeline {
    /// The repository's index: from the cache unless `fresh`.
    pub(super) async fn chart_index(
        &self,
        repo_url: &RepoUrl,
        fresh: bool,
    ) -> Result<Index, Error> {
        let key = cache::key::helm_index(&repo_url.normalized());
        let ttl = self.cache.config.revision_cache_expiration;
        if !fresh {
            if let Some(index) = self
                .cache
                .get("helm-index", &key, ttl)
                .await
                .and_then(|bytes| serde_json::from_slice::<Index>(&bytes).ok())
            {
                return Ok(index);
            }
        }
        let index = self.charts.index(repo_url).await.map_err(Error::Charts)?;
        if let Ok(bytes) = serde_json::to_vec(&index) {
            self.cache.set(&key, &bytes, ttl).await;
        }
        Ok(index)
    }

    /// `GetHelmCharts`: every chart of the repository and its versions.
    pub async fn helm_charts(
        &self,
        repo_url: &RepoUrl,
    ) -> Result<Vec<(String, Vec<String>)>, Error> {
        // As Argo CD: always the current index.
        let index = self.chart_index(repo_url, true).await?;
        Ok(index
            .entries
            .into_iter()
            .map(|(name, versions)| (name, versions.into_iter().map(|v| v.version).collect()))
            .collect())
    }

    /// The chart version `revision` names.
    pub(super) async fn resolve_chart_version(
        &self,
        request: &ManifestRequest,
        fresh: bool,
    ) -> Result<(Index, String), Error> {
        let index = self.chart_index(&request.repo_url, fresh).await?;
        let version = index
            .resolve(&request.repo_url, &request.source.chart, &request.revision)
            .map_err(Error::Charts)?;
        Ok((index, version))
    }

    /// Where an OCI request's artifact is, and the tag or digest its
    /// revision names (the highest tag satisfying a constraint).
    async fn oci_artifact(
        &self,
        repo_url: &RepoUrl,
        chart: &str,
        revision: &str,
    ) -> Result<(oci::Reference, String), Error> {
        let reference = registry_reference(repo_url, chart)?;
        let revision = revision.trim();
        if revision.starts_with("sha256:") || crate::semver::is_version(revision) {
            return Ok((reference, revision.to_string()));
        }
        let started = std::time::Instant::now();
        let tags = self.charts.oci_tags(repo_url, &reference).await;
        self.renderer.metrics.oci.record(
            &repo_url.redacted(),
            "resolve-revision",
            revision,
            started,
            tags.is_err(),
        );
        let tags = tags.map_err(Error::Charts)?;
        let chosen = match crate::semver::Constraint::parse(revision) {
            Ok(constraint) => {
                crate::semver::max_satisfying(&constraint, tags.iter().map(String::as_str))
                    .map(str::to_string)
            }
            Err(_) => tags.iter().find(|t| *t == revision).cloned(),
        };
        let chosen = chosen.ok_or_else(|| {
            Error::Charts(crate::charts::Error::NoVersion {
                repo_url: repo_url.redacted(),
                chart: reference.repository.clone(),
                constraint: revision.to_string(),
            })
        })?;
        Ok((reference, chosen))
    }

    /// `ResolveRevision` for a source that is not git: an OCI artifact
    /// (`oci://` URL, no chart) resolves to its manifest digest; a Helm
    /// chart to the version its revision names (an exact version as it
    /// is, as Argo CD answers it without asking the repository).
    pub async fn resolve_chart_revision(
        &self,
        repo_url: &RepoUrl,
        chart: &str,
        revision: &str,
        enable_oci: bool,
        fresh: bool,
    ) -> Result<String, Error> {
        let is_oci_url = repo_url.as_str().to_ascii_lowercase().starts_with("oci://");
        if is_oci_url && chart.is_empty() {
            let (reference, tag) = self.oci_artifact(repo_url, "", revision).await?;
            let started = std::time::Instant::now();
            let manifest = self.charts.oci_manifest(repo_url, &reference, &tag).await;
            self.renderer.metrics.oci.record(
                &repo_url.redacted(),
                "resolve-revision",
                revision,
                started,
                manifest.is_err(),
            );
            return Ok(manifest.map_err(Error::Charts)?.digest);
        }
        if crate::semver::is_version(revision) {
            return Ok(revision.to_string());
        }
        if enable_oci || is_oci_url {
            return Ok(self.oci_artifact(repo_url, chart, revision).await?.1);
        }
        let index = self.chart_index(repo_url, fresh).await?;
        index
            .resolve(repo_url, chart, revision)
            .map_err(Error::Charts)
    }

    /// `ListOCITags`.
    pub async fn oci_tags(&self, repo_url: &RepoUrl) -> Result<Vec<String>, Error> {
        self.oci_tags_as(repo_url, "get-tags").await
    }

    /// The registry repository's tags, counted as `request_type`.
    pub(super) async fn oci_tags_as(
        &self,
        repo_url: &RepoUrl,
        request_type: &'static str,
    ) -> Result<Vec<String>, Error> {
        let reference = registry_reference(repo_url, "")?;
        let started = std::time::Instant::now();
        let tags = self.charts.oci_tags(repo_url, &reference).await;
        self.renderer.metrics.oci.record(
            &repo_url.redacted(),
            request_type,
            "",
            started,
            tags.is_err(),
        );
        tags.map_err(Error::Charts)
    }

    /// `GetOCIMetadata`: the manifest's annotations.
    pub async fn oci_metadata(
        &self,
        repo_url: &RepoUrl,
        revision: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, Error> {
        let reference = registry_reference(repo_url, "")?;
        let started = std::time::Instant::now();
        let manifest = self
            .charts
            .oci_manifest(repo_url, &reference, revision)
            .await;
        self.renderer.metrics.oci.record(
            &repo_url.redacted(),
            "digest-metadata",
            revision,
            started,
            manifest.is_err(),
        );
        Ok(manifest.map_err(Error::Charts)?.annotations)
    }

    /// Where the chart (or artifact) of `request` comes from, and the
    /// version its revision names.
    async fn chart_origin(
        &self,
        request: &ManifestRequest,
        oci: bool,
    ) -> Result<(Origin, String), Error> {
        let fresh = request.no_cache || request.no_revision_cache;
        if oci {
            let (reference, version) = self
                .oci_artifact(&request.repo_url, &request.source.chart, &request.revision)
                .await?;
            Ok((Origin::Registry(reference), version))
        } else {
            let (index, version) = self.resolve_chart_version(request, fresh).await?;
            Ok((Origin::Repository(index), version))
        }
    }

    /// The tree of a chart source at its version, and the request with
    /// the app path pointing into it (`GetAppDetails`).
    pub(super) async fn chart_tree(
        &self,
        request: ManifestRequest,
        oci: bool,
    ) -> Result<(Arc<crate::source::Snapshot>, ManifestRequest, String), Error> {
        let (origin, version) = self.chart_origin(&request, oci).await?;
        let (snapshot, request) =
            materialise(&self.renderer, &self.charts, &origin, request, &version).await?;
        Ok((snapshot, request, version))
    }

    /// `GenerateManifest` for a chart of a Helm repository or registry, or
    /// an OCI artifact.
    pub(super) async fn generate_chart(
        &self,
        request: ManifestRequest,
        oci: bool,
    ) -> Result<(ManifestResult, Served), Error> {
        let (origin, version) = self.chart_origin(&request, oci).await?;
        let tools = self.renderer.tools.fingerprint().await;
        let encoded = cache::key::encode(&RenderInputs::of(&request, &tools));
        let key = cache::key::render_encoded(&request.repo_url.normalized(), &version, &encoded);
        if !request.no_cache {
            if let Some(answer) = self.cached_manifest(&key).await {
                return answer.map(|result| (result, Served::RequestKey));
            }
        }
        let renderer = self.renderer.clone();
        let charts = self.charts.clone();
        // The archive is downloaded inside the render with the leader's
        // credentials: requests with other credentials do not join it.
        let flight_key = format!("{key}|access={}", request.repo_url.access_digest());
        let render_key = key.clone();
        let flight = self.renders.join(flight_key, move || async move {
            let result = async {
                let _permit = renderer.permit().await?;
                let (snapshot, request) =
                    materialise(&renderer, &charts, &origin, request, &version).await?;
                renderer.render_uploaded(&request, snapshot, &version).await
            }
            .await;
            renderer.store(&render_key, &result).await;
            result.map_err(Arc::new)
        });
        let served = if flight.is_leader() {
            Served::Rendered
        } else {
            Served::Joined
        };
        match flight.wait().await {
            Ok(result) => result
                .map(|result| (result, served))
                .map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(Error::Shared)),
            Err(lost) => Err(Error::Internal {
                message: lost.to_string(),
            }),
        }
    }

    /// `GetRevisionChartDetails`: description, home and maintainers
    /// (`Name <email>`) from the chart's `Chart.yaml`.
    pub async fn chart_details(
        &self,
        repo_url: &RepoUrl,
        chart: &str,
        revision: &str,
        oci: bool,
    ) -> Result<ChartDetails, Error> {
        let dir = self.renderer.snapshots.new_upload_dir()?;
        if oci {
            let (reference, version) = self.oci_artifact(repo_url, chart, revision).await?;
            extract_artifact(
                &self.renderer.metrics.oci,
                &self.charts,
                repo_url,
                &reference,
                &version,
                dir.path(),
            )
            .await?;
        } else {
            let index = self.chart_index(repo_url, false).await?;
            let version = index
                .resolve(repo_url, chart, revision)
                .map_err(Error::Charts)?;
            self.charts
                .extract(repo_url, &index, chart, &version, dir.path())
                .await
                .map_err(Error::Charts)?;
        }
        // A chart archive holds one directory, named after the chart.
        let name = chart.rsplit('/').next().unwrap_or(chart).to_string();
        let mut chart_yaml = dir.path().join(name).join("Chart.yaml");
        if !chart_yaml.is_file() {
            if let Some(found) = std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path().join("Chart.yaml"))
                .find(|path| path.is_file())
            {
                chart_yaml = found;
            }
        }
        let details = tokio::task::spawn_blocking(move || {
            let _dir = dir;
            let text = std::fs::read_to_string(&chart_yaml).map_err(|err| Error::Internal {
                message: format!("the chart archive has no readable Chart.yaml: {err}"),
            })?;
            let chart: serde_json::Value =
                serde_saphyr::from_str(&text).map_err(|err| Error::Invalid {
                    message: format!("failed to unmarshal chart: {err}"),
                })?;
            let text_of =
                |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
            let maintainers = chart["maintainers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|maintainer| {
                    let (name, email) =
                        (text_of(&maintainer["name"]), text_of(&maintainer["email"]));
                    if email.is_empty() {
                        name
                    } else {
                        format!("{name} <{email}>").trim().to_string()
                    }
                })
                .collect();
            Ok::<_, Error>(ChartDetails {
                description: text_of(&chart["description"]),
                home: text_of(&chart["home"]),
                maintainers,
            })
        })
        .await
        .map_err(super::join_error)??;
        Ok(details)
    }

    /// `TestRepository` for a Helm repository: its index can be read.
    pub(super) async fn test_chart_repository(&self, repo_url: &RepoUrl) -> Result<(), Error> {
        self.charts.index(repo_url).await.map_err(Error::Charts)?;
        Ok(())
    }
}
