//! Redis store (redis-rs `ConnectionManager`, reconnects on its own).
//!
//! Keys: records in hashes `<prefix>:<ns>`; idempotency keys `<prefix>:idem:<key>`
//! (`SET NX PX`, value `in-progress` / `done`); leases `<prefix>:lease:<name>` (value = holder,
//! `SET NX PX` + compare-and-extend Lua); logs in lists `<prefix>:log:<ns>` (LPUSH + LTRIM);
//! records with a ttl in strings `<prefix>:ttl:<len(ns)>:<ns>:<key>` (`SET PX`; the length
//! keeps ns/key pairs apart whatever they contain). Redis 7.0 has no per-field hash expiry,
//! hence the separate keys; `put`/`put_ttl`/`delete` keep the two kinds exclusive atomically.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError};

use super::{Claim, Store, StoreError, millis};

const IN_PROGRESS: &str = "in-progress";
const DONE: &str = "done";
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Claim atomically: SET NX PX, else report the state (re-claim if it expired meanwhile).
const CLAIM_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'claimed' end
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'claimed'
end
return v
";
/// Delete only if the value equals ARGV[1].
const DEL_IF_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";
/// Take the lease if free (SET NX PX) or extend it if ARGV[1] holds it.
const LEASE_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// KEYS[1] ttl key, KEYS[2] hash; ARGV[1] field: the ttl record if live, else the permanent one.
const GET_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
return redis.call('HGET', KEYS[2], ARGV[1])
";
/// KEYS[1] ttl key, KEYS[2] hash; ARGV[1] field, ARGV[2] value: permanent record.
const PUT_LUA: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
";
/// KEYS[1] ttl key, KEYS[2] hash; ARGV[1] field, ARGV[2] value, ARGV[3] ttl ms.
const PUT_TTL_LUA: &str = r"
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";
/// KEYS[1] ttl key, KEYS[2] hash; ARGV[1] field.
const DELETE_LUA: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
";

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

fn store_err(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
    {
        StoreError::Unavailable(format!("redis: {e}"))
    } else {
        StoreError::Other(format!("redis: {e}"))
    }
}

fn is_transient(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout()
}

fn eval(script: &str, key: &str, args: &[&[u8]]) -> Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(1).arg(key);
    for a in args {
        c.arg(*a);
    }
    c
}

/// EVAL with the ttl key and the namespace hash as KEYS.
fn eval2(script: &str, keys: [&str; 2], args: &[&[u8]]) -> Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(2).arg(keys[0]).arg(keys[1]);
    for a in args {
        c.arg(*a);
    }
    c
}

