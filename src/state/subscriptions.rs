//! Graph subscriptions as the store keeps them (the clientState only as an HMAC), and the
//! receiver's short-lived cache of subscription look-ups.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A Graph subscription of one mailbox. Its `clientState` is kept only as an HMAC (SHA-256, keyed
/// by the subscription id): a copy of the store does not let anyone forge notifications.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub id: String,
    pub tenant: String,
    pub mailbox: String,
    pub resource: String,
    /// Hex HMAC-SHA256 of the clientState, keyed by `id`.
    #[serde(default)]
    client_state_mac: String,
    /// The clientState in plain text, as records written before the HMAC hold it: read and
    /// compared, replaced by the HMAC the next time the record is stored, never written.
    #[serde(default, rename = "client_state", skip_serializing)]
    legacy_client_state: String,
    pub expiration: DateTime<Utc>,
    pub created: DateTime<Utc>,
}

impl std::fmt::Debug for SubscriptionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("mailbox", &self.mailbox)
            .field("resource", &self.resource)
            .field("expiration", &self.expiration)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

fn client_state_mac(id: &str, client_state: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(id.as_bytes()).expect("HMAC takes any key");
    mac.update(client_state.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl SubscriptionRecord {
    /// A record for a subscription Graph created with `client_state` (kept only as its HMAC).
    pub fn new(
        id: &str,
        tenant: &str,
        mailbox: &str,
        resource: &str,
        client_state: &str,
        expiration: DateTime<Utc>,
        created: DateTime<Utc>,
    ) -> Self {
        SubscriptionRecord {
            id: id.to_string(),
            tenant: tenant.to_string(),
            mailbox: mailbox.to_string(),
            resource: resource.to_string(),
            client_state_mac: client_state_mac(id, client_state),
            legacy_client_state: String::new(),
            expiration,
            created,
        }
    }

    /// Whether a notification's `clientState` is this subscription's, compared in constant time.
    pub fn client_state_matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        if self.client_state_mac.is_empty() {
            // A record from before the HMAC: the plain value (never an empty one).
            return !self.legacy_client_state.is_empty()
                && bool::from(given.as_bytes().ct_eq(self.legacy_client_state.as_bytes()));
        }
        let mac = client_state_mac(&self.id, given);
        mac.as_bytes()
            .ct_eq(self.client_state_mac.as_bytes())
            .into()
    }

    /// The record as it is stored: a plain clientState of an older record becomes its HMAC.
    pub(super) fn upgraded(&self) -> SubscriptionRecord {
        let mut r = self.clone();
        if r.client_state_mac.is_empty() && !r.legacy_client_state.is_empty() {
            r.client_state_mac = client_state_mac(&r.id, &r.legacy_client_state);
        }
        r.legacy_client_state.clear();
        r
    }
}

/// How long a subscription look-up is remembered (known ones, and unknown ones for less).
const KNOWN_TTL: Duration = Duration::from_secs(10);
const UNKNOWN_TTL: Duration = Duration::from_secs(2);

/// Recent subscription look-ups, so a flood of notifications for one id costs one store read.
#[derive(Default)]
pub struct SubscriptionCache {
    entries: Mutex<HashMap<String, (Option<SubscriptionRecord>, Instant)>>,
}

impl SubscriptionCache {
    pub(crate) fn get(&self, id: &str) -> Option<Option<SubscriptionRecord>> {
        let m = self.entries.lock().ok()?;
        let (rec, at) = m.get(id)?;
        let ttl = if rec.is_some() {
            KNOWN_TTL
        } else {
            UNKNOWN_TTL
        };
        (at.elapsed() < ttl).then(|| rec.clone())
    }

    pub(crate) fn put(&self, id: &str, rec: Option<SubscriptionRecord>) {
        if let Ok(mut m) = self.entries.lock() {
            if m.len() > 10_000 {
                m.retain(|_, (r, at)| {
                    at.elapsed() < if r.is_some() { KNOWN_TTL } else { UNKNOWN_TTL }
                });
                if m.len() > 10_000 {
                    m.clear();
                }
            }
            m.insert(id.to_string(), (rec, Instant::now()));
        }
    }

    /// Forgets one id (its subscription was removed or replaced).
    pub fn forget(&self, id: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(id);
        }
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn cache_remembers_known_longer_than_unknown() {
        let c = SubscriptionCache::default();
        assert!(c.get("a").is_none(), "nothing cached yet");
        c.put("a", None);
        assert_eq!(
            c.get("a").map(|r| r.is_none()),
            Some(true),
            "unknown remembered briefly"
        );
        c.forget("a");
        assert!(c.get("a").is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-12-03T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn hmac_sha256_is_the_standard_one() {
        // RFC 4231, test case 2.
        assert_eq!(
            client_state_mac("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_client_state_is_stored_only_as_its_hmac() {
        let secret = "9f1c2e4a6b8d0f1e3c5a7b9d2f4e6a8c0b1d3f5e7a9c2e4b";
        let r =
            SubscriptionRecord::new("sub-1", "t", "m@x", "users/m@x/events", secret, at(), at());
        let stored = String::from_utf8(super::super::ser(&r.upgraded())).unwrap();
        assert!(!stored.contains(secret), "{stored}");
        assert!(!format!("{r:?}").contains(secret));
        assert!(r.client_state_matches(secret));
        assert!(!r.client_state_matches("not-the-secret"));
        assert!(!r.client_state_matches(""));
        let again: SubscriptionRecord = serde_json::from_slice(stored.as_bytes()).unwrap();
        assert!(
            again.client_state_matches(secret),
            "read back from the store"
        );
        let other =
            SubscriptionRecord::new("sub-2", "t", "m@x", "users/m@x/events", secret, at(), at());
        assert_ne!(
            other.client_state_mac, r.client_state_mac,
            "keyed by the subscription id"
        );
    }

    #[test]
    fn a_record_from_before_the_hmac_is_still_checked_then_upgraded() {
        let old = serde_json::json!({"id": "sub-9", "tenant": "t", "mailbox": "m@x",
            "resource": "users/m@x/events", "client_state": "old-secret",
            "expiration": "2026-12-09T10:00:00Z", "created": "2026-12-03T10:00:00Z"});
        let r: SubscriptionRecord = serde_json::from_value(old).unwrap();
        assert!(r.client_state_matches("old-secret"));
        assert!(!r.client_state_matches("other"));
        let stored = String::from_utf8(super::super::ser(&r.upgraded())).unwrap();
        assert!(!stored.contains("old-secret"), "{stored}");
        let again: SubscriptionRecord = serde_json::from_slice(stored.as_bytes()).unwrap();
        assert!(again.client_state_matches("old-secret"));
        let empty = serde_json::json!({"id": "sub-8", "tenant": "t", "mailbox": "m@x",
            "resource": "r", "expiration": "2026-12-09T10:00:00Z", "created": "2026-12-03T10:00:00Z"});
        let r: SubscriptionRecord = serde_json::from_value(empty).unwrap();
        assert!(
            !r.client_state_matches(""),
            "no secret stored: nothing matches"
        );
    }
}
