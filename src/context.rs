//! The shared context of every role: configuration, back ends, per-tenant clients and tuning.
//! It names no role; `run.rs` starts the roles over it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cgc_backends::{
    EmbeddedQueue, EmbeddedStore, Queue, QueueOptions, RabbitQueue, RedisStore, Store,
};
use cgc_core::{Entity, Policy};
use cgc_crm::{CrmClient, CrmConfig};
use cgc_graph::{GraphClient, GraphConfig};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Conflict, EntityConfig, QueueBackend, StoreBackend, TenantConfig};
use crate::state::State;
use crate::telemetry::Metrics;
use crate::telemetry::requests::{CrmRequests, GraphRequests};

/// One tenant: its configuration and its two protocol clients.
pub struct Tenant {
    pub cfg: TenantConfig,
    pub graph: GraphClient,
    pub crm: CrmClient,
}

impl Tenant {
    /// How one entity is synced for this tenant (e-mail: archived Outlook → CRM only).
    pub fn entity_config(&self, e: Entity) -> EntityConfig {
        match e {
            Entity::Appointment => self.cfg.appointments.entity.clone(),
            Entity::Contact => self.cfg.contacts.clone(),
            Entity::Task => self.cfg.tasks.clone(),
            Entity::Email => EntityConfig {
                direction: self.cfg.emails.direction,
                conflict: Conflict::GraphWins,
                exclude_fields: vec![],
            },
        }
    }

    /// The reconciliation policy of one entity.
    pub fn policy(&self, e: Entity) -> Policy {
        let c = self.entity_config(e);
        Policy {
            direction: c.direction,
            conflict: c.conflict,
            exclude_fields: c.exclude_fields,
        }
    }

    /// The appointment window around `now`.
    pub fn window(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            now - chrono::Duration::days(self.cfg.appointments.past_days as i64),
            now + chrono::Duration::days(self.cfg.appointments.future_days as i64),
        )
    }
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
    /// Role loops (workers, scheduler) running now; see `run::supervise`.
    pub live_loops: std::sync::atomic::AtomicUsize,
    /// This process was started with worker or scheduler loops (readiness then needs one alive).
    pub expects_loops: std::sync::atomic::AtomicBool,
    /// Receiver: slots for requests served at once (load shedding beyond).
    pub receiver_slots: Arc<tokio::sync::Semaphore>,
    /// Receiver: recent subscription look-ups.
    pub subscription_cache: crate::state::SubscriptionCache,
    /// Receiver: rate-limited summary of dropped notifications.
    pub drop_log: crate::telemetry::DropLog,
}

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
    /// Longest time a client may take to send a request's headers; beyond, the connection is
    /// closed (slow clients cannot hold sockets).
    pub header_read_timeout: Duration,
    /// Attempts before an event is parked in the dead letters.
    pub max_attempts: u32,
    /// How often metrics are exported to `[telemetry] otlp_endpoint` (when set).
    pub otlp_metrics_interval: Duration,
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
            header_read_timeout: Duration::from_secs(10),
            max_attempts: 8,
            otlp_metrics_interval: Duration::from_secs(10),
        }
    }
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
                RabbitQueue::connect(config.queue.url.expose_secret(), prefix, opts)
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
                RedisStore::connect(config.store.url.expose_secret(), prefix)
                    .await
                    .context("connecting to Redis (store.url)")?,
            ),
        };
        Self::assemble(config, tuning, queue, store)
    }

    /// Builds the clients over back ends already open (`build`, and the read-only back ends of
    /// the `plan` command).
    pub fn assemble(
        config: Config,
        tuning: Tuning,
        queue: Arc<dyn Queue>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Arc<App>> {
        let metrics = Arc::new(Metrics::default());
        let mut tenants = BTreeMap::new();
        for t in &config.tenants {
            let graph = GraphClient::new(GraphConfig {
                login_url: t.login_url.clone(),
                azure_tenant_id: t.graph_tenant_id.clone(),
                client_id: t.client_id.clone(),
                client_secret: t.client_secret.clone(),
                graph_url: t.graph_url.clone(),
                timeout: Duration::from_secs(30),
            })
            .with_context(|| format!("tenant {}: Graph client", t.id))?
            .with_throttle_share(Arc::new(crate::throttle::StoreThrottle::new(store.clone())))
            .with_observer(Arc::new(GraphRequests {
                metrics: metrics.clone(),
                tenant: t.id.clone(),
            }));
            let crm = CrmClient::new(CrmConfig {
                url: t.crm_url.clone(),
                user: t.crm_user.clone(),
                password: t.crm_password.clone(),
                timeout: Duration::from_secs(30),
            })
            .with_context(|| format!("tenant {}: CRM.interface client", t.id))?
            .with_observer(Arc::new(CrmRequests {
                metrics: metrics.clone(),
                tenant: t.id.clone(),
            }));
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
            metrics,
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
