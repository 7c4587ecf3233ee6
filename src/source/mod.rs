//! Turning a commit into a directory a renderer can read: one read-only
//! snapshot per (remote, commit), shared by every render of that commit,
//! and the confinement of an app path to it.
//!
//! This module must not render and must not talk to remotes; it reads the
//! object stores through [`crate::git`].

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::domain::RepoUrl;
use crate::git;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: app path is absolute")]
    AppPathAbsolute { path: String },
    #[error("{path}: app path outside root")]
    AppPathOutsideRoot { path: String },
    #[error("{path}: app path does not exist")]
    AppPathDoesNotExist { path: String },
    #[error("{path}: app path is not a directory")]
    AppPathNotDirectory { path: String },
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error("snapshot of commit {commit_sha} failed: {message}")]
    Snapshot { commit_sha: String, message: String },
}

/// A commit's tree on disk. Read-only by contract: renders that must write
/// work in a private copy.
#[derive(Debug)]
pub struct Snapshot {
    /// Canonical path of the tree's root.
    root: PathBuf,
    pub commit_sha: String,
    /// Submodule paths, relative to the root; their directories are empty.
    submodules: Vec<String>,
    /// The first symlink whose target leaves the tree, found once.
    escaping_symlink: std::sync::OnceLock<Option<String>>,
}

impl Snapshot {
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The submodules a render of the app directory `app_dir` (canonical,
    /// inside the root) would read: the app directory itself, or any below
    /// it when the render recurses.
    pub fn submodules_under(&self, app_dir: &Path, recurse: bool) -> Vec<&str> {
        let Ok(relative) = app_dir.strip_prefix(&self.root) else {
            return Vec::new();
        };
        let relative = relative.to_string_lossy();
        self.submodules
            .iter()
            .map(String::as_str)
            .filter(|submodule| {
                let inside = match relative.as_ref() {
                    "" => Some(*submodule),
                    dir => submodule
                        .strip_prefix(dir)
                        .and_then(|rest| rest.strip_prefix('/')),
                };
                *submodule == relative.as_ref() || (recurse && inside.is_some())
            })
            .collect()
    }

    /// The first symlink (relative path, in walk order) whose target is
    /// absolute or whose relative target steps outside the tree at any
    /// point, as Argo CD's out-of-bounds symlink scan defines it. The walk
    /// happens once per snapshot; call it from a blocking context.
    pub fn escaping_symlink(&self) -> Option<&str> {
        self.escaping_symlink
            .get_or_init(|| find_escaping_symlink(&self.root))
            .as_deref()
    }

    /// Resolves the app path `path` (relative to the repository root) to a
    /// directory inside the snapshot, following symlinks and refusing
    /// anything that leaves the root.
    pub fn app_dir(&self, path: &str) -> Result<PathBuf, Error> {
        resolve_app_path(&self.root, path)
    }
}

fn find_escaping_symlink(root: &Path) -> Option<String> {
    fn walk(dir: &Path, depth: usize, relative: &str) -> Option<String> {
        let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                let Ok(target) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                if escapes(&target, depth) {
                    return Some(path);
                }
            } else if kind.is_dir() {
                if let Some(found) = walk(&entry.path(), depth + 1, &path) {
                    return Some(found);
                }
            }
        }
        None
    }
    walk(root, 0, "")
}

/// Whether a link target, from a directory `depth` levels below the root,
/// is absolute or passes above the root at any step.
fn escapes(target: &Path, depth: usize) -> bool {
    let mut depth = depth as i64;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Resolves `path` inside `root` (which must be canonical). Errors name the
/// path as the client gave it, never the local directory.
pub fn resolve_app_path(root: &Path, path: &str) -> Result<PathBuf, Error> {
    let shown = || path.to_string();
    if path.starts_with('/') {
        return Err(Error::AppPathAbsolute { path: shown() });
    }
    // Lexical check first, so `..` never touches the file system outside.
    let mut depth: i64 = 0;
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(Error::AppPathOutsideRoot { path: shown() });
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::AppPathAbsolute { path: shown() })
            }
        }
    }
    let joined = root.join(path);
    let canonical = match joined.canonicalize() {
        Ok(canonical) => canonical,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::AppPathDoesNotExist { path: shown() })
        }
        Err(_) => return Err(Error::AppPathDoesNotExist { path: shown() }),
    };
    if !canonical.starts_with(root) {
        return Err(Error::AppPathOutsideRoot { path: shown() });
    }
    if !canonical.is_dir() {
        return Err(Error::AppPathNotDirectory { path: shown() });
    }
    Ok(canonical)
}

