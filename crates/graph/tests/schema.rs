//! Schema tests: every body the client sends and every body the simulator returns uses only
//! declared properties with the right JSON types (graph-v1.0-schema.md rules; unknown keys on
//! open types count as errors except on openTypeExtension / resourceData).

mod common;

use cgc_graph::{DeltaStart, NewSubscription};
use chrono::{Duration as CDuration, Utc};
use common::*;
use serde_json::{Value, json};

fn assert_clean(
    schema: &cgc_graph::schema::Schema,
    ty: &str,
    v: &Value,
    expanded: &[&str],
    what: &str,
) {
    let problems = schema.strict_problems(ty, v, expanded);
    assert!(
        problems.is_empty(),
        "{what} ({ty}) has schema problems:\n{}\nbody: {v:#}",
        problems.join("\n")
    );
}

fn full_event() -> Value {
    json!({
        "subject": "Quarterly review",
        "body": { "contentType": "html", "content": "<p>Agenda</p>" },
        "start": { "dateTime": "2030-03-04T09:00:00.0000000", "timeZone": "UTC" },
        "end": { "dateTime": "2030-03-04T10:00:00.0000000", "timeZone": "UTC" },
        "isAllDay": false,
        "location": { "displayName": "Room 4.12" },
        "attendees": [{ "type": "required", "emailAddress": { "name": "Ana", "address": "ana@customer.test" } }],
        "showAs": "busy",
        "sensitivity": "private",
        "importance": "high",
        "isReminderOn": true,
        "reminderMinutesBeforeStart": 15,
        "categories": ["CRM"],
        "recurrence": {
            "pattern": { "type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday" },
            "range": { "type": "endDate", "startDate": "2030-03-04", "endDate": "2030-06-30" }
        }
    })
}

