//! Microsoft Graph client and Graph simulator for `crm-graph-connector`.
//!
//! * [`client`]: app-only Graph client (token cache, per-mailbox concurrency limit,
//!   Retry-After handling, delta rounds, subscriptions).
//! * [`sim`]: an in-process / standalone Graph simulator reproducing the behaviour
//!   documented in `shared/protocols/graph.md` (sections 1-8).
//! * [`schema`]: a checker for JSON bodies against `graph-v1.0-schema.json`.

pub mod body;
pub mod client;
mod notification;
pub mod permissions;
pub mod schema;
pub mod sim;
pub mod tz;
mod util;

pub use client::{
    DeltaProgress, DeltaRound, DeltaStart, GraphClient, GraphConfig, GraphError,
    InMemoryThrottleShare, NewSubscription, RequestObserver, RetryPolicy, Subscription,
    ThrottleShare,
};
pub use notification::{ChangeNotification, NotificationCollection, parse_resource};
pub use sim::{GraphSim, GraphSimConfig};

/// The single-value extended property holding the CRM record id on Graph events and contacts.
pub const CRM_ID_PROPERTY: &str = "String {6f0b8b1e-3c1d-4f7a-9a55-4b1c2d3e4f50} Name CrmRecordId";

/// `applicationName` of the linkedResource that carries the CRM id on a To Do task.
pub const LINKED_RESOURCE_APP: &str = "crm-graph-connector";

/// The single-value extended property holding the connector's sync state on events and contacts.
pub const SYNC_STATE_PROPERTY: &str =
    "String {6f0b8b1e-3c1d-4f7a-9a55-4b1c2d3e4f50} Name CrmSyncState";

/// The value of a single-value extended property on a Graph item (property ids compared
/// ignoring letter case); `None` when absent or not a string.
pub fn extended_property(item: &serde_json::Value, property_id: &str) -> Option<String> {
    item.get("singleValueExtendedProperties")?
        .as_array()?
        .iter()
        .find(|p| {
            p.get("id")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|id| id.trim().eq_ignore_ascii_case(property_id))
        })
        .and_then(|p| p.get("value")?.as_str().map(str::to_string))
}

/// The CRM record id an item carries: the [`CRM_ID_PROPERTY`] extended property (events,
/// contacts) or a linkedResource with `applicationName` [`LINKED_RESOURCE_APP`] (To Do tasks),
/// trimmed and read as a decimal number.
pub fn crm_id_on_item(item: &serde_json::Value) -> Option<u64> {
    if let Some(v) = extended_property(item, CRM_ID_PROPERTY) {
        return v.trim().parse().ok();
    }
    item.get("linkedResources")?
        .as_array()?
        .iter()
        .find(|l| {
            l.get("applicationName").and_then(serde_json::Value::as_str)
                == Some(LINKED_RESOURCE_APP)
        })
        .and_then(|l| l.get("externalId")?.as_str()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extended_properties_are_read_ignoring_case() {
        let item = json!({ "singleValueExtendedProperties": [
            { "id": CRM_ID_PROPERTY.to_lowercase(), "value": " 42 " },
            { "id": SYNC_STATE_PROPERTY, "value": "v1:abc" } ] });
        assert_eq!(
            extended_property(&item, SYNC_STATE_PROPERTY).as_deref(),
            Some("v1:abc")
        );
        assert_eq!(crm_id_on_item(&item), Some(42));
        assert_eq!(extended_property(&json!({}), CRM_ID_PROPERTY), None);
        assert_eq!(
            extended_property(
                &json!({ "singleValueExtendedProperties": "x" }),
                CRM_ID_PROPERTY
            ),
            None
        );
    }

    #[test]
    fn task_crm_id_comes_from_the_linked_resource() {
        let task = json!({ "linkedResources": [
            { "applicationName": "Other", "externalId": "7" },
            { "applicationName": LINKED_RESOURCE_APP, "externalId": " 18446744073709551615 " } ] });
        assert_eq!(crm_id_on_item(&task), Some(u64::MAX));
        let bad = json!({ "linkedResources": [{ "applicationName": LINKED_RESOURCE_APP, "externalId": "x" }] });
        assert_eq!(crm_id_on_item(&bad), None);
    }
}
