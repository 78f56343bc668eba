//! RabbitMQ queue (lapin).
//!
//! Topology, all names under `prefix`:
//! * `<prefix>.p.<n>` for n in 0..partitions: quorum queues, `x-single-active-consumer`,
//!   `x-delivery-limit` (safety net), broker dead-lettering to `<prefix>.dead`.
//!   An event goes to partition `partition_of(key, partitions)` via the default exchange.
//! * retry ladder: per tier a fanout exchange and a classic queue `<prefix>.wait.<ms>` with
//!   `x-message-ttl = ms` that dead-letters to the default exchange with the event's original
//!   routing key, i.e. back to its partition queue.
//! * `<prefix>.dead`: classic queue, the parking lot; reason in the `x-cgc-reason` header.
//!
//! Message mapping: body = payload, `message_id` = envelope id, headers `x-cgc-key`,
//! `x-cgc-attempt`, `x-cgc-headers` (the envelope headers as a nested table); informational
//! `x-cgc-last-error` (retry reason), `x-cgc-deferred` (defer reason), `x-cgc-reason` and
//! `x-cgc-dead-at` (dead letters).
//!
//! Within the process, deliveries of all partitions land in one local buffer that hands
//! out the oldest event whose key has nothing in flight (per-key exclusivity between the
//! consumers of one process; single-active-consumer gives it between processes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Notify;

use super::fifo::KeyedFifo;
use super::{
    DELIVERY_LIMIT, DeadLetter, Delivery, DeliveryHandle, Envelope, Queue, QueueDepth, QueueError,
    QueueOptions, partition_of,
};

/// Retry ladder (milliseconds): a retry delay is rounded up to the next tier (the last tier
/// caps it); a zero delay goes straight back to the partition queue.
pub const RETRY_TIERS_MS: [u64; 7] = [1_000, 5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000];
/// Un-acked deliveries per partition consumer.
const PREFETCH: u16 = 8;
/// Upper bound for any single broker round trip (publish + confirm, declare, get).
const OP_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const H_KEY: &str = "x-cgc-key";
const H_ATTEMPT: &str = "x-cgc-attempt";
const H_HEADERS: &str = "x-cgc-headers";
const H_REASON: &str = "x-cgc-reason";
const H_DEAD_AT: &str = "x-cgc-dead-at";
const H_LAST_ERROR: &str = "x-cgc-last-error";
const H_DEFERRED: &str = "x-cgc-deferred";

/// The tier a retry delay is rounded up to (None: no wait, straight back).
pub fn retry_tier(delay: Duration) -> Option<u64> {
    if delay.is_zero() {
        return None;
    }
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    Some(
        RETRY_TIERS_MS
            .iter()
            .copied()
            .find(|t| *t >= ms)
            .unwrap_or(RETRY_TIERS_MS[RETRY_TIERS_MS.len() - 1]),
    )
}

struct Conn {
    connection: Connection,
    publish: Channel,
    /// Holds the partition consumers (they also keep it open).
    _consume: Channel,
}

struct Pending {
    envelope: Envelope,
    acker: Acker,
    /// Times this process handed the event out and got it back unsettled (dropped).
    local_redeliveries: u32,
}

/// A dropped delivery goes back into the local buffer (keeping its place) this many times;
/// after that it is nacked to the broker, whose `x-delivery-limit` then counts it.
const LOCAL_REDELIVERIES: u32 = 3;

#[derive(Default)]
struct Buffer {
    generation: u64,
    next: u64,
    items: std::collections::HashMap<u64, Pending>,
    fifo: KeyedFifo,
    /// key -> token of the delivery handed out for it.
    inflight: std::collections::HashMap<String, u64>,
}

struct Inner {
    url: String,
    prefix: String,
    opts: QueueOptions,
    conn: Mutex<Option<Arc<Conn>>>,
    buf: Mutex<Buffer>,
    notify: Notify,
    closed: AtomicBool,
    shutdown: Notify,
}

/// The RabbitMQ queue. Share it between the consumers of one process with an `Arc`.
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

pub(crate) struct Handle {
    inner: Arc<Inner>,
    key: String,
    token: u64,
    acker: Option<Acker>,
    /// Copy of the envelope, to put a dropped delivery back into the buffer.
    envelope: Option<Envelope>,
    generation: u64,
    local_redeliveries: u32,
}

