//! One bare object store per remote, fetched with the git CLI and read
//! in-process with git2.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{ErrorCode, ObjectType, Oid, Repository};

use super::remote::{self, RemoteRefs, Resolved};
use super::{git_invocation, Config, Error, Operation};
use crate::domain::RepoUrl;
use crate::exec::Supervisor;

/// The object stores of every remote this process has seen.
pub struct Stores {
    /// Directory holding one `<random>.git` per remote (mode 0700).
    root: PathBuf,
    config: Config,
    supervisor: Supervisor,
    /// Normalised remote URL -> its store. The mutex guards only the map;
    /// each store serialises its own fetches.
    stores: Mutex<HashMap<String, Arc<RepoStore>>>,
    /// GitHub App installation tokens, minted on first need.
    tokens: std::sync::OnceLock<Result<super::github_app::Tokens, String>>,
    /// Google Cloud and Azure access tokens, minted on first need.
    cloud_tokens: std::sync::OnceLock<Result<super::cloud::CloudTokens, String>>,
    metrics: crate::metrics::GitMetrics,
}

/// The bare object store of one remote.
pub struct RepoStore {
    path: PathBuf,
    /// When a request last used it (seconds since the epoch), for
    /// least-recently-used eviction.
    last_used: std::sync::atomic::AtomicU64,
    /// Created on first use.
    init: tokio::sync::OnceCell<()>,
    /// Serialises fetches into this store. Held by the fetch task, not the
    /// request: a fetch runs to completion even if its requester goes away.
    /// Requests that waited check for their commit again before fetching,
    /// so concurrent requests for one commit share one fetch.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What an export adds to a commit's plain tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ExportExtras {
    /// Git directories of submodule stores (see
    /// [`Stores::fetch_submodules`]): a gitlink whose commit one of them
    /// holds is exported as that commit's tree.
    pub submodules: Vec<PathBuf>,
    /// Git LFS pointer files become their content, from the LFS objects
    /// [`Stores::fetch_lfs`] fetched.
    pub lfs: bool,
}

/// What exporting a tree wrote.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    pub files: u64,
    pub bytes: u64,
    /// Paths (relative to the root) of submodules, exported as empty
    /// directories because their content is not in this store.
    pub submodules: Vec<String>,
    /// Git LFS pointers replaced by their content.
    pub lfs_files: u64,
}

impl Stores {
    /// `root` must exist and be private to this process.
    pub fn new(root: PathBuf, config: Config, supervisor: Supervisor) -> Self {
        Stores {
            root,
            config,
            supervisor,
            stores: Mutex::new(HashMap::new()),
            tokens: std::sync::OnceLock::new(),
            cloud_tokens: std::sync::OnceLock::new(),
            metrics: Default::default(),
        }
    }

    /// These stores, reporting into `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::GitMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts a failed resolution of `revision` against `repo_url`'s refs
    /// (Argo CD's `argocd_git_lsremote_fail_total`).
    pub fn record_ls_remote_failure(&self, repo_url: &RepoUrl, revision: &str) {
        self.metrics
            .ls_remote_failures
            .get_or_create(&crate::metrics::GitFailureLabels {
                repo: repo_url.redacted(),
                revision: revision.to_string(),
            })
            .inc();
    }

