//! `UpdateRevisionForPaths`: whether an app's refresh paths changed
//! between its synced commit and a new one, and if not, its cached renders
//! moved (copied) to the new commit, so the controller's next
//! `GenerateManifest` is a cache hit.
//!
//! The request carries fewer fields than a `GenerateManifest` (no
//! kustomize or Helm options, no enabled source types), so the render
//! keys of an app cannot be recomputed from it. Every answered render
//! therefore records, in the app index of its commit, the encoded inputs
//! it was keyed by; moving an app's renders recomputes their keys for the
//! new commit from those.

use std::sync::Arc;

use serde::Serialize;

use super::{CachedManifest, Error, ManifestRequest, Pipeline};
use crate::cache::key;
use crate::domain::{RepoUrl, Tracking, TrackingMethod};
use crate::render::spec::SourceSpec;
use crate::source::refresh;

/// Most sets of render inputs an app index keeps for one commit (an app
/// is normally rendered with one; settings changes add more).
const MAX_VARIANTS: usize = 8;

/// The fields that identify an app in both `GenerateManifest` and
/// `UpdateRevisionForPaths`.
#[derive(Serialize)]
struct AppIdentity<'a> {
    source: &'a SourceSpec,
    tracking_method: &'static str,
    app_label_key: &'a str,
    app_name: &'a str,
    namespace: &'a str,
    installation_id: &'a str,
    kube_version: &'a str,
    api_versions: &'a [String],
    has_multiple_sources: bool,
}

impl<'a> AppIdentity<'a> {
    fn new(
        source: &'a SourceSpec,
        tracking: &'a Tracking,
        kube_version: &'a str,
        api_versions: &'a [String],
        has_multiple_sources: bool,
    ) -> Self {
        AppIdentity {
            source,
            tracking_method: match tracking.method {
                TrackingMethod::Label => "label",
                TrackingMethod::Annotation => "annotation",
                TrackingMethod::AnnotationAndLabel => "annotation+label",
            },
            app_label_key: &tracking.app_label_key,
            app_name: &tracking.app_name,
            namespace: &tracking.namespace,
            installation_id: &tracking.installation_id,
            kube_version,
            api_versions,
            has_multiple_sources,
        }
    }
}

/// An `UpdateRevisionForPaths` request in domain terms.
#[derive(Debug, Clone)]
pub struct UpdateRevisionRequest {
    pub repo_url: RepoUrl,
    /// Whether the source is a git source (Argo CD's rule: a repository
    /// of type git, unless the type was not given and the source is a
    /// Helm chart or an OCI URL).
    pub is_git: bool,
    pub source: SourceSpec,
    pub tracking: Tracking,
    pub kube_version: String,
    pub api_versions: Vec<String>,
    pub has_multiple_sources: bool,
    /// The revision the app was last synced to (normally a commit SHA).
    pub synced_revision: String,
    /// The new revision, as asked (empty: the source's target revision).
    pub revision: String,
    /// Refresh paths, repository-relative (the controller computes them
    /// from the annotation).
    pub paths: Vec<String>,
    pub no_revision_cache: bool,
    /// Whether the source reads files of other sources (`$ref` value
    /// files of a multi-source app), whose revisions move on their own.
    pub uses_ref_sources: bool,
}

/// The answer: whether the app must be regenerated, and the resolved new
/// revision (empty when not resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRevisionResult {
    pub changes: bool,
    pub revision: String,
}

