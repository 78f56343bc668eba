//! One test per line of `shared/protocols/expected-behaviour.md` that the Graph simulator
//! must follow (lines 1-16, 34, 40). Each drives the simulator over HTTP with raw requests
//! (reqwest + JSON), so it checks the server, not the client's assumptions.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use cgc_graph::sim::{CommitFail, GraphSim, GraphSimConfig};
use chrono::{Duration as CDuration, Utc};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const MBX2: &str = "rep2@contoso.com";

/// A raw HTTP view of the simulator: a token and plain requests.
struct Raw {
    sim: GraphSim,
    http: reqwest::Client,
    token: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn raw() -> Raw {
    let sim = sim().await;
    sim.add_mailbox(MBX2);
    let http = reqwest::Client::new();
    let token = fetch_token(&sim, &http, "https://graph.microsoft.com/.default").await;
    Raw { sim, http, token }
}

async fn token_answer(sim: &GraphSim, http: &reqwest::Client, scope: &str) -> (u16, Value) {
    let d = GraphSimConfig::default();
    let r = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.login_url(),
            d.tenant_id
        ))
        .form(&[
            ("client_id", d.client_id.as_str()),
            ("scope", scope),
            ("client_secret", d.client_secret.as_str()),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn fetch_token(sim: &GraphSim, http: &reqwest::Client, scope: &str) -> String {
    let (status, v) = token_answer(sim, http, scope).await;
    assert_eq!(status, 200, "{v}");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

impl Raw {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        prefer: &[&str],
    ) -> Answer {
        let url = format!("{}/{}", self.sim.graph_url(), path.trim_start_matches('/'));
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        for p in prefer {
            rb = rb.header("Prefer", *p);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }
    async fn get(&self, path: &str, prefer: &[&str]) -> Answer {
        self.call(Method::GET, path, None, prefer).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(&body), &[]).await
    }
    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(&body), &[]).await
    }
    async fn create_event(&self, mailbox: &str, body: Value) -> Value {
        let a = self.post(&format!("users/{mailbox}/events"), body).await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body
    }
    /// Follows a delta round from `url` (absolute); returns every item of every page and the deltaLink.
    async fn delta_round(&self, url: &str, prefer: &[&str]) -> (Vec<Vec<Value>>, String) {
        let mut pages = Vec::new();
        let mut next = url.to_string();
        for _ in 0..1000 {
            let mut rb = self.http.get(&next).bearer_auth(&self.token);
            for p in prefer {
                rb = rb.header("Prefer", *p);
            }
            let v: Value = rb.send().await.expect("delta").json().await.expect("json");
            pages.push(v["value"].as_array().cloned().unwrap_or_default());
            if let Some(n) = v["@odata.nextLink"].as_str() {
                next = n.to_string();
                continue;
            }
            let d = v["@odata.deltaLink"]
                .as_str()
                .expect("nextLink or deltaLink");
            return (pages, d.to_string());
        }
        panic!("delta round did not end");
    }
}

