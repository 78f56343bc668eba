//! Embedded store: one redb file owned by one process. Expiry times are wall-clock unix
//! milliseconds, so leases and retentions survive a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Claim, Store, StoreError, millis};

/// idempotency key -> (state, expiry ms)
const IDEM: TableDefinition<&str, (u8, u64)> = TableDefinition::new("idem");
/// (expiry ms, idempotency key): index for purging expired keys
const IDEM_EXP: TableDefinition<(u64, &str), ()> = TableDefinition::new("idem_exp");
/// lease name -> (holder, expiry ms)
const LEASES: TableDefinition<&str, (&str, u64)> = TableDefinition::new("leases");
/// (ns, key) -> value
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// (ns, key) -> (expiry ms, value): records written by `put_ttl`
const TTL_RECORDS: TableDefinition<(&str, &str), (u64, &[u8])> =
    TableDefinition::new("ttl_records");
/// (expiry ms, ns, key): index for purging expired ttl records
const TTL_EXP: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("ttl_exp");
/// (ns, seq) -> entry
const LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("logs");
/// ns -> (first seq, next seq)
const LOG_META: TableDefinition<&str, (u64, u64)> = TableDefinition::new("log_meta");

const IN_PROGRESS: u8 = 1;
const DONE: u8 = 2;
/// Expired idempotency keys purged per write (keeps the file from growing forever).
const PURGE_BATCH: usize = 64;

pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store storage: {e}"))
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl EmbeddedStore {
    /// Open (or create) the store file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create store directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let db = Database::create(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot open store file {} ({e}); is another process using it?",
                path.display()
            ))
        })?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(IDEM).map_err(db_err)?;
        tx.open_table(IDEM_EXP).map_err(db_err)?;
        tx.open_table(LEASES).map_err(db_err)?;
        tx.open_table(RECORDS).map_err(db_err)?;
        tx.open_table(TTL_RECORDS).map_err(db_err)?;
        tx.open_table(TTL_EXP).map_err(db_err)?;
        tx.open_table(LOGS).map_err(db_err)?;
        tx.open_table(LOG_META).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            let r = f(&tx)?;
            tx.commit().map_err(db_err)?;
            Ok(r)
        })
        .await
    }
}

/// Set an idempotency key's state and keep the expiry index in step; purge a few expired keys.
fn set_idem(tx: &WriteTransaction, key: &str, state: u8, expiry: u64) -> Result<(), StoreError> {
    let mut idem = tx.open_table(IDEM).map_err(db_err)?;
    let mut exp = tx.open_table(IDEM_EXP).map_err(db_err)?;
    let old = idem
        .insert(key, (state, expiry))
        .map_err(db_err)?
        .map(|g| g.value().1);
    if let Some(old) = old {
        exp.remove((old, key)).map_err(db_err)?;
    }
    exp.insert((expiry, key), ()).map_err(db_err)?;
    let now = now_ms();
    let mut stale = Vec::new();
    for row in exp
        .range::<(u64, &str)>(..(now, ""))
        .map_err(db_err)?
        .take(PURGE_BATCH)
    {
        let (k, _) = row.map_err(db_err)?;
        let (t, name) = k.value();
        stale.push((t, name.to_owned()));
    }
    for (t, name) in stale {
        exp.remove((t, name.as_str())).map_err(db_err)?;
        let current = idem
            .get(name.as_str())
            .map_err(db_err)?
            .map(|g| g.value().1);
        if current == Some(t) {
            idem.remove(name.as_str()).map_err(db_err)?;
        }
    }
    Ok(())
}

/// Remove the ttl record of (ns, key), if any, with its index entry.
fn remove_ttl(tx: &WriteTransaction, ns: &str, key: &str) -> Result<(), StoreError> {
    let mut records = tx.open_table(TTL_RECORDS).map_err(db_err)?;
    let old = records
        .remove((ns, key))
        .map_err(db_err)?
        .map(|g| g.value().0);
    if let Some(expiry) = old {
        tx.open_table(TTL_EXP)
            .map_err(db_err)?
            .remove((expiry, ns, key))
            .map_err(db_err)?;
    }
    Ok(())
}

