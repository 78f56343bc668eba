//! Queue and store back ends for the connector.
//!
//! * [`Queue`]: a durable, partitioned event queue with retry and dead letters.
//!   Back ends: [`EmbeddedQueue`] (one redb file, one process) and [`RabbitQueue`]
//!   (RabbitMQ quorum queues, scale-out).
//! * [`Store`]: idempotency keys, named leases, records by namespace and bounded logs.
//!   Back ends: [`EmbeddedStore`] (one redb file) and [`RedisStore`].

pub mod queue;
pub mod store;

pub use queue::{
    DeadLetter, Delivery, Envelope, Queue, QueueDepth, QueueError, QueueOptions,
    embedded::EmbeddedQueue, partition_of, rabbit::RabbitQueue,
};
pub use store::{Claim, Store, StoreError, embedded::EmbeddedStore, redis::RedisStore};
