//! Queue back ends: the same test bodies against the embedded queue and a real RabbitMQ
//! (127.0.0.1:5672, guest/guest). RabbitMQ tests fail when the broker is missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cgc_backends::{EmbeddedQueue, Envelope, Queue, QueueError, QueueOptions, RabbitQueue};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WAIT: Duration = Duration::from_secs(15);
const SHORT: Duration = Duration::from_millis(400);

fn opts(max_attempts: u32) -> QueueOptions {
    QueueOptions {
        max_attempts,
        partitions: 4,
        lease: Duration::from_secs(60),
    }
}

fn env(key: &str, body: &str) -> Envelope {
    Envelope::new(key, body.as_bytes().to_vec())
}

fn body(d: &cgc_backends::Delivery) -> String {
    String::from_utf8_lossy(&d.envelope.payload).into_owned()
}

/// Poll `check` until it returns true (broker counts settle asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never became true: {what}");
}

// ---------- fixtures ----------

struct Embedded {
    _dir: tempfile::TempDir,
    q: Arc<EmbeddedQueue>,
}

fn embedded(o: QueueOptions) -> Embedded {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = EmbeddedQueue::open(&dir.path().join("queue.redb"), o).expect("open embedded queue");
    Embedded {
        _dir: dir,
        q: Arc::new(q),
    }
}

fn prefix() -> String {
    format!(
        "cgctest-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

async fn rabbit_at(prefix: &str, o: QueueOptions) -> RabbitQueue {
    RabbitQueue::connect(AMQP_URL, prefix, o).await.unwrap_or_else(|e| {
        panic!("RabbitMQ not reachable at 127.0.0.1:5672 — start it with rabbitmq-server -detached ({e})")
    })
}

/// Run `body` against a fresh RabbitMQ topology and delete it afterwards, also when the
/// body panics (the panic is re-raised after the cleanup).
async fn with_rabbit<F, Fut>(o: QueueOptions, body: F)
where
    F: FnOnce(Arc<RabbitQueue>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let q = Arc::new(rabbit_at(&prefix(), o).await);
    let outcome = tokio::spawn(body(Arc::clone(&q))).await;
    q.delete_topology().await.expect("delete test topology");
    q.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! both {
    ($name:ident, $max:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let e = super::embedded(opts($max));
                super::$name(e.q.clone()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq() {
                with_rabbit(opts($max), |q| super::$name(q)).await;
            }
        }
    };
}

// ---------- shared test bodies ----------

both!(publish_receive_ack, 8);
async fn publish_receive_ack<Q: Queue>(q: Arc<Q>) {
    let mut e = env("contoso|rep1@contoso.com", r#"{"v":1}"#);
    e.headers.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    q.publish(vec![e.clone()]).await.expect("publish");
    let d = q.receive(WAIT).await.expect("receive").expect("a delivery");
    assert_eq!(d.envelope, e, "envelope comes back unchanged, attempt 0");
    q.ack(d).await.expect("ack");
    assert!(
        q.receive(SHORT).await.expect("receive").is_none(),
        "acked event is gone"
    );
    let depth = q.depth().await.expect("depth");
    assert_eq!(
        (depth.ready, depth.in_flight, depth.delayed, depth.dead),
        (0, 0, 0, 0)
    );
}

both!(same_key_is_exclusive_other_keys_run_in_parallel, 8);
async fn same_key_is_exclusive_other_keys_run_in_parallel<Q: Queue>(q: Arc<Q>) {
    q.publish(vec![env("k1", "a"), env("k1", "b")])
        .await
        .expect("publish");
    let d1 = q.receive(WAIT).await.expect("receive").expect("first");
    assert_eq!(body(&d1), "a");
    q.publish(vec![env("k2", "c")]).await.expect("publish");
    // Second consumer (another task on the same queue): k1 is busy, k2 is not.
    let q2 = Arc::clone(&q);
    let d2 = tokio::spawn(async move { q2.receive(WAIT).await })
        .await
        .expect("task")
        .expect("receive")
        .expect("k2 is free");
    assert_eq!((d2.envelope.key.as_str(), body(&d2).as_str()), ("k2", "c"));
    // Both in flight at once; k1's next event is held back while "a" is in flight.
    assert!(
        q.receive(SHORT).await.expect("receive").is_none(),
        "k1:b must wait for k1:a"
    );
    q.ack(d1).await.expect("ack a");
    let d3 = q
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("k1:b after ack");
    assert_eq!(body(&d3), "b");
    q.ack(d2).await.expect("ack c");
    q.ack(d3).await.expect("ack b");
}

both!(concurrent_consumers_keep_key_exclusive_and_ordered, 8);
async fn concurrent_consumers_keep_key_exclusive_and_ordered<Q: Queue>(q: Arc<Q>) {
    let keys = ["t|a@x.com", "t|b@x.com", "t|c@x.com"];
    let mut batch = Vec::new();
    for i in 0..12 {
        for k in keys {
            batch.push(env(k, &i.to_string()));
        }
    }
    let total = batch.len();
    q.publish(batch).await.expect("publish");
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let overlap = Arc::new(Mutex::new(false));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (q, busy, seen, overlap) =
            (Arc::clone(&q), busy.clone(), seen.clone(), overlap.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(d) = q.receive(Duration::from_secs(2)).await.expect("receive") {
                let key = d.envelope.key.clone();
                {
                    let mut b = busy.lock().expect("lock");
                    assert!(
                        b.insert(key.clone()),
                        "two deliveries of {key} in flight at once"
                    );
                    if b.len() > 1 {
                        *overlap.lock().expect("lock") = true;
                    }
                }
                let n: u32 = body(&d).parse().expect("number");
                seen.lock()
                    .expect("lock")
                    .entry(key.clone())
                    .or_default()
                    .push(n);
                tokio::time::sleep(Duration::from_millis(5)).await;
                busy.lock().expect("lock").remove(&key);
                q.ack(d).await.expect("ack");
            }
        }));
    }
    for t in tasks {
        t.await.expect("consumer task");
    }
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), total);
    for k in keys {
        assert_eq!(seen[k], (0..12).collect::<Vec<_>>(), "order within {k}");
    }
    assert!(
        *overlap.lock().expect("lock"),
        "different keys were never processed in parallel"
    );
}

