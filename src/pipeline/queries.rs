//! Questions about a commit that need no render: its metadata
//! (`GetRevisionMetadata`), its files and directories (the ApplicationSet
//! git generators' `GetGitFiles` / `GetGitDirectories`). Answered from the
//! object store in process and cached per commit, as Argo CD caches them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{join_error, Error, Pipeline};
use crate::domain::RepoUrl;
use crate::git::inspect::{self, RevisionMetadata};
use crate::git::{self, Resolved};

/// Largest total size of the files one `GetGitFiles` answer carries.
const MAX_GIT_FILES_BYTES: u64 = 512 << 20;

/// How a commit is named in a query.
pub struct Commit<'a> {
    pub repo_url: &'a RepoUrl,
    pub revision: &'a str,
    /// Skip the ref-listing cache.
    pub fresh: bool,
    /// Whether the caller asked for submodules to be included.
    pub submodules: bool,
}

impl Pipeline {
    /// The git directories of the submodule stores of `sha` when the
    /// query includes submodules (fetching what is missing); else none.
    async fn query_submodules(
        &self,
        commit: &Commit<'_>,
        store: &Arc<git::RepoStore>,
        sha: &str,
    ) -> Result<Vec<std::path::PathBuf>, Error> {
        if !commit.submodules {
            return Ok(Vec::new());
        }
        Ok(self
            .stores
            .fetch_submodules(commit.repo_url, store, sha)
            .await?)
    }
}

impl Pipeline {
    /// The local store holding the commit `commit` names, and its SHA.
    async fn local_commit(
        &self,
        commit: &Commit<'_>,
    ) -> Result<(Arc<git::RepoStore>, String), Error> {
        let sha = self
            .resolve_revision(commit.repo_url, commit.revision, "", commit.fresh)
            .await?;
        let (store, sha) = self
            .stores
            .ensure_commit(commit.repo_url, &Resolved::Commit(sha), commit.revision)
            .await?;
        Ok((store, sha))
    }

    /// Argo CD's `ListApps`: every directory of the commit that is an app
    /// of a type detected by its files (`*Chart.yaml`: Helm, a
    /// kustomization file: Kustomize, the latter winning), without the
    /// disabled types. Cached per commit; the revision is always resolved
    /// against the remote, as in Argo CD.
    pub async fn list_apps(
        &self,
        repo_url: &RepoUrl,
        revision: &str,
        enabled_source_types: &std::collections::HashMap<String, bool>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let commit = Commit {
            repo_url,
            revision,
            fresh: true,
            submodules: false,
        };
        let (store, sha) = self.local_commit(&commit).await?;
        let key = crate::cache::key::app_list(&repo_url.normalized(), &sha);
        let ttl = self.cache.config.repo_cache_expiration;
        let cached = self
            .cache
            .get("applist", &key, ttl)
            .await
            .and_then(|bytes| serde_json::from_slice::<Vec<(String, String)>>(&bytes).ok());
        let hits = match cached {
            Some(apps) => apps,
            None => {
                let apps = tokio::task::spawn_blocking(move || {
                    let tree = store.commit_tree(&sha).map_err(|err| Error::Internal {
                        message: format!("cannot read commit {sha}: {}", err.message()),
                    })?;
                    Ok::<_, Error>(discover(&tree))
                })
                .await
                .map_err(join_error)??;
                if let Ok(bytes) = serde_json::to_vec(&apps) {
                    self.cache.set(&key, &bytes, ttl).await;
                }
                apps
            }
        };
        // Filtered per file, then the last hit of a directory wins (as
        // Argo CD's walk does), so disabling one type can reveal another.
        let enabled = |kind: &str| enabled_source_types.get(kind).copied().unwrap_or(true);
        Ok(hits.into_iter().filter(|(_, kind)| enabled(kind)).collect())
    }

    /// Argo CD's `GetRevisionMetadata`: `revision` must be a commit SHA
    /// (full or abbreviated).
    pub async fn revision_metadata(
        &self,
        repo_url: &RepoUrl,
        revision: &str,
    ) -> Result<RevisionMetadata, Error> {
        if !git::is_full_sha(revision) && !git::is_abbreviated_sha(revision) {
            return Err(Error::Invalid {
                message: format!("revision {revision} must be resolved"),
            });
        }
        let (store, sha) = self
            .stores
            .ensure_commit(
                repo_url,
                &if git::is_full_sha(revision) {
                    Resolved::Commit(revision.to_ascii_lowercase())
                } else {
                    Resolved::Abbreviated(revision.to_ascii_lowercase())
                },
                revision,
            )
            .await?;
        let path = store.path().to_path_buf();
        tokio::task::spawn_blocking(move || inspect::revision_metadata(&path, &sha))
            .await
            .map_err(join_error)?
            .map_err(Error::Inspect)
    }

