//! The request pipeline of DESIGN.md, in domain types: resolve the
//! revision, make the commit local, take its snapshot, render, post-process.
//!
//! It knows nothing of protobuf (the gRPC layer converts) and spawns no
//! processes itself (git and tools run through [`crate::exec`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{self, flight::Flights};
use crate::domain::{RepoUrl, Tracking, TrackingMethod};
use crate::git::{self, Resolved};
use crate::metrics::RenderMetrics;
use crate::render::env::{BuildEnv, BuildEnvInput};
use crate::render::helm::{HelmRequest, Rendered};
use crate::render::kustomize::{KustomizeOptions, KustomizeRequest};
use crate::render::spec::SourceSpec;
use crate::render::{self, directory, jsonnet, manifest, SourceType};
use crate::source;

mod charts;
mod details;
mod queries;
mod recent;
mod revisions;

pub use charts::ChartDetails;
pub use details::AppDetails;
pub use queries::Commit;

pub use recent::{PushEvent, PushOutcome};
pub use revisions::{UpdateRevisionRequest, UpdateRevisionResult};

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
    /// The error of a render this request shared with others.
    #[error(transparent)]
    Shared(Arc<Error>),
    /// The request is malformed.
    #[error("{message}")]
    Invalid { message: String },
    /// An uploaded archive was refused.
    #[error(transparent)]
    Upload(source::tarball::Error),
    /// A Helm repository failed.
    #[error(transparent)]
    Charts(crate::charts::Error),
    /// Reading a commit in process failed.
    #[error(transparent)]
    Inspect(crate::git::inspect::Error),
    /// Generation of this app is paused after repeated failures
    /// (`ARGOCD_PAUSE_GEN_*`); the last failure's message.
    #[error("Manifest generation error (cached): {message}")]
    CachedFailure { message: String },
}

/// Lifetime of a cross-replica render lease; the holder renews it every
/// third of that while it renders, so a holder that dies blocks the others
/// for at most this long.
const RENDER_LEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest a replica waits for another's render of the same key before
/// rendering itself.
const RENDER_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A held render lease: renewed in the background until dropped, then
/// released (also when the render is cancelled or panics).
struct HeldLease {
    renewer: tokio::task::JoinHandle<()>,
    renderer: Arc<Renderer>,
    lease: String,
    token: String,
}

impl HeldLease {
    fn start(renderer: Arc<Renderer>, lease: String, token: String) -> HeldLease {
        let renewer = {
            let (renderer, lease, token) = (renderer.clone(), lease.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RENDER_LEASE / 3).await;
                    if !renderer.cache.renew(&lease, &token, RENDER_LEASE).await {
                        return;
                    }
                }
            })
        };
        HeldLease {
            renewer,
            renderer,
            lease,
            token,
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
        let (renderer, lease, token) = (
            self.renderer.clone(),
            std::mem::take(&mut self.lease),
            std::mem::take(&mut self.token),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { renderer.cache.release(&lease, &token).await });
        }
    }
}

/// The push generation of a remote (see `Pipeline::ref_generations`).
fn ref_generation(generations: &std::sync::Mutex<HashMap<String, u64>>, normalized: &str) -> u64 {
    generations
        .lock()
        .map(|map| map.get(normalized).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// The revision of an uploaded tree, as Argo CD reports it.
const STREAMED: &str = "streamed";

/// What a render needs besides the request and the tree.
struct Prepared {
    app_dir: std::path::PathBuf,
    /// The source with override files merged in.
    source: SourceSpec,
    source_type: SourceType,
    allow_concurrency: bool,
    /// The plugin discovery chose, for an app that names no type.
    discovered_plugin: Option<String>,
}

/// How a manifest answer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// Only the revision was resolved (a ref-only source).
    Resolved,
    /// The cache, under the request's own key.
    RequestKey,
    /// The cache, under the content key (another commit, same inputs).
    ContentKey,
    /// This request rendered (or took another replica's finished render).
    Rendered,
    /// An identical render already in progress here.
    Joined,
}

impl Served {
    fn as_str(self) -> &'static str {
        match self {
            Served::Resolved => "resolved",
            Served::RequestKey => "request_key",
            Served::ContentKey => "content_key",
            Served::Rendered => "rendered",
            Served::Joined => "joined",
        }
    }
}

/// Limits and concurrency of the render stage.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Most manifest generations at once (`--parallelismlimit`); `None`
    /// means unlimited.
    pub parallelism_limit: Option<usize>,
    /// Most bytes of manifest files a Directory app may combine
    /// (`--max-combined-directory-manifests-size`); `None` means unlimited.
    pub max_combined_directory_manifests_bytes: Option<u64>,
    /// `ARGOCD_PAUSE_GEN_AFTER_FAILED_ATTEMPTS`: consecutive failures
    /// after which generation pauses (0: never).
    pub pause_after_failed_attempts: u32,
    /// `ARGOCD_PAUSE_GEN_MINUTES`: a pause ends this long after the first
    /// failure (0: not by time).
    pub pause_minutes: u64,
    /// `ARGOCD_PAUSE_GEN_REQUESTS`: a pause ends after this many cached
    /// errors were served (0: not by count).
    pub pause_requests: u32,
    /// `--include-hidden-directories`: `GetGitDirectories` lists
    /// directories whose name starts with `.`.
    pub include_hidden_directories: bool,
    /// `ARGOCD_GIT_MODULES_ENABLED`: renders include git submodules.
    pub git_modules_enabled: bool,
    /// `--streamed-manifest-max-tar-size` and
    /// `--streamed-manifest-max-extracted-size`
    /// (`GenerateManifestWithFiles`).
    pub upload_limits: source::tarball::Limits,
}

/// The kind of repository a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoType {
    Git,
    Helm,
    Oci,
}

/// A GenerateManifest request in domain terms.
#[derive(Debug, Clone)]
pub struct ManifestRequest {
    pub repo_url: RepoUrl,
    pub repo_type: RepoType,
    /// As asked (branch, tag, HEAD, SHA); empty means HEAD.
    pub revision: String,
    pub source: SourceSpec,
    pub tracking: Tracking,
    pub project_name: String,
    /// The cluster's Kubernetes version and API versions.
    pub kube_version: String,
    pub api_versions: Vec<String>,
    pub kustomize_options: KustomizeOptions,
    /// `helm.valuesFileSchemes`; `None` when the request has no Helm
    /// options (then no URL is allowed).
    pub values_file_schemes: Option<Vec<String>>,
    pub enabled_source_types: HashMap<String, bool>,
    pub has_multiple_sources: bool,
    /// Skip the manifest cache lookup (the result is still stored).
    pub no_cache: bool,
    /// The app's `manifest-generate-paths` annotation, as sent.
    pub manifest_generate_paths: String,
    /// Skip the ref-listing cache lookup (the listing is still stored).
    pub no_revision_cache: bool,
    /// The repository is a Helm repository served over OCI.
    pub enable_oci: bool,
    /// The repository's Git LFS files are rendered with their content
    /// (`enableLfs`).
    pub enable_lfs: bool,
    /// The `ref:` sources of a multi-source application, by `$name`.
    pub ref_sources: BTreeMap<String, RefSource>,
    /// The commits of the ref sources this render reads (`$name` →
    /// commit SHA), resolved by the pipeline before the cache lookup.
    pub ref_commits: BTreeMap<String, String>,
}

