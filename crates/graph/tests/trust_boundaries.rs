//! The token and the client secret never leave `graph_url` / `login_url`: redirects are not
//! followed, links from answers that point elsewhere are not requested, and odd `expires_in`
//! values in the token answer never panic.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cgc_graph::{DeltaStart, GraphClient, GraphConfig, GraphError};
use common::fast_policy;
use serde_json::{Value, json};

/// Serves `handler` on 127.0.0.1:0; returns `http://127.0.0.1:port`.
async fn serve<F, Fut>(handler: F) -> String
where
    F: Fn(Method, Uri) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().fallback(move |m: Method, u: Uri| handler(m, u));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A second server that must never be reached; counts every request (and answers a valid
/// token, collection and delta page, so following a link there would "work").
async fn elsewhere() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let base = serve(move |_m, _u| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            json_answer(json!({
                "access_token": "stolen", "expires_in": 3599, "token_type": "Bearer",
                "value": [], "@odata.deltaLink": "http://127.0.0.1:1/v1.0/done"
            }))
        }
    })
    .await;
    (base, hits)
}

fn json_answer(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn token_answer() -> Response {
    json_answer(json!({ "token_type": "Bearer", "expires_in": 3599, "access_token": "t" }))
}

fn redirect(status: StatusCode, to: &str) -> Response {
    (status, [(header::LOCATION, to.to_string())]).into_response()
}

fn client(base: &str) -> GraphClient {
    GraphClient::with_policy(
        GraphConfig {
            login_url: base.to_string(),
            azure_tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: "s".to_string().into(),
            graph_url: format!("{base}/v1.0"),
            timeout: Duration::from_secs(10),
        },
        fast_policy(),
    )
    .expect("client")
}

/// A Graph stub: the token endpoint answers normally, everything else with `graph(path)`.
async fn graph_stub(graph: impl Fn(&str) -> Response + Clone + Send + Sync + 'static) -> String {
    serve(move |_m, u: Uri| {
        let graph = graph.clone();
        async move {
            if u.path().ends_with("/oauth2/v2.0/token") {
                token_answer()
            } else {
                graph(u.path())
            }
        }
    })
    .await
}

// ------------------------------------------------------------------ redirects

#[tokio::test]
async fn graph_redirect_is_an_error_and_not_followed() {
    let (other, hits) = elsewhere().await;
    let target = format!("{other}/v1.0/users/x");
    for status in [
        StatusCode::FOUND,
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let t = target.clone();
        let base = graph_stub(move |_| redirect(status, &t)).await;
        let err = client(&base)
            .get_user("x@contoso.com")
            .await
            .expect_err("a redirect is an error");
        match &err {
            GraphError::Http {
                status: s, code, ..
            } => {
                assert_eq!(*s, status.as_u16());
                assert_eq!(code, "Redirect");
            }
            other => panic!("expected Http/Redirect, got {other:?}"),
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}

#[tokio::test]
async fn token_endpoint_redirect_is_not_followed() {
    let (other, hits) = elsewhere().await;
    let to = format!("{other}/t/oauth2/v2.0/token");
    let base = serve(move |_m, _u| {
        let to = to.clone();
        async move { redirect(StatusCode::TEMPORARY_REDIRECT, &to) }
    })
    .await;
    let err = client(&base)
        .get_user("x@contoso.com")
        .await
        .expect_err("a redirected token request fails");
    assert!(
        matches!(&err, GraphError::Auth { code, .. } if code == "TokenRedirect"),
        "{err:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the client secret followed the redirect"
    );
}

// ------------------------------------------------------------------ links from answers

#[tokio::test]
async fn foreign_next_link_is_not_requested_and_paging_stops_with_an_error() {
    let (other, hits) = elsewhere().await;
    let next = format!("{other}/v1.0/users/m/events?$skip=1");
    let base = graph_stub(move |_| {
        json_answer(json!({ "value": [ { "id": "a" } ], "@odata.nextLink": next }))
    })
    .await;
    let err = client(&base)
        .find_events_by_ical_uid("m@x.test", "uid")
        .await
        .expect_err("a nextLink to another host ends the listing");
    match &err {
        GraphError::Parse { detail, .. } => {
            assert!(detail.contains("outside graph_url"), "{detail}")
        }
        other => panic!("expected Parse, got {other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the nextLink was requested");
}

#[tokio::test]
async fn foreign_delta_next_link_is_a_sync_reset_and_not_requested() {
    let (other, hits) = elsewhere().await;
    let next = format!("{other}/v1.0/users/m/contacts/delta?$skiptoken=1");
    let base = graph_stub(move |_| {
        json_answer(json!({ "value": [ { "id": "a" } ], "@odata.nextLink": next }))
    })
    .await;
    let err = client(&base)
        .contacts_delta("m@x.test", DeltaStart::Initial)
        .await
        .expect_err("reset");
    assert!(
        matches!(err, GraphError::SyncReset { location: None }),
        "{err:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the nextLink was requested");
}

#[tokio::test]
async fn foreign_delta_link_at_the_end_of_a_round_is_a_sync_reset() {
    let (other, hits) = elsewhere().await;
    let delta = format!("{other}/v1.0/users/m/contacts/delta?$deltatoken=1");
    let base = graph_stub(move |_| {
        json_answer(json!({ "value": [ { "id": "a" } ], "@odata.deltaLink": delta }))
    })
    .await;
    let err = client(&base)
        .contacts_delta("m@x.test", DeltaStart::Initial)
        .await
        .expect_err("a deltaLink to another host is never handed to the caller");
    assert!(matches!(err, GraphError::SyncReset { .. }), "{err:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stored_foreign_delta_link_is_a_sync_reset_and_not_requested() {
    let (other, hits) = elsewhere().await;
    let base = graph_stub(|_| json_answer(json!({ "value": [], "@odata.deltaLink": "x" }))).await;
    let c = client(&base);
    for link in [
        format!("{other}/v1.0/users/m/contacts/delta?$deltatoken=1"),
        // Same host and port, other scheme.
        format!(
            "{}/v1.0/users/m/contacts/delta",
            base.replace("http:", "https:")
        ),
        "not a url".to_string(),
    ] {
        let err = c
            .contacts_delta("m@x.test", DeltaStart::Link(link.clone()))
            .await
            .expect_err("reset");
        assert!(
            matches!(err, GraphError::SyncReset { .. }),
            "{link}: {err:?}"
        );
        let err = c
            .tasks_delta("m@x.test", "list", DeltaStart::Link(link.clone()))
            .await
            .expect_err("reset");
        assert!(
            matches!(err, GraphError::SyncReset { .. }),
            "{link}: {err:?}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn same_origin_links_are_still_followed() {
    // The stub hands out links on its own host and port (read from the Host header).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().fallback(move |u: Uri, h: HeaderMap| async move {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if u.path().ends_with("/oauth2/v2.0/token") {
            return token_answer();
        }
        if u.query().is_some_and(|q| q.contains("page=2")) {
            json_answer(json!({ "value": [ { "id": "b" } ],
                                "@odata.deltaLink": format!("http://{host}/v1.0/d?token=1") }))
        } else {
            json_answer(json!({ "value": [ { "id": "a" } ],
                                "@odata.nextLink": format!("http://{host}/v1.0/d?page=2") }))
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let c = client(&format!("http://{addr}"));
    let round = c
        .contacts_delta("m@x.test", DeltaStart::Initial)
        .await
        .expect("round");
    assert_eq!(round.changed.len(), 2);
    assert!(round.delta_link.ends_with("/v1.0/d?token=1"));
    assert!(c.is_graph_url(&round.delta_link));
    // `localhost` is another host name than 127.0.0.1 and another port is another origin.
    assert!(!c.is_graph_url(&format!("http://localhost:{}/v1.0", addr.port())));
    assert!(!c.is_graph_url(&format!("http://127.0.0.1:{}/v1.0", addr.port() ^ 1)));
}

// ------------------------------------------------------------------ token lifetime

/// A stub whose token endpoint answers `expires_in` (or leaves it out) and counts token requests.
async fn token_stub(expires_in: Option<Value>) -> (String, Arc<AtomicUsize>) {
    let tokens = Arc::new(AtomicUsize::new(0));
    let t = tokens.clone();
    let base = serve(move |_m, u: Uri| {
        let t = t.clone();
        let expires_in = expires_in.clone();
        async move {
            if u.path().ends_with("/oauth2/v2.0/token") {
                t.fetch_add(1, Ordering::SeqCst);
                let mut body = json!({ "token_type": "Bearer", "access_token": "t" });
                if let Some(e) = expires_in {
                    body["expires_in"] = e;
                }
                json_answer(body)
            } else {
                json_answer(json!({ "id": "u1", "userPrincipalName": "x@contoso.com" }))
            }
        }
    })
    .await;
    (base, tokens)
}

#[tokio::test]
async fn huge_expires_in_does_not_panic_and_the_token_is_cached() {
    for value in [
        json!(u64::MAX),
        json!("18446744073709551615"),
        json!(1e300),
        json!(i64::MAX),
    ] {
        let (base, tokens) = token_stub(Some(value.clone())).await;
        let c = client(&base);
        for _ in 0..2 {
            let user = c.get_user("x@contoso.com").await.expect("call");
            assert!(user.is_some(), "{value}");
        }
        assert_eq!(tokens.load(Ordering::SeqCst), 1, "{value}");
    }
}

#[tokio::test]
async fn missing_negative_or_non_numeric_expires_in_still_works() {
    for value in [
        None,
        Some(json!(-5)),
        Some(json!(i64::MIN)),
        Some(json!(0)),
        Some(json!("soon")),
        Some(json!(null)),
        Some(json!({ "s": 1 })),
    ] {
        let (base, tokens) = token_stub(value.clone()).await;
        let c = client(&base);
        for _ in 0..2 {
            let user = c.get_user("x@contoso.com").await.expect("call");
            assert!(user.is_some(), "{value:?}");
        }
        // A short assumed lifetime (5 minutes) still serves back-to-back calls.
        assert_eq!(tokens.load(Ordering::SeqCst), 1, "{value:?}");
    }
}
