//! Pipeline figures (printed, never asserted): receiver notifications/s with the configured queue
//! vs a no-op queue, and end-to-end latency from a Graph change to the CRM write (p50/p99).
//!
//! `cargo bench --bench pipeline` (embedded back ends), or with `CGC_BENCH_BACKEND=rabbitmq` for
//! RabbitMQ + Redis (needs `bash scripts/services.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_graph_connector::app::Roles;
use crm_graph_connector::demo::{Harness, HarnessOptions, MAILBOX, REP_ID, crm_slot, wait_for};
use serde_json::json;

fn options() -> HarnessOptions {
    let mut o = HarnessOptions::default();
    if std::env::var("CGC_BENCH_BACKEND").as_deref() == Ok("rabbitmq") {
        o.queue_toml = "[queue]\nbackend = \"rabbitmq\"\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\npartitions = 8\n".into();
        o.store_toml = "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n".into();
    }
    o.workers = 4;
    o
}

async fn post_notifications(
    url: &str,
    sub_id: &str,
    client_state: &str,
    total: usize,
    batch: usize,
    concurrency: usize,
) -> f64 {
    let client = reqwest::Client::new();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, sent) = (client.clone(), url.to_string(), sent.clone());
        let (sub_id, cs) = (sub_id.to_string(), client_state.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = sent.fetch_add(batch, std::sync::atomic::Ordering::SeqCst);
                if n >= total {
                    break;
                }
                let value: Vec<_> = (0..batch)
                    .map(|i| {
                        let id = format!("AAMkBENCH{}", n + i);
                        json!({"subscriptionId": sub_id, "clientState": cs, "changeType": "updated",
                               "resource": format!("Users/{MAILBOX}/Events/{id}"), "tenantId": "t",
                               "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": id,
                                                "@odata.etag": format!("W/\"{}\"", n + i)}})
                    })
                    .collect();
                let r = client
                    .post(&url)
                    .json(&json!({"value": value}))
                    .send()
                    .await;
                assert!(
                    r.map(|r| r.status().as_u16() == 202).unwrap_or(false),
                    "receiver accepted"
                );
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut h = Harness::start(options()).await.expect("harness");
    h.wait_subscribed().await.unwrap();
    h.settle().await.unwrap();

    // 1. End-to-end latency: Outlook edit → CRM write.
    let (date, time) = crm_slot(2, 10);
    let crm_id = h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "bench 0"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "11:00"),
            ("RepID", REP_ID),
        ],
    );
    wait_for("event", Duration::from_secs(20), || async {
        !h.graph.events(MAILBOX).is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let ev_id = h.graph.events(MAILBOX)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut lat = Vec::new();
    for i in 1..=40 {
        let subject = format!("bench {i}");
        let t0 = Instant::now();
        h.graph
            .user_update_event(MAILBOX, &ev_id, json!({"subject": subject}));
        loop {
            let done = h
                .crm
                .record("Contact", crm_id)
                .and_then(|r| r.fields.get("Subject").cloned())
                == Some(subject.clone());
            if done {
                break;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                panic!("edit {i} did not reach CRM");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "end-to-end Graph change -> CRM write: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );

    // 2. Receiver throughput (receiver role only, so workers do not compete for the CPU).
    let sub = h
        .app()
        .state
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.resource.ends_with("/events"))
        .unwrap();
    h.restart(
        1,
        Roles {
            receiver: true,
            worker: false,
            scheduler: false,
            admin: true,
        },
    )
    .await
    .unwrap();
    let url = format!("{}/notifications", h.receiver_url());
    for (batch, conc) in [(1usize, 8usize), (10, 8)] {
        let rate = post_notifications(&url, &sub.id, &sub.client_state, 4000, batch, conc).await;
        println!(
            "receiver ({}) batch={batch} concurrency={conc}: {rate:.0} notifications/s",
            if std::env::var("CGC_BENCH_BACKEND").as_deref() == Ok("rabbitmq") {
                "RabbitMQ confirms"
            } else {
                "embedded queue"
            }
        );
    }
    h.stop().await;
}