#[tokio::test]
async fn bodies_sent_by_the_client_match_the_schema() {
    let schema = schema();
    let (sim, client) = setup().await;
    let r = receiver(Handshake::Echo).await;

    let e = client
        .create_event(MBX, &full_event(), "txn-1", "CRM-1")
        .await
        .expect("create event");
    let id = e["id"].as_str().expect("id").to_string();
    client
        .update_event(
            MBX,
            &id,
            &json!({ "subject": "New", "isCancelled": true }),
            None,
        )
        .await
        .expect("patch");
    client
        .set_event_crm_id(MBX, &id, "CRM-2")
        .await
        .expect("set crm id");
    let c = client
        .create_contact(MBX, &json!({ "givenName": "Ana", "surname": "Lopez", "emailAddresses": [{ "address": "ana@customer.test" }], "businessPhones": ["+49 1"], "mobilePhone": "+49 2", "jobTitle": "CEO", "companyName": "Customer" }), "KP-1")
        .await
        .expect("create contact");
    client
        .set_contact_crm_id(MBX, c["id"].as_str().expect("id"), "KP-2")
        .await
        .expect("set");
    let list = client.default_todo_list(MBX).await.expect("list");
    let t = client
        .create_task(MBX, &list, &json!({ "title": "Call", "status": "notStarted", "importance": "high", "dueDateTime": { "dateTime": "2030-03-05T00:00:00.0000000", "timeZone": "UTC" }, "body": { "content": "x", "contentType": "text" } }), "A1-1")
        .await
        .expect("create task");
    client
        .update_task(
            MBX,
            &list,
            t["id"].as_str().expect("id"),
            &json!({ "status": "completed" }),
        )
        .await
        .expect("patch task");
    client
        .ensure_mail_folder(MBX, "Inbox/CRM/Done")
        .await
        .expect("folders");
    let sub = client
        .create_subscription(&NewSubscription {
            resource: format!("users/{MBX}/events"),
            change_type: "created,updated,deleted".into(),
            notification_url: format!("{}/n?x=1", r.base),
            lifecycle_notification_url: Some(format!("{}/l", r.base)),
            expiration: Utc::now() + CDuration::days(6),
            client_state: "s".into(),
        })
        .await
        .expect("subscribe");
    client
        .renew_subscription(&sub.id, Utc::now() + CDuration::days(5))
        .await
        .expect("renew");

    let mut checked = 0;
    for req in sim.requests() {
        let Some(body) = &req.body else { continue };
        let p = req.path.to_ascii_lowercase();
        let (ty, expanded): (&str, &[&str]) =
            if p.ends_with("/subscriptions") || p.contains("/subscriptions/") {
                ("subscription", &[])
            } else if p.contains("/todo/lists/") {
                ("todoTask", &["linkedResources"])
            } else if p.contains("/events") {
                ("event", &["singleValueExtendedProperties"])
            } else if p.contains("/contacts") {
                ("contact", &["singleValueExtendedProperties"])
            } else if p.contains("/mailfolders") || p.contains("/childfolders") {
                ("mailFolder", &[])
            } else {
                panic!("unclassified request body: {} {}", req.method, req.path);
            };
        assert_clean(
            &schema,
            ty,
            body,
            expanded,
            &format!("{} {}", req.method, req.path),
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} bodies checked");
}

#[tokio::test]
async fn bodies_returned_by_the_simulator_match_the_schema() {
    let schema = schema();
    let (sim, client) = setup().await;
    sim.set_delivery_retry(std::time::Duration::from_millis(10), 2);
    let r = receiver(Handshake::Echo).await;
    for res in ["events", "contacts", "messages"] {
        client
            .create_subscription(&NewSubscription {
                resource: format!("users/{MBX}/{res}"),
                change_type: "created,updated,deleted".into(),
                notification_url: format!("{}/n", r.base),
                lifecycle_notification_url: Some(format!("{}/l", r.base)),
                expiration: Utc::now() + CDuration::days(2),
                client_state: "s".into(),
            })
            .await
            .expect("subscribe");
    }

    // Events: user-made, app-made, read with $expand, delta pages.
    let ue = sim.user_create_event(MBX, full_event());
    assert_clean(
        &schema,
        "event",
        &ue,
        &["singleValueExtendedProperties"],
        "user_create_event",
    );
    let ae = client
        .create_event(MBX, &full_event(), "t", "CRM-1")
        .await
        .expect("create");
    assert_clean(&schema, "event", &ae, &[], "POST events answer");
    let id = ae["id"].as_str().expect("id");
    let got = client
        .get_event(MBX, id)
        .await
        .expect("get")
        .expect("exists");
    assert_clean(
        &schema,
        "event",
        &got,
        &["singleValueExtendedProperties"],
        "GET event",
    );
    let patched = client
        .update_event(
            MBX,
            id,
            &json!({ "location": { "displayName": "B" } }),
            None,
        )
        .await
        .expect("patch");
    assert_clean(&schema, "event", &patched, &[], "PATCH event answer");
    let window = DeltaStart::Window {
        start: Utc::now(),
        end: Utc::now() + CDuration::days(3650),
    };
    let round = client
        .calendar_view_delta(MBX, window)
        .await
        .expect("delta");
    assert!(!round.changed.is_empty());
    for e in &round.changed {
        assert_clean(&schema, "event", e, &[], "calendarView delta item");
    }

    // Contacts.
    let uc = sim.user_create_contact(MBX, json!({ "givenName": "A", "surname": "B", "emailAddresses": [{ "address": "a@b.test", "name": "A B" }] }));
    assert_clean(
        &schema,
        "contact",
        &uc,
        &["singleValueExtendedProperties"],
        "user_create_contact",
    );
    let ac = client
        .create_contact(MBX, &json!({ "givenName": "C" }), "KP")
        .await
        .expect("contact");
    assert_clean(&schema, "contact", &ac, &[], "POST contacts answer");
    for c in client
        .contacts_delta(MBX, DeltaStart::Initial)
        .await
        .expect("delta")
        .changed
    {
        assert_clean(&schema, "contact", &c, &[], "contacts delta item");
    }

    // To Do.
    for l in client.todo_lists(MBX).await.expect("lists") {
        assert_clean(&schema, "todoTaskList", &l, &[], "todo list");
    }
    let list = sim.default_list_id(MBX);
    let ut = sim.user_create_task(MBX, &list, json!({ "title": "T" }));
    assert_clean(
        &schema,
        "todoTask",
        &ut,
        &["linkedResources"],
        "user_create_task",
    );
    let at = client
        .create_task(MBX, &list, &json!({ "title": "U" }), "A1")
        .await
        .expect("task");
    assert_clean(
        &schema,
        "todoTask",
        &at,
        &["linkedResources"],
        "POST task answer",
    );
    let gt = client
        .get_task(MBX, &list, at["id"].as_str().expect("id"))
        .await
        .expect("get")
        .expect("exists");
    assert_clean(&schema, "todoTask", &gt, &["linkedResources"], "GET task");
    for t in client
        .tasks_delta(MBX, &list, DeltaStart::Initial)
        .await
        .expect("delta")
        .changed
    {
        assert_clean(&schema, "todoTask", &t, &[], "tasks delta item");
    }

    // Mail.
    let m = sim.deliver_message(MBX, "Inbox/CRM", json!({
        "subject": "S", "from": { "emailAddress": { "address": "x@y.test" } },
        "toRecipients": [{ "emailAddress": { "address": MBX } }], "body": { "contentType": "html", "content": "<b>x</b>" }
    }));
    assert_clean(
        &schema,
        "message",
        &m,
        &["singleValueExtendedProperties"],
        "deliver_message",
    );
    let folder = client
        .find_mail_folder(MBX, "Inbox/CRM")
        .await
        .expect("find")
        .expect("exists");
    for msg in client.list_messages(MBX, &folder).await.expect("list") {
        assert_clean(&schema, "message", &msg, &[], "listed message");
    }
    let done = client
        .ensure_mail_folder(MBX, "Inbox/Done")
        .await
        .expect("ensure");
    let moved = client
        .move_message(MBX, m["id"].as_str().expect("id"), &done)
        .await
        .expect("move");
    assert_clean(&schema, "message", &moved, &[], "move answer");

    // User.
    let u = client.get_user(MBX).await.expect("user").expect("exists");
    assert_clean(&schema, "user", &u, &[], "user");

    // Subscriptions and notifications (change + lifecycle).
    let subs = sim.subscriptions();
    for s in &subs {
        assert_clean(&schema, "subscription", s, &[], "subscription");
    }
    sim.send_lifecycle(subs[0]["id"].as_str().expect("id"), "missed");
    sim.quiesce().await;
    let deliveries = sim.deliveries();
    assert!(deliveries.len() >= 5);
    for d in deliveries {
        assert_clean(
            &schema,
            "changeNotificationCollection",
            &d.body,
            &[],
            "notification POST",
        );
    }
}

#[tokio::test]
async fn error_bodies_have_the_graph_envelope() {
    let (sim, _client) = setup().await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/users/{MBX}/events/x", sim.graph_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"]["innerError"]["request-id"].is_string());
    assert!(v["error"]["innerError"]["date"].is_string());
}

