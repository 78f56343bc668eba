//! Store leases that name their owner and outlive no owner: held as `{instance}:{event}` with a
//! short time to live, renewed in the background while the work runs, released when it ends. A
//! process that dies stops renewing, so its leases lapse within [`LEASE_TTL`].
//!
//! [`Leadership`] is the scheduler's leader lease: held while the process lives, renewed by a
//! task of its own.

use std::sync::Arc;
use std::time::Duration;

use cgc_backends::{Store, StoreError};

/// Time to live of a lease; renewed every third of it while held.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// A lease this process holds; renewed until [`Held::release`] or drop.
pub struct Held {
    store: Arc<dyn Store>,
    name: String,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

/// Takes the lease `name` for `holder`, or None when someone else holds it.
pub async fn acquire(
    store: &Arc<dyn Store>,
    name: &str,
    holder: &str,
) -> Result<Option<Held>, StoreError> {
    if !store.lease(name, holder, LEASE_TTL).await? {
        return Ok(None);
    }
    let (s, n, h) = (store.clone(), name.to_string(), holder.to_string());
    let renew = tokio::spawn(async move {
        loop {
            tokio::time::sleep(LEASE_TTL / 3).await;
            match s.lease(&n, &h, LEASE_TTL).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(lease = %n, "lease was taken over while held (renewal came too late)");
                    break;
                }
                Err(e) => {
                    tracing::warn!(lease = %n, error = %e, "lease renewal failed; trying again")
                }
            }
        }
    });
    Ok(Some(Held {
        store: store.clone(),
        name: name.to_string(),
        holder: holder.to_string(),
        renew,
    }))
}

impl Held {
    /// Stops renewing and frees the lease.
    pub async fn release(self) {
        self.renew.abort();
        if let Err(e) = self.store.unlease(&self.name, &self.holder).await {
            tracing::warn!(lease = %self.name, error = %e, "lease could not be released; it lapses by itself");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Not released explicitly (e.g. a panic or a cancelled future): stop renewing, let it lapse.
        self.renew.abort();
    }
}

/// A singleton role's leader lease (the scheduler's), taken and renewed every third of its
/// lifetime by a task of its own; `is_leader` tells whether this process holds it now.
pub struct Leadership {
    flag: Arc<std::sync::atomic::AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    holder: String,
}

impl Leadership {
    pub fn spawn(store: Arc<dyn Store>, holder: String, lease: Duration) -> Leadership {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (f, n, s, h) = (flag.clone(), notify.clone(), store.clone(), holder.clone());
        let task = tokio::spawn(async move {
            loop {
                let got = s.lease("scheduler", &h, lease).await.unwrap_or(false);
                if f.swap(got, std::sync::atomic::Ordering::SeqCst) != got {
                    n.notify_one();
                }
                tokio::time::sleep(lease / 3).await;
            }
        });
        Leadership {
            flag,
            notify,
            task,
            store,
            holder,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves when leadership was taken or lost.
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    /// Stops renewing and frees the lease for another scheduler.
    pub async fn resign(self) {
        self.task.abort();
        let _ = self.store.unlease("scheduler", &self.holder).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Store> =
            Arc::new(cgc_backends::EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        (dir, s)
    }

    #[tokio::test]
    async fn leadership_is_renewed_in_the_background_and_never_shared() {
        let (_d, s) = store();
        let lease = Duration::from_millis(300);
        let a = Leadership::spawn(s.clone(), "a".into(), lease);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(a.is_leader());
        let b = Leadership::spawn(s.clone(), "b".into(), lease);
        // Several lease lifetimes pass while a's loop could be busy: a keeps it, b never gets it.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(a.is_leader() && !b.is_leader());
        }
        // a resigns: b takes over within one renewal period.
        a.resign().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(b.is_leader());
        b.resign().await;
    }
}
