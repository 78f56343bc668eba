//! The receiver's built-in TLS listener, with certificates made by `openssl`.

use super::*;
use crate::config::TlsFiles;
use std::process::Command;

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (is it installed?)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA and a certificate for 127.0.0.1 it signed, made by `openssl`.
fn certificates(dir: &std::path::Path) -> TlsFiles {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cgc test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-CAcreateserial",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-extfile",
            "ext.cnf",
            "-out",
            "tls.crt",
        ],
        dir,
    );
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    }
}

#[tokio::test]
async fn the_built_in_tls_listener_serves_https_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let files = certificates(dir.path());
    let acceptor = tls_acceptor(&files).expect("the PEM files load");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let token = CancellationToken::new();
    tokio::spawn(serve_with(
        listener,
        router,
        token.clone(),
        Duration::from_secs(5),
        "test",
        Some(acceptor),
    ));
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let body = client
        .get(format!("https://127.0.0.1:{}/", addr.port()))
        .send()
        .await
        .expect("an HTTPS request succeeds")
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/", addr.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP gets no answer: {plain:?}");
    token.cancel();
}

#[tokio::test]
async fn a_receiver_with_tls_files_in_its_config_answers_over_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let files = certificates(dir.path());
    // The receiver alone: nothing here calls Graph or CRM.
    let text = format!(
        r#"
[receiver]
listen = "127.0.0.1:0"
public_url = "https://127.0.0.1:8443"
tls_cert_file = {cert:?}
tls_key_file = {key:?}
[queue]
path = {queue:?}
[store]
path = {store:?}
[[tenants]]
id = "t1"
graph_tenant_id = "g"
client_id = "c"
client_secret = "s"
domains = ["a.com"]
crm_url = "http://127.0.0.1:1/crm"
crm_user = "u"
crm_password = "p"
"#,
        cert = files.cert.display().to_string(),
        key = files.key.display().to_string(),
        queue = dir.path().join("queue").display().to_string(),
        store = dir.path().join("state").display().to_string(),
    );
    let config = crate::config::Config::parse(&text, &|_| None).unwrap();
    assert!(config.receiver.tls.is_some(), "the keys are read");
    let app = App::build(config, crate::context::Tuning::default(), "tls")
        .await
        .unwrap();
    let running = start(
        app,
        Roles {
            receiver: true,
            worker: false,
            scheduler: false,
            admin: false,
        },
    )
    .await
    .unwrap();
    let port = running.bound.receiver.unwrap().port();
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let r = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("the receiver speaks TLS");
    assert!(r.status().is_success(), "{r:?}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "no plain HTTP beside TLS: {plain:?}");
    running.stop().await;
}

#[test]
fn a_key_that_does_not_fit_or_a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = certificates(dir.path());
    let wrong = TlsFiles {
        cert: files.cert.clone(),
        key: dir.path().join("ca.key"),
    };
    let e = format!(
        "{:#}",
        tls_acceptor(&wrong).err().expect("a wrong key is refused")
    );
    assert!(e.contains("does not fit"), "{e}");
    let missing = TlsFiles {
        cert: dir.path().join("nope.crt"),
        key: files.key,
    };
    let e = format!(
        "{:#}",
        tls_acceptor(&missing)
            .err()
            .expect("a missing file is refused")
    );
    assert!(e.contains("receiver.tls_cert_file"), "{e}");
}
