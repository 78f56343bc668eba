//! Shared pieces: round-trip counters around the store and the queue, a no-op queue, the same
//! app with another queue, percentiles, and the RabbitMQ + Redis configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cgc_backends::{
    Claim, DeadLetter, Delivery, Envelope, Queue, QueueDepth, QueueError, Store, StoreError,
};
use crm_graph_connector::context::App;
use crm_graph_connector::demo::{Harness, HarnessOptions};
use crm_graph_connector::run::{Roles, Running};
use crm_graph_connector::state::State;

pub const RABBIT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Harness options; RabbitMQ + Redis when `rabbit`.
pub fn options(rabbit: bool, workers: usize) -> HarnessOptions {
    let mut o = HarnessOptions::default();
    if rabbit {
        o.queue_toml =
            format!("[queue]\nbackend = \"rabbitmq\"\nurl = \"{RABBIT_URL}\"\npartitions = 8\n");
        o.store_toml = format!("[store]\nbackend = \"redis\"\nurl = \"{REDIS_URL}\"\n");
    }
    o.workers = workers;
    o
}

pub const RECEIVER_ONLY: Roles = Roles {
    receiver: true,
    worker: false,
    scheduler: false,
    admin: false,
};
pub const WORKER_ONLY: Roles = Roles {
    receiver: false,
    worker: true,
    scheduler: false,
    admin: false,
};

pub fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Counts round trips to the store and the queue (bench only).
/// Counts round trips to the store and the queue (bench only).
#[derive(Default)]
pub struct Trips {
    pub store: std::sync::atomic::AtomicU64,
    pub queue: std::sync::atomic::AtomicU64,
    /// Envelopes published and their bytes (payload + key + id), for the broker ceiling.
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
}

pub struct CountingStore(pub Arc<dyn Store>, pub Arc<Trips>);
pub struct CountingQueue(pub Arc<dyn Queue>, pub Arc<Trips>);
/// Accepts everything and keeps nothing: the receiver's cost without a queue.
pub struct NullQueue;

macro_rules! counted {
    ($self:ident, $field:ident, $call:expr) => {{
        $self
            .1
            .$field
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        $call
    }};
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn claim(&self, k: &str, l: Duration) -> Result<Claim, StoreError> {
        counted!(self, store, self.0.claim(k, l).await)
    }
    async fn complete(&self, k: &str, r: Duration) -> Result<(), StoreError> {
        counted!(self, store, self.0.complete(k, r).await)
    }
    async fn release(&self, k: &str) -> Result<(), StoreError> {
        counted!(self, store, self.0.release(k).await)
    }
    async fn lease(&self, n: &str, h: &str, t: Duration) -> Result<bool, StoreError> {
        counted!(self, store, self.0.lease(n, h, t).await)
    }
    async fn unlease(&self, n: &str, h: &str) -> Result<(), StoreError> {
        counted!(self, store, self.0.unlease(n, h).await)
    }
    async fn get(&self, ns: &str, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        counted!(self, store, self.0.get(ns, k).await)
    }
    async fn put(&self, ns: &str, k: &str, v: &[u8]) -> Result<(), StoreError> {
        counted!(self, store, self.0.put(ns, k, v).await)
    }
    async fn delete(&self, ns: &str, k: &str) -> Result<(), StoreError> {
        counted!(self, store, self.0.delete(ns, k).await)
    }
    async fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        counted!(self, store, self.0.list(ns).await)
    }
    async fn append(&self, ns: &str, e: &[u8], c: usize) -> Result<(), StoreError> {
        counted!(self, store, self.0.append(ns, e, c).await)
    }
    async fn tail(&self, ns: &str, l: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        counted!(self, store, self.0.tail(ns, l).await)
    }
    async fn lease_holder(&self, n: &str) -> Result<Option<String>, StoreError> {
        counted!(self, store, self.0.lease_holder(n).await)
    }
    async fn put_ttl(&self, ns: &str, k: &str, v: &[u8], t: Duration) -> Result<(), StoreError> {
        counted!(self, store, self.0.put_ttl(ns, k, v, t).await)
    }
}

