//! Store back ends: the same test bodies against the embedded store and a real Redis
//! (127.0.0.1:6379). Redis tests fail when the server is missing.

use std::future::Future;
use std::time::Duration;

use cgc_backends::{Claim, EmbeddedStore, RedisStore, Store, StoreError};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The flush test empties this database only, so that it cannot disturb other tests
/// (or other programs) using Redis at the same time.
const REDIS_FLUSH_URL: &str = "redis://127.0.0.1:6379/15";

fn prefix() -> String {
    format!(
        "cgctest-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

async fn redis_at(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url, prefix).await.unwrap_or_else(|e| {
        panic!("Redis not reachable at 127.0.0.1:6379 — start it with redis-server --daemonize yes ({e})")
    })
}

/// Delete every key under `prefix` (test cleanup).
async fn redis_cleanup(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .expect("del");
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never became true: {what}");
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn embedded() {
                let dir = tempfile::tempdir().expect("tempdir");
                let s = EmbeddedStore::open(&dir.path().join("state.redb")).expect("open");
                super::$name(&s).await;
            }
            #[tokio::test]
            async fn redis() {
                let p = prefix();
                let s = redis_at(REDIS_URL, &p).await;
                super::$name(&s).await;
                redis_cleanup(REDIS_URL, &p).await;
            }
        }
    };
}

const LONG: Duration = Duration::from_secs(60);

both!(claim_complete_release);
async fn claim_complete_release(s: &dyn Store) {
    assert_eq!(s.claim("evt-1", LONG).await.expect("claim"), Claim::Claimed);
    assert_eq!(
        s.claim("evt-1", LONG).await.expect("claim"),
        Claim::InProgress
    );
    s.release("evt-1").await.expect("release");
    assert_eq!(
        s.claim("evt-1", LONG).await.expect("claim"),
        Claim::Claimed,
        "released: claimable again"
    );
    s.complete("evt-1", LONG).await.expect("complete");
    assert_eq!(s.claim("evt-1", LONG).await.expect("claim"), Claim::Done);
    s.release("evt-1").await.expect("release after done");
    assert_eq!(
        s.claim("evt-1", LONG).await.expect("claim"),
        Claim::Done,
        "release never undoes done"
    );
    assert_eq!(
        s.claim("evt-2", LONG).await.expect("claim"),
        Claim::Claimed,
        "keys are independent"
    );
}

both!(claim_lease_and_retention_expire);
async fn claim_lease_and_retention_expire(s: &dyn Store) {
    assert_eq!(
        s.claim("crashy", Duration::from_millis(200))
            .await
            .expect("claim"),
        Claim::Claimed
    );
    assert_eq!(
        s.claim("crashy", LONG).await.expect("claim"),
        Claim::InProgress
    );
    // The claimer died without complete/release: after the lease someone else may claim.
    eventually("lease expires", || async {
        s.claim("crashy", LONG).await.expect("claim") == Claim::Claimed
    })
    .await;
    assert_eq!(
        s.claim("crashy", LONG).await.expect("claim"),
        Claim::InProgress,
        "the new claim holds"
    );

    assert_eq!(s.claim("short", LONG).await.expect("claim"), Claim::Claimed);
    s.complete("short", Duration::from_millis(200))
        .await
        .expect("complete");
    assert_eq!(s.claim("short", LONG).await.expect("claim"), Claim::Done);
    eventually("retention expires", || async {
        s.claim("short", LONG).await.expect("claim") == Claim::Claimed
    })
    .await;
}

