//! The `manifold` binary as an operator runs it: flags, TLS by default
//! (ALPN h2), plaintext with --disable-tls, /healthz, and a graceful stop
//! on SIGTERM.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::fixtures::ExampleRepo;
use common::process::{http_get, start, terminate_and_wait};
use common::*;
use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;

#[tokio::test]
async fn plaintext_serve_healthz_and_graceful_stop() {
    let example = ExampleRepo::build();
    let running = start(&["--disable-tls"], &[]);
    let response = http_get(running.http, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");

    let mut client = RepoServerServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();
    let response = client
        .generate_manifest(manifest_request(&example.repo.url(), "guestbook", "main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revision, example.second);
    drop(client);
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn env_var_disables_tls() {
    let running = start(&[], &[("ARGOCD_REPO_SERVER_DISABLE_TLS", "true")]);
    let mut client = RepoServerServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();
    let status = client
        .list_apps(manifold::grpc::proto::repository::ListAppsRequest::default())
        .await
        .unwrap_err();
    // Served (and refused for having no repository).
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn bad_configuration_fails_at_start_naming_the_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["serve", "--port", "0", "--metrics-port", "0"])
        .env("ARGOCD_EXEC_TIMEOUT", "a while")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ARGOCD_EXEC_TIMEOUT"), "{stderr}");
}

/// Accepts any certificate, as Argo CD's clients do by default
/// (`InsecureSkipVerify`).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn tls_is_the_default_with_a_self_signed_certificate_and_alpn_h2() {
    let running = start(&[], &[]);
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(running.grpc).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("argocd-repo-server").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    let certificate = &session.peer_certificates().unwrap()[0];
    assert!(!certificate.is_empty());
    drop(tls);

    // Plaintext HTTP/2 is refused on the TLS port.
    let plaintext = RepoServerServiceClient::connect(format!("http://{}", running.grpc)).await;
    if let Ok(mut client) = plaintext {
        assert!(client
            .list_apps(manifold::grpc::proto::repository::ListAppsRequest::default())
            .await
            .is_err());
    }
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn a_stuck_connection_does_not_block_the_stop_beyond_the_grace_period() {
    let running = start(&["--disable-tls", "--shutdown-grace-period", "1s"], &[]);
    // Connected, never speaks: the drain cannot finish on its own.
    let _idle = tokio::net::TcpStream::connect(running.grpc).await.unwrap();
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn tls_certificate_comes_from_the_app_conf_path() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, certificate_pem) = common::fixtures::write_repo_server_tls(dir.path());
    let running = start(
        &[],
        &[("ARGOCD_APP_CONF_PATH", dir.path().to_str().unwrap())],
    );

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(certificate_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", running.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = RepoServerServiceClient::new(channel);
    let status = client
        .list_apps(manifold::grpc::proto::repository::ListAppsRequest::default())
        .await
        .unwrap_err();
    // Served (and refused for having no repository).
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    terminate_and_wait(running).await;
}
