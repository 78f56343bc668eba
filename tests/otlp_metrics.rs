//! Metrics over OTLP end to end, on both back ends: the real connector with `[telemetry]
//! otlp_endpoint` pointed at a small OTLP/HTTP collector in this test syncs an Outlook event
//! into CRM; the collector receives the events counter by outcome, gauges and histograms with
//! counts, under the names `/metrics` serves; and the last values are sent once more at stop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use crm_graph_connector::context::Tuning;
use crm_graph_connector::demo::{Harness, MAILBOX, fast_tuning, wait_for};
use crm_graph_connector::run::Roles;
use crm_graph_connector::telemetry::{BUCKETS, metric};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use prost::Message;

mod support;
use support::{Backend, crm_records_with_subject, outlook_event, start};

/// The export requests the collector received, in order.
type Received = Arc<Mutex<Vec<ExportMetricsServiceRequest>>>;

/// An OTLP/HTTP collector on 127.0.0.1 (this test's runtime): its base URL and what it got.
async fn collector() -> (String, Received) {
    let got: Received = Arc::default();
    let into = got.clone();
    let app = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |body: Bytes| {
            let into = into.clone();
            async move {
                let req = ExportMetricsServiceRequest::decode(body.as_ref())
                    .expect("an OTLP protobuf metrics export");
                into.lock().unwrap().push(req);
                (
                    StatusCode::OK,
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

fn labels(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|a| a.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The metrics of one export by name (one resource, one scope), and its resource's attributes.
fn metrics_of(
    r: &ExportMetricsServiceRequest,
) -> (BTreeMap<String, Data>, BTreeMap<String, String>) {
    assert_eq!(r.resource_metrics.len(), 1, "{r:#?}");
    let rm = &r.resource_metrics[0];
    let resource = labels(&rm.resource.as_ref().expect("a resource").attributes);
    let mut out = BTreeMap::new();
    for sm in &rm.scope_metrics {
        for m in &sm.metrics {
            let data = m.data.clone().expect("data");
            assert!(
                out.insert(m.name.clone(), data).is_none(),
                "{} twice",
                m.name
            );
        }
    }
    (out, resource)
}

/// The value of the `events_total{outcome}` point of an export, when it has one.
fn events(r: &ExportMetricsServiceRequest, outcome: &str) -> Option<i64> {
    let (m, _) = metrics_of(r);
    let Some(Data::Sum(s)) = m.get(&format!("cgc_{}", metric::EVENTS)) else {
        return None;
    };
    s.data_points.iter().find_map(|p| {
        let l = labels(&p.attributes);
        (l.get("outcome").map(String::as_str) == Some(outcome)).then_some(match p.value {
            Some(Value::AsInt(v)) => v,
            other => panic!("an integer counter: {other:?}"),
        })
    })
}

/// The harness restarted with its metrics exported to `endpoint` every `every`.
async fn exporting(b: Backend, endpoint: &str, every: Duration) -> Harness {
    let mut h = start(b).await;
    h.config_text = format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\n{}",
        h.config_text
    );
    let tuning = Tuning {
        otlp_metrics_interval: every,
        ..fast_tuning(2)
    };
    h.restart_with(tuning, Roles::ALL).await.unwrap();
    h.wait_subscribed().await.unwrap();
    h
}

/// An Outlook event synced into CRM.
async fn sync_one(h: &Harness, subject: &str) {
    h.graph
        .user_create_event(MAILBOX, outlook_event(2, subject));
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(h, subject).is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
}

async fn metrics_reach_the_collector_under_the_names_of_the_metrics_page(b: Backend) {
    let (endpoint, got) = collector().await;
    let h = exporting(b, &endpoint, Duration::from_millis(200)).await;
    sync_one(&h, "Metered over OTLP").await;
    wait_for(
        "an export with events_total{outcome=\"create\"}",
        Duration::from_secs(20),
        || async {
            got.lock()
                .unwrap()
                .last()
                .and_then(|r| events(r, "create"))
                .is_some_and(|v| v >= 1)
        },
    )
    .await
    .unwrap();
    let page = reqwest::get(format!("{}/metrics", h.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last = got.lock().unwrap().last().cloned().unwrap();
    let (all, resource) = metrics_of(&last);
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("crm-graph-connector")
    );
    // A gauge: the queue depth (read like a scrape before each export) and the last sync.
    let Some(Data::Gauge(depth)) = all.get("cgc_queue_depth") else {
        panic!("cgc_queue_depth is a gauge: {all:#?}")
    };
    let states: Vec<String> = depth
        .data_points
        .iter()
        .filter_map(|p| labels(&p.attributes).get("state").cloned())
        .collect();
    assert_eq!(states, ["delayed", "in_flight", "ready"]);
    let Some(Data::Gauge(last_sync)) = all.get("cgc_mailbox_last_sync_timestamp_seconds") else {
        panic!("the last sync is a gauge: {all:#?}")
    };
    assert!(last_sync.data_points.iter().any(|p| {
        labels(&p.attributes).get("mailbox").map(String::as_str) == Some(MAILBOX)
            && matches!(p.value, Some(Value::AsInt(t)) if t > 1_700_000_000)
    }));
    // Histograms with counts, in the buckets of /metrics.
    for name in ["cgc_sync_latency_seconds", "cgc_graph_request_seconds"] {
        let Some(Data::Histogram(hist)) = all.get(name) else {
            panic!("{name} is a histogram: {all:#?}")
        };
        assert!(!hist.data_points.is_empty());
        for p in &hist.data_points {
            assert_eq!(p.explicit_bounds, BUCKETS.to_vec(), "{name}");
            assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count, "{name}");
        }
        assert!(hist.data_points.iter().any(|p| p.count >= 1), "{name}");
    }
    // Every exported metric is a family of /metrics, of the same kind.
    for (name, data) in &all {
        let kind = match data {
            Data::Sum(_) => "counter",
            Data::Gauge(_) => "gauge",
            Data::Histogram(_) => "histogram",
            Data::Summary(_) => "summary",
            other => panic!("{name}: unexpected {other:?}"),
        };
        let line = format!("# TYPE {name} {kind}");
        assert!(page.lines().any(|l| l == line), "{line} not on /metrics");
        let bare = name.strip_prefix("cgc_").unwrap();
        assert!(metric::ALL.contains(&bare), "{name} is not registered");
    }
    h.stop().await;
}

async fn the_last_metrics_are_sent_at_stop(b: Backend) {
    let (endpoint, got) = collector().await;
    // An interval no test reaches: what the collector gets comes from the stop.
    let h = exporting(b, &endpoint, Duration::from_secs(3600)).await;
    sync_one(&h, "Metered at stop").await;
    let created = h
        .app()
        .metrics
        .get(metric::EVENTS, &[("outcome", "create")]);
    assert!(created >= 1);
    assert!(got.lock().unwrap().is_empty(), "no export before the stop");
    h.stop().await;
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1, "one export at stop");
    assert_eq!(events(&got[0], "create"), Some(created as i64));
}

each_backend!(
    metrics_reach_the_collector_under_the_names_of_the_metrics_page,
    the_last_metrics_are_sent_at_stop,
);