    /// Argo CD's `GetGitFiles`: the files at the commit whose paths match
    /// `pattern`, with their content.
    pub async fn git_files(
        &self,
        commit: Commit<'_>,
        pattern: &str,
        new_globbing: bool,
    ) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let (store, sha) = self.local_commit(&commit).await?;
        let key = crate::cache::key::git_files(
            &commit.repo_url.normalized(),
            &sha,
            pattern,
            new_globbing,
            commit.submodules,
        );
        let ttl = self.cache.config.repo_cache_expiration;
        if let Some(files) = self
            .cache
            .get("gitfiles", &key, ttl)
            .await
            .and_then(|bytes| decode_files(&bytes))
        {
            return Ok(files);
        }
        let _pending = self.renderer.pending(commit.repo_url);
        let submodules = self.query_submodules(&commit, &store, &sha).await?;
        let (path, pattern_owned) = (store.path().to_path_buf(), pattern.to_string());
        let files = tokio::task::spawn_blocking(move || {
            inspect::git_files(
                &path,
                &submodules,
                &sha,
                &pattern_owned,
                new_globbing,
                MAX_GIT_FILES_BYTES,
            )
        })
        .await
        .map_err(join_error)?
        .map_err(Error::Inspect)?;
        self.cache.set(&key, &encode_files(&files), ttl).await;
        Ok(files)
    }

    /// Argo CD's `GetGitDirectories`: every directory of the commit
    /// (hidden ones only with `--include-hidden-directories`).
    pub async fn git_directories(&self, commit: Commit<'_>) -> Result<Vec<String>, Error> {
        let (store, sha) = self.local_commit(&commit).await?;
        let include_hidden = self.renderer.config.include_hidden_directories;
        let key = crate::cache::key::git_directories(
            &commit.repo_url.normalized(),
            &sha,
            include_hidden,
            commit.submodules,
        );
        let ttl = self.cache.config.repo_cache_expiration;
        if let Some(directories) = self
            .cache
            .get("gitdirs", &key, ttl)
            .await
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        {
            return Ok(directories);
        }
        let _pending = self.renderer.pending(commit.repo_url);
        let submodules = self.query_submodules(&commit, &store, &sha).await?;
        let path = store.path().to_path_buf();
        let directories = tokio::task::spawn_blocking(move || {
            inspect::git_directories(&path, &submodules, &sha, include_hidden)
        })
        .await
        .map_err(join_error)?
        .map_err(Error::Inspect)?;
        if let Ok(bytes) = serde_json::to_vec(&directories) {
            self.cache.set(&key, &bytes, ttl).await;
        }
        Ok(directories)
    }
}

/// The files that make directories apps, in the order Argo CD's discovery
/// walks a checkout (symlinked directories are not entered): (directory,
/// source type) per file.
fn discover(tree: &crate::git::tree::CommitTree) -> Vec<(String, String)> {
    use crate::git::tree::Entry;
    let mut apps = Vec::new();
    tree.walk("", &mut |path, entry| {
        if matches!(entry, Entry::Directory { .. } | Entry::Submodule { .. }) {
            return true;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (dir, name),
            None => (".", path),
        };
        if name.ends_with("Chart.yaml") {
            apps.push((dir.to_string(), "Helm".to_string()));
        }
        if crate::render::kustomize::KUSTOMIZATION_NAMES.contains(&name) {
            apps.push((dir.to_string(), "Kustomize".to_string()));
        }
        true
    });
    apps
}

/// Files as bytes: per file, the path's length and the path, the
/// content's length and the content (lengths as u64 little-endian).
fn encode_files(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let size = files.iter().map(|(p, c)| 16 + p.len() + c.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (path, content) in files {
        out.extend_from_slice(&(path.len() as u64).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&(content.len() as u64).to_le_bytes());
        out.extend_from_slice(content);
    }
    out
}

fn decode_files(mut bytes: &[u8]) -> Option<BTreeMap<String, Vec<u8>>> {
    fn take<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let length: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let length = usize::try_from(u64::from_le_bytes(length)).ok()?;
        let rest = bytes.get(8..)?;
        let (item, rest) = (rest.get(..length)?, rest.get(length..)?);
        *bytes = rest;
        Some(item)
    }
    let mut files = BTreeMap::new();
    while !bytes.is_empty() {
        let path = String::from_utf8(take(&mut bytes)?.to_vec()).ok()?;
        files.insert(path, take(&mut bytes)?.to_vec());
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip() {
        let files: BTreeMap<String, Vec<u8>> = [
            ("a.yaml".to_string(), b"x: 1".to_vec()),
            ("dir/empty".to_string(), Vec::new()),
        ]
        .into();
        assert_eq!(decode_files(&encode_files(&files)), Some(files));
        assert_eq!(decode_files(&[1, 0, 0]), None);
        assert_eq!(decode_files(&[]), Some(BTreeMap::new()));
    }
}
