//! Push webhooks on the HTTP port (`POST /api/webhook`), from GitHub,
//! GitLab, Bitbucket Cloud and Server, Gogs/Gitea and Azure DevOps.
//!
//! The handler checks the provider's secret, queues the push and answers
//! at once; a worker then tells every replica (Redis pub/sub, when a
//! shared tier is configured) and handles it here too: each replica drops
//! its revision cache of the pushed remote and brings its recently
//! requested apps of that remote to their new commits
//! ([`Pipeline::handle_push`]).

pub mod providers;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::sync::mpsc;

use crate::cache::Cache;
use crate::domain::{webhook_identity, RepoUrl};
use crate::metrics::{PrerenderLabels, WebhookLabels, WebhookMetrics};
use crate::pipeline::{Pipeline, PushEvent, PushOutcome};
use providers::{Event, Rejection, Secrets};

/// Pushes waiting to be handled; beyond this a webhook is answered 503.
const QUEUE: usize = 1024;
/// Pushes handled at once on one replica.
const CONCURRENT_PUSHES: usize = 4;

/// Webhook settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub secrets: Secrets,
    /// Largest payload read; a larger one is refused with 413.
    pub max_payload_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secrets: Secrets::default(),
            max_payload_bytes: 50 << 20,
        }
    }
}

/// A push as replicas tell each other: who saw it first, so that one
/// does not handle it twice.
#[derive(serde::Serialize, serde::Deserialize)]
struct Broadcast {
    origin: String,
    push: PushEvent,
}

/// The receiving side: settings, the queue and the metrics.
pub struct Webhooks {
    config: Config,
    queue: mpsc::Sender<PushEvent>,
    metrics: WebhookMetrics,
}

/// Starts handling pushes (the queue's worker, and with a shared tier
/// the subscription to other replicas' pushes); the returned task runs
/// until aborted.
pub fn start(
    config: Config,
    pipeline: Arc<Pipeline>,
    cache: Arc<Cache>,
    metrics: WebhookMetrics,
) -> (Arc<Webhooks>, tokio::task::JoinHandle<()>) {
    let unverified: Vec<&str> = [
        ("github", config.secrets.github.is_some()),
        ("gitlab", config.secrets.gitlab.is_some()),
        ("bitbucket", config.secrets.bitbucket_uuid.is_some()),
        ("bitbucketserver", config.secrets.bitbucket_server.is_some()),
        ("gogs/gitea", config.secrets.gogs.is_some()),
        (
            "azuredevops",
            config.secrets.azure_devops_username.is_some()
                || config.secrets.azure_devops_password.is_some(),
        ),
    ]
    .into_iter()
    .filter(|(_, configured)| !configured)
    .map(|(name, _)| name)
    .collect();
    if !unverified.is_empty() {
        tracing::info!(providers = ?unverified, "webhooks from these providers are accepted without verification (no secret configured)");
    }
    let (queue, mut queued) = mpsc::channel::<PushEvent>(QUEUE);
    let webhooks = Arc::new(Webhooks {
        config,
        queue,
        metrics: metrics.clone(),
    });
    let worker = tokio::spawn(async move {
        let origin = crate::domain::unguessable_name();
        let mut peers = cache.events();
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_PUSHES));
        loop {
            let push = tokio::select! {
                push = queued.recv() => match push {
                    Some(push) => {
                        let message = Broadcast { origin: origin.clone(), push };
                        if let Ok(bytes) = serde_json::to_vec(&message) {
                            cache.broadcast(&bytes).await;
                        }
                        message.push
                    }
                    None => return,
                },
                Some(message) = recv(&mut peers) => {
                    match serde_json::from_slice::<Broadcast>(&message) {
                        Ok(message) if message.origin != origin => message.push,
                        Ok(_) => continue,
                        Err(err) => {
                            tracing::warn!(error = %err, "ignoring an unreadable event from another replica");
                            continue;
                        }
                    }
                }
            };
            let (pipeline, metrics, permits) = (pipeline.clone(), metrics.clone(), permits.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let started = std::time::Instant::now();
                let outcome = pipeline.handle_push(&push).await;
                record(&metrics, &push, &outcome);
                tracing::info!(
                    repo = ?push.identities,
                    refs = ?push.refs,
                    listings_dropped = outcome.listings_dropped,
                    rendered = outcome.rendered,
                    reused = outcome.reused,
                    unchanged = outcome.unchanged,
                    failed = outcome.failed,
                    took = ?started.elapsed(),
                    "push handled"
                );
            });
        }
    });
    (webhooks, worker)
}

