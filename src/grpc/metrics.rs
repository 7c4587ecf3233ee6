//! Argo CD's gRPC server metrics (`grpc_server_*`, as go-grpc-middleware's
//! Prometheus provider names them), recorded by a tower layer around the
//! gRPC router: started and handled calls by type, service, method and
//! status code, messages of unary calls, and, with
//! `ARGOCD_ENABLE_GRPC_TIME_HISTOGRAM=true`, handling time. Only known
//! services and methods are counted, so labels stay bounded; as
//! go-grpc-middleware's `InitializeMetrics` does, every method's series
//! exist from the start (at zero), and a call touches only handles
//! resolved then (no label hashing or family lock per call).

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

/// The families, registered by [`crate::metrics::Metrics`], and the
/// handles of every known method.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    pub started: Family<CallLabels, Counter>,
    pub handled: Family<HandledLabels, Counter>,
    pub received: Family<CallLabels, Counter>,
    pub sent: Family<CallLabels, Counter>,
    /// `None` unless `ARGOCD_ENABLE_GRPC_TIME_HISTOGRAM` is `true`.
    pub handling: Option<HandlingFamily>,
    /// `/<service>/<method>` -> its handles.
    methods: std::sync::Arc<std::collections::HashMap<String, std::sync::Arc<MethodHandles>>>,
}

/// One method's series.
#[derive(Debug)]
struct MethodHandles {
    grpc_type: &'static str,
    started: Counter,
    received: Counter,
    sent: Counter,
    /// By status code (0 to 16).
    handled: Vec<Counter>,
    handling: Option<Histogram>,
}

impl GrpcMetrics {
    pub fn new(time_histogram: bool) -> Self {
        let started = Family::<CallLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let received = Family::<CallLabels, Counter>::default();
        let sent = Family::<CallLabels, Counter>::default();
        let handling: Option<HandlingFamily> =
            time_histogram.then(|| Family::new_with_constructor(handling_buckets as _));
        let mut methods = std::collections::HashMap::new();
        for (grpc_service, list) in SERVICES {
            for (grpc_method, grpc_type) in list.iter() {
                let labels = CallLabels {
                    grpc_type,
                    grpc_service,
                    grpc_method,
                };
                let handles = MethodHandles {
                    grpc_type,
                    started: started.get_or_create(&labels).clone(),
                    received: received.get_or_create(&labels).clone(),
                    sent: sent.get_or_create(&labels).clone(),
                    handled: (0..17)
                        .map(|code| {
                            handled
                                .get_or_create(&HandledLabels {
                                    grpc_type,
                                    grpc_service,
                                    grpc_method,
                                    grpc_code: code_name(code),
                                })
                                .clone()
                        })
                        .collect(),
                    handling: handling
                        .as_ref()
                        .map(|family| family.get_or_create(&labels).clone()),
                };
                methods.insert(
                    format!("/{grpc_service}/{grpc_method}"),
                    std::sync::Arc::new(handles),
                );
            }
        }
        GrpcMetrics {
            started,
            handled,
            received,
            sent,
            handling,
            methods: std::sync::Arc::new(methods),
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

/// Every service served and its methods with their types.
const SERVICES: [(&str, &[(&str, &str)]); 3] = [
    ("repository.RepoServerService", &REPO_SERVER_METHODS),
    (
        "grpc.health.v1.Health",
        &[("Check", "unary"), ("Watch", "server_stream")],
    ),
    ("version.VersionService", &[("Version", "unary")]),
];

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
        let handles = self.metrics.methods.get(request.uri().path()).cloned();
        if let Some(handles) = &handles {
            handles.started.inc();
            if handles.grpc_type == "unary" || handles.grpc_type == "server_stream" {
                handles.received.inc();
            }
        }
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // A trailers-only answer (an error) carries its status here.
            let header_status = status_of(response.headers());
            Ok(response.map(|body| Observed {
                body,
                call: handles.map(|handles| Call {
                    handles,
                    started,
                    header_status,
                }),
            }))
        })
    }
}

/// What is recorded when the call ends.
struct Call {
    handles: std::sync::Arc<MethodHandles>,
    started: Instant,
    header_status: Option<i32>,
}

impl Call {
    fn finish(self, code: i32) {
        // Unknown codes count as Unknown, as go-grpc names them.
        let index = usize::try_from(code).ok().filter(|c| *c < 17).unwrap_or(2);
        self.handles.handled[index].inc();
        if code == 0 && self.handles.grpc_type == "unary" {
            self.handles.sent.inc();
        }
        if let Some(handling) = &self.handles.handling {
            handling.observe(self.started.elapsed().as_secs_f64());
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
        let metrics = GrpcMetrics::new(false);
        let handles = &metrics.methods;
        assert_eq!(
            handles["/repository.RepoServerService/GenerateManifest"].grpc_type,
            "unary"
        );
        assert_eq!(
            handles["/repository.RepoServerService/GenerateManifestWithFiles"].grpc_type,
            "client_stream"
        );
        assert!(!handles.contains_key("/repository.RepoServerService/Nope"));
        assert!(!handles.contains_key("/evil.Service/X"));
        assert_eq!(code_name(5), "NotFound");
    }
}
