//! Traces end to end: the real connector with its spans exported over OTLP/HTTP (protobuf) to a
//! small collector in this test, on both back ends. One notification (sent with a W3C
//! `traceparent`) must come out as one trace: the receiver's batch span continues the sender's
//! trace, its notification span is the parent of the worker's event span across the queue. A
//! CRM-side change is one trace from the scheduler's job span to the worker's event span. The
//! worker's Graph and CRM requests are spans under its event span.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use crm_graph_connector::demo::{MAILBOX, TENANT, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::json;

mod support;
use support::{Backend, crm_appointment, crm_records_with_subject, outlook_event, start};

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: BTreeMap<String, String>,
}

struct Collector {
    spans: Arc<Mutex<Vec<Seen>>>,
}

fn text(v: &Option<Any>) -> String {
    match v {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn decode(body: &[u8]) -> Vec<Seen> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace export");
    let mut out = Vec::new();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = kv.value.as_ref().and_then(|a| a.value.clone());
                        (kv.key.clone(), text(&v))
                    })
                    .collect();
                out.push(Seen {
                    name: s.name,
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent: s.parent_span_id,
                    attrs,
                });
            }
        }
    }
    out
}

/// The collector (own thread and runtime, so it outlives each test's runtime) and the process's
/// tracing, exporting to it; once per test process.
fn collector() -> &'static Collector {
    static C: OnceLock<Collector> = OnceLock::new();
    C.get_or_init(|| {
        let spans: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let into = spans.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: Bytes| {
                        let into = into.clone();
                        async move {
                            into.lock().unwrap().extend(decode(&body));
                            (
                                StatusCode::OK,
                                [("content-type", "application/x-protobuf")],
                                Vec::<u8>::new(),
                            )
                        }
                    }),
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        crm_graph_connector::telemetry::init_with("error", Some(&format!("http://{addr}")))
            .expect("exporter set up");
        Collector { spans }
    })
}

fn spans(c: &Collector) -> Vec<Seen> {
    c.spans.lock().unwrap().clone()
}

fn one<'a>(all: &'a [Seen], what: &str, f: impl Fn(&Seen) -> bool) -> &'a Seen {
    let found: Vec<&Seen> = all.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} span: {found:#?}");
    found[0]
}

/// Whether one of `ancestors` is `s`'s parent, or its parent's, and so on (within `all`).
fn has_ancestor(all: &[Seen], s: &Seen, ancestors: &[&Vec<u8>]) -> bool {
    let mut at = s;
    for _ in 0..all.len() {
        if ancestors.contains(&&at.parent) {
            return true;
        }
        match all.iter().find(|p| p.span_id == at.parent) {
            Some(p) => at = p,
            None => return false,
        }
    }
    false
}

async fn one_trace_from_receiver_and_scheduler_to_worker(b: Backend) {
    let c = collector();
    let h = start(b).await;
    let sub = h
        .graph
        .subscriptions()
        .into_iter()
        .find(|s| {
            s["resource"]
                .as_str()
                .is_some_and(|r| r.ends_with("/events"))
        })
        .expect("an events subscription");
    // Graph's own notification is dropped: this test sends it, with a trace context.
    h.graph.drop_notifications(1);
    let created = h
        .graph
        .user_create_event(MAILBOX, outlook_event(3, "Traced notification"));
    let item = created["id"].as_str().unwrap().to_string();
    let trace_hex = uuid::Uuid::new_v4().simple().to_string();
    let parent_hex = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let body = json!({"value": [{
        "subscriptionId": sub["id"], "clientState": sub["clientState"], "changeType": "created",
        "resource": format!("Users/{MAILBOX}/Events/{item}"), "tenantId": "t",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": item,
            "@odata.etag": created["@odata.etag"]}
    }]});
    let r = reqwest::Client::new()
        .post(format!("{}/notifications", h.receiver_url()))
        .header("traceparent", format!("00-{trace_hex}-{parent_hex}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "Traced notification").is_empty()
    })
    .await
    .unwrap();
    // A CRM-side change: found by the scheduler's CRM poll, written to Outlook by the worker.
    let (crm_id, _) = crm_appointment(&h, "Traced from CRM", 4).await;
    h.settle().await.unwrap();
    h.stop().await; // flushes the exporter

    let all = spans(c);
    let trace = hex::decode(&trace_hex).unwrap();
    assert_eq!(trace.len(), 16);
    let ours: Vec<Seen> = all
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();
    let batch = one(&ours, "notification_batch", |s| {
        s.name == "notification_batch"
    });
    assert_eq!(
        batch.parent,
        hex::decode(parent_hex).unwrap(),
        "the batch continues the sender's span"
    );
    let note = one(&ours, "notification", |s| s.name == "notification");
    assert_eq!(note.parent, batch.span_id, "notification inside the batch");
    for (k, v) in [("tenant", TENANT), ("mailbox", MAILBOX), ("item", &item)] {
        assert_eq!(
            note.attrs.get(k).map(String::as_str),
            Some(v),
            "{k}: {note:?}"
        );
    }
    assert_eq!(
        note.attrs.get("entity").map(String::as_str),
        Some("appointment")
    );
    let events: Vec<&Seen> = ours.iter().filter(|s| s.name == "event").collect();
    assert!(
        !events.is_empty(),
        "the worker's event span is in the trace: {ours:#?}"
    );
    for ev in &events {
        assert_eq!(
            ev.parent, note.span_id,
            "worker span is the notification's child across the queue"
        );
        for (k, v) in [
            ("tenant", TENANT),
            ("mailbox", MAILBOX),
            ("item", &item),
            ("entity", "appointment"),
        ] {
            assert_eq!(ev.attrs.get(k).map(String::as_str), Some(v), "{k}: {ev:?}");
        }
        assert!(
            ev.attrs.contains_key("decision"),
            "decision recorded: {ev:?}"
        );
    }

    // Worker → Graph → CRM: the event's Graph reads and CRM writes are spans under it.
    let event_ids: Vec<&Vec<u8>> = events.iter().map(|e| &e.span_id).collect();
    for name in ["graph_request", "crm_request"] {
        assert!(
            ours.iter()
                .any(|s| s.name == name && has_ancestor(&ours, s, &event_ids)),
            "a {name} span under the worker's event span: {ours:#?}"
        );
    }

    // Scheduler → queue → worker: the CRM record's event span is a child of a crm_poll job span.
    let crm_item = crm_id.to_string();
    let crm_events: Vec<&Seen> = all
        .iter()
        .filter(|s| s.name == "event" && s.attrs.get("item") == Some(&crm_item))
        .collect();
    assert!(
        !crm_events.is_empty(),
        "the CRM record's event span was exported"
    );
    for ev in crm_events {
        let job = all
            .iter()
            .find(|s| s.span_id == ev.parent && s.trace_id == ev.trace_id)
            .unwrap_or_else(|| panic!("the parent of {ev:?} was exported in the same trace"));
        assert_eq!(job.name, "job");
        assert_eq!(job.attrs.get("job").map(String::as_str), Some("crm_poll"));
        assert_eq!(job.attrs.get("mailbox").map(String::as_str), Some(MAILBOX));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_one_trace_from_receiver_and_scheduler_to_worker() {
    one_trace_from_receiver_and_scheduler_to_worker(Backend::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_redis_one_trace_from_receiver_and_scheduler_to_worker() {
    one_trace_from_receiver_and_scheduler_to_worker(Backend::RabbitRedis).await
}
