//! `amqps://`: the RabbitMQ queue over TLS. The machine's RabbitMQ (127.0.0.1:5672) listens in
//! plain AMQP, so a TLS terminator made here (rustls, a certificate of a CA made for the test and
//! trusted through `SSL_CERT_FILE`) stands in front of it, as a load balancer would in a
//! deployment. Its own test binary: the environment variable is process wide. Needs RabbitMQ and
//! `openssl`; fails loudly without.

use std::sync::Arc;
use std::time::Duration;

use cgc_backends::{Envelope, Queue, QueueOptions, RabbitQueue};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::certificates;

/// Accepts TLS on a free port and forwards the plain bytes to RabbitMQ.
async fn tls_terminator(dir: &std::path::Path, name: &str) -> u16 {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{name}-server.crt")))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}-server.key"))).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    port
}

fn opts() -> QueueOptions {
    QueueOptions {
        partitions: 2,
        max_attempts: 3,
        ..QueueOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_publishes_and_receives_over_tls_and_refuses_an_untrusted_server() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), "trusted");
    certificates(dir.path(), "stranger");
    // SAFETY: set at the start of this binary's only test, before any TLS connection is made.
    unsafe { std::env::set_var("SSL_CERT_FILE", dir.path().join("trusted-ca.crt")) };

    let port = tls_terminator(dir.path(), "trusted").await;
    let prefix = format!("cgc-tls-{}", std::process::id());
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let q = RabbitQueue::connect(&url, &prefix, opts()).await.expect(
        "amqps:// connects through TLS to RabbitMQ (is RabbitMQ up? bash scripts/services.sh)",
    );
    q.publish(vec![Envelope::new(
        "contoso|rep1@contoso.com",
        b"over tls".to_vec(),
    )])
    .await
    .expect("publish confirmed over TLS");
    let d = q
        .receive(Duration::from_secs(10))
        .await
        .expect("receive over TLS")
        .expect("the published envelope");
    assert_eq!(d.envelope.payload, b"over tls".to_vec());
    q.ack(d).await.expect("ack");
    q.delete_topology().await.ok();
    q.close().await;

    // A certificate of another CA is refused (no fallback to trust-all).
    let other = tls_terminator(dir.path(), "stranger").await;
    let r = RabbitQueue::connect(
        &format!("amqps://guest:guest@localhost:{other}/%2f"),
        &format!("{prefix}-x"),
        opts(),
    )
    .await;
    assert!(r.is_err(), "an untrusted certificate must not be accepted");
}
