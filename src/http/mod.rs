//! The HTTP port (Argo CD's metrics port, 8084): `/healthz` for the
//! Kubernetes probes and `/metrics` for Prometheus (webhooks join it from
//! [`crate::webhook`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// How `/healthz?full=true` reaches this server's own gRPC port.
#[derive(Debug, Clone)]
pub struct SelfCheck {
    /// The gRPC port, on loopback.
    pub addr: SocketAddr,
    /// The certificate the port presents (DER), when TLS is on: the check
    /// trusts exactly that certificate.
    pub certificate: Option<Vec<u8>>,
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    self_check: Arc<SelfCheck>,
}

/// The router of the HTTP port.
pub fn router(metrics: Arc<Metrics>, self_check: SelfCheck) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(HttpState {
            metrics,
            self_check: Arc::new(self_check),
        })
}

/// Liveness and readiness, as Argo CD answers them: `ok` while the HTTP
/// port serves; with `full=true`, only if a gRPC health check against this
/// server's own gRPC port passes (else 503).
async fn healthz(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    if query.get("full").map(String::as_str) != Some("true") {
        return (StatusCode::OK, "ok\n".to_string());
    }
    match check(&state.self_check).await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(message) => {
            tracing::warn!(error = %message, "gRPC self-check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("gRPC health check failed: {message}\n"),
            )
        }
    }
}

/// A `grpc.health.v1.Health/Check` of the whole server over a new
/// connection to its own gRPC port.
async fn check(target: &SelfCheck) -> Result<(), String> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = channel(target).await?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(Duration::from_secs(5));
    let answer = HealthClient::new(channel)
        .check(request)
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner();
    // 1 is SERVING.
    if answer.status == 1 {
        Ok(())
    } else {
        Err(format!("status {}", answer.status))
    }
}

async fn channel(target: &SelfCheck) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", target.addr))
        .map_err(|err| err.to_string())?
        .connect_timeout(Duration::from_secs(5));
    let addr = target.addr;
    let Some(certificate) = target.certificate.clone() else {
        return endpoint.connect().await.map_err(|err| err.to_string());
    };
    let mut config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::charts::AcceptCertificate::pinned(
            certificate,
            Arc::new(rustls::crypto::ring::default_provider()),
        )))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|err| err.to_string())
}

/// Every metric, in the OpenMetrics text format (which Prometheus reads).
async fn metrics_text(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