impl Pipeline {
    /// Records that `request` was answered at `commit` with the render
    /// inputs `encoded`: in the app index (for moving renders between
    /// commits) and among the recently requested apps (for pre-rendering
    /// after a push).
    /// `key` is the request's render key (at `commit`, from `encoded`):
    /// once recorded, a cache hit under it costs one in-process lookup.
    pub(super) async fn remember(
        &self,
        request: &ManifestRequest,
        commit: &str,
        encoded: &[u8],
        key: &str,
    ) {
        if self.indexed.contains_key(key) {
            return;
        }
        self.recent.note(request, commit, encoded);
        let identity = AppIdentity::new(
            &request.source,
            &request.tracking,
            &request.kube_version,
            &request.api_versions,
            request.has_multiple_sources,
        );
        let index = key::app_index(&request.repo_url.normalized(), commit, &identity);
        let Ok(variant) = std::str::from_utf8(encoded) else {
            return;
        };
        // Boxed: done once per render key, and its cache round trips would
        // otherwise enlarge every request's future.
        Box::pin(self.add_to_index(&index, &[variant.to_string()])).await;
        self.indexed.insert(key.to_string(), ());
    }

    async fn read_index(&self, index: &str) -> Vec<String> {
        let ttl = self.cache.config.repo_cache_expiration;
        self.cache
            .get("index", index, ttl)
            .await
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    async fn add_to_index(&self, index: &str, variants: &[String]) {
        let mut known = self.read_index(index).await;
        if variants.iter().all(|v| known.contains(v)) {
            return;
        }
        for variant in variants.iter().rev() {
            known.retain(|k| k != variant);
            known.insert(0, variant.clone());
        }
        known.truncate(MAX_VARIANTS);
        if let Ok(bytes) = serde_json::to_vec(&known) {
            self.cache
                .set(index, &bytes, self.cache.config.repo_cache_expiration)
                .await;
        }
    }

    /// Argo CD's `UpdateRevisionForPaths`, with the changed files computed
    /// in-process from the two commits' trees. Failing to resolve the new
    /// revision is an error; anything that goes wrong after that answers
    /// "changed" (regenerating is always correct), never an error that
    /// would fail the controller's reconcile, and never a wrong entry.
    pub async fn update_revision_for_paths(
        &self,
        request: UpdateRevisionRequest,
    ) -> Result<UpdateRevisionResult, Error> {
        if request.paths.is_empty() {
            return Ok(UpdateRevisionResult {
                changes: true,
                revision: String::new(),
            });
        }
        if !request.is_git {
            // Helm-repository and OCI sources have no paths; their ref
            // sources are not followed yet, so those count as changed.
            return Ok(UpdateRevisionResult {
                changes: request.uses_ref_sources,
                revision: String::new(),
            });
        }
        // As Argo CD: the same revision as synced is unchanged, answered
        // without asking the remote.
        if request.synced_revision == request.revision && !request.uses_ref_sources {
            return Ok(UpdateRevisionResult {
                changes: false,
                revision: request.revision.clone(),
            });
        }
        let revision = if request.revision.is_empty() {
            request.source.target_revision.clone()
        } else {
            request.revision.clone()
        };
        let fresh = request.no_revision_cache;
        let new_sha = self
            .resolve_revision(
                &request.repo_url,
                &revision,
                &request.source.tag_prefix,
                fresh,
            )
            .await?;
        let changed = |changes| UpdateRevisionResult {
            changes,
            revision: new_sha.clone(),
        };
        if request.uses_ref_sources {
            return Ok(changed(true));
        }
        let old_sha = match self
            .resolve_revision(
                &request.repo_url,
                &request.synced_revision,
                &request.source.tag_prefix,
                fresh,
            )
            .await
        {
            Ok(sha) => sha,
            Err(err) => {
                tracing::warn!(repo = %request.repo_url, synced = %request.synced_revision, error = %err,
                    "cannot resolve the synced revision; reporting changes");
                return Ok(changed(true));
            }
        };
        if old_sha == new_sha {
            return Ok(changed(false));
        }
        let files = match self
            .changed_files(&request.repo_url, &old_sha, &new_sha)
            .await
        {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(repo = %request.repo_url, from = %old_sha, to = %new_sha, error = %err,
                    "cannot compare the synced and the new commit; reporting changes");
                return Ok(changed(true));
            }
        };
        if !files.is_empty() && refresh::files_have_changed(&request.paths, &files) {
            return Ok(changed(true));
        }
        // Nothing under the refresh paths changed: the renders of the
        // synced commit stand for the new one. Without any to move, the
        // app must be generated anyway.
        let moved = self.move_renders(&request, &old_sha, &new_sha).await;
        Ok(changed(!moved))
    }

