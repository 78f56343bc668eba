//! Starts the roles this process runs (receiver, worker, scheduler, admin API) over the shared
//! [`App`] context, supervises their loops and drains them at shutdown. The only file that names
//! the roles.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::App;
use crate::telemetry::Metrics;
use crate::telemetry::metric;
use crate::telemetry::otlp::MetricsExporter;

/// Which roles this process runs.
#[derive(Clone, Copy, Debug)]
pub struct Roles {
    pub receiver: bool,
    pub worker: bool,
    pub scheduler: bool,
    pub admin: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        receiver: true,
        worker: true,
        scheduler: true,
        admin: true,
    };
}

/// Addresses the running roles listen on (port 0 in the config becomes the real port).
#[derive(Clone, Debug, Default)]
pub struct Bound {
    pub receiver: Option<std::net::SocketAddr>,
    pub admin: Option<std::net::SocketAddr>,
}

/// A started set of roles; `stop` drains and waits.
pub struct Running {
    pub app: Arc<App>,
    pub bound: Bound,
    tracker: TaskTracker,
    /// The OTLP metrics exporter (with `[telemetry] otlp_endpoint`), flushed at stop.
    metrics_export: Option<Arc<MetricsExporter>>,
}

impl Running {
    /// Stops intake first (HTTP servers, scheduler), lets workers finish in-flight events within
    /// the drain deadline, sends the metrics (to an OTLP endpoint) and spans not exported yet,
    /// then returns.
    pub async fn stop(self) {
        self.app.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.app.tuning.drain, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown: drain deadline passed with work still in flight; it will be redelivered"
            );
        }
        if let Some(e) = &self.metrics_export {
            export_metrics_now(&self.app, e).await;
        }
        crate::telemetry::trace::flush().await;
    }
}

/// Exports the metrics to the OTLP endpoint every `tuning.otlp_metrics_interval` until
/// shutdown (the last export is `Running::stop`'s, after the drain).
async fn export_metrics(app: Arc<App>, exporter: Arc<MetricsExporter>) {
    let every = app
        .tuning
        .otlp_metrics_interval
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.shutdown.cancelled() => return,
        }
        // An export in progress is left at shutdown (the stop's export follows the drain).
        tokio::select! {
            _ = export_metrics_now(&app, &exporter) => {}
            _ = app.shutdown.cancelled() => return,
        }
    }
}

/// One export, with the scrape-time gauges read first (a back end slow to answer leaves them
/// at their last value); a failure is the exporter's to count and log, never the service's.
async fn export_metrics_now(app: &App, exporter: &MetricsExporter) {
    let _ = tokio::time::timeout(Duration::from_secs(5), crate::admin::scrape::refresh(app)).await;
    let _ = exporter.export(&app.metrics).await;
}

/// Starts the chosen roles. HTTP listeners are bound before this returns.
pub async fn start(app: Arc<App>, roles: Roles) -> anyhow::Result<Running> {
    let tracker = TaskTracker::new();
    let mut bound = Bound::default();
    let header_timeout = app.tuning.header_read_timeout;
    if roles.receiver {
        let listener = TcpListener::bind(app.config.receiver.listen)
            .await
            .with_context(|| {
                format!(
                    "receiver.listen {} cannot be bound",
                    app.config.receiver.listen
                )
            })?;
        bound.receiver = Some(listener.local_addr()?);
        let tls = match &app.config.receiver.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let router = crate::receiver::router(app.clone());
        let token = app.shutdown.clone();
        tracker.spawn(async move {
            serve_with(listener, router, token, header_timeout, "receiver", tls).await;
        });
    }
    if let Some(addr) = bound.receiver {
        // A receiver bound to port 0 (tests, demo): the public URL follows the real port.
        if app.config.receiver.listen.port() == 0 {
            let _ = app.public_url.set(format!("http://{addr}"));
        }
    }
    if !roles.admin
        && (roles.worker || roles.receiver)
        && let Some(admin) = &app.config.admin
    {
        // Metrics only: the admin API stays with the scheduler. A port already taken (two roles
        // of one host) costs this process its /metrics, not its work.
        match TcpListener::bind(admin.listen).await {
            Ok(listener) => {
                bound.admin = Some(listener.local_addr()?);
                let router = crate::admin::metrics_router(app.clone());
                let token = app.shutdown.clone();
                tracker.spawn(async move {
                    serve(listener, router, token, header_timeout, "metrics").await;
                });
            }
            Err(e) => tracing::warn!(listen = %admin.listen, error = %e,
                "admin.listen cannot be bound: this process serves no /metrics"),
        }
    }
    if roles.admin {
        if let Some(admin) = &app.config.admin {
            let listener = TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("admin.listen {} cannot be bound", admin.listen))?;
            bound.admin = Some(listener.local_addr()?);
            let router = crate::admin::router(app.clone());
            let token = app.shutdown.clone();
            tracker.spawn(async move {
                serve(listener, router, token, header_timeout, "admin API").await;
            });
        }
    }
    app.expects_loops.store(
        roles.worker || roles.scheduler,
        std::sync::atomic::Ordering::SeqCst,
    );
    if roles.worker {
        for n in 0..app.tuning.workers.max(1) {
            let a = app.clone();
            tracker.spawn(supervise(app.clone(), "worker", move || {
                crate::worker::consume(a.clone(), n)
            }));
        }
    }
    if roles.scheduler {
        let a = app.clone();
        tracker.spawn(supervise(app.clone(), "scheduler", move || {
            crate::scheduler::run(a.clone())
        }));
    }
    let metrics_export = match &app.config.telemetry.otlp_endpoint {
        Some(endpoint) => {
            let exporter = Arc::new(MetricsExporter::new(endpoint)?);
            tracker.spawn(export_metrics(app.clone(), exporter.clone()));
            Some(exporter)
        }
        None => None,
    };
    Ok(Running {
        app,
        bound,
        tracker,
        metrics_export,
    })
}