#[async_trait::async_trait]
impl Queue for CountingQueue {
    async fn publish(&self, b: Vec<Envelope>) -> Result<(), QueueError> {
        let bytes: usize = b
            .iter()
            .map(|e| e.payload.len() + e.key.len() + e.id.len())
            .sum();
        self.1
            .published
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        self.1
            .published_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        counted!(self, queue, self.0.publish(b).await)
    }
    async fn receive(&self, w: Duration) -> Result<Option<Delivery>, QueueError> {
        let r = self.0.receive(w).await;
        if matches!(r, Ok(Some(_))) {
            self.1
                .queue
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
    async fn ack(&self, d: Delivery) -> Result<(), QueueError> {
        counted!(self, queue, self.0.ack(d).await)
    }
    async fn retry(&self, d: Delivery, w: Duration, r: &str) -> Result<(), QueueError> {
        counted!(self, queue, self.0.retry(d, w, r).await)
    }
    async fn defer(&self, d: Delivery, w: Duration, r: &str) -> Result<(), QueueError> {
        counted!(self, queue, self.0.defer(d, w, r).await)
    }
    async fn dead_letter(&self, d: Delivery, r: &str) -> Result<(), QueueError> {
        counted!(self, queue, self.0.dead_letter(d, r).await)
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.0.dead_letters().await
    }
    async fn replay(&self, id: Option<&str>) -> Result<usize, QueueError> {
        self.0.replay(id).await
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.0.depth().await
    }
}

#[async_trait::async_trait]
impl Queue for NullQueue {
    async fn publish(&self, _: Vec<Envelope>) -> Result<(), QueueError> {
        Ok(())
    }
    async fn receive(&self, w: Duration) -> Result<Option<Delivery>, QueueError> {
        tokio::time::sleep(w).await;
        Ok(None)
    }
    async fn ack(&self, _: Delivery) -> Result<(), QueueError> {
        Ok(())
    }
    async fn retry(&self, _: Delivery, _: Duration, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn defer(&self, _: Delivery, _: Duration, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn dead_letter(&self, _: Delivery, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(vec![])
    }
    async fn replay(&self, _: Option<&str>) -> Result<usize, QueueError> {
        Ok(0)
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        Ok(QueueDepth::default())
    }
}

/// The same app with another queue (and a counting store), roles started on fresh ports.
pub async fn with_queue(
    app: &Arc<App>,
    queue: Arc<dyn Queue>,
    trips: &Arc<Trips>,
    roles: Roles,
) -> Running {
    let mut config = app.config.clone();
    config.receiver.listen = "127.0.0.1:0".parse().unwrap();
    config.admin = None;
    let other = Arc::new(App {
        config,
        tenants: app.tenants.clone(),
        queue,
        state: State::new(Arc::new(CountingStore(
            app.state.store().clone(),
            trips.clone(),
        ))),
        metrics: app.metrics.clone(),
        instance: format!("{}-bench", app.instance),
        shutdown: tokio_util::sync::CancellationToken::new(),
        tuning: app.tuning.clone(),
        public_url: std::sync::OnceLock::new(),
        person_cache: Default::default(),
        recent: Default::default(),
        live_loops: Default::default(),
        expects_loops: Default::default(),
        receiver_slots: Arc::new(tokio::sync::Semaphore::new(
            app.tuning.receiver_max_in_flight.max(1),
        )),
        subscription_cache: Default::default(),
        drop_log: Default::default(),
    });
    crm_graph_connector::run::start(other, roles).await.unwrap()
}

/// Percentile of sorted values; NaN when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until the queue has been empty for half a second (at most 60 s; the harness's
/// `settle` also waits out a CRM poll period, which never comes with many mailboxes polled).
pub async fn quiet(h: &Harness) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut calm = 0;
    while calm < 5 && Instant::now() < deadline {
        h.graph.quiesce().await;
        let idle = h
            .app()
            .queue
            .depth()
            .await
            .is_ok_and(|d| d.ready + d.in_flight + d.delayed == 0);
        calm = if idle { calm + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The harness's `settle` (queue empty through a CRM poll period); on a loaded machine that can
/// time out although the queue is empty: then [`quiet`].
pub async fn settle(h: &Harness) {
    if h.settle().await.is_err() {
        quiet(h).await;
    }
}