/// A `ref:` source: another repository (or the same) whose files Helm
/// value files name as `$name/path`.
#[derive(Debug, Clone)]
pub struct RefSource {
    pub repo_url: RepoUrl,
    pub target_revision: String,
    pub chart: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ManifestResult {
    pub manifests: Vec<String>,
    /// The resolved commit SHA.
    pub revision: String,
    /// `None` for a ref-only source, which renders nothing.
    #[serde(with = "source_type_name")]
    pub source_type: Option<SourceType>,
    /// The tool command lines, as Argo CD reports them.
    pub commands: Vec<String>,
}

/// Branches and tags of a remote, sorted.
#[derive(Debug, Clone)]
pub struct Refs {
    pub branches: Vec<String>,
    pub tags: Vec<String>,
}

/// Source types in cache entries, by their wire names.
mod source_type_name {
    use crate::render::SourceType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<SourceType>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => s.serialize_some(t.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SourceType>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        Ok(name.and_then(|n| {
            [
                SourceType::Helm,
                SourceType::Kustomize,
                SourceType::Directory,
                SourceType::Plugin,
            ]
            .into_iter()
            .find(|t| t.as_str() == n)
        }))
    }
}

/// What the manifest cache holds under a render key: the result, or the
/// failure record that pauses generation (Argo CD's error caching).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
struct CachedManifest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<ManifestResult>,
    #[serde(default)]
    consecutive_failures: u32,
    /// Unix seconds of the first of the consecutive failures.
    #[serde(default)]
    first_failure: u64,
    #[serde(default)]
    most_recent_error: String,
    #[serde(default)]
    cached_errors_returned: u32,
}

/// Whether a failure counts toward pausing generation: failures of the
/// render itself (as in Argo CD), not of the server (I/O, a missing tool)
/// nor inputs manifold cannot render yet (which must keep answering
/// UNIMPLEMENTED).
fn pauses_generation(err: &Error) -> bool {
    match err {
        Error::Render(err) => !matches!(
            err,
            render::Error::Io { .. }
                | render::Error::ToolUnavailable { .. }
                | render::Error::NotImplemented { .. }
        ),
        Error::Source(_) => true,
        Error::Shared(inner) => pauses_generation(inner),
        _ => false,
    }
}

/// Marks the binary encoding of a [`CachedManifest`] (JSON starts with
/// `{`).
const BINARY_ENTRY: u8 = b'B';

impl CachedManifest {
    /// The entry as bytes: a marker, the entry without its manifests as
    /// JSON, then each manifest as a length and its bytes. Manifests are
    /// JSON themselves; inside a JSON string every quote would be escaped
    /// and unescaped again, which was most of a cache hit's CPU.
    fn encode(&self) -> Option<Vec<u8>> {
        let mut header = self.clone();
        let manifests = header
            .result
            .as_mut()
            .map(|r| std::mem::take(&mut r.manifests))
            .unwrap_or_default();
        let json = serde_json::to_vec(&header).ok()?;
        let size = manifests.iter().map(|m| m.len() + 4).sum::<usize>();
        let mut out = Vec::with_capacity(1 + 8 + json.len() + size);
        out.push(BINARY_ENTRY);
        out.extend_from_slice(&u32::try_from(json.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&u32::try_from(manifests.len()).ok()?.to_le_bytes());
        for manifest in &manifests {
            out.extend_from_slice(&u32::try_from(manifest.len()).ok()?.to_le_bytes());
            out.extend_from_slice(manifest.as_bytes());
        }
        Some(out)
    }

    fn decode(bytes: &[u8]) -> Option<CachedManifest> {
        let Some(rest) = bytes.strip_prefix(&[BINARY_ENTRY]) else {
            return serde_json::from_slice(bytes).ok();
        };
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            *rest = tail;
            Some(head)
        }
        fn length(rest: &mut &[u8]) -> Option<usize> {
            let bytes: [u8; 4] = take(rest, 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(bytes) as usize)
        }
        let mut rest = rest;
        let json_len = length(&mut rest)?;
        let mut entry: CachedManifest = serde_json::from_slice(take(&mut rest, json_len)?).ok()?;
        let count = length(&mut rest)?;
        let mut manifests = Vec::with_capacity(count.min(rest.len() / 4));
        for _ in 0..count {
            let len = length(&mut rest)?;
            manifests.push(String::from_utf8(take(&mut rest, len)?.to_vec()).ok()?);
        }
        if !rest.is_empty() {
            return None;
        }
        if let Some(result) = entry.result.as_mut() {
            result.manifests = manifests;
        }
        Some(entry)
    }
}

/// Whether a failure record pauses generation (Argo CD's
/// `ARGOCD_PAUSE_GEN_*` rules).
#[derive(Debug, PartialEq, Eq)]
enum Pause {
    /// Not (yet) paused: render.
    No,
    /// Paused: answer the cached error.
    Yes,
    /// The pause is over (by time or by cached answers): forget the record
    /// and render.
    Over,
}

fn paused(entry: &CachedManifest, config: &Config, now: u64) -> Pause {
    if config.pause_after_failed_attempts == 0
        || entry.first_failure == 0
        || entry.consecutive_failures < config.pause_after_failed_attempts
    {
        return Pause::No;
    }
    let minutes = now.saturating_sub(entry.first_failure) / 60;
    if (config.pause_minutes > 0 && minutes >= config.pause_minutes)
        || (config.pause_requests > 0 && entry.cached_errors_returned >= config.pause_requests)
    {
        return Pause::Over;
    }
    Pause::Yes
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Pipeline {
    stores: Arc<git::Stores>,
    /// Helm repositories.
    charts: Arc<crate::charts::Charts>,
    renderer: Arc<Renderer>,
    cache: Arc<cache::Cache>,
    /// Renders in progress, shared by identical concurrent requests.
    renders: Flights<Result<ManifestResult, Arc<Error>>>,
    /// Ref listings in progress, one per remote.
    listings: Flights<Result<git::RemoteRefs, Arc<git::Error>>>,
    /// Commit comparisons in progress, one per pair.
    diffs: Flights<Result<Arc<Vec<String>>, Arc<Error>>>,
    /// Recently answered apps, for pre-rendering after a push.
    recent: recent::Recent,
    /// Render keys whose answers this replica recorded recently in the app
    /// index and among the recent apps (see `revisions::remember`).
    indexed: moka::sync::Cache<String, ()>,
    /// Per remote (normalised URL): bumped by every push, so a ref
    /// listing that started before a push does not store its result
    /// after it.
    ref_generations: Arc<std::sync::Mutex<HashMap<String, u64>>>,
}

/// The render stage (DESIGN.md step 6 and 7): everything after the
/// revision is resolved, run as one shared, cancellable task per render.
struct Renderer {
    cache: Arc<cache::Cache>,
    stores: Arc<git::Stores>,
    snapshots: Arc<source::Snapshots>,
    tools: Arc<render::Tools>,
    config: Config,
    permits: Option<Arc<Semaphore>>,
    metrics: RenderMetrics,
}

/// Work on a remote in progress, counted until dropped.
struct PendingGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A held parallelism permit, counted in the metrics.
struct Permit {
    _permit: Option<OwnedSemaphorePermit>,
    metrics: RenderMetrics,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self._permit.is_some() {
            self.metrics.permits_in_use.dec();
        }
    }
}

/// Every field of a request that can change a render's output, in a
/// deterministic encoding, for [`cache::key::render`].
#[derive(Serialize)]
struct RenderInputs<'a> {
    /// The server's helm and kustomize, with their versions.
    tools: &'a str,
    repo_url: String,
    repo_type: &'static str,
    source: &'a SourceSpec,
    tracking_method: &'static str,
    app_label_key: &'a str,
    app_name: &'a str,
    namespace: &'a str,
    installation_id: &'a str,
    project_name: &'a str,
    kube_version: &'a str,
    api_versions: &'a [String],
    kustomize_build_options: &'a str,
    kustomize_binary_path: &'a str,
    kustomize_versions: Vec<(&'a str, &'a str)>,
    values_file_schemes: Option<&'a [String]>,
    enabled_source_types: BTreeMap<&'a str, bool>,
    has_multiple_sources: bool,
    /// Left out when false, so keys without LFS stay as they were.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    lfs: bool,
    /// The `$name` value-file sources read, as `remote@commit`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    ref_commits: BTreeMap<&'a str, String>,
}

