//! `/metrics`: Argo CD's repo-server families (git, pending requests,
//! gRPC server, process) and manifold's own, as a real server exposes
//! them after real requests; repository URLs in labels carry no
//! credentials.

mod common;

use common::fixtures::ExampleRepo;
use common::*;
use tonic::Code;

async fn scrape(addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || common::process::http_get(addr, "/metrics"))
        .await
        .unwrap()
}

/// The value of the sample `name{labels}` (labels as a substring of the
/// label set), if present.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|label| set.contains(label))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[tokio::test]
async fn argo_cd_families_and_manifolds_own_are_exposed() {
    let example = ExampleRepo::build();
    let url = example.repo.url();
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    client
        .generate_manifest(manifest_request(&url, "guestbook", "main"))
        .await
        .unwrap();
    let status = client
        .generate_manifest(manifest_request(&url, "guestbook", "no-such-branch"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A remote that cannot be reached, named with credentials.
    let secret_url = "http://deployer:s3cret-token@127.0.0.1:1/private.git";
    let status = client
        .generate_manifest(manifest_request(secret_url, ".", "main"))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    // A commit asked by SHA needs no listing: the fetch fails.
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let status = client
        .generate_manifest(manifest_request(secret_url, ".", sha))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);

    let text = scrape(server.http_addr()).await;
    let repo = format!("repo=\"{url}\"");
    for (name, labels) in [
        (
            "argocd_git_request_total",
            vec![repo.as_str(), "request_type=\"ls-remote\""],
        ),
        (
            "argocd_git_request_total",
            vec![repo.as_str(), "request_type=\"fetch\""],
        ),
        (
            "argocd_git_request_duration_seconds_count",
            vec![repo.as_str(), "request_type=\"fetch\""],
        ),
        (
            "argocd_git_lsremote_fail_total",
            vec![repo.as_str(), "revision=\"no-such-branch\""],
        ),
        (
            "argocd_git_lsremote_fail_total",
            vec!["repo=\"http://***@127.0.0.1:1/private.git\""],
        ),
        (
            "argocd_git_fetch_fail_total",
            vec![
                "repo=\"http://***@127.0.0.1:1/private.git\"",
                "revision=\"0123456789abcdef0123456789abcdef01234567\"",
            ],
        ),
        (
            "grpc_server_started_total",
            vec![
                "grpc_type=\"unary\"",
                "grpc_service=\"repository.RepoServerService\"",
                "grpc_method=\"GenerateManifest\"",
            ],
        ),
        (
            "grpc_server_handled_total",
            vec!["grpc_method=\"GenerateManifest\"", "grpc_code=\"OK\""],
        ),
        (
            "grpc_server_handled_total",
            vec!["grpc_method=\"GenerateManifest\"", "grpc_code=\"NotFound\""],
        ),
        (
            "grpc_server_msg_received_total",
            vec!["grpc_method=\"GenerateManifest\""],
        ),
        (
            "grpc_server_msg_sent_total",
            vec!["grpc_method=\"GenerateManifest\""],
        ),
        (
            "manifold_renders_total",
            vec!["source_type=\"Directory\"", "outcome=\"ok\""],
        ),
        (
            "manifold_render_duration_seconds_count",
            vec!["source_type=\"Directory\""],
        ),
        ("process_resident_memory_bytes", vec![]),
        ("process_cpu_seconds_total", vec![]),
        ("process_open_fds", vec![]),
    ] {
        let value = sample(&text, name, &labels)
            .unwrap_or_else(|| panic!("no {name} with {labels:?} in\n{text}"));
        assert!(value > 0.0, "{name} {labels:?} = {value}");
    }
    // Counted and back to zero once the work is done.
    assert_eq!(
        sample(&text, "argocd_repo_pending_request", &[repo.as_str()]),
        Some(0.0)
    );
    for family in [
        "# TYPE manifold_exec_timeouts counter",
        "# TYPE manifold_exec_kills counter",
        "# TYPE manifold_parallelism_permits_in_use gauge",
        "# TYPE manifold_cache_lookups counter",
        "# TYPE argocd_repo_parallelism_wait_duration_seconds histogram",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    assert!(!text.contains("s3cret"), "a credential reached a label");
    server.shutdown().await.unwrap();
}
