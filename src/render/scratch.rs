//! Writable views of a read-only snapshot, for tools that write next to
//! the files they read (`helm dependency build`, kustomize overrides,
//! `--enable-helm` chart downloads).
//!
//! A view copies only the app directory. Every other entry on the way
//! from the repository root down to it is a symlink into the snapshot, so
//! `../base` or `file://../common` still resolve, and nothing a tool
//! writes can reach a file another render sees: the copied files are new
//! inodes, and the symlinked parts are never written (tools write only in
//! the app directory).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A private, writable view of one app directory of a snapshot. Removed
/// when dropped.
#[derive(Debug)]
pub struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    app_dir: PathBuf,
    /// Whether the app directory is a private copy (else it is the
    /// snapshot's own, and must not be written).
    copied: bool,
}

impl Scratch {
    /// Builds the view of `app_dir` (canonical, inside the canonical
    /// `snapshot_root`) under `parent`.
    pub fn create(parent: &Path, snapshot_root: &Path, app_dir: &Path) -> io::Result<Scratch> {
        let relative = app_dir
            .strip_prefix(snapshot_root)
            .map_err(|_| io::Error::other("app directory is outside the snapshot"))?;
        let dir = tempfile::Builder::new()
            .prefix("view-")
            .tempdir_in(parent)?;
        let root = dir.path().join("repo");
        let mut snapshot_level = snapshot_root.to_path_buf();
        let mut view_level = root.clone();
        for component in relative.components() {
            fs::create_dir(&view_level)?;
            let next = component.as_os_str();
            for entry in fs::read_dir(&snapshot_level)? {
                let entry = entry?;
                if entry.file_name() != next {
                    std::os::unix::fs::symlink(entry.path(), view_level.join(entry.file_name()))?;
                }
            }
            snapshot_level.push(next);
            view_level.push(next);
        }
        copy_tree(app_dir, &view_level)?;
        Ok(Scratch {
            _dir: dir,
            root,
            app_dir: view_level,
            copied: true,
        })
    }

    /// No copy at all: the app directory and root are the snapshot's, for
    /// a render that writes nothing there; only the private directory is
    /// new.
    pub fn in_place(parent: &Path, snapshot_root: &Path, app_dir: &Path) -> io::Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("view-")
            .tempdir_in(parent)?;
        Ok(Scratch {
            _dir: dir,
            root: snapshot_root.to_path_buf(),
            app_dir: app_dir.to_path_buf(),
            copied: false,
        })
    }

    /// Whether the app directory is a private, writable copy.
    pub fn is_copy(&self) -> bool {
        self.copied
    }

    /// A view that is a full copy of the snapshot, for tools that may
    /// write anywhere in the repository (kustomize's chart inflation writes
    /// next to whichever kustomization declares the chart, often a base).
    pub fn create_full(parent: &Path, snapshot_root: &Path, app_dir: &Path) -> io::Result<Scratch> {
        let relative = app_dir
            .strip_prefix(snapshot_root)
            .map_err(|_| io::Error::other("app directory is outside the snapshot"))?;
        let dir = tempfile::Builder::new()
            .prefix("view-")
            .tempdir_in(parent)?;
        let root = dir.path().join("repo");
        copy_tree(snapshot_root, &root)?;
        let app_dir = root.join(relative);
        Ok(Scratch {
            _dir: dir,
            root,
            app_dir,
            copied: true,
        })
    }

    /// The view's repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A private directory beside the view, for files that must not be
    /// in the repository (inline values, tool homes).
    pub fn private_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Replaces these entries of the app directory copy, when they are
    /// symlinks, by copies of what they point to, so that a tool writing
    /// there writes new files instead of through a link.
    pub fn materialize_links(&self, names: &[&str]) -> io::Result<()> {
        if !self.copied {
            return Err(io::Error::other("the app directory is not a private copy"));
        }
        for name in names {
            let path = self.app_dir.join(name);
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !metadata.file_type().is_symlink() {
                continue;
            }
            let target = fs::metadata(&path);
            let resolved = fs::canonicalize(&path);
            fs::remove_file(&path)?;
            match (target, resolved) {
                (Ok(target), Ok(resolved)) if target.is_dir() => copy_tree(&resolved, &path)?,
                (Ok(target), Ok(resolved)) if target.is_file() => {
                    fs::copy(&resolved, &path)?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
                }
                // Dangling or special: simply gone from the copy.
                _ => {}
            }
        }
        Ok(())
    }

    /// The writable copy of the app directory.
    pub fn app_dir(&self) -> &Path {
        &self.app_dir
    }
}

/// Copies a directory tree: files become new writable files, symlinks are
/// recreated as they are (relative targets keep resolving into the view).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_app_dir_and_links_its_surroundings() {
        let snapshot = tempfile::tempdir().unwrap();
        let root = snapshot.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("apps/overlay/sub")).unwrap();
        fs::create_dir_all(root.join("apps/base")).unwrap();
        fs::write(root.join("apps/overlay/kustomization.yaml"), "a").unwrap();
        fs::write(root.join("apps/overlay/sub/x.yaml"), "x").unwrap();
        fs::write(root.join("apps/base/kustomization.yaml"), "b").unwrap();
        fs::write(root.join("top.yaml"), "t").unwrap();
        let parent = tempfile::tempdir().unwrap();

        let view = Scratch::create(parent.path(), &root, &root.join("apps/overlay")).unwrap();
        let app = view.app_dir();
        fs::write(app.join("kustomization.yaml"), "changed").unwrap();
        assert_eq!(
            fs::read_to_string(root.join("apps/overlay/kustomization.yaml")).unwrap(),
            "a"
        );
        assert_eq!(fs::read_to_string(app.join("sub/x.yaml")).unwrap(), "x");
        assert_eq!(
            fs::read_to_string(app.join("../base/kustomization.yaml")).unwrap(),
            "b"
        );
        assert_eq!(
            fs::read_to_string(view.root().join("top.yaml")).unwrap(),
            "t"
        );

        let whole = Scratch::create(parent.path(), &root, &root).unwrap();
        assert_eq!(whole.app_dir(), whole.root());
        assert!(whole.root().join("apps/base/kustomization.yaml").is_file());
        let dir = whole.root().to_path_buf();
        drop(whole);
        assert!(!dir.exists());
    }
}