impl<'a> RenderInputs<'a> {
    fn of(request: &'a ManifestRequest, tools: &'a str) -> Self {
        RenderInputs {
            tools,
            repo_url: request.repo_url.redacted(),
            repo_type: match request.repo_type {
                RepoType::Git => "git",
                RepoType::Helm => "helm",
                RepoType::Oci => "oci",
            },
            source: &request.source,
            tracking_method: match request.tracking.method {
                TrackingMethod::Label => "label",
                TrackingMethod::Annotation => "annotation",
                TrackingMethod::AnnotationAndLabel => "annotation+label",
            },
            app_label_key: &request.tracking.app_label_key,
            app_name: &request.tracking.app_name,
            namespace: &request.tracking.namespace,
            installation_id: &request.tracking.installation_id,
            project_name: &request.project_name,
            kube_version: &request.kube_version,
            api_versions: &request.api_versions,
            kustomize_build_options: &request.kustomize_options.build_options,
            kustomize_binary_path: &request.kustomize_options.binary_path,
            kustomize_versions: request
                .kustomize_options
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.path.as_str()))
                .collect(),
            values_file_schemes: request.values_file_schemes.as_deref(),
            enabled_source_types: request
                .enabled_source_types
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect(),
            has_multiple_sources: request.has_multiple_sources,
            lfs: request.enable_lfs,
            ref_commits: request
                .ref_commits
                .iter()
                .map(|(name, sha)| {
                    let remote = request
                        .ref_sources
                        .get(name)
                        .map(|r| r.repo_url.normalized())
                        .unwrap_or_default();
                    (name.as_str(), format!("{remote}@{sha}"))
                })
                .collect(),
        }
    }
}

fn jsonnet_vars(vars: &[render::spec::JsonnetVar], env: &BuildEnv) -> Vec<jsonnet::Var> {
    vars.iter()
        .map(|v| jsonnet::Var {
            name: v.name.clone(),
            value: env.substitute(&v.value),
            code: v.code,
        })
        .collect()
}

/// The Directory renderer's options for a source.
fn directory_options(
    source: &SourceSpec,
    enabled: &HashMap<String, bool>,
    env: &BuildEnv,
    max_combined_bytes: Option<u64>,
) -> directory::Options {
    let dir = source.directory.clone().unwrap_or_default();
    directory::Options {
        recurse: dir.recurse,
        include: dir.include,
        exclude: dir.exclude,
        disable_extension_filter: dir.disable_extension_filter,
        jsonnet_enabled: enabled.get("Directory").copied().unwrap_or(true),
        jsonnet: jsonnet::Options {
            tlas: jsonnet_vars(&dir.jsonnet.tlas, env),
            ext_vars: jsonnet_vars(&dir.jsonnet.ext_vars, env),
            libs: dir.jsonnet.libs.clone(),
        },
        max_combined_bytes,
    }
}

/// The ref a git revision names by version, as Argo CD's `LsRemote`
/// applies `versions.MaxVersion`: an exact version is itself (with the
/// tag prefix in front); a constraint is the highest tag satisfying it,
/// among the tags with the prefix (stripped to compare, kept in the
/// answer). `None` (the revision is a ref name as it is) for anything
/// else, a constraint no tag satisfies, or a tag Masterminds rejects.
fn semver_revision(revision: &str, tag_prefix: &str, tags: &[String]) -> Option<String> {
    if let Some(version) = crate::semver::Version::parse(revision) {
        return (!tag_prefix.is_empty()).then(|| format!("{tag_prefix}{}", version.original()));
    }
    let constraint = crate::semver::Constraint::parse(revision).ok()?;
    let stripped = tags.iter().filter_map(|tag| tag.strip_prefix(tag_prefix));
    crate::semver::try_max_satisfying(&constraint, stripped)
        .ok()
        .flatten()
        .map(|tag| format!("{tag_prefix}{tag}"))
}

fn join_error(err: tokio::task::JoinError) -> Error {
    Error::Internal {
        message: format!("render task failed: {err}"),
    }
}

impl Pipeline {
    pub fn new(
        stores: Arc<git::Stores>,
        snapshots: Arc<source::Snapshots>,
        tools: Arc<render::Tools>,
        config: Config,
        metrics: RenderMetrics,
        cache: Arc<cache::Cache>,
        charts: Arc<crate::charts::Charts>,
    ) -> Self {
        // Beyond what a semaphore can count is as good as unlimited.
        let permits = config
            .parallelism_limit
            .filter(|limit| *limit <= Semaphore::MAX_PERMITS)
            .map(|limit| Arc::new(Semaphore::new(limit)));
        Pipeline {
            charts,
            stores: stores.clone(),
            renderer: Arc::new(Renderer {
                stores,
                snapshots,
                tools,
                config,
                permits,
                metrics,
                cache: cache.clone(),
            }),
            cache,
            renders: Flights::default(),
            listings: Flights::default(),
            diffs: Flights::default(),
            recent: recent::Recent::default(),
            indexed: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
            ref_generations: Default::default(),
        }
    }