#[tokio::test]
async fn series_copies_bodies_and_zones_served_by_the_simulator_match_the_schema() {
    let schema = schema();
    let (sim, client) = setup().await;
    sim.add_mailbox("rep2@contoso.com");
    let mut series = full_event();
    series["start"] =
        json!({ "dateTime": "2030-03-04T09:00:00", "timeZone": "W. Europe Standard Time" });
    series["end"] =
        json!({ "dateTime": "2030-03-04T10:00:00", "timeZone": "W. Europe Standard Time" });
    series["body"] = json!({ "contentType": "text", "content": "Grüße – <b>\nzwei" });
    series["attendees"] = json!([{ "type": "required", "emailAddress": { "name": "Two", "address": "rep2@contoso.com" } }]);
    let master = client
        .create_event(MBX, &series, "t-s", "CRM-9")
        .await
        .expect("series");
    let mid = master["id"].as_str().expect("id");
    let http = reqwest::Client::new();
    let d = cgc_graph::GraphSimConfig::default();
    let tok: Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.login_url(),
            d.tenant_id
        ))
        .form(&[
            ("client_id", d.client_id.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_secret", d.client_secret.as_str()),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let tok = tok["access_token"].as_str().expect("token").to_string();
    let get = |path: String, prefer: &'static str| {
        let http = http.clone();
        let tok = tok.clone();
        let url = format!("{}/{path}", sim.graph_url());
        async move {
            let mut rb = http.get(url).bearer_auth(tok);
            if !prefer.is_empty() {
                rb = rb.header("Prefer", prefer);
            }
            rb.send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let w = "startDateTime=2030-03-01T00:00:00Z&endDateTime=2030-04-01T00:00:00Z";
    let inst = get(
        format!("users/{MBX}/events/{mid}/instances?{w}"),
        "outlook.timezone=\"Pacific Standard Time\"",
    )
    .await;
    let list = inst["value"].as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty());
    for o in &list {
        assert_clean(&schema, "event", o, &[], "instance");
    }
    let occ = get(
        format!(
            "users/{MBX}/events/{}?$expand=singleValueExtendedProperties",
            list[0]["id"].as_str().expect("id")
        ),
        "outlook.body-content-type=\"text\"",
    )
    .await;
    assert_clean(
        &schema,
        "event",
        &occ,
        &["singleValueExtendedProperties"],
        "GET occurrence",
    );
    let view = get(format!("users/{MBX}/calendarView?{w}"), "").await;
    for e in view["value"].as_array().into_iter().flatten() {
        assert_clean(&schema, "event", e, &[], "calendarView item");
    }
    let round = client
        .calendar_view_delta(
            MBX,
            DeltaStart::Window {
                start: chrono::DateTime::parse_from_rfc3339("2030-03-01T00:00:00Z")
                    .map(|t| t.to_utc())
                    .expect("t"),
                end: chrono::DateTime::parse_from_rfc3339("2030-04-01T00:00:00Z")
                    .map(|t| t.to_utc())
                    .expect("t"),
            },
        )
        .await
        .expect("delta");
    assert!(round.changed.iter().any(|e| e["type"] == "occurrence"));
    for e in &round.changed {
        assert_clean(&schema, "event", e, &[], "skeletal occurrence");
    }
    let copies = get(
        "users/rep2@contoso.com/events?$expand=singleValueExtendedProperties".into(),
        "",
    )
    .await;
    let copies = copies["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(copies.len(), 1);
    assert_clean(
        &schema,
        "event",
        &copies[0],
        &["singleValueExtendedProperties"],
        "attendee copy",
    );
    // PATCH of an occurrence (an exception) and its answer.
    let ex = client
        .update_event(
            MBX,
            list[1]["id"].as_str().expect("id"),
            &json!({ "subject": "Moved" }),
            None,
        )
        .await
        .expect("exception");
    assert_eq!(ex["type"], "exception");
    assert_clean(&schema, "event", &ex, &[], "exception");
}
