//! Turning a commit into a directory a renderer can read: one read-only
//! snapshot per (remote, commit), shared by every render of that commit,
//! and the confinement of an app path to it.
//!
//! This module must not render and must not talk to remotes; it reads the
//! object stores through [`crate::git`].

pub mod closure;
pub mod refresh;
pub mod tarball;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::RepoUrl;
use crate::git;
use crate::metrics::SourceMetrics;

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
    /// The first symlink whose target leaves the tree, found once.
    escaping_symlink: std::sync::OnceLock<Option<String>>,
    /// The one directory exported, when not the whole tree.
    subtree: Option<String>,
    metrics: SourceMetrics,
}

/// The file that marks a directory's renders (and those of every
/// directory below it) as safe to run directly in the shared snapshot.
pub const ALLOW_CONCURRENCY_FILE: &str = ".argocd-allow-concurrency";

impl Drop for Snapshot {
    /// The tree goes with the last user. Removal runs on its own thread:
    /// the last user may be an async task.
    fn drop(&mut self) {
        self.metrics.snapshots.dec();
        let root = std::mem::take(&mut self.root);
        if root.as_os_str().is_empty() {
            return;
        }
        let removed = std::thread::Builder::new()
            .name("manifold-snapshot-rm".to_string())
            .spawn(move || {
                if let Err(err) = std::fs::remove_dir_all(&root) {
                    tracing::warn!(dir = %root.display(), %err, "cannot remove snapshot");
                }
            });
        if let Err(err) = removed {
            tracing::warn!(%err, "cannot start snapshot removal");
        }
    }
}