    /// The remote's refs: from the revision cache unless `fresh`, else
    /// listed (one listing per remote at a time in this replica, and with
    /// a shared tier, one per revision-cache period across replicas). A
    /// fresh listing is always stored.
    async fn refs(&self, repo_url: &RepoUrl, fresh: bool) -> Result<git::RemoteRefs, Error> {
        let key = cache::key::refs(&repo_url.normalized());
        let ttl = self.cache.config.revision_cache_expiration;
        let cached = |bytes: Arc<[u8]>| serde_json::from_slice::<git::RemoteRefs>(&bytes).ok();
        if !fresh {
            if let Some(refs) = self.cache.get("refs", &key, ttl).await.and_then(cached) {
                return Ok(refs);
            }
        }
        let (stores, cache, url) = (self.stores.clone(), self.cache.clone(), repo_url.clone());
        let listing_key = key.clone();
        let normalized = repo_url.normalized();
        let generations = self.ref_generations.clone();
        let generation = ref_generation(&generations, &normalized);
        // Listings made with other credentials are not shared: a request
        // must not fail (or succeed) on another's credentials.
        let flight_key = format!(
            "{}|generation={generation}|access={}",
            cache::key::listing_flight(&key, fresh),
            repo_url.access_digest()
        );
        let flight = self.listings.join(flight_key, move || async move {
            let lock_timeout = cache.config.revision_cache_lock_timeout;
            let lock = cache::key::lock(&listing_key);
            let token = crate::domain::unguessable_name();
            let mut locked = false;
            if !fresh && cache.is_shared() && !lock_timeout.is_zero() {
                let deadline = Instant::now() + lock_timeout;
                loop {
                    if cache.lease(&lock, &token, lock_timeout).await {
                        locked = true;
                        break;
                    }
                    // Another replica lists: wait for its result, but not
                    // past the lock's lifetime.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if let Some(refs) = cache.get("refs", &listing_key, ttl).await.and_then(cached)
                    {
                        return Ok(refs);
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
            let listed = stores.list_refs(&url).await;
            // A push since the listing started may have moved a ref:
            // its result is not stored over the push's invalidation.
            let current = ref_generation(&generations, &normalized) == generation;
            if let (Ok(refs), true) = (&listed, current) {
                if let Ok(bytes) = serde_json::to_vec(refs) {
                    cache.set(&listing_key, &bytes, ttl).await;
                }
            }
            if locked {
                cache.release(&lock, &token).await;
            }
            listed.map_err(Arc::new)
        });
        match flight.wait().await {
            Ok(listed) => listed.map_err(|shared| {
                Error::Git(Arc::try_unwrap(shared).unwrap_or_else(git::Error::Shared))
            }),
            Err(lost) => Err(Error::Internal {
                message: lost.to_string(),
            }),
        }
    }

    /// Resolves `revision` against the remote's refs. A full SHA needs no
    /// network.
    async fn resolve(
        &self,
        repo_url: &RepoUrl,
        revision: &str,
        tag_prefix: &str,
        fresh: bool,
    ) -> Result<Resolved, Error> {
        if git::is_full_sha(revision) {
            return Ok(Resolved::Commit(revision.to_ascii_lowercase()));
        }
        let refs = match self.refs(repo_url, fresh).await {
            Ok(refs) => refs,
            Err(err) => {
                self.stores.record_ls_remote_failure(repo_url, revision);
                return Err(err);
            }
        };
        let tags = refs.tags();
        let versioned = semver_revision(revision, tag_prefix, &tags);
        let wanted = versioned.as_deref().unwrap_or(revision);
        match refs.resolve(wanted) {
            Some(resolved) => Ok(resolved),
            None => {
                self.stores.record_ls_remote_failure(repo_url, revision);
                Err(Error::Git(git::Error::RevisionNotFound {
                    repo_url: repo_url.redacted(),
                    revision: wanted.to_string(),
                }))
            }
        }
    }

    /// Resolves `revision` (semver tags filtered by `tag_prefix`, the
    /// source's `tagPrefix`) to a full commit SHA, fetching when it is an
    /// abbreviated SHA that only the history can expand.
    pub async fn resolve_revision(
        &self,
        repo_url: &RepoUrl,
        revision: &str,
        tag_prefix: &str,
        fresh: bool,
    ) -> Result<String, Error> {
        match self.resolve(repo_url, revision, tag_prefix, fresh).await? {
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
            RepoType::Helm if !repo_url.as_str().starts_with("oci://") => {
                self.test_chart_repository(repo_url).await
            }
            // A registry answers for its repositories' tags.
            RepoType::Helm | RepoType::Oci => {
                self.oci_tags_as(repo_url, "test-repo").await.map(|_| ())
            }
        }
    }

    pub async fn generate_manifest(
        &self,
        request: ManifestRequest,
    ) -> Result<ManifestResult, Error> {
        // Boxed: the whole pipeline's state machine is too deep to lay
        // out inline in every caller.
        Box::pin(self.generate(request))
            .await
            .map(|(result, _)| result)
    }

    /// [`Self::generate_manifest`], saying how the answer was found
    /// (also counted in the metrics).
    async fn generate(&self, request: ManifestRequest) -> Result<(ManifestResult, Served), Error> {
        let answer = self.generate_uncounted(request).await;
        if let Ok((_, served)) = &answer {
            self.renderer
                .metrics
                .answers
                .get_or_create(&crate::metrics::AnswerLabels {
                    served: served.as_str(),
                })
                .inc();
        }
        answer
    }

    async fn generate_uncounted(
        &self,
        mut request: ManifestRequest,
    ) -> Result<(ManifestResult, Served), Error> {
        let oci = request.repo_type == RepoType::Oci
            || request.repo_url.as_str().starts_with("oci://")
            || request.enable_oci;
        // The cache-hit path below stays small: every step a hit does not
        // take is boxed, so a hit neither builds nor moves the state of
        // fetching, resolving branches or rendering (tens of KiB).
        if oci || request.repo_type == RepoType::Helm || !request.source.chart.is_empty() {
            return Box::pin(async move {
                self.resolve_refs(&mut request, None).await?;
                self.generate_chart(request, oci).await
            })
            .await;
        }
        // A multi-source entry without path or chart (typically a `ref:`
        // source for `$ref` value files) renders nothing; the controller
        // only needs its revision.
        if request.has_multiple_sources
            && request.source.path.is_empty()
            && request.source.chart.is_empty()
        {
            let revision = Box::pin(self.resolve_revision(
                &request.repo_url,
                &request.revision,
                &request.source.tag_prefix,
                request.no_cache || request.no_revision_cache,
            ))
            .await?;
            return Ok((
                ManifestResult {
                    manifests: Vec::new(),
                    revision,
                    source_type: None,
                    commands: Vec::new(),
                },
                Served::Resolved,
            ));
        }

        let commit_sha = if git::is_full_sha(&request.revision) {
            request.revision.to_ascii_lowercase()
        } else {
            Box::pin(self.resolve_revision(
                &request.repo_url,
                &request.revision,
                &request.source.tag_prefix,
                request.no_cache || request.no_revision_cache,
            ))
            .await?
        };
        if request.has_multiple_sources {
            Box::pin(self.resolve_refs(&mut request, Some(&commit_sha))).await?;
        }
        let mut tools = self.renderer.tools.fingerprint().await;
        if let Some(requested) = self
            .renderer
            .tools
            .requested_kustomize(&request.source, &request.kustomize_options)
            .await
        {
            tools.push_str(";requested-kustomize=");
            tools.push_str(&requested);
        }
        if !self.renderer.config.git_modules_enabled {
            tools.push_str(";without-git-modules");
        }
        let encoded = cache::key::encode(&RenderInputs::of(&request, &tools));
        let key = cache::key::render_encoded(&request.repo_url.normalized(), &commit_sha, &encoded);
        if !request.no_cache {
            if let Some(answer) = self.cached_manifest(&key).await {
                if answer.is_ok() {
                    self.remember(&request, &commit_sha, &encoded, &key).await;
                }
                return answer.map(|result| (result, Served::RequestKey));
            }
        }
        Box::pin(self.generate_uncached(request, commit_sha, tools, encoded, key)).await
    }

    /// [`Self::generate_uncounted`] past a miss under the request key:
    /// the content key, then a render (shared with identical ones).
    async fn generate_uncached(
        &self,
        request: ManifestRequest,
        commit_sha: String,
        tools: String,
        encoded: Vec<u8>,
        key: String,
    ) -> Result<(ManifestResult, Served), Error> {
        // Content addressing: the same inputs at another commit (one that
        // changed nothing this app reads) answer from the cache.
        let (store, _) = self
            .stores
            .ensure_commit(
                &request.repo_url,
                &Resolved::Commit(commit_sha.clone()),
                &request.revision,
            )
            .await?;
        let content_key = self
            .content_key(&request, &store, &commit_sha, &tools)
            .await?;
        if let (Some(content_key), false) = (&content_key, request.no_cache) {
            if let Some(answer) = self.cached_manifest(content_key).await {
                let answer = answer.map(|mut result| {
                    result.revision = commit_sha.clone();
                    result
                });
                if let Ok(result) = &answer {
                    self.alias(&key, result).await;
                    self.remember(&request, &commit_sha, &encoded, &key).await;
                }
                return answer.map(|result| (result, Served::ContentKey));
            }
        }
        let remembered = request.clone();
        let flight_key = content_key.clone().unwrap_or_else(|| key.clone());
        let renderer = self.renderer.clone();
        let cache_key = flight_key.clone();
        let render_commit = commit_sha.clone();
        let flight = self.renders.join(flight_key, move || async move {
            renderer
                .render_leased(cache_key, request, render_commit)
                .await
                .map_err(Arc::new)
        });
        let served = if flight.is_leader() {
            Served::Rendered
        } else {
            tracing::debug!("joined an identical render in progress");
            Served::Joined
        };
        let result = match flight.wait().await {
            Ok(result) => {
                result.map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(Error::Shared))
            }
            Err(lost) => Err(Error::Internal {
                message: lost.to_string(),
            }),
        };
        // Requests at other commits with the same content may have shared
        // this render: each answers with its own commit.
        let result = result.map(|mut result| {
            result.revision = commit_sha;
            result
        });
        if let Ok(result) = &result {
            if content_key.is_some() {
                self.alias(&key, result).await;
            }
            self.remember(&remembered, &result.revision, &encoded, &key)
                .await;
        }
        result.map(|result| (result, served))
    }

    /// Resolves the commits of the `ref:` sources the request's Helm value
    /// files and file parameters name (`$name/path`), into
    /// `request.ref_commits`, with Argo CD's checks: the name must be a
    /// ref source, not a chart, one revision per repository, and the
    /// app's own repository only at the app's commit (`commit_sha`).
    async fn resolve_refs(
        &self,
        request: &mut ManifestRequest,
        commit_sha: Option<&str>,
    ) -> Result<(), Error> {
        if !request.has_multiple_sources {
            return Ok(());
        }
        let Some(helm) = &request.source.helm else {
            return Ok(());
        };
        let names: Vec<String> = helm
            .value_files
            .iter()
            .chain(helm.file_parameters.iter().map(|p| &p.path))
            .filter(|raw| raw.starts_with('$'))
            .map(|raw| raw.split('/').next().unwrap_or_default().to_string())
            .collect();
        let fresh = request.no_cache || request.no_revision_cache;
        // Remote (normalised) -> (ref name, target revision, commit).
        let mut by_remote: HashMap<String, (String, String, String)> = HashMap::new();
        for name in names {
            if request.ref_commits.contains_key(&name) {
                continue;
            }
            let invalid = |message: String| Error::Invalid { message };
            let Some(target) = request.ref_sources.get(&name) else {
                if request.ref_sources.is_empty() {
                    return Err(invalid(format!(
                        "source referenced {name:?}, but no source has a 'ref' field defined"
                    )));
                }
                let known: Vec<&str> = request.ref_sources.keys().map(String::as_str).collect();
                return Err(invalid(format!(
                    "source referenced {name:?}, which is not one of the available sources ({})",
                    known.join(", ")
                )));
            };
            if !target.chart.is_empty() {
                return Err(invalid(format!(
                    "source {name:?} has a 'chart' field: Helm charts cannot be 'ref' sources"
                )));
            }
            let remote = target.repo_url.normalized();
            if let Some((other, revision, sha)) = by_remote.get(&remote) {
                if *revision != target.target_revision {
                    return Err(invalid(format!(
                        "cannot reference multiple revisions for the same repository ({name} references {:?} while {other} references {revision:?})",
                        target.target_revision
                    )));
                }
                request.ref_commits.insert(name, sha.clone());
                continue;
            }
            let sha = self
                .resolve_revision(&target.repo_url, &target.target_revision, "", fresh)
                .await?;
            if let Some(own) = commit_sha {
                if remote == request.repo_url.normalized() && own != sha {
                    return Err(invalid(format!(
                        "cannot reference a different revision of the same repository ({name} references {:?} which resolves to {sha:?} while the application references {:?} which resolves to {own:?})",
                        target.target_revision, request.revision
                    )));
                }
            }
            by_remote.insert(
                remote,
                (name.clone(), target.target_revision.clone(), sha.clone()),
            );
            request.ref_commits.insert(name, sha);
        }
        Ok(())
    }

    /// The config management plugins whose sidecars are listening.
    pub async fn plugin_names(&self) -> Result<Vec<String>, Error> {
        let dir = self.renderer.tools.plugin_sockets().to_path_buf();
        tokio::task::spawn_blocking(move || render::plugin_names(&dir))
            .await
            .map_err(join_error)?
            .map_err(|err| Error::Internal {
                message: format!("cannot list plugin sockets: {err}"),
            })
    }

    /// A place to receive an upload for [`Self::generate_from_upload`].
    pub fn new_upload(&self) -> Result<source::tarball::Upload, Error> {
        source::tarball::Upload::new(
            self.renderer.snapshots.spool_dir(),
            self.renderer.config.upload_limits,
        )
        .map_err(Error::Upload)
    }

    /// Argo CD's `GenerateManifestWithFiles`: renders the uploaded
    /// `.tar.gz` (checked against `checksum`, extracted under the limits,
    /// no path or link leaving it) as the repository. Not cached and not
    /// bounded by `--parallelismlimit`, as in Argo CD; the revision is
    /// `streamed`.
    pub async fn generate_from_upload(
        &self,
        request: ManifestRequest,
        upload: source::tarball::Upload,
        checksum: String,
    ) -> Result<ManifestResult, Error> {
        let dir = self.renderer.snapshots.new_upload_dir()?;
        // The directory goes into the extraction task, so a cancelled
        // request removes it only once nothing writes there any more.
        let (dir, extracted) = tokio::task::spawn_blocking(move || {
            let extracted = upload.extract(&checksum, dir.path());
            (dir, extracted)
        })
        .await
        .map_err(join_error)?;
        let extracted = extracted.map_err(Error::Upload)?;
        tracing::debug!(
            files = extracted.files,
            bytes = extracted.bytes,
            "upload extracted"
        );
        let snapshot = self.renderer.snapshots.adopt(dir, STREAMED)?;
        self.renderer
            .render_uploaded(&request, snapshot, STREAMED)
            .await
    }

    /// The content key of a render (see [`cache::key::content`]).
    async fn content_key(
        &self,
        request: &ManifestRequest,
        store: &Arc<git::RepoStore>,
        commit_sha: &str,
        tools: &str,
    ) -> Result<Option<String>, Error> {
        let (store, sha) = (store.clone(), commit_sha.to_string());
        let (path, source) = (request.source.path.clone(), request.source.clone());
        let declared = request.manifest_generate_paths.clone();
        let build_options = request.kustomize_options.build_options.clone();
        let inputs = tokio::task::spawn_blocking(move || {
            let tree = store.commit_tree(&sha).ok()?;
            Some(source::closure::inputs(
                &tree,
                &path,
                &source,
                &build_options,
                &declared,
            ))
        })
        .await
        .map_err(join_error)?;
        let Some(inputs) = inputs else {
            return Ok(None);
        };
        // A source that substitutes the commit (or the revision as asked)
        // into its output depends on more than the content; otherwise the
        // commit, and how it was asked for, do not matter.
        let json = serde_json::to_string(&request.source).unwrap_or_default();
        // A plugin gets the commit in its environment and may read what it
        // likes of what it is sent: its renders are per commit, as in
        // Argo CD. An app naming no type may turn out to be a plugin's
        // while a sidecar with discovery listens.
        let plugin = request.source.plugin.is_some()
            || (request.source.explicit_types().is_empty()
                && self.renderer.tools.plugin_discovery_possible().await);
        let depends_on_commit =
            inputs.depends_on_commit || plugin || json.contains("ARGOCD_APP_REVISION");
        let mut content_request = request.clone();
        if !depends_on_commit && !json.contains("ARGOCD_APP_SOURCE_TARGET_REVISION") {
            content_request.source.target_revision.clear();
        }
        Ok(cache::key::content(
            &request.repo_url.normalized(),
            &inputs.closure,
            depends_on_commit.then_some(commit_sha),
            &RenderInputs::of(&content_request, tools),
        ))
    }

    /// Stores `result` under the request key too, so the next identical
    /// request needs no closure.
    async fn alias(&self, key: &str, result: &ManifestResult) {
        let entry = CachedManifest {
            result: Some(result.clone()),
            ..Default::default()
        };
        if let Some(bytes) = entry.encode() {
            self.cache
                .set(key, &bytes, self.cache.config.repo_cache_expiration)
                .await;
        }
    }

    async fn cached_manifest(&self, key: &str) -> Option<Result<ManifestResult, Error>> {
        self.renderer.cached_manifest(key).await
    }
}

impl Renderer {
    /// The answer the manifest cache holds for `key`: a result, or a
    /// paused failure; `None` means render.
    async fn cached_manifest(&self, key: &str) -> Option<Result<ManifestResult, Error>> {
        let ttl = self.cache.config.repo_cache_expiration;
        let bytes = self.cache.get("manifests", key, ttl).await?;
        let entry = CachedManifest::decode(&bytes)?;
        match entry.result {
            Some(result) => Some(Ok(result)),
            // Boxed: rare, and its cache writes would otherwise enlarge
            // every cache hit's future.
            None => Box::pin(self.cached_failure(key, entry)).await,
        }
    }

    /// [`Self::cached_manifest`] for a failure record: its error while
    /// generation is paused, else `None` (render).
    async fn cached_failure(
        &self,
        key: &str,
        mut entry: CachedManifest,
    ) -> Option<Result<ManifestResult, Error>> {
        let ttl = self.cache.config.repo_cache_expiration;
        // Failure records live where every replica sees the latest.
        self.cache.forget_local(key);
        match paused(&entry, &self.config, unix_now()) {
            Pause::No => return None,
            Pause::Over => {
                self.cache.delete(key).await;
                return None;
            }
            Pause::Yes => {}
        }
        entry.cached_errors_returned += 1;
        if let Some(bytes) = entry.encode() {
            self.cache.set_shared(key, &bytes, ttl).await;
        }
        Some(Err(Error::CachedFailure {
            message: entry.most_recent_error,
        }))
    }

    /// Renders under a cross-replica lease when there is a shared tier:
    /// one replica renders while the others wait for its result in the
    /// cache, and take over if the holder goes away (its lease expires
    /// unless renewed).
    async fn render_leased(
        self: Arc<Self>,
        key: String,
        request: ManifestRequest,
        commit_sha: String,
    ) -> Result<ManifestResult, Error> {
        // A waiter with noCache must not take another replica's older
        // answer: it waits for the lease and renders.
        let no_cache = request.no_cache;
        if !self.cache.is_shared() {
            let result = self.render(request, commit_sha).await;
            self.store(&key, &result).await;
            return result;
        }
        let lease = cache::key::lease(&key);
        let token = crate::domain::unguessable_name();
        // Waiting for another replica is bounded: past this, render here.
        let deadline = Instant::now() + RENDER_LEASE_WAIT;
        loop {
            let holder =
                Instant::now() >= deadline || self.cache.lease(&lease, &token, RENDER_LEASE).await;
            if holder {
                let _held = HeldLease::start(self.clone(), lease.clone(), token.clone());
                let result = self.render(request, commit_sha).await;
                self.store(&key, &result).await;
                return result;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if no_cache {
                continue;
            }
            if let Some(answer) = self.cached_manifest(&key).await {
                return answer;
            }
        }
    }

    /// Stores a render's outcome under `key`: the result, or one more
    /// consecutive failure (when failures pause generation).
    async fn store(&self, key: &str, result: &Result<ManifestResult, Error>) {
        let ttl = self.cache.config.repo_cache_expiration;
        let entry = match result {
            Ok(result) => CachedManifest {
                result: Some(result.clone()),
                ..Default::default()
            },
            Err(err) if self.config.pause_after_failed_attempts == 0 || !pauses_generation(err) => {
                return
            }
            Err(err) => {
                let mut entry = self
                    .cache
                    .get("manifests", key, ttl)
                    .await
                    .and_then(|bytes| CachedManifest::decode(&bytes))
                    .filter(|entry| entry.result.is_none())
                    .unwrap_or_default();
                if entry.first_failure == 0 {
                    entry.first_failure = unix_now();
                }
                entry.consecutive_failures += 1;
                entry.most_recent_error = err.to_string();
                if let Some(bytes) = entry.encode() {
                    self.cache.set_shared(key, &bytes, ttl).await;
                }
                return;
            }
        };
        if let Some(bytes) = entry.encode() {
            self.cache.set(key, &bytes, ttl).await;
        }
    }

    /// The app path, when the request is for a Directory app (as far as
    /// the request says) whose directory reads nothing outside itself.
    async fn directory_subtree(
        &self,
        request: &ManifestRequest,
        store: &Arc<git::RepoStore>,
        commit_sha: &str,
    ) -> Result<Option<String>, Error> {
        let explicit = request.source.explicit_types();
        if explicit.iter().any(|t| *t != SourceType::Directory) {
            return Ok(None);
        }
        // Only a plain relative path of names; anything else (absolute,
        // `.`, `..`, the root) is left to the whole-tree snapshot and its
        // checks.
        let raw = &request.source.path;
        let components: Vec<&str> = raw.split('/').filter(|c| !c.is_empty()).collect();
        if raw.starts_with('/')
            || components.is_empty()
            || components.iter().any(|c| *c == "." || *c == "..")
        {
            return Ok(None);
        }
        let path = components.join("/");
        let (store, sha) = (store.clone(), commit_sha.to_string());
        let contained = tokio::task::spawn_blocking(move || {
            store
                .is_self_contained_directory(&sha, &path)
                .then_some(path)
        })
        .await
        .map_err(join_error)?;
        Ok(contained)
    }

    /// Waits for a parallelism permit when there is a limit; the wait is
    /// measured, also when the caller goes away during it.
    async fn permit(&self) -> Result<Permit, Error> {
        let Some(permits) = &self.permits else {
            return Ok(Permit {
                _permit: None,
                metrics: self.metrics.clone(),
            });
        };
        struct Measure<'a>(Instant, &'a RenderMetrics);
        impl Drop for Measure<'_> {
            fn drop(&mut self) {
                self.1
                    .parallelism_wait
                    .observe(self.0.elapsed().as_secs_f64());
            }
        }
        let _measure = Measure(Instant::now(), &self.metrics);
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal {
                message: "the parallelism limit is closed".to_string(),
            })?;
        self.metrics.permits_in_use.inc();
        Ok(Permit {
            _permit: Some(permit),
            metrics: self.metrics.clone(),
        })
    }

