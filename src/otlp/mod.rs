//! OTLP trace export (`--otlp-address`), without the OpenTelemetry SDK.
//!
//! [`layer()`] returns a `tracing_subscriber` layer that turns the server's
//! closed `tracing` spans (the `#[tracing::instrument]` spans of the gRPC
//! handlers and their children) into OTLP spans, and a background task
//! that batches them and sends them to the collector with the generated
//! `TraceService/Export` client. As Argo CD's repo-server does, the
//! resource carries `service.name=argocd-repo-server` plus `--otlp-attrs`,
//! every export carries `--otlp-headers`, and sampling is parent-based with
//! a trace-id ratio (`--otlp-sample-ratio`) for new traces.
//!
//! Nothing here ever blocks a request: a span that does not fit in the
//! bounded queue is dropped and counted.

mod export;
mod layer;

use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tracing::Subscriber;
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::LookupSpan;

pub use export::OtlpGuard;
pub use layer::{OtlpLayer, SpanFilter};

/// The OTLP messages and the trace service, generated from
/// `proto/otlp/` (module paths follow the protobuf packages under
/// `opentelemetry.proto`, as prost's `super::` references require).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    pub mod collector {
        pub mod trace {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
            }
        }
    }
    pub mod trace {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.trace.v1");
        }
    }
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.common.v1");
        }
    }
    pub mod resource {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.resource.v1");
        }
    }
}

/// The `service.name` resource attribute, Argo CD's for this component.
pub const SERVICE_NAME: &str = "argocd-repo-server";

/// The collector's port when `--otlp-address` names none (gRPC's default,
/// as Argo CD's Go client resolves it).
const DEFAULT_PORT: u16 = 443;

/// Where and how to export, from the `--otlp-*` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// `host:port` of the collector's OTLP/gRPC port.
    pub address: String,
    /// Plaintext HTTP/2 instead of TLS (verified against the system roots).
    pub insecure: bool,
    /// gRPC metadata sent with every export; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// Resource attributes besides `service.name` (a repeated key keeps
    /// the last value; `service.name` may be overridden).
    pub attributes: Vec<(String, String)>,
    /// Share of new traces recorded, 0 to 1.
    pub sample_ratio: f64,
}

impl OtlpConfig {
    /// Parses the flags as Argo CD's repo-server takes them: `address` is
    /// `host[:port]` (no scheme), `headers` is `k=v,k2=v2`, `attrs` is
    /// `key:value,key2:value2`, `ratio` a number from 0 to 1. `None` when
    /// `address` is empty (tracing off). A value that does not parse is an
    /// error naming the flag (Argo CD warns and drops a malformed attribute,
    /// and falls back to defaults for malformed environment variables).
    pub fn from_args(
        address: &str,
        insecure: bool,
        headers: &str,
        attrs: &str,
        ratio: &str,
    ) -> Result<Option<OtlpConfig>, String> {
        let address = address.trim();
        if address.is_empty() {
            return Ok(None);
        }
        Ok(Some(OtlpConfig {
            address: parse_address(address)?,
            insecure,
            headers: parse_headers(headers)?,
            attributes: parse_attributes(attrs)?,
            sample_ratio: parse_ratio(ratio)?,
        }))
    }

    /// The collector's URI: `http://` when insecure, else `https://`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}", self.address)
    }
}

fn parse_address(address: &str) -> Result<String, String> {
    let invalid = |why: &str| {
        format!("invalid --otlp-address (ARGOCD_REPO_SERVER_OTLP_ADDRESS) {address:?}: {why}")
    };
    if address.contains("://") {
        return Err(invalid("expected host:port, without a scheme"));
    }
    let uri: tonic::transport::Uri = format!("http://{address}")
        .parse()
        .map_err(|_| invalid("expected host:port"))?;
    let authority = match uri.authority() {
        Some(authority) if uri.path() == "/" && uri.query().is_none() => authority,
        _ => return Err(invalid("expected host:port")),
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(invalid("expected host:port"));
    }
    Ok(match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None if authority.as_str().ends_with(':') => return Err(invalid("empty port")),
        None => format!("{}:{DEFAULT_PORT}", authority.as_str()),
    })
}

fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let invalid = |why: &str| {
            format!("invalid --otlp-headers (ARGOCD_REPO_SERVER_OTLP_HEADERS) {pair:?}: {why}")
        };
        let Some((name, value)) = pair.split_once('=') else {
            return Err(invalid("expected key=value"));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name.is_empty() {
            return Err(invalid("empty key"));
        }
        if AsciiMetadataKey::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid("not a valid gRPC metadata name"));
        }
        // gRPC ASCII metadata: printable ASCII only.
        let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !printable || AsciiMetadataValue::try_from(value).is_err() {
            return Err(invalid("not a valid gRPC metadata value"));
        }
        headers.retain(|(known, _): &(String, String)| *known != name);
        headers.push((name, value.to_string()));
    }
    Ok(headers)
}

