//! Pipeline figures (printed, never asserted): receiver notifications/s with the configured queue
//! vs a no-op queue, and end-to-end latency from a Graph change to the CRM write (p50/p99).
//!
//! `cargo bench --bench pipeline` (embedded back ends), or with `CGC_BENCH_BACKEND=rabbitmq` for
//! RabbitMQ + Redis (needs `bash scripts/services.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cgc_backends::{
    Claim, DeadLetter, Delivery, Envelope, Queue, QueueDepth, QueueError, Store, StoreError,
};
use crm_graph_connector::context::App;
use crm_graph_connector::demo::{Harness, HarnessOptions, MAILBOX, REP_ID, crm_slot, wait_for};
use crm_graph_connector::run::{Roles, Running};
use crm_graph_connector::state::State;
use serde_json::json;

fn options() -> HarnessOptions {
    let mut o = HarnessOptions::default();
    if std::env::var("CGC_BENCH_BACKEND").as_deref() == Ok("rabbitmq") {
        o.queue_toml = "[queue]\nbackend = \"rabbitmq\"\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\npartitions = 8\n".into();
        o.store_toml = "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n".into();
    }
    o.workers = 4;
    o
}

async fn post_notifications(
    url: &str,
    sub_id: &str,
    client_state: &str,
    total: usize,
    batch: usize,
    concurrency: usize,
) -> f64 {
    let client = reqwest::Client::new();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, sent) = (client.clone(), url.to_string(), sent.clone());
        let (sub_id, cs) = (sub_id.to_string(), client_state.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = sent.fetch_add(batch, std::sync::atomic::Ordering::SeqCst);
                if n >= total {
                    break;
                }
                let value: Vec<_> = (0..batch)
                    .map(|i| {
                        let id = format!("AAMkBENCH{}", n + i);
                        json!({"subscriptionId": sub_id, "clientState": cs, "changeType": "updated",
                               "resource": format!("Users/{MAILBOX}/Events/{id}"), "tenantId": "t",
                               "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": id,
                                                "@odata.etag": format!("W/\"{}\"", n + i)}})
                    })
                    .collect();
                let r = client
                    .post(&url)
                    .json(&json!({"value": value}))
                    .send()
                    .await;
                assert!(
                    r.map(|r| r.status().as_u16() == 202).unwrap_or(false),
                    "receiver accepted"
                );
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Counts round trips to the store and the queue (bench only).
#[derive(Default)]
struct Trips {
    store: std::sync::atomic::AtomicU64,
    queue: std::sync::atomic::AtomicU64,
}

