//! The body Graph POSTs to a notificationUrl / lifecycleNotificationUrl.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Parsed POST body of /notifications or /lifecycle (changeNotificationCollection).
/// Lenient about extra keys.
#[derive(Debug, Deserialize)]
pub struct NotificationCollection {
    pub value: Vec<ChangeNotification>,
    #[serde(default, rename = "validationTokens")]
    pub validation_tokens: Vec<String>,
}

/// One item of a [`NotificationCollection`]: a change notification, or a lifecycle
/// notification (then `lifecycle_event` is set and the resource fields are absent).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification {
    pub id: Option<String>,
    pub subscription_id: String,
    pub subscription_expiration_date_time: Option<String>,
    pub client_state: Option<String>,
    pub change_type: Option<String>,
    pub resource: Option<String>,
    pub tenant_id: Option<String>,
    pub resource_data: Option<Value>,
    pub lifecycle_event: Option<String>,
}

/// Splits a resource path into segments; `name('arg')` and `name(arg)` become `name`, `arg`.
fn segments(resource: &str) -> Vec<String> {
    let mut path = resource.trim();
    // Tolerate an absolute URL: keep what follows the version segment.
    if let Some(pos) = path.find("://") {
        let rest = &path[pos + 3..];
        path = match rest.find("/v1.0/").or_else(|| rest.find("/beta/")) {
            Some(v) => {
                let after = &rest[v + 1..];
                after.split_once('/').map(|(_, r)| r).unwrap_or("")
            }
            None => rest.split_once('/').map(|(_, r)| r).unwrap_or(""),
        };
    }
    let path = path.split('?').next().unwrap_or("");
    let mut out = Vec::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        match seg.find('(') {
            Some(open) if seg.ends_with(')') => {
                let name = &seg[..open];
                let arg = &seg[open + 1..seg.len() - 1];
                let arg = arg.trim_matches('\'');
                if !name.is_empty() {
                    out.push(name.to_string());
                }
                out.push(arg.to_string());
            }
            _ => out.push(seg.to_string()),
        }
    }
    out
}

/// `"Users/{uid}/Events/{id}"` or `"Users('uid')/events('id')"` -> `(user, collection
/// lower-cased, id)`. Deeper paths (`Users/u/Todo/Lists/l/Tasks/t`,
/// `users/u/mailFolders('inbox')/messages('m')`) give the last collection and id.
pub fn parse_resource(resource: &str) -> Option<(String, String, String)> {
    let segs = segments(resource);
    if segs.len() < 4 || !segs[0].eq_ignore_ascii_case("users") {
        return None;
    }
    let user = segs[1].clone();
    let id = segs[segs.len() - 1].clone();
    let collection = segs[segs.len() - 2].to_ascii_lowercase();
    if user.is_empty() || id.is_empty() || collection.is_empty() {
        return None;
    }
    Some((user, collection, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pascal_case_form() {
        assert_eq!(
            parse_resource("Users/5f1c/Events/AAMkAEVFTlQxAAA="),
            Some(("5f1c".into(), "events".into(), "AAMkAEVFTlQxAAA=".into()))
        );
    }

    #[test]
    fn parses_parenthesised_form() {
        assert_eq!(
            parse_resource("Users('5f1c')/messages('AAMk=')"),
            Some(("5f1c".into(), "messages".into(), "AAMk=".into()))
        );
    }

    #[test]
    fn parses_nested_todo_and_folder_forms() {
        assert_eq!(
            parse_resource("Users/u1/Todo/Lists/L1/Tasks/T1"),
            Some(("u1".into(), "tasks".into(), "T1".into()))
        );
        assert_eq!(
            parse_resource("users/u1/mailFolders('inbox')/messages('m1')"),
            Some(("u1".into(), "messages".into(), "m1".into()))
        );
    }

    #[test]
    fn rejects_collections_and_garbage() {
        assert_eq!(parse_resource("users/u1/events"), None);
        assert_eq!(parse_resource(""), None);
        assert_eq!(parse_resource("groups/g/events/e"), None);
        assert_eq!(parse_resource("Users('')/events('x')"), None);
    }

    #[test]
    fn collection_deserialises_with_extra_keys_and_lifecycle_items() {
        let body = r#"{"value":[{"subscriptionId":"s1","clientState":"c","changeType":"updated",
            "resource":"Users/u/Events/e","resourceData":{"id":"e"},"extra":1},
            {"subscriptionId":"s2","lifecycleEvent":"missed"}],"other":true}"#;
        let parsed: Result<NotificationCollection, _> = serde_json::from_str(body);
        let parsed = parsed.map_err(|e| e.to_string());
        let c = match parsed {
            Ok(c) => c,
            Err(e) => panic!("parse failed: {e}"),
        };
        assert_eq!(c.value.len(), 2);
        assert_eq!(c.value[1].lifecycle_event.as_deref(), Some("missed"));
        assert!(c.validation_tokens.is_empty());
    }
}
