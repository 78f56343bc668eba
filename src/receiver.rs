//! The HTTP receiver: Graph change and lifecycle notifications in, events on the queue out.
//!
//! It never calls Graph or CRM: it answers the validation handshake, checks each notification's
//! `clientState` against its subscription in constant time, publishes the events durably and only
//! then answers 202 (503 when the queue did not accept them, so Graph retries).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cgc_core::Entity;
use cgc_graph::{ChangeNotification, NotificationCollection, parse_resource};
use chrono::Utc;
use tracing::Instrument;

use crate::context::App;
use crate::event::{Change, EventKind, EventV1, Source};
use crate::telemetry::{metric, trace};

/// Largest notification body accepted (Graph batches are far smaller).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Most notifications one POST may carry; a larger batch is refused with 413 before any look-up.
pub const MAX_NOTIFICATIONS_PER_POST: usize = 1000;

pub fn router(app: Arc<App>) -> Router {
    let guard = app.clone();
    Router::new()
        .route("/notifications", post(notifications))
        .route("/lifecycle", post(notifications))
        .layer(axum::middleware::from_fn(move |req, next| {
            bounded(guard.clone(), req, next)
        }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Load shedding and a deadline for the public routes: beyond `receiver_max_in_flight` requests
/// at once the answer is 503 (Graph retries; never 202 for something not queued), and a request
/// (body upload included) that takes longer than `receiver_request_timeout` is cut with 503.
async fn bounded(
    app: Arc<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = app.receiver_slots.clone().try_acquire_owned() else {
        app.metrics
            .inc(metric::NOTIFICATION_BATCHES, &[("outcome", "shed")]);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many requests in flight, retry later",
        )
            .into_response();
    };
    match tokio::time::timeout(app.tuning.receiver_request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            app.metrics
                .inc(metric::NOTIFICATION_BATCHES, &[("outcome", "timeout")]);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "request took too long, retry later",
            )
                .into_response()
        }
    }
}

async fn readyz(AxState(app): AxState<Arc<App>>) -> Response {
    if app.expects_loops.load(std::sync::atomic::Ordering::SeqCst)
        && app.live_loops.load(std::sync::atomic::Ordering::SeqCst) == 0
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no worker or scheduler loop is running",
        )
            .into_response();
    }
    match app.queue.depth().await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unavailable: {e}"),
        )
            .into_response(),
    }
}

/// The validation handshake: `?validationToken=…` → 200 text/plain with the decoded token.
fn handshake(q: &BTreeMap<String, String>) -> Option<Response> {
    q.get("validationToken").map(|token| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            token.clone(),
        )
            .into_response()
    })
}

/// `POST /notifications` and `POST /lifecycle`: the same envelope, the same checks; a lifecycle
/// notification is told apart by its `lifecycleEvent`.
async fn notifications(
    AxState(app): AxState<Arc<App>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = handshake(&q) {
        return r;
    }
    accept(&app, &headers, &body).await
}

fn bad_request(app: &App, msg: String) -> Response {
    app.metrics
        .inc(metric::NOTIFICATION_BATCHES, &[("outcome", "malformed")]);
    tracing::warn!(error = %msg, "notification batch refused");
    (StatusCode::BAD_REQUEST, msg).into_response()
}

async fn accept(app: &Arc<App>, headers: &HeaderMap, body: &[u8]) -> Response {
    let batch: NotificationCollection = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return bad_request(
                app,
                format!("body is not a change notification collection: {e}"),
            );
        }
    };
    if batch.value.len() > MAX_NOTIFICATIONS_PER_POST {
        app.metrics
            .inc(metric::NOTIFICATION_BATCHES, &[("outcome", "too_large")]);
        tracing::warn!(
            items = batch.value.len(),
            "notification batch refused: too many items"
        );
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {MAX_NOTIFICATIONS_PER_POST} notifications per request, got {}",
                batch.value.len()
            ),
        )
            .into_response();
    }
    // The batch continues the sender's trace (a W3C `traceparent`, when sent); each event carries
    // its notification span's context in its headers, so the worker continues the same trace.
    let incoming: BTreeMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), headers.get(k)?.to_str().ok()?.to_string())))
        .collect();
    let batch_span = tracing::info_span!(
        "notification_batch",
        notifications = batch.value.len(),
        trace_id = tracing::field::Empty
    );
    trace::continue_from(&batch_span, &incoming);
    let mut envelopes = Vec::new();
    for n in &batch.value {
        let span = tracing::info_span!(parent: &batch_span, "notification",
            tenant = tracing::field::Empty, mailbox = tracing::field::Empty,
            entity = tracing::field::Empty, item = tracing::field::Empty,
            trace_id = tracing::field::Empty);
        trace::note_trace_id(&span);
        match to_event(app, n).instrument(span.clone()).await {
            Ok(Some(ev)) => {
                span.record("tenant", ev.tenant.as_str());
                span.record("mailbox", ev.mailbox.as_str());
                crate::telemetry::record_subject(&span, &ev);
                let mut context = trace::headers_of(&span);
                if context.is_empty() {
                    // Tracing not installed: the sender's context is passed on as it came.
                    context = incoming.clone();
                }
                envelopes.push(ev.into_envelope(context));
            }
            Ok(None) => {}
            Err(Reject::Store(e)) => {
                let _in_batch = batch_span.enter();
                tracing::error!(error = %e, "store unavailable while checking a notification");
                app.metrics
                    .inc(metric::NOTIFICATION_BATCHES, &[("outcome", "unavailable")]);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store unavailable, retry later",
                )
                    .into_response();
            }
        }
    }
    let n = envelopes.len() as u64;
    if !envelopes.is_empty() {
        let published = app
            .queue
            .publish(envelopes)
            .instrument(batch_span.clone())
            .await;
        if let Err(e) = published {
            let _in_batch = batch_span.enter();
            tracing::error!(error = %e, "queue did not accept the notifications; answering 503 so Graph retries");
            app.metrics
                .inc(metric::NOTIFICATION_BATCHES, &[("outcome", "unavailable")]);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "queue unavailable, retry later",
            )
                .into_response();
        }
    }
    app.metrics
        .add(metric::NOTIFICATIONS, &[("outcome", "accepted")], n);
    app.metrics
        .inc(metric::NOTIFICATION_BATCHES, &[("outcome", "accepted")]);
    StatusCode::ACCEPTED.into_response()
}

