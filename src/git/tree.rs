//! Reading one commit's tree in-process (git2): what is at a path, its
//! object id, a file's content, a directory's entries. Used to compute a
//! render's input closure without writing anything to disk. Blocking.

use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree};

/// What a path of the tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Directory { id: String },
    File { id: String, executable: bool },
    Symlink { id: String, target: String },
    Submodule { commit: String },
}

impl Entry {
    /// The object id (or, for a submodule, its commit).
    pub fn id(&self) -> &str {
        match self {
            Entry::Directory { id } | Entry::File { id, .. } | Entry::Symlink { id, .. } => id,
            Entry::Submodule { commit } => commit,
        }
    }
}

/// One commit of an object store, open for reading.
pub struct CommitTree {
    repo: Repository,
    root: Oid,
}

impl CommitTree {
    /// Opens `commit_sha` of the git directory `store` (a bare store or
    /// a work tree's `.git`).
    pub fn open(store: &Path, commit_sha: &str) -> Result<CommitTree, git2::Error> {
        let repo = Repository::open_bare(store)?;
        let root = repo.find_commit(Oid::from_str(commit_sha)?)?.tree()?.id();
        Ok(CommitTree { repo, root })
    }

    /// The id of the root tree.
    pub fn root_id(&self) -> String {
        self.root.to_string()
    }

    fn root(&self) -> Option<Tree<'_>> {
        self.repo.find_tree(self.root).ok()
    }

    /// What is at `path` (`a/b/c`, no `.` or `..`; empty is the root),
    /// without following symlinks; `None` when nothing is there (or a
    /// component on the way is not a directory).
    pub fn entry(&self, path: &str) -> Option<Entry> {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let Some((last, parents)) = components.split_last() else {
            return Some(Entry::Directory {
                id: self.root.to_string(),
            });
        };
        let mut tree = self.root()?;
        for component in parents {
            let id = tree
                .get_name(component)
                .filter(|e| e.kind() == Some(ObjectType::Tree))
                .map(|e| e.id())?;
            tree = self.repo.find_tree(id).ok()?;
        }
        let entry = tree.get_name(last)?;
        let id = entry.id().to_string();
        Some(match entry.kind() {
            Some(ObjectType::Tree) => Entry::Directory { id },
            Some(ObjectType::Commit) => Entry::Submodule { commit: id },
            Some(ObjectType::Blob) if entry.filemode() == 0o120000 => {
                let blob = self.repo.find_blob(entry.id()).ok()?;
                Entry::Symlink {
                    id,
                    target: String::from_utf8_lossy(blob.content()).into_owned(),
                }
            }
            Some(ObjectType::Blob) => Entry::File {
                id,
                executable: entry.filemode() & 0o111 != 0,
            },
            _ => return None,
        })
    }

    /// The content of the regular file at `path`, when it is one and at
    /// most `limit` bytes.
    pub fn read(&self, path: &str, limit: usize) -> Option<Vec<u8>> {
        let Entry::File { id, .. } = self.entry(path)? else {
            return None;
        };
        let blob = self.repo.find_blob(Oid::from_str(&id).ok()?).ok()?;
        (blob.size() <= limit).then(|| blob.content().to_vec())
    }

    /// The names in the directory at `path`.
    pub fn list(&self, path: &str) -> Option<Vec<String>> {
        let Entry::Directory { id } = self.entry(path)? else {
            return None;
        };
        let tree = self.repo.find_tree(Oid::from_str(&id).ok()?).ok()?;
        Some(
            tree.iter()
                .map(|e| String::from_utf8_lossy(e.name_bytes()).into_owned())
                .collect(),
        )
    }

    /// Calls `visit` with the path of every symlink, submodule and file in
    /// the directory at `path`, recursively, until it returns `false`.
    /// Returns `false` if stopped.
    pub fn walk(&self, path: &str, visit: &mut dyn FnMut(&str, &Entry) -> bool) -> bool {
        let Some(Entry::Directory { .. }) = self.entry(path) else {
            return true;
        };
        let Some(names) = self.list(path) else {
            return true;
        };
        for name in names {
            let child = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            let Some(entry) = self.entry(&child) else {
                continue;
            };
            if let Entry::Directory { .. } = entry {
                if !self.walk(&child, visit) {
                    return false;
                }
            } else if !visit(&child, &entry) {
                return false;
            }
        }
        true
    }
}
