//! The HTTP port (Argo CD's metrics port, 8084): `/healthz` for the
//! Kubernetes probes. Metrics and webhooks join it in later milestones.

use axum::routing::get;
use axum::Router;

/// The router of the HTTP port.
pub fn router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

/// Liveness/readiness: the process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}
