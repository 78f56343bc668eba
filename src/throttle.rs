//! Graph throttling windows shared by every worker process through the store
//! (expected-behaviour.md 13): a 429 with `Retry-After: N` seen by one process holds every
//! process's requests to that mailbox until the window ends.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cgc_backends::Store;

/// A [`cgc_graph::ThrottleShare`] over the store (a TTL record per mailbox).
pub struct StoreThrottle {
    store: Arc<dyn Store>,
}

impl StoreThrottle {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreThrottle { store }
    }
}

const NS: &str = "throttle";

fn key(mailbox: &str) -> String {
    mailbox.trim().to_ascii_lowercase()
}

#[async_trait::async_trait]
impl cgc_graph::ThrottleShare for StoreThrottle {
    async fn throttled_until(&self, mailbox: &str) -> Option<SystemTime> {
        match self.store.get(NS, &key(mailbox)).await {
            Ok(Some(bytes)) => {
                let ms: u64 = std::str::from_utf8(&bytes).ok()?.trim().parse().ok()?;
                let until = UNIX_EPOCH + Duration::from_millis(ms);
                (until > SystemTime::now()).then_some(until)
            }
            Ok(None) => None,
            Err(e) => {
                // The store is down: this process still honours the windows it saw itself.
                tracing::debug!(error = %e, "throttle window could not be read from the store");
                None
            }
        }
    }

    async fn set_throttled_until(&self, mailbox: &str, until: SystemTime) {
        let Ok(left) = until.duration_since(SystemTime::now()) else {
            return;
        };
        let Ok(ms) = until
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
        else {
            return;
        };
        let ttl = left + Duration::from_secs(1);
        if let Err(e) = self
            .store
            .put_ttl(NS, &key(mailbox), ms.to_string().as_bytes(), ttl)
            .await
        {
            tracing::warn!(error = %e, "throttle window could not be shared through the store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgc_graph::ThrottleShare;

    #[tokio::test]
    async fn a_window_set_by_one_process_is_seen_by_another_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(cgc_backends::EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let a = StoreThrottle::new(store.clone());
        let b = StoreThrottle::new(store);
        assert_eq!(b.throttled_until("Rep1@contoso.com").await, None);
        let until = SystemTime::now() + Duration::from_millis(600);
        a.set_throttled_until("rep1@contoso.com", until).await;
        let seen = b
            .throttled_until("REP1@contoso.com")
            .await
            .expect("window shared");
        let diff = seen.duration_since(until).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(2), "same end: {diff:?}");
        assert_eq!(
            b.throttled_until("rep2@contoso.com").await,
            None,
            "per mailbox"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            b.throttled_until("rep1@contoso.com").await,
            None,
            "window over"
        );
    }
}