fn parse_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut attributes = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(':');
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "invalid --otlp-attrs (ARGOCD_REPO_SERVER_OTLP_ATTRS) {pair:?}: \
                 expected key:value with a single colon"
            ));
        };
        if key.trim().is_empty() {
            return Err(format!(
                "invalid --otlp-attrs (ARGOCD_REPO_SERVER_OTLP_ATTRS) {pair:?}: empty key"
            ));
        }
        attributes.push((key.trim().to_string(), value.trim().to_string()));
    }
    Ok(attributes)
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let invalid = |why: &str| {
        format!(
            "invalid --otlp-sample-ratio (ARGOCD_REPO_SERVER_OTLP_SAMPLE_RATIO) {text:?}: {why}"
        )
    };
    let ratio: f64 = text.trim().parse().map_err(|_| invalid("not a number"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid("must be between 0 and 1"));
    }
    Ok(ratio)
}

/// The layer to add to the subscriber (filtered to this crate's spans at
/// INFO and above, whatever `--loglevel` says) and the guard that flushes
/// on shutdown. The exporter task is spawned on `runtime` and connects
/// lazily.
pub fn layer<S>(
    config: OtlpConfig,
    runtime: &tokio::runtime::Handle,
) -> (Filtered<OtlpLayer, SpanFilter, S>, OtlpGuard)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(export::QUEUE_CAPACITY);
    let stats = std::sync::Arc::new(layer::Stats::default());
    let layer = OtlpLayer::new(sender, config.sample_ratio, stats.clone());
    let guard = export::spawn(&config, runtime, receiver, stats);
    (layer.with_filter(SpanFilter), guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        address: &str,
        headers: &str,
        attrs: &str,
        ratio: &str,
    ) -> Result<Option<OtlpConfig>, String> {
        OtlpConfig::from_args(address, true, headers, attrs, ratio)
    }

    #[test]
    fn empty_address_turns_tracing_off() {
        assert_eq!(parse("", "x=y", "a:b", "1.0"), Ok(None));
        assert_eq!(parse("  ", "", "", "1.0"), Ok(None));
        // Other flags are not even looked at, as Argo CD ignores them.
        assert_eq!(parse("", "garbage", "garbage", "x"), Ok(None));
    }

    #[test]
    fn parses_argo_cd_flags() {
        let config = OtlpConfig::from_args(
            "otel-collector.monitoring:4317",
            false,
            "x-token=abc, Authorization=Bearer t=k",
            "team:platform, env:prod",
            "0.25",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            config,
            OtlpConfig {
                address: "otel-collector.monitoring:4317".into(),
                insecure: false,
                headers: vec![
                    ("x-token".into(), "abc".into()),
                    ("authorization".into(), "Bearer t=k".into()),
                ],
                attributes: vec![
                    ("team".into(), "platform".into()),
                    ("env".into(), "prod".into()),
                ],
                sample_ratio: 0.25,
            }
        );
        assert_eq!(config.endpoint(), "https://otel-collector.monitoring:4317");
        let config = parse("127.0.0.1:4317", "", "", "1.0").unwrap().unwrap();
        assert_eq!(config.endpoint(), "http://127.0.0.1:4317");
        assert!(config.headers.is_empty() && config.attributes.is_empty());
        assert_eq!(config.sample_ratio, 1.0);
    }

    #[test]
    fn address_without_port_gets_grpc_default() {
        let config = parse("collector", "", "", "1").unwrap().unwrap();
        assert_eq!(config.address, "collector:443");
        let config = parse("[::1]:4317", "", "", "1").unwrap().unwrap();
        assert_eq!(config.address, "[::1]:4317");
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (address, headers, attrs, ratio, flag) in [
            ("http://collector:4317", "", "", "1", "--otlp-address"),
            ("collector:4317/v1/traces", "", "", "1", "--otlp-address"),
            ("collector:", "", "", "1", "--otlp-address"),
            ("c:4317", "token", "", "1", "--otlp-headers"),
            ("c:4317", "=abc", "", "1", "--otlp-headers"),
            ("c:4317", "bad name=abc", "", "1", "--otlp-headers"),
            ("c:4317", "x=caf\u{e9}", "", "1", "--otlp-headers"),
            ("c:4317", "", "team", "1", "--otlp-attrs"),
            ("c:4317", "", "url:http://x", "1", "--otlp-attrs"),
            ("c:4317", "", ":value", "1", "--otlp-attrs"),
            ("c:4317", "", "", "half", "--otlp-sample-ratio"),
            ("c:4317", "", "", "1.5", "--otlp-sample-ratio"),
            ("c:4317", "", "", "-0.1", "--otlp-sample-ratio"),
            ("c:4317", "", "", "NaN", "--otlp-sample-ratio"),
        ] {
            let err = parse(address, headers, attrs, ratio).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid {flag} ")),
                "{address} {headers} {attrs} {ratio}: {err}"
            );
        }
    }

    #[test]
    fn repeated_header_keeps_the_last_value() {
        let config = parse("c:1", "a=1,A=2", "k:1,k:2", "0").unwrap().unwrap();
        assert_eq!(config.headers, vec![("a".to_string(), "2".to_string())]);
        // Attributes are deduplicated when the resource is built.
        assert_eq!(config.attributes.len(), 2);
        assert_eq!(config.sample_ratio, 0.0);
    }
}
