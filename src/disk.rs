//! The disk under `$TMPDIR`: one work directory per server (reused by the
//! next start, so object stores survive restarts), what a crash leaves
//! behind removed at start, and a byte budget for object stores,
//! snapshots and chart archives with least-recently-used eviction.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many servers may share one `$TMPDIR` (each takes the first free
/// `manifold`, `manifold-1`, ... directory).
const MAX_WORK_DIRS: usize = 64;

/// The bytes of the files under `path` (not following symlinks).
/// Blocking.
pub fn size_of(path: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// A server's work directory: private (0700), locked for the life of the
/// server so two servers never share one.
pub struct WorkDir {
    path: PathBuf,
    /// Held open with its lock; closing it releases the directory.
    _lock: fs::File,
    /// Set for a throwaway directory (removed on drop).
    _temporary: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// The first free `manifold[-N]` directory under `parent` (created
    /// when missing), with what an earlier server left half-done removed.
    pub fn persistent(parent: &Path) -> std::io::Result<WorkDir> {
        for n in 0..MAX_WORK_DIRS {
            let path = match n {
                0 => parent.join("manifold"),
                n => parent.join(format!("manifold-{n}")),
            };
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&path)?;
            let lock = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path.join(".lock"))?;
            match lock.try_lock() {
                Ok(()) => {
                    clean_stale(&path);
                    return Ok(WorkDir {
                        path,
                        _lock: lock,
                        _temporary: None,
                    });
                }
                Err(fs::TryLockError::WouldBlock) => continue,
                Err(fs::TryLockError::Error(err)) => return Err(err),
            }
        }
        Err(std::io::Error::other(format!(
            "every work directory under {} is in use",
            parent.display()
        )))
    }

    /// A new directory under `parent`, removed when the server goes.
    pub fn temporary(parent: &Path) -> std::io::Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix("manifold-")
            .tempdir_in(parent)?;
        let lock = fs::File::create(dir.path().join(".lock"))?;
        Ok(WorkDir {
            path: dir.path().to_path_buf(),
            _lock: lock,
            _temporary: Some(dir),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes what only a running server uses (snapshots, render views,
/// helm homes, partial downloads) and the lock and temporary files a
/// killed git leaves in object stores. Keeps the stores, chart archives
/// and the helm dependency cache.
fn clean_stale(work: &Path) {
    for dir in ["snapshots", "render/views", "render/helm/homes"] {
        let path = work.join(dir);
        if path.exists() {
            if let Err(err) = fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), %err, "cannot remove stale files");
            }
        }
    }
    let mut removed = 0;
    if let Ok(entries) = fs::read_dir(work.join("charts")) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "partial")
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    if let Ok(stores) = fs::read_dir(work.join("repos")) {
        for store in stores.flatten() {
            let path = store.path();
            let name = store.file_name().to_string_lossy().into_owned();
            if name.contains(".evicted-") {
                let _ = fs::remove_dir_all(&path);
                removed += 1;
                continue;
            }
            removed += remove_git_leftovers(&path);
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed files left by an earlier run");
    }
}

/// `*.lock` files and `tmp_*` packs in a bare store: a git that was killed
/// leaves them, and they would make the next fetch fail.
fn remove_git_leftovers(store: &Path) -> usize {
    let mut removed = 0;
    let mut pending = vec![store.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                // Objects are immutable files; only refs and packs hold
                // leftovers.
                if dir == store && name == "objects" {
                    pending.push(path.join("pack"));
                } else if dir != store.join("objects").join("pack") {
                    pending.push(path);
                }
            } else if (name.ends_with(".lock") || name.starts_with("tmp_"))
                && fs::remove_file(&path).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// What is on disk, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub stores: u64,
    pub snapshots: u64,
    pub charts: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.stores + self.snapshots + self.charts
    }
}

/// Keeps stores, snapshots and chart archives within a byte budget.
pub struct Budget {
    pub limit: Option<u64>,
    pub stores: Arc<crate::git::Stores>,
    pub snapshots: Arc<crate::source::Snapshots>,
    pub snapshots_dir: PathBuf,
    pub charts_dir: PathBuf,
    pub metrics: crate::metrics::DiskMetrics,
}

