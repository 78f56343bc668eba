//! Contract tests: the client against the in-process simulator, for every call and fault knob.

mod common;

use std::time::Duration;

use cgc_graph::{
    CRM_ID_PROPERTY, DeltaStart, GraphClient, GraphError, NewSubscription, NotificationCollection,
    RetryPolicy, parse_resource,
};
use chrono::{Duration as CDuration, Utc};
use common::*;
use serde_json::{Value, json};

fn event_body(subject: &str, start: &str, end: &str) -> Value {
    json!({
        "subject": subject,
        "body": { "contentType": "text", "content": "Agenda" },
        "start": { "dateTime": start, "timeZone": "UTC" },
        "end": { "dateTime": end, "timeZone": "UTC" },
    })
}

fn in_days(d: i64, hour: u32) -> String {
    let t = Utc::now().date_naive() + CDuration::days(d);
    format!("{}T{:02}:00:00.0000000", t, hour)
}

fn window() -> DeltaStart {
    DeltaStart::Window {
        start: Utc::now() - CDuration::days(7),
        end: Utc::now() + CDuration::days(30),
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

fn new_sub(resource: &str, r: &Receiver, lifecycle: bool) -> NewSubscription {
    NewSubscription {
        resource: resource.to_string(),
        change_type: "created,updated,deleted".into(),
        notification_url: format!("{}/notifications?conn=42", r.base),
        lifecycle_notification_url: lifecycle.then(|| format!("{}/lifecycle?conn=42", r.base)),
        expiration: Utc::now() + CDuration::days(6),
        client_state: "state-123".into(),
    }
}

// ------------------------------------------------------------------------ auth

#[tokio::test]
async fn token_is_cached_across_calls() {
    let (sim, client) = setup().await;
    for _ in 0..5 {
        assert!(client.get_user(MBX).await.expect("get_user").is_some());
    }
    assert_eq!(sim.token_requests(), 1);
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_transparently() {
    let (sim, client) = setup().await;
    client.get_user(MBX).await.expect("first call");
    sim.revoke_tokens();
    assert!(client.get_user(MBX).await.expect("after revoke").is_some());
    assert_eq!(sim.token_requests(), 2);
}

#[tokio::test]
async fn expired_secret_gives_admin_actionable_auth_error() {
    let (sim, client) = setup().await;
    sim.fail_token(Some("AADSTS7000222"));
    match client.get_user(MBX).await {
        Err(GraphError::Auth { code, message }) => {
            assert_eq!(code, "AADSTS7000222");
            assert_eq!(
                message,
                "client secret expired - create a new one in Entra and update `client_secret`"
            );
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_secret_and_unknown_app_map_to_their_codes() {
    let sim = sim().await;
    let bad =
        GraphClient::with_policy(config(&sim, "not-the-secret"), fast_policy()).expect("client");
    match bad.get_user(MBX).await {
        Err(GraphError::Auth { code, message }) => {
            assert_eq!(code, "AADSTS7000215");
            assert!(message.contains("client_secret"), "{message}");
            assert!(!message.contains("not-the-secret"));
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    let mut cfg = config(&sim, "secret");
    cfg.client_id = "11111111-1111-1111-1111-111111111111".into();
    let unknown = GraphClient::with_policy(cfg, fast_policy()).expect("client");
    assert!(
        matches!(unknown.get_user(MBX).await, Err(GraphError::Auth { code, .. }) if code == "AADSTS700016")
    );
    let mut cfg = config(&sim, "secret");
    cfg.azure_tenant_id = "22222222-2222-2222-2222-222222222222".into();
    let tenant = GraphClient::with_policy(cfg, fast_policy()).expect("client");
    assert!(
        matches!(tenant.get_user(MBX).await, Err(GraphError::Auth { code, .. }) if code == "AADSTS90002")
    );
}

#[tokio::test]
async fn html_token_answer_is_a_typed_error() {
    let (sim, client) = setup().await;
    sim.fail_token(Some("html"));
    match client.get_user(MBX).await {
        Err(GraphError::Auth { code, message }) => {
            assert_eq!(code, "NonJsonTokenResponse");
            assert!(message.contains("login_url"), "{message}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    sim.fail_token(None);
    assert!(client.get_user(MBX).await.expect("recovers").is_some());
}

#[tokio::test]
async fn access_policy_denial_is_access_denied() {
    let (sim, client) = setup().await;
    sim.deny_mailbox(MBX, true);
    match client.get_event(MBX, "x").await {
        Err(GraphError::AccessDenied { message }) => {
            assert!(message.contains("Access to OData is disabled"))
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
}

// ------------------------------------------------------------------------ users

#[tokio::test]
async fn users_by_upn_or_id_and_unknown_is_none() {
    let (sim, client) = setup().await;
    let u = client.get_user(MBX).await.expect("get").expect("exists");
    assert_eq!(u["userPrincipalName"], MBX);
    let id = u["id"].as_str().expect("id").to_string();
    assert_eq!(sim.user_id(MBX).as_deref(), Some(id.as_str()));
    assert_eq!(
        client.get_user(&id).await.expect("by id").expect("exists")["userPrincipalName"],
        MBX
    );
    assert!(
        client
            .get_user("nobody@contoso.com")
            .await
            .expect("no error")
            .is_none()
    );
}

// ------------------------------------------------------------------------ events

#[tokio::test]
async fn event_create_read_update_delete() {
    let (sim, client) = setup().await;
    let created = client
        .create_event(
            MBX,
            &event_body("Review", &in_days(1, 9), &in_days(1, 10)),
            "txn-1",
            "CRM-1",
        )
        .await
        .expect("create");
    let id = id_of(&created);
    assert_eq!(created["transactionId"], "txn-1");
    assert_eq!(created["type"], "singleInstance");
    assert!(created["iCalUId"].as_str().is_some_and(|s| !s.is_empty()));
    let stored = sim
        .event(MBX, &id)
        .expect("stored under the returned (immutable) id");
    assert_eq!(
        stored["singleValueExtendedProperties"][0]["id"],
        CRM_ID_PROPERTY
    );
    assert_eq!(stored["singleValueExtendedProperties"][0]["value"], "CRM-1");

    let read = client
        .get_event(MBX, &id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        read["singleValueExtendedProperties"],
        json!([{ "id": CRM_ID_PROPERTY, "value": "CRM-1" }])
    );
    let etag = read["@odata.etag"].as_str().expect("etag").to_string();
    assert_eq!(
        etag,
        format!("W/\"{}\"", read["changeKey"].as_str().expect("changeKey"))
    );

    let updated = client
        .update_event(MBX, &id, &json!({ "subject": "Review 2" }), Some(&etag))
        .await
        .expect("update");
    assert_eq!(updated["subject"], "Review 2");
    assert_ne!(updated["changeKey"], read["changeKey"]);

    // The old etag no longer matches.
    let stale = client
        .update_event(MBX, &id, &json!({ "subject": "Review 3" }), Some(&etag))
        .await;
    assert!(
        matches!(stale, Err(GraphError::PreconditionFailed)),
        "{stale:?}"
    );
    assert_eq!(
        sim.event(MBX, &id).expect("still there")["subject"],
        "Review 2"
    );

    client.delete_event(MBX, &id).await.expect("delete");
    client
        .delete_event(MBX, &id)
        .await
        .expect("deleting again counts as done");
    assert!(
        client
            .get_event(MBX, &id)
            .await
            .expect("get after delete")
            .is_none()
    );
    assert_eq!(sim.app_writes(MBX), 3);

    // Every Outlook call asked for immutable ids.
    for r in sim.requests().iter().filter(|r| r.path.contains("/events")) {
        assert_eq!(
            r.prefer.as_deref(),
            Some("IdType=\"ImmutableId\""),
            "{} {}",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn transaction_id_makes_create_idempotent() {
    let (sim, client) = setup().await;
    let body = event_body("Once", &in_days(2, 9), &in_days(2, 10));
    let a = client
        .create_event(MBX, &body, "txn-same", "CRM-9")
        .await
        .expect("first");
    let b = client
        .create_event(MBX, &body, "txn-same", "CRM-9")
        .await
        .expect("second");
    assert_eq!(id_of(&a), id_of(&b));
    assert_eq!(sim.events(MBX).len(), 1);
    assert_eq!(sim.app_writes(MBX), 1);
}

#[tokio::test]
async fn create_with_transaction_id_is_retried_after_503() {
    let (sim, client) = setup().await;
    sim.unavailable_next(2);
    let e = client
        .create_event(
            MBX,
            &event_body("Retry", &in_days(1, 9), &in_days(1, 10)),
            "txn-r",
            "CRM-r",
        )
        .await
        .expect("retried to success");
    assert!(sim.event(MBX, &id_of(&e)).is_some());
    assert_eq!(sim.events(MBX).len(), 1);
    assert_eq!(sim.request_count(), 3);
}

#[tokio::test]
async fn find_event_by_crm_id_and_ical_uid() {
    let (sim, client) = setup().await;
    let user = sim.user_create_event(
        MBX,
        event_body("User made", &in_days(3, 9), &in_days(3, 10)),
    );
    let other = sim.user_create_event(MBX, event_body("Other", &in_days(3, 11), &in_days(3, 12)));
    let id = id_of(&user);
    assert!(
        client
            .find_event_by_crm_id(MBX, "O'Brien-7")
            .await
            .expect("find")
            .is_none()
    );
    client
        .set_event_crm_id(MBX, &id, "O'Brien-7")
        .await
        .expect("set crm id");
    let found = client
        .find_event_by_crm_id(MBX, "O'Brien-7")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(id_of(&found), id);
    assert_eq!(
        found["singleValueExtendedProperties"][0]["value"],
        "O'Brien-7"
    );

    let uid = user["iCalUId"].as_str().expect("uid");
    let by_uid = client
        .find_events_by_ical_uid(MBX, uid)
        .await
        .expect("by uid");
    assert_eq!(by_uid.len(), 1);
    assert_eq!(id_of(&by_uid[0]), id);
    assert_ne!(id_of(&other), id);
}

#[tokio::test]
async fn list_follows_next_links() {
    let (sim, client) = setup().await;
    for i in 0..60 {
        sim.deliver_message(MBX, "Inbox", json!({ "subject": format!("m{i}") }));
    }
    let inbox = client
        .find_mail_folder(MBX, "Inbox")
        .await
        .expect("find")
        .expect("inbox");
    let before = sim.request_count();
    let listed = client.list_messages(MBX, &inbox).await.expect("list");
    assert_eq!(sim.request_count() - before, 2, "50 + 10 -> two pages");
    let mut subjects: Vec<String> = listed
        .iter()
        .filter_map(|m| m["subject"].as_str().map(str::to_string))
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 60);
}

// ------------------------------------------------------------------------ throttling

#[tokio::test]
async fn retry_after_429_is_honoured_then_succeeds() {
    let (sim, client) = setup().await;
    let e = sim.user_create_event(MBX, event_body("T", &in_days(1, 9), &in_days(1, 10)));
    sim.throttle_next(2, 1);
    let got = client
        .get_event(MBX, &id_of(&e))
        .await
        .expect("succeeds after waiting");
    assert!(got.is_some());
    assert_eq!(sim.request_count(), 3);
}

#[tokio::test]
async fn persistent_429_returns_throttled_after_bounded_tries() {
    let (sim, client) = setup().await;
    sim.throttle_next(100, 0);
    let r = client.get_event(MBX, "x").await;
    match r {
        Err(e @ GraphError::Throttled { .. }) => {
            assert!(e.is_retryable());
            assert_eq!(e.retry_after(), Some(Duration::from_secs(0)));
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(
        sim.request_count(),
        1 + u64::from(client.policy().max_throttle_retries)
    );
}

#[tokio::test]
async fn retry_after_beyond_the_bound_goes_to_the_caller() {
    let (sim, client) = setup().await;
    sim.throttle_next(1, 3600);
    let r = client.get_event(MBX, "x").await;
    assert!(
        matches!(r, Err(GraphError::Throttled { retry_after }) if retry_after == Duration::from_secs(3600))
    );
    assert_eq!(sim.request_count(), 1);
}

#[tokio::test]
async fn idempotent_get_is_retried_after_503() {
    let (sim, client) = setup().await;
    let e = sim.user_create_event(MBX, event_body("U", &in_days(1, 9), &in_days(1, 10)));
    sim.unavailable_next(2);
    assert!(
        client
            .get_event(MBX, &id_of(&e))
            .await
            .expect("ok")
            .is_some()
    );
    sim.unavailable_next(100);
    match client.get_event(MBX, &id_of(&e)).await {
        Err(e @ GraphError::Unavailable { status: 503, .. }) => assert!(e.is_retryable()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn non_idempotent_post_is_not_retried_after_503() {
    let (sim, client) = setup().await;
    sim.unavailable_next(1);
    let r = client
        .create_contact(MBX, &json!({ "givenName": "Ana" }), "KP-1")
        .await;
    assert!(
        matches!(r, Err(GraphError::Unavailable { status: 503, .. })),
        "{r:?}"
    );
    assert_eq!(sim.request_count(), 1);
    assert!(sim.contacts(MBX).is_empty());
}

#[tokio::test]
async fn at_most_four_in_flight_per_mailbox() {
    let (sim, client) = setup().await;
    let e = sim.user_create_event(MBX, event_body("C", &in_days(1, 9), &in_days(1, 10)));
    let id = id_of(&e);
    sim.set_latency(Duration::from_millis(30));
    let calls = (0..20).map(|_| {
        let c = client.clone();
        let id = id.clone();
        async move { c.get_event(MBX, &id).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| matches!(r, Ok(Some(_)))));
    let seen = sim.max_concurrency_seen(MBX);
    assert!(seen <= 4, "saw {seen} concurrent requests");
    assert!(
        seen >= 2,
        "the limiter should still allow parallel requests (saw {seen})"
    );
}

#[tokio::test]
async fn simulator_rejects_a_fifth_concurrent_request() {
    let sim = sim().await;
    let policy = RetryPolicy {
        max_in_flight_per_mailbox: 10,
        max_throttle_retries: 0,
        ..fast_policy()
    };
    let client = GraphClient::with_policy(config(&sim, "secret"), policy).expect("client");
    client.get_user(MBX).await.expect("warm the token");
    sim.set_latency(Duration::from_millis(100));
    let calls = (0..8).map(|_| {
        let c = client.clone();
        async move { c.get_event(MBX, "missing").await }
    });
    let results = futures::future::join_all(calls).await;
    let throttled = results
        .iter()
        .filter(|r| matches!(r, Err(GraphError::Throttled { .. })))
        .count();
    assert!(throttled >= 1, "{results:?}");
    assert!(sim.max_concurrency_seen(MBX) > 4);
}

// ------------------------------------------------------------------------ contacts

#[tokio::test]
async fn contact_calls_round_trip() {
    let (sim, client) = setup().await;
    let c = client
        .create_contact(MBX, &json!({ "givenName": "Ana", "surname": "Lopez", "emailAddresses": [{ "address": "ana@customer.test" }] }), "KP-7")
        .await
        .expect("create");
    let id = id_of(&c);
    assert_eq!(c["displayName"], "Ana Lopez");
    let read = client
        .get_contact(MBX, &id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read["singleValueExtendedProperties"][0]["value"], "KP-7");
    let found = client
        .find_contact_by_crm_id(MBX, "KP-7")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(id_of(&found), id);
    let etag = read["@odata.etag"].as_str().expect("etag").to_string();
    let up = client
        .update_contact(MBX, &id, &json!({ "jobTitle": "CEO" }), Some(&etag))
        .await
        .expect("update");
    assert_eq!(up["jobTitle"], "CEO");
    assert!(matches!(
        client
            .update_contact(MBX, &id, &json!({ "jobTitle": "CTO" }), Some(&etag))
            .await,
        Err(GraphError::PreconditionFailed)
    ));
    client.delete_contact(MBX, &id).await.expect("delete");
    client.delete_contact(MBX, &id).await.expect("again");
    assert!(client.get_contact(MBX, &id).await.expect("get").is_none());
    assert!(sim.contacts(MBX).is_empty());
}

#[tokio::test]
async fn contacts_delta_reports_changes_and_deletions() {
    let (sim, client) = setup().await;
    let a = sim.user_create_contact(MBX, json!({ "givenName": "A" }));
    let b = sim.user_create_contact(MBX, json!({ "givenName": "B" }));
    let r1 = client
        .contacts_delta(MBX, DeltaStart::Initial)
        .await
        .expect("initial");
    assert_eq!(r1.changed.len(), 2);
    assert!(r1.removed.is_empty());
    sim.user_update_contact(MBX, &id_of(&a), json!({ "surname": "Z" }));
    sim.user_delete_contact(MBX, &id_of(&b));
    let r2 = client
        .contacts_delta(MBX, DeltaStart::Link(r1.delta_link.clone()))
        .await
        .expect("next");
    assert_eq!(r2.changed.len(), 1);
    assert_eq!(r2.changed[0]["surname"], "Z");
    assert_eq!(r2.removed, vec![id_of(&b)]);
    let r3 = client
        .contacts_delta(MBX, DeltaStart::Link(r2.delta_link))
        .await
        .expect("quiet");
    assert!(r3.changed.is_empty() && r3.removed.is_empty());
}

// ------------------------------------------------------------------------ To Do

#[tokio::test]
async fn todo_calls_round_trip() {
    let (sim, client) = setup().await;
    let lists = client.todo_lists(MBX).await.expect("lists");
    assert_eq!(lists.len(), 1);
    let list = client.default_todo_list(MBX).await.expect("default list");
    assert_eq!(list, sim.default_list_id(MBX));
    let t = client
        .create_task(
            MBX,
            &list,
            &json!({ "title": "Send proposal", "status": "inProgress" }),
            "A1-5",
        )
        .await
        .expect("create");
    let id = id_of(&t);
    let read = client
        .get_task(MBX, &list, &id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        read["linkedResources"][0]["applicationName"],
        "crm-graph-connector"
    );
    assert_eq!(read["linkedResources"][0]["externalId"], "A1-5");
    assert!(read.get("changeKey").is_none(), "todoTask has no changeKey");
    let up = client
        .update_task(MBX, &list, &id, &json!({ "status": "completed" }))
        .await
        .expect("update");
    assert_eq!(up["status"], "completed");
    client.delete_task(MBX, &list, &id).await.expect("delete");
    client.delete_task(MBX, &list, &id).await.expect("again");
    assert!(
        client
            .get_task(MBX, &list, &id)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        client
            .get_task(MBX, "no-such-list", &id)
            .await
            .expect("unknown list")
            .is_none()
    );
}

#[tokio::test]
async fn a_task_made_in_todo_gets_a_linked_resource_by_post() {
    let (sim, client) = setup().await;
    let list = sim.default_list_id(MBX);
    let t = sim.user_create_task(MBX, &list, json!({ "title": "made in To Do" }));
    let id = id_of(&t);
    let r0 = client
        .tasks_delta(MBX, &list, DeltaStart::Initial)
        .await
        .expect("initial");
    let link = client
        .add_task_link(MBX, &list, &id, "4294967400")
        .await
        .expect("POST linkedResources");
    assert_eq!(link["applicationName"], "crm-graph-connector");
    assert_eq!(link["externalId"], "4294967400");
    assert!(link["id"].is_string(), "the server makes the id");
    let read = client
        .get_task(MBX, &list, &id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read["linkedResources"].as_array().map(Vec::len), Some(1));
    assert_eq!(cgc_graph::crm_id_on_item(&read), Some(4_294_967_400));
    // The task changed: delta reports it.
    let r1 = client
        .tasks_delta(MBX, &list, DeltaStart::Link(r0.delta_link))
        .await
        .expect("next");
    assert_eq!(r1.changed.len(), 1);
    assert!(
        client
            .add_task_link(MBX, &list, "no-such-task", "1")
            .await
            .is_err(),
        "an unknown task is 404"
    );
}

#[tokio::test]
async fn tasks_delta_rounds() {
    let (sim, client) = setup().await;
    let list = sim.default_list_id(MBX);
    let t = sim.user_create_task(MBX, &list, json!({ "title": "one" }));
    let r1 = client
        .tasks_delta(MBX, &list, DeltaStart::Initial)
        .await
        .expect("initial");
    assert_eq!(r1.changed.len(), 1);
    sim.user_delete_task(MBX, &id_of(&t));
    sim.user_create_task(MBX, &list, json!({ "title": "two" }));
    let r2 = client
        .tasks_delta(MBX, &list, DeltaStart::Link(r1.delta_link))
        .await
        .expect("next");
    assert_eq!(r2.removed, vec![id_of(&t)]);
    assert_eq!(r2.changed.len(), 1);
    assert_eq!(r2.changed[0]["title"], "two");
}

// ------------------------------------------------------------------------ mail

#[tokio::test]
async fn mail_folders_messages_and_move() {
    let (sim, client) = setup().await;
    let m = sim.deliver_message(
        MBX,
        "Inbox/CRM",
        json!({
            "subject": "Offer",
            "from": { "emailAddress": { "address": "ana@customer.test" } },
            "body": { "contentType": "html", "content": "<p>Hi</p>" }
        }),
    );
    let crm = client
        .find_mail_folder(MBX, "Inbox/CRM")
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(Some(crm.clone()), sim.folder_id(MBX, "Inbox/CRM"));
    assert_eq!(
        client
            .find_mail_folder(MBX, "inbox/crm")
            .await
            .expect("case-insensitive"),
        Some(crm.clone())
    );
    assert!(
        client
            .find_mail_folder(MBX, "Inbox/Nope")
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        client
            .find_mail_folder(MBX, "Nope")
            .await
            .expect("find")
            .is_none()
    );

    let done = client
        .ensure_mail_folder(MBX, "Inbox/CRM/Done")
        .await
        .expect("ensure");
    assert_eq!(
        client
            .ensure_mail_folder(MBX, "Inbox/CRM/Done")
            .await
            .expect("again"),
        done
    );
    let top = client
        .ensure_mail_folder(MBX, "CRM Failed")
        .await
        .expect("top-level");
    assert_eq!(
        client
            .find_mail_folder(MBX, "CRM Failed")
            .await
            .expect("find"),
        Some(top)
    );

    let listed = client.list_messages(MBX, &crm).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["subject"], "Offer");
    let id = id_of(&m);
    let got = client
        .get_message(MBX, &id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got["internetMessageId"], m["internetMessageId"]);

    let moved = client.move_message(MBX, &id, &done).await.expect("move");
    assert_eq!(id_of(&moved), id, "immutable id survives the move");
    assert_eq!(moved["parentFolderId"], done);
    assert!(sim.messages_in(MBX, "Inbox/CRM").is_empty());
    assert_eq!(sim.messages_in(MBX, "Inbox/CRM/Done").len(), 1);
    assert!(
        client
            .get_message(MBX, "nope")
            .await
            .expect("get")
            .is_none()
    );
}

// ------------------------------------------------------------------------ calendarView delta

#[tokio::test]
async fn calendar_view_delta_rounds_with_removed_and_outside_window_quirk() {
    let (sim, client) = setup().await;
    sim.set_delta_page_size(2);
    let a = sim.user_create_event(MBX, event_body("A", &in_days(1, 9), &in_days(1, 10)));
    let b = sim.user_create_event(MBX, event_body("B", &in_days(2, 9), &in_days(2, 10)));
    let c = sim.user_create_event(MBX, event_body("C", &in_days(3, 9), &in_days(3, 10)));
    let far = sim.user_create_event(MBX, event_body("Far", &in_days(200, 9), &in_days(200, 10)));

    let before = sim.request_count();
    let r1 = client
        .calendar_view_delta(MBX, window())
        .await
        .expect("initial round");
    assert_eq!(
        sim.request_count() - before,
        2,
        "3 items in pages of 2 -> 2 pages"
    );
    let ids: Vec<String> = r1.changed.iter().map(id_of).collect();
    assert_eq!(ids.len(), 3);
    assert!(
        !ids.contains(&id_of(&far)),
        "initial round has only the window"
    );
    assert!(r1.removed.is_empty());
    assert!(
        r1.changed
            .iter()
            .all(|e| e.get("singleValueExtendedProperties").is_none())
    );

    sim.user_update_event(MBX, &id_of(&a), json!({ "subject": "A2" }));
    sim.user_delete_event(MBX, &id_of(&b));
    let outside = sim.user_create_event(
        MBX,
        event_body("New far", &in_days(100, 9), &in_days(100, 10)),
    );
    sim.user_update_event(MBX, &id_of(&c), json!({ "start": { "dateTime": in_days(90, 9), "timeZone": "UTC" }, "end": { "dateTime": in_days(90, 10), "timeZone": "UTC" } }));

    let r2 = client
        .calendar_view_delta(MBX, DeltaStart::Link(r1.delta_link.clone()))
        .await
        .expect("second round");
    assert_eq!(r2.changed.len(), 1);
    assert_eq!(r2.changed[0]["subject"], "A2");
    let mut removed = r2.removed.clone();
    removed.sort();
    let mut expected = vec![id_of(&b), id_of(&outside), id_of(&c)];
    expected.sort();
    assert_eq!(
        removed, expected,
        "deleted + created outside + moved outside all come as @removed"
    );

    // Replaying the old delta link gives the same changes again.
    let replay = client
        .calendar_view_delta(MBX, DeltaStart::Link(r1.delta_link))
        .await
        .expect("replay");
    assert_eq!(replay.changed.len(), 1);
}

#[tokio::test]
async fn empty_pages_with_next_links_are_followed() {
    let (sim, client) = setup().await;
    sim.empty_delta_pages(true);
    sim.user_create_event(MBX, event_body("A", &in_days(1, 9), &in_days(1, 10)));
    let r = client
        .calendar_view_delta(MBX, window())
        .await
        .expect("round");
    assert_eq!(r.changed.len(), 1);
}

#[tokio::test]
async fn calendar_view_delta_needs_a_window() {
    let (_sim, client) = setup().await;
    assert!(matches!(
        client.calendar_view_delta(MBX, DeltaStart::Initial).await,
        Err(GraphError::Http { status: 400, .. })
    ));
}

#[tokio::test]
async fn expired_delta_token_is_a_sync_reset() {
    let (sim, client) = setup().await;
    sim.user_create_event(MBX, event_body("A", &in_days(1, 9), &in_days(1, 10)));
    let r1 = client
        .calendar_view_delta(MBX, window())
        .await
        .expect("initial");
    sim.expire_delta_tokens();
    match client
        .calendar_view_delta(MBX, DeltaStart::Link(r1.delta_link))
        .await
    {
        Err(GraphError::SyncReset { location: None }) => {}
        other => panic!("expected SyncReset, got {other:?}"),
    }
    // Restart from scratch works.
    let again = client
        .calendar_view_delta(MBX, window())
        .await
        .expect("restart");
    assert_eq!(again.changed.len(), 1);
    sim.reset_delta_tokens();
    match client
        .calendar_view_delta(MBX, DeltaStart::Link(again.delta_link))
        .await
    {
        Err(GraphError::SyncReset { location: Some(l) }) => {
            assert!(l.contains("calendarView/delta?startDateTime="), "{l}")
        }
        other => panic!("expected SyncReset with Location, got {other:?}"),
    }
}

#[tokio::test]
async fn skip_token_expiring_mid_round_is_a_sync_reset() {
    let (sim, client) = setup().await;
    sim.set_delta_page_size(1);
    for i in 0..3 {
        sim.user_create_event(
            MBX,
            event_body(&format!("E{i}"), &in_days(1, 9), &in_days(1, 10)),
        );
    }
    // Fetch the first page by hand to get a nextLink, then expire, then let the client follow it.
    let r = client
        .calendar_view_delta(MBX, window())
        .await
        .expect("full round");
    assert_eq!(r.changed.len(), 3);
    let page_link = {
        let reqs = sim.requests();
        let last = reqs
            .iter()
            .rev()
            .find(|r| r.query.contains("skiptoken"))
            .expect("a skiptoken request");
        format!("{}{}?{}", sim.base_url(), last.path, last.query)
    };
    sim.expire_delta_tokens();
    assert!(matches!(
        client
            .calendar_view_delta(MBX, DeltaStart::Link(page_link))
            .await,
        Err(GraphError::SyncReset { .. })
    ));
}

// ------------------------------------------------------------------------ subscriptions

#[tokio::test]
async fn subscription_create_runs_the_handshake_on_both_urls() {
    let (sim, client) = setup().await;
    let r = receiver(Handshake::Echo).await;
    let s = client
        .create_subscription(&new_sub(&format!("users/{MBX}/events"), &r, true))
        .await
        .expect("created");
    assert_eq!(s.resource, format!("users/{MBX}/events"));
    assert_eq!(s.change_type, "created,updated,deleted");
    assert_eq!(r.validations.lock().map(|v| v.len()).unwrap_or(0), 2);
    let tok = r
        .validations
        .lock()
        .map(|v| v[0].clone())
        .unwrap_or_default();
    assert!(
        tok.contains(' '),
        "the receiver got the decoded token: {tok}"
    );
    let subs = sim.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["id"], s.id.as_str());
}

#[tokio::test]
async fn subscription_create_fails_when_the_receiver_answers_wrong() {
    let (sim, client) = setup().await;
    for mode in [Handshake::Wrong, Handshake::Json, Handshake::Status500] {
        let r = receiver(mode).await;
        let res = client
            .create_subscription(&new_sub(&format!("users/{MBX}/events"), &r, false))
            .await;
        assert!(
            matches!(res, Err(GraphError::Http { status: 400, .. })),
            "{res:?}"
        );
    }
    assert!(sim.subscriptions().is_empty());
}

#[tokio::test]
async fn subscription_body_rules() {
    let (sim, client) = setup().await;
    let r = receiver(Handshake::Echo).await;
    let res = format!("users/{MBX}/events");

    let mut s = new_sub(&res, &r, false);
    s.notification_url = "http://hooks.example.com/notifications".into();
    assert!(matches!(
        client.create_subscription(&s).await,
        Err(GraphError::Http { status: 400, .. })
    ));

    let mut s = new_sub(&res, &r, false);
    s.client_state = "x".repeat(129);
    assert!(matches!(
        client.create_subscription(&s).await,
        Err(GraphError::Http { status: 400, .. })
    ));

    let mut s = new_sub(&res, &r, false);
    s.expiration = Utc::now() + CDuration::minutes(10_081);
    assert!(matches!(
        client.create_subscription(&s).await,
        Err(GraphError::Http { status: 400, .. })
    ));

    let list = sim.default_list_id(MBX);
    let mut s = new_sub(&format!("users/{MBX}/todo/lists/{list}/tasks"), &r, false);
    s.expiration = Utc::now() + CDuration::minutes(4_231);
    assert!(matches!(
        client.create_subscription(&s).await,
        Err(GraphError::Http { status: 400, .. })
    ));

    let mut s = new_sub(&res, &r, false);
    s.change_type = "created,moved".into();
    assert!(matches!(
        client.create_subscription(&s).await,
        Err(GraphError::Http { status: 400, .. })
    ));

    assert!(sim.subscriptions().is_empty());

    let mut s = new_sub(&res, &r, false);
    s.expiration = Utc::now() + CDuration::minutes(5);
    let made = client
        .create_subscription(&s)
        .await
        .expect("short expiry is raised");
    assert!(made.expiration_date_time >= Utc::now() + CDuration::minutes(44));
}

#[tokio::test]
async fn renew_reauthorize_and_delete_subscription() {
    let (sim, client) = setup().await;
    let r = receiver(Handshake::Echo).await;
    let s = client
        .create_subscription(&new_sub(&format!("users/{MBX}/contacts"), &r, true))
        .await
        .expect("create");
    let target = Utc::now() + CDuration::days(5);
    let renewed = client
        .renew_subscription(&s.id, target)
        .await
        .expect("renew");
    assert!((renewed.expiration_date_time - target).num_seconds().abs() <= 1);
    assert!(matches!(
        client
            .renew_subscription(&s.id, Utc::now() + CDuration::days(8))
            .await,
        Err(GraphError::Http { status: 400, .. })
    ));
    client
        .reauthorize_subscription(&s.id)
        .await
        .expect("reauthorize");
    client.delete_subscription(&s.id).await.expect("delete");
    client
        .delete_subscription(&s.id)
        .await
        .expect("deleting again counts as done");
    assert!(sim.subscriptions().is_empty());
    assert!(matches!(
        client.renew_subscription(&s.id, target).await,
        Err(GraphError::NotFound)
    ));
}

async fn subscribed(
    resource_suffix: &str,
) -> (
    cgc_graph::GraphSim,
    GraphClient,
    Receiver,
    cgc_graph::Subscription,
) {
    let (sim, client) = setup().await;
    sim.set_delivery_retry(Duration::from_millis(20), 3);
    let r = receiver(Handshake::Echo).await;
    let s = client
        .create_subscription(&new_sub(
            &format!("users/{MBX}/{resource_suffix}"),
            &r,
            true,
        ))
        .await
        .expect("subscribed");
    (sim, client, r, s)
}

#[tokio::test]
async fn notifications_have_the_graph_shape() {
    let (sim, client, r, s) = subscribed("events").await;
    let e = sim.user_create_event(MBX, event_body("N", &in_days(1, 9), &in_days(1, 10)));
    sim.quiesce().await;
    let bodies = r.bodies();
    assert_eq!(bodies.len(), 1);
    let (query, body) = &bodies[0];
    assert_eq!(query, "conn=42", "the notificationUrl query string is kept");
    let parsed: NotificationCollection = serde_json::from_value(body.clone()).expect("parses");
    assert_eq!(parsed.value.len(), 1);
    let n = &parsed.value[0];
    assert_eq!(n.subscription_id, s.id);
    assert_eq!(n.client_state.as_deref(), Some("state-123"));
    assert_eq!(n.change_type.as_deref(), Some("created"));
    assert_eq!(
        n.tenant_id.as_deref(),
        Some("00000000-0000-0000-0000-000000000001")
    );
    let uid = sim.user_id(MBX).expect("uid");
    let resource = n.resource.clone().expect("resource");
    assert_eq!(resource, format!("Users/{uid}/Events/{}", id_of(&e)));
    assert_eq!(
        parse_resource(&resource),
        Some((uid, "events".into(), id_of(&e)))
    );
    let rd = n.resource_data.clone().expect("resourceData");
    assert_eq!(rd["@odata.type"], "#Microsoft.Graph.Event");
    assert_eq!(rd["@odata.id"], resource.as_str());
    assert_eq!(rd["id"], e["id"]);
    assert_eq!(
        rd["@odata.etag"],
        format!("W/\"{}\"", e["changeKey"].as_str().expect("ck"))
    );

    // App writes notify too (the connector must recognise its own echo).
    client
        .update_event(MBX, &id_of(&e), &json!({ "subject": "N2" }), None)
        .await
        .expect("update");
    sim.user_touch_event(MBX, &id_of(&e));
    sim.user_delete_event(MBX, &id_of(&e));
    sim.quiesce().await;
    let kinds: Vec<String> = r
        .items()
        .iter()
        .map(|i| i["changeType"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, vec!["created", "updated", "updated", "deleted"]);
}

#[tokio::test]
async fn duplicates_and_created_plus_updated() {
    let (sim, _client, r, _s) = subscribed("events").await;
    sim.duplicate_deliveries(3);
    sim.created_plus_updated(true);
    sim.user_create_event(MBX, event_body("D", &in_days(1, 9), &in_days(1, 10)));
    sim.quiesce().await;
    let items = r.items();
    let created = items
        .iter()
        .filter(|i| i["changeType"] == "created")
        .count();
    let updated = items
        .iter()
        .filter(|i| i["changeType"] == "updated")
        .count();
    assert_eq!((created, updated), (3, 3));
}

#[tokio::test]
async fn dropped_notifications_are_lost_without_missed() {
    let (sim, _client, r, _s) = subscribed("contacts").await;
    sim.drop_notifications(1);
    sim.user_create_contact(MBX, json!({ "givenName": "Lost" }));
    sim.user_create_contact(MBX, json!({ "givenName": "Kept" }));
    sim.quiesce().await;
    let items = r.items();
    assert_eq!(items.len(), 1);
    assert!(items.iter().all(|i| i.get("lifecycleEvent").is_none()));
}

#[tokio::test]
async fn delayed_notifications_still_arrive() {
    let (sim, _client, r, _s) = subscribed("events").await;
    sim.delay_notifications(Duration::from_millis(150));
    sim.user_create_event(MBX, event_body("Late", &in_days(1, 9), &in_days(1, 10)));
    assert!(r.items().is_empty(), "not delivered before the delay");
    sim.quiesce().await;
    assert_eq!(r.items().len(), 1);
}

#[tokio::test]
async fn notifications_for_several_subscriptions_share_one_post() {
    let (sim, client, r, s1) = subscribed("events").await;
    let s2 = client
        .create_subscription(&new_sub(&format!("users/{MBX}/contacts"), &r, false))
        .await
        .expect("second");
    sim.hold_deliveries(true);
    sim.user_create_event(MBX, event_body("E", &in_days(1, 9), &in_days(1, 10)));
    sim.user_create_contact(MBX, json!({ "givenName": "C" }));
    sim.hold_deliveries(false);
    sim.quiesce().await;
    let bodies = r.bodies();
    assert_eq!(bodies.len(), 1, "one POST");
    let subs: Vec<&str> = bodies[0].1["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|i| i["subscriptionId"].as_str())
        .collect();
    assert_eq!(subs, vec![s1.id.as_str(), s2.id.as_str()]);
}

#[tokio::test]
async fn failed_deliveries_are_retried_then_dropped() {
    use std::sync::atomic::Ordering;
    let (sim, _client, r, _s) = subscribed("events").await; // 3 attempts per notification
    r.fail_next.store(2, Ordering::SeqCst);
    sim.user_create_event(MBX, event_body("R", &in_days(1, 9), &in_days(1, 10)));
    sim.quiesce().await;
    let statuses: Vec<Option<u16>> = sim.deliveries().iter().map(|d| d.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(202)]);
    assert_eq!(r.items().len(), 1);

    r.fail_next.store(100, Ordering::SeqCst);
    sim.user_create_event(MBX, event_body("Gone", &in_days(1, 9), &in_days(1, 10)));
    sim.quiesce().await;
    assert_eq!(
        sim.deliveries().len(),
        6,
        "3 more attempts, then the notification is dropped"
    );
    assert_eq!(r.items().len(), 1);
}

#[tokio::test]
async fn lifecycle_notifications() {
    let (sim, _client, r, s) = subscribed("events").await;
    sim.send_lifecycle(&s.id, "missed");
    sim.send_lifecycle(&s.id, "reauthorizationRequired");
    sim.quiesce().await;
    let bodies = r.bodies();
    assert!(bodies.iter().all(|(q, _)| q == "conn=42"));
    let items = r.items();
    let events: Vec<&str> = items
        .iter()
        .filter_map(|i| i["lifecycleEvent"].as_str())
        .collect();
    assert_eq!(events, vec!["missed", "reauthorizationRequired"]);
    for i in &items {
        assert_eq!(i["subscriptionId"], s.id.as_str());
        assert_eq!(i["clientState"], "state-123");
        assert!(i.get("resource").is_none());
    }
    sim.send_lifecycle(&s.id, "subscriptionRemoved");
    sim.quiesce().await;
    assert!(
        sim.subscriptions().is_empty(),
        "subscriptionRemoved deletes it"
    );
    assert_eq!(
        r.items().last().and_then(|i| i["lifecycleEvent"].as_str()),
        Some("subscriptionRemoved")
    );
}

// ------------------------------------------------------------------------ control API

#[tokio::test]
async fn control_api_acts_as_the_user_and_sets_faults() {
    let (sim, client) = setup().await;
    let http = reqwest::Client::new();
    let base = format!("{}/_sim", sim.base_url());
    let created: Value = http
        .post(format!("{base}/users/{MBX}/events"))
        .json(&event_body("From curl", &in_days(1, 9), &in_days(1, 10)))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = id_of(&created);
    assert_eq!(sim.event(MBX, &id).expect("exists")["subject"], "From curl");
    let touched = http
        .post(format!("{base}/users/{MBX}/events/{id}/touch"))
        .send()
        .await
        .expect("touch");
    assert_eq!(touched.status().as_u16(), 204);
    assert_ne!(
        sim.event(MBX, &id).expect("exists")["changeKey"],
        created["changeKey"]
    );
    let f = http
        .post(format!("{base}/faults"))
        .json(&json!({ "unavailable_next": 100 }))
        .send()
        .await
        .expect("faults");
    assert_eq!(f.status().as_u16(), 200);
    assert!(matches!(
        client.get_event(MBX, &id).await,
        Err(GraphError::Unavailable { .. })
    ));
    let del = http
        .delete(format!("{base}/users/{MBX}/events/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status().as_u16(), 204);
    assert!(sim.event(MBX, &id).is_none());
    let bad = http
        .post(format!("{base}/faults"))
        .body("not json")
        .send()
        .await
        .expect("bad");
    assert_eq!(bad.status().as_u16(), 400);
}
