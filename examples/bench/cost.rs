//! Section 3 of issue 13 — Cost per change on one mailbox: Graph requests, CRM writes and store round trips per real
//! change (K Outlook edits of K different events), per exact duplicate notification (the very
//! delivery re-posted to the receiver) and per touch (modified time bumped, same content).
//!
//! The harness runs receiver and scheduler; the worker runs on the same app with a counting store
//! (so the store figure is the worker's: the receiver's subscription look-up is cached). Graph
//! requests count the simulator's log under `/v1.0` without To Do (polled every second by the
//! harness); CRM writes count the simulator's write log. Also the figures "ours per day" needs:
//! requests of one delta catch-up round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_graph_connector::demo::{Harness, MAILBOX, TENANT, wait_for};
use crm_graph_connector::run::Roles;
use serde_json::json;

use crate::Ctx;
use crate::common::{Trips, WORKER_ONLY, load, options, settle, with_queue};
use crate::report::Report;

/// Graph app requests since `t0`, To Do excluded.
pub fn graph_requests(h: &Harness, t0: Instant) -> usize {
    h.graph
        .requests()
        .iter()
        .filter(|q| q.at >= t0 && q.path.starts_with("/v1.0") && !q.path.contains("/todo/"))
        .count()
}

/// Graph app requests since `t0` by method and path shape (ids and mailboxes elided), per `n`.
fn by_kind(h: &Harness, t0: Instant, n: f64) -> serde_json::Value {
    let mut m: std::collections::BTreeMap<String, f64> = Default::default();
    for q in h
        .graph
        .requests()
        .iter()
        .filter(|q| q.at >= t0 && q.path.starts_with("/v1.0") && !q.path.contains("/todo/"))
    {
        let shape: Vec<&str> = q
            .path
            .split('/')
            .map(|s| {
                if s.contains('@') {
                    "{mailbox}"
                } else if s.len() > 24 {
                    "{id}"
                } else {
                    s
                }
            })
            .collect();
        *m.entry(format!("{} {}", q.method, shape.join("/")))
            .or_default() += 1.0 / n;
    }
    serde_json::json!(m)
}

struct Counts {
    t0: Instant,
    graph: usize,
    crm_writes: usize,
    store: u64,
}

async fn measure<F: FnOnce(&Harness)>(
    h: &Harness,
    trips: &Trips,
    change: F,
) -> anyhow::Result<Counts> {
    settle(h).await;
    let (t0, w0, s0) = (Instant::now(), h.crm.write_log().len(), load(&trips.store));
    change(h);
    settle(h).await;
    Ok(Counts {
        t0,
        graph: graph_requests(h, t0),
        crm_writes: h.crm.write_log().len() - w0,
        store: load(&trips.store) - s0,
    })
}