/// What settling needs from a handle: key, token, acker.
type Settling = (String, u64, Option<Acker>);

impl Handle {
    fn disarm(&mut self) -> Settling {
        self.envelope = None;
        (std::mem::take(&mut self.key), self.token, self.acker.take())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        let redeliveries = self.local_redeliveries + 1;
        // Not settled: while the channel lives, put it back where it was (order kept).
        if let Some(envelope) = self.envelope.take()
            && redeliveries < LOCAL_REDELIVERIES
            && acker.usable()
        {
            let mut b = self.inner.buf();
            if b.generation == self.generation && b.inflight.get(&key) == Some(&self.token) {
                b.inflight.remove(&key);
                b.items.insert(
                    self.token,
                    Pending {
                        envelope,
                        acker,
                        local_redeliveries: redeliveries,
                    },
                );
                b.fifo.push(self.token, &key);
                b.fifo.set_busy(&key, false);
                drop(b);
                self.inner.notify.notify_waiters();
                return;
            }
            drop(b);
        }
        // Otherwise nack with requeue (the broker counts it), then free the key.
        let inner = Arc::clone(&self.inner);
        let token = self.token;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let opts = BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    };
                    if tokio::time::timeout(OP_TIMEOUT, acker.nack(opts))
                        .await
                        .is_err()
                    {
                        tracing::warn!("rabbitmq: nack of a dropped delivery timed out");
                    }
                    inner.release(&key, token);
                });
            }
            Err(_) => inner.release(&key, token),
        }
    }
}

fn unavailable(what: &str) -> impl FnOnce(lapin::Error) -> QueueError + '_ {
    move |e| QueueError::Unavailable(format!("rabbitmq {what}: {e}"))
}

async fn timed<T>(
    what: &str,
    fut: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r.map_err(unavailable(what)),
        Err(_) => Err(QueueError::Unavailable(format!(
            "rabbitmq {what}: no answer within {}s",
            OP_TIMEOUT.as_secs()
        ))),
    }
}