both!(order_within_a_key_is_kept, 8);
async fn order_within_a_key_is_kept<Q: Queue>(q: Arc<Q>) {
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(env(if i % 3 == 0 { "x" } else { "y" }, &i.to_string()));
    }
    let expected: BTreeMap<String, Vec<String>> = batch.iter().fold(BTreeMap::new(), |mut m, e| {
        m.entry(e.key.clone())
            .or_insert_with(Vec::new)
            .push(String::from_utf8_lossy(&e.payload).into_owned());
        m
    });
    // Two publishes: order also holds across batches.
    let second = batch.split_off(10);
    q.publish(batch).await.expect("publish 1");
    q.publish(second).await.expect("publish 2");
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..20 {
        let d = q.receive(WAIT).await.expect("receive").expect("delivery");
        got.entry(d.envelope.key.clone())
            .or_default()
            .push(body(&d));
        q.ack(d).await.expect("ack");
    }
    assert_eq!(got, expected);
}

both!(retry_redelivers_later_with_attempt_plus_one, 8);
async fn retry_redelivers_later_with_attempt_plus_one<Q: Queue>(q: Arc<Q>) {
    let e = env("k", "r");
    q.publish(vec![e.clone()]).await.expect("publish");
    let d = q.receive(WAIT).await.expect("receive").expect("delivery");
    q.retry(d, Duration::from_millis(300), "graph 503")
        .await
        .expect("retry");
    let depth = q.depth().await.expect("depth");
    assert_eq!(
        (depth.delayed, depth.ready, depth.in_flight),
        (1, 0, 0),
        "waiting in the delayed stage"
    );
    let again = q
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("redelivered");
    assert_eq!(again.envelope.id, e.id);
    assert_eq!(again.envelope.attempt, 1);
    assert_eq!(again.envelope.payload, e.payload);
    q.retry(again, Duration::ZERO, "again")
        .await
        .expect("retry now");
    let third = q
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("redelivered at once");
    assert_eq!(third.envelope.attempt, 2);
    q.ack(third).await.expect("ack");
}

