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
/// Webhook bodies read at once (each up to the payload cap, before its
/// signature can be checked); beyond this a webhook is answered 503.
const CONCURRENT_READS: usize = 16;
/// Longest a webhook body may take to arrive.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
    reads: tokio::sync::Semaphore,
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
    let (queue, queued) = mpsc::channel::<PushEvent>(QUEUE);
    let webhooks = Arc::new(Webhooks {
        config,
        queue,
        metrics: metrics.clone(),
        reads: tokio::sync::Semaphore::new(CONCURRENT_READS),
    });
    let worker = tokio::spawn(work(queued, pipeline, cache, metrics));
    (webhooks, worker)
}

/// Handles pushes: at most [`CONCURRENT_PUSHES`] at once (the queue
/// fills, and webhooks are refused, beyond that), and one at a time per
/// remote: a push for a remote being handled is kept (the latest one) and
/// handled once after. The handling tasks belong to this task: aborting it
/// cancels them.
async fn work(
    mut queued: mpsc::Receiver<PushEvent>,
    pipeline: Arc<Pipeline>,
    cache: Arc<Cache>,
    metrics: WebhookMetrics,
) {
    let origin = crate::domain::unguessable_name();
    let mut peers = cache.events();
    let mut tasks: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    // The remote each task handles (a task that panicked still frees it).
    let mut handling: std::collections::HashMap<tokio::task::Id, Vec<String>> = Default::default();
    // Remotes being handled, with the push to handle once more after.
    let mut running: std::collections::HashMap<Vec<String>, Option<PushEvent>> = Default::default();
    let handle = |tasks: &mut tokio::task::JoinSet<()>, push: PushEvent| {
        let (pipeline, metrics) = (pipeline.clone(), metrics.clone());
        let key = remote(&push);
        let task = tasks.spawn(async move {
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
        (task.id(), key)
    };
    loop {
        let room = tasks.len() < CONCURRENT_PUSHES;
        let push = tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(err) => {
                        tracing::error!(error = %err, "handling a push failed");
                        err.id()
                    }
                };
                let Some(remote) = handling.remove(&id) else { continue };
                if let Some(Some(again)) = running.remove(&remote) {
                    running.insert(remote, None);
                    let (id, remote) = handle(&mut tasks, again);
                    handling.insert(id, remote);
                }
                continue;
            }
            push = queued.recv(), if room => match push {
                Some(push) => {
                    let message = Broadcast { origin: origin.clone(), push };
                    if let Ok(bytes) = serde_json::to_vec(&message) {
                        cache.broadcast(&bytes).await;
                    }
                    message.push
                }
                None => return,
            },
            Some(message) = recv(&mut peers), if room => {
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
        match running.get_mut(&remote(&push)) {
            Some(again) => *again = Some(push),
            None => {
                running.insert(remote(&push), None);
                let (id, remote) = handle(&mut tasks, push);
                handling.insert(id, remote);
            }
        }
    }
}

/// The remote a push is for, as a key.
fn remote(push: &PushEvent) -> Vec<String> {
    let mut identities = push.identities.clone();
    identities.sort();
    identities
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
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("webhook payload is larger than {limit} bytes (--webhook-max-payload-size)\n"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        count("unknown", "too_large");
        return too_large();
    }
    let Ok(reading) = webhooks.reads.try_acquire() else {
        count("unknown", "busy");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many webhooks being received; retry later\n".to_string(),
        );
    };
    let body = match tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(err)) => {
            let oversized = err
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if oversized {
                count("unknown", "too_large");
                return too_large();
            }
            count("unknown", "malformed");
            return (
                StatusCode::BAD_REQUEST,
                "webhook body could not be read\n".to_string(),
            );
        }
        Err(_) => {
            count("unknown", "malformed");
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!("webhook body did not arrive within {READ_TIMEOUT:?}\n"),
            );
        }
    };
    drop(reading);
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