struct CountingStore(Arc<dyn Store>, Arc<Trips>);
struct CountingQueue(Arc<dyn Queue>, Arc<Trips>);
/// Accepts everything and keeps nothing: the receiver's cost without a queue.
struct NullQueue;

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
async fn with_queue(
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

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut h = Harness::start(options()).await.expect("harness");
    h.wait_subscribed().await.unwrap();
    h.settle().await.unwrap();

    // 1. End-to-end latency: Outlook edit → CRM write.
    let (date, time) = crm_slot(2, 10);
    let crm_id = h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "bench 0"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "11:00"),
            ("RepID", REP_ID),
        ],
    );
    wait_for("event", Duration::from_secs(20), || async {
        !h.graph.events(MAILBOX).is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let ev_id = h.graph.events(MAILBOX)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut lat = Vec::new();
    for i in 1..=40 {
        let subject = format!("bench {i}");
        let t0 = Instant::now();
        h.graph
            .user_update_event(MAILBOX, &ev_id, json!({"subject": subject}));
        loop {
            let done = h
                .crm
                .record("Contact", crm_id)
                .and_then(|r| r.fields.get("Subject").cloned())
                == Some(subject.clone());
            if done {
                break;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                panic!("edit {i} did not reach CRM");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "end-to-end Graph change -> CRM write: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );

    // 2. Receiver throughput: the configured queue vs a no-op queue, same run, receiver role only.
    let backend = if std::env::var("CGC_BENCH_BACKEND").as_deref() == Ok("rabbitmq") {
        "RabbitMQ confirms"
    } else {
        "embedded queue"
    };
    let sub = h
        .app()
        .state
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.resource.ends_with("/events"))
        .unwrap();
    // The store keeps only an HMAC of the clientState; the Graph simulator knows the secret.
    let client_state = h
        .graph
        .subscriptions()
        .into_iter()
        .find(|s| s["id"].as_str() == Some(sub.id.as_str()))
        .and_then(|s| s["clientState"].as_str().map(str::to_string))
        .unwrap();
    let trips = Arc::new(Trips::default());
    let receiver_only = Roles {
        receiver: true,
        worker: false,
        scheduler: false,
        admin: false,
    };
    for (batch, conc) in [(1usize, 8usize), (10, 8)] {
        let real = with_queue(h.app(), h.app().queue.clone(), &trips, receiver_only).await;
        let url = format!("http://{}/notifications", real.bound.receiver.unwrap());
        let rate = post_notifications(&url, &sub.id, &client_state, 3000, batch, conc).await;
        real.stop().await;
        let null = with_queue(h.app(), Arc::new(NullQueue), &trips, receiver_only).await;
        let url = format!("http://{}/notifications", null.bound.receiver.unwrap());
        let base = post_notifications(&url, &sub.id, &client_state, 3000, batch, conc).await;
        null.stop().await;
        println!(
            "receiver batch={batch} concurrency={conc}: {rate:.0}/s with {backend}, {base:.0}/s with a no-op queue (ratio {:.2})",
            rate / base
        );
    }
    // Drain the fake notifications (their items do not exist: each is one GET and a no-op).
    h.settle().await.unwrap();

    // 3. Worker throughput and round trips per synced change: N real Outlook edits queued while
    //    no worker runs, then one worker process (4 consumers) drains them.
    h.restart(4, receiver_only).await.unwrap();
    let n = 100;
    let day = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive();
    for i in 0..n {
        h.graph.user_create_event(
            MAILBOX,
            json!({"subject": format!("w{i}"),
            "start": {"dateTime": format!("{day}T09:00:00"), "timeZone": "UTC"},
            "end": {"dateTime": format!("{day}T10:00:00"), "timeZone": "UTC"}}),
        );
    }
    h.graph.quiesce().await;
    let trips = Arc::new(Trips::default());
    let counted_queue: Arc<dyn Queue> =
        Arc::new(CountingQueue(h.app().queue.clone(), trips.clone()));
    let writes_before = h.crm.write_log().len();
    let t0 = Instant::now();
    let workers = with_queue(
        h.app(),
        counted_queue,
        &trips,
        Roles {
            receiver: false,
            worker: true,
            scheduler: false,
            admin: false,
        },
    )
    .await;
    wait_for("all edits in CRM", Duration::from_secs(300), || async {
        h.crm
            .records("Contact")
            .iter()
            .filter(|r| r.fields.get("Subject").is_some_and(|s| s.starts_with('w')))
            .count()
            >= n
    })
    .await
    .unwrap();
    loop {
        let d = h.app().queue.depth().await.unwrap();
        if d.ready + d.delayed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    workers.stop().await;
    let events = trips.queue.load(std::sync::atomic::Ordering::Relaxed) as f64 / 2.0; // receive + ack
    let changes = (h.crm.write_log().len() - writes_before) as f64 / 2.0; // Contact insert + ExtKey import
    println!(
        "worker process (4 consumers, {backend}): {events:.0} events in {secs:.2} s = {:.0} events/s; {changes:.0} synced changes",
        events / secs
    );
    println!(
        "round trips per synced change: store {:.1}, queue {:.1} (receive + ack + any retry)",
        trips.store.load(std::sync::atomic::Ordering::Relaxed) as f64 / changes,
        trips.queue.load(std::sync::atomic::Ordering::Relaxed) as f64 / changes
    );
    h.stop().await;
}
