//! The admin API's undo routes (README "Undo of sync writes"): one audited write, or every sync
//! write of one mailbox since a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::reply::error;
use crate::context::App;

fn undo_refused(r: crate::undo::Refusal) -> Response {
    use crate::undo::Refusal;
    match r {
        Refusal::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        Refusal::Conflict(m) => error(StatusCode::CONFLICT, m),
        Refusal::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// `POST /admin/audit/{id}/undo` (body optional: `{"dry_run": true, "by": "…"}`).
pub(super) async fn undo_one(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "body must be empty or {{\"dry_run\": true|false, \"by\": \"…\"}}: {e}"
                    ),
                );
            }
        }
    };
    let dry = body
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let by = body
        .get("by")
        .and_then(Value::as_str)
        .unwrap_or("admin-api");
    match crate::undo::undo_one(&app, &id, by, dry).await {
        Ok(u) => Json(json!({"dry_run": dry, "undone": u})).into_response(),
        Err(r) => undo_refused(r),
    }
}

/// `POST /admin/undo {"tenant", "mailbox", "since", "dry_run"}`: every sync write of one
/// mailbox since a time, newest first.
pub(super) async fn undo_mailbox(
    AxState(app): AxState<Arc<App>>,
    body: axum::body::Bytes,
) -> Response {
    const SHAPE: &str = "body must be {\"tenant\": \"…\", \"mailbox\": \"…\", \"since\": \"<RFC 3339 time>\", \"dry_run\": true|false}";
    let body: Value = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{SHAPE}: {e}")),
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let (Some(tenant), Some(mailbox), Some(since)) =
        (text("tenant"), text("mailbox"), text("since"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{SHAPE}: tenant, mailbox and since are required"),
        );
    };
    let since = match chrono::DateTime::parse_from_rfc3339(since) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("since: not an RFC 3339 time ({e})"),
            );
        }
    };
    let dry = body
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let by = text("by").unwrap_or("admin-api");
    match crate::undo::undo_mailbox(&app, tenant, mailbox, since, by, dry).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => undo_refused(r),
    }
}
