//! The admin API (CONFIG.md, "Admin API contract"): conflicts, dead letters, audit, metrics.
//! Every `/admin/*` request carries `Authorization: Bearer <token>`, else 401.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cgc_core::{Cause, Entity, MapContext, Resolution};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::state::ConflictRecord;
use crate::worker::{Failure, Sync, crm_read_fields};

pub fn router(app: Arc<App>) -> Router {
    let admin = Router::new()
        .route("/admin/conflicts", get(list_conflicts))
        .route("/admin/conflicts/{id}/resolve", post(resolve))
        .route("/admin/dead-letters", get(dead_letters))
        .route("/admin/dead-letters/replay", post(replay))
        .route("/admin/audit", get(audit))
        .route("/admin/queue", get(queue_depth))
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .merge(admin)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
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
    let ok: bool = given
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

async fn metrics(AxState(app): AxState<Arc<App>>) -> Response {
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

#[derive(Deserialize)]
struct ResolveBody {
    take: Option<String>,
    values: Option<BTreeMap<String, Value>>,
    /// Who resolved it (recorded in the audit trail).
    by: Option<String>,
}

async fn resolve(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: ResolveBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"take\": \"crm\"|\"graph\"}} or {{\"values\": {{...}}}}: {e}"
                ),
            );
        }
    };
    let conflict = match app.state.conflict(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no open conflict with id {id}"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            );
        }
    };
    let held: Vec<String> = conflict.fields.iter().map(|f| f.field.clone()).collect();
    let resolution = match (body.take.as_deref(), body.values) {
        (Some("crm"), None) => Resolution::TakeCrm,
        (Some("graph"), None) => Resolution::TakeGraph,
        (None, Some(values)) => {
            if values.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "values is empty: name at least one field of the conflict",
                );
            }
            if let Some(f) = values.keys().find(|k| !held.contains(k)) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "field {f:?} is not part of this conflict; it holds: {}",
                        held.join(", ")
                    ),
                );
            }
            Resolution::Values(values)
        }
        (Some(other), None) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("take = {other:?}; expected \"crm\" or \"graph\""),
            );
        }
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "name a side ({\"take\": \"crm\"} or {\"take\": \"graph\"}) or {\"values\": {...}}",
            );
        }
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either take or values, not both",
            );
        }
    };
    let by = body.by.unwrap_or_else(|| "admin-api".into());
    match apply_resolution(&app, &conflict, &resolution, &by).await {
        Ok(()) => Json(json!({"resolved": id})).into_response(),
        Err(ResolveFailure::BadRequest(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(ResolveFailure::Failed(f)) => {
            let msg = match f {
                Failure::Retry { reason, .. } => {
                    format!("could not write the resolution yet ({reason}); try again")
                }
                Failure::Dead { reason } => format!("could not write the resolution: {reason}"),
            };
            error(StatusCode::BAD_GATEWAY, msg)
        }
    }
}

enum ResolveFailure {
    BadRequest(String),
    Failed(Failure),
}

impl<E: Into<Failure>> From<E> for ResolveFailure {
    fn from(e: E) -> Self {
        ResolveFailure::Failed(e.into())
    }
}

/// Writes an admin's choice to both sides: fresh reads, the core's resolution plan, the same
/// apply path as the worker, then the conflict leaves the list.
async fn apply_resolution(
    app: &Arc<App>,
    c: &ConflictRecord,
    resolution: &Resolution,
    by: &str,
) -> Result<(), ResolveFailure> {
    let Some(t) = app.tenant(&c.tenant) else {
        return Err(ResolveFailure::BadRequest(format!(
            "tenant {} is no longer configured",
            c.tenant
        )));
    };
    let crm_id: u64 = c
        .crm_id
        .parse()
        .map_err(|_| ResolveFailure::BadRequest("conflict holds a malformed CRM id".into()))?;
    let Some(link) = app
        .state
        .link_by_crm(&c.tenant, c.entity, &c.mailbox, crm_id)
        .await?
    else {
        app.state.remove_conflict(&c.id).await?;
        return Err(ResolveFailure::BadRequest(
            "the pair is no longer linked; conflict dropped".into(),
        ));
    };
    let item = match c.entity {
        Entity::Appointment => t.graph.get_event(&c.mailbox, &link.graph_id).await?,
        Entity::Contact => t.graph.get_contact(&c.mailbox, &link.graph_id).await?,
        Entity::Task => {
            let list = match &link.list_id {
                Some(l) => l.clone(),
                None => t.graph.default_todo_list(&c.mailbox).await?,
            };
            t.graph.get_task(&c.mailbox, &list, &link.graph_id).await?
        }
        Entity::Email => None,
    };
    let record = t
        .crm
        .get(
            c.entity.crm_table(),
            crm_id,
            crm_read_fields(c.entity),
            Some(&c.mailbox),
        )
        .await?;
    let (Some(item), Some(record)) = (item, record) else {
        return Err(ResolveFailure::BadRequest(
            "one side of the pair no longer exists".into(),
        ));
    };
    let ctx = MapContext {
        crm_zone: t.cfg.crm_time_zone,
        known_person_emails: Default::default(),
    };
    let shadow = app.state.shadow(&c.tenant, &link).await?;
    let graph_c = cgc_core::from_graph(c.entity, &item, &ctx)?;
    let crm_c = cgc_core::from_crm(c.entity, &record.fields, &ctx)?;
    let fields: Vec<String> = c.fields.iter().map(|f| f.field.clone()).collect();
    let plan = cgc_core::resolve_conflict(
        c.entity,
        shadow.as_ref(),
        &graph_c,
        &crm_c,
        &fields,
        resolution,
        &ctx,
    )
    .map_err(|e| ResolveFailure::BadRequest(e.to_string()))?;
    let event_id = format!("resolve-{}", c.id);
    let mut sync = Sync::new(
        app,
        t,
        &c.mailbox,
        c.entity,
        Cause::ConflictResolution,
        &event_id,
    );
    sync.resolved_by = Some(by.to_string());
    let graph_id = link.graph_id.clone();
    let list_id = link.list_id.clone();
    sync.apply(
        plan,
        Some(link),
        Some(item),
        None,
        graph_id,
        list_id.as_deref(),
    )
    .await?;
    app.state.remove_conflict(&c.id).await?;
    tracing::info!(conflict = %c.id, by, "conflict resolved");
    Ok(())
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
