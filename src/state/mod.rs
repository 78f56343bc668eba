//! Typed records kept in the store: links, shadows, subscriptions, delta links, watermarks,
//! mailboxes, conflicts and the audit trail. The `Store` trait itself only knows bytes.

use std::sync::Arc;

use cgc_backends::{Store, StoreError};
use cgc_core::{Canonical, ConflictField, Entity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

mod invitations;
pub mod lease_names;
mod reach;
mod subscriptions;
pub mod undo;
mod versions;

pub use invitations::{HeldInvitation, HoldReason, InvitationRecord, ReleasedInvitation};
pub use reach::ContactReach;
pub use subscriptions::{SubscriptionCache, SubscriptionRecord};
pub use undo::{UndoNote, UndoSeal, WriteOp};
pub use versions::LastVersions;

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
    /// For an occurrence or exception of a series: its master and the day it was planned for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SeriesSlot>,
    /// The Graph item is a series master.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub series: bool,
}

/// Where an occurrence or exception sits in its series: the master's Graph id and the day (in
/// the series' zone, `YYYY-MM-DD`) the occurrence was planned for, whatever an edit did to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesSlot {
    pub master: String,
    pub day: String,
}

impl SeriesSlot {
    /// The slot of an occurrence or exception (none for a single event or a master).
    pub fn of(item: &serde_json::Value) -> Option<SeriesSlot> {
        use cgc_core::series::{self, Member};
        if !Member::of(item).is_instance() {
            return None;
        }
        Some(SeriesSlot {
            master: series::master_id(item)?.to_string(),
            day: series::original_day(item, item)?
                .format("%Y-%m-%d")
                .to_string(),
        })
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
    /// Stable id (`GET /admin/audit`, `POST /admin/audit/{id}/undo`); records written before ids
    /// existed get one derived from their content when read.
    #[serde(default)]
    pub id: String,
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
    /// The write this field was part of and what the written side held before it (undo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoNote>,
}

/// Typed access to the store.
#[derive(Clone)]
pub struct State {
    store: Arc<dyn Store>,
    /// CRM record versions this process queued lately (not in the store).
    queued: Arc<LastVersions>,
    /// Graph change keys this process's writes produced lately (not in the store).
    written: Arc<LastVersions>,
}

fn ser<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn de<T: DeserializeOwned>(ns: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{ns}/{key}: {e}")))
}

fn invitations_ns(tenant: &str) -> String {
    format!("{tenant}:invitations")
}

fn reach_ns(tenant: &str) -> String {
    format!("{tenant}:contact_reach")
}

impl State {
    pub fn new(store: Arc<dyn Store>) -> Self {
        State {
            store,
            queued: Default::default(),
            written: Default::default(),
        }
    }

    /// The CRM record versions this process queued lately.
    pub fn queued_versions(&self) -> &LastVersions {
        &self.queued
    }

    /// The Graph change keys this process's own writes produced lately.
    pub fn written_versions(&self) -> &LastVersions {
        &self.written
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

    // ---- delta tokens, watermarks ----

    /// The delta token of one delta query (Graph's `@odata.deltaLink`, kept whole), by key.
    pub async fn delta_token(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.get(&format!("{tenant}:delta"), key).await
    }
    pub async fn put_delta_token(
        &self,
        tenant: &str,
        key: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        self.store
            .put(&format!("{tenant}:delta"), key, &ser(&token))
            .await
    }
    pub async fn remove_delta_token(&self, tenant: &str, key: &str) -> Result<(), StoreError> {
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
            let mut rec: AuditRecord = de(&ns, "audit", &b)?;
            if rec.id.is_empty() {
                rec.id = undo::derived_audit_id(&b);
            }
            out.push(rec);
        }
        Ok(out)
    }
}

impl State {
    // ---- the invitation guard's records, the contact scope's reach ----

    /// The guard's record of a mailbox (an empty one when there is none yet).
    pub async fn invitations(
        &self,
        tenant: &str,
        mailbox: &str,
    ) -> Result<InvitationRecord, StoreError> {
        let key = mailbox.to_ascii_lowercase();
        Ok(self
            .get::<InvitationRecord>(&invitations_ns(tenant), &key)
            .await?
            .unwrap_or_else(|| InvitationRecord {
                tenant: tenant.to_string(),
                mailbox: key,
                ..InvitationRecord::default()
            }))
    }

    pub async fn put_invitations(&self, rec: &InvitationRecord) -> Result<(), StoreError> {
        self.store
            .put(
                &invitations_ns(&rec.tenant),
                &rec.mailbox.to_ascii_lowercase(),
                &ser(rec),
            )
            .await
    }

    /// Every mailbox record of a tenant.
    pub async fn all_invitations(&self, tenant: &str) -> Result<Vec<InvitationRecord>, StoreError> {
        self.list(&invitations_ns(tenant)).await
    }

    pub async fn contact_reach(
        &self,
        tenant: &str,
        mailbox: &str,
    ) -> Result<ContactReach, StoreError> {
        Ok(self
            .get(&reach_ns(tenant), &mailbox.to_ascii_lowercase())
            .await?
            .unwrap_or_default())
    }

    pub async fn put_contact_reach(
        &self,
        tenant: &str,
        mailbox: &str,
        reach: &ContactReach,
    ) -> Result<(), StoreError> {
        self.store
            .put(
                &reach_ns(tenant),
                &mailbox.to_ascii_lowercase(),
                &ser(reach),
            )
            .await
    }
}

fn undo_seal_ns(tenant: &str) -> String {
    format!("{tenant}:undo-seal")
}

fn undo_seal_keys(h: &UndoSeal) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(c) = h.crm_id {
        keys.push(State::crm_key(h.entity, &h.mailbox, c));
    }
    if let Some(g) = &h.graph_id {
        keys.push(State::graph_key(h.entity, &h.mailbox, g));
    }
    keys
}

impl State {
    // ---- undo seals (see `undo.rs`) ----

    /// The undo seal on a pair, found by either side's id.
    pub async fn undo_seal(
        &self,
        tenant: &str,
        entity: Entity,
        mailbox: &str,
        crm_id: Option<u64>,
        graph_id: Option<&str>,
    ) -> Result<Option<UndoSeal>, StoreError> {
        let ns = undo_seal_ns(tenant);
        if let Some(c) = crm_id
            && let Some(h) = self.get(&ns, &Self::crm_key(entity, mailbox, c)).await?
        {
            return Ok(Some(h));
        }
        match graph_id.filter(|g| !g.is_empty()) {
            Some(g) => self.get(&ns, &Self::graph_key(entity, mailbox, g)).await,
            None => Ok(None),
        }
    }

    pub async fn put_undo_seal(&self, tenant: &str, h: &UndoSeal) -> Result<(), StoreError> {
        let ns = undo_seal_ns(tenant);
        for k in undo_seal_keys(h) {
            self.store.put(&ns, &k, &ser(h)).await?;
        }
        Ok(())
    }

    pub async fn remove_undo_seal(&self, tenant: &str, h: &UndoSeal) -> Result<(), StoreError> {
        let ns = undo_seal_ns(tenant);
        for k in undo_seal_keys(h) {
            self.store.delete(&ns, &k).await?;
        }
        Ok(())
    }
}
