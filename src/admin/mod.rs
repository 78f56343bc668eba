//! The admin API (CONFIG.md, "Admin API contract"): conflicts, dead letters, audit, metrics.
//! Every `/admin/*` request carries `Authorization: Bearer <token>`, else 401.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::context::App;
use crate::event::{EventKind, EventV1, Source};
use crate::telemetry::metric;

mod reply;
mod resolve;
pub(crate) mod scrape;
mod undo;
mod web;
use reply::error;
use resolve::resolve;
use undo::{undo_mailbox, undo_one};

pub fn router(app: Arc<App>) -> Router {
    let admin = Router::new()
        .route("/admin/conflicts", get(list_conflicts))
        .route("/admin/conflicts/{id}/resolve", post(resolve))
        .route("/admin/dead-letters", get(dead_letters))
        .route("/admin/dead-letters/replay", post(replay))
        .route("/admin/audit", get(audit))
        .route("/admin/queue", get(queue_depth))
        .route("/admin/mailboxes", get(list_mailboxes))
        .route("/admin/mailboxes/release", post(release_mailbox))
        .route("/admin/invitations", get(list_invitations))
        .route("/admin/invitations/release", post(release_invitations))
        // undo of sync writes (issue 16)
        .route("/admin/audit/{id}/undo", post(undo_one))
        .route("/admin/undo", post(undo_mailbox))
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .merge(admin)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app.clone())
        // The admin page (its own login and session cookie, outside `/admin/*`).
        .merge(web::router(app))
}

async fn auth(AxState(app): AxState<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(admin) = &app.config.admin else {
        return error(StatusCode::NOT_FOUND, "admin API not configured");
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // An empty bearer never matches (and the config refuses an empty token).
    let ok: bool = !given.is_empty()
        && given
            .as_bytes()
            .ct_eq(admin.token.expose_secret().as_bytes())
            .into();
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send Authorization: Bearer <admin.token>",
        );
    }
    next.run(req).await
}

/// `/metrics` and `/healthz` alone, on `[admin] listen` of a process that runs no admin role (a
/// worker or receiver of a scaled-out set-up), so Prometheus scrapes every process.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

async fn metrics(AxState(app): AxState<Arc<App>>) -> Response {
    scrape::refresh(&app).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn list_conflicts(AxState(app): AxState<Arc<App>>) -> Response {
    match app.state.conflicts().await {
        Ok(list) => Json(json!({"conflicts": list})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        ),
    }
}

/// Mailboxes of every tenant with the mass-change guard's view of them.
async fn list_mailboxes(AxState(app): AxState<Arc<App>>) -> Response {
    let mut out = Vec::new();
    for t in app.tenants.values() {
        let tid = &t.cfg.id;
        let (mailboxes, guards) = match (
            app.state.mailboxes(tid).await,
            crate::guard::records(&app.state, tid).await,
        ) {
            (Ok(m), Ok(g)) => (m, g),
            (Err(e), _) | (_, Err(e)) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("store unavailable: {e}"),
                );
            }
        };
        let mut names: std::collections::BTreeSet<String> =
            mailboxes.iter().map(|m| m.mailbox.clone()).collect();
        names.extend(guards.iter().map(|g| g.mailbox.clone()));
        for name in names {
            let g = guards.iter().find(|g| g.mailbox == name);
            let rep = mailboxes.iter().find(|m| m.mailbox == name);
            out.push(json!({
                "tenant": tid,
                "mailbox": name,
                "rep_id": rep.map(|m| m.rep_id.clone()),
                "synced": rep.is_some(),
                "held": g.is_some_and(|g| g.held_since.is_some()),
                "held_since": g.and_then(|g| g.held_since),
                "refused_changes": g.map(|g| g.refused).unwrap_or(0),
                "changes_in_window": g.map(|g| g.changes.len()).unwrap_or(0),
                "released_until": g.and_then(|g| g.released_until),
                "mass_change_share": t.cfg.mass_change_share,
                "mass_change_window_seconds": t.cfg.mass_change_window_seconds,
            }));
        }
    }
    Json(json!({"mailboxes": out})).into_response()
}