fn ls(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn value_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn value_u64(v: &AMQPValue) -> Option<u64> {
    match *v {
        AMQPValue::ShortShortUInt(n) => Some(u64::from(n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(n)),
        AMQPValue::LongUInt(n) => Some(u64::from(n)),
        AMQPValue::Timestamp(n) => Some(n),
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

fn properties(envelope: &Envelope, extra: &[(&str, String)]) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(H_KEY.into(), ls(&envelope.key));
    headers.insert(H_ATTEMPT.into(), AMQPValue::LongUInt(envelope.attempt));
    let mut user = FieldTable::default();
    for (k, v) in &envelope.headers {
        user.insert(ShortString::from(k.as_str()), ls(v));
    }
    headers.insert(H_HEADERS.into(), AMQPValue::FieldTable(user));
    for (k, v) in extra {
        headers.insert(ShortString::from(*k), ls(v));
    }
    BasicProperties::default()
        .with_message_id(ShortString::from(envelope.id.as_str()))
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn envelope_of(props: &BasicProperties, data: &[u8]) -> Result<Envelope, QueueError> {
    let empty = FieldTable::default();
    let headers = props.headers().as_ref().unwrap_or(&empty).inner();
    let key = headers.get(H_KEY).and_then(value_str).ok_or_else(|| {
        QueueError::Corrupt(format!("rabbitmq message without the {H_KEY} header"))
    })?;
    let attempt = headers
        .get(H_ATTEMPT)
        .and_then(value_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let mut user = BTreeMap::new();
    if let Some(AMQPValue::FieldTable(t)) = headers.get(H_HEADERS) {
        for (k, v) in t.inner() {
            if let Some(v) = value_str(v) {
                user.insert(k.as_str().to_owned(), v);
            }
        }
    }
    let id = props
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .ok_or_else(|| QueueError::Corrupt("rabbitmq message without message_id".into()))?;
    Ok(Envelope {
        id,
        key,
        payload: data.to_vec(),
        headers: user,
        attempt,
    })
}

fn dead_letter_of(props: &BasicProperties, data: &[u8]) -> Result<DeadLetter, QueueError> {
    let envelope = envelope_of(props, data)?;
    let empty = FieldTable::default();
    let headers = props.headers().as_ref().unwrap_or(&empty).inner();
    let reason = headers
        .get(H_REASON)
        .and_then(value_str)
        .unwrap_or_else(|| {
            // Dead-lettered by the broker (delivery limit, rejected as unreadable, …).
            let why = headers
                .get("x-first-death-reason")
                .and_then(value_str)
                .unwrap_or_else(|| "unknown".into());
            format!("dead-lettered by RabbitMQ: {why}")
        });
    let at = headers
        .get(H_DEAD_AT)
        .and_then(value_str)
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|d| d.with_timezone(&Utc))
        .or_else(|| {
            // Broker dead-lettering: the time of the first x-death entry.
            let Some(AMQPValue::FieldArray(deaths)) = headers.get("x-death") else {
                return None;
            };
            deaths.as_slice().iter().find_map(|d| match d {
                AMQPValue::FieldTable(t) => t
                    .inner()
                    .get("time")
                    .and_then(value_u64)
                    .and_then(|s| i64::try_from(s).ok())
                    .and_then(|s| DateTime::from_timestamp(s, 0)),
                _ => None,
            })
        })
        .unwrap_or_else(Utc::now);
    Ok(DeadLetter {
        envelope,
        reason,
        at,
    })
}

impl Inner {
    fn buf(&self) -> MutexGuard<'_, Buffer> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> Result<Arc<Conn>, QueueError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match conn {
            Some(c) if c.connection.status().connected() => Ok(c),
            _ => Err(QueueError::Unavailable(
                "RabbitMQ connection lost; reconnecting in the background".into(),
            )),
        }
    }

    fn partition_queue(&self, key: &str) -> String {
        format!(
            "{}.p.{}",
            self.prefix,
            partition_of(key, self.opts.partitions)
        )
    }

    fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    fn wait_name(&self, tier_ms: u64) -> String {
        format!("{}.wait.{tier_ms}", self.prefix)
    }

    /// Free the key of a settled or dropped delivery.
    fn release(&self, key: &str, token: u64) {
        let mut b = self.buf();
        if b.inflight.get(key) == Some(&token) {
            b.inflight.remove(key);
            b.fifo.set_busy(key, false);
        }
        drop(b);
        self.notify.notify_waiters();
    }

    fn take(self: &Arc<Self>) -> Option<Delivery> {
        let mut b = self.buf();
        let (seq, key) = b.fifo.pop_free()?;
        let Some(p) = b.items.remove(&seq) else {
            b.fifo.set_busy(&key, false);
            return None;
        };
        b.inflight.insert(key.clone(), seq);
        let generation = b.generation;
        drop(b);
        Some(Delivery {
            envelope: p.envelope.clone(),
            handle: DeliveryHandle::Rabbit(Handle {
                inner: Arc::clone(self),
                key,
                token: seq,
                acker: Some(p.acker),
                envelope: Some(p.envelope),
                generation,
                local_redeliveries: p.local_redeliveries,
            }),
        })
    }

    /// Connect, declare the topology, start consuming. Returns the live connection.
    async fn connect_once(self: &Arc<Self>) -> Result<Arc<Conn>, QueueError> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("cgc-{}", self.prefix)));
        let connection = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&self.url, props),
        )
        .await
        {
            Ok(r) => r.map_err(unavailable("connect"))?,
            Err(_) => {
                return Err(QueueError::Unavailable(
                    "rabbitmq connect: timed out".into(),
                ));
            }
        };
        let setup = timed("open channel", connection.create_channel()).await?;
        self.declare(&setup).await?;
        let _ = setup.close(200, "OK".into()).await;

        let publish = timed("open channel", connection.create_channel()).await?;
        timed(
            "confirm.select",
            publish.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;

        let consume = timed("open channel", connection.create_channel()).await?;
        timed(
            "basic.qos",
            consume.basic_qos(PREFETCH, BasicQosOptions { global: false }),
        )
        .await?;
        let generation = {
            let mut b = self.buf();
            b.generation += 1;
            b.generation
        };
        let tag_base = uuid::Uuid::new_v4().simple().to_string();
        for n in 0..self.opts.partitions.max(1) {
            let queue = format!("{}.p.{n}", self.prefix);
            let consumer = timed(
                "basic.consume",
                consume.basic_consume(
                    queue.as_str().into(),
                    format!("cgc-{tag_base}-{n}").into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            let inner = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut consumer = consumer;
                while let Some(item) = consumer.next().await {
                    let Some(inner) = inner.upgrade() else { break };
                    match item {
                        Ok(d) => inner.accept(generation, d).await,
                        Err(e) => {
                            tracing::warn!(error = %e, queue = %queue, "rabbitmq consumer stopped");
                            break;
                        }
                    }
                }
            });
        }
        Ok(Arc::new(Conn {
            connection,
            publish,
            _consume: consume,
        }))
    }

    async fn accept(&self, generation: u64, d: lapin::message::Delivery) {
        match envelope_of(&d.properties, &d.data) {
            Ok(envelope) => {
                let mut b = self.buf();
                if b.generation != generation {
                    return; // stale connection; the broker requeues it anyway
                }
                b.next += 1;
                let seq = b.next;
                b.fifo.push(seq, &envelope.key);
                b.items.insert(
                    seq,
                    Pending {
                        envelope,
                        acker: d.acker,
                        local_redeliveries: 0,
                    },
                );
                drop(b);
                self.notify.notify_waiters();
            }
            Err(e) => {
                // Unreadable: the broker dead-letters it to <prefix>.dead (reason "rejected").
                tracing::error!(error = %e, "rabbitmq: unreadable message rejected to the dead-letter queue");
                let _ = d.acker.reject(BasicRejectOptions { requeue: false }).await;
            }
        }
    }

    async fn declare(&self, ch: &Channel) -> Result<(), QueueError> {
        let dead = self.dead_queue();
        let mut classic = FieldTable::default();
        classic.insert("x-queue-type".into(), ls("classic"));
        timed(
            "declare dead-letter queue",
            ch.queue_declare(
                dead.as_str().into(),
                QueueDeclareOptions::durable(),
                classic.clone(),
            ),
        )
        .await?;
        for n in 0..self.opts.partitions.max(1) {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), ls("quorum"));
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongUInt(DELIVERY_LIMIT),
            );
            args.insert("x-dead-letter-exchange".into(), ls(""));
            args.insert("x-dead-letter-routing-key".into(), ls(&dead));
            let name = format!("{}.p.{n}", self.prefix);
            timed(
                "declare partition queue",
                ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args),
            )
            .await
            .map_err(|e| {
                QueueError::Unavailable(format!(
                    "{e} (if {name} exists with other arguments, e.g. another partition count, delete it or use another prefix)"
                ))
            })?;
        }
        for tier in RETRY_TIERS_MS {
            let name = self.wait_name(tier);
            timed(
                "declare retry exchange",
                ch.exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                ),
            )
            .await?;
            let mut args = classic.clone();
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(tier as i64));
            args.insert("x-dead-letter-exchange".into(), ls(""));
            timed(
                "declare retry queue",
                ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args),
            )
            .await?;
            timed(
                "bind retry queue",
                ch.queue_bind(
                    name.as_str().into(),
                    name.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Publish with a confirm on the dedicated publish channel; every message must be routed.
    async fn publish_confirmed(
        &self,
        msgs: Vec<(String, String, Vec<u8>, BasicProperties)>,
    ) -> Result<(), QueueError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let conn = self.current()?;
        let work = async {
            let mut confirms = Vec::with_capacity(msgs.len());
            for (exchange, routing_key, body, props) in msgs {
                let c = conn
                    .publish
                    .basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &body,
                        props,
                    )
                    .await
                    .map_err(unavailable("publish"))?;
                confirms.push(c);
            }
            for c in confirms {
                let confirmation = c.await.map_err(unavailable("publisher confirm"))?;
                if confirmation.is_nack() {
                    return Err(QueueError::Unavailable(
                        "rabbitmq refused the message (nack)".into(),
                    ));
                }
                if confirmation.take_message().is_some() {
                    return Err(QueueError::Other(
                        "rabbitmq could not route the message (queue missing?)".into(),
                    ));
                }
            }
            Ok(())
        };
        match tokio::time::timeout(OP_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Unavailable(format!(
                "rabbitmq publish: no confirm within {}s",
                OP_TIMEOUT.as_secs()
            ))),
        }
    }

    fn to_partition(&self, envelope: &Envelope) -> (String, String, Vec<u8>, BasicProperties) {
        (
            String::new(),
            self.partition_queue(&envelope.key),
            envelope.payload.clone(),
            properties(envelope, &[]),
        )
    }

    async fn settle_ack(
        &self,
        key: &str,
        token: u64,
        acker: Option<Acker>,
    ) -> Result<(), QueueError> {
        let r = match acker {
            Some(a) => timed("ack", a.ack(BasicAckOptions::default()))
                .await
                .and_then(|ok| {
                    if ok {
                        Ok(())
                    } else {
                        Err(QueueError::Unavailable(
                            "rabbitmq channel closed before the ack; the event will be redelivered"
                                .into(),
                        ))
                    }
                }),
            None => Ok(()),
        };
        self.release(key, token);
        r
    }

    /// Watch the connection; on loss reconnect with backoff until shut down.
    async fn supervise(self: Arc<Self>, mut conn: Arc<Conn>) {
        loop {
            // Wait for the connection to fail (or shutdown).
            loop {
                if self.closed.load(Ordering::SeqCst) {
                    let _ = conn.connection.close(200, "shutdown".into()).await;
                    return;
                }
                if !conn.connection.status().connected() {
                    break;
                }
                tokio::select! {
                    _ = self.shutdown.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            tracing::warn!(prefix = %self.prefix, "rabbitmq connection lost; reconnecting");
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
            {
                let mut b = self.buf();
                b.generation += 1;
                b.items.clear();
                b.fifo.clear_waiting();
            }
            let mut backoff = Duration::from_millis(200);
            conn = loop {
                if self.closed.load(Ordering::SeqCst) {
                    return;
                }
                match self.connect_once().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "rabbitmq reconnect failed");
                        tokio::select! {
                            _ = self.shutdown.notified() => {}
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            };
            tracing::info!(prefix = %self.prefix, "rabbitmq reconnected");
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&conn));
            self.notify.notify_waiters();
        }
    }

    /// Get every message of the dead-letter queue un-acked on a fresh channel; closing the
    /// channel puts back whatever was not acked.
    async fn drain_dead(&self) -> Result<(Channel, Vec<(DeadLetter, Acker)>), QueueError> {
        let conn = self.current()?;
        let ch = timed("open channel", conn.connection.create_channel()).await?;
        let mut out = Vec::new();
        let dead = self.dead_queue();
        loop {
            let got = timed(
                "basic.get",
                ch.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false }),
            )
            .await?;
            let Some(msg) = got else { break };
            let acker = msg.delivery.acker.clone();
            match dead_letter_of(&msg.delivery.properties, &msg.delivery.data) {
                Ok(dl) => out.push((dl, acker)),
                Err(e) => {
                    tracing::error!(error = %e, "rabbitmq: unreadable message in the dead-letter queue")
                }
            }
            if msg.message_count == 0 {
                break;
            }
        }
        Ok((ch, out))
    }
}

