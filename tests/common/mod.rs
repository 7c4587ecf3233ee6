//! Shared test harness: start a real manifold server on 127.0.0.1:0 and
//! talk to it with the generated gRPC client.

#![allow(dead_code)]

#[path = "../../fixtures/mod.rs"]
pub mod fixtures;
pub mod process;
pub mod sidecar;

use std::time::Duration;

use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;
use manifold::grpc::proto::repository::ManifestRequest;
use manifold::grpc::proto::v1alpha1::{ApplicationSource, ApplicationSourceDirectory, Repository};
use manifold::server::{self, Server, Tls};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub type Client = RepoServerServiceClient<Channel>;

/// A server configuration for tests: ephemeral ports, short timeouts.
pub fn test_config(tls: Tls) -> server::Config {
    server::Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        tls,
        max_message_bytes: 100 << 20,
        temp_dir: std::env::temp_dir(),
        exec: manifold::exec::Config {
            timeout: Some(Duration::from_secs(60)),
            fatal_timeout: Duration::from_secs(5),
            max_stdout_bytes: 1 << 30,
            base_env: vec![("PATH".into(), std::env::var_os("PATH").unwrap_or_default())],
        },
        git: manifold::git::Config::default(),
        render: manifold::render::Config::default(),
        pipeline: manifold::pipeline::Config {
            parallelism_limit: None,
            max_combined_directory_manifests_bytes: Some(10_000_000),
            pause_after_failed_attempts: 3,
            pause_minutes: 60,
            pause_requests: 0,
            include_hidden_directories: false,
            git_modules_enabled: true,
            upload_limits: Default::default(),
        },
        cache: manifold::cache::Config::default(),
        webhook: manifold::webhook::Config::default(),
        charts: manifold::charts::Config::default(),
        shutdown_grace: Duration::from_secs(10),
        max_connection_age: None,
        persistent_work_dir: false,
        disk_budget: None,
        janitor_interval: Duration::from_secs(30),
    }
}

pub async fn start_plaintext() -> Server {
    server::start(test_config(Tls::Disabled))
        .await
        .expect("server starts")
}

pub async fn client(server: &Server) -> Client {
    let endpoint = Endpoint::from_shared(format!("http://{}", server.grpc_addr())).unwrap();
    connect(endpoint).await
}

/// A TLS client that trusts exactly the certificate the server presents.
pub async fn tls_client(server: &Server) -> Client {
    let pem = server.certificate_pem().expect("server uses TLS");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://{}", server.grpc_addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    connect(endpoint).await
}

async fn connect(endpoint: Endpoint) -> Client {
    let channel = endpoint.connect().await.expect("client connects");
    RepoServerServiceClient::new(channel)
        .max_decoding_message_size(100 << 20)
        .max_encoding_message_size(100 << 20)
}

pub fn repo(url: &str) -> Option<Repository> {
    Some(Repository {
        repo: url.to_string(),
        r#type: "git".to_string(),
        ..Default::default()
    })
}

/// A GenerateManifest request as the controller sends it for a directory
/// app with default tracking.
pub fn manifest_request(url: &str, path: &str, revision: &str) -> ManifestRequest {
    ManifestRequest {
        repo: repo(url),
        revision: revision.to_string(),
        app_label_key: "app.kubernetes.io/instance".to_string(),
        app_name: "guestbook".to_string(),
        namespace: "default".to_string(),
        application_source: Some(ApplicationSource {
            repo_url: url.to_string(),
            path: path.to_string(),
            target_revision: revision.to_string(),
            ..Default::default()
        }),
        tracking_method: "annotation".to_string(),
        ..Default::default()
    }
}

pub fn with_directory(
    mut request: ManifestRequest,
    directory: ApplicationSourceDirectory,
) -> ManifestRequest {
    request.application_source.as_mut().unwrap().directory = Some(directory);
    request
}

/// The manifests of a response, parsed.
pub fn parse_manifests(manifests: &[String]) -> Vec<serde_json::Value> {
    manifests
        .iter()
        .map(|m| {
            serde_json::from_str(m).unwrap_or_else(|e| panic!("manifest is not JSON ({e}): {m}"))
        })
        .collect()
}

/// `metadata.name` of each manifest, in order.
pub fn names(manifests: &[String]) -> Vec<String> {
    parse_manifests(manifests)
        .iter()
        .map(|m| {
            m["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// A plaintext server whose renders use the helm binary `helm` (e.g.
/// `helm` for v3, `helm4` for v4).
pub async fn start_with_helm(helm: &str) -> Server {
    let mut config = test_config(Tls::Disabled);
    config.render.helm = helm.into();
    server::start(config).await.expect("server starts")
}

/// The helm binaries every Helm test runs against: v3 and v4.
pub const HELM_BINARIES: [&str; 2] = ["helm", "helm4"];

/// A GenerateManifest request for the app at `path` of `url`, at HEAD,
/// with the given source (path and repo filled in).
pub fn source_request(url: &str, path: &str, source: ApplicationSource) -> ManifestRequest {
    let mut request = manifest_request(url, path, "HEAD");
    let application_source = request.application_source.as_mut().unwrap();
    *application_source = ApplicationSource {
        repo_url: url.to_string(),
        path: path.to_string(),
        target_revision: "HEAD".to_string(),
        ..source
    };
    request
}

/// The manifest of `kind` named `name`.
pub fn find<'a>(
    manifests: &'a [serde_json::Value],
    kind: &str,
    name: &str,
) -> &'a serde_json::Value {
    manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {manifests:#?}"))
}

/// The absolute path of `program` on `PATH` (tests wrap the real tools).
pub fn on_path(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("{program} on PATH (scripts/install-tools.sh)"))
}

/// A `kustomize` in `dir` that appends the directory of every `build` to
/// `dir/builds`, then runs the real one.
pub fn logging_kustomize(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("kustomize");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = build ] && echo \"$2\" >> '{}'\nexec '{}' \"$@\"\n",
            dir.join("builds").display(),
            on_path("kustomize").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}
