//! A generated monorepo (directory, Helm and Kustomize apps sharing a
//! base): `UpdateRevisionForPaths` with relative, absolute and glob refresh
//! paths, and push webhooks that drop the revision cache (on every replica,
//! through Redis) and pre-render exactly the apps whose inputs changed.

mod common;

use std::time::Duration;

use common::fixtures::{GitRepo, RedisServer};
use common::process::{http_post, sample};
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use manifold::grpc::proto::repository::{ManifestRequest, UpdateRevisionForPathsRequest};
use manifold::server::{self, Server, Tls};
use tonic::Code;

const DIR_APPS: usize = 20;
const HELM_APPS: usize = 5;
const KUSTOMIZE_APPS: usize = 10;

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

/// The monorepo: `apps/dir-NN` (one ConfigMap each), `apps/helm-NN` (a
/// chart each), `apps/kust-NN` (overlays of `bases/common`), a README.
fn monorepo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write("README.md", "monorepo\n")
        .write("bases/common/kustomization.yaml", "resources:\n- cm.yaml\n")
        .write("bases/common/cm.yaml", &config_map("common", "v1"));
    for i in 0..DIR_APPS {
        repo.write(
            &format!("apps/dir-{i:02}/cm.yaml"),
            &config_map(&format!("dir-{i:02}"), "v1"),
        );
    }
    for i in 0..HELM_APPS {
        let dir = format!("apps/helm-{i:02}");
        repo.write(
            &format!("{dir}/Chart.yaml"),
            &format!("apiVersion: v2\nname: helm-{i:02}\nversion: 1.0.0\n"),
        )
        .write(&format!("{dir}/values.yaml"), "value: v1\n")
        .write(
            &format!("{dir}/templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  value: {{ .Values.value | quote }}\n",
        );
    }
    for i in 0..KUSTOMIZE_APPS {
        repo.write(
            &format!("apps/kust-{i:02}/kustomization.yaml"),
            &format!("namePrefix: k{i:02}-\nresources:\n- ../../bases/common\n"),
        );
    }
    repo.commit("monorepo");
    repo
}

/// Every app's path.
fn apps() -> Vec<String> {
    (0..DIR_APPS)
        .map(|i| format!("apps/dir-{i:02}"))
        .chain((0..HELM_APPS).map(|i| format!("apps/helm-{i:02}")))
        .chain((0..KUSTOMIZE_APPS).map(|i| format!("apps/kust-{i:02}")))
        .collect()
}

/// The controller's request for the app at `path` (its name is the last
/// path segment) at `revision`.
fn app_request(url: &str, path: &str, revision: &str) -> ManifestRequest {
    let mut request = manifest_request(url, path, revision);
    request.app_name = path.rsplit('/').next().unwrap().to_string();
    request.application_source.as_mut().unwrap().target_revision = "main".to_string();
    request
}

