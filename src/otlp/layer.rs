//! From `tracing` spans to OTLP spans.
//!
//! Each span this layer sees gets a [`SpanState`] in its extensions when it
//! opens: its ids (a new trace for a root span, the parent's trace
//! otherwise), whether its trace is sampled, its start time and the fields
//! recorded so far. When the span closes, a sampled one becomes an OTLP
//! `Span` handed to the exporter's queue without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::proto::common::v1::{any_value, AnyValue, KeyValue};
use super::proto::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

/// At most this many attributes per span (OpenTelemetry's default limit);
/// more are counted in `dropped_attributes_count`.
const MAX_ATTRIBUTES: usize = 128;
/// String attribute values (and the error message) are cut to this many
/// bytes, so one huge field cannot bloat the queue.
const MAX_VALUE_BYTES: usize = 4096;

/// W3C trace flag: sampled.
const FLAG_SAMPLED: u32 = 0x01;
/// OTLP span flags: whether the parent is remote is known / is remote.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Counters shared by the layer and the exporter.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Spans dropped because the export queue was full.
    pub dropped: AtomicU64,
}

/// Records closed spans into the exporter's queue. Use it through
/// [`super::layer()`], which adds the [`SpanFilter`].
pub struct OtlpLayer {
    sender: mpsc::Sender<Span>,
    sample_ratio: f64,
    stats: Arc<Stats>,
}

impl OtlpLayer {
    pub(crate) fn new(sender: mpsc::Sender<Span>, sample_ratio: f64, stats: Arc<Stats>) -> Self {
        OtlpLayer {
            sender,
            sample_ratio,
            stats,
        }
    }
}

/// Which callsites the OTLP layer sees: spans (not events) of this crate
/// at INFO and above. The libraries' spans (tonic, h2, hyper: the exporter's
/// own requests among them) stay out, and the decision is made once per
/// callsite, so everything else costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanFilter;

impl SpanFilter {
    fn wants(metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        metadata.is_span()
            && *metadata.level() <= Level::INFO
            && (target == "manifold" || target.starts_with("manifold::"))
    }
}