    /// Counts one request to a remote and its duration.
    fn observe(&self, repo_url: &RepoUrl, request_type: &'static str, started: std::time::Instant) {
        let labels = crate::metrics::GitLabels {
            repo: repo_url.redacted(),
            request_type,
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// `repo_url` with credentials git can use: a GitHub App's become an
    /// installation token (username `x-access-token`); a Google Cloud or
    /// Azure identity an access token (for Azure also sent as a bearer
    /// header, as Argo CD does).
    async fn authorised(&self, repo_url: &RepoUrl) -> Result<RepoUrl, Error> {
        let Some(credentials) = repo_url.credentials() else {
            return Ok(repo_url.clone());
        };
        let failed = |message: String| Error::Credentials {
            repo_url: repo_url.redacted(),
            message,
        };
        if let Some(identity) = &credentials.cloud {
            let tokens = self
                .cloud_tokens
                .get_or_init(|| super::cloud::CloudTokens::new().map_err(|err| err.to_string()))
                .clone()
                .map_err(failed)?;
            let (username, password) = tokens
                .credentials(identity)
                .await
                .map_err(|err| failed(err.to_string()))?;
            let mut credentials = credentials.clone();
            credentials.cloud = None;
            if super::cloud::uses_bearer_header(identity) {
                credentials.bearer_token = password.clone();
            }
            credentials.username = username;
            credentials.password = password;
            return Ok(repo_url.clone().with_credentials(credentials));
        }
        let Some(app) = &credentials.github_app else {
            return Ok(repo_url.clone());
        };
        let tokens = self
            .tokens
            .get_or_init(|| super::github_app::Tokens::new().map_err(|err| err.to_string()))
            .clone()
            .map_err(failed)?;
        let token = tokens
            .token(app)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let mut credentials = credentials.clone();
        credentials.github_app = None;
        credentials.username = super::github_app::ACCESS_TOKEN_USERNAME.to_string();
        credentials.password = token;
        Ok(repo_url.clone().with_credentials(credentials))
    }

    /// Lists the refs the remote advertises (network; retried).
    pub async fn list_refs(&self, repo_url: &RepoUrl) -> Result<RemoteRefs, Error> {
        let authorised = self.authorised(repo_url).await?;
        let started = std::time::Instant::now();
        let listed =
            remote::list_refs(&self.supervisor, &self.config, &self.root, &authorised).await;
        self.observe(repo_url, "ls-remote", started);
        listed
    }

    /// The store of `repo_url`, created (empty) on first use.
    pub async fn store(&self, repo_url: &RepoUrl) -> Result<Arc<RepoStore>, Error> {
        let store = {
            let mut stores = self.stores.lock().expect("store map lock poisoned");
            let normalized = repo_url.normalized();
            let path = self.root.join(store_dir_name(&normalized));
            stores
                .entry(normalized)
                .or_insert_with(|| {
                    Arc::new(RepoStore {
                        path,
                        last_used: Default::default(),
                        init: tokio::sync::OnceCell::new(),
                        fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
                    })
                })
                .clone()
        };
        store.touch();
        store
            .init
            .get_or_try_init(|| async {
                let path = store.path.clone();
                tokio::task::spawn_blocking(move || {
                    // Tolerates a directory left by an earlier failed attempt.
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .recursive(true)
                        .create(&path)?;
                    Repository::init_bare(&path).map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(())
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|err| Error::Store {
                    repo_url: repo_url.redacted(),
                    message: format!("cannot create object store: {err}"),
                })
            })
            .await?;
        Ok(store)
    }

    /// Makes the commit `resolved` names present in the store of `repo_url`
    /// and returns the store and the full commit SHA. Fetches only when the
    /// commit is missing, and concurrent callers share one fetch.
    pub async fn ensure_commit(
        &self,
        repo_url: &RepoUrl,
        resolved: &Resolved,
        revision_for_errors: &str,
    ) -> Result<(Arc<RepoStore>, String), Error> {
        let store = self.store(repo_url).await?;
        let sha = self
            .fetch_commit(&store, repo_url, resolved, revision_for_errors)
            .await?;
        Ok((store, sha))
    }

    async fn fetch_commit(
        &self,
        store: &RepoStore,
        repo_url: &RepoUrl,
        resolved: &Resolved,
        revision_for_errors: &str,
    ) -> Result<String, Error> {
        let wanted = match resolved {
            Resolved::Commit(sha) | Resolved::Abbreviated(sha) => sha.clone(),
        };
        if let Some(sha) = find_commit(&store.path, repo_url, &wanted, revision_for_errors).await? {
            return Ok(sha);
        }
        let fetching = store.fetch_lock.clone().lock_owned().await;
        // Whoever held the lock may have fetched what we need.
        if let Some(sha) = find_commit(&store.path, repo_url, &wanted, revision_for_errors).await? {
            return Ok(sha);
        }
        // The fetch runs in its own task, which holds the lock: a request
        // that goes away (deadline, cancellation) does not kill a fetch that
        // others are queued behind.
        let authorised = self.authorised(repo_url).await?;
        let fetch = tokio::spawn(fetch(
            self.supervisor.clone(),
            self.config.clone(),
            store.path.clone(),
            authorised,
            resolved.clone(),
            fetching,
        ));
        let started = std::time::Instant::now();
        let fetched = fetch
            .await
            .map_err(|err| Error::Store {
                repo_url: repo_url.redacted(),
                message: format!("fetch task failed: {err}"),
            })
            .and_then(|r| r);
        self.observe(repo_url, "fetch", started);
        if fetched.is_err() {
            self.metrics
                .fetch_failures
                .get_or_create(&crate::metrics::GitFailureLabels {
                    repo: repo_url.redacted(),
                    revision: revision_for_errors.to_string(),
                })
                .inc();
        }
        fetched?;
        match find_commit(&store.path, repo_url, &wanted, revision_for_errors).await? {
            Some(sha) => Ok(sha),
            None => Err(Error::RevisionNotFound {
                repo_url: repo_url.redacted(),
                revision: revision_for_errors.to_string(),
            }),
        }
    }
}

impl Stores {
    /// Fetches the Git LFS objects that LFS pointers in the tree of
    /// `commit_sha` name and the store lacks (`enableLfs`; Argo CD runs
    /// `git lfs fetch`). Runs under the store's fetch lock; does nothing
    /// when every object is present.
    pub async fn fetch_lfs(
        &self,
        repo_url: &RepoUrl,
        store: &Arc<RepoStore>,
        commit_sha: &str,
    ) -> Result<(), Error> {
        let missing = || {
            let (path, sha) = (store.path.clone(), commit_sha.to_string());
            async move {
                tokio::task::spawn_blocking(move || missing_lfs_objects(&path, &sha))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(|err| Error::Store {
                        repo_url: repo_url.redacted(),
                        message: format!("cannot read LFS pointers: {err}"),
                    })
            }
        };
        if missing().await? == 0 {
            return Ok(());
        }
        let _fetching = store.fetch_lock.clone().lock_owned().await;
        if missing().await? == 0 {
            return Ok(());
        }
        let authorised = self.authorised(repo_url).await?;
        let command = git_invocation(&self.config, &store.path, &authorised)?;
        // git-lfs needs a named remote; this one exists only for the run.
        let invocation = command
            .invocation
            .clone()
            .env("GIT_DIR", &store.path)
            .arg("-c")
            .arg(format!("remote.origin.url={}", command.url))
            .args(["lfs", "fetch", "origin", commit_sha]);
        self.supervisor
            .run(invocation)
            .await
            .map_err(|err| Error::from_exec(err, &authorised, Operation::Fetch))?;
        Ok(())
    }
}

/// How many LFS pointers of `sha`'s tree name an object missing from the
/// store's `lfs/objects`. Reads only small blobs.
fn missing_lfs_objects(store: &Path, sha: &str) -> std::io::Result<usize> {
    let repo = Repository::open_bare(store).map_err(std::io::Error::other)?;
    let odb = repo.odb().map_err(std::io::Error::other)?;
    let tree = Oid::from_str(sha)
        .and_then(|oid| repo.find_commit(oid))
        .and_then(|commit| commit.tree())
        .map_err(std::io::Error::other)?;
    let objects = store.join("lfs/objects");
    let mut missing = 0;
    tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
            return git2::TreeWalkResult::Ok;
        }
        let small = odb
            .read_header(entry.id())
            .is_ok_and(|(size, _)| size <= 1024);
        if !small {
            return git2::TreeWalkResult::Ok;
        }
        if let Some((oid, size)) = repo
            .find_blob(entry.id())
            .ok()
            .and_then(|blob| parse_lfs_pointer(blob.content()))
        {
            let path = objects.join(&oid[0..2]).join(&oid[2..4]).join(&oid);
            if !fs::metadata(path).is_ok_and(|m| m.len() == size) {
                missing += 1;
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(std::io::Error::other)?;
    Ok(missing)
}

/// Fetches every branch and tag of `repo_url` into the store at `path`;
/// if the wanted commit is still missing and was named by full SHA, asks
/// for it by id (a commit no branch or tag reaches, e.g. a pull-request
/// head; most servers allow this). `_fetching` is the store's fetch lock,
/// released when this returns.
async fn fetch(
    supervisor: Supervisor,
    config: Config,
    path: PathBuf,
    repo_url: RepoUrl,
    resolved: Resolved,
    _fetching: tokio::sync::OwnedMutexGuard<()>,
) -> Result<(), Error> {
    let command = git_invocation(&config, &path, &repo_url)?;
    let url = command.url.clone();
    let invocation = command.invocation.clone().env("GIT_DIR", &path);
    let fetch_all = invocation
        .clone()
        .args([
            "fetch",
            "--force",
            "--prune",
            "--quiet",
            "--no-write-fetch-head",
            "--",
        ])
        .arg(&url)
        .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]);
    supervisor
        .run(fetch_all)
        .await
        .map_err(|err| Error::from_exec(err, &repo_url, Operation::Fetch))?;
    if let Resolved::Commit(sha) = &resolved {
        if find_commit(&path, &repo_url, sha, sha).await?.is_none() {
            let fetch_one = invocation
                .args(["fetch", "--force", "--quiet", "--no-write-fetch-head", "--"])
                .arg(&url)
                .arg(sha);
            // Refused by servers that only serve advertised tips; the
            // caller then reports the revision as not found.
            let _ = supervisor.run(fetch_one).await;
        }
    }
    Ok(())
}

/// The full SHA of the commit `wanted` (full or abbreviated) names, if the
/// store at `path` has it.
async fn find_commit(
    path: &Path,
    repo_url: &RepoUrl,
    wanted: &str,
    revision_for_errors: &str,
) -> Result<Option<String>, Error> {
    let path = path.to_path_buf();
    let wanted = wanted.to_string();
    let outcome = tokio::task::spawn_blocking(move || -> Result<Option<String>, git2::Error> {
        let repo = Repository::open_bare(&path)?;
        let commit = if wanted.len() == 40 {
            repo.find_commit(Oid::from_str(&wanted)?)
        } else {
            repo.find_commit_by_prefix(&wanted)
        };
        match commit {
            Ok(commit) => Ok(Some(commit.id().to_string())),
            Err(err) if err.code() == ErrorCode::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    })
    .await
    .map_err(|err| Error::Store {
        repo_url: repo_url.redacted(),
        message: err.to_string(),
    })?;
    outcome.map_err(|err| match err.code() {
        ErrorCode::Ambiguous => Error::AmbiguousRevision {
            repo_url: repo_url.redacted(),
            revision: revision_for_errors.to_string(),
        },
        _ => Error::Store {
            repo_url: repo_url.redacted(),
            message: err.message().to_string(),
        },
    })
}

/// The directory of a remote's store: named by a digest of its normalised
/// URL, so a restart finds the stores it already has.
fn store_dir_name(normalized: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "{}.git",
        &hex::encode(Sha256::digest(normalized.as_bytes()))[..32]
    )
}

/// A store directory on disk, as eviction sees it.
#[derive(Debug)]
pub struct StoreOnDisk {
    pub path: PathBuf,
    pub bytes: u64,
    /// Seconds since the epoch.
    pub last_used: u64,
}

impl Stores {
    /// Every store directory under the root with its size and when it was
    /// last used (this process's record, else the directory's mtime).
    /// Blocking.
    pub fn on_disk(&self) -> Vec<StoreOnDisk> {
        let known: HashMap<PathBuf, u64> = {
            let stores = self.stores.lock().expect("store map lock poisoned");
            stores
                .values()
                .map(|store| {
                    (
                        store.path.clone(),
                        store.last_used.load(std::sync::atomic::Ordering::Relaxed),
                    )
                })
                .collect()
        };
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".git"))
            .map(|entry| {
                let path = entry.path();
                let mtime = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let last_used = known
                    .get(&path)
                    .copied()
                    .filter(|t| *t > 0)
                    .unwrap_or(mtime);
                StoreOnDisk {
                    bytes: crate::disk::size_of(&path),
                    path,
                    last_used,
                }
            })
            .collect()
    }

