//! HTTP layer of the simulator: the XML endpoint and the `/_sim/` JSON control API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::conn::KillSwitch;
use super::state::{CommitFail, EmptyRule};
use super::{AfterCommit, ENDPOINT_PATH, Shared};
use crate::client::xml::MAX_DOCUMENT_BYTES;
use crate::model::RecordId;

type AppState = Arc<Shared>;

pub(crate) fn router(shared: AppState) -> Router {
    Router::new()
        .route(ENDPOINT_PATH, post(crm_interface))
        .route(
            "/_sim/records/{table}",
            get(list_records).post(insert_record),
        )
        .route(
            "/_sim/records/{table}/{id}",
            get(get_record).patch(update_record).delete(delete_record),
        )
        .route("/_sim/writes", get(writes).delete(clear_writes))
        .route("/_sim/faults", post(faults))
        .route("/_sim/stats", get(stats))
        .layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES + 1024))
        .with_state(shared)
}

const UNAVAILABLE_HTML: &str = "<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\
<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request.</p></body></html>\n";

const INTERNAL_ERROR_HTML: &str = "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\
<body><h1>Internal Server Error</h1><p>The server encountered an internal error.</p></body></html>\n";

async fn crm_interface(
    State(shared): State<AppState>,
    ConnectInfo(conn): ConnectInfo<KillSwitch>,
    body: Bytes,
) -> Response {
    let (delay, answer, after_commit) = {
        let mut st = shared.lock();
        st.request_count += 1;
        if let Ok(text) = std::str::from_utf8(&body) {
            st.remember_request(text);
        }
        let delay = st.delay;
        let mut after_commit = None;
        let unavailable = st
            .unavailable_until
            .is_some_and(|until| Instant::now() < until);
        let answer = if unavailable {
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE_HTML.to_string(),
            ))
        } else {
            match std::str::from_utf8(&body) {
                Err(_) => Err((
                    StatusCode::BAD_REQUEST,
                    "request body is not UTF-8\n".to_string(),
                )),
                Ok(xml) => match st.handle(xml) {
                    Ok(handled) => {
                        after_commit = st.take_commit_fail(&handled);
                        Ok(handled.xml)
                    }
                    Err(e) => Err((StatusCode::BAD_REQUEST, format!("{e}\n"))),
                },
            }
        };
        (delay, answer, after_commit)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match after_commit {
        Some(AfterCommit::Close) => {
            // The write is committed; the client gets no answer at all.
            conn.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(AfterCommit::Status500) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html")],
                INTERNAL_ERROR_HTML,
            )
                .into_response();
        }
        None => {}
    }
    match answer {
        Ok(xml) => ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response(),
        Err((status, text)) if status == StatusCode::SERVICE_UNAVAILABLE => {
            (status, [(header::CONTENT_TYPE, "text/html")], text).into_response()
        }
        Err((status, text)) => {
            (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// JSON object → field map; scalars are written as text (`true`, `12`), null as empty.
fn field_map(body: &serde_json::Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    body.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                _ => {
                    return Err(format!(
                        "field {k}: value must be a string, number or boolean"
                    ));
                }
            };
            Ok((k.clone(), text))
        })
        .collect()
}

async fn list_records(State(shared): State<AppState>, Path(table): Path<String>) -> Response {
    if super::schema::table(&table).is_none() {
        return error(StatusCode::NOT_FOUND, format!("unknown table {table}"));
    }
    Json(shared.lock().records(&table)).into_response()
}

async fn get_record(
    State(shared): State<AppState>,
    Path((table, id)): Path<(String, RecordId)>,
) -> Response {
    match shared.lock().record(&table, id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no record {id} in {table}")),
    }
}

