//! The simulator's write / listing faults, and the client's throttling windows, shared
//! throttle state, process-wide limiter, connector properties and malformed-item tolerance.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use cgc_graph::sim::{CommitFail, GraphSim, LoggedRequest};
use cgc_graph::{
    CRM_ID_PROPERTY, DeltaStart, GraphClient, InMemoryThrottleShare, SYNC_STATE_PROPERTY,
    crm_id_on_item, extended_property,
};
use common::*;
use serde_json::{Value, json};

async fn token(sim: &GraphSim) -> String {
    let d = cgc_graph::GraphSimConfig::default();
    let v: Value = reqwest::Client::new()
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
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn event(subject: &str) -> Value {
    json!({ "subject": subject,
            "start": { "dateTime": "2030-01-07T09:00:00", "timeZone": "UTC" },
            "end": { "dateTime": "2030-01-07T10:00:00", "timeZone": "UTC" } })
}

// ------------------------------------------------------------------ committed but failed

#[tokio::test]
async fn committed_writes_fail_with_each_mode_after_being_applied() {
    let sim = sim().await;
    let tok = token(&sim).await;
    let http = reqwest::Client::new();
    let url = format!("{}/users/{MBX}/contacts", sim.graph_url());
    for (i, (mode, want)) in [
        (CommitFail::Status500, Some(500)),
        (CommitFail::Status503, Some(503)),
        (CommitFail::Status504, Some(504)),
        (CommitFail::CloseConnection, None),
    ]
    .into_iter()
    .enumerate()
    {
        sim.commit_then_fail(MBX, 1, mode);
        let sent = http
            .post(&url)
            .bearer_auth(&tok)
            .json(&json!({ "givenName": format!("C{i}") }))
            .send()
            .await;
        let answer = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                r.text().await.ok().map(|_| status)
            }
            Err(_) => None,
        };
        match want {
            Some(code) => assert_eq!(answer, Some(code), "{mode:?}"),
            None => assert_eq!(answer, None, "no complete answer for {mode:?}"),
        }
        assert_eq!(
            sim.contacts(MBX).len(),
            i + 1,
            "{mode:?}: the create was applied"
        );
    }
    // Only the next N writes: the fifth is answered normally; reads are never affected.
    let ok = http
        .post(&url)
        .bearer_auth(&tok)
        .json(&json!({ "givenName": "C4" }))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 201);

    // PATCH of a task, and a task create, count as writes too.
    let list = sim.default_list_id(MBX);
    let t = sim.user_create_task(MBX, &list, json!({ "title": "T" }));
    sim.commit_then_fail(MBX, 2, CommitFail::Status504);
    let turl = format!("{}/users/{MBX}/todo/lists/{list}/tasks", sim.graph_url());
    let got = http
        .get(format!("{turl}/{}", t["id"].as_str().expect("id")))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("get");
    assert_eq!(got.status().as_u16(), 200, "a GET is not a write");
    let p = http
        .patch(format!("{turl}/{}", t["id"].as_str().expect("id")))
        .bearer_auth(&tok)
        .json(&json!({ "status": "completed" }))
        .send()
        .await
        .expect("patch");
    assert_eq!(p.status().as_u16(), 504);
    let c = http
        .post(&turl)
        .bearer_auth(&tok)
        .json(&json!({ "title": "U" }))
        .send()
        .await
        .expect("post");
    assert_eq!(c.status().as_u16(), 504);
    let tasks = sim.tasks(MBX);
    assert!(tasks.iter().any(|x| x["status"] == "completed"));
    assert!(tasks.iter().any(|x| x["title"] == "U"));
}

#[tokio::test]
async fn client_sees_a_committed_failure_as_retryable_and_a_transaction_id_retry_finds_the_event() {
    let (sim, client) = setup().await;
    sim.commit_then_fail(MBX, 1, CommitFail::CloseConnection);
    let first = client
        .create_event(MBX, &event("E"), "txn-commit", "5")
        .await;
    // The client retries an event create with transactionId itself: the second POST finds it.
    let e = first.expect("retried with the same transactionId");
    assert_eq!(sim.events(MBX).len(), 1);
    assert_eq!(
        crm_id_on_item(
            &client
                .get_event(MBX, e["id"].as_str().expect("id"))
                .await
                .expect("get")
                .expect("exists")
        ),
        Some(5)
    );
    // A contact create is not retried: the error is retryable and the contact exists.
    sim.commit_then_fail(MBX, 1, CommitFail::Status503);
    let c = client
        .create_contact(MBX, &json!({ "givenName": "Ana" }), "6")
        .await;
    assert!(matches!(&c, Err(e) if e.is_retryable()), "{c:?}");
    assert!(
        client
            .find_contact_by_crm_id(MBX, "6")
            .await
            .expect("find")
            .is_some()
    );
}

