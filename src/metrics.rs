//! Every metric family, registered once in [`Metrics::new`] and handed to
//! components as narrow, cloneable handles. Names are Argo CD's where
//! Argo CD has the metric; manifold's own are prefixed `manifold_`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Handles for the render stage.
#[derive(Debug, Clone)]
pub struct RenderMetrics {
    /// Time spent waiting for a parallelism permit, including waits that
    /// ended because the caller went away.
    pub parallelism_wait: Histogram,
    /// Parallelism permits held right now.
    pub permits_in_use: Gauge,
    /// Successful manifest answers by how they were found.
    pub answers: Family<AnswerLabels, Counter>,
    /// Work on a remote after a cache miss, in progress.
    pub pending: Family<RepoLabels, Gauge>,
    /// Renders (a tool or plugin ran, or a directory was read) by source
    /// type and outcome, and how long they took.
    pub renders: Family<RenderLabels, Counter>,
    pub render_duration: HistogramFamily<SourceTypeLabels>,
    /// OCI registry operations.
    pub oci: OciMetrics,
}

/// Labels of manifest answers.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// `request_key` and `content_key` (cache hits), `rendered`,
    /// `joined` (an identical render in progress), `resolved` (a ref-only
    /// source).
    pub served: &'static str,
}

/// Labels of Argo CD's Redis request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisRequestLabels {
    pub initiator: &'static str,
    pub command: &'static str,
    pub failed: &'static str,
}

/// Handles for the shared (Redis) tier.
#[derive(Debug, Clone)]
pub struct RedisMetrics {
    pub requests: Family<RedisRequestLabels, Counter>,
    pub duration: Histogram,
    /// 1 while the last Redis command failed (the server runs on its
    /// in-process tier alone), else 0.
    pub degraded: Gauge,
}

/// Labels of cache lookups.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// What is cached: `manifests`, `refs`.
    pub kind: &'static str,
    /// `memory`, `redis` or `miss`.
    pub result: &'static str,
}

/// Handles for the caches.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    pub lookups: Family<CacheLabels, Counter>,
}

/// Handles for snapshots.
#[derive(Debug, Clone, Default)]
pub struct SourceMetrics {
    /// Files (and symlinks) written into snapshots.
    pub exported_files: Counter,
    /// Bytes of file content written into snapshots.
    pub exported_bytes: Counter,
    /// Snapshots on disk right now.
    pub snapshots: Gauge,
}

/// Handles for the process supervisor.
#[derive(Debug, Clone, Default)]
pub struct ExecMetrics {
    /// External programs running right now.
    pub running: Gauge,
    /// Programs that ran past their timeout (their group got SIGTERM).
    pub timeouts: Counter,
    /// Programs whose group still ran after the grace and got SIGKILL.
    pub kills: Counter,
}

/// Labels of Argo CD's OCI request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OciLabels {
    /// The registry repository, without credentials.
    pub repo: String,
    /// `extract`, `resolve-revision`, `digest-metadata`, `get-tags`,
    /// `test-repo`.
    pub request_type: &'static str,
}

/// Handles for OCI registry operations, with Argo CD's names.
#[derive(Debug, Clone)]
pub struct OciMetrics {
    pub requests: Family<OciLabels, Counter>,
    pub duration: HistogramFamily<OciLabels>,
    pub extract_failures: Family<GitFailureLabels, Counter>,
    pub resolve_revision_failures: Family<GitFailureLabels, Counter>,
    pub digest_metadata_failures: Family<GitFailureLabels, Counter>,
    pub get_tags_failures: Family<RepoLabels, Counter>,
    pub test_repo_failures: Family<RepoLabels, Counter>,
}

impl Default for OciMetrics {
    fn default() -> Self {
        OciMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(git_buckets),
            extract_failures: Family::default(),
            resolve_revision_failures: Family::default(),
            digest_metadata_failures: Family::default(),
            get_tags_failures: Family::default(),
            test_repo_failures: Family::default(),
        }
    }
}