/// A snapshot being created or created: set once, awaited by all.
type SnapshotCell = Arc<tokio::sync::OnceCell<Arc<Snapshot>>>;

/// The snapshots of this process, keyed by remote and commit.
pub struct Snapshots {
    /// Directory holding the snapshot trees (private to this process).
    root: PathBuf,
    /// (normalised remote, commit) -> the snapshot, created once. The
    /// mutex guards only the map; the `OnceCell` makes concurrent requests
    /// for one commit share a single export.
    entries: Mutex<HashMap<(String, String), SnapshotCell>>,
}

impl Snapshots {
    pub fn new(root: PathBuf) -> Self {
        Snapshots {
            root,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The snapshot of `commit_sha`, exported from `store` on first use.
    pub async fn get(
        &self,
        repo_url: &RepoUrl,
        store: &git::RepoStore,
        commit_sha: &str,
    ) -> Result<Arc<Snapshot>, Error> {
        let cell = {
            let mut entries = self.entries.lock().expect("snapshot map lock poisoned");
            entries
                .entry((repo_url.normalized(), commit_sha.to_string()))
                .or_default()
                .clone()
        };
        let snapshot = cell
            .get_or_try_init(|| async {
                let name = crate::domain::unguessable_name();
                let staging = self.root.join(format!(".staging-{name}"));
                let destination = self.root.join(&name);
                let report = match store.export_tree(repo_url, commit_sha, &staging).await {
                    Ok(report) => report,
                    Err(err) => {
                        let _ = tokio::fs::remove_dir_all(&staging).await;
                        return Err(Error::from(err));
                    }
                };
                tokio::fs::rename(&staging, &destination)
                    .await
                    .map_err(|err| Error::Snapshot {
                        commit_sha: commit_sha.to_string(),
                        message: err.to_string(),
                    })?;
                let root = destination.canonicalize().map_err(|err| Error::Snapshot {
                    commit_sha: commit_sha.to_string(),
                    message: err.to_string(),
                })?;
                tracing::debug!(repo = %repo_url, commit = commit_sha, files = report.files, bytes = report.bytes, "snapshot exported");
                Ok(Arc::new(Snapshot {
                    root,
                    commit_sha: commit_sha.to_string(),
                    submodules: report.submodules,
                    escaping_symlink: Default::default(),
                }))
            })
            .await?;
        Ok(snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_symlinks_that_leave_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("../x", root.join("a/b/ok")).unwrap();
        std::os::unix::fs::symlink("dangling", root.join("a/fine")).unwrap();
        assert_eq!(find_escaping_symlink(&root), None);
        // Leaves and comes back: still a violation, as in Argo CD.
        std::os::unix::fs::symlink("../../../tmp/../x", root.join("a/b/back")).unwrap();
        assert_eq!(find_escaping_symlink(&root).as_deref(), Some("a/b/back"));
        std::fs::remove_file(root.join("a/b/back")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
        assert_eq!(find_escaping_symlink(&root).as_deref(), Some("abs"));
    }

    #[test]
    fn confines_app_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("apps/a")).unwrap();
        std::fs::write(root.join("file.txt"), "x").unwrap();
        std::os::unix::fs::symlink("../../..", root.join("apps/escape")).unwrap();
        std::os::unix::fs::symlink("a", root.join("apps/inside")).unwrap();

        assert_eq!(
            resolve_app_path(&root, "apps/a").unwrap(),
            root.join("apps/a")
        );
        assert_eq!(
            resolve_app_path(&root, "apps/inside").unwrap(),
            root.join("apps/a")
        );
        assert_eq!(resolve_app_path(&root, ".").unwrap(), root);
        assert_eq!(resolve_app_path(&root, "").unwrap(), root);
        assert_eq!(
            resolve_app_path(&root, "apps/../apps/a/").unwrap(),
            root.join("apps/a")
        );
        let err = |p: &str| resolve_app_path(&root, p).unwrap_err().to_string();
        assert_eq!(err("/etc"), "/etc: app path is absolute");
        assert_eq!(err(".."), "..: app path outside root");
        assert_eq!(err("apps/../../x"), "apps/../../x: app path outside root");
        assert_eq!(err("apps/escape"), "apps/escape: app path outside root");
        assert_eq!(err("missing"), "missing: app path does not exist");
        assert_eq!(err("file.txt"), "file.txt: app path is not a directory");
    }
}