/// Every write the invitation guard holds: `{"invitations": [{tenant, mailbox, item, crm_id,
/// reason, since}]}` (`item`: the Graph event's id, null for a held create).
async fn list_invitations(AxState(app): AxState<Arc<App>>) -> Response {
    let mut out = Vec::new();
    for t in app.tenants.values() {
        let tid = &t.cfg.id;
        match crate::invitations::held(&app.state, tid).await {
            Ok(held) => out.extend(held.into_iter().map(|(mailbox, h)| {
                json!({
                    "tenant": tid,
                    "mailbox": mailbox,
                    "item": h.graph_id,
                    "crm_id": h.crm_id.to_string(),
                    "reason": h.reason.as_str(),
                    "since": h.since,
                })
            })),
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("store unavailable: {e}"),
                );
            }
        }
    }
    Json(json!({"invitations": out})).into_response()
}

/// `{"tenant": "…", "mailbox": "…"}`: sends the writes the invitation guard holds for a
/// mailbox (queued again; each goes through once).
async fn release_invitations(AxState(app): AxState<Arc<App>>, body: axum::body::Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(tenant), Some(mailbox)) = (
        body.get("tenant").and_then(Value::as_str),
        body.get("mailbox").and_then(Value::as_str),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "name the mailbox: {\"tenant\": \"…\", \"mailbox\": \"…\"}",
        );
    };
    if app.tenant(tenant).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no tenant {tenant:?}"));
    }
    let held = match crate::invitations::release(&app.state, tenant, mailbox).await {
        Ok(h) => h,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            );
        }
    };
    let events = crate::invitations::release_events(tenant, mailbox, &held);
    let n = events.len();
    if let Err(e) = app.queue.publish(events).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "released, but the held writes could not be queued ({e}); they go through with the pair's next change"
            ),
        );
    }
    crate::telemetry::events::InvitationsReleased {
        tenant,
        mailbox: &mailbox.to_ascii_lowercase(),
        writes: n,
    }
    .emit(&app.metrics);
    Json(json!({"released": mailbox, "writes_queued": n})).into_response()
}

/// `{"tenant": "…", "mailbox": "…"}`: releases a mailbox the mass-change guard holds.
async fn release_mailbox(AxState(app): AxState<Arc<App>>, body: axum::body::Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"tenant\": \"…\", \"mailbox\": \"…\"}}: {e}"),
            );
        }
    };
    let (Some(tenant), Some(mailbox)) = (
        body.get("tenant").and_then(Value::as_str),
        body.get("mailbox").and_then(Value::as_str),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "name the mailbox: {\"tenant\": \"…\", \"mailbox\": \"…\"}",
        );
    };
    let Some(t) = app.tenant(tenant) else {
        return error(StatusCode::NOT_FOUND, format!("no tenant {tenant:?}"));
    };
    match crate::guard::release(
        &app.state,
        tenant,
        mailbox,
        t.cfg.mass_change_window_seconds,
    )
    .await
    {
        Ok(Some(pending)) => {
            let now = chrono::Utc::now();
            let events: Vec<_> = pending
                .iter()
                .filter_map(|p| {
                    // Carried as the change it was: a CRM poll's or a delta's.
                    let source = if p.from_crm || p.graph_id.is_none() {
                        Source::CrmPoll
                    } else {
                        Source::Delta
                    };
                    let kind = match (p.from_crm, p.crm_id, &p.graph_id) {
                        (true, Some(id), _) | (false, Some(id), None) => EventKind::CrmRecord {
                            entity: p.entity,
                            crm_id: id,
                            stamp: format!("release-{}", now.timestamp_millis()),
                            first_sync: false,
                        },
                        (_, _, Some(g)) => EventKind::GraphItem {
                            entity: p.entity,
                            item_id: g.clone(),
                            change: crate::event::Change::Updated,
                            etag: None,
                            list_id: p.list_id.clone(),
                        },
                        _ => return None,
                    };
                    Some(
                        EventV1 {
                            tenant: tenant.to_string(),
                            mailbox: mailbox.to_ascii_lowercase(),
                            source,
                            kind,
                            observed_at: now,
                            subscription_id: None,
                        }
                        .into_envelope(BTreeMap::new()),
                    )
                })
                .collect();
            let n = events.len();
            if let Err(e) = app.queue.publish(events).await {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "released, but the held changes could not be queued ({e}); they are found again by the next sync"
                    ),
                );
            }
            app.metrics.set_gauge(
                metric::MAILBOX_HELD,
                &[
                    ("tenant", tenant),
                    ("mailbox", &mailbox.to_ascii_lowercase()),
                ],
                0,
            );
            tracing::warn!(
                tenant,
                mailbox,
                changes = n,
                "mass-change guard released by an operator"
            );
            Json(json!({"released": mailbox, "changes_queued": n})).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("mailbox {mailbox} is not held"),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        ),
    }
}