    /// The snapshot of `commit_sha` for `request`: with its submodules
    /// (`ARGOCD_GIT_MODULES_ENABLED`) and LFS content (`enableLfs`),
    /// fetched first when missing.
    async fn snapshot(
        &self,
        request: &ManifestRequest,
        store: &Arc<git::RepoStore>,
        commit_sha: &str,
        subtree: Option<&str>,
    ) -> Result<Arc<source::Snapshot>, Error> {
        self.snapshot_of(
            &request.repo_url,
            store,
            commit_sha,
            subtree,
            request.enable_lfs,
        )
        .await
    }

    /// The snapshot of `commit_sha` of `repo_url`: with its submodules
    /// (`ARGOCD_GIT_MODULES_ENABLED`) and, with `lfs`, its LFS content,
    /// fetched first when missing.
    async fn snapshot_of(
        &self,
        repo_url: &RepoUrl,
        store: &Arc<git::RepoStore>,
        commit_sha: &str,
        subtree: Option<&str>,
        lfs: bool,
    ) -> Result<Arc<source::Snapshot>, Error> {
        let mut extras = git::ExportExtras {
            lfs,
            ..Default::default()
        };
        if self.config.git_modules_enabled {
            extras.submodules = self
                .stores
                .fetch_submodules(repo_url, store, commit_sha)
                .await?;
        }
        if lfs {
            self.stores.fetch_lfs(repo_url, store, commit_sha).await?;
        }
        Ok(self
            .snapshots
            .get(repo_url, store, commit_sha, subtree, &extras)
            .await?)
    }

