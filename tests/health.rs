//! `/healthz` as Kubernetes probes use it: plain, and `?full=true` with a
//! real gRPC health check against the server's own gRPC port (plaintext,
//! self-signed TLS, and a certificate from files); connections older
//! than `--max-connection-age` are recycled without failing a call.

mod common;

use std::time::Duration;

use common::fixtures::ExampleRepo;
use common::*;
use manifold::server::{self, Tls};

async fn get(addr: std::net::SocketAddr, path: &'static str) -> String {
    tokio::task::spawn_blocking(move || common::process::http_get(addr, path))
        .await
        .unwrap()
}

fn ok(response: &str) -> bool {
    response.starts_with("HTTP/1.1 200") && response.ends_with("ok\n")
}

#[tokio::test]
async fn healthz_and_the_full_grpc_self_check() {
    // Plaintext.
    let plain = start_plaintext().await;
    assert!(ok(&get(plain.http_addr(), "/healthz").await));
    let full = get(plain.http_addr(), "/healthz?full=true").await;
    assert!(ok(&full), "{full}");

    // TLS with the generated self-signed certificate.
    let app_conf = tempfile::tempdir().unwrap();
    let tls = server::start(test_config(Tls::Enabled {
        cert_path: app_conf.path().join("missing.crt"),
        key_path: app_conf.path().join("missing.key"),
    }))
    .await
    .unwrap();
    let full = get(tls.http_addr(), "/healthz?full=true").await;
    assert!(ok(&full), "{full}");

    // TLS with the certificate Argo CD mounts.
    let (cert_path, key_path, _) = common::fixtures::write_repo_server_tls(app_conf.path());
    let mounted = server::start(test_config(Tls::Enabled {
        cert_path,
        key_path,
    }))
    .await
    .unwrap();
    let full = get(mounted.http_addr(), "/healthz?full=true").await;
    assert!(ok(&full), "{full}");
    // Anything but `true` is the plain check.
    assert!(ok(&get(mounted.http_addr(), "/healthz?full=false").await));
    for server in [plain, tls, mounted] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn old_connections_are_recycled_without_failing_calls() {
    let example = ExampleRepo::build();
    let url = example.repo.url();
    let mut config = test_config(Tls::Disabled);
    config.max_connection_age = Some(Duration::from_millis(500));
    config.shutdown_grace = Duration::from_secs(2);
    let server = server::start(config).await.unwrap();
    let mut client = client(&server).await;
    let started = std::time::Instant::now();
    let mut calls = 0;
    // Calls keep succeeding across several connection lifetimes.
    while started.elapsed() < Duration::from_secs(3) {
        client
            .generate_manifest(manifest_request(&url, "guestbook", "main"))
            .await
            .unwrap_or_else(|s| panic!("call {calls} failed: {s:?}"));
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls > 10);
    let text = get(server.http_addr(), "/metrics").await;
    let started_calls = text
        .lines()
        .find(|l| {
            l.starts_with("grpc_server_started_total")
                && l.contains("grpc_method=\"GenerateManifest\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert_eq!(started_calls as usize, calls);
    server.shutdown().await.unwrap();
}