impl OciMetrics {
    /// Counts one operation of `request_type` on `repo` (redacted) at
    /// `revision`, its duration, and its failure.
    pub fn record(
        &self,
        repo: &str,
        request_type: &'static str,
        revision: &str,
        started: std::time::Instant,
        failed: bool,
    ) {
        let labels = OciLabels {
            repo: repo.to_string(),
            request_type,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if !failed {
            return;
        }
        let with_revision = GitFailureLabels {
            repo: repo.to_string(),
            revision: revision.to_string(),
        };
        let repo_only = RepoLabels {
            repo: repo.to_string(),
        };
        match request_type {
            "extract" => self.extract_failures.get_or_create(&with_revision).inc(),
            "resolve-revision" => self
                .resolve_revision_failures
                .get_or_create(&with_revision)
                .inc(),
            "digest-metadata" => self
                .digest_metadata_failures
                .get_or_create(&with_revision)
                .inc(),
            "get-tags" => self.get_tags_failures.get_or_create(&repo_only).inc(),
            _ => self.test_repo_failures.get_or_create(&repo_only).inc(),
        };
    }
}

/// Labels of disk usage.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiskLabels {
    /// `stores`, `snapshots` or `charts`.
    pub kind: &'static str,
}

/// Handles for the disk budget.
#[derive(Debug, Clone, Default)]
pub struct DiskMetrics {
    /// Bytes on disk by kind, measured by the janitor.
    pub bytes: Family<DiskLabels, Gauge>,
    /// The configured budget (0: none).
    pub budget: Gauge,
    /// What was removed to stay within the budget.
    pub evictions: Family<DiskLabels, Counter>,
}

/// Labels of Argo CD's git request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitLabels {
    /// The remote, without credentials.
    pub repo: String,
    /// `ls-remote` or `fetch`.
    pub request_type: &'static str,
}

/// Labels of Argo CD's git failure metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitFailureLabels {
    /// The remote, without credentials (Argo CD puts its local clone path
    /// here).
    pub repo: String,
    pub revision: String,
}

/// Labels naming a remote.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoLabels {
    /// The remote, without credentials.
    pub repo: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Argo CD's git histogram buckets.
fn git_buckets() -> Histogram {
    Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, 20.0])
}

/// Handles for git operations.
#[derive(Debug, Clone)]
pub struct GitMetrics {
    /// Each ls-remote and fetch that reached the remote.
    pub requests: Family<GitLabels, Counter>,
    pub duration: HistogramFamily<GitLabels>,
    pub fetch_failures: Family<GitFailureLabels, Counter>,
    pub ls_remote_failures: Family<GitFailureLabels, Counter>,
}

impl Default for GitMetrics {
    fn default() -> Self {
        GitMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(git_buckets),
            fetch_failures: Family::default(),
            ls_remote_failures: Family::default(),
        }
    }
}

/// Labels of renders.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenderLabels {
    /// `Helm`, `Kustomize`, `Directory`, `Plugin`.
    pub source_type: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of render durations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceTypeLabels {
    pub source_type: &'static str,
}

fn render_buckets() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0])
}

/// Labels of webhook requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `github`, `gitlab`, ... or `unknown`.
    pub provider: &'static str,
    /// `push`, `ping`, `ignored`, `unauthorized`, `malformed`,
    /// `too_large`, `busy`.
    pub result: &'static str,
}

/// Labels of webhook pre-renders.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrerenderLabels {
    /// `rendered` (a tool ran), `reused` (the cache answered for the new
    /// commit), `unchanged` (the app's revision did not move), `failed`.
    pub outcome: &'static str,
}

/// Handles for webhooks and what they caused.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    pub requests: Family<WebhookLabels, Counter>,
    /// Pushed refs whose revision cache was dropped.
    pub refs_invalidated: Counter,
    /// Recently requested apps a push made this replica check.
    pub prerenders: Family<PrerenderLabels, Counter>,
    /// Pushes this replica finished handling (received or from a peer).
    pub pushes_processed: Counter,
}

