//! Git credentials from Argo CD's `Repository` fields, against real
//! servers: HTTPS with basic auth (a per-host CA from
//! `ARGOCD_TLS_DATA_PATH`, `insecure`, `forceHttpBasicAuth`) and SSH with
//! a private key checked against `ARGOCD_SSH_DATA_PATH/ssh_known_hosts`.
//! Wrong credentials are refused with UNAUTHENTICATED, and no secret
//! appears in any error or log line.

mod common;

use common::fixtures::{GitHttpServer, GitRepo, SshGitServer};
use common::process::{start, terminate_and_wait, Running};
use common::*;
use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;
use manifold::grpc::proto::repository::{ManifestRequest, TestRepositoryRequest};
use manifold::grpc::proto::v1alpha1::Repository;
use tonic::transport::Channel;
use tonic::Code;

const PASSWORD: &str = "s3cret-Pa55";
const WRONG: &str = "wrong-Pa55";

/// A repository with one directory app, and a bare clone of it under a
/// fresh directory (what the servers serve).
fn served_repo() -> (GitRepo, tempfile::TempDir, std::path::PathBuf) {
    let repo = GitRepo::new();
    repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: private\n",
    );
    repo.commit("private app");
    let root = tempfile::tempdir().unwrap();
    let bare = repo.clone_bare_into(root.path(), "private.git");
    (repo, root, bare)
}

fn request(repository: Repository) -> ManifestRequest {
    let url = repository.repo.clone();
    let mut request = manifest_request(&url, "app", "HEAD");
    request.repo = Some(repository);
    request
}

async fn client(running: &Running) -> RepoServerServiceClient<Channel> {
    RepoServerServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap()
}

/// The names of a successful render.
async fn render(
    client: &mut RepoServerServiceClient<Channel>,
    repository: Repository,
) -> Vec<String> {
    let response = client
        .generate_manifest(request(repository))
        .await
        .unwrap_or_else(|status| panic!("render failed: {status:?}"))
        .into_inner();
    names(&response.manifests)
}

/// The status of a failed render.
async fn refused(
    client: &mut RepoServerServiceClient<Channel>,
    repository: Repository,
) -> tonic::Status {
    let mut request = request(repository);
    // Each attempt asks the remote (no revision cache in the way).
    request.no_cache = true;
    client
        .generate_manifest(request)
        .await
        .expect_err("the render should fail")
}

#[tokio::test]
async fn https_basic_auth_from_repository_fields() {
    let (_repo, root, _bare) = served_repo();
    let server =
        GitHttpServer::start_with_auth(root.path(), true, Some(&format!("alice:{PASSWORD}")));
    // The CA of `localhost`, as argocd-tls-certs-cm mounts it.
    let tls = tempfile::tempdir().unwrap();
    std::fs::copy(
        server.ca_pem_path.as_ref().unwrap(),
        tls.path().join("localhost"),
    )
    .unwrap();
    let running = start(
        &["--disable-tls", "--loglevel", "debug"],
        &[("ARGOCD_TLS_DATA_PATH", tls.path().to_str().unwrap())],
    );
    let mut client = client(&running).await;
    let url = format!("{}/private.git", server.base_url);
    let repository = |username: &str, password: &str| Repository {
        repo: url.clone(),
        username: username.to_string(),
        password: password.to_string(),
        r#type: "git".to_string(),
        ..Default::default()
    };

    assert_eq!(
        render(&mut client, repository("alice", PASSWORD)).await,
        ["private"]
    );
    let forced = Repository {
        force_http_basic_auth: true,
        ..repository("alice", PASSWORD)
    };
    assert_eq!(render(&mut client, forced).await, ["private"]);

    for (repository, what) in [
        (repository("alice", WRONG), "a wrong password"),
        (repository("", ""), "no credentials"),
    ] {
        let status = refused(&mut client, repository).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            status.message().contains("private.git"),
            "{what}: names the repository: {}",
            status.message()
        );
        assert!(!status.message().contains(WRONG) && !status.message().contains(PASSWORD));
    }

    // TestRepository goes through the same credentials.
    // (Success is the OK status; Argo CD never sets `verifiedRepository`.)
    client
        .test_repository(TestRepositoryRequest {
            repo: Some(repository("alice", PASSWORD)),
        })
        .await
        .unwrap();
    let status = client
        .test_repository(TestRepositoryRequest {
            repo: Some(repository("alice", WRONG)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Another name for the same server has no CA configured: refused,
    // unless the repository is marked insecure.
    let by_ip = url.replace("localhost", "127.0.0.1");
    let status = refused(
        &mut client,
        Repository {
            repo: by_ip.clone(),
            ..repository("alice", PASSWORD)
        },
    )
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().to_lowercase().contains("certificate"),
        "{}",
        status.message()
    );
    let insecure = Repository {
        repo: by_ip,
        insecure: true,
        ..repository("alice", PASSWORD)
    };
    assert_eq!(render(&mut client, insecure).await, ["private"]);

    let log = running.log();
    assert!(log.contains("private.git"), "the log shows the requests");
    assert!(!log.contains(PASSWORD), "a password leaked into the log");
    assert!(!log.contains(WRONG), "a password leaked into the log");
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn ssh_private_key_checked_against_known_hosts() {
    let (_repo, _root, bare) = served_repo();
    let ssh = SshGitServer::start();
    let ssh_data = tempfile::tempdir().unwrap();
    let running = start(
        &["--disable-tls", "--loglevel", "debug"],
        &[("ARGOCD_SSH_DATA_PATH", ssh_data.path().to_str().unwrap())],
    );
    let mut client = client(&running).await;
    let repository = |key: &str, insecure: bool| Repository {
        repo: ssh.url(&bare),
        ssh_private_key: key.to_string(),
        insecure,
        r#type: "git".to_string(),
        ..Default::default()
    };

    // The host is not in ssh_known_hosts yet: refused, unless insecure.
    let status = refused(&mut client, repository(&ssh.client_key, false)).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("Host key verification failed"),
        "{}",
        status.message()
    );
    assert_eq!(
        render(&mut client, repository(&ssh.client_key, true)).await,
        ["private"]
    );

    // Known now (as argocd-ssh-known-hosts-cm provides it).
    std::fs::write(
        ssh_data.path().join("ssh_known_hosts"),
        &ssh.known_hosts_line,
    )
    .unwrap();
    assert_eq!(
        render(&mut client, repository(&ssh.client_key, false)).await,
        ["private"]
    );

    // A key the server does not accept, and no key at all.
    let other = ssh.other_key();
    for (repository, what) in [
        (repository(&other, false), "a wrong key"),
        (repository("", false), "no key"),
    ] {
        let status = refused(&mut client, repository).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            status.message().contains("Permission denied"),
            "{what}: {}",
            status.message()
        );
    }

    let log = running.log();
    for key in [&ssh.client_key, &other] {
        let body = key.lines().nth(1).unwrap();
        assert!(!log.contains(body), "key material leaked into the log");
    }
    assert!(!log.contains("PRIVATE KEY"));
    terminate_and_wait(running).await;
}