impl Budget {
    /// Measures, and when over the budget evicts: idle snapshots first,
    /// then chart archives and object stores, least recently used first,
    /// never one a request is using. Blocking.
    pub fn enforce(&self) -> Usage {
        let stores = self.stores.on_disk();
        let mut usage = Usage {
            stores: stores.iter().map(|s| s.bytes).sum(),
            snapshots: size_of(&self.snapshots_dir),
            charts: size_of(&self.charts_dir),
        };
        self.report(&usage);
        let Some(limit) = self.limit else {
            return usage;
        };
        if usage.total() <= limit {
            return usage;
        }
        let dropped = self.snapshots.evict_idle();
        if dropped > 0 {
            self.evicted("snapshots", dropped as u64);
            usage.snapshots = size_of(&self.snapshots_dir);
        }
        // Chart archives and stores, oldest use first.
        let mut candidates: Vec<(u64, PathBuf, u64, &'static str)> = stores
            .into_iter()
            .map(|s| (s.last_used, s.path, s.bytes, "stores"))
            .collect();
        if let Ok(entries) = fs::read_dir(&self.charts_dir) {
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let used = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                candidates.push((used, entry.path(), meta.len(), "charts"));
            }
        }
        candidates.sort();
        for (_, path, bytes, kind) in candidates {
            if usage.total() <= limit {
                break;
            }
            let removed = match kind {
                "stores" => self.stores.evict(&path),
                _ => fs::remove_file(&path).is_ok(),
            };
            if removed {
                match kind {
                    "stores" => usage.stores = usage.stores.saturating_sub(bytes),
                    _ => usage.charts = usage.charts.saturating_sub(bytes),
                }
                self.evicted(kind, 1);
                tracing::info!(kind, path = %path.display(), bytes, "evicted to stay within the disk budget");
            }
        }
        self.report(&usage);
        if usage.total() > limit {
            tracing::warn!(
                used = usage.total(),
                limit,
                "over the disk budget: what is left is in use"
            );
        }
        usage
    }

    fn report(&self, usage: &Usage) {
        for (kind, bytes) in [
            ("stores", usage.stores),
            ("snapshots", usage.snapshots),
            ("charts", usage.charts),
        ] {
            self.metrics
                .bytes
                .get_or_create(&crate::metrics::DiskLabels { kind })
                .set(bytes as i64);
        }
    }

    fn evicted(&self, kind: &'static str, count: u64) {
        self.metrics
            .evictions
            .get_or_create(&crate::metrics::DiskLabels { kind })
            .inc_by(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_servers_never_share_a_work_directory_and_a_restart_reuses_it() {
        let parent = tempfile::tempdir().unwrap();
        let first = WorkDir::persistent(parent.path()).unwrap();
        let second = WorkDir::persistent(parent.path()).unwrap();
        assert_ne!(first.path(), second.path());
        // What a crash leaves is removed; stores and archives stay.
        let store = first.path().join("repos/abc.git");
        fs::create_dir_all(store.join("refs/heads")).unwrap();
        fs::create_dir_all(store.join("objects/pack")).unwrap();
        fs::create_dir_all(first.path().join("snapshots/x")).unwrap();
        fs::create_dir_all(first.path().join("charts")).unwrap();
        for file in [
            "refs/heads/main.lock",
            "packed-refs.lock",
            "objects/pack/tmp_pack_123",
            "objects/pack/pack-1.pack",
            "HEAD",
        ] {
            fs::write(store.join(file), "x").unwrap();
        }
        fs::write(first.path().join("charts/a.tgz"), "x").unwrap();
        fs::write(first.path().join("charts/b.partial"), "x").unwrap();
        let path = first.path().to_path_buf();
        drop(first);
        let again = WorkDir::persistent(parent.path()).unwrap();
        assert_eq!(again.path(), path, "the free directory is taken again");
        assert!(store.join("HEAD").exists() && store.join("objects/pack/pack-1.pack").exists());
        assert!(!store.join("refs/heads/main.lock").exists());
        assert!(!store.join("packed-refs.lock").exists());
        assert!(!store.join("objects/pack/tmp_pack_123").exists());
        assert!(!path.join("snapshots").exists());
        assert!(path.join("charts/a.tgz").exists() && !path.join("charts/b.partial").exists());
        drop(second);
    }
}