impl Snapshot {
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The one directory this snapshot holds, when it is not the whole
    /// tree (see [`Snapshots::get`]).
    pub fn subtree(&self) -> Option<&str> {
        self.subtree.as_deref()
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

    /// Whether `app_dir` (canonical, inside the root) or a directory above
    /// it, up to the root, holds [`ALLOW_CONCURRENCY_FILE`].
    pub fn allows_concurrency(&self, app_dir: &Path) -> bool {
        app_dir
            .ancestors()
            .take_while(|dir| dir.starts_with(&self.root))
            .any(|dir| std::fs::symlink_metadata(dir.join(ALLOW_CONCURRENCY_FILE)).is_ok())
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

/// How long an unused snapshot is kept for the next render of its commit.
const IDLE_RETENTION: Duration = Duration::from_secs(120);
/// Most unused snapshots kept at once (the least recently used go first).
const MAX_IDLE: usize = 16;

struct Entry {
    cell: SnapshotCell,
    last_used: Instant,
}

impl Entry {
    /// Whether nothing but the map holds the snapshot (or its creation).
    fn idle(&self) -> bool {
        Arc::strong_count(&self.cell) == 1
            && self
                .cell
                .get()
                .is_none_or(|snapshot| Arc::strong_count(snapshot) == 1)
    }
}

/// The snapshots of this process, keyed by remote and commit.
pub struct Snapshots {
    /// Directory holding the snapshot trees (private to this process).
    root: PathBuf,
    /// (normalised remote, commit, subtree or "") -> the snapshot,
    /// created once. The mutex guards only the map; the `OnceCell` makes
    /// concurrent requests for one snapshot share a single export.
    entries: Mutex<HashMap<SnapshotKey, Entry>>,
    metrics: SourceMetrics,
}

/// Remote (normalised), commit, subtree, and what the export added
/// (submodules, LFS content).
type SnapshotKey = (String, String, String, (bool, bool));

impl Snapshots {
    pub fn new(root: PathBuf, metrics: SourceMetrics) -> Self {
        Snapshots {
            root,
            entries: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The private directory uploads may spool into.
    pub fn spool_dir(&self) -> &Path {
        &self.root
    }

    /// A new private directory for a tree that does not come from git (an
    /// uploaded archive): fill it, then hand it to [`Snapshots::adopt`].
    pub fn new_upload_dir(&self) -> Result<tempfile::TempDir, Error> {
        tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&self.root)
            .map_err(|err| Error::Snapshot {
                commit_sha: "streamed".to_string(),
                message: format!("cannot create a directory for the upload: {err}"),
            })
    }

    /// A snapshot of the filled directory `dir` (never shared, removed
    /// when dropped). `label` stands for the commit.
    pub fn adopt(&self, dir: tempfile::TempDir, label: &str) -> Result<Arc<Snapshot>, Error> {
        let canonical = dir.path().canonicalize().map_err(|err| Error::Snapshot {
            commit_sha: label.to_string(),
            message: err.to_string(),
        })?;
        // Removed by the snapshot from now on.
        let _ = dir.keep();
        self.metrics.snapshots.inc();
        Ok(Arc::new(Snapshot {
            root: canonical,
            commit_sha: label.to_string(),
            escaping_symlink: Default::default(),
            subtree: None,
            metrics: self.metrics.clone(),
        }))
    }

    /// Forgets snapshots no render uses that have been idle longer than
    /// the retention, or that exceed the number kept; their trees are
    /// removed. Returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let mut entries = self.entries.lock().expect("snapshot map lock poisoned");
        Self::sweep_entries(&mut entries, Instant::now())
    }

    fn sweep_entries(entries: &mut HashMap<SnapshotKey, Entry>, now: Instant) -> usize {
        let before = entries.len();
        entries.retain(|_, entry| {
            !(entry.idle() && now.saturating_duration_since(entry.last_used) > IDLE_RETENTION)
        });
        let mut idle: Vec<_> = entries
            .iter()
            .filter(|(_, entry)| entry.idle())
            .map(|(key, entry)| (entry.last_used, key.clone()))
            .collect();
        if idle.len() > MAX_IDLE {
            idle.sort();
            for (_, key) in &idle[..idle.len() - MAX_IDLE] {
                entries.remove(key);
            }
        }
        before - entries.len()
    }

    /// Forgets every snapshot no render uses (their trees are removed);
    /// returns how many.
    pub fn evict_idle(&self) -> usize {
        let mut entries = self.entries.lock().expect("snapshot map lock poisoned");
        let before = entries.len();
        entries.retain(|_, entry| !entry.idle());
        before - entries.len()
    }

    /// How many snapshots (in use or idle) exist.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .expect("snapshot map lock poisoned")
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The snapshot of `commit_sha`, exported from `store` on first use:
    /// the whole tree, or only the directory `subtree` (at its place under
    /// the root) for a render that reads nothing else (see
    /// [`git::RepoStore::is_self_contained_directory`]), with the
    /// submodules and LFS content `extras` brings.
    pub async fn get(
        &self,
        repo_url: &RepoUrl,
        store: &Arc<git::RepoStore>,
        commit_sha: &str,
        subtree: Option<&str>,
        extras: &git::ExportExtras,
    ) -> Result<Arc<Snapshot>, Error> {
        let cell = {
            let mut entries = self.entries.lock().expect("snapshot map lock poisoned");
            let now = Instant::now();
            let entry = entries
                .entry((
                    repo_url.normalized(),
                    commit_sha.to_string(),
                    subtree.unwrap_or_default().to_string(),
                    (!extras.submodules.is_empty(), extras.lfs),
                ))
                .or_insert_with(|| Entry {
                    cell: Default::default(),
                    last_used: now,
                });
            entry.last_used = now;
            let cell = entry.cell.clone();
            Self::sweep_entries(&mut entries, now);
            cell
        };
        let snapshot = cell
            .get_or_try_init(|| async {
                let (root, store) = (self.root.clone(), store.clone());
                let (repo_url, sha) = (repo_url.clone(), commit_sha.to_string());
                let (subtree, metrics) = (subtree.map(str::to_string), self.metrics.clone());
                let extras = extras.clone();
                // Export, rename and wrap on one blocking task: if every
                // requester goes away meanwhile, the finished snapshot is
                // dropped with the task's result, which removes its tree.
                tokio::task::spawn_blocking(move || {
                    export(&root, &store, &repo_url, &sha, subtree, &extras, metrics)
                })
                .await
                .map_err(|err| Error::Snapshot {
                    commit_sha: commit_sha.to_string(),
                    message: err.to_string(),
                })?
            })
            .await?;
        Ok(snapshot.clone())
    }
}

/// Exports `commit_sha` from `store` into a new snapshot under `root`.
fn export(
    root: &Path,
    store: &git::RepoStore,
    repo_url: &RepoUrl,
    commit_sha: &str,
    subtree: Option<String>,
    extras: &git::ExportExtras,
    metrics: SourceMetrics,
) -> Result<Arc<Snapshot>, Error> {
    let name = crate::domain::unguessable_name();
    let staging = root.join(format!(".staging-{name}"));
    let destination = root.join(&name);
    let failed = |message: String| Error::Snapshot {
        commit_sha: commit_sha.to_string(),
        message,
    };
    let report = match store.export_tree(repo_url, commit_sha, subtree.as_deref(), &staging, extras)
    {
        Ok(report) => report,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::from(err));
        }
    };
    if let Err(err) = std::fs::rename(&staging, &destination) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(failed(err.to_string()));
    }
    metrics.exported_files.inc_by(report.files);
    metrics.exported_bytes.inc_by(report.bytes);
    metrics.snapshots.inc();
    let mut snapshot = Snapshot {
        root: destination,
        commit_sha: commit_sha.to_string(),
        escaping_symlink: Default::default(),
        subtree,
        metrics,
    };
    // From here on, dropping `snapshot` removes the tree.
    snapshot.root = snapshot
        .root
        .canonicalize()
        .map_err(|err| failed(err.to_string()))?;
    tracing::debug!(repo = %repo_url, commit = commit_sha, subtree = snapshot.subtree.as_deref().unwrap_or(""), files = report.files, bytes = report.bytes, lfs_files = report.lfs_files, "snapshot exported");
    Ok(Arc::new(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot over a new directory under `parent`, already created.
    fn entry(parent: &Path, name: &str, last_used: Instant) -> (Entry, PathBuf) {
        let root = parent.join(name);
        std::fs::create_dir(&root).unwrap();
        let snapshot = Arc::new(Snapshot {
            root: root.clone(),
            commit_sha: name.to_string(),
            escaping_symlink: Default::default(),
            subtree: None,
            metrics: Default::default(),
        });
        let cell = SnapshotCell::default();
        cell.set(snapshot).unwrap();
        (Entry { cell, last_used }, root)
    }

    fn removed(dir: &Path) -> bool {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !dir.exists()
        })
    }

