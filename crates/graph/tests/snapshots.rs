//! Snapshots of the JSON bodies the client sends (captured from the simulator's request log).

mod common;

use cgc_graph::NewSubscription;
use chrono::{TimeZone, Utc};
use common::*;
use serde_json::{Value, json};

fn logged(sim: &cgc_graph::GraphSim, method: &str, path_end: &str) -> Value {
    sim.requests()
        .into_iter()
        .rev()
        .find(|r| r.method == method && r.path.ends_with(path_end))
        .and_then(|r| r.body)
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn event_create_body() {
    let (sim, client) = setup().await;
    let body = json!({
        "subject": "Quarterly review",
        "body": { "contentType": "text", "content": "Agenda" },
        "start": { "dateTime": "2030-03-04T09:00:00.0000000", "timeZone": "UTC" },
        "end": { "dateTime": "2030-03-04T10:00:00.0000000", "timeZone": "UTC" },
        "singleValueExtendedProperties": [{ "id": "String {00000000-0000-0000-0000-000000000000} Name Other", "value": "kept" }]
    });
    client
        .create_event(MBX, &body, "crm-MA-42", "MA-42")
        .await
        .expect("create");
    insta::assert_json_snapshot!("event_create", logged(&sim, "POST", "/events"));
}

#[tokio::test]
async fn event_patch_bodies() {
    let (sim, client) = setup().await;
    let e = sim.user_create_event(MBX, json!({ "subject": "x" }));
    let id = e["id"].as_str().expect("id");
    client
        .set_event_crm_id(MBX, id, "MA-42")
        .await
        .expect("set");
    insta::assert_json_snapshot!("event_set_crm_id_patch", logged(&sim, "PATCH", id));
    let etag = sim.event(MBX, id).expect("e")["@odata.etag"]
        .as_str()
        .expect("etag")
        .to_string();
    client
        .update_event(MBX, id, &json!({ "subject": "New subject" }), Some(&etag))
        .await
        .expect("update");
    let req = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "PATCH")
        .expect("patch logged");
    assert_eq!(req.if_match.as_deref(), Some(etag.as_str()));
    insta::assert_json_snapshot!("event_update_patch", req.body);
}

#[tokio::test]
async fn subscription_create_body() {
    let (sim, client) = setup().await;
    let r = receiver(Handshake::Echo).await;
    let live = NewSubscription {
        resource: format!("users/{MBX}/events"),
        change_type: "created,updated,deleted".into(),
        notification_url: format!("{}/notifications?conn=42", r.base),
        lifecycle_notification_url: Some(format!("{}/lifecycle?conn=42", r.base)),
        expiration: Utc::now() + chrono::Duration::days(6),
        client_state: "state".into(),
    };
    client.create_subscription(&live).await.expect("create");
    assert_eq!(
        logged(&sim, "POST", "/subscriptions"),
        live.to_body(),
        "the client sends to_body()"
    );
    let fixed = NewSubscription {
        resource: "users/5f1c0b7e-1111-4a4a-9c9c-000000000001/events".into(),
        change_type: "created,updated,deleted".into(),
        notification_url: "https://hooks.example-crm.test/notifications?tenant=contoso".into(),
        lifecycle_notification_url: Some(
            "https://hooks.example-crm.test/lifecycle?tenant=contoso".into(),
        ),
        expiration: Utc
            .with_ymd_and_hms(2030, 3, 10, 8, 0, 0)
            .single()
            .expect("date"),
        client_state: "b64:Qm9yaW5nU2VjcmV0MTIz".into(),
    };
    insta::assert_json_snapshot!("subscription_create", fixed.to_body());
}

#[tokio::test]
async fn task_create_body() {
    let (sim, client) = setup().await;
    let list = sim.default_list_id(MBX);
    let body = json!({
        "title": "Send proposal",
        "status": "inProgress",
        "importance": "high",
        "dueDateTime": { "dateTime": "2030-03-05T00:00:00.0000000", "timeZone": "UTC" }
    });
    client
        .create_task(MBX, &list, &body, "A1-77")
        .await
        .expect("create");
    insta::assert_json_snapshot!("task_create", logged(&sim, "POST", "/tasks"));
}