pub async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let k = if ctx.quick { 10 } else { 40 };
    let mut h = Harness::start(options(false, 2)).await?;
    h.wait_subscribed().await?;
    let day = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive();
    let ids: Vec<String> = (0..k)
        .map(|i| {
            let e = h.graph.user_create_event(
                MAILBOX,
                json!({"subject": format!("cost {i}"),
                       "start": {"dateTime": format!("{day}T{:02}:00:00", 8 + i % 10), "timeZone": "UTC"},
                       "end": {"dateTime": format!("{day}T{:02}:30:00", 8 + i % 10), "timeZone": "UTC"}}),
            );
            e["id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    wait_for("the events in CRM", Duration::from_secs(60), || async {
        h.crm.records("Contact").len() >= k
    })
    .await?;
    // Receiver + scheduler in the harness, the worker counted.
    // The old app can hold the embedded files a moment after it stopped (loaded machine): retry.
    let roles = Roles {
        receiver: true,
        worker: false,
        scheduler: true,
        admin: false,
    };
    let mut tries = 0;
    while let Err(e) = h.restart(2, roles).await {
        tries += 1;
        if tries >= 10 {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let trips = Arc::new(Trips::default());
    let worker = with_queue(h.app(), h.app().queue.clone(), &trips, WORKER_ONLY).await;

    let real = measure(&h, &trips, |h| {
        for (i, id) in ids.iter().enumerate() {
            h.graph
                .user_update_event(MAILBOX, id, json!({"subject": format!("cost {i} edited")}));
        }
    })
    .await?;
    let synced = h
        .crm
        .records("Contact")
        .iter()
        .filter(|c| {
            c.fields
                .get("Subject")
                .is_some_and(|s| s.ends_with("edited"))
        })
        .count();
    if synced < k {
        r.note(&format!("cost: only {synced} of {k} edits reached CRM"));
    }
    let kf = k as f64;
    r.set_value(
        "cost.graph_requests_per_change_by_kind",
        by_kind(&h, real.t0, kf),
    );
    r.set("cost.graph_requests_per_change", real.graph as f64 / kf);
    r.set("cost.crm_writes_per_change", real.crm_writes as f64 / kf);
    r.set("cost.store_round_trips_per_change", real.store as f64 / kf);
    r.row(
        "Graph requests per real change (Outlook edit)",
        format!("{:.2}", real.graph as f64 / kf),
    );
    r.row(
        "CRM writes per real change",
        format!("{:.2}", real.crm_writes as f64 / kf),
    );
    r.row(
        "store round trips per real change (worker)",
        format!("{:.2}", real.store as f64 / kf),
    );

    // Exact duplicates: the last K deliveries (one per edit) posted again as they were.
    let deliveries: Vec<_> = h.graph.deliveries().into_iter().rev().take(k).collect();
    let client = reqwest::Client::new();
    let dup = {
        settle(&h).await;
        let (t0, w0, s0) = (Instant::now(), h.crm.write_log().len(), load(&trips.store));
        let mut accepted = 0;
        for d in &deliveries {
            let ok = client
                .post(&d.url)
                .json(&d.body)
                .send()
                .await
                .map(|a| a.status().as_u16() == 202)
                .unwrap_or(false);
            accepted += usize::from(ok);
        }
        settle(&h).await;
        if accepted < deliveries.len() {
            r.note(&format!(
                "cost: {accepted} of {} duplicates accepted (202)",
                deliveries.len()
            ));
        }
        Counts {
            t0,
            graph: graph_requests(&h, t0),
            crm_writes: h.crm.write_log().len() - w0,
            store: load(&trips.store) - s0,
        }
    };
    let n = deliveries.len().max(1) as f64;
    r.set("cost.graph_requests_per_duplicate", dup.graph as f64 / n);
    r.set("cost.crm_writes_per_duplicate", dup.crm_writes as f64 / n);
    r.set("cost.store_round_trips_per_duplicate", dup.store as f64 / n);
    r.row(
        "Graph requests per exact duplicate notification",
        format!("{:.2}", dup.graph as f64 / n),
    );
    r.row(
        "store round trips per exact duplicate",
        format!("{:.2}", dup.store as f64 / n),
    );

    let touch = measure(&h, &trips, |h| {
        for id in &ids {
            h.graph.user_touch_event(MAILBOX, id);
        }
    })
    .await?;
    r.set("cost.crm_writes_per_touch", touch.crm_writes as f64 / kf);
    r.set_value(
        "cost.graph_requests_per_touch_by_kind",
        by_kind(&h, touch.t0, kf),
    );
    r.set("cost.graph_requests_per_touch", touch.graph as f64 / kf);
    r.set("cost.store_round_trips_per_touch", touch.store as f64 / kf);
    r.row(
        "CRM writes per touch (same content, new changeKey)",
        format!("{:.2}", touch.crm_writes as f64 / kf),
    );
    r.row(
        "Graph requests per touch",
        format!("{:.2}", touch.graph as f64 / kf),
    );

    // One delta catch-up round of the mailbox (what the scheduler does every safety_delta_seconds).
    settle(&h).await;
    let t0 = Instant::now();
    let tenant = h
        .app()
        .tenant(TENANT)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("tenant"))?;
    crm_graph_connector::watch::delta::catch_up(h.app(), &tenant, MAILBOX).await?;
    let all = h.graph.requests();
    let round: Vec<_> = all
        .iter()
        .filter(|q| q.at >= t0 && q.path.starts_with("/v1.0") && !q.path.contains("/todo/"))
        .collect();
    let events_round = round
        .iter()
        .filter(|q| q.path.contains("/calendarView") || q.path.contains("/events"))
        .count();
    r.set("ours.delta_round_requests", round.len() as f64);
    r.set(
        "ours.delta_period_s",
        tenant.cfg.safety_delta_seconds as f64,
    );
    let life = h.app().tuning.subscription_lifetime.num_seconds() as f64;
    // A subscription is renewed once two thirds of its lifetime have passed (renew_due).
    r.set("ours.renewal_period_s", life * 2.0 / 3.0);
    r.set("ours.delta_round_event_requests", events_round as f64);
    // One mailbox here: every subscription is this mailbox's.
    let subs = h.graph.subscriptions();
    let event_subs = subs
        .iter()
        .filter(|s| {
            s["resource"]
                .as_str()
                .is_some_and(|x| x.ends_with("/events"))
        })
        .count();
    r.set("ours.subscriptions_per_mailbox", subs.len() as f64);
    r.set("ours.event_subscriptions_per_mailbox", event_subs as f64);
    settle(&h).await;
    worker.stop().await;
    h.stop().await;
    Ok(())
}
