//! The audit trail of one item ("why did this change?"): every field written to either side of
//! one linked pair, newest first, with the cause and who resolved it.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cgc_core::{Cause, Side};

use super::html::{esc, page_response, query_value, time, value};
use super::session::Web;
use crate::state::AuditRecord;

/// Audit records read per tenant (the admin API's largest `limit`).
const READ: usize = 10_000;
/// Records shown without an item.
const RECENT: usize = 50;

fn cause(c: &Cause) -> &'static str {
    match c {
        Cause::Notification => "a change notification from Outlook",
        Cause::Delta => "a change found by the Outlook catch-up (delta)",
        Cause::CrmPoll => "a change found in CRM",
        Cause::ConflictResolution => "an operator's conflict resolution",
        Cause::Undo => "an operator's undo",
    }
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Crm => "CRM",
        Side::Graph => "Outlook",
    }
}

/// The records of one pair: those naming `item` as CRM or Graph id, and those naming the other
/// id of a matching record (so either id finds the whole trail).
fn of_item(all: &[AuditRecord], item: &str) -> Vec<AuditRecord> {
    let mut crm: BTreeSet<String> = BTreeSet::new();
    let mut graph: BTreeSet<String> = BTreeSet::new();
    for r in all {
        let c = r.crm_id.map(|c| c.to_string());
        if c.as_deref() == Some(item) || r.graph_id.as_deref() == Some(item) {
            crm.extend(c);
            graph.extend(r.graph_id.clone());
        }
    }
    crm.insert(item.to_string());
    graph.insert(item.to_string());
    all.iter()
        .filter(|r| {
            r.crm_id.is_some_and(|c| crm.contains(&c.to_string()))
                || r.graph_id.as_ref().is_some_and(|g| graph.contains(g))
        })
        .cloned()
        .collect()
}

fn row(r: &AuditRecord) -> String {
    let e = &r.entry;
    let by = r
        .resolved_by
        .as_deref()
        .map(|b| format!(" (resolved by {})", esc(b)))
        .unwrap_or_default();
    let item = r.crm_id.map(|c| c.to_string()).or(r.graph_id.clone());
    let item = item
        .map(|i| {
            format!(
                "<a href=\"/ui/audit?item={}\">{}</a>",
                query_value(&i),
                esc(&i)
            )
        })
        .unwrap_or_default();
    format!(
        "<tr><td>{at}</td><td>{mailbox}</td><td>{entity} {item}</td><td>{side}</td>\
         <td>{field}</td><td>{before}</td><td>{after}</td><td>{why}{by}</td>\
         <td><code>{event}</code></td></tr>",
        at = time(r.at),
        mailbox = esc(&r.mailbox),
        entity = esc(e.entity.as_str()),
        side = side(e.side),
        field = esc(&e.field),
        before = value(&e.before),
        after = value(&e.after),
        why = cause(&e.cause),
        event = esc(&r.event_id),
    )
}

pub(super) async fn audit(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let s = match web.session(&headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let item = q.get("item").map(|i| i.trim()).filter(|i| !i.is_empty());
    let mut all = Vec::new();
    for t in web.app().tenants.keys() {
        match web.app().state.audit_tail(t, READ).await {
            Ok(v) => all.extend(v),
            Err(e) => {
                return page_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Audit",
                    Some(&s.csrf),
                    &format!(
                        "<p class=\"error\">Store unavailable: {}. Try again.</p>",
                        esc(&e.to_string())
                    ),
                );
            }
        }
    }
    all.sort_by_key(|r| std::cmp::Reverse(r.at));
    let (heading, shown) = match item {
        Some(i) => (format!("Why did {} change?", esc(i)), of_item(&all, i)),
        None => (
            "Latest changes".to_string(),
            all.into_iter().take(RECENT).collect(),
        ),
    };
    let mut body = format!(
        "<h1>Audit trail</h1><form method=\"get\" action=\"/ui/audit\"><p>\
         <label for=\"item\">CRM record id or Outlook item id</label> \
         <input type=\"text\" id=\"item\" name=\"item\" value=\"{}\" style=\"width:40%\"> \
         <button type=\"submit\">Show its trail</button></p></form><h2>{heading}</h2>",
        esc(item.unwrap_or(""))
    );
    if shown.is_empty() {
        body.push_str("<p id=\"empty\">No write recorded.</p>");
    } else {
        body.push_str(
            "<table id=\"audit\"><tr><th>When</th><th>Mailbox</th><th>Item</th><th>Written to</th>\
             <th>Field</th><th>Before</th><th>After</th><th>Because of</th><th>Event</th></tr>",
        );
        for r in &shown {
            body.push_str(&row(r));
        }
        body.push_str("</table>");
    }
    page_response(StatusCode::OK, "Audit", Some(&s.csrf), &body)
}
