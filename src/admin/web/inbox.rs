//! The conflict inbox: per field the CRM, Outlook and base values side by side, one click to
//! take CRM's or Outlook's, or typed values; the form goes through the admin API's resolution.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

use super::html::{csrf_field, esc, page_response, query_value, time, value};
use super::session::Web;
use crate::state::ConflictRecord;

/// Form fields that carry a typed value: `value.<field>`.
const TYPED: &str = "value.";

pub(super) async fn conflicts(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let s = match web.session(&headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let notice = q.get("queued").map(|id| {
        format!(
            "<p class=\"ok\" id=\"notice\">Resolution of {} queued: the chosen values reach CRM \
             and Outlook in a moment, then the conflict leaves this list.</p>",
            esc(id)
        )
    });
    inbox_page(&web, &s.csrf, StatusCode::OK, notice).await
}

async fn inbox_page(web: &Web, csrf: &str, status: StatusCode, notice: Option<String>) -> Response {
    let list = match web.app().state.conflicts().await {
        Ok(l) => l,
        Err(e) => {
            return page_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Conflicts",
                Some(csrf),
                &format!(
                    "<p class=\"error\">Store unavailable: {}. Try again.</p>",
                    esc(&e.to_string())
                ),
            );
        }
    };
    let mut body = format!(
        "<h1>Conflict inbox <span class=\"muted\">({} open)</span></h1>{}",
        list.len(),
        notice.unwrap_or_default()
    );
    if list.is_empty() {
        body.push_str("<p id=\"empty\">No open conflict.</p>");
    }
    for c in &list {
        body.push_str(&card(c, csrf));
    }
    page_response(status, "Conflicts", Some(csrf), &body)
}

/// One conflict with its resolution form.
fn card(c: &ConflictRecord, csrf: &str) -> String {
    let action = format!("/ui/conflicts/{}/resolve", query_value(&c.id));
    let mut out = format!(
        "<section class=\"card conflict\" id=\"conflict-{id}\"><h2>{entity} · {mailbox} · \
         CRM record {crm} · Outlook item <code>{graph}</code></h2>\
         <p class=\"muted\">Opened {opened} · tenant {tenant} · \
         <a href=\"/ui/audit?item={crm_q}\">why did this change? (audit trail)</a></p>\
         <form method=\"post\" action=\"{action}\">{csrf}",
        id = esc(&c.id),
        entity = esc(c.entity.as_str()),
        mailbox = esc(&c.mailbox),
        crm = esc(&c.crm_id),
        graph = esc(&c.graph_id),
        opened = time(c.opened_at),
        tenant = esc(&c.tenant),
        crm_q = query_value(&c.crm_id),
        action = esc(&action),
        csrf = csrf_field(csrf),
    );
    if !c.candidates.is_empty() {
        out.push_str(
            "<p>This Outlook item matches several CRM records: pick the one it belongs to.</p><p>",
        );
        for cand in &c.candidates {
            out.push_str(&format!(
                "<button type=\"submit\" name=\"link\" value=\"{0}\">Link to CRM record {0}</button>",
                esc(cand)
            ));
        }
        out.push_str("</p></form></section>");
        return out;
    }
    out.push_str(
        "<table><tr><th>Field</th><th>CRM</th><th>Outlook</th><th>Base (last agreed)</th>\
         <th>Typed value</th></tr>",
    );
    for f in &c.fields {
        out.push_str(&format!(
            "<tr><td>{name}</td><td class=\"crm\">{crm}</td><td class=\"graph\">{graph}</td>\
             <td>{base}</td><td><input type=\"text\" name=\"{typed}{name}\" \
             aria-label=\"typed value of {name}\" placeholder=\"type a value\"></td></tr>",
            name = esc(&f.field),
            crm = value(&f.crm),
            graph = value(&f.graph),
            base = value(&f.base),
            typed = TYPED,
        ));
    }
    out.push_str(
        "</table><p><button type=\"submit\" name=\"take\" value=\"crm\" class=\"take-crm\">Take CRM</button>\
         <button type=\"submit\" name=\"take\" value=\"graph\" class=\"take-graph\">Take Outlook</button>\
         <button type=\"submit\" name=\"take\" value=\"typed\" class=\"take-typed\">Save typed values</button>\
         <span class=\"muted\">(fields left empty keep no typed value)</span></p></form></section>",
    );
    out
}