    /// The trees of the ref sources `request.ref_commits` names (`$name` →
    /// canonical root), and the snapshots that keep them alive; the app's
    /// own repository is `own`, the snapshot being rendered.
    async fn ref_roots(
        &self,
        request: &ManifestRequest,
        own: &source::Snapshot,
    ) -> Result<
        (
            HashMap<String, std::path::PathBuf>,
            Vec<Arc<source::Snapshot>>,
        ),
        Error,
    > {
        let mut roots = HashMap::new();
        let mut held = Vec::new();
        for (name, sha) in &request.ref_commits {
            let Some(target) = request.ref_sources.get(name) else {
                continue;
            };
            if request.repo_type == RepoType::Git
                && target.repo_url.normalized() == request.repo_url.normalized()
                && own.commit_sha == *sha
                && own.subtree().is_none()
            {
                roots.insert(name.clone(), own.root().to_path_buf());
                continue;
            }
            let (store, sha) = self
                .stores
                .ensure_commit(&target.repo_url, &Resolved::Commit(sha.clone()), sha)
                .await?;
            let snapshot = self
                .snapshot_of(&target.repo_url, &store, &sha, None, false)
                .await?;
            roots.insert(name.clone(), snapshot.root().to_path_buf());
            held.push(snapshot);
        }
        Ok((roots, held))
    }

