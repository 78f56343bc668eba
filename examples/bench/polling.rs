//! Section 4 of issue 13 — The incumbents' design as a bench-only mode: every 10 minutes, re-read the time window of
//! every mailbox through calendarView (`$top=100`, following nextLinks), against a Graph
//! simulator holding the same workload; and ours on the same workload from measured parts.

use std::time::Instant;

use cgc_graph::sim::GraphSimConfig;
use serde_json::{Value, json};

use crate::Ctx;
use crate::report::Report;

/// The poller's interval (the incumbents': 10 minutes).
const INTERVAL_S: f64 = 600.0;
/// Changes per mailbox per day in the workload.
pub const CHANGES_PER_DAY: f64 = 20.0;

/// Runs polling rounds against a fresh simulator; sets `polling.*`.
pub async fn baseline(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let (mailboxes, per_mailbox) = if ctx.quick { (50, 200) } else { (200, 200) };
    let cfg = GraphSimConfig {
        mailboxes: (0..mailboxes)
            .map(|i| format!("rep{i}@poll.test"))
            .collect(),
        ..GraphSimConfig::default()
    };
    let (tid, cid, secret) = (
        cfg.tenant_id.clone(),
        cfg.client_id.clone(),
        cfg.client_secret.clone(),
    );
    let mboxes = cfg.mailboxes.clone();
    let sim = cgc_graph::sim::start("127.0.0.1:0".parse()?, cfg).await?;
    // The window as the connector's (past 7 days, future 90): events spread over it.
    let now = chrono::Utc::now();
    for m in &mboxes {
        for i in 0..per_mailbox {
            let start = now - chrono::Duration::days(7)
                + chrono::Duration::minutes(i as i64 * 97 * 24 * 60 / per_mailbox as i64);
            let end = start + chrono::Duration::minutes(30);
            sim.user_create_event(m, json!({"subject": format!("poll {i}"),
                "start": {"dateTime": start.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"},
                "end": {"dateTime": end.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"}}));
        }
    }
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!("{}/{tid}/oauth2/v2.0/token", sim.login_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &cid),
            ("client_secret", &secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (start, end) = (
        now - chrono::Duration::days(7),
        now + chrono::Duration::days(90),
    );
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let rounds = 2;
    let (mut requests, mut items, mut read_secs) = (0usize, 0usize, 0.0f64);
    let t0 = Instant::now();
    for _ in 0..rounds {
        for m in &mboxes {
            let t = Instant::now();
            let mut url = format!(
                "{}/users/{m}/calendarView?startDateTime={}&endDateTime={}&$top=100",
                sim.graph_url(),
                fmt(start),
                fmt(end)
            );
            loop {
                let page: Value = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .json()
                    .await?;
                requests += 1;
                items += page["value"].as_array().map(Vec::len).unwrap_or(0);
                match page["@odata.nextLink"].as_str() {
                    Some(next) => url = next.to_string(),
                    None => break,
                }
            }
            read_secs += t.elapsed().as_secs_f64();
        }
    }
    let round_secs = t0.elapsed().as_secs_f64() / rounds as f64;
    sim.shutdown();
    let per_round_per_mailbox = requests as f64 / (rounds * mailboxes) as f64;
    let per_day = per_round_per_mailbox * 86400.0 / INTERVAL_S;
    let read_ms = read_secs * 1000.0 / (rounds * mailboxes) as f64;
    r.set("polling.mailboxes", mailboxes as f64);
    r.set(
        "polling.events_per_mailbox",
        (items / (rounds * mailboxes)) as f64,
    );
    r.set(
        "polling.requests_per_round_per_mailbox",
        per_round_per_mailbox,
    );
    r.set("polling.round_secs", round_secs);
    r.set("polling.graph_requests_per_day", per_day);
    r.set(
        "polling.graph_requests_per_day_all_mailboxes",
        per_day * mailboxes as f64,
    );
    // A change waits for the next read of its mailbox: uniform over the interval, so on average
    // half of it, plus the read itself.
    r.set(
        "polling.mean_detection_s",
        INTERVAL_S / 2.0 + read_ms / 1000.0,
    );
    Ok(())
}

/// Ours per mailbox per day from the measured parts (cost section); sets `ours.*`, `polling.ratio`.
pub fn ours(r: &mut Report) {
    let per_change = r.num("cost.graph_requests_per_change");
    let delta_day = 86400.0 / r.num("ours.delta_period_s");
    let renew_day = 86400.0 / r.num("ours.renewal_period_s");
    let calendar = CHANGES_PER_DAY * per_change
        + delta_day * r.num("ours.delta_round_event_requests")
        + renew_day * r.num("ours.event_subscriptions_per_mailbox");
    let all = CHANGES_PER_DAY * per_change
        + delta_day * r.num("ours.delta_round_requests")
        + renew_day * r.num("ours.subscriptions_per_mailbox");
    r.set("ours.graph_requests_per_day", calendar);
    r.set("ours.graph_requests_per_day_all_resources", all);
    let polling = r.num("polling.graph_requests_per_day");
    r.set("polling.ratio", polling / calendar);
    r.row(
        "polling: Graph requests/day per mailbox (calendarView, 10 min)",
        format!(
            "{polling:.0} ({:.1} per round, {} events in the window)",
            r.num("polling.requests_per_round_per_mailbox"),
            r.num("polling.events_per_mailbox")
        ),
    );
    r.row(
        "ours: Graph requests/day per mailbox (20 changes/day)",
        format!("{calendar:.1} calendar ({all:.1} with contacts' delta and subscriptions)"),
    );
    r.row("polling / ours", format!("{:.1}x", polling / calendar));
    r.row(
        "mean detection: polling / ours (Graph -> CRM p50)",
        format!(
            "{:.0} s / {:.3} s",
            r.num("polling.mean_detection_s"),
            r.num("e2e.p50_ms") / 1000.0
        ),
    );
}
