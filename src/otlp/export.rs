//! The exporter task: drains the span queue into batches and sends each
//! with one `TraceService/Export` call.
//!
//! A batch goes out when it holds [`MAX_BATCH`] spans or every
//! [`INTERVAL`], whichever comes first; each call may take [`EXPORT_TIMEOUT`].
//! A failed batch is dropped (no retry, as the queue keeps filling), and
//! failures are logged at debug at most once per [`LOG_EVERY`]. On shutdown
//! the queue is flushed for at most [`FLUSH_DEADLINE`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::layer::Stats;
use super::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use super::proto::collector::trace::v1::ExportTraceServiceRequest;
use super::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use super::proto::resource::v1::Resource;
use super::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use super::OtlpConfig;

/// Spans waiting for export; more are dropped and counted.
pub(crate) const QUEUE_CAPACITY: usize = 2048;
/// Most spans in one export call.
pub(crate) const MAX_BATCH: usize = 512;
/// A partial batch goes out after this long.
const INTERVAL: Duration = Duration::from_secs(5);
/// Longest one export call may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the shutdown flush may take.
const FLUSH_DEADLINE: Duration = Duration::from_secs(2);
/// At most one failure report per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Stops the exporter: [`OtlpGuard::shutdown`] (or dropping the guard)
/// sends the spans still queued and waits for that at most about two
/// seconds. Call it from outside the runtime's tasks, before the runtime is
/// dropped.
#[must_use = "dropping the guard stops the exporter"]
pub struct OtlpGuard {
    stop: Option<oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl OtlpGuard {
    /// Flushes what is queued, waiting at most about two seconds.
    pub fn shutdown(mut self) {
        self.stop_and_wait();
    }

    fn stop_and_wait(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        if stop.send(()).is_ok() {
            // Returns at once if the task is gone (its sender dropped).
            let _ = self
                .done
                .recv_timeout(FLUSH_DEADLINE + Duration::from_millis(500));
        }
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        self.stop_and_wait();
    }
}

impl std::fmt::Debug for OtlpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpGuard")
            .field("running", &self.stop.is_some())
            .finish()
    }
}

/// Starts the exporter task on `runtime`.
pub(crate) fn spawn(
    config: &OtlpConfig,
    runtime: &tokio::runtime::Handle,
    receiver: mpsc::Receiver<Span>,
    stats: Arc<Stats>,
) -> OtlpGuard {
    let (stop, stopped) = oneshot::channel();
    let (finished, done) = std::sync::mpsc::channel();
    let exporter = Exporter::new(config, stats);
    runtime.spawn(async move {
        exporter.run(receiver, stopped).await;
        let _ = finished.send(());
    });
    OtlpGuard {
        stop: Some(stop),
        done,
    }
}

struct Exporter {
    endpoint: String,
    insecure: bool,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    resource: Resource,
    stats: Arc<Stats>,
    report: Report,
}

/// Export problems since the last log line.
#[derive(Default)]
struct Report {
    last_logged: Option<Instant>,
    failed_calls: u64,
    lost_spans: u64,
    last_error: String,
}

impl Report {
    fn failed(&mut self, spans: u64, error: String) {
        self.failed_calls += 1;
        self.lost_spans += spans;
        self.last_error = error;
    }

    /// Logs what went wrong, unless something was logged in the last
    /// minute.
    fn maybe_log(&mut self, stats: &Stats) {
        let recent = self.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY);
        if recent {
            return;
        }
        let dropped = stats.dropped.swap(0, Ordering::Relaxed);
        if self.failed_calls == 0 && dropped == 0 {
            return;
        }
        tracing::debug!(
            failed_exports = self.failed_calls,
            lost_spans = self.lost_spans,
            dropped_spans = dropped,
            error = %self.last_error,
            "OTLP trace export is losing spans"
        );
        *self = Report {
            last_logged: Some(Instant::now()),
            ..Report::default()
        };
    }
}