    /// Counts work on `repo_url` after a cache miss until dropped
    /// (`argocd_repo_pending_request_total`).
    fn pending(&self, repo_url: &RepoUrl) -> PendingGuard {
        let gauge = self
            .metrics
            .pending
            .get_or_create(&crate::metrics::RepoLabels {
                repo: repo_url.redacted(),
            })
            .clone();
        gauge.inc();
        PendingGuard(gauge)
    }

    /// Fetches, snapshots and renders `commit_sha` for `request`.
    async fn render(
        &self,
        request: ManifestRequest,
        commit_sha: String,
    ) -> Result<ManifestResult, Error> {
        let _permit = self.permit().await?;
        let _pending = self.pending(&request.repo_url);
        let (store, commit_sha) = self
            .stores
            .ensure_commit(
                &request.repo_url,
                &Resolved::Commit(commit_sha),
                &request.revision,
            )
            .await?;
        // A Directory app that reads nothing outside its directory gets a
        // snapshot of that directory alone; anything else, the whole tree.
        let subtree = self
            .directory_subtree(&request, &store, &commit_sha)
            .await?;
        let mut snapshot = self
            .snapshot(&request, &store, &commit_sha, subtree.as_deref())
            .await?;
        let prepared = loop {
            let app_dir = snapshot.app_dir(&request.source.path)?;
            let prepared = self.prepare(&request, &snapshot, app_dir).await?;
            // An override file made it another source type: that reads
            // more than the directory.
            if snapshot.subtree().is_some() && prepared.source_type != SourceType::Directory {
                snapshot = self.snapshot(&request, &store, &commit_sha, None).await?;
                continue;
            }
            break prepared;
        };
        self.render_prepared(&request, snapshot, prepared, commit_sha)
            .await
    }

    /// The source as the app directory's override files make it, its
    /// type, and whether it may render in the shared tree.
    async fn prepare(
        &self,
        request: &ManifestRequest,
        snapshot: &Arc<source::Snapshot>,
        app_dir: std::path::PathBuf,
    ) -> Result<Prepared, Error> {
        let mut source = request.source.clone();
        let (dir, shared) = (app_dir.clone(), snapshot.clone());
        let (app_name, enabled) = (
            request.tracking.app_name.clone(),
            request.enabled_source_types.clone(),
        );
        let (source, source_type, allow_concurrency) =
            tokio::task::spawn_blocking(move || -> Result<_, Error> {
                source.merge_override_files(&dir, shared.root(), &app_name)?;
                let source_type =
                    render::detect_source_type(&dir, &source.explicit_types(), &enabled)?;
                let allow_concurrency = shared.allows_concurrency(&dir);
                Ok((source, source_type, allow_concurrency))
            })
            .await
            .map_err(join_error)??;
        // An app naming no type is a plugin's when a sidecar's discovery
        // claims it (asked before the files decide, as Argo CD does).
        let mut discovered_plugin = None;
        let mut source_type = source_type;
        if source.explicit_types().is_empty() && self.tools.plugin_discovery_possible().await {
            let plugin_request = self.plugin_request(
                request,
                &source,
                snapshot.root(),
                &app_dir,
                &snapshot.commit_sha,
            )?;
            if let Some(name) = render::plugin::discover(&plugin_request).await? {
                source_type = SourceType::Plugin;
                discovered_plugin = Some(name);
            }
        }
        Ok(Prepared {
            app_dir,
            source,
            source_type,
            allow_concurrency,
            discovered_plugin,
        })
    }