fn ev(subject: &str, start: &str, end: &str, tz: &str) -> Value {
    json!({
        "subject": subject,
        "start": { "dateTime": start, "timeZone": tz },
        "end": { "dateTime": end, "timeZone": tz },
    })
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn window_query(start: &str, end: &str) -> String {
    format!("startDateTime={}&endDateTime={}", enc(start), enc(end))
}

// ---------------------------------------------------------------------------------------- 1

#[tokio::test]
async fn line_01_token_endpoint_accepts_any_default_scope_tokens_last_an_hour_and_are_required() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let (status, v) = token_answer(
        &sim,
        &http,
        "api://00000000-0000-0000-0000-000000000009/.default",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let expires = v["expires_in"].as_u64().expect("expires_in");
    assert!((3000..=3600).contains(&expires), "expires_in {expires}");
    let (status, _) = token_answer(&sim, &http, "https://graph.microsoft.com/User.Read").await;
    assert_eq!(status, 400, "a scope not ending in /.default is refused");

    let url = format!("{}/users/{MBX}/events", sim.graph_url());
    let no_token = http.get(&url).send().await.expect("send");
    assert_eq!(no_token.status().as_u16(), 401);
    let token = v["access_token"].as_str().expect("token");
    let with = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    assert_eq!(with.status().as_u16(), 200);
}

// ---------------------------------------------------------------------------------------- 2

#[tokio::test]
async fn line_02_subscription_urls_must_be_https_except_loopback() {
    let g = raw().await;
    let r = receiver(Handshake::Echo).await;
    let expiry = (Utc::now() + CDuration::days(2)).to_rfc3339();
    let body = |url: &str| {
        json!({ "changeType": "created", "notificationUrl": url, "resource": format!("users/{MBX}/events"),
                "expirationDateTime": expiry, "clientState": "s" })
    };
    let plain = g
        .post("subscriptions", body("http://hooks.example.test/n"))
        .await;
    assert_eq!(plain.status, 400, "{}", plain.body);
    let loopback = g
        .post("subscriptions", body(&format!("{}/n", r.base)))
        .await;
    assert_eq!(loopback.status, 201, "{}", loopback.body);
}

// ---------------------------------------------------------------------------------------- 3

#[derive(Clone, Default)]
struct RawReceiver {
    queries: Arc<Mutex<Vec<String>>>,
    echo_encoded: bool,
}

async fn raw_receive(
    State(r): State<RawReceiver>,
    RawQuery(q): RawQuery,
) -> axum::response::Response {
    let q = q.unwrap_or_default();
    if let Ok(mut g) = r.queries.lock() {
        g.push(q.clone());
    }
    let encoded = q
        .split('&')
        .find_map(|p| p.strip_prefix("validationToken="))
        .unwrap_or("")
        .to_string();
    let token = if r.echo_encoded {
        encoded
    } else {
        url::form_urlencoded::parse(format!("t={encoded}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        token,
    )
        .into_response()
}

async fn raw_receiver(echo_encoded: bool) -> (String, RawReceiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let r = RawReceiver {
        echo_encoded,
        ..RawReceiver::default()
    };
    let app = Router::new().fallback(raw_receive).with_state(r.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), r)
}

#[tokio::test]
async fn line_03_validation_token_is_form_encoded_with_special_characters_and_must_be_echoed_decoded()
 {
    let g = raw().await;
    let sub = |url: String| {
        json!({ "changeType": "created", "notificationUrl": url, "resource": format!("users/{MBX}/events"),
                "expirationDateTime": (Utc::now() + CDuration::days(2)).to_rfc3339(), "clientState": "s" })
    };
    let (base, r) = raw_receiver(false).await;
    let ok = g.post("subscriptions", sub(format!("{base}/n"))).await;
    assert_eq!(ok.status, 201, "decoded echo accepted: {}", ok.body);
    let queries = r.queries.lock().map(|q| q.clone()).unwrap_or_default();
    let q = queries.first().expect("a validation request");
    let encoded = q
        .split('&')
        .find_map(|p| p.strip_prefix("validationToken="))
        .expect("token");
    assert!(encoded.contains('+'), "spaces arrive as +: {encoded}");
    let decoded: String = url::form_urlencoded::parse(format!("t={encoded}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    for c in [' ', '+', '/', '=', '&', ':'] {
        assert!(decoded.contains(c), "token lacks {c:?}: {decoded}");
    }
    let (base, _) = raw_receiver(true).await;
    let bad = g.post("subscriptions", sub(format!("{base}/n"))).await;
    assert_eq!(bad.status, 400, "an encoded echo fails the handshake");
}

// ---------------------------------------------------------------------------------------- 4

#[tokio::test]
async fn line_04_lifetimes_above_10080_minutes_are_refused() {
    let g = raw().await;
    let r = receiver(Handshake::Echo).await;
    let body = |minutes: i64| {
        json!({ "changeType": "updated", "notificationUrl": format!("{}/n", r.base),
                "resource": format!("users/{MBX}/events"), "clientState": "s",
                "expirationDateTime": (Utc::now() + CDuration::minutes(minutes)).to_rfc3339() })
    };
    assert_eq!(g.post("subscriptions", body(10_081)).await.status, 400);
    assert_eq!(g.post("subscriptions", body(10_070)).await.status, 201);
}

// ---------------------------------------------------------------------------------------- 5

#[tokio::test]
async fn line_05_app_only_todo_subscriptions_are_refused() {
    let g = raw().await;
    let r = receiver(Handshake::Echo).await;
    let list = g.sim.default_list_id(MBX);
    let a = g
        .post(
            "subscriptions",
            json!({ "changeType": "created,updated", "notificationUrl": format!("{}/n", r.base),
                    "resource": format!("users/{MBX}/todo/lists/{list}/tasks"), "clientState": "s",
                    "expirationDateTime": (Utc::now() + CDuration::days(2)).to_rfc3339() }),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(g.sim.subscriptions().is_empty());
}

// ---------------------------------------------------------------------------------------- 6

#[tokio::test]
async fn line_06_repeated_transaction_id_returns_201_with_the_first_event() {
    let g = raw().await;
    let mut body = ev(
        "Kick-off",
        "2030-01-07T09:00:00",
        "2030-01-07T10:00:00",
        "UTC",
    );
    body["transactionId"] = json!("txn-line-6");
    let first = g.post(&format!("users/{MBX}/events"), body.clone()).await;
    body["subject"] = json!("Other subject");
    let again = g.post(&format!("users/{MBX}/events"), body).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(id(&first.body), id(&again.body));
    assert_eq!(again.body["subject"], "Kick-off");
    assert_eq!(g.sim.events(MBX).len(), 1);
}

// ---------------------------------------------------------------------------------------- 7

#[tokio::test]
async fn line_07_stale_if_match_is_412_read_only_properties_ignored_unknown_ones_400() {
    let g = raw().await;
    let e = g
        .create_event(
            MBX,
            ev("A", "2030-01-07T09:00:00", "2030-01-07T10:00:00", "UTC"),
        )
        .await;
    let path = format!("users/{MBX}/events/{}", id(&e));
    let stale = e["@odata.etag"].as_str().expect("etag").to_string();
    assert_eq!(g.patch(&path, json!({ "subject": "B" })).await.status, 200);
    let url = format!("{}/{path}", g.sim.graph_url());
    let r = g
        .http
        .patch(&url)
        .bearer_auth(&g.token)
        .header("If-Match", &stale)
        .json(&json!({ "subject": "C" }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 412);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "ErrorIrresolvableConflict");

    let ro = g
        .patch(&path, json!({ "subject": "D", "iCalUId": "forged", "createdDateTime": "2000-01-01T00:00:00Z", "changeKey": "x" }))
        .await;
    assert_eq!(ro.status, 200, "{}", ro.body);
    assert_eq!(ro.body["subject"], "D");
    assert_eq!(ro.body["iCalUId"], e["iCalUId"]);
    assert_eq!(ro.body["createdDateTime"], e["createdDateTime"]);

    let unknown = g
        .patch(&path, json!({ "subject": "E", "crmNotes": "x" }))
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let now = g.get(&path, &[]).await;
    assert_eq!(now.body["subject"], "D", "a refused PATCH changes nothing");
}

// ---------------------------------------------------------------------------------------- 8

#[tokio::test]
async fn line_08_event_and_contact_ids_never_change_a_moved_message_keeps_its_immutable_id() {
    let g = raw().await;
    let immutable = "IdType=\"ImmutableId\"";
    let e = g
        .call(
            Method::POST,
            &format!("users/{MBX}/events"),
            Some(&ev(
                "A",
                "2030-01-07T09:00:00",
                "2030-01-07T10:00:00",
                "UTC",
            )),
            &[immutable],
        )
        .await;
    let p = g
        .call(
            Method::PATCH,
            &format!("users/{MBX}/events/{}", id(&e.body)),
            Some(&json!({ "subject": "B" })),
            &[immutable],
        )
        .await;
    assert_eq!(id(&p.body), id(&e.body));
    let c = g
        .call(
            Method::POST,
            &format!("users/{MBX}/contacts"),
            Some(&json!({ "givenName": "Ana" })),
            &[immutable],
        )
        .await;
    let p = g
        .call(
            Method::PATCH,
            &format!("users/{MBX}/contacts/{}", id(&c.body)),
            Some(&json!({ "surname": "Lopez" })),
            &[immutable],
        )
        .await;
    assert_eq!(id(&p.body), id(&c.body));

    let m = g
        .sim
        .deliver_message(MBX, "Inbox", json!({ "subject": "Offer" }));
    let imm = id(&m);
    let rest_before = g.get(&format!("users/{MBX}/messages/{imm}"), &[]).await;
    let archive = g
        .get(&format!("users/{MBX}/mailFolders/archive"), &[])
        .await;
    let moved_rest = g
        .post(
            &format!("users/{MBX}/messages/{}/move", id(&rest_before.body)),
            json!({ "destinationId": id(&archive.body) }),
        )
        .await;
    assert_eq!(moved_rest.status, 201, "{}", moved_rest.body);
    assert_ne!(
        id(&moved_rest.body),
        id(&rest_before.body),
        "the REST id changes on a move"
    );
    let after = g
        .get(&format!("users/{MBX}/messages/{imm}"), &[immutable])
        .await;
    assert_eq!(after.status, 200);
    assert_eq!(id(&after.body), imm, "the immutable id does not");
}

// ---------------------------------------------------------------------------------------- 9

#[tokio::test]
async fn line_09_text_bodies_are_served_as_html_with_entities_unless_text_is_preferred() {
    let g = raw().await;
    let text = "Grüße – Straße & Söhne\n\"Preis\" < 5 €  netto 😀\nEnde";
    let mut body = ev("Body", "2030-01-07T09:00:00", "2030-01-07T10:00:00", "UTC");
    body["body"] = json!({ "contentType": "text", "content": text });
    let e = g.create_event(MBX, body).await;
    let path = format!("users/{MBX}/events/{}", id(&e));
    let html = g.get(&path, &[]).await;
    assert_eq!(html.body["body"]["contentType"], "html");
    let content = html.body["body"]["content"].as_str().expect("content");
    assert!(content.starts_with("<html><head>"), "{content}");
    assert!(
        content.contains("</head>")
            && content.contains("<body>")
            && content.trim_end().ends_with("</body>\r\n</html>"),
        "{content}"
    );
    for needle in [
        "<div>",
        "Gr&uuml;&szlig;e",
        "&ndash;",
        "Stra&szlig;e &amp; S&ouml;hne",
        "<br>",
        "&quot;Preis&quot; &lt; 5 &euro;&nbsp; netto",
        "&#128512;",
        "Ende</div>",
    ] {
        assert!(content.contains(needle), "missing {needle:?} in {content}");
    }
    assert!(
        !content.contains('ü') && !content.contains('–'),
        "non-ASCII is entity-encoded: {content}"
    );

    let plain = g.get(&path, &["outlook.body-content-type=\"text\""]).await;
    assert_eq!(plain.body["body"]["contentType"], "text");
    assert_eq!(plain.body["body"]["content"], text);
    let applied = plain
        .headers
        .get("preference-applied")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(applied.contains("outlook.body-content-type"), "{applied:?}");

    // Messages too, and an HTML body written as HTML comes back as HTML.
    let m = g.sim.deliver_message(
        MBX,
        "Inbox",
        json!({ "subject": "S", "body": { "contentType": "text", "content": "Tschüß" } }),
    );
    let got = g
        .get(&format!("users/{MBX}/messages/{}", id(&m)), &[])
        .await;
    assert!(
        got.body["body"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Tsch&uuml;&szlig;")),
        "{}",
        got.body
    );
    let mut hb = ev("H", "2030-01-07T09:00:00", "2030-01-07T10:00:00", "UTC");
    hb["body"] = json!({ "contentType": "html", "content": "<p>x &amp; y</p>" });
    let h = g.create_event(MBX, hb).await;
    let got = g
        .get(
            &format!("users/{MBX}/events/{}", id(&h)),
            &["outlook.body-content-type=\"text\""],
        )
        .await;
    assert_eq!(got.body["body"]["content"], "x & y");
}

// ---------------------------------------------------------------------------------------- 10

#[tokio::test]
async fn line_10_all_day_events_are_floating_midnights_with_an_exclusive_end() {
    let g = raw().await;
    let mut body = ev(
        "Holiday",
        "2030-01-07T00:00:00",
        "2030-01-08T00:00:00",
        "W. Europe Standard Time",
    );
    body["isAllDay"] = json!(true);
    let e = g.create_event(MBX, body).await;
    let path = format!("users/{MBX}/events/{}", id(&e));
    let utc = g.get(&path, &[]).await;
    assert_eq!(
        utc.body["start"],
        json!({ "dateTime": "2030-01-07T00:00:00.0000000", "timeZone": "UTC" })
    );
    assert_eq!(
        utc.body["end"],
        json!({ "dateTime": "2030-01-08T00:00:00.0000000", "timeZone": "UTC" })
    );
    let pacific = g
        .get(&path, &["outlook.timezone=\"Pacific Standard Time\""])
        .await;
    assert_eq!(
        pacific.body["start"],
        json!({ "dateTime": "2030-01-07T00:00:00.0000000", "timeZone": "Pacific Standard Time" })
    );

    // End exclusive: a calendarView of the next day does not show it.
    let next_day = g
        .get(
            &format!(
                "users/{MBX}/calendarView?{}",
                window_query("2030-01-08T00:00:00Z", "2030-01-09T00:00:00Z")
            ),
            &[],
        )
        .await;
    assert_eq!(
        next_day.body["value"].as_array().map(Vec::len),
        Some(0),
        "{}",
        next_day.body
    );
    let same_day = g
        .get(
            &format!(
                "users/{MBX}/calendarView?{}",
                window_query("2030-01-07T00:00:00Z", "2030-01-08T00:00:00Z")
            ),
            &[],
        )
        .await;
    assert_eq!(same_day.body["value"].as_array().map(Vec::len), Some(1));

    let mut bad = ev("Bad", "2030-01-07T09:00:00", "2030-01-08T00:00:00", "UTC");
    bad["isAllDay"] = json!(true);
    assert_eq!(
        g.post(&format!("users/{MBX}/events"), bad).await.status,
        400
    );
}

// ---------------------------------------------------------------------------------------- 11

#[tokio::test]
async fn line_11_calendar_view_delta_small_pages_empty_first_page_repeats_removed_and_skeletal_occurrences()
 {
    let g = raw().await;
    let imm = "IdType=\"ImmutableId\"";
    let create = |body: Value| {
        let g = &g;
        async move {
            g.call(
                Method::POST,
                &format!("users/{MBX}/events"),
                Some(&body),
                &[imm],
            )
            .await
            .body
        }
    };
    for i in 0..5 {
        create(ev(
            &format!("S{i}"),
            &format!("2030-01-0{}T09:00:00", i + 1),
            &format!("2030-01-0{}T10:00:00", i + 1),
            "UTC",
        ))
        .await;
    }
    let mut series = ev(
        "Weekly",
        "2030-01-07T09:00:00",
        "2030-01-07T09:30:00",
        "UTC",
    );
    series["recurrence"] = json!({ "pattern": { "type": "weekly", "interval": 1, "daysOfWeek": ["monday"] },
                                   "range": { "type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 3 } });
    let master = create(series).await;
    g.sim.empty_delta_pages(true);
    g.sim.replay_delta(true);
    let start = format!(
        "{}/users/{MBX}/calendarView/delta?{}",
        g.sim.graph_url(),
        window_query("2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z")
    );
    let (pages, delta) = g.delta_round(&start, &["odata.maxpagesize=2", imm]).await;
    assert!(pages[0].is_empty(), "the first page may be empty");
    assert!(pages.iter().all(|p| p.len() <= 2), "small pages");
    let items: Vec<&Value> = pages.iter().flatten().collect();
    assert_eq!(items.len(), 5 + 3, "singles and three occurrences");
    assert!(
        items
            .iter()
            .all(|i| i["type"] != "seriesMaster" && i["id"] != master["id"]),
        "never the seriesMaster"
    );
    let occurrences: Vec<&&Value> = items.iter().filter(|i| i["type"] == "occurrence").collect();
    assert_eq!(occurrences.len(), 3);
    for o in &occurrences {
        let keys: Vec<&String> = o
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        for k in &keys {
            assert!(
                [
                    "@odata.type",
                    "@odata.etag",
                    "id",
                    "type",
                    "seriesMasterId",
                    "start",
                    "end"
                ]
                .contains(&k.as_str()),
                "skeletal occurrence has {k}"
            );
        }
        assert_eq!(o["seriesMasterId"], master["id"]);
    }

    // Changes: one moves out of the window, one is created outside it, one is edited.
    g.sim.empty_delta_pages(false);
    let all = g.sim.events(MBX);
    let s0 = all.iter().find(|e| e["subject"] == "S0").expect("S0");
    let s1 = all.iter().find(|e| e["subject"] == "S1").expect("S1");
    g.patch(&format!("users/{MBX}/events/{}", id(s0)), json!({ "start": { "dateTime": "2031-06-01T09:00:00", "timeZone": "UTC" }, "end": { "dateTime": "2031-06-01T10:00:00", "timeZone": "UTC" } })).await;
    let outside = create(ev(
        "Later",
        "2032-01-01T09:00:00",
        "2032-01-01T10:00:00",
        "UTC",
    ))
    .await;
    g.patch(
        &format!("users/{MBX}/events/{}", id(s1)),
        json!({ "subject": "S1 edited" }),
    )
    .await;
    let (pages, delta2) = g.delta_round(&delta, &[imm]).await;
    let items: Vec<Value> = pages.into_iter().flatten().collect();
    let removed: Vec<&str> = items
        .iter()
        .filter(|i| i.get("@removed").is_some())
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert!(
        removed.contains(&id(s0).as_str()),
        "left the window: @removed"
    );
    assert!(
        removed.contains(&id(&outside).as_str()),
        "created outside the window: @removed"
    );
    assert!(items.iter().any(|i| i["subject"] == "S1 edited"));
    // Replays: the edited item shows up again in the next round.
    let (pages, _) = g.delta_round(&delta2, &[imm]).await;
    assert!(
        pages.iter().flatten().any(|i| i["id"] == json!(id(s1))),
        "an item may be repeated in a later round"
    );
}

// ---------------------------------------------------------------------------------------- 12

#[tokio::test]
async fn line_12_internal_attendees_get_their_own_copy_that_follows_the_organizer() {
    let g = raw().await;
    let mut body = ev(
        "Review",
        "2030-01-07T09:00:00",
        "2030-01-07T10:00:00",
        "UTC",
    );
    body["attendees"] = json!([
        { "type": "required", "emailAddress": { "address": MBX2, "name": "Rep Two" } },
        { "type": "required", "emailAddress": { "address": "ana@customer.test", "name": "Ana" } }
    ]);
    body["singleValueExtendedProperties"] = json!([
        { "id": cgc_graph::CRM_ID_PROPERTY, "value": "42" },
        { "id": cgc_graph::SYNC_STATE_PROPERTY, "value": "v1" }
    ]);
    let org = g.create_event(MBX, body).await;
    let expand = "$expand=singleValueExtendedProperties";
    let copies = g.get(&format!("users/{MBX2}/events?{expand}"), &[]).await;
    let list = copies.body["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{}", copies.body);
    let copy = &list[0];
    assert_eq!(copy["iCalUId"], org["iCalUId"]);
    assert_ne!(copy["id"], org["id"]);
    assert_eq!(copy["isOrganizer"], false);
    assert_eq!(copy["organizer"]["emailAddress"]["address"], MBX);
    assert_eq!(
        copy["singleValueExtendedProperties"],
        json!([]),
        "none of the organizer's extended properties"
    );
    let org_props = g
        .get(&format!("users/{MBX}/events/{}?{expand}", id(&org)), &[])
        .await;
    assert_eq!(
        org_props.body["singleValueExtendedProperties"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    g.patch(
        &format!("users/{MBX}/events/{}", id(&org)),
        json!({ "subject": "Review (moved)", "location": { "displayName": "Room 2" } }),
    )
    .await;
    let c = g
        .get(&format!("users/{MBX2}/events/{}", id(copy)), &[])
        .await;
    assert_eq!(
        c.body["subject"], "Review (moved)",
        "organizer edits reach the copy"
    );
    assert_eq!(c.body["location"]["displayName"], "Room 2");

    let del = g
        .call(
            Method::DELETE,
            &format!("users/{MBX}/events/{}", id(&org)),
            None,
            &[],
        )
        .await;
    assert_eq!(del.status, 204);
    let c = g
        .get(&format!("users/{MBX2}/events/{}", id(copy)), &[])
        .await;
    assert_eq!(c.status, 200, "the copy stays");
    assert_eq!(
        c.body["isCancelled"], true,
        "an organizer delete cancels the copy"
    );
}

// ---------------------------------------------------------------------------------------- 13

#[tokio::test]
async fn line_13_throttling_is_per_mailbox_with_a_window_and_a_concurrency_limit() {
    let g = raw().await;
    g.sim.throttle_next(1, 2);
    let first = g.get(&format!("users/{MBX}/events"), &[]).await;
    assert_eq!(first.status, 429);
    assert_eq!(
        first
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    // Inside the window: 429 again, for any request to that mailbox; the window does not grow.
    let again = g.get(&format!("users/{MBX}/contacts"), &[]).await;
    assert_eq!(again.status, 429);
    let left: u64 = again
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!(left <= 2, "the window is not extended ({left})");
    // Other mailboxes and directory calls are not throttled.
    assert_eq!(
        g.get(&format!("users/{MBX2}/events"), &[]).await.status,
        200
    );
    assert_eq!(
        g.get(&format!("users/{MBX}"), &[]).await.status,
        200,
        "GET users/{{id}} is a directory call"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        g.get(&format!("users/{MBX}/events"), &[]).await.status,
        200,
        "after the window"
    );

    // More than 4 concurrent requests to one mailbox: 429 MailboxConcurrency.
    g.sim.set_latency(Duration::from_millis(300));
    let path = format!("users/{MBX2}/events");
    let calls = (0..6).map(|_| g.get(&path, &[]));
    let answers = futures::future::join_all(calls).await;
    let throttled: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(!throttled.is_empty());
    assert!(throttled.iter().all(|a| {
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MailboxConcurrency"))
    }));
}

// ---------------------------------------------------------------------------------------- 14

#[tokio::test]
async fn line_14_notifications_are_at_least_once_with_extra_updates_and_missed_after_losses() {
    let g = raw().await;
    g.sim.set_delivery_retry(Duration::from_millis(10), 2);
    let r = receiver(Handshake::Echo).await;
    let sub = g
        .post(
            "subscriptions",
            json!({ "changeType": "created,updated,deleted", "notificationUrl": format!("{}/n", r.base),
                    "lifecycleNotificationUrl": format!("{}/l", r.base), "resource": format!("users/{MBX}/events"),
                    "clientState": "s", "expirationDateTime": (Utc::now() + CDuration::days(2)).to_rfc3339() }),
        )
        .await;
    assert_eq!(sub.status, 201);
    g.sim.duplicate_deliveries(2);
    g.sim.updates_after_create(2);
    let e = g
        .create_event(
            MBX,
            ev("N", "2030-01-07T09:00:00", "2030-01-07T10:00:00", "UTC"),
        )
        .await;
    g.sim.quiesce().await;
    let items = r.items();
    let for_e: Vec<&Value> = items
        .iter()
        .filter(|i| i["resourceData"]["id"] == json!(id(&e)))
        .collect();
    let created = for_e
        .iter()
        .filter(|i| i["changeType"] == "created")
        .count();
    let updated = for_e
        .iter()
        .filter(|i| i["changeType"] == "updated")
        .count();
    assert_eq!(created, 2, "the same notification twice");
    assert_eq!(updated, 4, "several updated after one create");

    g.sim.duplicate_deliveries(1);
    g.sim.updates_after_create(0);
    g.sim.miss_notifications(1);
    let lost = g
        .create_event(
            MBX,
            ev("L", "2030-01-08T09:00:00", "2030-01-08T10:00:00", "UTC"),
        )
        .await;
    g.sim.quiesce().await;
    let items = r.items();
    assert!(
        !items
            .iter()
            .any(|i| i["resourceData"]["id"] == json!(id(&lost))),
        "never came"
    );
    assert!(
        items.iter().any(|i| i["lifecycleEvent"] == "missed"),
        "missed follows"
    );
}

// ---------------------------------------------------------------------------------------- 15

#[tokio::test]
async fn line_15_todo_dates_come_back_exactly_as_written() {
    let g = raw().await;
    let list = g.sim.default_list_id(MBX);
    let due =
        json!({ "dateTime": "2030-03-05T00:00:00.0000000", "timeZone": "W. Europe Standard Time" });
    let start = json!({ "dateTime": "2030-03-01T08:30:00", "timeZone": "Pacific Standard Time" });
    let t = g
        .post(
            &format!("users/{MBX}/todo/lists/{list}/tasks"),
            json!({ "title": "T", "dueDateTime": due, "startDateTime": start }),
        )
        .await;
    assert_eq!(t.status, 201);
    let got = g
        .get(
            &format!("users/{MBX}/todo/lists/{list}/tasks/{}", id(&t.body)),
            &["outlook.timezone=\"UTC\""],
        )
        .await;
    assert_eq!(got.body["dueDateTime"], due);
    assert_eq!(got.body["startDateTime"], start);
}

// ---------------------------------------------------------------------------------------- 16

#[tokio::test]
async fn line_16_an_occurrence_has_its_own_ical_uid_and_links_to_its_master() {
    let g = raw().await;
    let mut series = ev(
        "Daily",
        "2030-01-07T09:00:00",
        "2030-01-07T09:15:00",
        "W. Europe Standard Time",
    );
    series["recurrence"] = json!({ "pattern": { "type": "daily", "interval": 1 },
                                   "range": { "type": "endDate", "startDate": "2030-01-07", "endDate": "2030-01-09" } });
    let master = g.create_event(MBX, series).await;
    assert_eq!(master["type"], "seriesMaster");
    let inst = g
        .get(
            &format!(
                "users/{MBX}/events/{}/instances?{}",
                id(&master),
                window_query("2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z")
            ),
            &[],
        )
        .await;
    let list = inst.body["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 3, "{}", inst.body);
    let mut uids: Vec<&str> = list.iter().filter_map(|o| o["iCalUId"].as_str()).collect();
    for o in &list {
        assert_eq!(o["type"], "occurrence");
        assert_eq!(o["seriesMasterId"], master["id"]);
        assert_ne!(o["iCalUId"], master["iCalUId"]);
    }
    uids.dedup();
    assert_eq!(uids.len(), 3, "each occurrence has its own iCalUId");
    // 09:00 in Berlin in January is 08:00 UTC.
    assert_eq!(list[0]["start"]["dateTime"], "2030-01-07T08:00:00.0000000");
    let one = g
        .get(&format!("users/{MBX}/events/{}", id(&list[1])), &[])
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["seriesMasterId"], master["id"]);
    assert_eq!(one.body["iCalUId"], list[1]["iCalUId"]);
}

// ---------------------------------------------------------------------------------------- 34

#[tokio::test]
async fn line_34_a_write_answered_5xx_may_have_been_applied() {
    let g = raw().await;
    g.sim.commit_then_fail(MBX, 1, CommitFail::Status500);
    let mut body = ev(
        "Committed",
        "2030-01-07T09:00:00",
        "2030-01-07T10:00:00",
        "UTC",
    );
    body["transactionId"] = json!("txn-34");
    let failed = g.post(&format!("users/{MBX}/events"), body.clone()).await;
    assert_eq!(failed.status, 500);
    let events = g.sim.events(MBX);
    assert_eq!(events.len(), 1, "the create was applied");
    let retried = g.post(&format!("users/{MBX}/events"), body).await;
    assert_eq!(
        retried.status, 201,
        "a retry with the same transactionId returns the event"
    );
    assert_eq!(
        retried.body["iCalUId"], events[0]["iCalUId"],
        "the event the failed POST made"
    );
    assert_eq!(g.sim.events(MBX).len(), 1, "no duplicate");

    let path = format!("users/{MBX}/events/{}", id(&retried.body));
    g.sim.commit_then_fail(MBX, 1, CommitFail::Status503);
    let p = g.patch(&path, json!({ "subject": "Edited" })).await;
    assert_eq!(p.status, 503);
    let reread = g.get(&path, &[]).await;
    assert_eq!(reread.body["subject"], "Edited", "the PATCH was applied");
    let again = g.patch(&path, json!({ "subject": "Edited" })).await;
    assert_eq!(again.status, 200);
}

// ---------------------------------------------------------------------------------------- 40

#[tokio::test]
async fn line_40_any_windows_or_iana_zone_is_accepted_kept_and_served_in_utc_unless_asked() {
    let g = raw().await;
    let zones: HashMap<&str, &str> = HashMap::from([
        // zone -> 2030-01-07T09:00 local in UTC
        (
            "Central Brazilian Standard Time",
            "2030-01-07T13:00:00.0000000",
        ),
        (
            "Mountain Standard Time (Mexico)",
            "2030-01-07T16:00:00.0000000",
        ),
        ("UTC-11", "2030-01-07T20:00:00.0000000"),
        ("W. Europe Standard Time", "2030-01-07T08:00:00.0000000"),
        ("Tokyo Standard Time", "2030-01-07T00:00:00.0000000"),
        ("America/Sao_Paulo", "2030-01-07T12:00:00.0000000"),
        ("Europe/Berlin", "2030-01-07T08:00:00.0000000"),
    ]);
    for (zone, utc) in &zones {
        let e = g
            .create_event(
                MBX,
                ev(zone, "2030-01-07T09:00:00", "2030-01-07T10:00:00", zone),
            )
            .await;
        assert_eq!(e["originalStartTimeZone"], *zone);
        assert_eq!(e["originalEndTimeZone"], *zone);
        let got = g.get(&format!("users/{MBX}/events/{}", id(&e)), &[]).await;
        assert_eq!(
            got.body["start"],
            json!({ "dateTime": utc, "timeZone": "UTC" }),
            "{zone}"
        );
        let local = g
            .get(
                &format!("users/{MBX}/events/{}", id(&e)),
                &[&format!("outlook.timezone=\"{zone}\"")],
            )
            .await;
        assert_eq!(
            local.body["start"],
            json!({ "dateTime": "2030-01-07T09:00:00.0000000", "timeZone": zone }),
            "{zone}"
        );
    }
    let unknown = g
        .post(
            &format!("users/{MBX}/events"),
            ev(
                "X",
                "2030-01-07T09:00:00",
                "2030-01-07T10:00:00",
                "Mars Standard Time",
            ),
        )
        .await;
    assert_eq!(unknown.status, 400);
}