    /// Removes the store at `path` unless a request is using it (holds
    /// it, or fetches into it). Returns whether it was removed. Blocking.
    pub fn evict(&self, path: &Path) -> bool {
        let doomed = {
            let mut stores = self.stores.lock().expect("store map lock poisoned");
            let key = stores
                .iter()
                .find(|(_, store)| store.path == path)
                .map(|(key, store)| (key.clone(), store.clone()));
            if let Some((key, store)) = key {
                // The map's reference and ours: anything more is a user.
                if Arc::strong_count(&store) > 2 || store.fetch_lock.try_lock().is_err() {
                    return false;
                }
                stores.remove(&key);
            }
            // Out of the way while the map is locked: a request for this
            // remote from now on creates a fresh store there.
            let doomed =
                path.with_extension(format!("evicted-{}", crate::domain::unguessable_name()));
            if let Err(err) = fs::rename(path, &doomed) {
                tracing::warn!(dir = %path.display(), %err, "cannot evict an object store");
                return false;
            }
            doomed
        };
        if let Err(err) = fs::remove_dir_all(&doomed) {
            tracing::warn!(dir = %doomed.display(), %err, "cannot remove an evicted object store");
        }
        true
    }
}

impl RepoStore {
    fn touch(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_used
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bare object store on disk (for in-process reads).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the tree of `commit_sha` (only the directory `subtree` of it
    /// when given, at its place below `destination`) into the new
    /// directory `destination`: files read-only, symlinks as symlinks,
    /// submodules as their commit's tree when `extras` has it, else as
    /// empty directories; with `extras.lfs`, LFS pointers as their
    /// content. Entry names git itself would refuse (`.`, `..`, `.git`,
    /// or containing `/`) are skipped. Blocking.
    pub fn export_tree(
        &self,
        repo_url: &RepoUrl,
        commit_sha: &str,
        subtree: Option<&str>,
        destination: &Path,
        extras: &ExportExtras,
    ) -> Result<ExportReport, Error> {
        export_tree(&self.path, commit_sha, subtree, destination, extras).map_err(|err| {
            Error::Store {
                repo_url: repo_url.redacted(),
                message: format!("cannot export commit {commit_sha}: {err}"),
            }
        })
    }

    /// The paths (files, symlinks, submodules; repository-relative) that
    /// differ between the trees of two commits, sorted: for a rename both
    /// the old and the new path. Compares tree objects only, so unchanged
    /// directories cost nothing. Blocking.
    pub fn changed_files(&self, from_sha: &str, to_sha: &str) -> Result<Vec<String>, git2::Error> {
        let repo = Repository::open_bare(&self.path)?;
        let tree = |sha: &str| -> Result<git2::Tree<'_>, git2::Error> {
            repo.find_commit(Oid::from_str(sha)?)?.tree()
        };
        let (from, to) = (tree(from_sha)?, tree(to_sha)?);
        let diff = repo.diff_tree_to_tree(Some(&from), Some(&to), None)?;
        let mut paths = std::collections::BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                // A path that is not UTF-8 still counts, in its directory.
                if let Some(path) = file.path_bytes() {
                    paths.insert(String::from_utf8_lossy(path).into_owned());
                }
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// `commit_sha`'s tree, open for in-process reads. Blocking.
    pub fn commit_tree(&self, commit_sha: &str) -> Result<super::tree::CommitTree, git2::Error> {
        super::tree::CommitTree::open(&self.path, commit_sha)
    }

    /// Whether the directory `path` of `commit_sha` can be rendered as a
    /// Directory app from an export of that directory alone: `path` is a
    /// plain path of directories (no `..`, no symlink on the way), and
    /// nothing below it can read outside it or make it another source
    /// type (no symlinks, submodules or `.jsonnet` files anywhere below,
    /// no chart or kustomization file at its top). Blocking; reads only
    /// tree objects.
    pub fn is_self_contained_directory(&self, commit_sha: &str, path: &str) -> bool {
        self_contained(&self.path, commit_sha, path).unwrap_or(false)
    }
}

fn export_tree(
    store: &Path,
    sha: &str,
    subtree: Option<&str>,
    destination: &Path,
    extras: &ExportExtras,
) -> std::io::Result<ExportReport> {
    let repo =
        super::open_with_alternates(store, &extras.submodules).map_err(std::io::Error::other)?;
    let oid = Oid::from_str(sha).map_err(std::io::Error::other)?;
    let mut tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(std::io::Error::other)?;
    fs::DirBuilder::new().mode(0o755).create(destination)?;
    let mut directory = destination.to_path_buf();
    let relative = subtree.unwrap_or("");
    if let Some(subtree) = subtree {
        for component in subtree.split('/') {
            let id = tree
                .get_name(component)
                .filter(|entry| entry.kind() == Some(ObjectType::Tree))
                .map(|entry| entry.id())
                .ok_or_else(|| std::io::Error::other(format!("{subtree} is not a directory")))?;
            let next = repo.find_tree(id).map_err(std::io::Error::other)?;
            directory.push(component);
            fs::DirBuilder::new().mode(0o755).create(&directory)?;
            tree = next;
        }
    }
    let mut export = Export {
        repo: &repo,
        lfs_objects: extras.lfs.then(|| store.join("lfs/objects")),
        report: ExportReport::default(),
        depth: 0,
    };
    export.write_tree(&tree, &directory, relative)?;
    Ok(export.report)
}

/// The kustomization and chart file names that make a directory something
/// other than a Directory app.
const NOT_A_DIRECTORY_APP: [&str; 4] = [
    "Chart.yaml",
    "kustomization.yaml",
    "kustomization.yml",
    "Kustomization",
];

fn self_contained(store: &Path, sha: &str, path: &str) -> Result<bool, git2::Error> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.is_empty() || components.iter().any(|c| *c == "." || *c == "..") {
        return Ok(false);
    }
    let repo = Repository::open_bare(store)?;
    let mut tree = repo.find_commit(Oid::from_str(sha)?)?.tree()?;
    for component in components {
        let Some(id) = tree
            .get_name(component)
            .filter(|entry| entry.kind() == Some(ObjectType::Tree))
            .map(|entry| entry.id())
        else {
            return Ok(false);
        };
        tree = repo.find_tree(id)?;
    }
    if NOT_A_DIRECTORY_APP
        .iter()
        .any(|name| tree.get_name(name).is_some())
    {
        return Ok(false);
    }
    fn clean(repo: &Repository, tree: &git2::Tree<'_>, depth: usize) -> Result<bool, git2::Error> {
        if depth > 64 {
            return Ok(false);
        }
        for entry in tree.iter() {
            if entry.filemode() == 0o120000
                || entry.kind() == Some(ObjectType::Commit)
                || entry.name_bytes().ends_with(b".jsonnet")
            {
                return Ok(false);
            }
            if entry.kind() == Some(ObjectType::Tree)
                && !clean(repo, &repo.find_tree(entry.id())?, depth + 1)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
    clean(&repo, &tree, 0)
}

/// Submodules nest at most this deep in an export.
const MAX_SUBMODULE_DEPTH: usize = 8;

/// One export in progress.
struct Export<'r> {
    repo: &'r Repository,
    /// Where LFS objects are, when pointers are to be replaced.
    lfs_objects: Option<PathBuf>,
    report: ExportReport,
    /// Submodules entered on the way to the current directory.
    depth: usize,
}

impl Export<'_> {
    fn write_tree(
        &mut self,
        tree: &git2::Tree<'_>,
        directory: &Path,
        relative: &str,
    ) -> std::io::Result<()> {
        let repo = self.repo;
        for entry in tree.iter() {
            let name = entry.name_bytes();
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name == b".git"
                || name.contains(&b'/')
            {
                continue;
            }
            let path = directory.join(std::ffi::OsStr::from_bytes(name));
            let child_relative = match relative {
                "" => String::from_utf8_lossy(name).into_owned(),
                _ => format!("{relative}/{}", String::from_utf8_lossy(name)),
            };
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    fs::DirBuilder::new().mode(0o755).create(&path)?;
                    let subtree = repo.find_tree(entry.id()).map_err(std::io::Error::other)?;
                    self.write_tree(&subtree, &path, &child_relative)?;
                }
                Some(ObjectType::Blob) => {
                    let blob = repo.find_blob(entry.id()).map_err(std::io::Error::other)?;
                    let content = blob.content();
                    if entry.filemode() == 0o120000 {
                        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(content), &path)?;
                    } else {
                        let mode = if entry.filemode() & 0o111 != 0 {
                            0o555
                        } else {
                            0o444
                        };
                        let mut file = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(mode)
                            .open(&path)?;
                        let object = self
                            .lfs_objects
                            .as_deref()
                            .and_then(|objects| lfs_object(objects, content));
                        match object {
                            Some(mut object) => {
                                self.report.bytes += std::io::copy(&mut object, &mut file)?;
                                self.report.lfs_files += 1;
                            }
                            None => {
                                file.write_all(content)?;
                                self.report.bytes += content.len() as u64;
                            }
                        }
                    }
                    self.report.files += 1;
                }
                Some(ObjectType::Commit) => {
                    fs::DirBuilder::new().mode(0o755).create(&path)?;
                    // A submodule: its tree, when its store is among the
                    // alternates; else an empty directory.
                    match repo.find_commit(entry.id()).and_then(|c| c.tree()) {
                        Ok(subtree) if self.depth < MAX_SUBMODULE_DEPTH => {
                            self.depth += 1;
                            let written = self.write_tree(&subtree, &path, &child_relative);
                            self.depth -= 1;
                            written?;
                        }
                        _ => self.report.submodules.push(child_relative),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The LFS object `pointer` (a blob's content) names, open for reading,
/// when it is a Git LFS pointer and the object is in `objects` with the
/// size the pointer gives.
fn lfs_object(objects: &Path, pointer: &[u8]) -> Option<fs::File> {
    let (oid, size) = parse_lfs_pointer(pointer)?;
    let path = objects.join(&oid[0..2]).join(&oid[2..4]).join(&oid);
    let file = fs::File::open(path).ok()?;
    (file.metadata().ok()?.len() == size).then_some(file)
}

/// The sha256 object id and size of a Git LFS pointer file.
pub(crate) fn parse_lfs_pointer(content: &[u8]) -> Option<(String, u64)> {
    if content.len() > 1024 {
        return None;
    }
    let text = std::str::from_utf8(content).ok()?;
    let mut lines = text.lines();
    let version = lines.next()?;
    if version != "version https://git-lfs.github.com/spec/v1"
        && version != "version https://hawser.github.com/spec/v1"
    {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines {
        if let Some(value) = line.strip_prefix("oid sha256:") {
            oid = Some(value);
        } else if let Some(value) = line.strip_prefix("size ") {
            size = value.parse::<u64>().ok();
        }
    }
    let oid = oid.filter(|oid| {
        oid.len() == 64
            && oid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })?;
    Some((oid.to_string(), size?))
}
