//! Typed records kept in the store: links, shadows, subscriptions, delta links, watermarks,
//! mailboxes, conflicts and the audit trail. The `Store` trait itself only knows bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cgc_backends::{Store, StoreError};
use cgc_core::{Canonical, ConflictField, Entity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// How many audit entries are kept per tenant (oldest dropped first).
pub const AUDIT_CAP: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub entity: Entity,
    pub mailbox: String,
    pub crm_id: u64,
    pub graph_id: String,
    #[serde(default)]
    pub ical_uid: Option<String>,
    /// The mailbox owner organises the event (decides what a Graph delete means).
    #[serde(default)]
    pub organizer: bool,
    #[serde(default)]
    pub list_id: Option<String>,
}

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
    fn upgraded(&self) -> SubscriptionRecord {
        let mut r = self.clone();
        if r.client_state_mac.is_empty() && !r.legacy_client_state.is_empty() {
            r.client_state_mac = client_state_mac(&r.id, &r.legacy_client_state);
        }
        r.legacy_client_state.clear();
        r
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MailboxRecord {
    pub mailbox: String,
    pub rep_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub id: String,
    pub tenant: String,
    pub mailbox: String,
    pub entity: Entity,
    pub crm_id: String,
    pub graph_id: String,
    pub fields: Vec<ConflictField>,
    pub opened_at: DateTime<Utc>,
    /// An ambiguous match (entity `contact`): the CRM records the Graph item could belong to.
    /// The operator picks one with `{"link": "<id>"}`; until then nothing is created or linked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub tenant: String,
    pub mailbox: String,
    pub crm_id: Option<u64>,
    pub graph_id: Option<String>,
    pub event_id: String,
    #[serde(flatten)]
    pub entry: cgc_core::AuditEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

/// Typed access to the store.
#[derive(Clone)]
pub struct State {
    store: Arc<dyn Store>,
}

fn ser<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn de<T: DeserializeOwned>(ns: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{ns}/{key}: {e}")))
}

impl State {
    pub fn new(store: Arc<dyn Store>) -> Self {
        State { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn get<T: DeserializeOwned>(&self, ns: &str, key: &str) -> Result<Option<T>, StoreError> {
        match self.store.get(ns, key).await? {
            Some(b) => Ok(Some(de(ns, key, &b)?)),
            None => Ok(None),
        }
    }

    async fn list<T: DeserializeOwned>(&self, ns: &str) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.store.list(ns).await? {
            out.push(de(ns, &k, &v)?);
        }
        Ok(out)
    }

    // ---- links: stored under the Graph id and under the CRM id ----

    fn link_ns(tenant: &str) -> String {
        format!("{tenant}:link")
    }
    fn graph_key(entity: Entity, mailbox: &str, graph_id: &str) -> String {
        format!(
            "{}:g:{}:{graph_id}",
            entity.as_str(),
            mailbox.to_ascii_lowercase()
        )
    }
    fn crm_key(entity: Entity, mailbox: &str, crm_id: u64) -> String {
        format!(
            "{}:c:{}:{crm_id}",
            entity.as_str(),
            mailbox.to_ascii_lowercase()
        )
    }

    pub async fn link_by_graph(
        &self,
        tenant: &str,
        entity: Entity,
        mailbox: &str,
        graph_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        self.get(
            &Self::link_ns(tenant),
            &Self::graph_key(entity, mailbox, graph_id),
        )
        .await
    }

    pub async fn link_by_crm(
        &self,
        tenant: &str,
        entity: Entity,
        mailbox: &str,
        crm_id: u64,
    ) -> Result<Option<Link>, StoreError> {
        self.get(
            &Self::link_ns(tenant),
            &Self::crm_key(entity, mailbox, crm_id),
        )
        .await
    }

    pub async fn put_link(&self, tenant: &str, link: &Link) -> Result<(), StoreError> {
        let ns = Self::link_ns(tenant);
        let bytes = ser(link);
        self.store
            .put(
                &ns,
                &Self::graph_key(link.entity, &link.mailbox, &link.graph_id),
                &bytes,
            )
            .await?;
        self.store
            .put(
                &ns,
                &Self::crm_key(link.entity, &link.mailbox, link.crm_id),
                &bytes,
            )
            .await
    }

    pub async fn remove_link(&self, tenant: &str, link: &Link) -> Result<(), StoreError> {
        let ns = Self::link_ns(tenant);
        self.store
            .delete(
                &ns,
                &Self::graph_key(link.entity, &link.mailbox, &link.graph_id),
            )
            .await?;
        self.store
            .delete(&ns, &Self::crm_key(link.entity, &link.mailbox, link.crm_id))
            .await?;
        self.store
            .delete(
                &format!("{tenant}:shadow"),
                &Self::crm_key(link.entity, &link.mailbox, link.crm_id),
            )
            .await
    }

    /// All links of a tenant (each once).
    pub async fn links(&self, tenant: &str) -> Result<Vec<Link>, StoreError> {
        let ns = Self::link_ns(tenant);
        let mut out = Vec::new();
        for (k, v) in self.store.list(&ns).await? {
            if k.contains(":c:") {
                out.push(de(&ns, &k, &v)?);
            }
        }
        Ok(out)
    }

    // ---- shadows ----

    pub async fn shadow(&self, tenant: &str, link: &Link) -> Result<Option<Canonical>, StoreError> {
        self.get(
            &format!("{tenant}:shadow"),
            &Self::crm_key(link.entity, &link.mailbox, link.crm_id),
        )
        .await
    }

    pub async fn put_shadow(
        &self,
        tenant: &str,
        link: &Link,
        shadow: &Canonical,
    ) -> Result<(), StoreError> {
        self.store
            .put(
                &format!("{tenant}:shadow"),
                &Self::crm_key(link.entity, &link.mailbox, link.crm_id),
                &ser(shadow),
            )
            .await
    }

    // ---- subscriptions (global namespace: the receiver knows only the id) ----

    pub async fn subscription(&self, id: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        self.get("subscriptions", id).await
    }
    pub async fn put_subscription(&self, s: &SubscriptionRecord) -> Result<(), StoreError> {
        self.store
            .put("subscriptions", &s.id, &ser(&s.upgraded()))
            .await
    }
    pub async fn remove_subscription(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete("subscriptions", id).await
    }
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        self.list("subscriptions").await
    }

    // ---- delta links, watermarks ----

    pub async fn delta_link(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.get(&format!("{tenant}:delta"), key).await
    }
    pub async fn put_delta_link(
        &self,
        tenant: &str,
        key: &str,
        link: &str,
    ) -> Result<(), StoreError> {
        self.store
            .put(&format!("{tenant}:delta"), key, &ser(&link))
            .await
    }
    pub async fn remove_delta_link(&self, tenant: &str, key: &str) -> Result<(), StoreError> {
        self.store.delete(&format!("{tenant}:delta"), key).await
    }

    pub async fn watermark(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.get(&format!("{tenant}:watermark"), key).await
    }
    pub async fn put_watermark(
        &self,
        tenant: &str,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.store
            .put(&format!("{tenant}:watermark"), key, &ser(&at))
            .await
    }

    // ---- mailboxes ----

    pub async fn mailboxes(&self, tenant: &str) -> Result<Vec<MailboxRecord>, StoreError> {
        self.list(&format!("{tenant}:mailboxes")).await
    }
    pub async fn put_mailbox(&self, tenant: &str, m: &MailboxRecord) -> Result<(), StoreError> {
        self.store
            .put(
                &format!("{tenant}:mailboxes"),
                &m.mailbox.to_ascii_lowercase(),
                &ser(m),
            )
            .await
    }
    pub async fn remove_mailbox(&self, tenant: &str, mailbox: &str) -> Result<(), StoreError> {
        self.store
            .delete(
                &format!("{tenant}:mailboxes"),
                &mailbox.to_ascii_lowercase(),
            )
            .await
    }

    // ---- conflicts ----

    pub async fn conflicts(&self) -> Result<Vec<ConflictRecord>, StoreError> {
        let mut v: Vec<ConflictRecord> = self.list("conflicts").await?;
        v.sort_by(|a, b| a.opened_at.cmp(&b.opened_at));
        Ok(v)
    }
    pub async fn conflict(&self, id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        self.get("conflicts", id).await
    }
    pub async fn put_conflict(&self, c: &ConflictRecord) -> Result<(), StoreError> {
        self.store.put("conflicts", &c.id, &ser(c)).await
    }
    pub async fn remove_conflict(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete("conflicts", id).await
    }

    /// Conflict id for one linked pair: one open conflict per pair, updated when raised again.
    pub fn conflict_id(tenant: &str, entity: Entity, mailbox: &str, crm_id: u64) -> String {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(
            format!(
                "{tenant}|{}|{}|{crm_id}",
                entity.as_str(),
                mailbox.to_ascii_lowercase()
            )
            .as_bytes(),
        );
        format!("cf-{}", &hex::encode(h)[..20])
    }

    /// Conflict id for an unlinked Graph item that matches several CRM records.
    pub fn match_conflict_id(
        tenant: &str,
        entity: Entity,
        mailbox: &str,
        graph_id: &str,
    ) -> String {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(
            format!(
                "{tenant}|{}|{}|match|{graph_id}",
                entity.as_str(),
                mailbox.to_ascii_lowercase()
            )
            .as_bytes(),
        );
        format!("cf-{}", &hex::encode(h)[..20])
    }

    // ---- audit ----

    pub async fn audit(&self, tenant: &str, rec: &AuditRecord) -> Result<(), StoreError> {
        self.store
            .append(&format!("{tenant}:audit"), &ser(rec), AUDIT_CAP)
            .await
    }
    pub async fn audit_tail(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let ns = format!("{tenant}:audit");
        let mut out = Vec::new();
        for b in self.store.tail(&ns, limit).await? {
            out.push(de(&ns, "audit", &b)?);
        }
        Ok(out)
    }
}

/// Names of the store leases that guard a create or an archive; their key formats live here.
pub mod lease_names {
    use cgc_core::Entity;

    /// Creating the CRM record of a meeting, by its iCalUId (one meeting seen by several synced
    /// reps has one iCalUId but different mailboxes, so different partitions).
    pub fn create_by_ical_uid(tenant: &str, uid: &str) -> String {
        format!("{tenant}:create:ical:{uid}")
    }

    /// Creating the CRM record of any other Graph item, by its Graph id.
    pub fn create_from_graph(tenant: &str, entity: Entity, graph_id: &str) -> String {
        format!("{tenant}:create:{}:g:{graph_id}", entity.as_str())
    }

    /// Creating the Graph item of a CRM record in one mailbox.
    pub fn create_from_crm(tenant: &str, entity: Entity, crm_id: u64, mailbox: &str) -> String {
        format!(
            "{tenant}:create:{}:c:{crm_id}:{}",
            entity.as_str(),
            mailbox.to_ascii_lowercase()
        )
    }

    /// Archiving one message (by its internetMessageId), from whichever mailbox.
    pub fn archive(tenant: &str, internet_message_id: &str) -> String {
        format!("{tenant}:archive:{internet_message_id}")
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
mod subscription_cache_tests {
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
mod lease_name_tests {
    use super::lease_names::*;
    use cgc_core::Entity;

    #[test]
    fn lease_names_keep_their_formats_and_tell_kinds_and_mailboxes_apart() {
        assert_eq!(create_by_ical_uid("t", "U1"), "t:create:ical:U1");
        assert_eq!(
            create_from_graph("t", Entity::Contact, "G1"),
            format!("t:create:{}:g:G1", Entity::Contact.as_str())
        );
        assert_eq!(
            create_from_crm("t", Entity::Appointment, 7, "Rep1@Contoso.com"),
            create_from_crm("t", Entity::Appointment, 7, "rep1@contoso.com"),
            "one mailbox however it is spelt"
        );
        assert_ne!(
            create_from_crm("t", Entity::Appointment, 7, "a@x"),
            create_from_crm("t", Entity::Appointment, 7, "b@x")
        );
        assert_eq!(archive("t", "<m@x>"), "t:archive:<m@x>");
    }
}

#[cfg(test)]
mod subscription_record_tests {
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
        let stored = String::from_utf8(ser(&r.upgraded())).unwrap();
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
        let stored = String::from_utf8(ser(&r.upgraded())).unwrap();
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