impl RabbitQueue {
    /// Connect to `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`), declare the topology
    /// under `prefix` and start consuming. Fails when the broker cannot be reached now; later
    /// connection losses are healed in the background.
    pub async fn connect(url: &str, prefix: &str, opts: QueueOptions) -> Result<Self, QueueError> {
        let inner = Arc::new(Inner {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            opts,
            conn: Mutex::new(None),
            buf: Mutex::new(Buffer::default()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            shutdown: Notify::new(),
        });
        let conn = inner.connect_once().await?;
        *inner.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&conn));
        tokio::spawn(Arc::clone(&inner).supervise(conn));
        Ok(Self { inner })
    }

    /// Close the connection (un-acked deliveries go back to the broker) and stop reconnecting.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.shutdown.notify_waiters();
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = conn {
            let _ =
                tokio::time::timeout(OP_TIMEOUT, c.connection.close(200, "closed".into())).await;
        }
        self.inner.notify.notify_waiters();
    }

    /// Delete every queue and exchange under this prefix (tests, decommissioning).
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let conn = self.inner.current()?;
        let ch = timed("open channel", conn.connection.create_channel()).await?;
        for n in 0..self.inner.opts.partitions.max(1) {
            let name = format!("{}.p.{n}", self.inner.prefix);
            timed(
                "delete queue",
                ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()),
            )
            .await?;
        }
        for tier in RETRY_TIERS_MS {
            let name = self.inner.wait_name(tier);
            timed(
                "delete queue",
                ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()),
            )
            .await?;
            timed(
                "delete exchange",
                ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()),
            )
            .await?;
        }
        let dead = self.inner.dead_queue();
        timed(
            "delete queue",
            ch.queue_delete(dead.as_str().into(), QueueDeleteOptions::default()),
        )
        .await?;
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    fn handle(d: Delivery) -> Result<(Envelope, Settling), QueueError> {
        let Delivery { envelope, handle } = d;
        match handle {
            DeliveryHandle::Rabbit(mut h) => Ok((envelope, h.disarm())),
            DeliveryHandle::Embedded(_) => Err(QueueError::Other(
                "delivery came from another queue back end".into(),
            )),
        }
    }

    /// Publish `msg` (confirmed), then ack the delivery. When the ack fails after the publish
    /// succeeded the event exists twice (at-least-once); the worker's idempotency absorbs it.
    async fn move_then_ack(
        &self,
        key: String,
        token: u64,
        acker: Option<Acker>,
        msg: (String, String, Vec<u8>, BasicProperties),
    ) -> Result<(), QueueError> {
        if let Err(e) = self.inner.publish_confirmed(vec![msg]).await {
            // Keep the original: free the key by giving it back to the broker.
            if let Some(a) = acker {
                let _ = timed(
                    "nack",
                    a.nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    }),
                )
                .await;
            }
            self.inner.release(&key, token);
            return Err(e);
        }
        if let Err(e) = self.inner.settle_ack(&key, token, acker).await {
            tracing::warn!(error = %e, "rabbitmq: event moved but the original ack failed; it will be redelivered once more");
        }
        Ok(())
    }
}

