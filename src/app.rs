//! The running service: configuration, back ends, per-tenant clients, and the roles that run
//! in this process (receiver, worker, scheduler, admin API).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cgc_backends::{
    EmbeddedQueue, EmbeddedStore, Queue, QueueOptions, RabbitQueue, RedisStore, Store,
};
use cgc_crm::{CrmClient, CrmConfig};
use cgc_graph::{GraphClient, GraphConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, QueueBackend, StoreBackend, TenantConfig};
use crate::state::State;
use crate::telemetry::Metrics;

/// One tenant: its configuration and its two protocol clients.
pub struct Tenant {
    pub cfg: TenantConfig,
    pub graph: GraphClient,
    pub crm: CrmClient,
}

pub struct App {
    pub config: Config,
    pub tenants: BTreeMap<String, Arc<Tenant>>,
    pub queue: Arc<dyn Queue>,
    pub state: State,
    pub metrics: Arc<Metrics>,
    /// This process's name as a lease holder and consumer.
    pub instance: String,
    pub shutdown: CancellationToken,
    /// Timers and tuning that tests shorten.
    pub tuning: Tuning,
    /// Where Graph reaches the receiver: `[receiver] public_url`, or the bound address when the
    /// receiver listens on port 0 (tests, demo).
    pub public_url: std::sync::OnceLock<String>,
    /// The latest reconciliation outcomes (kind, entity, reason), newest last, for the demo and
    /// operators; bounded.
    pub recent: std::sync::Mutex<std::collections::VecDeque<(String, String)>>,
    /// Whether an e-mail address has a CRM person, per tenant, with the time it was looked up.
    pub person_cache:
        std::sync::Mutex<std::collections::HashMap<(String, String), (bool, std::time::Instant)>>,
    /// Role loops (workers, scheduler) running now; see [`supervise`].
    pub live_loops: std::sync::atomic::AtomicUsize,
    /// This process was started with worker or scheduler loops (readiness then needs one alive).
    pub expects_loops: std::sync::atomic::AtomicBool,
    /// Receiver: slots for requests served at once (load shedding beyond).
    pub receiver_slots: Arc<tokio::sync::Semaphore>,
    /// Receiver: recent subscription look-ups.
    pub subscription_cache: crate::receiver::SubscriptionCache,
    /// Receiver: rate-limited summary of dropped notifications.
    pub drop_log: crate::receiver::DropLog,
}

/// How long a person look-up (attendee e-mail → CRM person) is reused.
pub const PERSON_CACHE_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct Tuning {
    /// Parallel consumers in the worker role.
    pub workers: usize,
    /// Base delay of the retry ladder.
    pub retry_base: Duration,
    /// Upper bound of one retry delay.
    pub retry_max: Duration,
    /// How often the scheduler wakes to check what is due.
    pub scheduler_tick: Duration,
    /// Time allowed for draining in-flight work at shutdown.
    pub drain: Duration,
    /// Requested subscription lifetime.
    pub subscription_lifetime: chrono::Duration,
    /// Requests the public receiver serves at once; beyond, 503 (load shedding).
    pub receiver_max_in_flight: usize,
    /// Longest time one receiver request (body upload included) may take; beyond, 503.
    pub receiver_request_timeout: Duration,
    /// Attempts before an event is parked in the dead letters.
    pub max_attempts: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            workers: 4,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            scheduler_tick: Duration::from_secs(5),
            drain: Duration::from_secs(20),
            subscription_lifetime: chrono::Duration::minutes(6 * 24 * 60),
            receiver_max_in_flight: 256,
            receiver_request_timeout: Duration::from_secs(10),
            max_attempts: 8,
        }
    }
}

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