both!(max_attempts_leads_to_a_dead_letter_with_reason, 2);
async fn max_attempts_leads_to_a_dead_letter_with_reason<Q: Queue>(q: Arc<Q>) {
    let e = env("k", "poison");
    q.publish(vec![e.clone()]).await.expect("publish");
    for attempt in 0..=2u32 {
        let d = q.receive(WAIT).await.expect("receive").expect("delivery");
        assert_eq!(d.envelope.attempt, attempt);
        q.retry(d, Duration::ZERO, &format!("failure {attempt}"))
            .await
            .expect("retry");
    }
    assert!(
        q.receive(SHORT).await.expect("receive").is_none(),
        "dead, not redelivered"
    );
    let dead = q.dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.id, e.id);
    assert_eq!(dead[0].reason, "failure 2");
    assert_eq!(dead[0].envelope.attempt, 3);
    assert_eq!(q.depth().await.expect("depth").dead, 1);
    // Listing does not consume.
    assert_eq!(q.dead_letters().await.expect("dead letters").len(), 1);
}

both!(replay_one_then_all, 8);
async fn replay_one_then_all<Q: Queue>(q: Arc<Q>) {
    let events = vec![env("a", "1"), env("b", "2"), env("c", "3")];
    q.publish(events.clone()).await.expect("publish");
    let mut ds = Vec::new();
    for _ in 0..3 {
        ds.push(q.receive(WAIT).await.expect("receive").expect("delivery"));
    }
    for d in ds {
        if d.envelope.key == "b" {
            // An event that was retried before: replay must reset its attempt.
            q.retry(d, Duration::ZERO, "transient")
                .await
                .expect("retry");
            let d = q.receive(WAIT).await.expect("receive").expect("retried");
            assert_eq!(d.envelope.attempt, 1);
            q.dead_letter(d, "manual: b").await.expect("dead letter");
        } else {
            let reason = format!("manual: {}", d.envelope.key);
            q.dead_letter(d, &reason).await.expect("dead letter");
        }
    }
    let dead = q.dead_letters().await.expect("list");
    assert_eq!(dead.len(), 3);
    let b = dead
        .iter()
        .find(|dl| dl.envelope.key == "b")
        .expect("b is dead");
    assert_eq!(b.reason, "manual: b");
    assert_eq!(q.replay(Some("no-such-id")).await.expect("replay none"), 0);
    assert_eq!(q.replay(Some(&events[1].id)).await.expect("replay one"), 1);
    let d = q.receive(WAIT).await.expect("receive").expect("replayed");
    assert_eq!(
        (d.envelope.id.as_str(), d.envelope.attempt),
        (events[1].id.as_str(), 0)
    );
    q.ack(d).await.expect("ack");
    assert_eq!(q.dead_letters().await.expect("list").len(), 2);
    assert_eq!(q.replay(None).await.expect("replay all"), 2);
    let mut ids = HashSet::new();
    for _ in 0..2 {
        let d = q.receive(WAIT).await.expect("receive").expect("replayed");
        assert_eq!(d.envelope.attempt, 0);
        ids.insert(d.envelope.id.clone());
        q.ack(d).await.expect("ack");
    }
    assert_eq!(
        ids,
        HashSet::from([events[0].id.clone(), events[2].id.clone()])
    );
    assert!(q.dead_letters().await.expect("list").is_empty());
}

