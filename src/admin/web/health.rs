//! Mailbox health (last sync, subscription expiry, last error) and the dead letters with replay.

use std::collections::{BTreeMap, BTreeSet};

use axum::Form;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::html::{csrf_field, esc, page_response, query_value, time};
use super::session::Web;
use crate::telemetry::metric;

fn unavailable(csrf: &str, title: &str, what: &str, e: impl std::fmt::Display) -> Response {
    page_response(
        StatusCode::SERVICE_UNAVAILABLE,
        title,
        Some(csrf),
        &format!(
            "<p class=\"error\">{what} unavailable: {}. Try again.</p>",
            esc(&e.to_string())
        ),
    )
}

/// The newest dead letter of each (tenant, mailbox): when and why.
fn dead_by_mailbox(
    dead: &[cgc_backends::queue::DeadLetter],
) -> BTreeMap<(String, String), (DateTime<Utc>, String)> {
    let mut out: BTreeMap<(String, String), (DateTime<Utc>, String)> = BTreeMap::new();
    for d in dead {
        let ev: Value = serde_json::from_slice(&d.envelope.payload).unwrap_or(Value::Null);
        let (Some(t), Some(m)) = (ev["tenant"].as_str(), ev["mailbox"].as_str()) else {
            continue;
        };
        let key = (t.to_string(), m.to_ascii_lowercase());
        if out.get(&key).is_none_or(|(at, _)| *at < d.at) {
            out.insert(key, (d.at, format!("dead letter: {}", d.reason)));
        }
    }
    out
}