both!(lease_holder_semantics);
async fn lease_holder_semantics(s: &dyn Store) {
    assert!(s.lease("leader", "node-a", LONG).await.expect("lease"));
    assert!(
        !s.lease("leader", "node-b", LONG).await.expect("lease"),
        "held by a"
    );
    assert!(
        s.lease("leader", "node-a", LONG).await.expect("lease"),
        "holder re-acquires"
    );
    s.unlease("leader", "node-b").await.expect("unlease");
    assert!(
        !s.lease("leader", "node-b", LONG).await.expect("lease"),
        "b cannot give up a's lease"
    );
    s.unlease("leader", "node-a").await.expect("unlease");
    assert!(
        s.lease("leader", "node-b", LONG).await.expect("lease"),
        "free after a gave it up"
    );
    assert!(
        s.lease("other", "node-a", LONG).await.expect("lease"),
        "names are independent"
    );

    // Expiry frees it for someone else.
    assert!(
        s.lease("item", "w1", Duration::from_millis(200))
            .await
            .expect("lease")
    );
    eventually("lease expires", || async {
        s.lease("item", "w2", LONG).await.expect("lease")
    })
    .await;
    assert!(
        !s.lease("item", "w1", LONG).await.expect("lease"),
        "w2 holds it now"
    );

    // Re-acquiring extends.
    assert!(
        s.lease("ext", "w1", Duration::from_millis(300))
            .await
            .expect("lease")
    );
    assert!(s.lease("ext", "w1", LONG).await.expect("extend"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !s.lease("ext", "w2", LONG).await.expect("lease"),
        "the extension outlived the first ttl"
    );
}

both!(lease_renewal_expiry_and_holder);
async fn lease_renewal_expiry_and_holder(s: &dyn Store) {
    assert_eq!(
        s.lease_holder("l").await.expect("holder"),
        None,
        "never taken"
    );
    assert!(
        s.lease("l", "a", Duration::from_millis(300))
            .await
            .expect("lease")
    );
    assert_eq!(
        s.lease_holder("l").await.expect("holder").as_deref(),
        Some("a")
    );
    assert!(
        !s.lease("l", "b", LONG).await.expect("lease"),
        "a's lease is live"
    );
    assert_eq!(
        s.lease_holder("l").await.expect("holder").as_deref(),
        Some("a"),
        "a refused taker changes nothing"
    );
    // Renewal by the holder: true, and it now ends a LONG ttl from now.
    assert!(
        s.lease("l", "a", LONG).await.expect("renew"),
        "the holder renews"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !s.lease("l", "b", LONG).await.expect("lease"),
        "renewed past its first ttl"
    );
    s.unlease("l", "b").await.expect("unlease by a non-holder");
    assert_eq!(
        s.lease_holder("l").await.expect("holder").as_deref(),
        Some("a"),
        "unlease by a non-holder does nothing"
    );

    // Not renewed: the lease outlives no owner.
    assert!(
        s.lease("m", "a", Duration::from_millis(200))
            .await
            .expect("lease")
    );
    eventually("lease expires", || async {
        s.lease_holder("m").await.expect("holder").is_none()
    })
    .await;
    assert!(
        s.lease("m", "b", LONG).await.expect("lease"),
        "another holder takes an expired lease"
    );
    assert_eq!(
        s.lease_holder("m").await.expect("holder").as_deref(),
        Some("b")
    );
    s.unlease("m", "a")
        .await
        .expect("unlease by the former holder");
    assert_eq!(
        s.lease_holder("m").await.expect("holder").as_deref(),
        Some("b"),
        "the former holder cannot give up b's lease"
    );
    assert!(!s.lease("m", "a", LONG).await.expect("lease"));
    s.unlease("m", "b").await.expect("unlease");
    assert_eq!(s.lease_holder("m").await.expect("holder"), None, "given up");
}

both!(ttl_records_expire);
async fn ttl_records_expire(s: &dyn Store) {
    let ns = "contoso:throttle";
    s.put_ttl(ns, "mailbox", b"until=1", LONG)
        .await
        .expect("put_ttl");
    assert_eq!(
        s.get(ns, "mailbox").await.expect("get"),
        Some(b"until=1".to_vec())
    );
    assert_eq!(
        s.get("fabrikam:throttle", "mailbox").await.expect("get"),
        None
    );
    // ns/key pairs that read the same when joined stay apart.
    s.put_ttl("a:b", "c", b"1", LONG).await.expect("put_ttl");
    s.put_ttl("a", "b:c", b"2", LONG).await.expect("put_ttl");
    assert_eq!(s.get("a:b", "c").await.expect("get"), Some(b"1".to_vec()));
    assert_eq!(s.get("a", "b:c").await.expect("get"), Some(b"2".to_vec()));

    // Expiry.
    s.put_ttl(ns, "short", &[0, 255], Duration::from_millis(200))
        .await
        .expect("put_ttl");
    assert_eq!(s.get(ns, "short").await.expect("get"), Some(vec![0, 255]));
    eventually("ttl record expires", || async {
        s.get(ns, "short").await.expect("get").is_none()
    })
    .await;

    // put_ttl over a permanent record replaces it: after expiry nothing comes back.
    s.put(ns, "was-permanent", b"p").await.expect("put");
    s.put_ttl(ns, "was-permanent", b"t", Duration::from_millis(200))
        .await
        .expect("put_ttl");
    assert_eq!(
        s.get(ns, "was-permanent").await.expect("get"),
        Some(b"t".to_vec())
    );
    eventually("replacing ttl record expires", || async {
        s.get(ns, "was-permanent").await.expect("get").is_none()
    })
    .await;

    // put over a ttl record makes it permanent; put_ttl again renews with the new value.
    s.put_ttl(ns, "made-permanent", b"t", Duration::from_millis(200))
        .await
        .expect("put_ttl");
    s.put(ns, "made-permanent", b"p").await.expect("put");
    s.put_ttl(ns, "renewed", b"t1", Duration::from_millis(200))
        .await
        .expect("put_ttl");
    s.put_ttl(ns, "renewed", b"t2", LONG)
        .await
        .expect("put_ttl");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.get(ns, "made-permanent").await.expect("get"),
        Some(b"p".to_vec()),
        "a later put is permanent"
    );
    assert_eq!(
        s.get(ns, "renewed").await.expect("get"),
        Some(b"t2".to_vec()),
        "a later put_ttl sets the new value and ttl"
    );
    assert_eq!(
        s.list(ns).await.expect("list"),
        vec![("made-permanent".to_string(), b"p".to_vec())],
        "list shows permanent records only"
    );

    s.delete(ns, "mailbox").await.expect("delete");
    assert_eq!(
        s.get(ns, "mailbox").await.expect("get"),
        None,
        "delete removes a ttl record"
    );
}

