//! Argo CD's gRPC server metrics (`grpc_server_*`, as go-grpc-middleware's
//! Prometheus provider names them), recorded by a tower layer around the
//! gRPC router: started and handled calls by type, service, method and
//! status code, messages of unary calls, and, with
//! `ARGOCD_ENABLE_GRPC_TIME_HISTOGRAM=true`, handling time. Only known
//! services and methods are counted, so labels stay bounded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tonic::codegen::http;

/// Labels of a call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

/// Labels of a finished call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

fn handling_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Handling time by call.
pub type HandlingFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

/// The families, registered by [`crate::metrics::Metrics`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    pub started: Family<CallLabels, Counter>,
    pub handled: Family<HandledLabels, Counter>,
    pub received: Family<CallLabels, Counter>,
    pub sent: Family<CallLabels, Counter>,
    /// `None` unless `ARGOCD_ENABLE_GRPC_TIME_HISTOGRAM` is `true`.
    pub handling: Option<HandlingFamily>,
}

impl GrpcMetrics {
    pub fn new(time_histogram: bool) -> Self {
        GrpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            handling: time_histogram.then(|| Family::new_with_constructor(handling_buckets as _)),
        }
    }
}

const REPO_SERVER_METHODS: [(&str, &str); 16] = [
    ("GenerateManifest", "unary"),
    ("GenerateManifestWithFiles", "client_stream"),
    ("TestRepository", "unary"),
    ("ResolveRevision", "unary"),
    ("ListRefs", "unary"),
    ("ListOCITags", "unary"),
    ("ListApps", "unary"),
    ("ListPlugins", "unary"),
    ("GetAppDetails", "unary"),
    ("GetRevisionMetadata", "unary"),
    ("GetOCIMetadata", "unary"),
    ("GetRevisionChartDetails", "unary"),
    ("GetHelmCharts", "unary"),
    ("GetGitFiles", "unary"),
    ("GetGitDirectories", "unary"),
    ("UpdateRevisionForPaths", "unary"),
];

/// The labels of the call at `path` (`/<service>/<method>`), when it is
/// one of ours.
fn call_labels(path: &str) -> Option<CallLabels> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (grpc_service, methods): (&'static str, &[(&'static str, &'static str)]) = match service {
        "repository.RepoServerService" => ("repository.RepoServerService", &REPO_SERVER_METHODS),
        "grpc.health.v1.Health" => (
            "grpc.health.v1.Health",
            &[("Check", "unary"), ("Watch", "server_stream")],
        ),
        "version.VersionService" => ("version.VersionService", &[("Version", "unary")]),
        _ => return None,
    };
    let (grpc_method, grpc_type) = methods.iter().find(|(name, _)| *name == method)?;
    Some(CallLabels {
        grpc_type,
        grpc_service,
        grpc_method,
    })
}

/// go-grpc's names of status codes.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The layer.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: GrpcMetrics,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: GrpcMetrics) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let labels = call_labels(request.uri().path());
        if let Some(labels) = &labels {
            self.metrics.started.get_or_create(labels).inc();
            if labels.grpc_type == "unary" || labels.grpc_type == "server_stream" {
                self.metrics.received.get_or_create(labels).inc();
            }
        }
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // A trailers-only answer (an error) carries its status here.
            let header_status = status_of(response.headers());
            Ok(response.map(|body| Observed {
                body,
                call: labels.map(|labels| Call {
                    labels,
                    metrics,
                    started,
                    header_status,
                }),
            }))
        })
    }
}

/// What is recorded when the call ends.
struct Call {
    labels: CallLabels,
    metrics: GrpcMetrics,
    started: Instant,
    header_status: Option<i32>,
}

impl Call {
    fn finish(self, code: i32) {
        let CallLabels {
            grpc_type,
            grpc_service,
            grpc_method,
        } = self.labels.clone();
        self.metrics
            .handled
            .get_or_create(&HandledLabels {
                grpc_type,
                grpc_service,
                grpc_method,
                grpc_code: code_name(code),
            })
            .inc();
        if code == 0 && grpc_type == "unary" {
            self.metrics.sent.get_or_create(&self.labels).inc();
        }
        if let Some(handling) = &self.metrics.handling {
            handling
                .get_or_create(&self.labels)
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// A response body that records the call's status when its trailers (or
/// its end) go by.
pub struct Observed<B> {
    body: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = self.call.take() {
                        let code = status_of(trailers).or(call.header_status).unwrap_or(2);
                        call.finish(code);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    let code = call.header_status.unwrap_or(0);
                    call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    let code = call.header_status.unwrap_or(2);
                    call.finish(code);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        // The client went away before the end: go-grpc reports Canceled.
        if let Some(call) = self.call.take() {
            let code = call.header_status.unwrap_or(1);
            call.finish(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_are_labelled() {
        let labels = call_labels("/repository.RepoServerService/GenerateManifest").unwrap();
        assert_eq!(labels.grpc_type, "unary");
        assert_eq!(
            call_labels("/repository.RepoServerService/GenerateManifestWithFiles")
                .unwrap()
                .grpc_type,
            "client_stream"
        );
        assert!(call_labels("/repository.RepoServerService/Nope").is_none());
        assert!(call_labels("/evil.Service/X").is_none());
        assert_eq!(code_name(5), "NotFound");
    }
}
