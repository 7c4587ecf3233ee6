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
        Metrics {
            registry,
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
