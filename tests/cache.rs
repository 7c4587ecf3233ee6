//! The two-tier cache against a real `redis-server`: renders shared across
//! server processes, Redis dying under load, one tool run for identical
//! concurrent requests, and Argo CD's error caching cycle.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fixtures::{sources_repo, GitRepo, RedisServer};
use common::process::{start, terminate_and_wait};
use common::*;
use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;
use manifold::grpc::proto::repository::ManifestRequest;
use tonic::Code;

/// A helm that logs each `helm template` run, then runs the real helm.
struct CountingHelm {
    dir: tempfile::TempDir,
}

impl CountingHelm {
    fn new() -> Self {
        Self::slow(0)
    }

    /// One that waits `seconds` before each `helm template`.
    fn slow(seconds: u32) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let real = on_path("helm");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("helm");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ \"$1\" = template ]; then echo run >> '{}'; sleep {seconds}; fi\nexec '{}' \"$@\"\n",
                dir.path().join("log").display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        CountingHelm { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("helm")
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

fn redis_config(redis: &RedisServer) -> manifold::cache::redis::Config {
    redis_at(redis.address())
}

/// A plain-text Redis at `address` with a short deadline.
fn redis_at(address: String) -> manifold::cache::redis::Config {
    manifold::cache::redis::Config {
        endpoint: manifold::cache::redis::Endpoint::Direct(address),
        db: 0,
        username: String::new(),
        password: String::new(),
        tls: false,
        insecure_skip_tls_verify: false,
        client_certificate: None,
        ca_certificate: None,
        key_prefix: String::new(),
        timeout: Duration::from_millis(500),
    }
}

/// An in-process server using `helm` and, when given, Redis.
async fn start_server(helm: &Path, redis: Option<&RedisServer>) -> manifold::server::Server {
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.render.helm = helm.to_path_buf();
    config.cache.redis = redis.map(redis_config);
    manifold::server::start(config).await.unwrap()
}

fn chart_request(url: &str, app: &str) -> ManifestRequest {
    let mut request = source_request(url, "helm/guestbook", Default::default());
    request.app_name = app.to_string();
    request
}

#[tokio::test]
async fn a_render_on_one_server_process_is_served_by_another_through_redis() {
    let repo = sources_repo();
    let redis = RedisServer::start();
    let helm = CountingHelm::new();
    let env = [
        ("REDIS_SERVER", redis.address()),
        ("MANIFOLD_HELM_PATH", helm.program().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = start(&["--disable-tls"], &env);
    let second = start(&["--disable-tls"], &env);
    let connect = |addr: std::net::SocketAddr| async move {
        RepoServerServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    };

    let rendered = connect(first.grpc)
        .await
        .generate_manifest(chart_request(&repo.url(), "shared"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(helm.runs(), 1);
    let served = connect(second.grpc)
        .await
        .generate_manifest(chart_request(&repo.url(), "shared"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(helm.runs(), 1, "the second process ran no tool");
    assert_eq!(served.manifests, rendered.manifests);
    assert_eq!(served.revision, repo.head());
    assert_eq!(served.commands, rendered.commands);
    assert_eq!(served.source_type, "Helm");

    // Another app is another render.
    connect(second.grpc)
        .await
        .generate_manifest(chart_request(&repo.url(), "other"))
        .await
        .unwrap();
    assert_eq!(helm.runs(), 2);
    terminate_and_wait(first).await;
    terminate_and_wait(second).await;
}

#[tokio::test]
async fn redis_dying_in_the_middle_of_a_stream_fails_no_request() {
    let repo = sources_repo();
    let mut redis = RedisServer::start();
    let helm = CountingHelm::new();
    let server = start_server(&helm.program(), Some(&redis)).await;
    let client = client(&server).await;
    let call = |app: String| {
        let mut client = client.clone();
        let request = chart_request(&repo.url(), &app);
        async move { client.generate_manifest(request).await }
    };

    for i in 0..30 {
        if i == 10 {
            redis.kill();
        }
        if i == 20 {
            redis.restart();
        }
        // Each request is new work (its own app) and is asked twice: the
        // second answer comes from the in-process tier whatever Redis does.
        let app = format!("app-{i}");
        let first = call(app.clone())
            .await
            .unwrap_or_else(|s| panic!("{i}: {s:?}"));
        let again = call(app).await.unwrap_or_else(|s| panic!("{i}: {s:?}"));
        assert_eq!(first.into_inner().manifests, again.into_inner().manifests);
    }
    assert_eq!(helm.runs(), 30, "one render per app, Redis or not");
    // Redis really failed meanwhile (and said so in the metrics).
    let addr = server.http_addr();
    let metrics = tokio::task::spawn_blocking(move || common::process::http_get(addr, "/metrics"))
        .await
        .unwrap();
    let failed: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("argocd_redis_request_total") && line.contains("failed=\"true\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failed > 0.0, "{metrics}");
    // Redis is used again once it is back (after the pause that follows
    // failures): new renders reach it.
    let mut extra = 0;
    while redis.key_count() == 0 {
        assert!(extra < 100, "Redis never used again");
        extra += 1;
        call(format!("after-{extra}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn identical_concurrent_requests_run_the_tool_once() {
    let repo = sources_repo();
    let helm = CountingHelm::new();
    let server = start_server(&helm.program(), None).await;
    let client = client(&server).await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            let request = chart_request(&repo.url(), "same");
            tokio::spawn(async move { client.generate_manifest(request).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap().into_inner().manifests);
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(helm.runs(), 1);
    // And later ones are cache hits; `noCache` renders again.
    let mut client = client.clone();
    client
        .generate_manifest(chart_request(&repo.url(), "same"))
        .await
        .unwrap();
    assert_eq!(helm.runs(), 1);
    let mut fresh = chart_request(&repo.url(), "same");
    fresh.no_cache = true;
    client.generate_manifest(fresh).await.unwrap();
    assert_eq!(helm.runs(), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn failing_apps_pause_after_three_attempts_and_retry_after_the_cached_errors() {
    let repo = GitRepo::new();
    repo.write(
        "broken/Chart.yaml",
        "apiVersion: v2\nname: broken\nversion: 0.1.0\n",
    )
    .write(
        "broken/templates/bad.yaml",
        "{{ fail \"always broken\" }}\n",
    );
    repo.commit("a chart that always fails");
    let helm = CountingHelm::new();
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.render.helm = helm.program();
    config.pipeline.pause_after_failed_attempts = 3;
    config.pipeline.pause_requests = 2;
    let server = manifold::server::start(config).await.unwrap();
    let mut client = client(&server).await;

    let mut seen = Vec::new();
    for _ in 0..10 {
        let status = client
            .generate_manifest(source_request(&repo.url(), "broken", Default::default()))
            .await
            .unwrap_err();
        assert!(
            status.message().contains("always broken"),
            "{}",
            status.message()
        );
        let cached = status
            .message()
            .starts_with("Manifest generation error (cached): ");
        if cached {
            assert_eq!(status.code(), Code::FailedPrecondition);
        }
        seen.push(if cached { "cached" } else { "rendered" });
    }
    // Three real attempts, two cached errors, and the cycle again.
    assert_eq!(
        seen,
        [
            "rendered", "rendered", "rendered", "cached", "cached", "rendered", "rendered",
            "rendered", "cached", "cached"
        ]
    );
    assert_eq!(helm.runs(), 6);
    server.shutdown().await.unwrap();
}

fn builds(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("builds"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn config_map(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: {value}\n")
}

#[tokio::test]
async fn a_commit_that_does_not_touch_an_app_serves_it_at_the_new_sha_without_rendering() {
    let repo = GitRepo::new();
    repo.write("apps/a/cm.yaml", &config_map("a", "one"))
        .write("apps/b/cm.yaml", &config_map("b", "one"))
        .write(
            "charts/c/Chart.yaml",
            "apiVersion: v2\nname: c\nversion: 0.1.0\n",
        )
        .write(
            "charts/c/templates/cm.yaml",
            &config_map("c", "{{ .Values.v }}"),
        )
        .write("charts/c/values.yaml", "v: one\n")
        .write(
            "kustomize/base/kustomization.yaml",
            "resources:\n- cm.yaml\n",
        )
        .write("kustomize/base/cm.yaml", &config_map("k", "one"))
        .write(
            "kustomize/overlay/kustomization.yaml",
            "resources:\n- ../base\nnamePrefix: prod-\n",
        );
    let first = repo.commit("three apps");
    let helm = CountingHelm::new();
    let tools = tempfile::tempdir().unwrap();
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.render.helm = helm.program();
    config.render.kustomize = logging_kustomize(tools.path());
    let server = manifold::server::start(config).await.unwrap();
    let client = client(&server).await;
    let render = |path: &'static str, revision: String| {
        let mut client = client.clone();
        let request = manifest_request(&repo.url(), path, &revision);
        async move {
            let response = client
                .generate_manifest(request)
                .await
                .unwrap()
                .into_inner();
            let values: Vec<String> = parse_manifests(&response.manifests)
                .iter()
                .map(|m| {
                    format!(
                        "{}={}",
                        m["metadata"]["name"].as_str().unwrap(),
                        m["data"]["value"]
                    )
                })
                .collect();
            (response.revision, values)
        }
    };
    assert_eq!(render("charts/c", first.clone()).await.1, ["c=\"one\""]);
    assert_eq!(
        render("kustomize/overlay", first.clone()).await.1,
        ["prod-k=\"one\""]
    );
    assert_eq!((helm.runs(), builds(tools.path())), (1, 1));

    // Only app a changes: c and the overlay answer at the new commit
    // without running helm or kustomize.
    repo.write("apps/a/cm.yaml", &config_map("a", "two"));
    let second = repo.commit("change a");
    assert_eq!(
        render("charts/c", second.clone()).await,
        (second.clone(), vec!["c=\"one\"".to_string()])
    );
    assert_eq!(
        render("kustomize/overlay", second.clone()).await,
        (second.clone(), vec!["prod-k=\"one\"".to_string()])
    );
    assert_eq!((helm.runs(), builds(tools.path())), (1, 1));
    assert_eq!(render("apps/a", second.clone()).await.1, ["a=\"two\""]);

    // The overlay's base changes: the overlay is rendered again.
    repo.write("kustomize/base/cm.yaml", &config_map("k", "two"));
    let third = repo.commit("change the base");
    assert_eq!(
        render("kustomize/overlay", third.clone()).await,
        (third.clone(), vec!["prod-k=\"two\"".to_string()])
    );
    assert_eq!(builds(tools.path()), 2);
    // The chart's values change: the chart is rendered again.
    repo.write("charts/c/values.yaml", "v: three\n");
    let fourth = repo.commit("change the chart's values");
    assert_eq!(render("charts/c", fourth.clone()).await.1, ["c=\"three\""]);
    assert_eq!(helm.runs(), 2);
    // And asking for an old commit still answers with that commit.
    assert_eq!(
        render("charts/c", first.clone()).await,
        (first, vec!["c=\"one\"".to_string()])
    );
    assert_eq!(helm.runs(), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn replicas_render_once_under_a_lease_and_take_over_from_a_dead_holder() {
    let repo = sources_repo();
    let redis = RedisServer::start();
    let helm = CountingHelm::slow(3);
    let env = [
        ("REDIS_SERVER", redis.address()),
        ("MANIFOLD_HELM_PATH", helm.program().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = start(&["--disable-tls"], &env);
    let second = start(&["--disable-tls"], &env);
    let call = |addr: std::net::SocketAddr, app: &str| {
        let request = chart_request(&repo.url(), app);
        tokio::spawn(async move {
            RepoServerServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
                .generate_manifest(request)
                .await
        })
    };

    // The same render asked of both replicas at once: one renders, the
    // other waits for its result.
    let (a, b) = (call(first.grpc, "leased"), call(second.grpc, "leased"));
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(a.into_inner().manifests, b.into_inner().manifests);
    assert_eq!(helm.runs(), 1, "one render across replicas");

    // The holder dies mid-render: the other replica takes over once the
    // lease is no longer renewed.
    let doomed = call(first.grpc, "orphaned");
    while helm.runs() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = call(second.grpc, "orphaned");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let _ = doomed.await;
    let response = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(response.source_type, "Helm");
    assert_eq!(helm.runs(), 3, "the second replica rendered it itself");
    terminate_and_wait(second).await;
}

#[tokio::test]
async fn server_processes_find_the_master_through_sentinel() {
    let repo = sources_repo();
    let redis = RedisServer::start();
    let sentinel = RedisServer::sentinel_for(&redis);
    let helm = CountingHelm::new();
    let env = [
        ("REDIS_SENTINEL_HOSTS", sentinel.address()),
        ("REDIS_SENTINEL_MASTER", "master".to_string()),
        ("MANIFOLD_HELM_PATH", helm.program().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = start(&["--disable-tls"], &env);
    let second = start(&["--disable-tls"], &env);
    for server in [&first, &second] {
        RepoServerServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap()
            .generate_manifest(chart_request(&repo.url(), "via-sentinel"))
            .await
            .unwrap();
    }
    assert_eq!(helm.runs(), 1, "shared through the master Sentinel named");
    assert!(redis.key_count() > 0);
    terminate_and_wait(first).await;
    terminate_and_wait(second).await;
}

#[tokio::test]
async fn the_shared_tier_speaks_tls_with_a_given_ca() {
    let repo = sources_repo();
    let (redis, ca) = RedisServer::start_tls();
    let helm = CountingHelm::new();
    let ca = ca.display().to_string();
    let env = [
        ("REDIS_SERVER", redis.address()),
        ("MANIFOLD_HELM_PATH", helm.program().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "--disable-tls",
        "--redis-use-tls",
        "--redis-ca-certificate",
        &ca,
    ];
    let first = start(&args, &env);
    let second = start(&args, &env);
    for server in [&first, &second] {
        RepoServerServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap()
            .generate_manifest(chart_request(&repo.url(), "over-tls"))
            .await
            .unwrap();
    }
    assert_eq!(helm.runs(), 1, "shared through Redis over TLS");
    terminate_and_wait(first).await;
    terminate_and_wait(second).await;
}

#[tokio::test]
async fn a_redis_that_accepts_but_never_answers_fails_no_request() {
    let repo = sources_repo();
    // A black hole: connections are accepted and then ignored.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let helm = CountingHelm::new();
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.render.helm = helm.program();
    config.cache.redis = Some(redis_at(address));
    let server = manifold::server::start(config).await.unwrap();
    let mut client = client(&server).await;
    for i in 0..10 {
        let response = client
            .generate_manifest(chart_request(&repo.url(), &format!("app-{i}")))
            .await
            .unwrap_or_else(|s| panic!("{i}: {s:?}"));
        assert_eq!(response.into_inner().source_type, "Helm");
    }
    assert_eq!(helm.runs(), 10);
    server.shutdown().await.unwrap();
}
