//! Metrics over OTLP/HTTP (protobuf): with `[telemetry] otlp_endpoint` every series of the
//! [`Metrics`] registry is POSTed to `<otlp_endpoint>/v1/metrics` (periodically, and once more
//! at shutdown, by `run`), under the names `/metrics` serves (`cgc_…`): counters as cumulative
//! monotonic sums, gauges as gauges, histograms as cumulative histograms with [`super::BUCKETS`]
//! as bounds, the event latency summary as a summary; resource `service.name` as the traces.
//!
//! A collector that is down or refuses never fails the service: the failure is counted
//! (`otlp_export_failures_total`) and logged at WARN at most once a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric::Data,
    number_data_point::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::snapshot::{Series, Snapshot};
use super::trace::{ExporterError, SERVICE_NAME};
use super::{Metrics, metric};

/// Path of the metrics signal under an OTLP/HTTP endpoint.
pub const METRICS_PATH: &str = "/v1/metrics";
/// Longest time one export may take (a collector that hangs costs no more at shutdown).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Export failures are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One export did not reach the collector.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the OTLP collector cannot be reached: {0}")]
    Unreachable(String),
    #[error("the OTLP collector answered HTTP {0}")]
    Refused(u16),
}

/// Sends the registry's series to one OTLP/HTTP endpoint.
pub struct MetricsExporter {
    url: String,
    client: reqwest::Client,
    last_warn: Mutex<Option<Instant>>,
}

impl MetricsExporter {
    /// An exporter to `<endpoint>/v1/metrics` (`endpoint` as `[telemetry] otlp_endpoint`).
    pub fn new(endpoint: &str) -> Result<MetricsExporter, ExporterError> {
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| ExporterError {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        Ok(MetricsExporter {
            url: format!("{}{METRICS_PATH}", endpoint.trim_end_matches('/')),
            client,
            last_warn: Mutex::new(None),
        })
    }

    /// Sends every series of `metrics` once. A failure is counted in `metrics`
    /// (`otlp_export_failures_total`) and logged at WARN at most once a minute; the error is
    /// returned for the caller's information only.
    pub async fn export(&self, metrics: &Metrics) -> Result<(), ExportError> {
        let body = request(&metrics.snapshot(), SystemTime::now()).encode_to_vec();
        let sent = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(ExportError::Refused(r.status().as_u16())),
            // Without the URL: an endpoint's user info never reaches a log line.
            Err(e) => Err(ExportError::Unreachable(e.without_url().to_string())),
        };
        if let Err(e) = &outcome {
            metrics.inc(metric::OTLP_EXPORT_FAILURES, &[]);
            self.warn(e);
        }
        outcome
    }

    fn warn(&self, e: &ExportError) {
        let Ok(mut last) = self.last_warn.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(error = %e,
                "telemetry.otlp_endpoint: metrics not exported (counted in otlp_export_failures_total; logged at most once a minute)");
            *last = Some(Instant::now());
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| text(k, v)).collect()
}

/// The series of `all` grouped by name (they come sorted by name), each group one metric.
fn by_name<T>(all: &[Series<T>]) -> Vec<(&str, Vec<&Series<T>>)> {
    let mut out: Vec<(&str, Vec<&Series<T>>)> = Vec::new();
    for s in all {
        match out.last_mut() {
            Some((name, group)) if *name == s.name => group.push(s),
            _ => out.push((s.name.as_str(), vec![s])),
        }
    }
    out
}

fn metric(name: &str, data: Data) -> Metric {
    Metric {
        name: format!("cgc_{name}"),
        data: Some(data),
        ..Default::default()
    }
}

