//! Graph lifecycle notifications as `POST /lifecycle` reads them (src/receiver.rs): the same
//! `NotificationCollection` envelope; an item is a lifecycle notification when it carries
//! `lifecycleEvent` (then the resource fields are usually absent). The receiver turns it into
//! an event keyed by subscription id and event name; the scheduler then matches the name.
#![no_main]

use cgc_graph::NotificationCollection;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<NotificationCollection>(data) else {
        return;
    };
    for token in &batch.validation_tokens {
        let _ = token.len();
    }
    for n in &batch.value {
        let Some(ev) = n.lifecycle_event.as_deref() else {
            continue;
        };
        // The event's dedup key as src/event.rs builds it, and the scheduler's dispatch.
        let key = format!("l:{}:{}", n.subscription_id, ev);
        assert!(key.len() >= ev.len());
        let _known = matches!(
            ev,
            "reauthorizationRequired" | "subscriptionRemoved" | "missed"
        );
        // The expiration the item may carry is an RFC 3339 instant when well formed.
        if let Some(exp) = n.subscription_expiration_date_time.as_deref() {
            let _ = serde_json::from_value::<cgc_graph::Subscription>(serde_json::json!({
                "id": n.subscription_id,
                "resource": n.resource.clone().unwrap_or_default(),
                "changeType": n.change_type.clone().unwrap_or_default(),
                "expirationDateTime": exp,
                "notificationUrl": "https://example.invalid/notifications",
            }));
        }
        let text = serde_json::to_string(n).expect("a parsed notification serialises");
        let back: Result<NotificationCollection, _> =
            serde_json::from_str(&format!("{{\"value\":[{text}]}}"));
        assert!(
            back.is_ok(),
            "re-serialised lifecycle item does not parse: {text}"
        );
    }
});