impl App {
    /// Opens the back ends and builds the clients. `prefix` names RabbitMQ queues and Redis keys.
    pub async fn build(config: Config, tuning: Tuning, prefix: &str) -> anyhow::Result<Arc<App>> {
        let opts = QueueOptions {
            partitions: config.queue.partitions,
            max_attempts: tuning.max_attempts,
            ..QueueOptions::default()
        };
        let queue: Arc<dyn Queue> = match config.queue.backend {
            QueueBackend::Embedded => {
                std::fs::create_dir_all(&config.queue.path).with_context(|| {
                    format!(
                        "queue.path {} cannot be created",
                        config.queue.path.display()
                    )
                })?;
                Arc::new(
                    EmbeddedQueue::open(&config.queue.path.join("queue.redb"), opts)
                        .context("opening the embedded queue (queue.path)")?,
                )
            }
            QueueBackend::Rabbitmq => Arc::new(
                RabbitQueue::connect(&config.queue.url, prefix, opts)
                    .await
                    .context("connecting to RabbitMQ (queue.url)")?,
            ),
        };
        let store: Arc<dyn Store> = match config.store.backend {
            StoreBackend::Embedded => {
                std::fs::create_dir_all(&config.store.path).with_context(|| {
                    format!(
                        "store.path {} cannot be created",
                        config.store.path.display()
                    )
                })?;
                Arc::new(
                    EmbeddedStore::open(&config.store.path.join("state.redb"))
                        .context("opening the embedded store (store.path)")?,
                )
            }
            StoreBackend::Redis => Arc::new(
                RedisStore::connect(&config.store.url, prefix)
                    .await
                    .context("connecting to Redis (store.url)")?,
            ),
        };
        let mut tenants = BTreeMap::new();
        for t in &config.tenants {
            let graph = GraphClient::new(GraphConfig {
                login_url: t.login_url.clone(),
                tenant_id: t.graph_tenant_id.clone(),
                client_id: t.client_id.clone(),
                client_secret: t.client_secret.clone(),
                graph_url: t.graph_url.clone(),
                timeout: Duration::from_secs(30),
            })
            .with_context(|| format!("tenant {}: Graph client", t.id))?
            .with_throttle_share(Arc::new(crate::throttle::StoreThrottle::new(store.clone())));
            let crm = CrmClient::new(CrmConfig {
                url: t.crm_url.clone(),
                user: t.crm_user.clone(),
                password: t.crm_password.clone(),
                timeout: Duration::from_secs(30),
            })
            .with_context(|| format!("tenant {}: CRM.interface client", t.id))?;
            tenants.insert(
                t.id.clone(),
                Arc::new(Tenant {
                    cfg: t.clone(),
                    graph,
                    crm,
                }),
            );
        }
        let receiver_slots = Arc::new(tokio::sync::Semaphore::new(
            tuning.receiver_max_in_flight.max(1),
        ));
        Ok(Arc::new(App {
            config,
            tenants,
            queue,
            state: State::new(store),
            metrics: Arc::new(Metrics::default()),
            instance: format!("{}-{}", hostname(), uuid::Uuid::now_v7()),
            shutdown: CancellationToken::new(),
            tuning,
            public_url: std::sync::OnceLock::new(),
            person_cache: Default::default(),
            receiver_slots,
            live_loops: Default::default(),
            expects_loops: Default::default(),
            subscription_cache: Default::default(),
            drop_log: Default::default(),
            recent: Default::default(),
        }))
    }

    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    /// Records one reconciliation outcome in the bounded `recent` list.
    pub fn note_outcome(&self, kind: &str, reason: &str) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= 200 {
                r.pop_front();
            }
            r.push_back((kind.to_string(), reason.to_string()));
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .get()
            .cloned()
            .unwrap_or_else(|| self.config.receiver.public_url.clone())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "cgc".into())
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
}

impl Running {
    /// Stops intake first (HTTP servers, scheduler), lets workers finish in-flight events within
    /// the drain deadline, then returns.
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
    }
}

/// Starts the chosen roles. HTTP listeners are bound before this returns.
pub async fn start(app: Arc<App>, roles: Roles) -> anyhow::Result<Running> {
    let tracker = TaskTracker::new();
    let mut bound = Bound::default();
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
        let router = crate::receiver::router(app.clone());
        let token = app.shutdown.clone();
        tracker.spawn(async move {
            let r = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "receiver stopped");
            }
        });
    }
    if let Some(addr) = bound.receiver {
        // A receiver bound to port 0 (tests, demo): the public URL follows the real port.
        if app.config.receiver.listen.port() == 0 {
            let _ = app.public_url.set(format!("http://{addr}"));
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
                let r = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "admin API stopped");
                }
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
    Ok(Running {
        app,
        bound,
        tracker,
    })
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
                metrics.inc("loop_restarts_total", &[("role", role)]);
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
        assert_eq!(metrics.get("loop_restarts_total", &[("role", "worker")]), 1);
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