/// The OTLP export request of a snapshot taken at `now`.
pub fn request(s: &Snapshot, now: SystemTime) -> ExportMetricsServiceRequest {
    let (start, now) = (nanos(s.started), nanos(now));
    let cumulative = AggregationTemporality::Cumulative as i32;
    let number = |labels: &[(String, String)], v: i64, start: u64| NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(Value::AsInt(v)),
        ..Default::default()
    };
    let mut metrics = Vec::new();
    for (name, group) in by_name(&s.counters) {
        let data_points = group
            .iter()
            .map(|c| number(&c.labels, i64::try_from(c.value).unwrap_or(i64::MAX), start))
            .collect();
        metrics.push(metric(
            name,
            Data::Sum(Sum {
                data_points,
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ));
    }
    for (name, group) in by_name(&s.gauges) {
        let data_points = group
            .iter()
            .map(|g| number(&g.labels, g.value, 0))
            .collect();
        metrics.push(metric(name, Data::Gauge(Gauge { data_points })));
    }
    for (name, group) in by_name(&s.histograms) {
        let data_points = group
            .iter()
            .map(|h| HistogramDataPoint {
                attributes: attributes(&h.labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: h.value.count,
                sum: Some(h.value.sum),
                bucket_counts: h.value.counts.clone(),
                explicit_bounds: h.value.bounds.to_vec(),
                ..Default::default()
            })
            .collect();
        metrics.push(metric(
            name,
            Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: cumulative,
            }),
        ));
    }
    for (name, group) in by_name(&s.summaries) {
        let data_points = group
            .iter()
            .map(|m| SummaryDataPoint {
                attributes: attributes(&m.labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                sum: m.value.0,
                count: m.value.1,
                ..Default::default()
            })
            .collect();
        metrics.push(metric(name, Data::Summary(Summary { data_points })));
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![text("service.name", SERVICE_NAME)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SERVICE_NAME.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn point_text(kv: &[KeyValue]) -> Vec<(String, String)> {
        kv.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|a| a.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    fn find<'a>(r: &'a ExportMetricsServiceRequest, name: &str) -> &'a Data {
        r.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.data.as_ref())
            .unwrap_or_else(|| panic!("{name} exported: {r:#?}"))
    }

    #[test]
    fn counters_are_cumulative_sums_gauges_gauges_and_histograms_keep_the_buckets() {
        let m = Metrics::default();
        m.add(metric::EVENTS, &[("outcome", "create")], 2);
        m.inc(metric::EVENTS, &[("outcome", "retry")]);
        m.set_gauge(metric::QUEUE_DEPTH, &[("state", "ready")], 7);
        m.observe(metric::SYNC_LATENCY, &[("source", "delta")], 0.2);
        m.observe(metric::SYNC_LATENCY, &[("source", "delta")], 9999.0);
        let r = request(&m.snapshot(), SystemTime::now());
        let res = r.resource_metrics[0].resource.as_ref().unwrap();
        assert_eq!(
            point_text(&res.attributes),
            vec![("service.name".to_string(), SERVICE_NAME.to_string())]
        );
        let Data::Sum(sum) = find(&r, "cgc_events_total") else {
            panic!("a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let points: Vec<_> = sum
            .data_points
            .iter()
            .map(|p| (point_text(&p.attributes), p.value))
            .collect();
        let outcome = |o: &str| vec![("outcome".to_string(), o.to_string())];
        assert_eq!(
            points,
            vec![
                (outcome("create"), Some(Value::AsInt(2))),
                (outcome("retry"), Some(Value::AsInt(1)))
            ]
        );
        assert!(sum.data_points[0].start_time_unix_nano > 0);
        assert!(sum.data_points[0].time_unix_nano >= sum.data_points[0].start_time_unix_nano);
        let Data::Gauge(g) = find(&r, "cgc_queue_depth") else {
            panic!("a gauge")
        };
        assert_eq!(g.data_points[0].value, Some(Value::AsInt(7)));
        let Data::Histogram(h) = find(&r, "cgc_sync_latency_seconds") else {
            panic!("a histogram")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, super::super::BUCKETS.to_vec());
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!(p.count, 2);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 2);
        assert_eq!(p.bucket_counts[5], 1, "0.2 s is in the (0.1, 0.25] bucket");
        assert_eq!(*p.bucket_counts.last().unwrap(), 1, "above 600 s");
        assert!(matches!(find(&r, "cgc_event_latency_ms"), Data::Summary(_)));
    }

    /// A collector on 127.0.0.1 answering every POST with `status`; the bodies it got.
    async fn collector(status: u16) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let into = got.clone();
        let app = axum::Router::new().route(
            METRICS_PATH,
            axum::routing::post(move |body: axum::body::Bytes| {
                let into = into.clone();
                async move {
                    into.lock().unwrap().push(body.to_vec());
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/"), got)
    }

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

    #[tokio::test(flavor = "current_thread")]
    async fn a_collector_answering_500_or_absent_costs_a_counted_failure_and_one_warning() {
        let logs = Buf::default();
        let w = logs.clone();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .finish(),
        );
        let m = Metrics::default();
        m.inc(metric::EVENTS, &[("outcome", "create")]);

        let (failing, got) = collector(500).await;
        let e = MetricsExporter::new(&failing).unwrap();
        assert!(matches!(e.export(&m).await, Err(ExportError::Refused(500))));
        assert_eq!(got.lock().unwrap().len(), 1, "the collector was asked");
        assert_eq!(m.total(metric::OTLP_EXPORT_FAILURES), 1);

        // Nobody listens on the port any more.
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let e2 = MetricsExporter::new(&format!("http://{addr}")).unwrap();
        assert!(matches!(
            e2.export(&m).await,
            Err(ExportError::Unreachable(_))
        ));
        assert!(matches!(e.export(&m).await, Err(ExportError::Refused(500))));
        assert_eq!(m.total(metric::OTLP_EXPORT_FAILURES), 3);
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let warnings = text.matches("metrics not exported").count();
        assert_eq!(
            warnings, 2,
            "one warning per exporter within a minute: {text}"
        );
        assert!(
            !text.contains(&addr.to_string()),
            "no endpoint in the log: {text}"
        );

        // A collector that accepts gets the failures counted so far.
        let (ok, got) = collector(200).await;
        MetricsExporter::new(&ok).unwrap().export(&m).await.unwrap();
        assert_eq!(m.total(metric::OTLP_EXPORT_FAILURES), 3);
        let body = got.lock().unwrap()[0].clone();
        let r = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        let Data::Sum(s) = find(&r, "cgc_otlp_export_failures_total") else {
            panic!("a sum")
        };
        assert_eq!(s.data_points[0].value, Some(Value::AsInt(3)));
    }
}