// ------------------------------------------------------------------ empty listing once

#[tokio::test]
async fn empty_listing_once_empties_one_list_and_one_delta_answer() {
    let (sim, client) = setup().await;
    for n in ["A", "B", "C"] {
        sim.user_create_contact(MBX, json!({ "givenName": n }));
    }
    let tok = token(&sim).await;
    let http = reqwest::Client::new();
    let list = |t: String| {
        let http = http.clone();
        let url = format!("{}/users/{MBX}/contacts", sim.graph_url());
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    sim.empty_listing_once(MBX);
    let empty = list(tok.clone()).await;
    assert_eq!(empty["value"], json!([]));
    assert!(empty.get("@odata.nextLink").is_none());
    assert_eq!(
        list(tok.clone()).await["value"].as_array().map(Vec::len),
        Some(3),
        "only once"
    );

    sim.empty_listing_once(MBX);
    let round = client
        .contacts_delta(MBX, DeltaStart::Initial)
        .await
        .expect("delta");
    assert!(round.changed.is_empty() && round.removed.is_empty());
    assert!(!round.delta_link.is_empty(), "a valid deltaLink");
    let next = client
        .contacts_delta(MBX, DeltaStart::Link(round.delta_link))
        .await
        .expect("delta");
    assert_eq!(
        next.changed.len(),
        3,
        "the deltaLink works and yields the items"
    );

    sim.empty_listing_once(MBX);
    let window = DeltaStart::Window {
        start: chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .map(|t| t.to_utc())
            .expect("t"),
        end: chrono::DateTime::parse_from_rfc3339("2030-02-01T00:00:00Z")
            .map(|t| t.to_utc())
            .expect("t"),
    };
    sim.user_create_event(MBX, event("E"));
    let r = client
        .calendar_view_delta(MBX, window)
        .await
        .expect("delta");
    assert!(r.changed.is_empty());
    let r = client
        .calendar_view_delta(MBX, DeltaStart::Link(r.delta_link))
        .await
        .expect("delta");
    assert_eq!(r.changed.len(), 1);
}

// ------------------------------------------------------------------ client throttling

/// Waits until the simulator has answered a request to `MBX` with 429; returns it.
async fn first_429(sim: &GraphSim) -> LoggedRequest {
    for _ in 0..500 {
        if let Some(r) = sim
            .requests()
            .into_iter()
            .find(|r| r.status == 429 && r.mailbox.as_deref() == Some(MBX))
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no 429 seen");
}

/// Every request to `MBX` that arrived after `t` arrived once its window was over, and none
/// of them was answered 429.
fn assert_window_honoured(sim: &GraphSim, t: &LoggedRequest, secs: u64) {
    let later: Vec<LoggedRequest> = sim
        .requests()
        .into_iter()
        .filter(|r| r.serial > t.serial && r.mailbox.as_deref() == Some(MBX))
        .collect();
    assert!(later.len() >= 2, "both requests arrived later: {later:?}");
    for r in &later {
        assert!(
            r.at >= t.at + Duration::from_secs(secs),
            "{} {} arrived {:?} after the 429, inside its window",
            r.method,
            r.path,
            r.at - t.at
        );
        assert_ne!(r.status, 429);
    }
}

#[tokio::test]
async fn a_429_holds_back_every_task_of_the_client_for_that_mailbox() {
    let (sim, client) = setup().await;
    let e = sim.user_create_event(MBX, event("E"));
    let id = e["id"].as_str().expect("id").to_string();
    client.get_user(MBX).await.expect("warm the token");
    sim.throttle_next(1, 2);
    let a = {
        let c = client.clone();
        let id = id.clone();
        tokio::spawn(async move { c.get_event(MBX, &id).await })
    };
    let t = first_429(&sim).await;
    // Another task, another clone, another resource of the same mailbox.
    let b = client.clone().get_contact(MBX, "missing").await;
    assert!(matches!(b, Ok(None)), "{b:?}");
    assert!(a.await.expect("join").expect("get").is_some());
    assert_window_honoured(&sim, &t, 2);
    // Other mailboxes and directory calls are not held back meanwhile (nothing to assert on time).
}

#[tokio::test]
async fn two_clients_sharing_a_throttle_share_honour_each_others_window() {
    let sim = sim().await;
    let share = Arc::new(InMemoryThrottleShare::default());
    let c1 = client(&sim).with_throttle_share(share.clone());
    let c2 = client(&sim).with_throttle_share(share.clone());
    c1.get_user(MBX).await.expect("token 1");
    c2.get_user(MBX).await.expect("token 2");
    sim.throttle_next(1, 2);
    let a = {
        let c = c1.clone();
        tokio::spawn(async move { c.get_contact(MBX, "x").await })
    };
    let t = first_429(&sim).await;
    // c1 publishes its window just after it reads the answer.
    for _ in 0..200 {
        if cgc_graph::ThrottleShare::throttled_until(share.as_ref(), MBX)
            .await
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = c2.get_contact(MBX, "y").await;
    assert!(matches!(b, Ok(None)), "{b:?}");
    assert!(matches!(a.await.expect("join"), Ok(None)));
    assert_window_honoured(&sim, &t, 2);
}

#[tokio::test]
async fn at_most_four_in_flight_per_mailbox_across_separate_clients() {
    let sim = sim().await;
    let c1 = client(&sim);
    let c2 = client(&sim);
    c1.get_user(MBX).await.expect("token");
    c2.get_user(MBX).await.expect("token");
    sim.set_latency(Duration::from_millis(80));
    let calls = (0..12).map(|i| {
        let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
        async move { c.get_event(MBX, "missing").await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| matches!(r, Ok(None))), "{results:?}");
    assert!(
        sim.max_concurrency_seen(MBX) <= 4,
        "saw {}",
        sim.max_concurrency_seen(MBX)
    );
}

// ------------------------------------------------------------------ connector properties

#[tokio::test]
async fn sync_state_property_is_set_alone_and_read_back_with_the_crm_id() {
    let (sim, client) = setup().await;
    let e = client
        .create_event(MBX, &event("E"), "t-p", "77")
        .await
        .expect("create");
    let id = e["id"].as_str().expect("id");
    client
        .set_event_properties(MBX, id, &[(SYNC_STATE_PROPERTY, "v1:fingerprint")])
        .await
        .expect("set");
    let patch = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "PATCH")
        .expect("patch");
    let keys: Vec<String> = patch
        .body
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(keys, vec!["singleValueExtendedProperties".to_string()]);
    let got = client
        .get_event(MBX, id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        extended_property(&got, SYNC_STATE_PROPERTY).as_deref(),
        Some("v1:fingerprint")
    );
    assert_eq!(
        extended_property(&got, CRM_ID_PROPERTY).as_deref(),
        Some("77")
    );
    assert_eq!(crm_id_on_item(&got), Some(77));
    let get = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "GET")
        .expect("get");
    assert!(
        get.query.contains("or%20id%20eq") || get.query.contains("or id eq"),
        "{}",
        get.query
    );

    let c = client
        .create_contact(MBX, &json!({ "givenName": "A" }), "78")
        .await
        .expect("contact");
    let cid = c["id"].as_str().expect("id");
    client
        .set_contact_properties(
            MBX,
            cid,
            &[(SYNC_STATE_PROPERTY, "v1:c"), (CRM_ID_PROPERTY, "79")],
        )
        .await
        .expect("set");
    let got = client
        .get_contact(MBX, cid)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        extended_property(&got, SYNC_STATE_PROPERTY).as_deref(),
        Some("v1:c")
    );
    assert_eq!(crm_id_on_item(&got), Some(79));
}

// ------------------------------------------------------------------ malformed answers

async fn malformed_graph(uri: Uri, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path().to_string();
    // Links must stay on the server's own host and port (others are never requested).
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("placeholder");
    let base = format!("http://{host}/v1.0");
    let body = if path.ends_with("/oauth2/v2.0/token") {
        json!({ "token_type": "Bearer", "expires_in": 3599, "access_token": "t" })
    } else if path.contains("/delta") {
        json!({ "value": [ { "id": "d1" }, [], { "id": 5 }, { "id": "d2", "@removed": { "reason": "deleted" } } ],
                "@odata.deltaLink": format!("{base}/next") })
    } else {
        json!({ "value": [ { "id": "a" }, 5, "x", null, { "noid": true }, { "id": "" }, { "id": "b" } ] })
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[tokio::test]
async fn malformed_items_are_skipped_counted_and_never_fail_the_page() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().fallback(malformed_graph)).await;
    });
    let cfg = cgc_graph::GraphConfig {
        login_url: format!("http://{addr}"),
        azure_tenant_id: "t".into(),
        client_id: "c".into(),
        client_secret: "s".to_string().into(),
        graph_url: format!("http://{addr}/v1.0"),
        timeout: Duration::from_secs(5),
    };
    let client = GraphClient::with_policy(cfg, fast_policy()).expect("client");
    let list = client
        .find_events_by_ical_uid("m@x.test", "uid")
        .await
        .expect("list");
    let ids: Vec<&str> = list.iter().filter_map(|v| v["id"].as_str()).collect();
    assert_eq!(ids, vec!["a", "b"]);
    assert_eq!(client.malformed_items(), 5);
    let round = client
        .contacts_delta("m@x.test", DeltaStart::Initial)
        .await
        .expect("delta");
    assert_eq!(round.changed.len(), 1);
    assert_eq!(round.removed, vec!["d2".to_string()]);
    assert_eq!(client.clone().malformed_items(), 7);
}
