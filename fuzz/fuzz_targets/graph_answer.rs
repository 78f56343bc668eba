//! Graph JSON answers as the Graph client and the worker read them.
//!
//! The client's own page readers (`delta_round`, list paging, `Reply::json`, `error_code_message`,
//! `map_status`, `parse_subscription`, `well_formed`) are private or `pub(crate)` and sit
//! behind HTTP calls, so this target drives the closest public, pure functions on the same
//! input, the way those readers use them:
//! * the answer body parsed as JSON (`serde_json`, as `Reply::json` does);
//! * a delta / list page: its `value` items, each read with `cgc_graph::crm_id_on_item`,
//!   `cgc_graph::extended_property`, `cgc_graph::tz::date_time_time_zone_to_utc` (start, end,
//!   due) and `cgc_graph::body::html_to_text` (body content); `@odata.nextLink` /
//!   `@odata.deltaLink` read as strings;
//! * the whole value and every item through `cgc_core::from_graph` as an event, a contact, a
//!   task and an e-mail, in UTC and in a German CRM zone;
//! * a subscription answer: `cgc_graph::Subscription` deserialised from the same bytes;
//! * an error body: `error.code` / `error.message` read as `error_code_message` does.
#![no_main]

use cgc_core::{Entity, MapContext, from_graph};
use cgc_graph::{CRM_ID_PROPERTY, SYNC_STATE_PROPERTY, Subscription};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn read_item(item: &Value, contexts: &[MapContext]) {
    let _ = cgc_graph::crm_id_on_item(item);
    let _ = cgc_graph::extended_property(item, CRM_ID_PROPERTY);
    let _ = cgc_graph::extended_property(item, SYNC_STATE_PROPERTY);
    for key in [
        "start",
        "end",
        "dueDateTime",
        "reminderDateTime",
        "completedDateTime",
    ] {
        let _ = cgc_graph::tz::date_time_time_zone_to_utc(&item[key]);
        if let Some(z) = item[key]["timeZone"].as_str() {
            let _ = cgc_graph::tz::resolve_zone(z);
        }
        if let Some(d) = item[key]["dateTime"].as_str() {
            let _ = cgc_graph::tz::parse_naive(d);
        }
    }
    if let Some(html) = item["body"]["content"].as_str() {
        let _ = cgc_graph::body::html_to_text(html);
        let _ = cgc_graph::body::decode_entities(html);
    }
    for ctx in contexts {
        for entity in [
            Entity::Appointment,
            Entity::Contact,
            Entity::Task,
            Entity::Email,
        ] {
            match from_graph(entity, item, ctx) {
                Ok(c) => {
                    let _ = format!("{c:?}");
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sub) = serde_json::from_slice::<Subscription>(data) {
        let _ = sub.expiration_date_time.timestamp();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let page: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return,
        }
    };
    // Error body.
    let _code = page["error"]["code"].as_str().unwrap_or("");
    let _message = page["error"]["message"].as_str().unwrap_or("");
    // Paging links.
    let _next = page["@odata.nextLink"].as_str();
    let _delta = page["@odata.deltaLink"].as_str();
    let contexts = [
        MapContext::default(),
        MapContext::new(chrono_tz::Europe::Berlin),
    ];
    if let Some(items) = page["value"].as_array() {
        for item in items.iter().take(32) {
            // Delta items: usable only with a non-blank string id; `@removed` marks a deletion.
            let usable =
                item.is_object() && item["id"].as_str().is_some_and(|s| !s.trim().is_empty());
            let _removed = item.get("@removed").is_some();
            if usable {
                read_item(item, &contexts);
            }
        }
    }
    // A single item answer (GET /events/{id}, POST answers).
    read_item(&page, &contexts);
});