both!(dropped_delivery_is_redelivered, 8);
async fn dropped_delivery_is_redelivered<Q: Queue>(q: Arc<Q>) {
    let e = env("k", "crash");
    q.publish(vec![e.clone(), env("k", "next")])
        .await
        .expect("publish");
    let q2 = Arc::clone(&q);
    // A worker task that dies (panics) while holding the delivery.
    let worker = tokio::spawn(async move {
        let d = q2.receive(WAIT).await.expect("receive").expect("delivery");
        assert_eq!(body(&d), "crash");
        panic!("worker crashed while processing");
    });
    assert!(worker.await.is_err(), "worker task panicked");
    let d = q
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("redelivered");
    assert_eq!(d.envelope.id, e.id, "the dropped event comes back first");
    assert_eq!(d.envelope.attempt, 0);
    q.ack(d).await.expect("ack");
    let next = q.receive(WAIT).await.expect("receive").expect("next");
    assert_eq!(body(&next), "next");
    q.ack(next).await.expect("ack");
}

both!(depth_counts_every_stage, 8);
async fn depth_counts_every_stage<Q: Queue>(q: Arc<Q>) {
    q.publish(vec![
        env("a", "1"),
        env("a", "2"),
        env("b", "3"),
        env("c", "4"),
        env("d", "5"),
    ])
    .await
    .expect("publish");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(q.receive(WAIT).await.expect("receive").expect("delivery"));
    }
    held.sort_by(|x, y| x.envelope.key.cmp(&y.envelope.key));
    let keys: Vec<String> = held.iter().map(|d| d.envelope.key.clone()).collect();
    assert_eq!(
        keys,
        ["a", "b", "c", "d"],
        "a:2 waits while a:1 is in flight"
    );
    let mut it = held.into_iter();
    let (a, b, c, d) = (
        it.next().expect("a"),
        it.next().expect("b"),
        it.next().expect("c"),
        it.next().expect("d"),
    );
    assert_eq!(body(&a), "1");
    q.retry(c, Duration::from_secs(600), "later")
        .await
        .expect("retry");
    q.dead_letter(d, "bad").await.expect("dead");
    q.ack(b).await.expect("ack");
    // Left: a (in flight), a:2 (waiting for a), c (delayed), d (dead).
    let qq = Arc::clone(&q);
    eventually("depth settles", move || {
        let q = Arc::clone(&qq);
        async move {
            let depth = q.depth().await.expect("depth");
            // RabbitMQ counts a prefetched event as in flight; the sum is what both agree on.
            depth.ready + depth.in_flight == 2
                && depth.in_flight >= 1
                && depth.delayed == 1
                && depth.dead == 1
        }
    })
    .await;
    q.ack(a).await.expect("ack");
}

both!(defer_counts_no_attempt_and_never_dead_letters, 2);
async fn defer_counts_no_attempt_and_never_dead_letters<Q: Queue>(q: Arc<Q>) {
    let e = env("k", "waits for a lease");
    q.publish(vec![e.clone()]).await.expect("publish");
    let d = q.receive(WAIT).await.expect("receive").expect("delivery");
    q.retry(d, Duration::ZERO, "transient")
        .await
        .expect("retry");
    // Far more deferrals than max_attempts (2) and than the delivery limit allow retries.
    for n in 0..20 {
        let d = q.receive(WAIT).await.expect("receive").expect("deferred");
        assert_eq!(d.envelope.id, e.id);
        assert_eq!(d.envelope.attempt, 1, "deferral {n} kept the attempt");
        q.defer(d, Duration::ZERO, "lease held by another worker")
            .await
            .expect("defer");
    }
    assert!(
        q.dead_letters().await.expect("dead letters").is_empty(),
        "deferrals never park the event"
    );
    // A retry after the deferrals counts from the old attempt.
    let d = q.receive(WAIT).await.expect("receive").expect("delivery");
    assert_eq!(d.envelope.attempt, 1);
    q.retry(d, Duration::ZERO, "failure").await.expect("retry");
    let d = q.receive(WAIT).await.expect("receive").expect("retried");
    assert_eq!(d.envelope.attempt, 2);
    q.retry(d, Duration::ZERO, "last failure")
        .await
        .expect("retry");
    assert!(
        q.receive(SHORT).await.expect("receive").is_none(),
        "the third attempt exceeds max_attempts 2: dead"
    );
    let dead = q.dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.attempt, 3);
    assert_eq!(dead[0].reason, "last failure");
}

