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
}

/// The registry and every handle.
pub struct Metrics {
    registry: Registry,
    pub render: RenderMetrics,
    pub source: SourceMetrics,
    pub exec: ExecMetrics,
    pub redis: RedisMetrics,
    pub cache: CacheMetrics,
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
        };
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
        Metrics {
            registry,
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