both!(records_by_namespace);
async fn records_by_namespace(s: &dyn Store) {
    assert_eq!(s.get("contoso:shadow", "a").await.expect("get"), None);
    s.put("contoso:shadow", "b", b"B1").await.expect("put");
    s.put("contoso:shadow", "a", &[0, 159, 255])
        .await
        .expect("put binary");
    s.put("contoso:link", "a", b"L").await.expect("put");
    s.put("fabrikam:shadow", "a", b"F").await.expect("put");
    s.put("contoso:shadow", "b", b"B2")
        .await
        .expect("overwrite");
    assert_eq!(
        s.get("contoso:shadow", "a").await.expect("get"),
        Some(vec![0, 159, 255])
    );
    assert_eq!(
        s.get("contoso:shadow", "b").await.expect("get"),
        Some(b"B2".to_vec())
    );
    assert_eq!(
        s.list("contoso:shadow").await.expect("list"),
        vec![
            ("a".to_string(), vec![0, 159, 255]),
            ("b".to_string(), b"B2".to_vec())
        ]
    );
    assert_eq!(
        s.list("contoso:link").await.expect("list"),
        vec![("a".to_string(), b"L".to_vec())]
    );
    s.delete("contoso:shadow", "a").await.expect("delete");
    s.delete("contoso:shadow", "missing")
        .await
        .expect("delete missing is fine");
    assert_eq!(s.get("contoso:shadow", "a").await.expect("get"), None);
    assert_eq!(
        s.get("fabrikam:shadow", "a").await.expect("get"),
        Some(b"F".to_vec())
    );
    assert_eq!(s.list("contoso:shadow").await.expect("list").len(), 1);
    assert!(s.list("nobody:shadow").await.expect("list").is_empty());
    // A namespace that is a prefix of another does not see its records.
    s.put("t", "k", b"1").await.expect("put");
    s.put("t2", "k", b"2").await.expect("put");
    assert_eq!(
        s.list("t").await.expect("list"),
        vec![("k".to_string(), b"1".to_vec())]
    );
}

