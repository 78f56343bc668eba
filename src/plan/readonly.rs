//! The back ends of the `plan` command: the store is read (links and shadows that exist today)
//! and never written; the queue is never used. Any write is refused with an error that says so
//! and counted, so a plan that would write anywhere fails loudly instead of writing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cgc_backends::{Claim, DeadLetter, Delivery, Envelope, Queue, QueueDepth, QueueError, Store};
use cgc_backends::{EmbeddedStore, RedisStore, StoreError};
use secrecy::ExposeSecret;

use crate::config::{Config, StoreBackend};

const REFUSED: &str = "the plan command writes nothing to the store";

/// Reads go to the configured store (none: nothing stored yet), after what the plan itself
/// knows (`seed`: the mailbox list a first sync would have stored); writes are refused.
pub struct ReadOnlyStore {
    inner: Option<Arc<dyn Store>>,
    seeded: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
    pub refused: AtomicUsize,
}

impl ReadOnlyStore {
    /// Opens the configured store for reading. An embedded store that does not exist yet is an
    /// empty one (it is not created); one the running service holds cannot be opened (the error
    /// says so).
    pub async fn open(config: &Config, prefix: &str) -> anyhow::Result<ReadOnlyStore> {
        use anyhow::Context;
        let inner: Option<Arc<dyn Store>> = match config.store.backend {
            StoreBackend::Embedded => {
                let file = config.store.path.join("state.redb");
                if file.exists() {
                    Some(Arc::new(EmbeddedStore::open(&file).with_context(|| {
                        format!(
                            "opening the embedded store {} for reading (a running connector holds it: stop it, or plan against a Redis store)",
                            file.display()
                        )
                    })?))
                } else {
                    None
                }
            }
            StoreBackend::Redis => Some(Arc::new(
                RedisStore::connect(config.store.url.expose_secret(), prefix)
                    .await
                    .context("connecting to Redis (store.url)")?,
            )),
        };
        Ok(ReadOnlyStore {
            inner,
            seeded: Mutex::default(),
            refused: AtomicUsize::new(0),
        })
    }

    /// Reads through `inner` (a store this process already has open, e.g. the demo's).
    pub fn over(inner: Arc<dyn Store>) -> ReadOnlyStore {
        ReadOnlyStore {
            inner: Some(inner),
            seeded: Mutex::default(),
            refused: AtomicUsize::new(0),
        }
    }

    /// Makes a record readable to this process only (never written to the store).
    pub fn seed(&self, ns: &str, key: &str, value: Vec<u8>) {
        if let Ok(mut m) = self.seeded.lock() {
            m.entry(ns.to_string())
                .or_default()
                .insert(key.to_string(), value);
        }
    }

    fn seeded(&self, ns: &str) -> BTreeMap<String, Vec<u8>> {
        self.seeded
            .lock()
            .ok()
            .and_then(|m| m.get(ns).cloned())
            .unwrap_or_default()
    }

    fn refuse<T>(&self) -> Result<T, StoreError> {
        self.refused.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Other(REFUSED.into()))
    }
}

#[async_trait::async_trait]
impl Store for ReadOnlyStore {
    async fn claim(&self, _: &str, _: Duration) -> Result<Claim, StoreError> {
        self.refuse()
    }
    async fn complete(&self, _: &str, _: Duration) -> Result<(), StoreError> {
        self.refuse()
    }
    async fn release(&self, _: &str) -> Result<(), StoreError> {
        self.refuse()
    }
    async fn lease(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
        self.refuse()
    }
    async fn unlease(&self, _: &str, _: &str) -> Result<(), StoreError> {
        self.refuse()
    }
    async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError> {
        match &self.inner {
            Some(s) => s.lease_holder(name).await,
            None => Ok(None),
        }
    }
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.seeded(ns).remove(key) {
            return Ok(Some(v));
        }
        match &self.inner {
            Some(s) => s.get(ns, key).await,
            None => Ok(None),
        }
    }
    async fn put(&self, _: &str, _: &str, _: &[u8]) -> Result<(), StoreError> {
        self.refuse()
    }
    async fn put_ttl(&self, _: &str, _: &str, _: &[u8], _: Duration) -> Result<(), StoreError> {
        self.refuse()
    }
    async fn delete(&self, _: &str, _: &str) -> Result<(), StoreError> {
        self.refuse()
    }
    async fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut all: BTreeMap<String, Vec<u8>> = match &self.inner {
            Some(s) => s.list(ns).await?.into_iter().collect(),
            None => BTreeMap::new(),
        };
        all.extend(self.seeded(ns));
        Ok(all.into_iter().collect())
    }
    async fn append(&self, _: &str, _: &[u8], _: usize) -> Result<(), StoreError> {
        self.refuse()
    }
    async fn tail(&self, ns: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        match &self.inner {
            Some(s) => s.tail(ns, limit).await,
            None => Ok(Vec::new()),
        }
    }
}

/// A queue the plan never uses: every call is refused.
pub struct NoQueue;

fn no<T>() -> Result<T, QueueError> {
    Err(QueueError::Other(
        "the plan command publishes nothing to the queue".into(),
    ))
}

#[async_trait::async_trait]
impl Queue for NoQueue {
    async fn publish(&self, _: Vec<Envelope>) -> Result<(), QueueError> {
        no()
    }
    async fn receive(&self, _: Duration) -> Result<Option<Delivery>, QueueError> {
        no()
    }
    async fn ack(&self, _: Delivery) -> Result<(), QueueError> {
        no()
    }
    async fn retry(&self, _: Delivery, _: Duration, _: &str) -> Result<(), QueueError> {
        no()
    }
    async fn defer(&self, _: Delivery, _: Duration, _: &str) -> Result<(), QueueError> {
        no()
    }
    async fn dead_letter(&self, _: Delivery, _: &str) -> Result<(), QueueError> {
        no()
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        no()
    }
    async fn replay(&self, _: Option<&str>) -> Result<usize, QueueError> {
        no()
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        Ok(QueueDepth::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_refused_and_counted_and_seeded_records_are_read() {
        let s = ReadOnlyStore {
            inner: None,
            seeded: Mutex::default(),
            refused: AtomicUsize::new(0),
        };
        assert!(s.put("ns", "k", b"v").await.is_err());
        assert!(s.append("ns", b"v", 10).await.is_err());
        assert!(s.lease("l", "me", Duration::from_secs(1)).await.is_err());
        assert_eq!(s.refused.load(Ordering::SeqCst), 3);
        assert_eq!(s.get("ns", "k").await.unwrap(), None);
        s.seed("ns", "k", b"v".to_vec());
        assert_eq!(s.get("ns", "k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.list("ns").await.unwrap().len(), 1);
        assert!(NoQueue.publish(Vec::new()).await.is_err());
    }
}