impl RedisStore {
    /// Connect to `url` (e.g. `redis://127.0.0.1:6379`); keys are under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Other(format!("invalid redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis not reachable: {e}")))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// Run a command; an idempotent one is sent once more after a connection error (the
    /// manager has reconnected by then).
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd, idempotent: bool) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match cmd.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) if idempotent && is_transient(&e) => {
                tracing::debug!(error = %e, "redis command failed; retrying once");
                cmd.query_async(&mut conn).await.map_err(store_err)
            }
            Err(e) => Err(store_err(e)),
        }
    }

    fn idem_key(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    fn lease_key(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.prefix)
    }

    fn ns_key(&self, ns: &str) -> String {
        format!("{}:{ns}", self.prefix)
    }

    fn ttl_key(&self, ns: &str, key: &str) -> String {
        format!("{}:ttl:{}:{ns}:{key}", self.prefix, ns.len())
    }

    fn log_key(&self, ns: &str) -> String {
        format!("{}:log:{ns}", self.prefix)
    }

    /// The server-side id of the current connection (tests kill it to check reconnects).
    #[doc(hidden)]
    pub async fn connection_id(&self) -> Result<i64, StoreError> {
        self.run(&redis::cmd("CLIENT").arg("ID").to_owned(), true)
            .await
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let ms = millis(lease).to_string();
        let cmd = eval(
            CLAIM_LUA,
            &self.idem_key(key),
            &[IN_PROGRESS.as_bytes(), ms.as_bytes()],
        );
        // Not idempotent: a lost answer to a successful claim would read back "in-progress".
        let v: String = self.run(&cmd, false).await?;
        match v.as_str() {
            "claimed" => Ok(Claim::Claimed),
            IN_PROGRESS => Ok(Claim::InProgress),
            DONE => Ok(Claim::Done),
            other => Err(StoreError::Corrupt(format!(
                "idempotency key {key} holds an unexpected value ({} bytes)",
                other.len()
            ))),
        }
    }

    async fn complete(&self, key: &str, retention: Duration) -> Result<(), StoreError> {
        let cmd = redis::cmd("SET")
            .arg(self.idem_key(key))
            .arg(DONE)
            .arg("PX")
            .arg(millis(retention))
            .to_owned();
        self.run::<()>(&cmd, true).await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let cmd = eval(DEL_IF_LUA, &self.idem_key(key), &[IN_PROGRESS.as_bytes()]);
        self.run::<i64>(&cmd, true).await.map(drop)
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ms = millis(ttl).to_string();
        let cmd = eval(
            LEASE_LUA,
            &self.lease_key(name),
            &[holder.as_bytes(), ms.as_bytes()],
        );
        // Idempotent for the same holder.
        let v: i64 = self.run(&cmd, true).await?;
        Ok(v == 1)
    }

    async fn unlease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let cmd = eval(DEL_IF_LUA, &self.lease_key(name), &[holder.as_bytes()]);
        self.run::<i64>(&cmd, true).await.map(drop)
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError> {
        // The key expires with the lease, so whatever it holds is the live holder.
        let cmd = redis::cmd("GET").arg(self.lease_key(name)).to_owned();
        self.run(&cmd, true).await
    }

    async fn put_ttl(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ms = millis(ttl).to_string();
        let (tk, hk) = (self.ttl_key(ns, key), self.ns_key(ns));
        let cmd = eval2(
            PUT_TTL_LUA,
            [&tk, &hk],
            &[key.as_bytes(), value, ms.as_bytes()],
        );
        self.run::<i64>(&cmd, true).await.map(drop)
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (tk, hk) = (self.ttl_key(ns, key), self.ns_key(ns));
        let cmd = eval2(GET_LUA, [&tk, &hk], &[key.as_bytes()]);
        self.run(&cmd, true).await
    }

    async fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (tk, hk) = (self.ttl_key(ns, key), self.ns_key(ns));
        let cmd = eval2(PUT_LUA, [&tk, &hk], &[key.as_bytes(), value]);
        self.run::<i64>(&cmd, true).await.map(drop)
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        let (tk, hk) = (self.ttl_key(ns, key), self.ns_key(ns));
        let cmd = eval2(DELETE_LUA, [&tk, &hk], &[key.as_bytes()]);
        self.run::<i64>(&cmd, true).await.map(drop)
    }

    async fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let cmd = redis::cmd("HGETALL").arg(self.ns_key(ns)).to_owned();
        let mut v: Vec<(String, Vec<u8>)> = self.run(&cmd, true).await?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    async fn append(&self, ns: &str, entry: &[u8], cap: usize) -> Result<(), StoreError> {
        let key = self.log_key(ns);
        if cap == 0 {
            let cmd = redis::cmd("DEL").arg(&key).to_owned();
            return self.run::<i64>(&cmd, true).await.map(drop);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(&key)
            .arg(entry)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(cap.saturating_sub(1))
            .ignore();
        let mut conn = self.conn.clone();
        // Not retried: a lost answer would append the entry twice.
        pipe.query_async::<()>(&mut conn).await.map_err(store_err)
    }

    async fn tail(&self, ns: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cmd = redis::cmd("LRANGE")
            .arg(self.log_key(ns))
            .arg(0)
            .arg(limit.saturating_sub(1))
            .to_owned();
        self.run(&cmd, true).await
    }
}
