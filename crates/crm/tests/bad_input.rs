//! The client against a fake server that answers whatever the test says: every bad answer gives
//! a typed error, never a panic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use cgc_crm::{CrmClient, CrmConfig, CrmError, ErrorCode, Query};
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
struct Canned {
    status: u16,
    /// `{corr}` is replaced by the request's corr.
    body: Arc<Vec<u8>>,
}

type Shared = Arc<Mutex<Canned>>;

async fn answer(State(canned): State<Shared>, request: Bytes) -> impl IntoResponse {
    let c = canned.lock().expect("lock").clone();
    let req = String::from_utf8_lossy(&request);
    let corr = req
        .split("corr=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string();
    let body: Vec<u8> = match std::str::from_utf8(&c.body) {
        Ok(text) if text.len() < 1024 * 1024 => text.replace("{corr}", &corr).into_bytes(),
        _ => c.body.as_ref().clone(),
    };
    (StatusCode::from_u16(c.status).expect("status"), body)
}

async fn fake(status: u16, body: impl Into<Vec<u8>>) -> CrmClient {
    let canned: Shared = Arc::new(Mutex::new(Canned {
        status,
        body: Arc::new(body.into()),
    }));
    let app = Router::new().route("/crm", post(answer)).with_state(canned);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    client(format!("http://{addr}/crm"))
}

fn client(url: String) -> CrmClient {
    CrmClient::new(CrmConfig {
        url,
        user: "OCSU".into(),
        password: "secret".to_string().into(),
        timeout: Duration::from_secs(10),
    })
    .expect("client")
}

async fn query_err(status: u16, body: impl Into<Vec<u8>>) -> CrmError {
    fake(status, body)
        .await
        .query(&Query::new("Contact"), None)
        .await
        .expect_err("must fail")
}

fn parse_detail(e: &CrmError) -> &str {
    match e {
        CrmError::Parse { detail, .. } => detail,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[tokio::test]
async fn well_formed_answer_through_the_fake_works() {
    let c = fake(
        200,
        r#"<response corr="{corr}"><query><Contact tableshort="MA" id="4294967394"><Subject>x</Subject></Contact></query></response>"#,
    )
    .await;
    let page = c.query(&Query::new("Contact"), None).await.expect("query");
    assert_eq!(page.records[0].id, 4_294_967_394);
}

#[tokio::test]
async fn unreadable_records_are_skipped_counted_and_never_fail_the_answer() {
    let c = fake(
        200,
        r#"<response corr="{corr}"><query><Contact tableshort="MA" id=" 7 "><Subject>ok</Subject></Contact><Contact tableshort="MA"><Subject>no id</Subject></Contact><Contact tableshort="MA" id="-1"/><Contact tableshort="MA" id="18446744073709551616"/></query></response>"#,
    )
    .await;
    let page = c.query(&Query::new("Contact"), None).await.expect("query");
    assert_eq!(
        page.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(c.malformed_rows(), 3);
    c.query(&Query::new("Contact"), None).await.expect("query");
    assert_eq!(c.malformed_rows(), 6, "counted per answer, across calls");
}

#[tokio::test]
async fn malformed_xml_is_parse_error() {
    let e = query_err(200, r#"<response corr="{corr}"><query></response>"#).await;
    parse_detail(&e);
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn unknown_return_type_is_parse_error() {
    let e = query_err(
        200,
        r#"<response corr="{corr}"><query><return type="perhaps"/></query></response>"#,
    )
    .await;
    assert!(parse_detail(&e).contains("unknown return type"), "{e}");
}

#[tokio::test]
async fn truncated_document_is_parse_error() {
    let e = query_err(
        200,
        r#"<response corr="{corr}"><query><Contact tableshort="MA" id="1"><Subject>cut he"#,
    )
    .await;
    assert!(parse_detail(&e).contains("truncated"), "{e}");
}

#[tokio::test]
async fn truncated_http_body_is_retryable_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<response><query>")
                .await;
            let _ = sock.shutdown().await;
        }
    });
    let e = client(format!("http://{addr}/crm"))
        .query(&Query::new("Contact"), None)
        .await
        .expect_err("must fail");
    assert!(
        matches!(e, CrmError::Transport { status: None, .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn doctype_with_external_entity_is_rejected() {
    let e = query_err(
        200,
        r#"<?xml version="1.0"?><!DOCTYPE response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><response corr="{corr}"><query><Contact tableshort="MA" id="1"><Subject>&xxe;</Subject></Contact></query></response>"#,
    )
    .await;
    assert!(parse_detail(&e).contains("DOCTYPE"), "{e}");
}

#[tokio::test]
async fn undeclared_entity_is_rejected() {
    let e = query_err(
        200,
        r#"<response corr="{corr}"><query><Contact tableshort="MA" id="1"><Subject>&xxe;</Subject></Contact></query></response>"#,
    )
    .await;
    assert!(parse_detail(&e).contains("entity"), "{e}");
}

#[tokio::test]
async fn huge_body_is_rejected() {
    let mut body = br#"<response corr="x"><query>"#.to_vec();
    let record = br#"<Contact tableshort="MA" id="1"><Subject>xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</Subject></Contact>"#;
    while body.len() < 17 * 1024 * 1024 {
        body.extend_from_slice(record);
    }
    body.extend_from_slice(b"</query></response>");
    let e = query_err(200, body).await;
    assert!(parse_detail(&e).contains("larger than"), "{e}");
}

#[tokio::test]
async fn non_xml_200_answer_is_parse_error_with_excerpt() {
    let e = query_err(200, "Welcome to the login page. Please sign in.").await;
    match &e {
        CrmError::Parse { excerpt, .. } => assert!(
            excerpt.starts_with("Welcome to the login page"),
            "{excerpt}"
        ),
        other => panic!("expected a parse error, got {other:?}"),
    }
    let e = query_err(200, "<html><body>Login</body></html>").await;
    assert!(parse_detail(&e).contains("<html>"), "{e}");
}

#[tokio::test]
async fn non_utf8_answer_is_parse_error() {
    let e = query_err(200, vec![0xff, 0xfe, b'<', b'r', b'/', b'>']).await;
    assert!(parse_detail(&e).contains("UTF-8"), "{e}");
}

#[tokio::test]
async fn corr_mismatch_is_detected() {
    let e = query_err(200, r#"<response corr="someone-else"><query/></response>"#).await;
    assert!(matches!(e, CrmError::CorrMismatch), "{e:?}");
    let e = query_err(200, r#"<response><query/></response>"#).await;
    assert!(matches!(e, CrmError::CorrMismatch), "{e:?}");
}

#[tokio::test]
async fn request_level_error_without_corr_is_still_reported() {
    let e = query_err(
        200,
        r#"<response><return type="error" code="AUTH">login failed</return></response>"#,
    )
    .await;
    assert!(
        matches!(
            e,
            CrmError::Remote {
                code: ErrorCode::Auth,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn http_401_and_500_are_retryable_transport_errors() {
    for status in [401u16, 500] {
        let e = query_err(status, "<html>nope</html>").await;
        assert!(
            matches!(e, CrmError::Transport { status: Some(s), .. } if s == status),
            "{e:?}"
        );
        assert!(e.is_retryable());
    }
}

#[tokio::test]
async fn connection_refused_is_transport_without_status() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let e = client(format!("http://{addr}/crm"))
        .query(&Query::new("Contact"), None)
        .await
        .expect_err("refused");
    assert!(
        matches!(e, CrmError::Transport { status: None, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("CRM.interface could not be reached"),
        "{e}"
    );
}

#[test]
fn invalid_url_is_rejected_at_construction() {
    let e = CrmClient::new(CrmConfig {
        url: "not a url".into(),
        user: "u".into(),
        password: "p".to_string().into(),
        timeout: Duration::from_secs(1),
    })
    .expect_err("invalid");
    assert!(matches!(e, CrmError::Transport { status: None, .. }));
}
