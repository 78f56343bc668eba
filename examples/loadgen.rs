//! Load generator for the receiver (bench only; `scripts/bench` starts it as its own process).
//!
//! Closed loop: `loadgen URL SUB_ID CLIENT_STATE closed TOTAL BATCH CONCURRENCY` posts TOTAL
//! notifications in POSTs of BATCH from CONCURRENCY connections, each waiting for its answer.
//! Open loop: `loadgen URL SUB_ID CLIENT_STATE open RATE SECONDS` posts single notifications at
//! RATE per second on a fixed schedule (latency counts from the scheduled instant, so queueing
//! in the client is not hidden). Prints one JSON line: notifications/s and p50/p99/p99.9 of one
//! POST in ms, and the count of answers other than 202.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

struct Target {
    url: String,
    sub_id: String,
    client_state: String,
}

fn body(t: &Target, first: usize, batch: usize) -> Vec<u8> {
    let mailbox = std::env::var("LOADGEN_MAILBOX").unwrap_or_else(|_| "rep1@contoso.com".into());
    let value: Vec<_> = (first..first + batch)
        .map(|n| {
            let id = format!("AAMkLOADGEN{n}");
            json!({"subscriptionId": t.sub_id, "clientState": t.client_state,
                   "changeType": "updated", "tenantId": "t",
                   "resource": format!("Users/{mailbox}/Events/{id}"),
                   "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": id,
                                    "@odata.etag": format!("W/\"{n}\"")}})
        })
        .collect();
    serde_json::to_vec(&json!({ "value": value })).unwrap_or_default()
}

async fn post(client: &reqwest::Client, t: &Target, body: Vec<u8>) -> bool {
    client
        .post(&t.url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16() == 202)
        .unwrap_or(false)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn num(args: &[String], i: usize) -> usize {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!(
            "usage: loadgen URL SUB_ID CLIENT_STATE closed TOTAL BATCH CONCURRENCY | open RATE SECONDS"
        );
        std::process::exit(2);
    }
    let t = Arc::new(Target {
        url: args[1].clone(),
        sub_id: args[2].clone(),
        client_state: args[3].clone(),
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut lat: Vec<f64> = Vec::new();
    let sent;
    if args[4] == "closed" {
        let (total, batch, conc) = (num(&args, 5), num(&args, 6), num(&args, 7));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let (client, t, next, errors) =
                (client.clone(), t.clone(), next.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let n = next.fetch_add(batch, Ordering::Relaxed);
                    if n >= total {
                        break lat;
                    }
                    let b = body(&t, n, batch);
                    let t0 = Instant::now();
                    if !post(&client, &t, b).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }));
        }
        for task in tasks {
            lat.extend(task.await.unwrap_or_default());
        }
        sent = total.div_ceil(batch) * batch;
    } else {
        let (rate, secs) = (num(&args, 5).max(1), num(&args, 6));
        let total = rate * secs;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        for n in 0..total {
            let due = started + period * n as u32;
            tokio::time::sleep_until(due.into()).await;
            let (client, t, tx, errors) = (client.clone(), t.clone(), tx.clone(), errors.clone());
            tokio::spawn(async move {
                if !post(&client, &t, body(&t, n, 1)).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send(due.elapsed().as_secs_f64() * 1000.0);
            });
        }
        drop(tx);
        while let Some(l) = rx.recv().await {
            lat.push(l);
        }
        sent = total;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        json!({"notifications": sent, "secs": secs, "per_s": sent as f64 / secs,
               "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99), "p999_ms": pct(&lat, 0.999),
               "errors": errors.load(Ordering::Relaxed)})
    );
}