    /// What a call to a plugin sidecar for `request` sends: the app
    /// directory and the directories its `manifest-generate-paths` name,
    /// and Argo CD's plugin environment.
    fn plugin_request<'a>(
        &'a self,
        request: &ManifestRequest,
        source: &SourceSpec,
        repo_root: &'a std::path::Path,
        app_dir: &'a std::path::Path,
        revision: &str,
    ) -> Result<render::plugin::PluginRequest<'a>, Error> {
        let repo_url_shown = request.repo_url.redacted();
        let kube_version =
            render::env::normalize_kube_version(&request.kube_version).ok_or_else(|| {
                Error::Invalid {
                    message: format!(
                        "could not parse kubernetes version {}",
                        request.kube_version
                    ),
                }
            })?;
        let build = BuildEnv::new(BuildEnvInput {
            app_name: &request.tracking.app_name,
            app_namespace: &request.tracking.namespace,
            project_name: &request.project_name,
            revision,
            repo_url: &repo_url_shown,
            source_path: &source.path,
            target_revision: &source.target_revision,
        })
        .with("KUBE_VERSION", &kube_version)
        .with("KUBE_API_VERSIONS", &request.api_versions.join(","));
        let mut env = build.vars().to_vec();
        if let Some(plugin) = &source.plugin {
            for entry in &plugin.env {
                let value = build.substitute(&entry.value);
                env.push((format!("ARGOCD_ENV_{}", entry.name), value));
            }
            env.extend(render::plugin::parameter_env(&plugin.parameters));
        }
        let app_path = app_dir
            .strip_prefix(repo_root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut extra_paths = Some(Vec::new());
        for path in source::refresh::refresh_paths(&app_path, &request.manifest_generate_paths) {
            if path.is_empty() || path == "." {
                extra_paths = None;
                break;
            }
            if path == ".." || path.starts_with("../") {
                continue;
            }
            // A pattern brings the directory above its first glob segment.
            let fixed: Vec<&str> = path
                .split('/')
                .take_while(|segment| !segment.contains(['*', '?', '[', '\\']))
                .collect();
            if fixed.is_empty() {
                extra_paths = None;
                break;
            }
            if let Some(paths) = extra_paths.as_mut() {
                paths.push(fixed.join("/"));
            }
        }
        Ok(render::plugin::PluginRequest {
            sockets: self.tools.plugin_sockets(),
            files: self.tools.plugin_files(),
            repo_root,
            app_dir,
            extra_paths,
            env,
            git_credentials: git::credential_env(&request.repo_url),
            timeout: self.tools.plugin_timeout(),
            spool_dir: self.tools.spool_dir(),
        })
    }

    /// Renders a tree that does not come from git (an uploaded archive,
    /// `GenerateManifestWithFiles`) at `request.source.path` of it.
    async fn render_uploaded(
        &self,
        request: &ManifestRequest,
        snapshot: Arc<source::Snapshot>,
        revision: &str,
    ) -> Result<ManifestResult, Error> {
        let app_dir = snapshot.app_dir(&request.source.path)?;
        let prepared = self.prepare(request, &snapshot, app_dir).await?;
        self.render_prepared(request, snapshot, prepared, revision.to_string())
            .await
    }

    /// The render itself, once the tree is on disk and the source known.
    async fn render_prepared(
        &self,
        request: &ManifestRequest,
        snapshot: Arc<source::Snapshot>,
        prepared: Prepared,
        commit_sha: String,
    ) -> Result<ManifestResult, Error> {
        let Prepared {
            app_dir,
            source,
            source_type,
            allow_concurrency,
            discovered_plugin,
        } = prepared;
        let repo_url_shown = request.repo_url.redacted();
        let env = BuildEnv::new(BuildEnvInput {
            app_name: &request.tracking.app_name,
            app_namespace: &request.tracking.namespace,
            project_name: &request.project_name,
            revision: &commit_sha,
            repo_url: &repo_url_shown,
            source_path: &source.path,
            target_revision: &source.target_revision,
        });
        let repo_root = snapshot.root().to_path_buf();
        if matches!(source_type, SourceType::Helm | SourceType::Kustomize) {
            let snapshot = snapshot.clone();
            let escaping = tokio::task::spawn_blocking(move || {
                snapshot.escaping_symlink().map(str::to_string)
            })
            .await
            .map_err(join_error)?;
            if let Some(file) = escaping {
                return Err(render::Error::OutOfBoundsSymlink { file }.into());
            }
        }
        let started = std::time::Instant::now();
        let rendered: Result<Rendered, Error> = async {
            Ok(match source_type {
                SourceType::Directory => {
                    let options = directory_options(
                        &source,
                        &request.enabled_source_types,
                        &env,
                        self.config.max_combined_directory_manifests_bytes,
                    );
                    let (app_dir, repo_root) = (app_dir.clone(), repo_root.clone());
                    let objects = tokio::task::spawn_blocking(move || {
                        directory::render(&app_dir, &repo_root, &options)
                    })
                    .await
                    .map_err(join_error)??;
                    Rendered {
                        objects,
                        commands: Vec::new(),
                    }
                }
                SourceType::Helm => {
                    let (ref_roots, _ref_snapshots) = self.ref_roots(request, &snapshot).await?;
                    self.tools
                        .helm(HelmRequest {
                            ref_roots: &ref_roots,
                            app_dir: &app_dir,
                            repo_root: &repo_root,
                            source: &source,
                            env: &env,
                            app_name: &request.tracking.app_name,
                            namespace: &request.tracking.namespace,
                            kube_version: &request.kube_version,
                            api_versions: &request.api_versions,
                            values_file_schemes: request.values_file_schemes.as_deref(),
                        })
                        .await?
                }
                SourceType::Kustomize => {
                    self.tools
                        .kustomize(KustomizeRequest {
                            app_dir: &app_dir,
                            repo_root: &repo_root,
                            source: &source,
                            env: &env,
                            options: &request.kustomize_options,
                            kube_version: &request.kube_version,
                            api_versions: &request.api_versions,
                            allow_concurrency,
                        })
                        .await?
                }
                SourceType::Plugin => {
                    let plugin_request =
                        self.plugin_request(request, &source, &repo_root, &app_dir, &commit_sha)?;
                    let named = source
                        .plugin
                        .as_ref()
                        .map(|p| p.name.as_str())
                        .filter(|name| !name.is_empty());
                    let name = named.or(discovered_plugin.as_deref());
                    render::plugin::generate(&plugin_request, name).await?
                }
            })
        }
        .await;
        let labels = crate::metrics::RenderLabels {
            source_type: source_type.as_str(),
            outcome: if rendered.is_ok() { "ok" } else { "error" },
        };
        self.metrics.renders.get_or_create(&labels).inc();
        self.metrics
            .render_duration
            .get_or_create(&crate::metrics::SourceTypeLabels {
                source_type: source_type.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
        let rendered = rendered?;
        let tracking = request.tracking.clone();
        let path = source.path.clone();
        let objects = rendered.objects;
        let manifests = tokio::task::spawn_blocking(move || {
            manifest::finalize(objects, Some(&tracking), &path)
        })
        .await
        .map_err(join_error)??;
        // Keep the snapshot alive until rendering is done.
        drop(snapshot);
        Ok(ManifestResult {
            manifests,
            revision: commit_sha,
            source_type: Some(source_type),
            commands: rendered.commands,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_like_argo_cd() {
        let config = |minutes, requests| Config {
            pause_after_failed_attempts: 3,
            pause_minutes: minutes,
            pause_requests: requests,
            ..Default::default()
        };
        let failed = |failures, first, returned| CachedManifest {
            consecutive_failures: failures,
            first_failure: first,
            cached_errors_returned: returned,
            ..Default::default()
        };
        let now = 1_000_000;
        assert_eq!(paused(&failed(2, now, 0), &config(60, 0), now), Pause::No);
        assert_eq!(paused(&failed(3, now, 0), &config(60, 0), now), Pause::Yes);
        // By time: 59 minutes in, still paused; at 60, over.
        assert_eq!(
            paused(&failed(3, now - 59 * 60, 9), &config(60, 0), now),
            Pause::Yes
        );
        assert_eq!(
            paused(&failed(3, now - 60 * 60, 0), &config(60, 0), now),
            Pause::Over
        );
        // By cached answers.
        assert_eq!(paused(&failed(4, now, 1), &config(0, 2), now), Pause::Yes);
        assert_eq!(paused(&failed(4, now, 2), &config(0, 2), now), Pause::Over);
        // Neither limit: paused until a success replaces the record.
        assert_eq!(paused(&failed(9, 1, 999), &config(0, 0), now), Pause::Yes);
        let off = Config {
            pause_after_failed_attempts: 0,
            ..config(60, 0)
        };
        assert_eq!(paused(&failed(9, now, 0), &off, now), Pause::No);
    }

    #[test]
    fn cache_entries_round_trip_and_refuse_truncation() {
        let entry = CachedManifest {
            result: Some(ManifestResult {
                manifests: vec![
                    r#"{"kind":"ConfigMap","data":{"q":"\"x\""}}"#.into(),
                    "{}".into(),
                ],
                revision: "a".repeat(40),
                source_type: Some(SourceType::Helm),
                commands: vec!["helm template .".into()],
            }),
            ..Default::default()
        };
        let bytes = entry.encode().unwrap();
        let back = CachedManifest::decode(&bytes).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&entry).unwrap()
        );
        assert!(CachedManifest::decode(&bytes[..bytes.len() - 1]).is_none());
        // Entries written as JSON still read.
        let json = serde_json::to_vec(&entry).unwrap();
        assert!(CachedManifest::decode(&json).is_some());
        let failure = CachedManifest {
            consecutive_failures: 2,
            most_recent_error: "boom".into(),
            ..Default::default()
        };
        let back = CachedManifest::decode(&failure.encode().unwrap()).unwrap();
        assert_eq!(
            (back.consecutive_failures, back.most_recent_error.as_str()),
            (2, "boom")
        );
    }
}