impl Exporter {
    fn new(config: &OtlpConfig, stats: Arc<Stats>) -> Self {
        // Validated by OtlpConfig::from_args; a bad pair is skipped here.
        let headers = config
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    AsciiMetadataKey::from_bytes(name.as_bytes()).ok()?,
                    AsciiMetadataValue::try_from(value.as_str()).ok()?,
                ))
            })
            .collect();
        Exporter {
            endpoint: config.endpoint(),
            insecure: config.insecure,
            headers,
            resource: resource(&config.attributes),
            stats,
            report: Report::default(),
        }
    }

    fn client(&self) -> Result<TraceServiceClient<Channel>, String> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(EXPORT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT);
        if !self.insecure {
            let tls = ClientTlsConfig::new().ca_certificates(system_roots());
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        Ok(TraceServiceClient::new(endpoint.connect_lazy()))
    }

    async fn run(mut self, mut receiver: mpsc::Receiver<Span>, mut stop: oneshot::Receiver<()>) {
        let mut client = match self.client() {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::warn!(endpoint = %self.endpoint, %error, "cannot set up OTLP trace export; spans are dropped");
                None
            }
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut ticks = tokio::time::interval_at(Instant::now() + INTERVAL, INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                biased;
                _ = &mut stop => break,
                received = receiver.recv_many(&mut batch, room) => {
                    if received == 0 {
                        break;
                    }
                    if batch.len() >= MAX_BATCH {
                        self.send(&mut client, &mut batch, EXPORT_TIMEOUT).await;
                    }
                }
                _ = ticks.tick() => {
                    if !batch.is_empty() {
                        self.send(&mut client, &mut batch, EXPORT_TIMEOUT).await;
                    }
                    self.report.maybe_log(&self.stats);
                }
            }
        }
        // Flush what is queued, within the deadline.
        let deadline = Instant::now() + FLUSH_DEADLINE;
        receiver.close();
        loop {
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if batch.is_empty() || left.is_zero() {
                break;
            }
            self.send(&mut client, &mut batch, left.min(EXPORT_TIMEOUT))
                .await;
        }
        self.report.last_logged = None;
        self.report.maybe_log(&self.stats);
    }

    /// Exports `batch` (left empty), counting a failure.
    async fn send(
        &mut self,
        client: &mut Option<TraceServiceClient<Channel>>,
        batch: &mut Vec<Span>,
        timeout: Duration,
    ) {
        let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
        let count = spans.len() as u64;
        let Some(client) = client else {
            self.report.failed(count, "export is not set up".into());
            return;
        };
        let mut request = tonic::Request::new(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "manifold".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        });
        request.set_timeout(timeout);
        for (name, value) in &self.headers {
            request.metadata_mut().insert(name.clone(), value.clone());
        }
        match tokio::time::timeout(timeout, client.export(request)).await {
            Ok(Ok(response)) => {
                if let Some(partial) = response.into_inner().partial_success {
                    if partial.rejected_spans > 0 {
                        self.report.failed(
                            partial.rejected_spans as u64,
                            format!("collector rejected spans: {}", partial.error_message),
                        );
                    }
                }
            }
            Ok(Err(status)) => self
                .report
                .failed(count, format!("{:?}: {}", status.code(), status.message())),
            Err(_) => self
                .report
                .failed(count, format!("timed out after {timeout:?}")),
        }
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

/// `service.name` then the configured attributes; a repeated key keeps its
/// last value.
fn resource(attributes: &[(String, String)]) -> Resource {
    let mut all: Vec<KeyValue> = vec![string_attribute("service.name", super::SERVICE_NAME)];
    for (key, value) in attributes {
        all.retain(|kv| kv.key != *key);
        all.push(string_attribute(key, value));
    }
    Resource {
        attributes: all,
        dropped_attributes_count: 0,
    }
}

/// The system CA bundle (see [`crate::charts::system_ca_bundle`]); no
/// roots (and so failed exports, reported as such) when there is none.
fn system_roots() -> Vec<Certificate> {
    crate::charts::system_ca_bundle()
        .map(Certificate::from_pem)
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(kv: &KeyValue) -> (&str, &str) {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => (kv.key.as_str(), s.as_str()),
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn resource_has_the_service_name_and_the_configured_attributes() {
        let resource = resource(&[
            ("team".into(), "platform".into()),
            ("env".into(), "dev".into()),
            ("env".into(), "prod".into()),
        ]);
        let pairs: Vec<_> = resource.attributes.iter().map(text).collect();
        assert_eq!(
            pairs,
            [
                ("service.name", "argocd-repo-server"),
                ("team", "platform"),
                ("env", "prod")
            ]
        );
        let resource = super::resource(&[("service.name".into(), "mine".into())]);
        let pairs: Vec<_> = resource.attributes.iter().map(text).collect();
        assert_eq!(pairs, [("service.name", "mine")]);
    }

    #[test]
    fn failures_are_reported_at_most_once_a_minute() {
        let stats = Stats::default();
        let mut report = Report::default();
        report.maybe_log(&stats);
        assert!(report.last_logged.is_none(), "nothing to report");
        report.failed(3, "unavailable".into());
        stats.dropped.fetch_add(2, Ordering::Relaxed);
        report.maybe_log(&stats);
        assert!(report.last_logged.is_some());
        assert_eq!((report.failed_calls, report.lost_spans), (0, 0));
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        report.failed(1, "unavailable".into());
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        report.maybe_log(&stats);
        // Held back until a minute has passed.
        assert_eq!(report.failed_calls, 1);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
    }
}
