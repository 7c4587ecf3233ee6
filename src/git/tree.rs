//! Reading one commit's tree in-process (git2): what is at a path, its
//! object id, a file's content, a directory's entries. Used to compute a
//! render's input closure without writing anything to disk. Blocking.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use git2::{ObjectType, Oid, Repository};

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

/// One commit of an object store, open for reading. Each tree object is
/// read and parsed at most once per `CommitTree` (libgit2 does not cache
/// trees over 4 KiB, and a monorepo's `apps/` directory is far larger:
/// resolving each path from the root read it again for every path).
pub struct CommitTree {
    repo: Repository,
    root: Oid,
    listings: Mutex<HashMap<Oid, Arc<Listing>>>,
}

/// One tree object's entries, in tree order, with a name index.
struct Listing {
    items: Vec<Item>,
    by_name: HashMap<String, usize>,
}

struct Item {
    name: String,
    kind: Option<ObjectType>,
    id: Oid,
    mode: i32,
}

impl CommitTree {
    /// Opens `commit_sha` of the git directory `store` (a bare store or
    /// a work tree's `.git`).
    pub fn open(store: &Path, commit_sha: &str) -> Result<CommitTree, git2::Error> {
        let repo = Repository::open_bare(store)?;
        let root = repo.find_commit(Oid::from_str(commit_sha)?)?.tree()?.id();
        Ok(CommitTree {
            repo,
            root,
            listings: Mutex::new(HashMap::new()),
        })
    }

    /// The id of the root tree.
    pub fn root_id(&self) -> String {
        self.root.to_string()
    }

    /// The entries of the tree object `id`, read once.
    fn listing(&self, id: Oid) -> Option<Arc<Listing>> {
        if let Some(known) = self
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(known.clone());
        }
        let tree = self.repo.find_tree(id).ok()?;
        let items: Vec<Item> = tree
            .iter()
            .map(|e| Item {
                name: String::from_utf8_lossy(e.name_bytes()).into_owned(),
                kind: e.kind(),
                id: e.id(),
                mode: e.filemode(),
            })
            .collect();
        let by_name = items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.name.clone(), i))
            .collect();
        let listing = Arc::new(Listing { items, by_name });
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, listing.clone());
        Some(listing)
    }

    /// The tree id of the directory at `path`.
    fn directory_id(&self, path: &str) -> Option<Oid> {
        let mut id = self.root;
        for component in path.split('/').filter(|c| !c.is_empty()) {
            let listing = self.listing(id)?;
            let item = &listing.items[*listing.by_name.get(component)?];
            if item.kind != Some(ObjectType::Tree) {
                return None;
            }
            id = item.id;
        }
        Some(id)
    }

    /// What an entry of a tree is.
    fn entry_of(&self, item: &Item) -> Option<Entry> {
        let id = item.id.to_string();
        Some(match item.kind {
            Some(ObjectType::Tree) => Entry::Directory { id },
            Some(ObjectType::Commit) => Entry::Submodule { commit: id },
            Some(ObjectType::Blob) if item.mode == 0o120000 => {
                let blob = self.repo.find_blob(item.id).ok()?;
                Entry::Symlink {
                    id,
                    target: String::from_utf8_lossy(blob.content()).into_owned(),
                }
            }
            Some(ObjectType::Blob) => Entry::File {
                id,
                executable: item.mode & 0o111 != 0,
            },
            _ => return None,
        })
    }

    /// What is at `path` (`a/b/c`, no `.` or `..`; empty is the root),
    /// without following symlinks; `None` when nothing is there (or a
    /// component on the way is not a directory).
    pub fn entry(&self, path: &str) -> Option<Entry> {
        let path = path.trim_matches('/');
        let (parent, last) = match path.rsplit_once('/') {
            Some((parent, last)) => (parent, last),
            None if path.is_empty() => {
                return Some(Entry::Directory {
                    id: self.root.to_string(),
                })
            }
            None => ("", path),
        };
        let listing = self.listing(self.directory_id(parent)?)?;
        let item = &listing.items[*listing.by_name.get(last)?];
        self.entry_of(item)
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
        let listing = self.listing(self.directory_id(path)?)?;
        Some(listing.items.iter().map(|item| item.name.clone()).collect())
    }

    /// Calls `visit` with the path of every symlink, submodule and file in
    /// the directory at `path`, recursively, until it returns `false`.
    /// Returns `false` if stopped.
    pub fn walk(&self, path: &str, visit: &mut dyn FnMut(&str, &Entry) -> bool) -> bool {
        let path = path.trim_matches('/');
        match self.directory_id(path) {
            Some(id) => self.walk_tree(id, path, visit),
            None => true,
        }
    }

    fn walk_tree(&self, id: Oid, path: &str, visit: &mut dyn FnMut(&str, &Entry) -> bool) -> bool {
        let Some(listing) = self.listing(id) else {
            return true;
        };
        for item in &listing.items {
            let child = if path.is_empty() {
                item.name.clone()
            } else {
                format!("{path}/{}", item.name)
            };
            if item.kind == Some(ObjectType::Tree) {
                if !self.walk_tree(item.id, &child, visit) {
                    return false;
                }
                continue;
            }
            let Some(entry) = self.entry_of(item) else {
                continue;
            };
            if !visit(&child, &entry) {
                return false;
            }
        }
        true
    }
}