/// Remove a few expired ttl records (keeps the file from growing forever).
fn purge_ttl(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut exp = tx.open_table(TTL_EXP).map_err(db_err)?;
    let mut records = tx.open_table(TTL_RECORDS).map_err(db_err)?;
    let now = now_ms();
    let mut stale = Vec::new();
    for row in exp
        .range::<(u64, &str, &str)>(..(now, "", ""))
        .map_err(db_err)?
        .take(PURGE_BATCH)
    {
        let (k, _) = row.map_err(db_err)?;
        let (t, ns, key) = k.value();
        stale.push((t, ns.to_owned(), key.to_owned()));
    }
    for (t, ns, key) in stale {
        exp.remove((t, ns.as_str(), key.as_str())).map_err(db_err)?;
        let current = records
            .get((ns.as_str(), key.as_str()))
            .map_err(db_err)?
            .map(|g| g.value().0);
        if current == Some(t) {
            records
                .remove((ns.as_str(), key.as_str()))
                .map_err(db_err)?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let key = key.to_owned();
        let lease = millis(lease);
        self.write(move |tx| {
            let now = now_ms();
            let current = tx
                .open_table(IDEM)
                .map_err(db_err)?
                .get(key.as_str())
                .map_err(db_err)?
                .map(|g| g.value());
            match current {
                Some((state, expiry)) if expiry > now => Ok(if state == DONE {
                    Claim::Done
                } else {
                    Claim::InProgress
                }),
                _ => {
                    set_idem(tx, &key, IN_PROGRESS, now.saturating_add(lease))?;
                    Ok(Claim::Claimed)
                }
            }
        })
        .await
    }

    async fn complete(&self, key: &str, retention: Duration) -> Result<(), StoreError> {
        let key = key.to_owned();
        let retention = millis(retention);
        self.write(move |tx| set_idem(tx, &key, DONE, now_ms().saturating_add(retention)))
            .await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |tx| {
            let mut idem = tx.open_table(IDEM).map_err(db_err)?;
            let current = idem.get(key.as_str()).map_err(db_err)?.map(|g| g.value());
            if let Some((IN_PROGRESS, expiry)) = current {
                idem.remove(key.as_str()).map_err(db_err)?;
                tx.open_table(IDEM_EXP)
                    .map_err(db_err)?
                    .remove((expiry, key.as_str()))
                    .map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let ttl = millis(ttl);
        self.write(move |tx| {
            let mut leases = tx.open_table(LEASES).map_err(db_err)?;
            let now = now_ms();
            let free = match leases.get(name.as_str()).map_err(db_err)? {
                None => true,
                Some(g) => {
                    let (h, expiry) = g.value();
                    h == holder || expiry <= now
                }
            };
            if free {
                leases
                    .insert(name.as_str(), (holder.as_str(), now.saturating_add(ttl)))
                    .map_err(db_err)?;
            }
            Ok(free)
        })
        .await
    }

    async fn unlease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| {
            let mut leases = tx.open_table(LEASES).map_err(db_err)?;
            let held = leases
                .get(name.as_str())
                .map_err(db_err)?
                .is_some_and(|g| g.value().0 == holder);
            if held {
                leases.remove(name.as_str()).map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let rx = db.begin_read().map_err(db_err)?;
            let leases = rx.open_table(LEASES).map_err(db_err)?;
            let now = now_ms();
            Ok(leases.get(name.as_str()).map_err(db_err)?.and_then(|g| {
                let (holder, expiry) = g.value();
                (expiry > now).then(|| holder.to_owned())
            }))
        })
        .await
    }

    async fn put_ttl(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (ns, key, value) = (ns.to_owned(), key.to_owned(), value.to_vec());
        let ttl = millis(ttl);
        self.write(move |tx| {
            tx.open_table(RECORDS)
                .map_err(db_err)?
                .remove((ns.as_str(), key.as_str()))
                .map_err(db_err)?;
            remove_ttl(tx, &ns, &key)?;
            let expiry = now_ms().saturating_add(ttl);
            tx.open_table(TTL_RECORDS)
                .map_err(db_err)?
                .insert((ns.as_str(), key.as_str()), (expiry, value.as_slice()))
                .map_err(db_err)?;
            tx.open_table(TTL_EXP)
                .map_err(db_err)?
                .insert((expiry, ns.as_str(), key.as_str()), ())
                .map_err(db_err)?;
            purge_ttl(tx)
        })
        .await
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.blocking(move |db| {
            let rx = db.begin_read().map_err(db_err)?;
            let ttl = rx.open_table(TTL_RECORDS).map_err(db_err)?;
            if let Some(g) = ttl.get((ns.as_str(), key.as_str())).map_err(db_err)? {
                let (expiry, value) = g.value();
                // An expired one is purged later; no permanent record exists beside it.
                return Ok((expiry > now_ms()).then(|| value.to_vec()));
            }
            let t = rx.open_table(RECORDS).map_err(db_err)?;
            Ok(t.get((ns.as_str(), key.as_str()))
                .map_err(db_err)?
                .map(|g| g.value().to_vec()))
        })
        .await
    }

    async fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (ns, key, value) = (ns.to_owned(), key.to_owned(), value.to_vec());
        self.write(move |tx| {
            tx.open_table(RECORDS)
                .map_err(db_err)?
                .insert((ns.as_str(), key.as_str()), value.as_slice())
                .map_err(db_err)?;
            remove_ttl(tx, &ns, &key)
        })
        .await
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write(move |tx| {
            tx.open_table(RECORDS)
                .map_err(db_err)?
                .remove((ns.as_str(), key.as_str()))
                .map_err(db_err)?;
            remove_ttl(tx, &ns, &key)
        })
        .await
    }

    async fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let ns = ns.to_owned();
        self.blocking(move |db| {
            let rx = db.begin_read().map_err(db_err)?;
            let t = rx.open_table(RECORDS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t
                .range::<(&str, &str)>((ns.as_str(), "")..)
                .map_err(db_err)?
            {
                let (k, v) = row.map_err(db_err)?;
                let (row_ns, key) = k.value();
                if row_ns != ns {
                    break;
                }
                out.push((key.to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn append(&self, ns: &str, entry: &[u8], cap: usize) -> Result<(), StoreError> {
        let (ns, entry) = (ns.to_owned(), entry.to_vec());
        let cap = cap as u64;
        self.write(move |tx| {
            let mut meta = tx.open_table(LOG_META).map_err(db_err)?;
            let mut logs = tx.open_table(LOGS).map_err(db_err)?;
            let (mut first, next) = meta
                .get(ns.as_str())
                .map_err(db_err)?
                .map_or((0, 0), |g| g.value());
            logs.insert((ns.as_str(), next), entry.as_slice())
                .map_err(db_err)?;
            let next = next + 1;
            while next - first > cap {
                logs.remove((ns.as_str(), first)).map_err(db_err)?;
                first += 1;
            }
            meta.insert(ns.as_str(), (first, next)).map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn tail(&self, ns: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let ns = ns.to_owned();
        self.blocking(move |db| {
            let rx = db.begin_read().map_err(db_err)?;
            let meta = rx.open_table(LOG_META).map_err(db_err)?;
            let Some((first, next)) = meta.get(ns.as_str()).map_err(db_err)?.map(|g| g.value())
            else {
                return Ok(Vec::new());
            };
            let logs = rx.open_table(LOGS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in logs
                .range((ns.as_str(), first)..(ns.as_str(), next))
                .map_err(db_err)?
                .rev()
                .take(limit)
            {
                let (_, v) = row.map_err(db_err)?;
                out.push(v.value().to_vec());
            }
            Ok(out)
        })
        .await
    }
}