enum Reject {
    Store(cgc_backends::StoreError),
}

fn entity_of_collection(c: &str) -> Option<Entity> {
    match c {
        "events" => Some(Entity::Appointment),
        "contacts" => Some(Entity::Contact),
        "tasks" => Some(Entity::Task),
        "messages" => Some(Entity::Email),
        _ => None,
    }
}

/// Checks one notification and turns it into an event; `Ok(None)` means dropped (counted, logged).
async fn to_event(app: &Arc<App>, n: &ChangeNotification) -> Result<Option<EventV1>, Reject> {
    let drop = |reason: &'static str| {
        app.metrics
            .inc(metric::NOTIFICATIONS, &[("outcome", reason)]);
        app.drop_log.note(reason, &n.subscription_id);
        Ok(None)
    };
    let looked_up = match app.subscription_cache.get(&n.subscription_id) {
        Some(hit) => hit,
        None => {
            app.metrics.inc(metric::SUBSCRIPTION_LOOKUPS, &[]);
            match app.state.subscription(&n.subscription_id).await {
                Ok(rec) => {
                    app.subscription_cache.put(&n.subscription_id, rec.clone());
                    rec
                }
                Err(e) => return Err(Reject::Store(e)),
            }
        }
    };
    let Some(sub) = looked_up else {
        return drop("unknown_subscription");
    };
    let given = n.client_state.as_deref().unwrap_or("");
    let ok = sub.client_state_matches(given);
    if !ok {
        // Never log either value: clientState is a per-subscription secret.
        return drop("client_state_mismatch");
    }
    let observed_at = Utc::now();
    if let Some(ev) = &n.lifecycle_event {
        return Ok(Some(EventV1 {
            tenant: sub.tenant,
            mailbox: sub.mailbox,
            source: Source::Lifecycle,
            kind: EventKind::Lifecycle {
                subscription_id: sub.id.clone(),
                lifecycle_event: ev.clone(),
            },
            observed_at,
            subscription_id: Some(sub.id),
        }));
    }
    let Some(change) = n.change_type.as_deref().and_then(Change::parse) else {
        return drop("bad_change_type");
    };
    let data_id = n
        .resource_data
        .as_ref()
        .and_then(|d| d.get("id"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let parsed = n.resource.as_deref().and_then(parse_resource);
    let (entity, item_id) = match (&parsed, data_id) {
        (Some((_, coll, id)), data) => match entity_of_collection(coll) {
            Some(e) => (e, data.unwrap_or_else(|| id.clone())),
            None => return drop("unsupported_resource"),
        },
        (None, Some(id)) => match sub
            .resource
            .rsplit('/')
            .next()
            .and_then(entity_of_collection)
        {
            Some(e) => (e, id),
            None => return drop("unsupported_resource"),
        },
        (None, None) => return drop("no_resource"),
    };
    let etag = n
        .resource_data
        .as_ref()
        .and_then(|d| d.get("@odata.etag"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(Some(EventV1 {
        tenant: sub.tenant,
        mailbox: sub.mailbox,
        source: Source::Notification,
        kind: EventKind::GraphItem {
            entity,
            item_id,
            change,
            etag,
            list_id: None,
        },
        observed_at,
        subscription_id: Some(sub.id),
    }))
}