async fn dead_letters(AxState(app): AxState<Arc<App>>) -> Response {
    match app.queue.dead_letters().await {
        Ok(list) => {
            let items: Vec<Value> = list
                .into_iter()
                .map(|d| {
                    let event: Value =
                        serde_json::from_slice(&d.envelope.payload).unwrap_or(Value::Null);
                    json!({"id": d.envelope.id, "reason": d.reason, "at": d.at,
                           "attempt": d.envelope.attempt, "key": d.envelope.key, "event": event})
                })
                .collect();
            Json(json!({"dead_letters": items})).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unavailable: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct ReplayBody {
    id: Option<String>,
}

async fn replay(AxState(app): AxState<Arc<App>>, body: axum::body::Bytes) -> Response {
    let body: ReplayBody = if body.is_empty() {
        ReplayBody { id: None }
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body must be {{}} or {{\"id\": \"…\"}}: {e}"),
                );
            }
        }
    };
    match app.queue.replay(body.id.as_deref()).await {
        Ok(0) if body.id.is_some() => error(StatusCode::NOT_FOUND, "no dead letter with that id"),
        Ok(n) => Json(json!({"replayed": n})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unavailable: {e}"),
        ),
    }
}

async fn audit(
    AxState(app): AxState<Arc<App>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100usize)
        .min(10_000);
    let mut out = Vec::new();
    for t in app.tenants.keys() {
        if q.get("tenant").is_some_and(|x| x != t) {
            continue;
        }
        match app.state.audit_tail(t, limit).await {
            Ok(v) => out.extend(v),
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("store unavailable: {e}"),
                );
            }
        }
    }
    Json(json!({"audit": out})).into_response()
}

async fn queue_depth(AxState(app): AxState<Arc<App>>) -> Response {
    match app.queue.depth().await {
        Ok(d) => Json(json!(d)).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unavailable: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{MAILBOX, TENANT};
    use crate::state::SubscriptionRecord;
    use crate::testing::TestApp;

    #[tokio::test]
    async fn metrics_show_each_subscriptions_expiry_horizon() {
        let t = TestApp::start().await;
        let now = chrono::Utc::now();
        let rec = SubscriptionRecord::new(
            "sub-1",
            TENANT,
            MAILBOX,
            &format!("users/{MAILBOX}/events"),
            "secret",
            now + chrono::Duration::hours(2),
            now,
        );
        t.app.state.put_subscription(&rec).await.unwrap();
        let r = metrics(AxState(t.app.clone())).await;
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("cgc_subscription_expiry_seconds{")
                    && l.contains(MAILBOX)
                    && l.contains("resource=\"events\"")
            })
            .unwrap_or_else(|| panic!("no expiry gauge in {text}"));
        let secs: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            (7000..=7200).contains(&secs),
            "about two hours left: {line}"
        );
    }
}
