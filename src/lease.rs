//! Store leases that name their owner and outlive no owner: held as `{instance}:{event}` with a
//! short time to live, renewed in the background while the work runs, released when it ends. A
//! process that dies stops renewing, so its leases lapse within [`LEASE_TTL`].

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