/// Serves HTTP on `listener` until `shutdown`, then lets open requests finish. A client must send
/// its request headers within `header_timeout` (HTTP/1; hyper's timer on), else the connection is
/// closed: slow clients cannot hold sockets. Body and whole-request limits are the router's.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
    what: &'static str,
) {
    serve_with(listener, router, shutdown, header_timeout, what, None).await
}

/// The receiver's built-in TLS listener (`[receiver] tls_cert_file`, `tls_key_file`: a PEM
/// certificate chain and its PEM private key), offering HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(files: &crate::config::TlsFiles) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_key = format!("receiver.tls_cert_file {}", files.cert.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("{cert_key}: cannot be read"))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{cert_key}: not a PEM certificate chain"))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "receiver.tls_key_file {}: cannot be read as a PEM private key",
            files.key.display()
        )
    })?;
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!("{cert_key} and receiver.tls_key_file: the key does not fit the certificate")
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// [`serve`], over TLS when an acceptor is given (a handshake must finish within
/// `header_timeout`, like the request headers).
pub async fn serve_with(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
    what: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(server = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(server = what, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(server = what, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(server = what, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(server = what, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    graceful.shutdown().await;
    tracing::debug!(server = what, "stopped");
}

/// Runs a role's loop and starts it again when it panics (logged and counted as
/// `loop_restarts_total{role}`), until shutdown. `live_loops` counts the loops running now, so
/// readiness can tell a process whose loops died.
pub async fn supervise<F, Fut>(app: Arc<App>, role: &'static str, start: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    supervise_with(&app.shutdown, &app.metrics, &app.live_loops, role, start).await
}

/// [`supervise`] with its parts passed explicitly (tested on its own).
pub async fn supervise_with<F, Fut>(
    shutdown: &CancellationToken,
    metrics: &Metrics,
    live: &std::sync::atomic::AtomicUsize,
    role: &'static str,
    start: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let r = tokio::spawn(start()).await;
        live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        match r {
            Ok(()) => return,
            Err(e) if shutdown.is_cancelled() => {
                tracing::debug!(role, error = %e, "loop ended at shutdown");
                return;
            }
            Err(e) => {
                metrics.inc(metric::LOOP_RESTARTS, &[("role", role)]);
                tracing::error!(role, error = %e, "loop ended unexpectedly (panic); starting it again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod serve_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(header_timeout: Duration) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let token = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router,
            token.clone(),
            header_timeout,
            "test",
        ));
        (addr, token)
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (addr, token) = server(Duration::from_millis(300)).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /notifications HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        // The server closes the connection (EOF, maybe after a 408); without the header timeout
        // this read would wait forever, so the bound only keeps a broken build from hanging.
        let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "connection still open long after the header timeout"
        );
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.contains("hello"), "{text}");
        token.cancel();
    }

    #[tokio::test]
    async fn a_prompt_client_is_served() {
        let (addr, token) = server(Duration::from_millis(300)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("hello"), "{text}");
        token.cancel();
    }
}

#[cfg(test)]
mod supervise_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_loop_is_started_again_and_counted() {
        let shutdown = CancellationToken::new();
        let metrics = Metrics::default();
        let live = AtomicUsize::new(0);
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        supervise_with(&shutdown, &metrics, &live, "worker", move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("injected panic in a worker loop");
                }
            }
        })
        .await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "started again after the panic"
        );
        assert_eq!(metrics.get(metric::LOOP_RESTARTS, &[("role", "worker")]), 1);
        assert_eq!(live.load(Ordering::SeqCst), 0, "no loop left running");
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tls_tests;
