//! GenerateManifest for directory apps, against a real server over gRPC and
//! real git repositories.

mod common;

use common::fixtures::{ExampleRepo, GitHttpServer, GitRepo};
use common::*;
use manifold::grpc::proto::repository::ResolveRevisionRequest;
use manifold::grpc::proto::v1alpha1::{
    ApplicationSource, ApplicationSourceDirectory, ApplicationSourceHelm,
};
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn renders_a_directory_app_with_tracking_and_the_resolved_revision() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    let response = client
        .generate_manifest(manifest_request(&example.repo.url(), "guestbook", "HEAD"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, example.second);
    assert_eq!(response.source_type, "Directory");
    let manifests = parse_manifests(&response.manifests);
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0]["kind"], "Deployment");
    assert_eq!(manifests[0]["spec"]["replicas"], 2);
    assert_eq!(
        manifests[0]["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
        "guestbook:apps/Deployment:default/guestbook-ui"
    );
    assert_eq!(
        manifests[1]["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
        "guestbook:/Service:default/guestbook-ui"
    );
    // Go's encoding: sorted keys, no whitespace.
    assert!(response.manifests[1]
        .starts_with(r#"{"apiVersion":"v1","kind":"Service","metadata":{"annotations":"#));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resolves_branches_tags_and_shas() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let url = example.repo.url();

    let cases = [
        ("", example.second.clone(), 2),
        ("main", example.second.clone(), 2),
        ("refs/heads/main", example.second.clone(), 2),
        ("dev", example.dev.clone(), 3),
        ("v1.0.0", example.first.clone(), 2),
        ("light", example.first.clone(), 2),
        (example.first.as_str(), example.first.clone(), 2),
        (&example.first[..7], example.first.clone(), 2),
        (&example.dev[..10], example.dev.clone(), 3),
    ];
    for (revision, expected_sha, expected_count) in cases {
        let mut request = manifest_request(&url, "guestbook", revision);
        // The request's revision wins; an empty one falls back to the
        // source's targetRevision.
        request.revision = String::new();
        request.application_source.as_mut().unwrap().target_revision = revision.to_string();
        let response = client
            .generate_manifest(request)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.revision, expected_sha, "revision {revision:?}");
        assert_eq!(
            response.manifests.len(),
            expected_count,
            "revision {revision:?}"
        );
    }
    // The annotated tag points at the first commit: one replica there.
    let response = client
        .generate_manifest(manifest_request(&url, "guestbook", "v1.0.0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        parse_manifests(&response.manifests)[0]["spec"]["replicas"],
        1
    );
}

#[tokio::test]
async fn directory_options_recurse_include_exclude() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let url = example.repo.url();

    // Not recursive: only top-level files; values.yaml is ignored as
    // non-Kubernetes YAML, skipped.yaml carries the skip marker, .txt is
    // not a manifest extension.
    let response = client
        .generate_manifest(manifest_request(&url, "nested", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["a"]);

    let recurse = ApplicationSourceDirectory {
        recurse: true,
        ..Default::default()
    };
    let response = client
        .generate_manifest(with_directory(
            manifest_request(&url, "nested", "main"),
            recurse.clone(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["a", "b", "c", "d"]);

    let double_star = ApplicationSourceDirectory {
        include: "**/*.yaml".into(),
        ..recurse.clone()
    };
    let response = client
        .generate_manifest(with_directory(
            manifest_request(&url, "nested", "main"),
            double_star,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(&response.manifests),
        ["d"],
        "gobwas `**` is `*`: a `/` is required"
    );

    let include = ApplicationSourceDirectory {
        include: "*.yaml".into(),
        ..recurse.clone()
    };
    let response = client
        .generate_manifest(with_directory(
            manifest_request(&url, "nested", "main"),
            include,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(&response.manifests),
        ["a", "d"],
        "`*` crosses directories, as in Argo CD"
    );

    let include_exclude = ApplicationSourceDirectory {
        include: "{*.yml,*.json,sub/deeper/*}".into(),
        exclude: "*/c.json".into(),
        ..recurse.clone()
    };
    let response = client
        .generate_manifest(with_directory(
            manifest_request(&url, "nested", "main"),
            include_exclude,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["b", "d"]);

    let bad_glob = ApplicationSourceDirectory {
        include: "[".into(),
        ..recurse
    };
    let status = client
        .generate_manifest(with_directory(
            manifest_request(&url, "nested", "main"),
            bad_glob,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("include glob \"[\""),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn multi_document_lists_crds_and_tracking_methods() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let url = example.repo.url();

    let response = client
        .generate_manifest(manifest_request(&url, "multi", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(&response.manifests),
        ["first", "listed-1", "listed-2", "widgets.example.com"]
    );
    let manifests = parse_manifests(&response.manifests);
    assert_eq!(
        manifests[0]["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
        "guestbook:/ConfigMap:other/first"
    );
    assert!(
        manifests[3]["metadata"].get("annotations").is_none(),
        "CRDs are not tracked"
    );

    let mut request = manifest_request(&url, "multi", "main");
    request.tracking_method = "label".into();
    let manifests = parse_manifests(
        &client
            .generate_manifest(request)
            .await
            .unwrap()
            .into_inner()
            .manifests,
    );
    assert_eq!(
        manifests[1]["metadata"]["labels"],
        json!({"app.kubernetes.io/instance": "guestbook"})
    );
    assert!(manifests[1]["metadata"].get("annotations").is_none());

    let mut request = manifest_request(&url, "multi", "main");
    request.tracking_method = "annotation+label".into();
    request.installation_id = "prod-1".into();
    let manifests = parse_manifests(
        &client
            .generate_manifest(request)
            .await
            .unwrap()
            .into_inner()
            .manifests,
    );
    assert_eq!(
        manifests[2]["metadata"]["labels"]["app.kubernetes.io/instance"],
        "guestbook"
    );
    assert_eq!(
        manifests[2]["metadata"]["annotations"]["argocd.argoproj.io/installation-id"],
        "prod-1"
    );

    // Without an app name nothing is tracked.
    let mut request = manifest_request(&url, "multi", "main");
    request.app_name = String::new();
    let manifests = parse_manifests(
        &client
            .generate_manifest(request)
            .await
            .unwrap()
            .into_inner()
            .manifests,
    );
    assert!(manifests[0]["metadata"].get("annotations").is_none());
}

#[tokio::test]
async fn symlinks_inside_the_repository_are_followed() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let response = client
        .generate_manifest(manifest_request(&example.repo.url(), "linked", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["guestbook-ui"]);
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_the_server_keeps_serving() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let url = example.repo.url();

    let expect = |result: Result<tonic::Response<_>, tonic::Status>, code: Code, text: &str| {
        let status = result.expect_err("request must fail");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(text),
            "{:?} does not contain {text:?}",
            status.message()
        );
        assert!(
            !status.message().contains("/tmp/manifold-"),
            "leaks a local path: {}",
            status.message()
        );
        status
    };

    let cases = [
        (
            "..",
            "main",
            Code::InvalidArgument,
            "..: app path outside root",
        ),
        (
            "guestbook/../../x",
            "main",
            Code::InvalidArgument,
            "app path outside root",
        ),
        (
            "/etc",
            "main",
            Code::InvalidArgument,
            "/etc: app path is absolute",
        ),
        (
            "escape",
            "main",
            Code::InvalidArgument,
            "escape: app path outside root",
        ),
        (
            "no/such/app",
            "main",
            Code::InvalidArgument,
            "no/such/app: app path does not exist",
        ),
        (
            "README.md",
            "main",
            Code::InvalidArgument,
            "app path is not a directory",
        ),
        (
            "guestbook",
            "no-such-branch",
            Code::NotFound,
            "'no-such-branch'",
        ),
        (
            "guestbook",
            "deadbeefdeadbeef",
            Code::NotFound,
            "'deadbeefdeadbeef'",
        ),
        (
            "broken",
            "main",
            Code::FailedPrecondition,
            "Failed to unmarshal \"bad.yaml\"",
        ),
        (
            "broken-json",
            "main",
            Code::FailedPrecondition,
            "Found multiple objects in \"two.json\"",
        ),
        (
            "leaky",
            "main",
            Code::FailedPrecondition,
            "illegal filepath in symlink at \"passwd.yaml\"",
        ),
    ];
    for (path, revision, code, text) in cases {
        expect(
            client
                .generate_manifest(manifest_request(&url, path, revision))
                .await,
            code,
            text,
        );
    }

    let mut no_repo = manifest_request(&url, "guestbook", "main");
    no_repo.repo = None;
    expect(
        client.generate_manifest(no_repo).await,
        Code::InvalidArgument,
        "must pass a valid repo",
    );

    // An unreachable repository is named, with its password redacted.
    let secret_url = "http://alice:hunter2@127.0.0.1:1/nothing.git";
    let status = expect(
        client
            .generate_manifest(manifest_request(secret_url, "guestbook", "main"))
            .await,
        Code::Internal,
        "http://***@127.0.0.1:1/nothing.git",
    );
    assert!(!status.message().contains("hunter2"));
    let missing = format!("file://{}/does-not-exist", example.repo.path().display());
    expect(
        client
            .generate_manifest(manifest_request(&missing, "guestbook", "main"))
            .await,
        Code::Internal,
        "does-not-exist",
    );

    // helm follows symlinks anywhere, so a Helm render of a repository
    // with a link out of it is refused, as in Argo CD.
    let mut helm = manifest_request(&url, "guestbook", "main");
    helm.application_source.as_mut().unwrap().helm = Some(ApplicationSourceHelm::default());
    expect(
        client.generate_manifest(helm).await,
        Code::FailedPrecondition,
        "repository contains out-of-bounds symlinks. file: escape",
    );

    // Still serving.
    let response = client
        .generate_manifest(manifest_request(&url, "guestbook", "main"))
        .await
        .unwrap();
    assert_eq!(response.into_inner().manifests.len(), 2);
}

#[tokio::test]
async fn new_commits_are_fetched_and_concurrent_requests_share_the_work() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let client = client(&server).await;
    let url = example.repo.url();

    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = client.clone();
        let request = manifest_request(&url, "guestbook", "main");
        tasks.push(tokio::spawn(async move {
            client.generate_manifest(request).await
        }));
    }
    for task in tasks {
        let response = task.await.unwrap().unwrap().into_inner();
        assert_eq!(response.revision, example.second);
    }

    // A new commit on main: within the revision cache period `main`
    // still means the commit listed before; a refresh (`noRevisionCache`,
    // as the controller sends on a hard refresh) sees the new one.
    example.repo.write(
        "guestbook/new.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: new\n",
    );
    let third = example.repo.commit("add config map");
    let response = client
        .clone()
        .generate_manifest(manifest_request(&url, "guestbook", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, example.second);
    let mut refresh = manifest_request(&url, "guestbook", "main");
    refresh.no_revision_cache = true;
    let response = client
        .clone()
        .generate_manifest(refresh)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, third);
    assert_eq!(response.manifests.len(), 3);
}

#[tokio::test]
async fn serves_over_tls_with_a_self_signed_certificate() {
    let example = ExampleRepo::build();
    let tls = manifold::server::Tls::Enabled {
        cert_path: "/nonexistent/tls.crt".into(),
        key_path: "/nonexistent/tls.key".into(),
    };
    let server = manifold::server::start(test_config(tls)).await.unwrap();
    let pem = server.certificate_pem().unwrap().to_string();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let mut client = tls_client(&server).await;
    let response = client
        .generate_manifest(manifest_request(&example.repo.url(), "guestbook", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.manifests.len(), 2);
}

#[tokio::test]
async fn serves_over_tls_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, certificate_pem) =
        common::fixtures::write_repo_server_tls(dir.path());
    let tls = manifold::server::Tls::Enabled {
        cert_path,
        key_path,
    };
    let server = manifold::server::start(test_config(tls)).await.unwrap();
    assert_eq!(server.certificate_pem(), Some(certificate_pem.as_str()));
    let example = ExampleRepo::build();
    let mut client = tls_client(&server).await;
    let response = client
        .generate_manifest(manifest_request(&example.repo.url(), "guestbook", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.source_type, "Directory");
}

#[tokio::test]
async fn fetches_over_smart_http_and_https() {
    let parent = tempfile::tempdir().unwrap();
    let source = GitRepo::new();
    source.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: over-http\n",
    );
    let sha = source.commit("one");
    source.clone_bare_into(parent.path(), "served.git");

    for https in [false, true] {
        let http = GitHttpServer::start(parent.path(), https);
        let mut config = test_config(manifold::server::Tls::Disabled);
        if let Some(ca) = &http.ca_pem_path {
            // The operator's CA bundle for this host (per-repo CAs arrive
            // with credentials support).
            config
                .exec
                .base_env
                .push(("GIT_SSL_CAINFO".into(), ca.clone().into()));
        }
        let server = manifold::server::start(config).await.unwrap();
        let mut client = client(&server).await;
        let url = format!("{}/served.git", http.base_url);
        let response = client
            .generate_manifest(manifest_request(&url, "app", "main"))
            .await
            .unwrap_or_else(|s| panic!("{url}: {}", s.message()))
            .into_inner();
        assert_eq!(response.revision, sha);
        assert_eq!(names(&response.manifests), ["over-http"]);
    }
}

#[tokio::test]
async fn lfs_pointers_gitlinks_overrides_and_semver_revisions() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let url = example.repo.url();
    // An LFS pointer without enableLfs is not a manifest, and the error
    // says what to do.
    let status = client
        .generate_manifest(manifest_request(&url, "lfs", "main"))
        .await
        .expect_err("a pointer is not a manifest");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("enableLfs"),
        "{}",
        status.message()
    );
    // Override files are merged (here: `recurse: true`).
    let response = client
        .generate_manifest(manifest_request(&url, "overrides", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["o"]);
    let recursive = ApplicationSourceDirectory {
        recurse: true,
        ..Default::default()
    };
    // A gitlink `.gitmodules` does not name is an empty directory, as in
    // a checkout: recursing finds nothing there, and the directory itself
    // renders nothing.
    let response = client
        .generate_manifest(with_directory(
            manifest_request(&url, "withsub", "main"),
            recursive,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["s"]);
    let response = client
        .generate_manifest(manifest_request(&url, "withsub/vendored", "main"))
        .await
        .unwrap()
        .into_inner();
    assert!(response.manifests.is_empty());
    // A semver constraint names the highest matching tag (v1.0.0).
    let response = client
        .generate_manifest(manifest_request(&url, "guestbook", "1.x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, example.first);
    let response = client
        .generate_manifest(manifest_request(&url, "guestbook", ">=1.0.0 <2.0.0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, example.first);
    // tagPrefix: only tags with the prefix count, compared without it.
    example.repo.tag("app/v1.2.0").tag("app/2.0.0-rc.1");
    let head = example.repo.head();
    let prefixed = |revision: &str| {
        let mut request = manifest_request(&url, "guestbook", revision);
        request.application_source.as_mut().unwrap().tag_prefix = "app/".into();
        // The tags are newer than the cached listing.
        request.no_revision_cache = true;
        request
    };
    for revision in ["1.x", ">=1.1.0 <2.0.0", "v1.2.0"] {
        let response = client
            .generate_manifest(prefixed(revision))
            .await
            .unwrap_or_else(|s| panic!("{revision}: {}", s.message()))
            .into_inner();
        assert_eq!(response.revision, head, "{revision}");
    }
    // An exact version gets the prefix: `app/1.2.0` is no tag.
    let status = client
        .generate_manifest(prefixed("1.2.0"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(
        status.message().contains("app/1.2.0"),
        "{}",
        status.message()
    );
    // Without the prefix, prefixed tags are not versions.
    let response = client
        .generate_manifest(manifest_request(&url, "guestbook", "1.x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, example.first);
    // ResolveRevision applies the source's prefix too.
    let app = manifold::grpc::proto::v1alpha1::Application {
        spec: Some(manifold::grpc::proto::v1alpha1::ApplicationSpec {
            source: Some(ApplicationSource {
                repo_url: url.clone(),
                path: "guestbook".into(),
                tag_prefix: "app/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resolved = client
        .resolve_revision(ResolveRevisionRequest {
            repo: repo(&url),
            app: Some(app),
            ambiguous_revision: "1.x".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.revision, head);
    assert_eq!(resolved.ambiguous_revision, format!("1.x ({head})"));
}

#[tokio::test]
async fn symlink_loops_fail_and_multi_source_entries_without_path_render_nothing() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let url = example.repo.url();
    let status = client
        .generate_manifest(manifest_request(&url, "loop", "main"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("failed to evaluate symlink at \"a.yaml\""),
        "{}",
        status.message()
    );

    for ref_name in ["values", ""] {
        let mut request = manifest_request(&url, "", "dev");
        request.has_multiple_sources = true;
        request.application_source.as_mut().unwrap().r#ref = ref_name.to_string();
        let response = client
            .generate_manifest(request)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.revision, example.dev);
        assert!(response.manifests.is_empty());
        assert_eq!(response.source_type, "");
    }
}

#[tokio::test]
async fn directory_apps_over_the_combined_size_limit_are_refused() {
    let repo = GitRepo::new();
    let config_map = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
    };
    let one = config_map("one");
    repo.write("app/one.yaml", &one)
        .write("app/two.yaml", &config_map("two"))
        // Neither skipped files nor Jsonnet count against the limit.
        .write(
            "app/skipped.yaml",
            &format!("# +argocd:skip-file-rendering\n{}", "#".repeat(500)),
        )
        .write(
            "app/three.jsonnet",
            &format!(
                "{{apiVersion: 'v1', kind: 'ConfigMap', metadata: {{name: 'three'}}}} // {}",
                "x".repeat(500)
            ),
        );
    repo.commit("three config maps");
    let two_files = 2 * one.len() as u64;

    for (limit, fits) in [(two_files, true), (two_files - 1, false)] {
        let mut config = test_config(manifold::server::Tls::Disabled);
        config.pipeline.max_combined_directory_manifests_bytes = Some(limit);
        let server = manifold::server::start(config).await.unwrap();
        let mut client = client(&server).await;
        let result = client
            .generate_manifest(manifest_request(&repo.url(), "app", "HEAD"))
            .await;
        if fits {
            let response = result.unwrap().into_inner();
            assert_eq!(names(&response.manifests), ["one", "three", "two"]);
        } else {
            let status = result.unwrap_err();
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert!(
                status
                    .message()
                    .contains("exceeded max combined manifest file size")
                    && status.message().contains(&format!("{limit} bytes")),
                "{}",
                status.message()
            );
        }
        server.shutdown().await.unwrap();
    }
}

/// The value of an unlabelled metric on the server's `/metrics` (read on
/// a blocking thread: the server runs on this test's runtime).
async fn metric(server: &manifold::server::Server, name: &str) -> f64 {
    let addr = server.http_addr();
    let text = tokio::task::spawn_blocking(move || common::process::http_get(addr, "/metrics"))
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

#[tokio::test]
async fn a_self_contained_directory_app_materialises_only_its_directory() {
    let repo = GitRepo::new();
    let config_map =
        |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
    repo.write("apps/a/cm.yaml", &config_map("a"))
        .write("apps/b/cm.yaml", &config_map("b"))
        .write("apps/b/nested/cm.yaml", &config_map("b-nested"))
        .symlink("apps/linked/cm.yaml", "../a/cm.yaml")
        .write(
            "chart/Chart.yaml",
            "apiVersion: v2\nname: chart\nversion: 0.1.0\n",
        );
    for i in 0..20 {
        repo.write(&format!("other/file-{i}.txt"), "unrelated\n");
    }
    repo.commit("apps, a chart and unrelated files");
    let whole_tree = 5 + 20;

    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let render = |path: &str, recurse: bool| {
        let request = with_directory(
            manifest_request(&repo.url(), path, "HEAD"),
            ApplicationSourceDirectory {
                recurse,
                ..Default::default()
            },
        );
        let mut client = client.clone();
        async move {
            names(
                &client
                    .generate_manifest(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .manifests,
            )
        }
    };
    assert_eq!(render("apps/a", false).await, ["a"]);
    assert_eq!(
        metric(&server, "manifold_snapshot_exported_files_total").await,
        1.0
    );
    assert_eq!(render("apps/b", true).await, ["b", "b-nested"]);
    assert_eq!(
        metric(&server, "manifold_snapshot_exported_files_total").await,
        3.0
    );
    assert_eq!(metric(&server, "manifold_snapshots").await, 2.0);
    // A symlink may point anywhere in the repository: the whole tree.
    assert_eq!(render("apps/linked", false).await, ["a"]);
    assert_eq!(
        metric(&server, "manifold_snapshot_exported_files_total").await,
        (3 + whole_tree) as f64
    );
    // The chart shares that whole-tree snapshot.
    client
        .generate_manifest(manifest_request(&repo.url(), "chart", "HEAD"))
        .await
        .unwrap();
    assert_eq!(
        metric(&server, "manifold_snapshot_exported_files_total").await,
        (3 + whole_tree) as f64
    );
    server.shutdown().await.unwrap();
}