both!(defer_with_a_delay_waits_and_goes_behind_its_key, 8);
async fn defer_with_a_delay_waits_and_goes_behind_its_key<Q: Queue>(q: Arc<Q>) {
    let first = env("k", "1");
    q.publish(vec![first.clone()]).await.expect("publish");
    let d = q.receive(WAIT).await.expect("receive").expect("delivery");
    q.publish(vec![env("k", "2")]).await.expect("publish");
    q.defer(d, Duration::from_secs(1), "lease held")
        .await
        .expect("defer");
    let depth = q.depth().await.expect("depth");
    assert_eq!(depth.delayed, 1, "waiting in the delayed stage");
    let d = q.receive(WAIT).await.expect("receive").expect("delivery");
    assert_eq!(body(&d), "2", "the key's next event goes meanwhile");
    q.ack(d).await.expect("ack");
    let d = q
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("deferred one");
    assert_eq!(d.envelope.id, first.id);
    assert_eq!(d.envelope.attempt, 0);
    q.ack(d).await.expect("ack");
}

// ---------- embedded only ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_reopen_keeps_ready_inflight_delayed_and_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.redb");
    let a1 = env("a", "a1");
    let held;
    {
        let q = EmbeddedQueue::open(&path, opts(8)).expect("open");
        q.publish(vec![
            a1.clone(),
            env("a", "a2"),
            env("b", "b1"),
            env("c", "c1"),
            env("d", "d1"),
        ])
        .await
        .expect("publish");
        let first = q.receive(WAIT).await.expect("receive").expect("a1");
        assert_eq!(first.envelope.id, a1.id);
        let b = q.receive(WAIT).await.expect("receive").expect("b1");
        let c = q.receive(WAIT).await.expect("receive").expect("c1");
        let d = q.receive(WAIT).await.expect("receive").expect("d1");
        q.ack(b).await.expect("ack");
        q.retry(c, Duration::from_secs(3600), "later")
            .await
            .expect("retry");
        q.dead_letter(d, "bad").await.expect("dead");
        // "Kill": the queue goes away while a1 is still in flight, un-acked.
        held = first;
    }
    let q = EmbeddedQueue::open(&path, opts(8)).expect("reopen");
    let depth = q.depth().await.expect("depth");
    assert_eq!(
        (depth.ready, depth.in_flight, depth.delayed, depth.dead),
        (2, 0, 1, 1)
    );
    let again = q.receive(WAIT).await.expect("receive").expect("a1 again");
    assert_eq!(
        again.envelope.id, a1.id,
        "in-flight event is back, first in its key"
    );
    assert!(
        matches!(q.ack(held).await, Err(QueueError::Other(_))),
        "a delivery of the dead instance cannot settle anything"
    );
    q.ack(again).await.expect("ack");
    let a2 = q.receive(WAIT).await.expect("receive").expect("a2");
    assert_eq!(body(&a2), "a2");
    q.ack(a2).await.expect("ack");
    assert_eq!(q.dead_letters().await.expect("dead")[0].reason, "bad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_delivery_held_past_the_old_lease_is_not_handed_out_again() {
    // The old lease option, short: a slow consumer must keep its delivery regardless.
    let o = QueueOptions {
        lease: Duration::from_millis(100),
        ..opts(8)
    };
    let e = embedded(o);
    let ev = env("k", "slow");
    e.q.publish(vec![ev.clone(), env("k", "next")])
        .await
        .expect("publish");
    let slow = e.q.receive(WAIT).await.expect("receive").expect("delivery");
    assert_eq!(slow.envelope.id, ev.id);
    // The consumer keeps processing for many old leases (Retry-After waits, CRM time-outs).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        e.q.receive(SHORT).await.expect("receive").is_none(),
        "neither the held event nor the next one of its key is handed to a second consumer"
    );
    let depth = e.q.depth().await.expect("depth");
    assert_eq!((depth.in_flight, depth.ready), (1, 1));
    e.q.ack(slow)
        .await
        .expect("the slow consumer can still ack");
    let next = e.q.receive(WAIT).await.expect("receive").expect("next");
    assert_eq!(body(&next), "next");
    e.q.ack(next).await.expect("ack");
    assert!(e.q.receive(SHORT).await.expect("receive").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_killed_process_delivery_is_ready_at_once_on_reopen_with_its_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.redb");
    let ev = env("k", "x");
    let held;
    {
        let q = EmbeddedQueue::open(&path, opts(8)).expect("open");
        q.publish(vec![ev.clone()]).await.expect("publish");
        let d = q.receive(WAIT).await.expect("receive").expect("delivery");
        q.retry(d, Duration::ZERO, "transient")
            .await
            .expect("retry");
        let d = q.receive(WAIT).await.expect("receive").expect("retried");
        assert_eq!(d.envelope.attempt, 1);
        // SIGKILL: the queue goes away while the delivery is held, never settled.
        held = d;
    }
    let q = EmbeddedQueue::open(&path, opts(8)).expect("reopen");
    let again = q
        .receive(Duration::ZERO)
        .await
        .expect("receive")
        .expect("ready at once, without waiting for any lease");
    assert_eq!(again.envelope.id, ev.id);
    assert_eq!(again.envelope.attempt, 1, "attempt count kept");
    drop(held);
    let depth = q.depth().await.expect("depth");
    assert_eq!(
        (depth.ready, depth.in_flight),
        (0, 1),
        "dropping the dead instance's delivery does not put the event back a second time"
    );
    q.ack(again).await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_delivery_limit_parks_a_poison_event() {
    let e = embedded(opts(8));
    let ev = env("k", "poison");
    e.q.publish(vec![ev.clone()]).await.expect("publish");
    for _ in 0..cgc_backends::queue::DELIVERY_LIMIT {
        let d = e.q.receive(WAIT).await.expect("receive").expect("delivery");
        drop(d); // the worker dies every time
    }
    assert!(e.q.receive(SHORT).await.expect("receive").is_none());
    let dead = e.q.dead_letters().await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.id, ev.id);
    assert!(
        dead[0].reason.contains("delivery limit"),
        "{}",
        dead[0].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_receive_wakes_on_publish() {
    let e = embedded(opts(8));
    let q = Arc::clone(&e.q);
    let waiter = tokio::spawn(async move { q.receive(Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    e.q.publish(vec![env("k", "hello")]).await.expect("publish");
    let d = waiter
        .await
        .expect("task")
        .expect("receive")
        .expect("woken by the publish");
    assert_eq!(body(&d), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_publishes_are_each_durable_once_and_in_order_per_key() {
    // Publishes that arrive together share one commit (group commit); each is answered only
    // once its own envelopes are on disk, none is lost or doubled, and one key keeps its order.
    let e = embedded(opts(8));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let q = Arc::clone(&e.q);
        tasks.push(tokio::spawn(async move {
            let key = format!("k{}", i % 10);
            q.publish(vec![
                env(&key, &format!("{i:03}-a")),
                env(&key, &format!("{i:03}-b")),
            ])
            .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("publish answered Ok");
    }
    let Embedded { _dir: dir, q } = e;
    let path = dir.path().join("queue.redb");
    drop(q);
    let q = EmbeddedQueue::open(&path, opts(8)).expect("reopen");
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(d) = q
        .receive(Duration::from_millis(200))
        .await
        .expect("receive")
    {
        seen.entry(d.envelope.key.clone())
            .or_default()
            .push(body(&d));
        q.ack(d).await.expect("ack");
    }
    let total: usize = seen.values().map(Vec::len).sum();
    assert_eq!(total, 400, "every envelope survives a reopen, once");
    for (key, bodies) in &seen {
        for pair in bodies.chunks(2) {
            assert!(
                pair[0].ends_with("-a") && pair[1].ends_with("-b") && pair[0][..3] == pair[1][..3],
                "one publish's envelopes stay together and in order for {key}: {bodies:?}"
            );
        }
    }
}

// ---------- RabbitMQ only ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_consumer_event_goes_to_the_standby() {
    let p = prefix();
    let a = rabbit_at(&p, opts(8)).await;
    let b = rabbit_at(&p, opts(8)).await; // single-active-consumer standby
    let e = env("contoso|rep1@contoso.com", "x");
    b.publish(vec![e.clone()]).await.expect("publish");
    let d = a
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("the first consumer is active");
    assert_eq!(d.envelope.id, e.id);
    assert!(
        b.receive(SHORT).await.expect("receive").is_none(),
        "standby gets nothing while a lives"
    );
    a.close().await; // consumer process killed before the ack
    drop(d);
    let again = b
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("redelivered to the standby");
    assert_eq!(again.envelope.id, e.id);
    b.ack(again).await.expect("ack");
    b.delete_topology().await.expect("cleanup");
    b.close().await;
}

#[tokio::test]
async fn rabbitmq_unreachable_is_a_typed_error() {
    let r = RabbitQueue::connect("amqp://guest:guest@127.0.0.1:1/%2f", &prefix(), opts(8)).await;
    assert!(
        matches!(r, Err(QueueError::Unavailable(_))),
        "{:?}",
        r.err()
    );
}

/// A TCP proxy in front of RabbitMQ that can cut every connection and refuse new ones.
struct ChaosProxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    async fn start(upstream: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                conns2.lock().expect("lock").push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self {
            port,
            up,
            conns,
            accept,
        }
    }

    fn outage(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.outage();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_reconnects_after_a_connection_loss() {
    let proxy = ChaosProxy::start("127.0.0.1:5672").await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let p = prefix();
    let q = RabbitQueue::connect(&url, &p, opts(8)).await.unwrap_or_else(|e| {
        panic!("RabbitMQ not reachable at 127.0.0.1:5672 — start it with rabbitmq-server -detached ({e})")
    });
    q.publish(vec![env("k", "before")]).await.expect("publish");
    let d = q.receive(WAIT).await.expect("receive").expect("delivery");
    q.ack(d).await.expect("ack");

    proxy.outage();
    // While the broker is unreachable, publish fails fast with Unavailable (never hangs).
    eventually("publish reports the outage", || {
        let q = &q;
        async move {
            let r =
                tokio::time::timeout(Duration::from_secs(15), q.publish(vec![env("k", "during")]))
                    .await
                    .expect("publish must not hang");
            matches!(r, Err(QueueError::Unavailable(_)))
        }
    })
    .await;
    assert!(matches!(q.depth().await, Err(QueueError::Unavailable(_))));

    proxy.restore();
    // Reconnected in the background: publish and consume work again.
    eventually("publish works after the outage", || {
        let q = &q;
        async move { q.publish(vec![env("k", "after")]).await.is_ok() }
    })
    .await;
    // At least once: an ack the outage cut off (the proxy may drop it before the broker has
    // it) brings "before" back once; "after" must arrive, and nothing else.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("after") && seen.len() < 3 {
        let d = q
            .receive(WAIT)
            .await
            .expect("receive")
            .expect("delivery after reconnect");
        seen.push(body(&d).to_string());
        q.ack(d).await.expect("ack");
    }
    assert_eq!(seen.last().map(String::as_str), Some("after"), "{seen:?}");
    assert!(
        seen[..seen.len() - 1].iter().all(|b| b == "before"),
        "only the cut-off ack's message comes back: {seen:?}"
    );
    q.delete_topology().await.expect("cleanup");
    q.close().await;
}
