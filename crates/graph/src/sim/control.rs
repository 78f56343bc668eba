//! `/_sim/...`: a small JSON control API for curl and the demo (no auth; keep it local).
//!
//! * `GET  /_sim/stats` (request and write counts, `meeting_messages` Graph would have mailed)
//! * `POST /_sim/mailboxes {"upn": "..."}`
//! * `GET|POST /_sim/users/{m}/events`, `PATCH|DELETE /_sim/users/{m}/events/{id}`, `POST .../{id}/touch`
//!   (same for `contacts` and `tasks`; tasks go to the default list unless `?list=` is given)
//! * `POST /_sim/users/{m}/messages?folder=Inbox/CRM` (deliver), `GET /_sim/users/{m}/messages?folder=...`
//! * `GET /_sim/subscriptions`, `POST /_sim/subscriptions/{id}/lifecycle {"event": "missed"}`
//! * `POST /_sim/faults {"throttle_next": {"n": 3, "retry_after_secs": 2}, "unavailable_next": 1,
//!   "duplicate_deliveries": 3, "created_plus_updated": true, "drop_notifications": 1,
//!   "delay_notifications_ms": 500, "latency_ms": 20, "expire_delta_tokens": true,
//!   "reset_delta_tokens": true, "fail_token": "AADSTS7000222" | null, "revoke_tokens": true,
//!   "token_roles": ["Calendars.ReadWrite", …] | null (the `roles` of tokens issued next),
//!   "throttle_mailbox": {"mailbox": "..", "retry_after_secs": 2},
//!   "commit_then_fail": {"mailbox": "..", "n": 1, "mode": "500" | "503" | "504" | "close"},
//!   "empty_listing_once": "<mailbox>", "updates_after_create": 2, "miss_notifications": 1,
//!   "replay_delta": true, "reject_todo_subscriptions": false}`

use std::time::Duration;

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::GraphSim;
use super::http::error_resp;
use super::state::ApiError;
use crate::util::parse_query;

