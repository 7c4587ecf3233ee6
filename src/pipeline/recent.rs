//! Recently requested apps, and what a push does to them: their revision
//! cache is dropped and those whose revision moved are rendered at the new
//! commit ahead of the controller, so its next request is a cache hit.
//! Content addressing decides what actually runs a tool: an app whose
//! inputs the push did not change is answered from the cache.

use std::sync::Arc;
use std::time::Duration;

use super::{ManifestRequest, Pipeline, Served};
use crate::cache::key;

/// Most apps remembered (across all repositories).
const MAX_APPS: u64 = 10_000;
/// An app not requested for this long is forgotten. The controller asks
/// for every app at each reconciliation (3 minutes by default).
const IDLE: Duration = Duration::from_secs(3600);
/// Apps of one push checked at once (renders also take parallelism
/// permits).
const PRERENDER_CONCURRENCY: usize = 8;

/// One recently answered app.
pub(super) struct RecentApp {
    request: ManifestRequest,
    /// The commit it was last answered at.
    commit: String,
    /// Its remote, as [`crate::domain::RepoUrl::webhook_identity`] names
    /// it.
    identity: String,
}

pub(super) struct Recent {
    apps: moka::sync::Cache<String, Arc<RecentApp>>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            apps: moka::sync::Cache::builder()
                .max_capacity(MAX_APPS)
                .time_to_idle(IDLE)
                .build(),
        }
    }
}

impl Recent {
    /// Notes that `request` (with render inputs `encoded`) was answered at
    /// `commit`.
    pub(super) fn note(&self, request: &ManifestRequest, commit: &str, encoded: &[u8]) {
        // The revision as asked is part of the identity: a request for an
        // old SHA (history, diff) does not replace the app's branch.
        let id = key::render_encoded(&request.repo_url.normalized(), &request.revision, encoded);
        if let Some(known) = self.apps.get(&id) {
            if known.commit == commit {
                return;
            }
        }
        let mut request = request.clone();
        request.no_cache = false;
        request.no_revision_cache = false;
        self.apps.insert(
            id,
            Arc::new(RecentApp {
                identity: request.repo_url.webhook_identity(),
                request,
                commit: commit.to_string(),
            }),
        );
    }

    /// The apps of the remotes with these identities.
    fn of(&self, identities: &[String]) -> Vec<Arc<RecentApp>> {
        self.apps
            .iter()
            .filter(|(_, app)| identities.contains(&app.identity))
            .map(|(_, app)| app)
            .collect()
    }
}

/// A push, as every replica handles it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushEvent {
    /// The pushed remote, as [`crate::domain::RepoUrl::webhook_identity`]
    /// names it (one per URL the payload gave).
    pub identities: Vec<String>,
    /// Normalised URLs of the payload (their revision caches are dropped
    /// even when no app of this replica uses that spelling).
    pub normalized_urls: Vec<String>,
    /// The pushed refs, for the log.
    pub refs: Vec<String>,
}

/// What a push did to one app.
enum Prerendered {
    Rendered,
    Reused,
    Unchanged,
    Failed,
}

/// What handling a push did on this replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Revision caches dropped (one per spelling of the remote).
    pub listings_dropped: usize,
    /// Apps rendered at their new commit (a tool ran, here or, sharing a
    /// render lease, on another replica).
    pub rendered: usize,
    /// Apps answered for their new commit from the cache.
    pub reused: usize,
    /// Apps whose revision did not move.
    pub unchanged: usize,
    pub failed: usize,
}

impl Pipeline {
    /// Handles a push: drops the revision cache of every spelling of the
    /// remote this replica knows (and Redis's), then brings the recently
    /// requested apps of the remote to their new commits.
    pub async fn handle_push(self: &Arc<Self>, event: &PushEvent) -> PushOutcome {
        let apps = self.recent.of(&event.identities);
        let mut spellings: Vec<String> = event.normalized_urls.clone();
        for app in &apps {
            let url = app.request.repo_url.normalized();
            if !spellings.contains(&url) {
                spellings.push(url);
            }
        }
        let mut outcome = PushOutcome::default();
        for url in &spellings {
            if let Ok(mut generations) = self.ref_generations.lock() {
                *generations.entry(url.clone()).or_default() += 1;
            }
            self.cache.delete(&key::refs(url)).await;
            outcome.listings_dropped += 1;
        }
        // At most PRERENDER_CONCURRENCY tasks exist at once: spawning one
        // per app up front held every app's pipeline future (about 4 KiB
        // each) at the same time, a peak the allocator then kept.
        let mut tasks = tokio::task::JoinSet::new();
        let mut apps = apps.into_iter();
        loop {
            while tasks.len() < PRERENDER_CONCURRENCY {
                let Some(app) = apps.next() else { break };
                let pipeline = self.clone();
                tasks.spawn(async move { pipeline.prerender(&app).await });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            match done.unwrap_or(Prerendered::Failed) {
                Prerendered::Rendered => outcome.rendered += 1,
                Prerendered::Reused => outcome.reused += 1,
                Prerendered::Unchanged => outcome.unchanged += 1,
                Prerendered::Failed => outcome.failed += 1,
            }
        }
        outcome
    }

    /// Brings one app to the commit its revision names now.
    async fn prerender(&self, app: &RecentApp) -> Prerendered {
        let request = &app.request;
        let sha = match self
            .resolve_revision(
                &request.repo_url,
                &request.revision,
                &request.source.tag_prefix,
                false,
            )
            .await
        {
            Ok(sha) => sha,
            Err(err) => {
                tracing::info!(repo = %request.repo_url, app = %request.tracking.app_name, error = %err,
                    "pre-render after push: cannot resolve the revision");
                return Prerendered::Failed;
            }
        };
        if sha == app.commit {
            return Prerendered::Unchanged;
        }
        // Asked as the controller will ask (the branch, not the SHA): it
        // resolves through the listing just made, and the answer lands
        // under the key the controller's request will compute.
        match self.generate(request.clone()).await {
            Ok((_, Served::Rendered)) => Prerendered::Rendered,
            Ok(_) => Prerendered::Reused,
            Err(err) => {
                tracing::info!(repo = %app.request.repo_url, app = %app.request.tracking.app_name, error = %err,
                    "pre-render after push failed");
                Prerendered::Failed
            }
        }
    }
}
