//! How the object stores are used: one fetch shared by concurrent
//! requests, no fetch (and no network) for a commit already present, and
//! message-size limits above tonic's 4 MiB default.

mod common;

use common::fixtures::{CountingGit, ExampleRepo, GitHttpServer, GitRepo};
use common::*;
use manifold::grpc::proto::v1alpha1::ApplicationSourceHelm;
use tonic::Code;

#[tokio::test]
async fn concurrent_requests_share_one_fetch_and_present_commits_need_none() {
    let example = ExampleRepo::build();
    let git = CountingGit::new();
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.git.git_program = git.program();
    let server = manifold::server::start(config).await.unwrap();
    let client = client(&server).await;
    let url = example.repo.url();

    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut client = client.clone();
        // Different apps and spellings of one commit: all need the same fetch.
        let (path, revision) = match i % 3 {
            0 => ("guestbook", "main".to_string()),
            1 => ("multi", example.second.clone()),
            _ => ("nested", example.second[..9].to_string()),
        };
        let request = manifest_request(&url, path, &revision);
        tasks.push(tokio::spawn(async move {
            client.generate_manifest(request).await
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap().into_inner().revision,
            example.second
        );
    }
    assert_eq!(
        git.count("fetch"),
        1,
        "one fetch for 24 concurrent requests"
    );

    // Other commits already fetched with main's history: no new fetch.
    let response = client
        .clone()
        .generate_manifest(manifest_request(&url, "guestbook", &example.first))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, example.first);
    assert_eq!(git.count("fetch"), 1);

    // With the remote gone, a full SHA still renders: it needs no network.
    let gone = tempfile::tempdir().unwrap();
    std::fs::rename(example.repo.path(), gone.path().join("moved")).unwrap();
    let ls_remotes = git.count("ls-remote");
    let response = client
        .clone()
        .generate_manifest(manifest_request(&url, "guestbook", &example.second))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.manifests.len(), 2);
    assert_eq!(git.count("ls-remote"), ls_remotes);
    // A branch name resolves from the revision cache for its period; past
    // it (here: `noRevisionCache`) it needs the remote, which now fails
    // clearly.
    client
        .clone()
        .generate_manifest(manifest_request(&url, "guestbook", "main"))
        .await
        .unwrap();
    let mut fresh = manifest_request(&url, "guestbook", "main");
    fresh.no_revision_cache = true;
    let status = client.clone().generate_manifest(fresh).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("failed to list refs"),
        "{}",
        status.message()
    );
    std::fs::rename(gone.path().join("moved"), example.repo.path()).unwrap();
}

#[tokio::test]
async fn messages_beyond_four_mib_pass_both_ways() {
    // ~6 MB of manifests in one response.
    let repo = GitRepo::new();
    let blob = "x".repeat(10_000);
    for i in 0..600 {
        repo.write(
            &format!("big/cm-{i:04}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  blob: {blob}\n"),
        );
    }
    repo.commit("big");
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let response = client
        .generate_manifest(manifest_request(&repo.url(), "big", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.manifests.len(), 600);
    assert!(response.manifests.iter().map(String::len).sum::<usize>() > 6_000_000);

    // A 5 MiB request decodes and reaches helm (which finds no chart).
    let mut request = manifest_request(&repo.url(), "big", "main");
    request.application_source.as_mut().unwrap().helm = Some(ApplicationSourceHelm {
        values: format!("blob: {}\n", "a".repeat(5 << 20)).into_bytes(),
        ..Default::default()
    });
    let status = client.generate_manifest(request).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("Chart.yaml"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn url_credentials_authenticate_without_reaching_the_command_line() {
    let parent = tempfile::tempdir().unwrap();
    let source = GitRepo::new();
    source.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: private\n",
    );
    let sha = source.commit("one");
    source.clone_bare_into(parent.path(), "private.git");
    let http = GitHttpServer::start_with_auth(parent.path(), false, Some("alice:s3cr3t:pw"));
    let git = CountingGit::new();
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.git.git_program = git.program();
    let server = manifold::server::start(config).await.unwrap();
    let mut client = client(&server).await;
    let host = http.base_url.trim_start_matches("http://");

    let good = format!("http://alice:s3cr3t%3Apw@{host}/private.git");
    let response = client
        .generate_manifest(manifest_request(&good, "app", "main"))
        .await
        .unwrap_or_else(|s| panic!("{}", s.message()))
        .into_inner();
    assert_eq!(response.revision, sha);
    assert_eq!(names(&response.manifests), ["private"]);
    assert!(git.count("ls-remote") > 0 && git.count("fetch") > 0);
    assert!(
        !git.log().contains("s3cr3t"),
        "credentials reached git's argv: {}",
        git.log()
    );

    // Caches never hold credentials, so (as in Argo CD) a cached answer is
    // served whatever a request's credentials; `noCache` goes to the remote
    // with them.
    let bad = format!("http://alice:wrong-password@{host}/private.git");
    let mut request = manifest_request(&bad, "app", "main");
    request.no_cache = true;
    let status = client.generate_manifest(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status
            .message()
            .contains(&format!("http://***@{host}/private.git")),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("wrong-password"));

    // Without credentials the server refuses, and git never prompts.
    let anonymous = format!("http://{host}/private.git");
    let mut request = manifest_request(&anonymous, "app", "main");
    request.no_cache = true;
    let status = client.generate_manifest(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