/// The next message from other replicas; never, without a subscription.
async fn recv(peers: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match peers {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

fn record(metrics: &WebhookMetrics, push: &PushEvent, outcome: &PushOutcome) {
    if outcome.listings_dropped > 0 {
        metrics.refs_invalidated.inc_by(push.refs.len() as u64);
    }
    for (outcome, count) in [
        ("rendered", outcome.rendered),
        ("reused", outcome.reused),
        ("unchanged", outcome.unchanged),
        ("failed", outcome.failed),
    ] {
        if count > 0 {
            metrics
                .prerenders
                .get_or_create(&PrerenderLabels { outcome })
                .inc_by(count as u64);
        }
    }
    metrics.pushes_processed.inc();
}

/// The webhook route.
pub fn router(webhooks: Arc<Webhooks>) -> Router {
    Router::new()
        .route("/api/webhook", post(receive))
        .with_state(webhooks)
}

async fn receive(
    State(webhooks): State<Arc<Webhooks>>,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, String) {
    let count = |provider: &'static str, result: &'static str| {
        webhooks
            .metrics
            .requests
            .get_or_create(&WebhookLabels { provider, result })
            .inc();
    };
    let limit = webhooks.config.max_payload_bytes;
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        count("unknown", "too_large");
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("webhook payload is larger than {limit} bytes (--webhook-max-payload-size)\n"),
        );
    };
    let event = match providers::parse(&headers, &body, &webhooks.config.secrets) {
        Ok(event) => event,
        Err(rejection) => {
            let (provider, result) = match &rejection {
                Rejection::UnknownProvider => ("unknown", "unknown"),
                Rejection::Unauthorized { provider, .. } => (provider.as_str(), "unauthorized"),
                Rejection::Malformed { provider, .. } => (provider.as_str(), "malformed"),
            };
            count(provider, result);
            tracing::warn!(error = %rejection, "webhook refused");
            let status =
                StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return (status, format!("{rejection}\n"));
        }
    };
    let push = match event {
        Event::Ping(provider) => {
            count(provider.as_str(), "ping");
            return (StatusCode::OK, "pong\n".to_string());
        }
        Event::Ignored { provider, event } => {
            count(provider.as_str(), "ignored");
            return (StatusCode::OK, format!("ignored: {event} is not a push\n"));
        }
        Event::Push(push) => push,
    };
    let provider = push.provider.as_str();
    let mut event = PushEvent {
        refs: push.refs.iter().map(|r| r.name.clone()).collect(),
        ..Default::default()
    };
    for url in &push.repo_urls {
        let identity = webhook_identity(url);
        if !event.identities.contains(&identity) {
            event.identities.push(identity);
        }
        if let Ok(url) = RepoUrl::parse(url) {
            let normalized = url.normalized();
            if !event.normalized_urls.contains(&normalized) {
                event.normalized_urls.push(normalized);
            }
        }
    }
    match webhooks.queue.try_send(event) {
        Ok(()) => {
            count(provider, "push");
            (StatusCode::OK, "queued\n".to_string())
        }
        Err(_) => {
            count(provider, "busy");
            tracing::warn!(provider, "webhook queue full; push refused");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many pushes waiting; retry later\n".to_string(),
            )
        }
    }
}