impl<S> Filter<S> for SpanFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::wants(metadata)
    }

    fn callsite_enabled(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::wants(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// What the layer keeps about an open span.
struct SpanState {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    remote_parent: bool,
    sampled: bool,
    start_unix_nanos: u64,
    start: Instant,
    fields: Fields,
}

/// Fields recorded on a span, sorted into what OTLP has a place for.
#[derive(Default)]
struct Fields {
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    /// The `error` field: the span failed with this message.
    error: Option<String>,
    /// `otel.name`: replaces the span's name.
    name: Option<String>,
    /// `otel.kind`: server, client, producer, consumer or internal.
    kind: Option<SpanKind>,
    /// `traceparent` (W3C) on a root span: continue that remote trace.
    traceparent: Option<String>,
}

impl Fields {
    fn set(&mut self, field: &Field, value: any_value::Value) {
        let name = field.name();
        match name {
            "error" => self.error = Some(text_of(value)),
            "otel.name" => self.name = Some(text_of(value)),
            "otel.kind" => self.kind = parse_kind(&text_of(value)),
            "traceparent" => self.traceparent = Some(text_of(value)),
            _ => {
                if let Some(known) = self.attributes.iter_mut().find(|kv| kv.key == name) {
                    known.value = Some(AnyValue { value: Some(value) });
                } else if self.attributes.len() < MAX_ATTRIBUTES {
                    self.attributes.push(KeyValue {
                        key: name.to_string(),
                        value: Some(AnyValue { value: Some(value) }),
                    });
                } else {
                    self.dropped_attributes += 1;
                }
            }
        }
    }
}

fn text_of(value: any_value::Value) -> String {
    match value {
        any_value::Value::StringValue(text) => text,
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        _ => String::new(),
    }
}

fn parse_kind(text: &str) -> Option<SpanKind> {
    Some(match text.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

/// Cuts `text` to at most [`MAX_VALUE_BYTES`], on a character boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let value = if value.len() > MAX_VALUE_BYTES {
            bounded(value.to_string())
        } else {
            value.to_string()
        };
        self.set(field, any_value::Value::StringValue(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, any_value::Value::BoolValue(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, any_value::Value::IntValue(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let value = match i64::try_from(value) {
            Ok(int) => any_value::Value::IntValue(int),
            Err(_) => any_value::Value::StringValue(value.to_string()),
        };
        self.set(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, any_value::Value::DoubleValue(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(
            field,
            any_value::Value::StringValue(bounded(value.to_string())),
        );
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(
            field,
            any_value::Value::StringValue(bounded(format!("{value:?}"))),
        );
    }
}

/// A remote parent from a W3C `traceparent` value
/// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`).
struct RemoteParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

fn parse_traceparent(text: &str) -> Option<RemoteParent> {
    let mut parts = text.trim().split('-');
    let version = parts.next()?;
    let (trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; later versions may append more.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    let mut flag = [0u8; 1];
    hex::decode_to_slice(version, &mut [0u8; 1]).ok()?;
    hex::decode_to_slice(trace_id, &mut trace).ok()?;
    hex::decode_to_slice(span_id, &mut span).ok()?;
    hex::decode_to_slice(flags, &mut flag).ok()?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some(RemoteParent {
        trace_id: trace,
        span_id: span,
        sampled: flag[0] & 1 == 1,
    })
}

/// The ratio sampler of OpenTelemetry's SDKs: a trace is sampled when the
/// low 63 bits of its id's last 8 bytes fall under `ratio` of their range,
/// so every process deciding on the same id with the same ratio agrees.
pub(crate) fn ratio_samples(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0u8; N] {
            return id;
        }
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let start_unix_nanos = unix_nanos(SystemTime::now());
        let start = Instant::now();
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = span.parent().and_then(|parent| {
            parent
                .extensions()
                .get::<SpanState>()
                .map(|state| (state.trace_id, state.span_id, state.sampled))
        });
        let (trace_id, parent_span_id, remote_parent, sampled) = match parent {
            Some((trace_id, span_id, sampled)) => (trace_id, Some(span_id), false, sampled),
            None => match fields.traceparent.as_deref().and_then(parse_traceparent) {
                // Parent-based: the caller's decision wins.
                Some(remote) => (remote.trace_id, Some(remote.span_id), true, remote.sampled),
                None => {
                    let trace_id = random_nonzero::<16>();
                    let sampled = ratio_samples(&trace_id, self.sample_ratio);
                    (trace_id, None, false, sampled)
                }
            },
        };
        if !sampled {
            // Children only need to know; keep nothing else.
            fields = Fields::default();
        }
        span.extensions_mut().insert(SpanState {
            trace_id,
            span_id: random_nonzero::<8>(),
            parent_span_id,
            remote_parent,
            sampled,
            start_unix_nanos,
            start,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            if state.sampled {
                values.record(&mut state.fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else {
            return;
        };
        if !state.sampled {
            return;
        }
        let elapsed = u64::try_from(state.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let fields = state.fields;
        let status = fields.error.map(|message| Status {
            message,
            code: StatusCode::Error as i32,
        });
        let mut flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE;
        if state.remote_parent {
            flags |= FLAG_IS_REMOTE;
        }
        let otlp = Span {
            trace_id: state.trace_id.to_vec(),
            span_id: state.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: state
                .parent_span_id
                .map(|id| id.to_vec())
                .unwrap_or_default(),
            flags,
            name: fields.name.unwrap_or_else(|| span.name().to_string()),
            kind: fields.kind.unwrap_or(SpanKind::Internal) as i32,
            start_time_unix_nano: state.start_unix_nanos,
            end_time_unix_nano: state.start_unix_nanos.saturating_add(elapsed),
            attributes: fields.attributes,
            dropped_attributes_count: fields.dropped_attributes,
            status,
        };
        match self.sender.try_send(otlp) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The exporter has stopped (shutdown): nothing to do.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn capture(ratio: f64, capacity: usize, body: impl FnOnce()) -> (Vec<Span>, u64) {
        let (sender, mut receiver) = mpsc::channel(capacity);
        let stats = Arc::new(Stats::default());
        let layer = OtlpLayer::new(sender, ratio, stats.clone()).with_filter(SpanFilter);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, body);
        let mut spans = Vec::new();
        while let Ok(span) = receiver.try_recv() {
            spans.push(span);
        }
        (spans, stats.dropped.load(Ordering::Relaxed))
    }

    fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn children_share_the_root_trace_and_record_fields() {
        let (spans, dropped) = capture(1.0, 16, || {
            let root = tracing::info_span!(
                "GenerateManifest",
                app = %"guestbook",
                attempt = 3u64,
                cached = false,
                error = tracing::field::Empty,
            );
            let _entered = root.enter();
            {
                let child =
                    tracing::warn_span!("render", tool = "helm", error = tracing::field::Empty);
                child.record("error", "helm template failed");
            }
            root.record("attempt", 4i64);
        });
        assert_eq!(dropped, 0);
        assert_eq!(spans.len(), 2, "{spans:?}");
        let (child, root) = (&spans[0], &spans[1]);
        assert_eq!(root.name, "GenerateManifest");
        assert_eq!(child.name, "render");
        assert_eq!(root.trace_id.len(), 16);
        assert_eq!(root.span_id.len(), 8);
        assert!(root.parent_span_id.is_empty());
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, root.span_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(root.kind, SpanKind::Internal as i32);
        assert!(root.start_time_unix_nano > 1_600_000_000_000_000_000);
        assert!(root.start_time_unix_nano <= child.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= root.end_time_unix_nano);
        assert_eq!(
            attribute(root, "app"),
            Some(&any_value::Value::StringValue("guestbook".into()))
        );
        assert_eq!(
            attribute(root, "attempt"),
            Some(&any_value::Value::IntValue(4))
        );
        assert_eq!(
            attribute(root, "cached"),
            Some(&any_value::Value::BoolValue(false))
        );
        assert_eq!(
            root.attributes.len(),
            3,
            "error is the status, not an attribute"
        );
        assert!(root.status.is_none());
        let status = child.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "helm template failed");
    }

    #[test]
    fn only_this_crates_spans_at_info_and_above() {
        let (spans, _) = capture(1.0, 16, || {
            let _h2 = tracing::info_span!(target: "h2::proto", "Connection").entered();
            let _lib = tracing::info_span!(target: "manifoldx", "other").entered();
            let _debug = tracing::debug_span!("verbose").entered();
            tracing::info!("events are not spans");
            let _kept = tracing::info_span!("kept").entered();
        });
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kept"]);
        // A filtered-out span is not a parent.
        assert!(spans[0].parent_span_id.is_empty());
    }

    #[test]
    fn sampling_is_decided_once_per_trace() {
        let (spans, _) = capture(0.0, 16, || {
            let _root = tracing::info_span!("root").entered();
            let _child = tracing::info_span!("child").entered();
        });
        assert!(spans.is_empty());
        // About half of many traces, and always whole traces.
        let (spans, _) = capture(0.5, 4096, || {
            for _ in 0..1000 {
                let _root = tracing::info_span!("root").entered();
                let _child = tracing::info_span!("child").entered();
            }
        });
        let roots = spans.iter().filter(|s| s.name == "root").count();
        let children = spans.iter().filter(|s| s.name == "child").count();
        assert_eq!(roots, children);
        assert!((350..650).contains(&roots), "{roots} of 1000 sampled");
    }

    #[test]
    fn ratio_sampler_matches_the_trace_id() {
        let mut id = [0u8; 16];
        assert!(ratio_samples(&id, 1e-9));
        assert!(!ratio_samples(&id, 0.0));
        id[8..].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(!ratio_samples(&id, 0.999));
        assert!(ratio_samples(&id, 1.0));
        id[8..].copy_from_slice(&(1u64 << 63).to_be_bytes()); // half way
        assert!(ratio_samples(&id, 0.51));
        assert!(!ratio_samples(&id, 0.49));
    }

    #[test]
    fn a_traceparent_field_continues_the_callers_trace() {
        let (spans, _) = capture(0.0, 16, || {
            let _root = tracing::info_span!(
                "GenerateManifest",
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                otel.kind = "server",
            )
            .entered();
            let _child = tracing::info_span!("child").entered();
        });
        assert_eq!(spans.len(), 2, "a sampled caller overrides the ratio");
        let root = &spans[1];
        assert_eq!(
            hex::encode(&root.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex::encode(&root.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(
            root.flags,
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        );
        assert!(root.attributes.is_empty());
        assert_eq!(spans[0].trace_id, root.trace_id);
        assert_eq!(spans[0].flags, FLAG_SAMPLED | FLAG_HAS_IS_REMOTE);

        let (spans, _) = capture(1.0, 16, || {
            let _root = tracing::info_span!(
                "GenerateManifest",
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            )
            .entered();
        });
        assert!(spans.is_empty(), "an unsampled caller wins too");
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (spans, dropped) = capture(1.0, 2, || {
            for _ in 0..5 {
                let _span = tracing::info_span!("busy").entered();
            }
        });
        assert_eq!(spans.len(), 2);
        assert_eq!(dropped, 3);
    }

    /// The (field number, wire type) pairs of an encoded message.
    fn tags(mut bytes: &[u8]) -> Vec<(u64, u8)> {
        fn varint(bytes: &mut &[u8]) -> u64 {
            let mut value = 0u64;
            for shift in (0..64).step_by(7) {
                let byte = bytes[0];
                *bytes = &bytes[1..];
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            value
        }
        let mut found = Vec::new();
        while !bytes.is_empty() {
            let key = varint(&mut bytes);
            let wire = (key & 7) as u8;
            found.push((key >> 3, wire));
            let skip = match wire {
                0 => {
                    varint(&mut bytes);
                    0
                }
                1 => 8,
                2 => varint(&mut bytes) as usize,
                5 => 4,
                other => panic!("wire type {other}"),
            };
            bytes = &bytes[skip..];
        }
        found.sort();
        found
    }

    #[test]
    fn spans_encode_with_the_otlp_field_numbers() {
        use prost::Message;
        let (spans, _) = capture(1.0, 4, || {
            let _span = tracing::info_span!(
                "GenerateManifest",
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                otel.kind = "server",
                app = "guestbook",
                error = "boom",
            )
            .entered();
        });
        // trace_id 1, span_id 2, parent_span_id 4 (bytes); name 5; kind 6
        // (varint); start 7 and end 8 (fixed64); attributes 9; status 15;
        // flags 16 (fixed32).
        assert_eq!(
            tags(&spans[0].encode_to_vec()),
            [
                (1, 2),
                (2, 2),
                (4, 2),
                (5, 2),
                (6, 0),
                (7, 1),
                (8, 1),
                (9, 2),
                (15, 2),
                (16, 5)
            ]
        );
        // Status: message 2, code 3.
        let status = spans[0].status.as_ref().unwrap().encode_to_vec();
        assert_eq!(tags(&status), [(2, 2), (3, 0)]);
        // KeyValue: key 1, value 2; AnyValue string_value 1.
        let attribute = &spans[0].attributes[0];
        assert_eq!(tags(&attribute.encode_to_vec()), [(1, 2), (2, 2)]);
        let value = attribute.value.as_ref().unwrap().encode_to_vec();
        assert_eq!(tags(&value), [(1, 2)]);
    }

    #[test]
    fn long_values_are_cut() {
        let long = "é".repeat(MAX_VALUE_BYTES);
        let (spans, _) = capture(1.0, 4, || {
            let _span = tracing::info_span!("big", text = long.as_str()).entered();
        });
        let Some(any_value::Value::StringValue(text)) = attribute(&spans[0], "text") else {
            panic!("no text attribute");
        };
        assert!(text.len() <= MAX_VALUE_BYTES && text.len() >= MAX_VALUE_BYTES - 1);
    }
}
