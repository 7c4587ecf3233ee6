//! The request pipeline of DESIGN.md, in domain types: resolve the
//! revision, make the commit local, take its snapshot, render, post-process.
//!
//! It knows nothing of protobuf (the gRPC layer converts) and spawns no
//! processes itself (git and tools run through [`crate::exec`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{RepoUrl, Tracking};
use crate::git::{self, Resolved};
use crate::render::{self, directory, manifest, SourceType};
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
}

/// The kind of repository a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoType {
    Git,
    Helm,
    Oci,
}

/// What to render, validated.
#[derive(Debug, Clone)]
pub struct Source {
    /// App directory relative to the repository root.
    pub path: String,
    /// Helm chart name (Helm-repository sources).
    pub chart: String,
    /// `ref:` name in a multi-source application.
    pub ref_name: String,
    /// Source types set explicitly (helm/kustomize/directory/plugin present).
    pub explicit_types: Vec<SourceType>,
    pub directory: directory::Options,
}

/// A GenerateManifest request in domain terms.
#[derive(Debug, Clone)]
pub struct ManifestRequest {
    pub repo_url: RepoUrl,
    pub repo_type: RepoType,
    /// As asked (branch, tag, HEAD, SHA); empty means HEAD.
    pub revision: String,
    pub source: Source,
    pub tracking: Tracking,
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
    snapshots: Arc<source::Snapshots>,
}

impl Pipeline {
    pub fn new(stores: Arc<git::Stores>, snapshots: Arc<source::Snapshots>) -> Self {
        Pipeline { stores, snapshots }
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
        let source = &request.source;
        // A multi-source entry without path or chart (typically a `ref:`
        // source for `$ref` value files) renders nothing; the controller
        // only needs its revision.
        if request.has_multiple_sources && source.path.is_empty() && source.chart.is_empty() {
            let revision = self
                .resolve_revision(&request.repo_url, &request.revision)
                .await?;
            return Ok(ManifestResult {
                manifests: Vec::new(),
                revision,
                source_type: None,
            });
        }

        let resolved = self.resolve(&request.repo_url, &request.revision).await?;
        let (store, commit_sha) = self
            .stores
            .ensure_commit(&request.repo_url, &resolved, &request.revision)
            .await?;
        let snapshot = self
            .snapshots
            .get(&request.repo_url, &store, &commit_sha)
            .await?;
        let app_dir = snapshot.app_dir(&source.path)?;
        // Refuse, rather than render less than Argo CD would, what later
        // milestones build.
        if let Some(submodule) = snapshot
            .submodules_under(&app_dir, source.directory.recurse)
            .first()
        {
            return Err(Error::NotImplemented {
                what: format!("rendering git submodules (submodule {submodule:?})"),
            });
        }
        for overrides in [
            ".argocd-source.yaml".to_string(),
            format!(".argocd-source-{}.yaml", request.tracking.app_name),
        ] {
            if app_dir.join(&overrides).is_file() {
                return Err(Error::NotImplemented {
                    what: format!("parameter override files ({overrides})"),
                });
            }
        }

        let render_request = request.clone();
        let repo_root = snapshot.root().to_path_buf();
        let (source_type, manifests) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let source = &render_request.source;
            let source_type = render::detect_source_type(
                &app_dir,
                &source.explicit_types,
                &render_request.enabled_source_types,
            )?;
            match source_type {
                SourceType::Directory => {
                    let objects = directory::render(&app_dir, &repo_root, &source.directory)?;
                    let manifests =
                        manifest::finalize(objects, Some(&render_request.tracking), &source.path)?;
                    Ok((source_type, manifests))
                }
                SourceType::Helm | SourceType::Kustomize | SourceType::Plugin => {
                    Err(Error::NotImplemented {
                        what: format!("rendering {} sources", source_type.as_str()),
                    })
                }
            }
        })
        .await
        .map_err(|err| Error::Internal {
            message: format!("render task failed: {err}"),
        })??;
        // Keep the snapshot alive until rendering is done.
        drop(snapshot);
        Ok(ManifestResult {
            manifests,
            revision: commit_sha,
            source_type: Some(source_type),
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