    /// The files that differ between two commits, fetching either when
    /// missing; computed once per pair (in the cache, and one computation
    /// at a time in this replica).
    async fn changed_files(
        &self,
        repo_url: &RepoUrl,
        from_sha: &str,
        to_sha: &str,
    ) -> Result<Arc<Vec<String>>, Error> {
        let key = key::changed_files(&repo_url.normalized(), from_sha, to_sha);
        let ttl = self.cache.config.repo_cache_expiration;
        if let Some(files) = self
            .cache
            .get("changes", &key, ttl)
            .await
            .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
        {
            return Ok(Arc::new(files));
        }
        let (stores, cache, url) = (self.stores.clone(), self.cache.clone(), repo_url.clone());
        let (from, to, cache_key) = (from_sha.to_string(), to_sha.to_string(), key.clone());
        let flight = self.diffs.join(key, move || async move {
            let compute = async {
                let resolve = |sha: &str| crate::git::Resolved::Commit(sha.to_string());
                let (store, _) = stores.ensure_commit(&url, &resolve(&to), &to).await?;
                stores.ensure_commit(&url, &resolve(&from), &from).await?;
                let (from, to) = (from.clone(), to.clone());
                let files = tokio::task::spawn_blocking(move || store.changed_files(&from, &to))
                    .await
                    .map_err(super::join_error)?
                    .map_err(|err| Error::Internal {
                        message: format!("cannot compare commits: {}", err.message()),
                    })?;
                if let Ok(bytes) = serde_json::to_vec(&files) {
                    cache.set(&cache_key, &bytes, ttl).await;
                }
                Ok::<_, Error>(Arc::new(files))
            };
            compute.await.map_err(Arc::new)
        });
        match flight.wait().await {
            Ok(result) => {
                result.map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(Error::Shared))
            }
            Err(lost) => Err(Error::Internal {
                message: lost.to_string(),
            }),
        }
    }

    /// Copies the app's cached renders at `from_sha` to `to_sha` (their
    /// revision rewritten); `true` when there was at least one. Failure
    /// records are not moved. The renders at `from_sha` stay: an app that
    /// goes back to its synced commit still finds them.
    async fn move_renders(
        &self,
        request: &UpdateRevisionRequest,
        from_sha: &str,
        to_sha: &str,
    ) -> bool {
        let repo = request.repo_url.normalized();
        let identity = AppIdentity::new(
            &request.source,
            &request.tracking,
            &request.kube_version,
            &request.api_versions,
            request.has_multiple_sources,
        );
        let ttl = self.cache.config.repo_cache_expiration;
        let variants = self
            .read_index(&key::app_index(&repo, from_sha, &identity))
            .await;
        let mut moved = Vec::new();
        for variant in variants {
            let from = key::render_encoded(&repo, from_sha, variant.as_bytes());
            let Some(mut entry) = self
                .cache
                .get("manifests", &from, ttl)
                .await
                .and_then(|bytes| CachedManifest::decode(&bytes))
            else {
                continue;
            };
            let Some(result) = entry.result.as_mut() else {
                continue;
            };
            result.revision = to_sha.to_string();
            if let Some(bytes) = entry.encode() {
                let to = key::render_encoded(&repo, to_sha, variant.as_bytes());
                self.cache.set(&to, &bytes, ttl).await;
                moved.push(variant);
            }
        }
        if !moved.is_empty() {
            self.add_to_index(&key::app_index(&repo, to_sha, &identity), &moved)
                .await;
            tracing::debug!(repo = %request.repo_url, from = from_sha, to = to_sha, renders = moved.len(),
                "refresh paths unchanged; renders moved to the new commit");
        }
        !moved.is_empty()
    }
}
