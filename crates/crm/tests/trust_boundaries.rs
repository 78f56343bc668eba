//! The CRM password never follows a redirect, and an answer announcing more than
//! `MAX_DOCUMENT_BYTES` is refused before it is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use cgc_crm::client::xml::MAX_DOCUMENT_BYTES;
use cgc_crm::{CrmClient, CrmConfig, CrmError, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(url: String) -> CrmClient {
    CrmClient::new(CrmConfig {
        url,
        user: "OCSU".into(),
        password: "secret".to_string().into(),
        timeout: Duration::from_secs(5),
    })
    .expect("client")
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn redirect_is_an_error_and_the_password_is_not_sent_on() {
    // The second server records every request; it must never be reached.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let other = serve(Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            "<response><query/></response>"
        }
    }))
    .await;
    for status in [
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let to = format!("{other}/crm?steal=1");
        let base = serve(Router::new().fallback(move || {
            let to = to.clone();
            async move { (status, [(header::LOCATION, to)]).into_response() }
        }))
        .await;
        let e = client(format!("{base}/crm"))
            .query(&Query::new("Contact"), None)
            .await
            .expect_err("a redirect is an error");
        match &e {
            CrmError::Transport {
                status: Some(s),
                excerpt,
            } => {
                assert_eq!(*s, status.as_u16());
                assert!(excerpt.contains("not followed"), "{excerpt}");
                assert!(!excerpt.contains("steal"), "path/query leaked: {excerpt}");
            }
            other => panic!("expected Transport with the 3xx status, got {other:?}"),
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}

#[tokio::test]
async fn announced_oversized_answer_is_refused_before_reading() {
    // Announces a body far over the cap, sends a few bytes and then keeps the connection open:
    // a client that read on would wait for the timeout instead.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(10).any(|w| w == b"</request>") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n<response>",
                    (MAX_DOCUMENT_BYTES as u64) * 1024
                );
                let _ = sock.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let e = client(format!("http://{addr}/crm"))
        .query(&Query::new("Contact"), None)
        .await
        .expect_err("refused");
    match &e {
        CrmError::Parse { detail, .. } => {
            assert!(detail.contains("larger than"), "{detail}");
            assert!(detail.contains("Content-Length"), "{detail}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(!e.is_retryable());
}