both!(append_and_tail_are_bounded);
async fn append_and_tail_are_bounded(s: &dyn Store) {
    for i in 1..=5 {
        s.append("contoso:audit", format!("e{i}").as_bytes(), 3)
            .await
            .expect("append");
    }
    s.append("fabrikam:audit", b"f1", 3).await.expect("append");
    let all = s.tail("contoso:audit", 10).await.expect("tail");
    assert_eq!(
        all,
        vec![b"e5".to_vec(), b"e4".to_vec(), b"e3".to_vec()],
        "newest first, capped at 3"
    );
    assert_eq!(
        s.tail("contoso:audit", 2).await.expect("tail"),
        vec![b"e5".to_vec(), b"e4".to_vec()]
    );
    assert!(s.tail("contoso:audit", 0).await.expect("tail").is_empty());
    assert_eq!(
        s.tail("fabrikam:audit", 10).await.expect("tail"),
        vec![b"f1".to_vec()]
    );
    assert!(s.tail("nobody:audit", 10).await.expect("tail").is_empty());
}

#[tokio::test]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    {
        let s = EmbeddedStore::open(&path).expect("open");
        s.put("t:link", "k", b"v").await.expect("put");
        s.complete("evt", LONG).await.expect("complete");
        assert!(s.lease("leader", "a", LONG).await.expect("lease"));
        s.append("t:audit", b"x", 5).await.expect("append");
        s.put_ttl("t:throttle", "m", b"w", LONG)
            .await
            .expect("put_ttl");
    }
    let s = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        s.get("t:link", "k").await.expect("get"),
        Some(b"v".to_vec())
    );
    assert_eq!(s.claim("evt", LONG).await.expect("claim"), Claim::Done);
    assert!(
        !s.lease("leader", "b", LONG).await.expect("lease"),
        "lease survives a restart"
    );
    assert_eq!(
        s.lease_holder("leader").await.expect("holder").as_deref(),
        Some("a")
    );
    assert_eq!(
        s.get("t:throttle", "m").await.expect("get"),
        Some(b"w".to_vec()),
        "ttl record survives a restart"
    );
    assert_eq!(
        s.tail("t:audit", 5).await.expect("tail"),
        vec![b"x".to_vec()]
    );
}

#[tokio::test]
async fn redis_flush_and_dropped_connection_leave_a_working_empty_store() {
    let p = prefix();
    let s = redis_at(REDIS_FLUSH_URL, &p).await;
    s.put("t:link", "k", b"v").await.expect("put");
    s.complete("evt", LONG).await.expect("complete");
    assert!(s.lease("leader", "a", LONG).await.expect("lease"));

    let client = redis::Client::open(REDIS_FLUSH_URL).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut admin)
        .await
        .expect("flushdb");
    // Everything is gone, and the store keeps working on the empty database.
    assert_eq!(s.get("t:link", "k").await.expect("get"), None);
    assert_eq!(s.claim("evt", LONG).await.expect("claim"), Claim::Claimed);
    assert!(s.lease("leader", "b", LONG).await.expect("lease"));

    // The server drops our connection: the manager reconnects.
    let id = s.connection_id().await.expect("client id");
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin)
        .await
        .expect("client kill");
    let mut recovered = false;
    for _ in 0..50 {
        match s.put("t:link", "k2", b"v2").await {
            Ok(()) => {
                recovered = true;
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("unexpected error after a dropped connection: {e}"),
        }
    }
    assert!(
        recovered,
        "store never recovered from the dropped connection"
    );
    assert_ne!(
        s.connection_id().await.expect("client id"),
        id,
        "a new connection"
    );
    assert_eq!(
        s.get("t:link", "k2").await.expect("get"),
        Some(b"v2".to_vec())
    );
    redis_cleanup(REDIS_FLUSH_URL, &p).await;
}

#[tokio::test]
async fn redis_unreachable_is_a_typed_error() {
    let r = RedisStore::connect("redis://127.0.0.1:1", &prefix()).await;
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "{:?}",
        r.err()
    );
}