fn ok(status: u16, v: Value) -> Response {
    let code = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    if status == 204 {
        return axum::response::IntoResponse::into_response(code);
    }
    let mut r = axum::response::IntoResponse::into_response((code, v.to_string()));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

fn missing() -> Response {
    error_resp(ApiError::new(
        404,
        "NotFound",
        "No such item, mailbox or control endpoint.",
    ))
}

pub(crate) async fn handle(
    sim: GraphSim,
    method: Method,
    segs: &[String],
    query: &str,
    body: &[u8],
) -> Response {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return error_resp(ApiError::bad("Body is not JSON.")),
        }
    };
    let pairs = parse_query(query);
    let qv = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method.clone(), s.as_slice()) {
        (Method::GET, ["stats"]) => {
            let st = sim.lock();
            ok(
                200,
                json!({
                    "request_count": st.request_count,
                    "token_requests": st.token_requests,
                    "app_writes": st.app_writes,
                    "meeting_messages": st.meeting_messages,
                    "max_concurrency_seen": st.max_seen,
                    "queued_notifications": st.queue.len(),
                    "subscriptions": st.subs.len(),
                }),
            )
        }
        (Method::POST, ["mailboxes"]) => match body["upn"].as_str() {
            Some(upn) => ok(
                201,
                json!({ "id": sim.add_mailbox(upn), "userPrincipalName": upn }),
            ),
            None => error_resp(ApiError::bad("upn is required.")),
        },
        (Method::GET, ["subscriptions"]) => ok(200, json!({ "value": sim.subscriptions() })),
        (Method::POST, ["subscriptions", id, "lifecycle"]) => match body["event"].as_str() {
            Some(ev @ ("missed" | "subscriptionRemoved" | "reauthorizationRequired")) => {
                sim.send_lifecycle(id, ev);
                ok(202, json!({}))
            }
            _ => error_resp(ApiError::bad(
                "event must be missed, subscriptionRemoved or reauthorizationRequired.",
            )),
        },
        (Method::POST, ["faults"]) => {
            if let Some(t) = body.get("throttle_next") {
                sim.throttle_next(
                    t["n"].as_u64().unwrap_or(1) as u32,
                    t["retry_after_secs"].as_u64().unwrap_or(1),
                );
            }
            if let Some(n) = body["unavailable_next"].as_u64() {
                sim.unavailable_next(n as u32);
            }
            if let Some(k) = body["duplicate_deliveries"].as_u64() {
                sim.duplicate_deliveries(k as u32);
            }
            if let Some(b) = body["created_plus_updated"].as_bool() {
                sim.created_plus_updated(b);
            }
            if let Some(n) = body["drop_notifications"].as_u64() {
                sim.drop_notifications(n as u32);
            }
            if let Some(ms) = body["delay_notifications_ms"].as_u64() {
                sim.delay_notifications(Duration::from_millis(ms));
            }
            if let Some(ms) = body["latency_ms"].as_u64() {
                sim.set_latency(Duration::from_millis(ms));
            }
            if body["expire_delta_tokens"].as_bool() == Some(true) {
                sim.expire_delta_tokens();
            }
            if body["reset_delta_tokens"].as_bool() == Some(true) {
                sim.reset_delta_tokens();
            }
            if let Some(v) = body.get("fail_token") {
                sim.fail_token(v.as_str());
            }
            if let Some(v) = body.get("token_roles") {
                let roles: Option<Vec<&str>> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect());
                sim.set_token_roles(roles.as_deref());
            }
            if body["revoke_tokens"].as_bool() == Some(true) {
                sim.revoke_tokens();
            }
            if let Some(t) = body.get("throttle_mailbox")
                && let Some(m) = t["mailbox"].as_str()
            {
                sim.throttle_mailbox(m, t["retry_after_secs"].as_u64().unwrap_or(1));
            }
            if let Some(c) = body.get("commit_then_fail")
                && let Some(m) = c["mailbox"].as_str()
            {
                let how = match c["mode"].as_str().unwrap_or("500") {
                    "503" => super::CommitFail::Status503,
                    "504" => super::CommitFail::Status504,
                    "close" => super::CommitFail::CloseConnection,
                    _ => super::CommitFail::Status500,
                };
                sim.commit_then_fail(m, c["n"].as_u64().unwrap_or(1) as u32, how);
            }
            if let Some(m) = body["empty_listing_once"].as_str() {
                sim.empty_listing_once(m);
            }
            if let Some(n) = body["updates_after_create"].as_u64() {
                sim.updates_after_create(n as u32);
            }
            if let Some(n) = body["miss_notifications"].as_u64() {
                sim.miss_notifications(n as u32);
            }
            if let Some(b) = body["replay_delta"].as_bool() {
                sim.replay_delta(b);
            }
            if let Some(b) = body["reject_todo_subscriptions"].as_bool() {
                sim.reject_todo_subscriptions(b);
            }
            ok(200, json!({}))
        }
        (m, ["users", mbx, "messages"]) => {
            let folder = qv("folder").unwrap_or_else(|| "Inbox".into());
            match m {
                Method::GET => ok(200, json!({ "value": sim.messages_in(mbx, &folder) })),
                Method::POST => match sim.deliver_message(mbx, &folder, body) {
                    Value::Null => missing(),
                    v => ok(201, v),
                },
                _ => missing(),
            }
        }
        (m, ["users", mbx, coll, rest @ ..])
            if matches!(*coll, "events" | "contacts" | "tasks") =>
        {
            let (coll, mbx) = (*coll, *mbx);
            match (m, rest) {
                (Method::GET, []) => ok(
                    200,
                    json!({ "value": match coll {
                        "events" => sim.events(mbx),
                        "contacts" => sim.contacts(mbx),
                        _ => sim.tasks(mbx),
                    }}),
                ),
                (Method::POST, []) => {
                    if !body.is_object() {
                        return error_resp(ApiError::bad("Body must be a JSON object."));
                    }
                    let v = match coll {
                        "events" => sim.user_create_event(mbx, body),
                        "contacts" => sim.user_create_contact(mbx, body),
                        _ => {
                            let list = qv("list").unwrap_or_else(|| sim.default_list_id(mbx));
                            sim.user_create_task(mbx, &list, body)
                        }
                    };
                    if v.is_null() { missing() } else { ok(201, v) }
                }
                (Method::GET, [id]) => {
                    let v = match coll {
                        "events" => sim.event(mbx, id),
                        "contacts" => sim.contact(mbx, id),
                        _ => sim.task(mbx, id),
                    };
                    v.map(|v| ok(200, v)).unwrap_or_else(missing)
                }
                (Method::PATCH, [id]) => {
                    if !body.is_object() {
                        return error_resp(ApiError::bad("Body must be a JSON object."));
                    }
                    let v = match coll {
                        "events" => sim.user_update_event(mbx, id, body),
                        "contacts" => sim.user_update_contact(mbx, id, body),
                        _ => sim.user_update_task(mbx, id, body),
                    };
                    if v.is_null() { missing() } else { ok(200, v) }
                }
                (Method::DELETE, [id]) => {
                    match coll {
                        "events" => sim.user_delete_event(mbx, id),
                        "contacts" => sim.user_delete_contact(mbx, id),
                        _ => sim.user_delete_task(mbx, id),
                    }
                    ok(204, Value::Null)
                }
                (Method::POST, [id, "touch"]) if coll != "tasks" => {
                    if coll == "events" {
                        sim.user_touch_event(mbx, id)
                    } else {
                        sim.user_touch_contact(mbx, id)
                    }
                    ok(204, Value::Null)
                }
                _ => missing(),
            }
        }
        _ => missing(),
    }
}
