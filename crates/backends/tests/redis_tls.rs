//! `rediss://`: the Redis store over TLS, against a real `redis-server` started here with a TLS
//! port and a certificate of a CA made for the test (trusted through `SSL_CERT_FILE`, which the
//! native certificate store honours). Its own test binary: the environment variable is process
//! wide. Needs `redis-server` (with TLS, as Debian builds it) and `openssl`; fails loudly without.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cgc_backends::{RedisStore, Store};

mod common;
use common::certificates;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-server` with only a TLS port, serving `name`'s certificate.
fn tls_redis(dir: &Path, name: &str, port: u16) -> Server {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .arg("--tls-cert-file")
        .arg(p("server.crt"))
        .arg("--tls-key-file")
        .arg(p("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(p("ca.crt"))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "redis-server must be installed (Debian package redis-server) for the rediss:// test",
        );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "TLS redis-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_stores_over_tls_and_refuses_an_untrusted_server() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), "trusted");
    certificates(dir.path(), "stranger");
    // Before any TLS connection is made: the only extra trust is the test CA.
    // SAFETY: set at the start of this binary's only test, before any thread reads it.
    unsafe { std::env::set_var("SSL_CERT_FILE", dir.path().join("trusted-ca.crt")) };

    let port = free_port();
    let _trusted = tls_redis(dir.path(), "trusted", port);
    let url = format!("rediss://localhost:{port}");
    let store = RedisStore::connect(&url, "cgc-tls-test")
        .await
        .expect("rediss:// connects to a server whose certificate the CA signed");
    store
        .put("ns", "k", b"over tls")
        .await
        .expect("put over TLS");
    assert_eq!(
        store.get("ns", "k").await.expect("get over TLS").as_deref(),
        Some(&b"over tls"[..])
    );

    // A server with a certificate of another CA is refused: no silent fallback to trust-all.
    let other = free_port();
    let _stranger = tls_redis(dir.path(), "stranger", other);
    let r = RedisStore::connect(&format!("rediss://localhost:{other}"), "cgc-tls-test").await;
    let ok = match &r {
        Ok(s) => s.get("ns", "k").await.is_ok(),
        Err(_) => false,
    };
    assert!(!ok, "an untrusted certificate must not be accepted");
}
