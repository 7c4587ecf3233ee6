//! OTLP tracing (`--otlp-address`): the server's request spans reach a
//! collector over OTLP/gRPC with Argo CD's resource attributes and the
//! configured headers; sampling and the shutdown flush.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fixtures::ExampleRepo;
use common::manifest_request;
use common::process::{start, terminate_and_wait};
use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;
use manifold::otlp::proto::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use manifold::otlp::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use manifold::otlp::proto::common::v1::{any_value, KeyValue};
use manifold::otlp::proto::trace::v1::Span;
use manifold::otlp::OtlpConfig;
use tracing_subscriber::layer::SubscriberExt;

/// One Export call as the collector saw it.
struct Export {
    token: Option<String>,
    request: ExportTraceServiceRequest,
}

/// A fake OTLP collector on 127.0.0.1:0 that keeps every Export call.
#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<Vec<Export>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let token = request
            .metadata()
            .get("x-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.exports.lock().unwrap().push(Export {
            token,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (collector, addr)
    }

    fn spans(&self) -> Vec<Span> {
        let exports = self.exports.lock().unwrap();
        exports
            .iter()
            .flat_map(|e| &e.request.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    fn named(&self, name: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    async fn wait_for(&self, name: &str, count: usize, limit: Duration) -> Vec<Span> {
        let deadline = Instant::now() + limit;
        loop {
            let spans = self.named(name);
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn string_value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match v.value.as_ref() {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn serve_exports_request_spans_to_the_collector() {
    let (collector, addr) = Collector::start().await;
    let example = ExampleRepo::build();
    let address = addr.to_string();
    let before = unix_nanos();
    let running = start(
        &[
            "--disable-tls",
            "--otlp-address",
            &address,
            "--otlp-attrs",
            "team:platform",
            "--otlp-headers",
            "x-token=abc",
        ],
        &[],
    );
    let mut client = RepoServerServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();
    client
        .generate_manifest(manifest_request(&example.repo.url(), "guestbook", "main"))
        .await
        .unwrap();

    // A partial batch goes out within the 5 s interval.
    let spans = collector
        .wait_for("GenerateManifest", 1, Duration::from_secs(15))
        .await;
    let after = unix_nanos();
    assert_eq!(spans.len(), 1, "log: {}", running.log());
    let span = &spans[0];
    assert_eq!(span.trace_id.len(), 16);
    assert_ne!(span.trace_id, [0; 16]);
    assert_eq!(span.span_id.len(), 8);
    assert_ne!(span.span_id, [0; 8]);
    assert!(span.parent_span_id.is_empty(), "a root span");
    assert!(
        before <= span.start_time_unix_nano,
        "started before the test"
    );
    assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
    assert!(span.end_time_unix_nano <= after, "ended in the future");
    assert_eq!(string_value(&span.attributes, "app"), Some("guestbook"));
    assert!(span.status.is_none(), "{:?}", span.status);
    {
        let exports = collector.exports.lock().unwrap();
        for export in exports.iter() {
            assert_eq!(export.token.as_deref(), Some("abc"));
            let resource_spans = &export.request.resource_spans;
            assert_eq!(resource_spans.len(), 1);
            let resource = resource_spans[0].resource.as_ref().unwrap();
            assert_eq!(
                string_value(&resource.attributes, "service.name"),
                Some("argocd-repo-server")
            );
            assert_eq!(string_value(&resource.attributes, "team"), Some("platform"));
            let scope = resource_spans[0].scope_spans[0].scope.as_ref().unwrap();
            assert_eq!(scope.name, "manifold");
        }
    }

    // A span closed just before SIGTERM is flushed on the way out; it
    // continues the trace the caller sent (as Argo CD's clients do).
    let mut request =
        tonic::Request::new(manifest_request(&example.repo.url(), "guestbook", "main"));
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    client.generate_manifest(request).await.unwrap();
    drop(client);
    terminate_and_wait(running).await;
    let spans = collector.named("GenerateManifest");
    assert_eq!(spans.len(), 2);
    assert_ne!(
        spans[0].trace_id, spans[1].trace_id,
        "one trace per request"
    );
    let continued = spans
        .iter()
        .find(|s| hex::encode(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736")
        .expect("the caller's trace is continued");
    assert_eq!(hex::encode(&continued.parent_span_id), "00f067aa0ba902b7");
}

#[tokio::test]
async fn sample_ratio_zero_exports_nothing() {
    let (collector, addr) = Collector::start().await;
    let example = ExampleRepo::build();
    let address = addr.to_string();
    let running = start(
        &[
            "--disable-tls",
            "--otlp-address",
            &address,
            "--otlp-sample-ratio",
            "0",
        ],
        &[],
    );
    let mut client = RepoServerServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();
    client
        .generate_manifest(manifest_request(&example.repo.url(), "guestbook", "main"))
        .await
        .unwrap();
    drop(client);
    // Exit flushes whatever is queued: nothing.
    terminate_and_wait(running).await;
    assert!(collector.spans().is_empty());
    assert!(collector.exports.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_otlp_flags_stop_start_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["serve", "--disable-tls", "--otlp-address", "127.0.0.1:4317"])
        .args(["--otlp-sample-ratio", "2"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--otlp-sample-ratio"), "{stderr}");
}

/// The exporter used as a library: the guard sends queued spans at once
/// (well before the 5 s interval) and returns.
#[test]
fn guard_flushes_queued_spans_on_shutdown() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (collector, addr) = runtime.block_on(Collector::start());
    let config = OtlpConfig::from_args(&addr.to_string(), true, "x-token=t", "", "1")
        .unwrap()
        .unwrap();
    let (layer, guard) = manifold::otlp::layer(config, runtime.handle());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let root = tracing::info_span!(target: "manifold::test", "outer", error = "boom");
        let _entered = root.enter();
        let _inner = tracing::info_span!(target: "manifold::test", "inner").entered();
    });
    let started = Instant::now();
    guard.shutdown();
    assert!(started.elapsed() < Duration::from_secs(3));
    let spans = collector.spans();
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["inner", "outer"]);
    assert_eq!(spans[0].trace_id, spans[1].trace_id);
    assert_eq!(spans[0].parent_span_id, spans[1].span_id);
    let status = spans[1].status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "boom"));
    assert_eq!(
        collector.exports.lock().unwrap()[0].token.as_deref(),
        Some("t")
    );
}

/// A collector that is not there costs the server nothing: the export
/// fails, is dropped, and shutdown does not wait for it.
#[test]
fn unreachable_collector_does_not_hold_up_shutdown() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = OtlpConfig::from_args(&format!("127.0.0.1:{port}"), true, "", "", "1")
        .unwrap()
        .unwrap();
    let (layer, guard) = manifold::otlp::layer(config, runtime.handle());
    let subscriber = tracing_subscriber::registry().with(layer);
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..10_000 {
            let _span = tracing::info_span!(target: "manifold::test", "busy").entered();
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "spans never block"
    );
    let started = Instant::now();
    guard.shutdown();
    assert!(started.elapsed() < Duration::from_secs(3));
}