pub(super) async fn mailboxes(AxState(web): AxState<Web>, headers: HeaderMap) -> Response {
    let s = match web.session(&headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let app = web.app();
    let subs = match app.state.subscriptions().await {
        Ok(v) => v,
        Err(e) => return unavailable(&s.csrf, "Mailboxes", "Store", e),
    };
    // Dead letters are shared by every process; an unreachable queue only leaves them out.
    let dead = dead_by_mailbox(&app.queue.dead_letters().await.unwrap_or_default());
    let now = Utc::now();
    let mut rows = String::new();
    for t in app.tenants.values() {
        let tid = t.cfg.id.as_str();
        let (synced, guards) = match (
            app.state.mailboxes(tid).await,
            crate::guard::records(&app.state, tid).await,
        ) {
            (Ok(m), Ok(g)) => (m, g),
            (Err(e), _) | (_, Err(e)) => return unavailable(&s.csrf, "Mailboxes", "Store", e),
        };
        // The newest audited write per mailbox: kept in the store, so seen from any process.
        let mut written: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for r in app.state.audit_tail(tid, 10_000).await.unwrap_or_default() {
            let at = written
                .entry(r.mailbox.to_ascii_lowercase())
                .or_insert(r.at);
            *at = (*at).max(r.at);
        }
        let mut names: BTreeSet<String> = synced.iter().map(|m| m.mailbox.clone()).collect();
        names.extend(guards.iter().map(|g| g.mailbox.clone()));
        names.extend(
            subs.iter()
                .filter(|x| x.tenant == tid)
                .map(|x| x.mailbox.clone()),
        );
        for name in names {
            let labels = [("tenant", tid), ("mailbox", name.as_str())];
            let rep = synced.iter().find(|m| m.mailbox == name);
            let mut last_sync = match app.metrics.gauge(metric::MAILBOX_LAST_SYNC, &labels) {
                0 => "<span class=\"muted\">no event since this process started</span>".into(),
                at => Utc
                    .timestamp_opt(at, 0)
                    .single()
                    .map(time)
                    .unwrap_or_default(),
            };
            if let Some(at) = written.get(&name.to_ascii_lowercase()) {
                last_sync.push_str(&format!("<br>last write: {}", time(*at)));
            }
            let mut expiry = String::new();
            for x in subs.iter().filter(|x| x.tenant == tid && x.mailbox == name) {
                let resource = x.resource.rsplit('/').next().unwrap_or("");
                let class = if x.expiration <= now { "error" } else { "" };
                expiry.push_str(&format!(
                    "<div class=\"{class}\">{}: {}</div>",
                    esc(resource),
                    time(x.expiration)
                ));
            }
            if expiry.is_empty() {
                expiry = "<span class=\"error\">no subscription</span>".into();
            }
            let noted = app
                .metrics
                .last_error(&labels)
                .and_then(|(at, reason)| Some((Utc.timestamp_opt(at, 0).single()?, reason)));
            let parked = dead
                .get(&(tid.to_string(), name.to_ascii_lowercase()))
                .cloned();
            let last_error = match [noted, parked]
                .into_iter()
                .flatten()
                .max_by_key(|(at, _)| *at)
            {
                Some((at, reason)) => format!(
                    "<span class=\"error\">{}</span><br>{}",
                    esc(&reason),
                    time(at)
                ),
                None => "<span class=\"ok\">none</span>".into(),
            };
            let held = match guards.iter().find(|g| g.mailbox == name) {
                Some(g) if g.held_since.is_some() => format!(
                    "<span class=\"error\">held by the mass-change guard ({} refused)</span>",
                    g.refused
                ),
                _ => String::new(),
            };
            rows.push_str(&format!(
                "<tr><td>{tenant}</td><td>{mailbox}<br>{held}</td><td>{rep}</td><td>{last_sync}</td>\
                 <td>{expiry}</td><td>{last_error}</td></tr>",
                tenant = esc(tid),
                mailbox = esc(&name),
                rep = rep
                    .map(|r| esc(&r.rep_id))
                    .unwrap_or_else(|| "<span class=\"muted\">not in the rep list</span>".into()),
            ));
        }
    }
    let body = format!(
        "<h1>Mailbox health</h1><p class=\"muted\">Last sync (the last event a worker of \
         this process carried out) and last error as seen by this process; the last write \
         (audit trail), subscriptions and dead letters as stored, whichever process made them.</p><table id=\"mailboxes\"><tr>\
         <th>Tenant</th><th>Mailbox</th><th>Rep</th><th>Last sync</th><th>Subscription expiry</th>\
         <th>Last error</th></tr>{rows}</table>"
    );
    page_response(StatusCode::OK, "Mailboxes", Some(&s.csrf), &body)
}

pub(super) async fn dead_letters(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let s = match web.session(&headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let list = match web.app().queue.dead_letters().await {
        Ok(l) => l,
        Err(e) => return unavailable(&s.csrf, "Dead letters", "Queue", e),
    };
    let mut body = format!(
        "<h1>Dead letters <span class=\"muted\">({})</span></h1>",
        list.len()
    );
    if let Some(n) = q.get("replayed") {
        body.push_str(&format!(
            "<p class=\"ok\" id=\"notice\">{} event(s) queued again.</p>",
            esc(n)
        ));
    }
    if list.is_empty() {
        body.push_str("<p id=\"empty\">No dead letter.</p>");
    } else {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/ui/dead-letters/replay\">{}\
             <p><button type=\"submit\" class=\"primary\">Replay all</button></p></form>\
             <table id=\"dead-letters\"><tr><th>When</th><th>Reason</th><th>Mailbox</th>\
             <th>Event</th><th>Attempts</th><th></th></tr>",
            csrf_field(&s.csrf)
        ));
        for d in &list {
            let ev: Value = serde_json::from_slice(&d.envelope.payload).unwrap_or(Value::Null);
            let mut event = ev.get("kind").unwrap_or(&ev).to_string();
            if event.chars().count() > 300 {
                event = event.chars().take(300).collect::<String>() + "…";
            }
            body.push_str(&format!(
                "<tr><td>{at}</td><td>{reason}</td><td>{tenant} / {mailbox}</td>\
                 <td><code>{event}</code></td><td>{attempt}</td><td>\
                 <form method=\"post\" action=\"/ui/dead-letters/replay\">{csrf}\
                 <input type=\"hidden\" name=\"id\" value=\"{id}\">\
                 <button type=\"submit\">Replay</button></form></td></tr>",
                at = time(d.at),
                reason = esc(&d.reason),
                tenant = esc(ev["tenant"].as_str().unwrap_or("?")),
                mailbox = esc(ev["mailbox"].as_str().unwrap_or("?")),
                event = esc(&event),
                attempt = d.envelope.attempt,
                csrf = csrf_field(&s.csrf),
                id = esc(&d.envelope.id),
            ));
        }
        body.push_str("</table>");
    }
    page_response(StatusCode::OK, "Dead letters", Some(&s.csrf), &body)
}

#[derive(serde::Deserialize)]
pub(super) struct ReplayForm {
    #[serde(default)]
    csrf: String,
    id: Option<String>,
}

pub(super) async fn replay(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Form(f): Form<ReplayForm>,
) -> Response {
    let s = match web.form_session(&headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let id = f.id.as_deref().filter(|i| !i.is_empty());
    match web.app().queue.replay(id).await {
        Ok(0) if id.is_some() => page_response(
            StatusCode::NOT_FOUND,
            "Dead letters",
            Some(&s.csrf),
            "<p class=\"error\">No dead letter with that id (replayed already?). \
             <a href=\"/ui/dead-letters\">Back to the dead letters</a></p>",
        ),
        Ok(n) => {
            tracing::info!(replayed = n, "dead letters replayed from the admin page");
            Redirect::to(&format!(
                "/ui/dead-letters?replayed={}",
                query_value(&n.to_string())
            ))
            .into_response()
        }
        Err(e) => unavailable(&s.csrf, "Dead letters", "Queue", e),
    }
}
