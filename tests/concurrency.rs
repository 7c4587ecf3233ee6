//! Kustomize renders of several revisions of one repository with different
//! per-app overrides, sent at once: they run at the same time (no lock per
//! repository) and each gets exactly its own output.

mod common;
#[path = "support/concurrency_fixture.rs"]
mod concurrency_fixture;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

// `concurrency_fixture` builds its repository with `super::fixtures`.
use common::fixtures;
use common::{on_path, Client};
use concurrency_fixture::{check, request, KustomizeRepo, Overrides};
use manifold::grpc::proto::repository::{ManifestRequest, ManifestResponse};
use manifold::server::{self, Tls};

/// How many tool runs must be in flight at once before any may proceed.
const OVERLAP: usize = 3;

/// How long a run waits for the others before giving up, in 50 ms polls
/// (at least 15 s). Only reached when renders do not overlap.
const MAX_POLLS: usize = 300;

/// A `kustomize` wrapper: every `kustomize build` appends `start <id>` to
/// a log, leaves a marker in a shared directory, waits until [`OVERLAP`]
/// markers exist (so it can only proceed once that many builds have
/// started), runs the real kustomize, and appends `end <id>`. Anything
/// else (`kustomize version`) goes straight to the real binary.
struct GatedKustomize {
    dir: tempfile::TempDir,
}