/// The form's choice as an admin API resolution body.
fn body_of(c: Option<&ConflictRecord>, form: &[(String, String)]) -> Result<Value, String> {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(link) = get("link") {
        return Ok(serde_json::json!({"link": link}));
    }
    match get("take") {
        Some("crm") => Ok(serde_json::json!({"take": "crm"})),
        Some("graph") => Ok(serde_json::json!({"take": "graph"})),
        Some("typed") => {
            let mut values = serde_json::Map::new();
            for (k, v) in form {
                let Some(field) = k.strip_prefix(TYPED) else {
                    continue;
                };
                if v.trim().is_empty() {
                    continue;
                }
                values.insert(field.to_string(), typed_value(c, field, v)?);
            }
            if values.is_empty() {
                return Err("type a value into at least one field first".into());
            }
            Ok(serde_json::json!({ "values": values }))
        }
        _ => Err("choose Take CRM, Take Outlook or Save typed values".into()),
    }
}

/// A typed value: text for a text field; JSON for a field whose values are not text (a time,
/// a list of attendees).
fn typed_value(c: Option<&ConflictRecord>, field: &str, typed: &str) -> Result<Value, String> {
    let f = c.and_then(|c| c.fields.iter().find(|f| f.field == field));
    let textual = f.is_none_or(|f| {
        [&f.crm, &f.graph, &f.base]
            .iter()
            .all(|v| v.is_string() || v.is_null())
    });
    if textual {
        return Ok(Value::String(typed.to_string()));
    }
    serde_json::from_str(typed).map_err(|e| {
        format!("the values of {field} are not text: type them as JSON like the ones shown ({e})")
    })
}

pub(super) async fn resolve(
    AxState(web): AxState<Web>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let csrf = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let s = match web.form_session(&headers, csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let conflict = web.app().state.conflict(&id).await.ok().flatten();
    let outcome = match body_of(conflict.as_ref(), &form) {
        Ok(body) => {
            super::super::resolve::queue_resolution(web.app(), &id, body, "admin-page").await
        }
        Err(m) => Err((StatusCode::BAD_REQUEST, m)),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(conflict = %id, "conflict resolution queued from the admin page");
            Redirect::to(&format!("/ui/conflicts?queued={}", query_value(&id))).into_response()
        }
        Err((status, m)) => {
            let notice = format!(
                "<p class=\"error\" id=\"notice\">Not resolved: {}</p>",
                esc(&m)
            );
            inbox_page(&web, &s.csrf, status, Some(notice)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgc_core::reconcile::ConflictField;
    use serde_json::json;

    fn conflict() -> ConflictRecord {
        ConflictRecord {
            id: "cf-1".into(),
            tenant: "t".into(),
            mailbox: "m@x.test".into(),
            entity: cgc_core::Entity::Appointment,
            crm_id: "7".into(),
            graph_id: "g<1>".into(),
            fields: vec![
                ConflictField {
                    field: "subject".into(),
                    crm: json!("<script>alert(1)</script>"),
                    graph: json!("b"),
                    base: Value::Null,
                },
                ConflictField {
                    field: "attendees".into(),
                    crm: json!([]),
                    graph: json!(["a@x.test"]),
                    base: json!([]),
                },
            ],
            opened_at: chrono::Utc::now(),
            candidates: vec![],
        }
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_button_is_an_admin_api_body() {
        let c = conflict();
        assert_eq!(
            body_of(Some(&c), &form(&[("take", "graph")])).unwrap(),
            json!({"take": "graph"})
        );
        assert_eq!(
            body_of(Some(&c), &form(&[("take", "crm")])).unwrap(),
            json!({"take": "crm"})
        );
        let typed = form(&[
            ("take", "typed"),
            ("value.subject", "agreed"),
            ("value.attendees", ""),
        ]);
        assert_eq!(
            body_of(Some(&c), &typed).unwrap(),
            json!({"values": {"subject": "agreed"}})
        );
        let list = form(&[("take", "typed"), ("value.attendees", "[\"b@x.test\"]")]);
        assert_eq!(
            body_of(Some(&c), &list).unwrap(),
            json!({"values": {"attendees": ["b@x.test"]}})
        );
        assert!(
            body_of(
                Some(&c),
                &form(&[("take", "typed"), ("value.attendees", "b")])
            )
            .is_err()
        );
        assert!(body_of(Some(&c), &form(&[("take", "typed")])).is_err());
        assert!(body_of(Some(&c), &form(&[])).is_err());
    }

    #[test]
    fn the_card_escapes_every_value() {
        let html = card(&conflict(), "tok");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("g&lt;1&gt;"), "{html}");
    }
}