    #[test]
    fn unused_snapshots_are_removed_after_the_retention_and_beyond_the_cap() {
        let parent = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let old = now - IDLE_RETENTION - Duration::from_secs(1);
        let mut entries = HashMap::new();
        let (idle_old, idle_old_dir) = entry(parent.path(), "idle-old", old);
        let (busy_old, busy_old_dir) = entry(parent.path(), "busy-old", old);
        let (recent, recent_dir) = entry(parent.path(), "recent", now);
        let in_use = busy_old.cell.get().unwrap().clone();
        for (name, entry) in [("a", idle_old), ("b", busy_old), ("c", recent)] {
            entries.insert(
                (
                    name.to_string(),
                    name.to_string(),
                    String::new(),
                    Default::default(),
                ),
                entry,
            );
        }
        assert_eq!(Snapshots::sweep_entries(&mut entries, now), 1);
        assert!(removed(&idle_old_dir), "idle past the retention: removed");
        assert!(busy_old_dir.exists() && recent_dir.exists());

        // The in-use one goes once its last user is done.
        drop(in_use);
        assert_eq!(Snapshots::sweep_entries(&mut entries, now), 1);
        assert!(removed(&busy_old_dir));

        // Beyond the cap, the least recently used idle ones go first.
        for i in 0..MAX_IDLE + 2 {
            let (entry, _) = entry(
                parent.path(),
                &format!("n{i}"),
                now + Duration::from_millis(i as u64),
            );
            entries.insert(
                (
                    i.to_string(),
                    String::new(),
                    String::new(),
                    Default::default(),
                ),
                entry,
            );
        }
        Snapshots::sweep_entries(&mut entries, now);
        assert_eq!(entries.len(), MAX_IDLE);
        assert!(removed(&recent_dir), "the oldest idle snapshot went");
        assert!(removed(&parent.path().join("n0")));
        assert!(parent.path().join(format!("n{}", MAX_IDLE + 1)).exists());
    }

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