/// The registry and every handle.
pub struct Metrics {
    registry: Registry,
    pub disk: DiskMetrics,
    pub git: GitMetrics,
    pub grpc: crate::grpc::metrics::GrpcMetrics,
    pub render: RenderMetrics,
    pub source: SourceMetrics,
    pub exec: ExecMetrics,
    pub redis: RedisMetrics,
    pub cache: CacheMetrics,
    pub webhook: WebhookMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let render = RenderMetrics {
            parallelism_wait: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, 20.0, 60.0, 120.0,
            ]),
            permits_in_use: Gauge::default(),
            answers: Family::default(),
            pending: Family::default(),
            renders: Family::default(),
            render_duration: Family::new_with_constructor(render_buckets),
            oci: OciMetrics::default(),
        };
        for (name, help, family) in [
            (
                "argocd_oci_extract_fail",
                "Failed OCI artifact extractions",
                render.oci.extract_failures.clone(),
            ),
            (
                "argocd_oci_resolve_revision_fail",
                "Failed OCI revision resolutions",
                render.oci.resolve_revision_failures.clone(),
            ),
            (
                "argocd_oci_digest_metadata_fail",
                "Failed OCI metadata reads",
                render.oci.digest_metadata_failures.clone(),
            ),
        ] {
            registry.register(name, help, family);
        }
        registry.register(
            "argocd_oci_get_tags_fail",
            "Failed OCI tag listings",
            render.oci.get_tags_failures.clone(),
        );
        registry.register(
            "argocd_oci_test_repo_fail",
            "Failed OCI repository tests",
            render.oci.test_repo_failures.clone(),
        );
        registry.register(
            "argocd_oci_request",
            "OCI registry operations",
            render.oci.requests.clone(),
        );
        registry.register(
            "argocd_oci_request_duration_seconds",
            "Duration of OCI registry operations",
            render.oci.duration.clone(),
        );
        registry.register(
            "argocd_repo_pending_request",
            "Requests working on a repository after a cache miss",
            render.pending.clone(),
        );
        registry.register(
            "manifold_renders",
            "Renders by source type and outcome",
            render.renders.clone(),
        );
        registry.register(
            "manifold_render_duration_seconds",
            "Duration of renders by source type",
            render.render_duration.clone(),
        );
        registry.register(
            "argocd_repo_parallelism_wait_duration_seconds",
            "Time a manifest generation waited for a parallelism permit",
            render.parallelism_wait.clone(),
        );
        registry.register(
            "manifold_parallelism_permits_in_use",
            "Manifest generations holding a parallelism permit",
            render.permits_in_use.clone(),
        );
        registry.register(
            "manifold_manifest_answers",
            "Manifest answers by how they were found (cache key, render, shared render)",
            render.answers.clone(),
        );
        let source = SourceMetrics::default();
        registry.register(
            "manifold_snapshot_exported_files",
            "Files written into commit snapshots",
            source.exported_files.clone(),
        );
        registry.register(
            "manifold_snapshot_exported_bytes",
            "Bytes written into commit snapshots",
            source.exported_bytes.clone(),
        );
        registry.register(
            "manifold_snapshots",
            "Commit snapshots on disk",
            source.snapshots.clone(),
        );
        let exec = ExecMetrics::default();
        registry.register(
            "manifold_exec_running_processes",
            "External programs (git, helm, kustomize, plugins) running",
            exec.running.clone(),
        );
        registry.register(
            "manifold_exec_timeouts",
            "External programs that ran past their timeout (SIGTERM to the group)",
            exec.timeouts.clone(),
        );
        registry.register(
            "manifold_exec_kills",
            "External programs whose group needed SIGKILL after the grace",
            exec.kills.clone(),
        );
        let git = GitMetrics::default();
        registry.register(
            "argocd_git_request",
            "Git requests (ls-remote, fetch) sent to remotes",
            git.requests.clone(),
        );
        registry.register(
            "argocd_git_request_duration_seconds",
            "Duration of git requests",
            git.duration.clone(),
        );
        registry.register(
            "argocd_git_fetch_fail",
            "Failed git fetches",
            git.fetch_failures.clone(),
        );
        registry.register(
            "argocd_git_lsremote_fail",
            "Failed git ls-remotes",
            git.ls_remote_failures.clone(),
        );
        let redis = RedisMetrics {
            requests: Family::default(),
            duration: Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0]),
            degraded: Gauge::default(),
        };
        registry.register(
            "argocd_redis_request",
            "Redis commands sent by the repo-server",
            redis.requests.clone(),
        );
        registry.register(
            "argocd_redis_request_duration_seconds",
            "Duration of Redis commands",
            redis.duration.clone(),
        );
        registry.register(
            "manifold_redis_degraded",
            "1 while Redis fails and only the in-process cache is used",
            redis.degraded.clone(),
        );
        let cache = CacheMetrics::default();
        registry.register(
            "manifold_cache_lookups",
            "Cache lookups by kind and the tier that answered (or miss)",
            cache.lookups.clone(),
        );
        let webhook = WebhookMetrics::default();
        registry.register(
            "manifold_webhook_requests",
            "Webhook requests by provider and what was done with them",
            webhook.requests.clone(),
        );
        registry.register(
            "manifold_webhook_refs_invalidated",
            "Pushed refs whose revision cache a webhook dropped",
            webhook.refs_invalidated.clone(),
        );
        registry.register(
            "manifold_webhook_prerenders",
            "Recently requested apps checked after a push, by outcome",
            webhook.prerenders.clone(),
        );
        registry.register(
            "manifold_webhook_pushes_processed",
            "Pushes whose invalidation and pre-rendering finished on this replica",
            webhook.pushes_processed.clone(),
        );
        // As Argo CD: the handling-time histogram only when asked for.
        let grpc = crate::grpc::metrics::GrpcMetrics::new(
            std::env::var("ARGOCD_ENABLE_GRPC_TIME_HISTOGRAM").as_deref() == Ok("true"),
        );
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            grpc.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            grpc.handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server",
            grpc.received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server",
            grpc.sent.clone(),
        );
        if let Some(handling) = &grpc.handling {
            registry.register(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
                handling.clone(),
            );
        }
        let disk = DiskMetrics::default();
        registry.register(
            "manifold_disk_bytes",
            "Bytes on disk by kind (object stores, snapshots, chart archives)",
            disk.bytes.clone(),
        );
        registry.register(
            "manifold_disk_budget_bytes",
            "The disk budget (0: none)",
            disk.budget.clone(),
        );
        registry.register(
            "manifold_disk_evictions",
            "Removals made to stay within the disk budget, by kind",
            disk.evictions.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            disk,
            git,
            grpc,
            webhook,
            render,
            source,
            exec,
            redis,
            cache,
        }
    }

    /// The exposition text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Prometheus' standard `process_*` metrics for this process, read from
/// `/proc` at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(process) = ProcessStats::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(process.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                process.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                process.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                process.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                process.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                process.start_time_seconds,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// What `/proc` says about this process.
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time_seconds: f64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        // USER_HZ: 100 on every Linux configuration in use.
        let ticks = 100.0;
        // utime, stime are fields 14 and 15 (1-based), i.e. 11 and 12 here.
        let cpu_seconds = (number(11)? + number(12)?) / ticks;
        let start_ticks = number(19)?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kilobytes = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .map(|kb| kb * 1024.0)
        };
        let virtual_bytes = kilobytes("VmSize:")?;
        let resident_bytes = kilobytes("VmRSS:")?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        Some(ProcessStats {
            cpu_seconds,
            resident_bytes,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time_seconds: boot + start_ticks / ticks,
        })
    }
}
