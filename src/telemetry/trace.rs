//! Traces: every `tracing` span of the connector is an OpenTelemetry span; the W3C trace context
//! (`traceparent`, `tracestate`) rides in the queue message headers, so one trace covers
//! receiver → queue → worker (and scheduler → queue → worker); with `[telemetry] otlp_endpoint`
//! the spans are exported over OTLP/HTTP (protobuf).
//!
//! Without an endpoint spans still get trace ids (logged as `trace_id`, carried across the
//! queue) but go nowhere.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The name spans are exported under (`service.name`).
pub const SERVICE_NAME: &str = "crm-graph-connector";
/// Path of the trace signal under an OTLP/HTTP endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// The provider of this process (installed with the subscriber, once).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error(
    "telemetry.otlp_endpoint = {endpoint:?}: the OTLP exporter cannot be set up ({reason}); expected e.g. \"http://otel-collector:4318\""
)]
pub struct ExporterError {
    pub endpoint: String,
    pub reason: String,
}

/// A tracer provider: batch export to `<endpoint>/v1/traces` when an endpoint is given, else none.
pub(super) fn provider(endpoint: Option<&str>) -> Result<SdkTracerProvider, ExporterError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(SERVICE_NAME)
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = endpoint else {
        return Ok(builder.build());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| ExporterError {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The `tracing` layer feeding `provider`, which becomes the process's provider.
pub(super) fn layer<S>(
    provider: SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let tracer = provider.tracer(SERVICE_NAME);
    let _ = PROVIDER.set(provider);
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
}

/// Sends the spans not exported yet (at shutdown); waits at most the SDK's export timeout.
pub async fn flush() {
    if let Some(p) = PROVIDER.get() {
        let p = p.clone();
        // The batch exporter's own thread does the HTTP; this call only waits for it.
        let _ = tokio::task::spawn_blocking(move || p.force_flush()).await;
    }
}

struct Write<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Write<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct Read<'a>(&'a BTreeMap<String, String>);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The W3C trace context headers of `span` (`traceparent`, maybe `tracestate`); empty when the
/// span has no trace (tracing not installed, span disabled).
pub fn headers_of(span: &tracing::Span) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Write(&mut out));
    }
    out
}

/// Makes `span` (not entered yet) a child of the trace context in `headers`, when they carry a
/// valid one, and records its trace id in the span's `trace_id` field (so log lines show it).
pub fn continue_from(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(&Read(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
    note_trace_id(span);
}

/// Records the trace id of `span` in its `trace_id` field (so log lines inside it show it).
pub fn note_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// The trace id of `span` (32 hex digits), when it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// JSON logs and traced spans, as `init` installs them, for the closure only.
    fn traced<R>(logs: &Buf, f: impl FnOnce() -> R) -> R {
        let w = logs.clone();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(move || w.clone()),
            )
            .with(layer(provider(None).unwrap()));
        tracing::subscriber::with_default(subscriber, f)
    }

    const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_span_continues_the_trace_in_headers_and_passes_it_on() {
        let logs = Buf::default();
        traced(&logs, || {
            let incoming = BTreeMap::from([("traceparent".to_string(), SENT.to_string())]);
            let span = tracing::info_span!("event", trace_id = tracing::field::Empty);
            continue_from(&span, &incoming);
            assert_eq!(
                trace_id(&span).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let out = headers_of(&span);
            let tp = out.get("traceparent").expect("traceparent passed on");
            assert!(
                tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{tp}"
            );
            assert!(!tp.contains("00f067aa0ba902b7"), "a new span id: {tp}");
            span.in_scope(|| tracing::info!("inside"));
        });
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#),
            "the log line carries the trace id: {text}"
        );
    }

    #[test]
    fn a_bad_traceparent_starts_a_new_trace() {
        traced(&Buf::default(), || {
            for bad in [
                "garbage",
                "00-zz-yy-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ] {
                let incoming = BTreeMap::from([("traceparent".to_string(), bad.to_string())]);
                let span = tracing::info_span!("event", trace_id = tracing::field::Empty);
                continue_from(&span, &incoming);
                let id = trace_id(&span).expect("a fresh trace");
                assert_ne!(id, "00000000000000000000000000000000");
            }
        });
    }

    #[test]
    fn without_tracing_no_header_is_made() {
        let span = tracing::Span::none();
        assert!(headers_of(&span).is_empty());
        assert_eq!(trace_id(&span), None);
    }
}