impl GatedKustomize {
    fn new() -> Self {
        let real = on_path("kustomize");
        let real = real.canonicalize().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        std::fs::create_dir(&started).unwrap();
        let script = dir.path().join("kustomize");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 real='{real}'\n\
                 log='{log}'\n\
                 started='{started}'\n\
                 if [ \"${{1:-}}\" != build ]; then exec \"$real\" \"$@\"; fi\n\
                 id=\"$$.$(date +%s%N)\"\n\
                 echo \"start $id\" >> \"$log\"\n\
                 : > \"$started/$id\"\n\
                 polls=0\n\
                 while [ \"$(ls \"$started\" | wc -l)\" -lt {OVERLAP} ]; do\n\
                 \x20 polls=$((polls + 1))\n\
                 \x20 if [ \"$polls\" -ge {MAX_POLLS} ]; then echo \"timeout $id\" >> \"$log\"; break; fi\n\
                 \x20 sleep 0.05\n\
                 done\n\
                 \"$real\" \"$@\"\n\
                 status=$?\n\
                 echo \"end $id\" >> \"$log\"\n\
                 exit $status\n",
                real = real.display(),
                log = dir.path().join("log").display(),
                started = started.display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        GatedKustomize { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("kustomize")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// What the wrapper's log says about the builds.
#[derive(Debug, Default)]
struct Runs {
    started: usize,
    ended: usize,
    timed_out: usize,
    /// The most builds started and not yet ended at any point of the log.
    max_in_flight: usize,
}

fn analyse(log: &str) -> Runs {
    let mut runs = Runs::default();
    let mut in_flight = HashSet::new();
    for line in log.lines() {
        match line.split_once(' ') {
            Some(("start", id)) => {
                assert!(in_flight.insert(id), "{id} started twice:\n{log}");
                runs.started += 1;
                runs.max_in_flight = runs.max_in_flight.max(in_flight.len());
            }
            Some(("end", id)) => {
                assert!(in_flight.remove(id), "{id} ended without a start:\n{log}");
                runs.ended += 1;
            }
            Some(("timeout", _)) => runs.timed_out += 1,
            _ => panic!("unexpected log line {line:?}:\n{log}"),
        }
    }
    runs
}

/// Sends every request at once (one task each, on clones of one client)
/// and returns the responses in request order.
async fn render_concurrently(
    client: &Client,
    requests: &[ManifestRequest],
) -> Vec<ManifestResponse> {
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|request| {
            let mut client = client.clone();
            tokio::spawn(async move { client.generate_manifest(request).await })
        })
        .collect();
    let mut responses = Vec::new();
    for (task, request) in tasks.into_iter().zip(requests) {
        let response = task.await.unwrap().unwrap_or_else(|status| {
            panic!(
                "{} at {} failed: {status:?}",
                request.app_name, request.revision
            )
        });
        responses.push(response.into_inner());
    }
    responses
}

/// Every (revision, override set) pair, as indices, with its app name.
fn matrix(
    repo: &KustomizeRepo,
    sets: &[Overrides],
    app_name: impl Fn(usize, usize) -> String,
) -> Vec<(usize, usize, String)> {
    let mut cases = Vec::new();
    for r in 0..repo.revisions.len() {
        for s in 0..sets.len() {
            cases.push((r, s, app_name(r, s)));
        }
    }
    cases
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn renders_of_three_revisions_with_three_override_sets_overlap_and_each_is_exact() {
    let repo = KustomizeRepo::build(3);
    let sets = Overrides::sets();
    let gate = GatedKustomize::new();
    let mut config = common::test_config(Tls::Disabled);
    config.render.kustomize = gate.program();
    let server = server::start(config).await.expect("server starts");
    let client = common::client(&server).await;

    let cases = matrix(&repo, &sets, |r, s| format!("app-r{r}-s{s}"));
    let requests: Vec<_> = cases
        .iter()
        .map(|(r, s, app)| request(&repo.url(), &repo.revisions[*r].name, &sets[*s], app))
        .collect();
    let responses = render_concurrently(&client, &requests).await;

    // (b) Each response is exactly its own request's output.
    for ((r, s, app), response) in cases.iter().zip(&responses) {
        check(response, &repo.revisions[*r], &sets[*s], app);
        assert_eq!(
            response.commands.last().unwrap(),
            &format!(
                "{} build ./{}",
                shown(&gate.program()),
                concurrency_fixture::APP_PATH
            )
        );
    }

    // (a) The builds overlapped: OVERLAP of them were running at once.
    // Each build waits until OVERLAP have started: with renders one at a
    // time the first waits would time out and the log would never show
    // more than one build in flight.
    let log = gate.log();
    let runs = analyse(&log);
    assert_eq!(
        runs.started,
        requests.len(),
        "one build per request:\n{log}"
    );
    assert_eq!(runs.ended, requests.len(), "{log}");
    assert!(
        runs.max_in_flight >= OVERLAP,
        "at most {} builds ran at once, expected {OVERLAP}:\n{log}",
        runs.max_in_flight
    );
    assert_eq!(
        runs.timed_out, 0,
        "builds waited in vain for each other:\n{log}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_renders_of_one_app_equal_the_same_renders_one_at_a_time() {
    let repo = KustomizeRepo::build(3);
    let sets = Overrides::sets_with_none();
    // One app rendered with each override set at each revision, as when
    // its overrides or target revision change while the controller
    // refreshes.
    let cases = matrix(&repo, &sets, |_, _| "guestbook".to_string());
    let requests: Vec<_> = cases
        .iter()
        .map(|(r, s, app)| request(&repo.url(), &repo.revisions[*r].name, &sets[*s], app))
        .collect();

    let server = common::start_plaintext().await;
    let client = common::client(&server).await;
    let concurrent = render_concurrently(&client, &requests).await;
    server.shutdown().await.unwrap();

    // Again, one at a time, on a fresh server (no snapshot or view left
    // over from the concurrent renders).
    let server = common::start_plaintext().await;
    let mut client = common::client(&server).await;
    let mut sequential = Vec::new();
    for request in &requests {
        sequential.push(
            client
                .generate_manifest(request.clone())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    server.shutdown().await.unwrap();

    for (((r, s, app), concurrent), sequential) in cases.iter().zip(&concurrent).zip(&sequential) {
        check(concurrent, &repo.revisions[*r], &sets[*s], app);
        assert_eq!(
            concurrent,
            sequential,
            "revision {} with {}",
            repo.revisions[*r].name,
            sets[*s].describe()
        );
    }
    // The override sets really make different outputs.
    let distinct: HashSet<_> = concurrent.iter().map(|r| r.manifests.clone()).collect();
    assert_eq!(distinct.len(), requests.len());
}
