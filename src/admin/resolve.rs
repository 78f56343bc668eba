//! Conflict resolution, shared by the JSON API (`POST /admin/conflicts/{id}/resolve`) and the
//! admin page: the resolution is checked against its conflict and queued, never applied here.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::reply::error;
use crate::context::App;
use crate::event::{EventKind, EventV1, Source};

/// Validates an operator's resolution and queues it on the mailbox's partition (202): there it
/// runs after the pair's pending events and before its echoes, so it writes each side once.
pub(super) async fn resolve(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"take\": \"crm\"|\"graph\"}}, {{\"values\": {{...}}}} or {{\"link\": \"<crm id>\"}}: {e}"
                ),
            );
        }
    };
    match queue_resolution(&app, &id, body, "admin-api").await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"resolved": id, "queued": true})),
        )
            .into_response(),
        Err((status, m)) => error(status, m),
    }
}

/// Checks a resolution body (`take`, `values` or `link`, optionally `by`) against the open
/// conflict `id` and queues it; the error is a status and a message saying what to do.
pub(super) async fn queue_resolution(
    app: &App,
    id: &str,
    body: Value,
    default_by: &str,
) -> Result<(), (StatusCode, String)> {
    let conflict = match app.state.conflict(id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no open conflict with id {id}"),
            ));
        }
        Err(e) => {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            ));
        }
    };
    if let Err(m) = crate::sync::resolution::parse(&conflict, &body) {
        return Err((StatusCode::BAD_REQUEST, m));
    }
    let by = body
        .get("by")
        .and_then(Value::as_str)
        .unwrap_or(default_by)
        .to_string();
    let ev = EventV1 {
        tenant: conflict.tenant.clone(),
        mailbox: conflict.mailbox.clone(),
        source: Source::Admin,
        kind: EventKind::Resolve {
            conflict_id: conflict.id.clone(),
            resolution: body,
            by,
        },
        observed_at: chrono::Utc::now(),
        subscription_id: None,
    };
    app.queue
        .publish(vec![ev.into_envelope(BTreeMap::new())])
        .await
        .map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("queue unavailable, nothing changed; try again: {e}"),
            )
        })
}
