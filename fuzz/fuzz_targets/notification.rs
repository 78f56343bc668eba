//! Graph change-notification batches as `POST /notifications` reads them (src/receiver.rs):
//! the body is deserialised into a `NotificationCollection`, then each item's `resource` goes
//! through `parse_resource` and its `resourceData.id` is read. The receiver's own `accept` /
//! `to_event` are private and async (they need the store and the queue), so this target drives
//! the same public, pure steps they are built from.
#![no_main]

use cgc_graph::{ChangeNotification, NotificationCollection, parse_resource};
use libfuzzer_sys::fuzz_target;

fn check_resource(resource: &str) {
    if let Some((user, collection, id)) = parse_resource(resource) {
        assert!(!user.is_empty(), "empty user from {resource:?}");
        assert!(!collection.is_empty(), "empty collection from {resource:?}");
        assert!(!id.is_empty(), "empty id from {resource:?}");
        assert_eq!(
            collection,
            collection.to_ascii_lowercase(),
            "collection not lower-cased for {resource:?}"
        );
    }
}

fn check_item(n: &ChangeNotification) {
    // What the receiver reads from each item.
    let _ = n
        .change_type
        .as_deref()
        .map(|c| c.trim().to_ascii_lowercase());
    let _data_id = n
        .resource_data
        .as_ref()
        .and_then(|d| d.get("id"))
        .and_then(|v| v.as_str());
    if let Some(r) = n.resource.as_deref() {
        check_resource(r);
    }
    // A notification is re-serialised when it travels further; that must always work and
    // read back.
    let text = serde_json::to_string(n).expect("a parsed notification serialises");
    let back: Result<ChangeNotification, _> = serde_json::from_str(&text);
    assert!(
        back.is_ok(),
        "re-serialised notification does not parse: {text}"
    );
}

fuzz_target!(|data: &[u8]| {
    // The receiver hands the raw body bytes to serde_json (no UTF-8 check of its own).
    if let Ok(batch) = serde_json::from_slice::<NotificationCollection>(data) {
        for n in &batch.value {
            check_item(n);
        }
    }
    // The resource parser on its own, on any text.
    if let Ok(s) = std::str::from_utf8(data) {
        check_resource(s);
    }
});
