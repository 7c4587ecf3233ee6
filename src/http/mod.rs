//! The HTTP port (Argo CD's metrics port, 8084): `/healthz` for the
//! Kubernetes probes and `/metrics` for Prometheus. Webhooks join it in a
//! later milestone.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// The router of the HTTP port.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

/// Liveness/readiness: the process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Every metric, in the OpenMetrics text format (which Prometheus reads).
async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}