impl Drop for RabbitQueue {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.shutdown.notify_waiters();
    }
}

#[async_trait::async_trait]
impl Queue for RabbitQueue {
    async fn publish(&self, batch: Vec<Envelope>) -> Result<(), QueueError> {
        let msgs = batch.iter().map(|e| self.inner.to_partition(e)).collect();
        self.inner.publish_confirmed(msgs).await
    }

    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.inner.take() {
                return Ok(Some(d));
            }
            if self.inner.closed.load(Ordering::SeqCst) {
                return Err(QueueError::Unavailable("rabbitmq queue closed".into()));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    async fn ack(&self, d: Delivery) -> Result<(), QueueError> {
        let (_, (key, token, acker)) = Self::handle(d)?;
        self.inner.settle_ack(&key, token, acker).await
    }

    async fn retry(&self, d: Delivery, delay: Duration, reason: &str) -> Result<(), QueueError> {
        let (mut envelope, (key, token, acker)) = Self::handle(d)?;
        envelope.attempt = envelope.attempt.saturating_add(1);
        if envelope.attempt > self.inner.opts.max_attempts {
            let msg = (
                String::new(),
                self.inner.dead_queue(),
                envelope.payload.clone(),
                properties(
                    &envelope,
                    &[
                        (H_REASON, reason.to_owned()),
                        (H_DEAD_AT, Utc::now().to_rfc3339()),
                    ],
                ),
            );
            return self.move_then_ack(key, token, acker, msg).await;
        }
        let partition = self.inner.partition_queue(&envelope.key);
        let exchange = retry_tier(delay)
            .map(|t| self.inner.wait_name(t))
            .unwrap_or_default();
        tracing::debug!(key = %envelope.key, attempt = envelope.attempt, exchange = %exchange, reason = %reason, "event retried");
        let msg = (
            exchange,
            partition,
            envelope.payload.clone(),
            properties(&envelope, &[(H_LAST_ERROR, reason.to_owned())]),
        );
        self.move_then_ack(key, token, acker, msg).await
    }

    async fn defer(&self, d: Delivery, delay: Duration, reason: &str) -> Result<(), QueueError> {
        // The retry path without the attempt increment and the max-attempts check: the
        // republished message carries the unchanged attempt header, and as a new message its
        // broker delivery count starts again, so x-delivery-limit never counts deferrals.
        let (envelope, (key, token, acker)) = Self::handle(d)?;
        let partition = self.inner.partition_queue(&envelope.key);
        let exchange = retry_tier(delay)
            .map(|t| self.inner.wait_name(t))
            .unwrap_or_default();
        tracing::debug!(key = %envelope.key, attempt = envelope.attempt, exchange = %exchange, reason = %reason, "event deferred");
        let msg = (
            exchange,
            partition,
            envelope.payload.clone(),
            properties(&envelope, &[(H_DEFERRED, reason.to_owned())]),
        );
        self.move_then_ack(key, token, acker, msg).await
    }

    async fn dead_letter(&self, d: Delivery, reason: &str) -> Result<(), QueueError> {
        let (envelope, (key, token, acker)) = Self::handle(d)?;
        let msg = (
            String::new(),
            self.inner.dead_queue(),
            envelope.payload.clone(),
            properties(
                &envelope,
                &[
                    (H_REASON, reason.to_owned()),
                    (H_DEAD_AT, Utc::now().to_rfc3339()),
                ],
            ),
        );
        self.move_then_ack(key, token, acker, msg).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let (ch, got) = self.inner.drain_dead().await?;
        let out = got.into_iter().map(|(dl, _)| dl).collect();
        let _ = tokio::time::timeout(OP_TIMEOUT, ch.close(200, "OK".into())).await;
        Ok(out)
    }

    async fn replay(&self, id: Option<&str>) -> Result<usize, QueueError> {
        let (ch, got) = self.inner.drain_dead().await?;
        let mut n = 0;
        let mut result = Ok(());
        for (dl, acker) in got {
            if id.is_some_and(|id| dl.envelope.id != id) {
                continue;
            }
            let mut envelope = dl.envelope;
            envelope.attempt = 0;
            if let Err(e) = self
                .inner
                .publish_confirmed(vec![self.inner.to_partition(&envelope)])
                .await
            {
                result = Err(e);
                break;
            }
            if let Err(e) = timed("ack", acker.ack(BasicAckOptions::default())).await {
                result = Err(e);
                break;
            }
            n += 1;
        }
        let _ = tokio::time::timeout(OP_TIMEOUT, ch.close(200, "OK".into())).await;
        result.map(|()| n)
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let conn = self.inner.current()?;
        let ch = timed("open channel", conn.connection.create_channel()).await?;
        let count = |name: String| {
            let ch = ch.clone();
            async move {
                let q = timed(
                    "queue.declare (passive)",
                    ch.queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions::default().passive(),
                        FieldTable::default(),
                    ),
                )
                .await?;
                Ok::<u64, QueueError>(u64::from(q.message_count()))
            }
        };
        let mut depth = QueueDepth::default();
        for n in 0..self.inner.opts.partitions.max(1) {
            depth.ready += count(format!("{}.p.{n}", self.inner.prefix)).await?;
        }
        for tier in RETRY_TIERS_MS {
            depth.delayed += count(self.inner.wait_name(tier)).await?;
        }
        depth.dead = count(self.inner.dead_queue()).await?;
        {
            let b = self.inner.buf();
            depth.in_flight = (b.items.len() + b.inflight.len()) as u64;
        }
        let _ = tokio::time::timeout(OP_TIMEOUT, ch.close(200, "OK".into())).await;
        Ok(depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_rounds_up_to_a_tier() {
        assert_eq!(retry_tier(Duration::ZERO), None);
        assert_eq!(retry_tier(Duration::from_millis(1)), Some(1_000));
        assert_eq!(retry_tier(Duration::from_secs(1)), Some(1_000));
        assert_eq!(retry_tier(Duration::from_millis(1_001)), Some(5_000));
        assert_eq!(retry_tier(Duration::from_secs(45)), Some(120_000));
        assert_eq!(retry_tier(Duration::from_secs(86_400)), Some(3_600_000));
    }

    #[test]
    fn envelope_round_trips_through_amqp_properties() {
        let mut e = Envelope::new("contoso|rep1@contoso.com", b"{\"v\":1}".to_vec());
        e.headers
            .insert("traceparent".into(), "00-abc-def-01".into());
        e.attempt = 3;
        let props = properties(
            &e,
            &[
                (H_REASON, "boom".into()),
                (H_DEAD_AT, "2024-05-01T10:00:00Z".into()),
            ],
        );
        assert_eq!(envelope_of(&props, &e.payload).expect("decodes"), e);
        let dl = dead_letter_of(&props, &e.payload).expect("decodes");
        assert_eq!(dl.reason, "boom");
        assert_eq!(dl.at.to_rfc3339(), "2024-05-01T10:00:00+00:00");
    }

    #[test]
    fn message_without_key_is_corrupt_not_a_panic() {
        let props = BasicProperties::default().with_message_id("x".into());
        assert!(matches!(
            envelope_of(&props, b""),
            Err(QueueError::Corrupt(_))
        ));
    }
}