async fn insert_record(
    State(shared): State<AppState>,
    Path(table): Path<String>,
    Json(body): Json<serde_json::Map<String, Value>>,
) -> Response {
    let fields = match field_map(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut st = shared.lock();
    match st.user_insert(&table, fields) {
        Ok(id) => {
            let record = st.record(&table, id);
            (
                StatusCode::CREATED,
                Json(json!({ "id": id, "record": record })),
            )
                .into_response()
        }
        Err((code, msg)) => error(StatusCode::BAD_REQUEST, format!("{code}: {msg}")),
    }
}

async fn update_record(
    State(shared): State<AppState>,
    Path((table, id)): Path<(String, RecordId)>,
    Json(body): Json<serde_json::Map<String, Value>>,
) -> Response {
    let fields = match field_map(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut st = shared.lock();
    match st.user_update(&table, id, fields) {
        Ok(kind) => {
            Json(json!({ "id": id, "result": kind.as_str(), "record": st.record(&table, id) }))
                .into_response()
        }
        Err((crate::model::ErrorCode::NotFound, msg)) => error(StatusCode::NOT_FOUND, msg),
        Err((code, msg)) => error(StatusCode::BAD_REQUEST, format!("{code}: {msg}")),
    }
}

async fn delete_record(
    State(shared): State<AppState>,
    Path((table, id)): Path<(String, RecordId)>,
) -> Response {
    match shared.lock().user_delete(&table, id) {
        Ok(kind) => Json(json!({ "id": id, "result": kind.as_str() })).into_response(),
        Err((crate::model::ErrorCode::NotFound, msg)) => error(StatusCode::NOT_FOUND, msg),
        Err((code, msg)) => error(StatusCode::BAD_REQUEST, format!("{code}: {msg}")),
    }
}

async fn writes(State(shared): State<AppState>) -> Response {
    Json(shared.lock().write_log.clone()).into_response()
}

async fn clear_writes(State(shared): State<AppState>) -> Response {
    shared.lock().write_log.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Faults {
    lock: Option<LockFault>,
    delay_ms: Option<u64>,
    unavailable_ms: Option<u64>,
    pad_ids: Option<bool>,
    upd_time_minutes: Option<bool>,
    next_id: Option<NextId>,
    /// RFC 3339 instant for UpdDate/UpdTime; an empty text goes back to the system clock.
    clock: Option<String>,
    empty_answers: Option<EmptyFault>,
    commit_then_fail: Option<CommitFault>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NextId {
    stat_no: u32,
    seq_no: u32,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyFault {
    /// `null` or absent: every table.
    table: Option<String>,
    ms: Option<u64>,
    queries: Option<u32>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitFault {
    /// `null` or absent: a write on any table.
    table: Option<String>,
    times: u32,
    mode: AfterCommit,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LockFault {
    id: RecordId,
    times: u32,
}

async fn faults(State(shared): State<AppState>, Json(f): Json<Faults>) -> Response {
    let clock = match f.clock.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(t) => Some(Some(t.with_timezone(&chrono::Utc))),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "clock: expected an RFC 3339 instant such as 2026-11-20T09:00:30Z",
                );
            }
        },
    };
    if let Some(e) = &f.empty_answers
        && e.ms.is_some() == e.queries.is_some()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_answers: give exactly one of ms and queries",
        );
    }
    let mut st = shared.lock();
    if let Some(clock) = clock {
        st.clock = clock;
    }
    if let Some(on) = f.pad_ids {
        st.pad_ids = on;
    }
    if let Some(on) = f.upd_time_minutes {
        st.minute_upd_time = on;
    }
    if let Some(n) = f.next_id {
        st.set_next_id(n.stat_no, n.seq_no);
    }
    if let Some(e) = f.empty_answers {
        let rule = match (e.ms, e.queries) {
            (Some(ms), _) if ms > 0 => Some(EmptyRule {
                table: e.table.clone(),
                until: Some(super::instant_after(Duration::from_millis(ms))),
                remaining: None,
            }),
            (_, Some(n)) if n > 0 => Some(EmptyRule {
                table: e.table.clone(),
                until: None,
                remaining: Some(n),
            }),
            _ => None,
        };
        st.set_empty_rule(e.table, rule);
    }
    if let Some(c) = f.commit_then_fail {
        st.commit_fail = (c.times > 0).then_some(CommitFail {
            table: c.table,
            remaining: c.times,
            how: c.mode,
        });
    }
    if let Some(lock) = f.lock {
        st.lock(lock.id, lock.times);
    }
    if let Some(ms) = f.delay_ms {
        st.delay = Duration::from_millis(ms);
    }
    if let Some(ms) = f.unavailable_ms {
        st.unavailable_until = (ms > 0).then(|| super::instant_after(Duration::from_millis(ms)));
    }
    Json(json!({
        "delay_ms": st.delay.as_millis() as u64,
        "unavailable": st.unavailable_until.is_some_and(|u| Instant::now() < u),
        "pad_ids": st.pad_ids,
        "upd_time_minutes": st.minute_upd_time,
        "empty_answers": st.empty_rules.len(),
        "commit_then_fail": st.commit_fail.as_ref().map_or(0, |c| c.remaining),
    }))
    .into_response()
}

async fn stats(State(shared): State<AppState>) -> Response {
    let st = shared.lock();
    Json(json!({ "requests": st.request_count, "writes": st.write_log.len() })).into_response()
}
