//! The disk under `$TMPDIR`: a restart reuses the object stores it left
//! (no fetch for a commit it has), and a disk budget evicts the least
//! recently used store, after which requests still work.

mod common;

use std::time::Duration;

use common::fixtures::{CountingGit, GitRepo};
use common::*;
use manifold::server::{self, Tls};

fn persistent(tmp: &std::path::Path, git: &CountingGit) -> server::Config {
    let mut config = test_config(Tls::Disabled);
    config.temp_dir = tmp.to_path_buf();
    config.persistent_work_dir = true;
    config.git.git_program = git.program();
    config
}

fn repo() -> (GitRepo, String) {
    let repo = GitRepo::new();
    repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n",
    );
    let sha = repo.commit("app");
    (repo, sha)
}

#[tokio::test]
async fn a_restart_reuses_the_object_stores_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, sha) = repo();
    let url = repo.url();
    let git = CountingGit::new();

    let first = server::start(persistent(tmp.path(), &git)).await.unwrap();
    let mut client = client(&first).await;
    client
        .generate_manifest(manifest_request(&url, "app", &sha))
        .await
        .unwrap();
    assert_eq!(git.count("fetch"), 1);
    first.shutdown().await.unwrap();

    // The next start takes the same work directory: the commit is there.
    let second = server::start(persistent(tmp.path(), &git)).await.unwrap();
    let mut client = common::client(&second).await;
    let response = client
        .generate_manifest(manifest_request(&url, "app", &sha))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["kept"]);
    assert_eq!(git.count("fetch"), 1, "no fetch after the restart");
    second.shutdown().await.unwrap();
    assert!(tmp.path().join("manifold/repos").is_dir());
}

#[tokio::test]
async fn the_disk_budget_evicts_unused_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, sha) = repo();
    let url = repo.url();
    let git = CountingGit::new();
    let mut config = persistent(tmp.path(), &git);
    config.disk_budget = Some(1);
    config.janitor_interval = Duration::from_millis(100);
    let server = server::start(config).await.unwrap();
    let mut client = client(&server).await;
    client
        .generate_manifest(manifest_request(&url, "app", &sha))
        .await
        .unwrap();
    let addr = server.http_addr();
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let mut evicted = 0.0;
    for _ in 0..100 {
        let text = tokio::task::spawn_blocking(move || common::process::http_get(addr, "/metrics"))
            .await
            .unwrap();
        evicted = metric(&text, "manifold_disk_evictions_total{kind=\"stores\"}");
        if evicted >= 1.0 {
            assert!(text.contains("manifold_disk_budget_bytes 1"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(evicted >= 1.0, "the store was not evicted");
    // The next request fetches again and is answered.
    let mut request = manifest_request(&url, "app", &sha);
    request.no_cache = true;
    let response = client
        .generate_manifest(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["kept"]);
    assert_eq!(git.count("fetch"), 2);
    server.shutdown().await.unwrap();
}