/// The controller's `UpdateRevisionForPaths` for the app at `path`, synced
/// at `synced`, now at `revision`, with these refresh paths.
fn update_request(
    url: &str,
    path: &str,
    synced: &str,
    revision: &str,
    paths: &[&str],
) -> UpdateRevisionForPathsRequest {
    let request = app_request(url, path, revision);
    UpdateRevisionForPathsRequest {
        repo: request.repo,
        app_label_key: request.app_label_key,
        app_name: request.app_name,
        namespace: request.namespace,
        application_source: request.application_source,
        tracking_method: request.tracking_method,
        synced_revision: synced.to_string(),
        revision: revision.to_string(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// A helm that logs each `helm template` (its release name) to `dir/helm.log`.
fn logging_helm(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("helm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = template ] && echo \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            dir.join("helm.log").display(),
            on_path("helm").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Lines of a tool log (empty when the tool never ran).
fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || common::process::http_get(addr, "/metrics"))
        .await
        .unwrap()
}

/// A server whose helm and kustomize log their runs into `tools`.
async fn start_logging(tools: &std::path::Path, webhook: manifold::webhook::Config) -> Server {
    let mut config = test_config(Tls::Disabled);
    config.render.helm = logging_helm(tools);
    config.render.kustomize = logging_kustomize(tools);
    config.webhook = webhook;
    server::start(config).await.expect("server starts")
}

#[tokio::test]
async fn update_revision_for_paths_follows_refresh_paths() {
    let repo = monorepo();
    let url = repo.url();
    let c1 = repo.head();
    let tools = tempfile::tempdir().unwrap();
    let server = start_logging(tools.path(), Default::default()).await;
    let mut client = client(&server).await;

    // The controller synced every app at c1.
    let mut synced = std::collections::HashMap::new();
    for path in apps() {
        let response = client
            .generate_manifest(app_request(&url, &path, &c1))
            .await
            .unwrap()
            .into_inner();
        synced.insert(path, response.manifests);
    }

    // A commit touching one directory app.
    repo.write("apps/dir-03/cm.yaml", &config_map("dir-03", "v2"));
    let c2 = repo.commit("change dir-03");
    for path in apps() {
        // Each app declares its own directory (`.`, relative).
        let response = client
            .update_revision_for_paths(update_request(&url, &path, &c1, "main", &[&path]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.changes, path == "apps/dir-03", "{path}");
        assert_eq!(response.revision, c2, "{path}: the resolved revision");
    }

    // Unchanged apps had their renders moved to c2: their next request is
    // a cache hit at c2 with c1's manifests, and renders nothing.
    let rendered = |text: &str| {
        sample(
            text,
            r#"manifold_manifest_answers_total{served="rendered"}"#,
        )
    };
    let before = metrics(server.http_addr()).await;
    let (helm_runs, kustomize_runs) = (
        log_lines(&tools.path().join("helm.log")).len(),
        log_lines(&tools.path().join("builds")).len(),
    );
    for path in apps().into_iter().filter(|p| p != "apps/dir-03") {
        let response = client
            .generate_manifest(app_request(&url, &path, "main"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.revision, c2, "{path}");
        assert_eq!(response.manifests, synced[&path], "{path}");
    }
    let after = metrics(server.http_addr()).await;
    assert_eq!(
        rendered(&after),
        rendered(&before),
        "no render for moved apps"
    );
    assert_eq!(
        sample(
            &after,
            r#"manifold_manifest_answers_total{served="request_key"}"#
        ) - sample(
            &before,
            r#"manifold_manifest_answers_total{served="request_key"}"#
        ),
        (apps().len() - 1) as f64,
        "each answered under its own key at c2"
    );
    assert_eq!(log_lines(&tools.path().join("helm.log")).len(), helm_runs);
    assert_eq!(
        log_lines(&tools.path().join("builds")).len(),
        kustomize_runs
    );

    // The shared base changes. A Kustomize app that declares it (relative
    // `../../bases/common`) changed; one declaring only its own directory
    // did not (Argo CD trusts the annotation); an absolute path and a
    // glob behave the same.
    repo.write("bases/common/cm.yaml", &config_map("common", "v2"));
    let c3 = repo.commit("change the base");
    // The refresh paths are what the controller computes from each app's
    // annotation (Argo CD's GetSourceRefreshPaths, mirrored by
    // `refresh_paths`).
    let cases = [
        ("apps/kust-00", ".;../../bases/common", true),
        ("apps/kust-01", ".", false),
        ("apps/kust-02", "/bases/common", true),
        ("apps/kust-03", "/bases/*/cm.yaml", true),
        ("apps/kust-04", "/bases/*/other.yaml; .", false),
        ("apps/kust-05", "../../bases/**/cm.yaml", true),
        ("apps/kust-06", "../../bases/common/cm.yaml", true),
        ("apps/kust-07", "/", true),
    ];
    for (path, annotation, expected) in cases {
        let paths = manifold::source::refresh::refresh_paths(path, annotation);
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let response = client
            .update_revision_for_paths(update_request(&url, path, &c2, &c3, &paths))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.changes, expected,
            "{path} with {annotation:?} ({paths:?})"
        );
        assert_eq!(response.revision, c3);
    }
    // Globs match one segment: a nested file is not matched by `*`.
    client
        .generate_manifest(app_request(&url, "apps/dir-05", &c3))
        .await
        .unwrap();
    repo.write("apps/dir-05/nested/extra.yaml", &config_map("extra", "v1"));
    let c4 = repo.commit("nested file");
    for (paths, expected) in [
        (&["apps/dir-05/*.yaml"][..], false),
        (&["apps/dir-05/*/*.yaml"][..], true),
        (&["apps/dir-05"][..], true),
        (&["apps/dir-0[0-4]/*/*.yaml"][..], false),
        (&["apps/dir-0[5-9]/*/*.yaml"][..], true),
        // A glob is matched against whole file paths: one naming a
        // directory matches nothing below it (as in Argo CD).
        (&["apps/dir-0[5-9]"][..], false),
        (&["apps/dir-05/nested/extra.yaml"][..], true),
    ] {
        let response = client
            .update_revision_for_paths(update_request(&url, "apps/dir-05", &c3, &c4, paths))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.changes, expected, "{paths:?}");
    }

    // The comparison of a pair is computed once.
    let before = metrics(server.http_addr()).await;
    client
        .update_revision_for_paths(update_request(&url, "apps/dir-05", &c3, &c4, &["x"]))
        .await
        .unwrap();
    let after = metrics(server.http_addr()).await;
    let hits = |text: &str| {
        sample(
            text,
            r#"manifold_cache_lookups_total{kind="changes",result="memory"}"#,
        )
    };
    assert_eq!(
        hits(&after) - hits(&before),
        1.0,
        "the diff came from the cache"
    );

    // No paths: changed, revision not resolved (as Argo CD answers).
    let response = client
        .update_revision_for_paths(update_request(&url, "apps/dir-01", &c1, "main", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(response.changes);
    assert_eq!(response.revision, "");
    // Same revision: unchanged.
    let response = client
        .update_revision_for_paths(update_request(
            &url,
            "apps/dir-01",
            &c4,
            &c4,
            &["apps/dir-01"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.changes);
    // A synced commit that no longer exists: regenerate rather than fail
    // the reconcile.
    let gone = "0123456789abcdef0123456789abcdef01234567";
    let response = client
        .update_revision_for_paths(update_request(
            &url,
            "apps/dir-01",
            gone,
            &c4,
            &["apps/dir-01"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(response.changes);
    assert_eq!(response.revision, c4);
    // A new revision that does not exist is the caller's error.
    let err = client
        .update_revision_for_paths(update_request(
            &url,
            "apps/dir-01",
            &c1,
            "no-such-branch",
            &["apps/dir-01"],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("no-such-branch"),
        "{}",
        err.message()
    );
    // No repository.
    let mut request = update_request(&url, "apps/dir-01", &c1, "main", &["apps/dir-01"]);
    request.repo = None;
    let err = client.update_revision_for_paths(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // An app never rendered at its synced commit: nothing to move, so it
    // must be generated.
    let mut request = update_request(&url, "apps/dir-07", &c3, &c4, &["apps/dir-07"]);
    request.app_name = "never-rendered".to_string();
    let response = client
        .update_revision_for_paths(request)
        .await
        .unwrap()
        .into_inner();
    assert!(response.changes, "no cached render to move");
    // The server still serves.
    client
        .generate_manifest(app_request(&url, "apps/dir-03", "main"))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn github_push(url: &str, before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "repository": {
            "html_url": url,
            "clone_url": url,
            "default_branch": "main",
        },
        "commits": [],
    }))
    .unwrap()
}

async fn post(
    addr: std::net::SocketAddr,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_post(addr, "/api/webhook", &headers, &body)
    })
    .await
    .unwrap()
}

/// Waits until the server has handled `count` pushes in total.
async fn pushes_processed(addr: std::net::SocketAddr, count: f64) {
    for _ in 0..600 {
        if sample(
            &metrics(addr).await,
            "manifold_webhook_pushes_processed_total",
        ) >= count
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the push was not handled within a minute");
}

#[tokio::test]
async fn a_github_push_prerenders_exactly_the_apps_whose_inputs_changed() {
    let repo = monorepo();
    let url = repo.url();
    let c1 = repo.head();
    let tools = tempfile::tempdir().unwrap();
    let secret = "webhook-s3cret";
    let server = start_logging(
        tools.path(),
        manifold::webhook::Config {
            secrets: manifold::webhook::providers::Secrets {
                github: Some(manifold::config::Secret(secret.to_string())),
                ..Default::default()
            },
            max_payload_bytes: 64 << 10,
        },
    )
    .await;
    let mut client = client(&server).await;
    let http = server.http_addr();
    for path in apps() {
        let response = client
            .generate_manifest(app_request(&url, &path, "main"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.revision, c1);
    }
    let helm_log = tools.path().join("helm.log");
    let kustomize_log = tools.path().join("builds");
    assert_eq!(log_lines(&helm_log).len(), HELM_APPS);
    assert_eq!(log_lines(&kustomize_log).len(), KUSTOMIZE_APPS);

    // One commit changes a chart's values, one overlay and the README.
    repo.write("apps/helm-02/values.yaml", "value: v2\n")
        .write(
            "apps/kust-04/kustomization.yaml",
            "namePrefix: k04-\ncommonLabels:\n  changed: \"yes\"\nresources:\n- ../../bases/common\n",
        )
        .write("apps/dir-07/cm.yaml", &config_map("dir-07", "v2"))
        .write("README.md", "monorepo, changed\n");
    let c2 = repo.commit("change three apps and the README");
    let body = github_push(&url, &c1, &c2);

    // A bad signature is refused and changes nothing: the revision cache
    // still answers c1.
    let (status, text) = post(
        http,
        vec![
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", github_signature("wrong", &body)),
            ("Content-Type", "application/json".into()),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(!text.contains(secret));
    // Unsigned: refused too.
    let (status, _) = post(http, vec![("X-GitHub-Event", "push".into())], body.clone()).await;
    assert_eq!(status, 401);
    // Too large.
    let mut huge = body.clone();
    huge.resize(256 << 10, b' ');
    let (status, text) = post(
        http,
        vec![
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", github_signature(secret, &huge)),
        ],
        huge,
    )
    .await;
    assert_eq!(status, 413, "{text}");
    // Not a webhook at all.
    let (status, _) = post(http, vec![], b"{}".to_vec()).await;
    assert_eq!(status, 400);
    let response = client
        .generate_manifest(app_request(&url, "apps/dir-00", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, c1, "refused webhooks changed nothing");
    assert_eq!(
        sample(
            &metrics(http).await,
            "manifold_webhook_pushes_processed_total"
        ),
        0.0
    );

    // The signed push.
    let (status, text) = post(
        http,
        vec![
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", github_signature(secret, &body)),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    pushes_processed(http, 1.0).await;
    let text = metrics(http).await;
    assert_eq!(
        sample(
            &text,
            r#"manifold_webhook_prerenders_total{outcome="rendered"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"manifold_webhook_prerenders_total{outcome="reused"}"#
        ),
        (apps().len() - 3) as f64
    );
    assert_eq!(
        sample(&text, "manifold_webhook_refs_invalidated_total"),
        1.0
    );
    // The tools ran for the changed Helm and Kustomize apps only.
    assert_eq!(log_lines(&helm_log).len(), HELM_APPS + 1);
    assert!(log_lines(&helm_log).last().unwrap().contains("helm-02"));
    assert_eq!(log_lines(&kustomize_log).len(), KUSTOMIZE_APPS + 1);
    assert!(log_lines(&kustomize_log)
        .last()
        .unwrap()
        .ends_with("apps/kust-04"));

    // The controller's next requests: every app at c2, no render at all.
    let rendered = sample(
        &text,
        r#"manifold_manifest_answers_total{served="rendered"}"#,
    );
    for path in apps() {
        let response = client
            .generate_manifest(app_request(&url, &path, "main"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.revision, c2, "{path}");
    }
    let text = metrics(http).await;
    assert_eq!(
        sample(
            &text,
            r#"manifold_manifest_answers_total{served="rendered"}"#
        ),
        rendered,
        "every request after the push was a cache hit"
    );
    assert_eq!(log_lines(&helm_log).len(), HELM_APPS + 1);
    assert_eq!(log_lines(&kustomize_log).len(), KUSTOMIZE_APPS + 1);
    assert_eq!(
        sample(
            &text,
            r#"manifold_webhook_requests_total{provider="github",result="unauthorized"}"#
        ),
        2.0
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_push_received_by_one_replica_invalidates_the_others() {
    let redis = RedisServer::start();
    let repo = monorepo();
    let url = repo.url();
    let c1 = repo.head();
    let secret = "shared-s3cret";
    let env = [("MANIFOLD_WEBHOOK_GITHUB_SECRET", secret)];
    let address = redis.address();
    let args = ["--disable-tls", "--redis", &address];
    let a = common::process::start(&args, &env);
    let b = common::process::start(&args, &env);
    let mut client_a = manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient::connect(format!("http://{}", a.grpc)).await.unwrap();
    let mut client_b = manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient::connect(format!("http://{}", b.grpc)).await.unwrap();
    for client in [&mut client_a, &mut client_b] {
        let response = client
            .generate_manifest(app_request(&url, "apps/dir-01", "main"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.revision, c1);
    }
    repo.write("apps/dir-01/cm.yaml", &config_map("dir-01", "v2"));
    let c2 = repo.commit("change dir-01");
    // The revision cache still says c1 on B (and in Redis).
    let response = client_b
        .generate_manifest(app_request(&url, "apps/dir-01", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, c1);

    let body = github_push(&url, &c1, &c2);
    let (status, text) = post(
        a.http,
        vec![
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", github_signature(secret, &body)),
        ],
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // B hears of it through Redis and handles it too.
    pushes_processed(b.http, 1.0).await;
    let response = client_b
        .generate_manifest(app_request(&url, "apps/dir-01", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, c2, "B's revision cache was dropped");
    assert!(response.manifests[0].contains("v2"));
    pushes_processed(a.http, 1.0).await;
    common::process::terminate_and_wait(a).await;
    common::process::terminate_and_wait(b).await;
}