/// A GitHub App's credentials become an installation token (minted from a
/// local stand-in of GitHub's token endpoint) that git uses as the password
/// of `x-access-token`.
#[tokio::test]
async fn github_app_credentials_mint_an_installation_token() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const TOKEN: &str = "ghs_installation-token-1";
    let (_repo, root, _bare) = served_repo();
    let git = GitHttpServer::start_with_auth(
        root.path(),
        false,
        Some(&format!("x-access-token:{TOKEN}")),
    );

    // GitHub's endpoint, as GitHub Enterprise serves it under /api/v3.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/api/v3/app/installations/7/access_tokens",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let bearer = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                // A JWT: three base64url parts.
                assert_eq!(bearer.trim_start_matches("Bearer ").split('.').count(), 3);
                (
                    axum::http::StatusCode::CREATED,
                    format!("{{\"token\":\"{TOKEN}\",\"expires_at\":\"2099-01-01T00:00:00Z\"}}"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/api/v3", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let key = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl runs");
    assert!(key.status.success());
    let key = String::from_utf8(key.stdout).unwrap();

    let running = start(&["--disable-tls", "--loglevel", "debug"], &[]);
    let mut client = client(&running).await;
    let repository = |installation: i64| Repository {
        repo: format!("{}/private.git", git.base_url),
        github_app_private_key: key.clone(),
        github_app_id: 12345,
        github_app_installation_id: installation,
        github_app_enterprise_base_url: endpoint.clone(),
        r#type: "git".to_string(),
        ..Default::default()
    };
    assert_eq!(render(&mut client, repository(7)).await, ["private"]);
    let mut again = request(repository(7));
    again.no_cache = true;
    client.generate_manifest(again).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the token is cached");

    // An installation the endpoint does not know: the token request fails.
    let status = refused(&mut client, repository(8)).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("GitHub App"),
        "{}",
        status.message()
    );

    let log = running.log();
    assert!(!log.contains(TOKEN), "the token leaked into the log");
    assert!(!log.contains(key.lines().nth(1).unwrap()));
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn google_service_account_key_mints_an_access_token() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const TOKEN: &str = "ya29.access-token-1";
    const EMAIL: &str = "deployer@project.iam.gserviceaccount.com";
    let (_repo, root, _bare) = served_repo();
    let git = GitHttpServer::start_with_auth(root.path(), false, Some(&format!("{EMAIL}:{TOKEN}")));

    // Google's token endpoint: a JWT-bearer grant in, an access token out.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                assert!(body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"), "{body}");
                format!("{{\"access_token\":\"{TOKEN}\",\"expires_in\":3600,\"token_type\":\"Bearer\"}}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_uri = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let key = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl runs");
    assert!(key.status.success());
    let key = String::from_utf8(key.stdout).unwrap();
    let key_json = serde_json::json!({
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "kid-1",
        "private_key": key,
        "client_email": EMAIL,
        "token_uri": token_uri,
    })
    .to_string();

    let running = start(&["--disable-tls", "--loglevel", "debug"], &[]);
    let mut client = client(&running).await;
    let repository = Repository {
        repo: format!("{}/private.git", git.base_url),
        gcp_service_account_key: key_json.clone(),
        r#type: "git".to_string(),
        ..Default::default()
    };
    assert_eq!(render(&mut client, repository.clone()).await, ["private"]);
    let mut again = request(repository.clone());
    again.no_cache = true;
    client.generate_manifest(again).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the token is cached");

    // A key the endpoint is not reached with: refused, nothing leaked.
    let broken = Repository {
        gcp_service_account_key: "{\"type\":\"service_account\"}".into(),
        ..repository
    };
    let status = refused(&mut client, broken).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("Google"), "{}", status.message());

    let log = running.log();
    assert!(!log.contains(TOKEN), "the token leaked into the log");
    assert!(!log.contains(key.lines().nth(1).unwrap()));
    terminate_and_wait(running).await;
}
