//! The state store: trait and the two back ends.

use std::time::Duration;

pub mod embedded;
pub mod redis;

/// Outcome of an idempotency claim (svix two-phase idempotency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nobody had it: the caller does the work, then `complete` (or `release` on failure).
    Claimed,
    /// Someone is doing the work right now (lease not expired): retry later.
    InProgress,
    /// The work was done (within the retention): acknowledge, do nothing.
    Done,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The back end cannot be reached right now (Redis down, disk error).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Other(String),
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Two-phase idempotency: claim with a lease (SET NX PX) ...
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError>;
    /// ... complete with a retention (a claim within it answers `Done`) ...
    async fn complete(&self, key: &str, retention: Duration) -> Result<(), StoreError>;
    /// ... or release on failure (only an in-progress claim is removed; `Done` stays).
    async fn release(&self, key: &str) -> Result<(), StoreError>;
    /// Named lease (item lease, scheduler leader election): true if `holder` now holds it.
    /// Free (never taken, given up, or its ttl passed without renewal): `holder` takes it for
    /// `ttl`. Held by `holder`: renewed, it now ends `ttl` from now. Held by another live
    /// holder: false, nothing changes.
    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Give a lease up; a no-op unless `holder` holds it.
    async fn unlease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Who holds the lease now (diagnostics); None when it is free or expired.
    async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Plain records by namespace (e.g. "contoso:shadow"). `get` also sees a live record
    /// written by `put_ttl`.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A permanent record (replaces a `put_ttl` record of the same ns/key).
    async fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// A record that expires: `get` answers None once `ttl` has passed (replaces a permanent
    /// record of the same ns/key; a later `put` or `put_ttl` replaces it). Not part of
    /// `list`, which returns permanent records only.
    async fn put_ttl(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Remove a record, permanent or with a ttl.
    async fn delete(&self, ns: &str, key: &str) -> Result<(), StoreError>;
    /// All permanent records of a namespace, sorted by key.
    async fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Bounded append-only log (audit): keeps the newest `cap` entries per ns.
    async fn append(&self, ns: &str, entry: &[u8], cap: usize) -> Result<(), StoreError>;
    /// The newest `limit` entries, newest first.
    async fn tail(&self, ns: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
