//! The event queue: trait, shared types and the two back ends.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod embedded;
mod fifo;
pub mod rabbit;

/// One event as the queue carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique event id (uuid v7), used for dead-letter replay.
    pub id: String,
    /// Partition key, e.g. `"contoso|rep1@contoso.com"`.
    pub key: String,
    /// Opaque bytes (JSON of the versioned event).
    pub payload: Vec<u8>,
    /// Trace context etc.
    pub headers: BTreeMap<String, String>,
    /// 0 on first publish; the queue increments it on retry.
    pub attempt: u32,
}

impl Envelope {
    /// A new envelope with a fresh uuid v7 id, no headers and attempt 0.
    pub fn new(key: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            key: key.into(),
            payload: payload.into(),
            headers: BTreeMap::new(),
            attempt: 0,
        }
    }
}

/// A received envelope plus the (private) handle needed to ack, retry or dead-letter it.
///
/// Dropping a `Delivery` without settling it gives the event back to the queue: the
/// embedded queue makes it ready again at once (at the front of its key), RabbitMQ
/// gets a `nack` with requeue. A process that dies without dropping it is covered by
/// the embedded queue on reopen, and by the broker when the channel closes.
pub struct Delivery {
    pub envelope: Envelope,
    pub(crate) handle: DeliveryHandle,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.handle {
            DeliveryHandle::Embedded(_) => "embedded",
            DeliveryHandle::Rabbit(_) => "rabbitmq",
        };
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("backend", &backend)
            .finish()
    }
}

pub(crate) enum DeliveryHandle {
    Embedded(embedded::Handle),
    Rabbit(rabbit::Handle),
}

/// An event parked for an operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    pub envelope: Envelope,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// How many events are where.
///
/// RabbitMQ: `ready`, `delayed` and `dead` are broker counts; `in_flight` counts the
/// events this process holds un-acked (handed out or prefetched), since AMQP has no
/// way to ask for the broker-wide figure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueDepth {
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead: u64,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum QueueError {
    /// The back end cannot be reached right now (broker down, reconnecting, disk error).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back.
    #[error("queue data corrupt: {0}")]
    Corrupt(String),
    #[error("queue error: {0}")]
    Other(String),
}

#[async_trait::async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Durable when Ok: embedded = committed to disk; RabbitMQ = publisher confirm received
    /// (dedicated channel).
    async fn publish(&self, batch: Vec<Envelope>) -> Result<(), QueueError>;
    /// Next delivery for this consumer, waiting up to `wait`. Per partition key, at most one
    /// delivery is in flight at a time across all consumers/processes, and order within a key
    /// is kept.
    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, QueueError>;
    async fn ack(&self, d: Delivery) -> Result<(), QueueError>;
    /// Retry later: attempt+1, redelivered after `delay` (rounded up to a tier of the retry
    /// ladder on RabbitMQ). When attempt+1 > max_attempts -> dead letter with `reason` instead.
    /// A retried event goes behind the events of its key published meanwhile.
    async fn retry(&self, d: Delivery, delay: Duration, reason: &str) -> Result<(), QueueError>;
    /// Put the event back for later without counting an attempt: `attempt` stays as it is and
    /// a deferral never leads to the dead-letter queue, however often it happens (for an event
    /// that only waits for something another worker holds, e.g. a lease). Otherwise like
    /// `retry`: redelivered after `delay` (rounded up to a tier of the retry ladder on
    /// RabbitMQ; zero = at once), behind the events of its key published meanwhile.
    /// `reason` is for logs only.
    async fn defer(&self, d: Delivery, delay: Duration, reason: &str) -> Result<(), QueueError>;
    async fn dead_letter(&self, d: Delivery, reason: &str) -> Result<(), QueueError>;
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;
    /// Re-publish one dead letter (by envelope id) or all (None) with attempt reset to 0;
    /// returns how many.
    async fn replay(&self, id: Option<&str>) -> Result<usize, QueueError>;
    async fn depth(&self) -> Result<QueueDepth, QueueError>;
}

#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Attempts before an event is dead-lettered by `retry` (default 8).
    pub max_attempts: u32,
    /// Partition count (RabbitMQ partition queues; default 16).
    pub partitions: u32,
    /// Unused; kept so that existing struct literals keep compiling. (The embedded queue used
    /// to hand an un-acked delivery out again after this lease; now a delivery stays in flight
    /// until its consumer settles or drops it, and a dead process's deliveries are ready again
    /// when the queue file is next opened.)
    pub lease: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            partitions: 16,
            lease: Duration::from_secs(60),
        }
    }
}

/// Safety net: an event delivered this many times without being acked, retried, deferred or
/// dead-lettered (consumer crashes, dropped deliveries) is dead-lettered.
/// RabbitMQ: `x-delivery-limit` on the partition queues.
pub const DELIVERY_LIMIT: u32 = 20;

/// Stable partition of a key: the first 8 bytes of sha256(key), big endian, modulo
/// `partitions` (0 is treated as 1). The same in every process and version.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(prefix);
    (n % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        // Pinned values (computed independently): changing the hash would re-route keys
        // between processes of different versions during a rolling upgrade.
        assert_eq!(partition_of("contoso|rep1@contoso.com", 16), 9);
        assert_eq!(partition_of("contoso|rep1@contoso.com", 7), 0);
        for i in 0..200 {
            let key = format!("t|user{i}@x.com");
            assert!(partition_of(&key, 7) < 7);
            assert_eq!(partition_of(&key, 7), partition_of(&key, 7));
        }
        assert_eq!(partition_of("anything", 0), 0);
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn partition_spreads_keys() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            seen.insert(partition_of(&format!("k{i}"), 16));
        }
        assert_eq!(seen.len(), 16);
    }
}
