//! Events: what the receiver, the scheduler and the admin API put on the queue for workers.
//!
//! The queue payload is a versioned, tagged envelope (`{"v":1,...}`): a later change adds a `V2`
//! beside `V1` instead of changing `V1`, so events queued by an older release stay readable.

use std::collections::BTreeMap;

use cgc_backends::Envelope;
use cgc_core::Entity;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an event came from (also the audit "cause").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Notification,
    Delta,
    CrmPoll,
    Lifecycle,
    /// The admin API (conflict resolution).
    Admin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

impl Change {
    pub fn parse(s: &str) -> Option<Change> {
        match s.trim().to_ascii_lowercase().as_str() {
            "created" => Some(Change::Created),
            "updated" => Some(Change::Updated),
            "deleted" => Some(Change::Deleted),
            _ => None,
        }
    }
}

/// What happened, to which item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventKind {
    /// A Graph item changed (notification or delta result).
    GraphItem {
        entity: Entity,
        item_id: String,
        change: Change,
        /// `@odata.etag` / changeKey as reported, part of the idempotency key.
        etag: Option<String>,
        /// The To Do list of a task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list_id: Option<String>,
    },
    /// A CRM record changed (CRM poller).
    CrmRecord {
        entity: Entity,
        crm_id: u64,
        /// `UpdDate UpdTime DelCd` as read, part of the idempotency key.
        stamp: String,
        /// Found by the mailbox's first CRM poll (no watermark yet: a rep just switched on, or a
        /// lost store): the invitation guard holds writes of it that would mail attendees.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        first_sync: bool,
    },
    /// An operator's resolution of a parked conflict (admin API), carried out on the mailbox's
    /// partition so it never races the worker handling the same pair's echoes.
    Resolve {
        conflict_id: String,
        /// `{"take": "crm"}`, `{"take": "graph"}`, `{"values": {...}}` or `{"link": "<crm id>"}`.
        resolution: serde_json::Value,
        by: String,
    },
    /// A Graph lifecycle notification for one subscription.
    Lifecycle {
        #[serde(rename = "lifecycle_subscription_id")]
        subscription_id: String,
        lifecycle_event: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventV1 {
    pub tenant: String,
    pub mailbox: String,
    pub source: Source,
    #[serde(flatten)]
    pub kind: EventKind,
    pub observed_at: DateTime<Utc>,
    /// Subscription that delivered the notification, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum QueueEvent {
    #[serde(rename = "1")]
    V1(EventV1),
}

#[derive(Debug, thiserror::Error)]
#[error("unreadable event payload: {0}")]
pub struct DecodeError(String);

impl EventV1 {
    /// Partition key: one mailbox is handled by one worker at a time.
    pub fn partition_key(&self) -> String {
        format!("{}|{}", self.tenant, self.mailbox.to_ascii_lowercase())
    }

    /// Key that makes a re-delivered or duplicated event a no-op.
    pub fn idempotency_key(&self) -> String {
        match &self.kind {
            EventKind::GraphItem {
                entity,
                item_id,
                change,
                etag,
                ..
            } => format!(
                "{}:g:{}:{}:{:?}:{}",
                self.tenant,
                entity.as_str(),
                item_id,
                change,
                etag.as_deref().unwrap_or("-")
            ),
            EventKind::CrmRecord {
                entity,
                crm_id,
                stamp,
                ..
            } => format!("{}:c:{}:{crm_id}:{stamp}", self.tenant, entity.as_str()),
            EventKind::Lifecycle {
                subscription_id,
                lifecycle_event,
            } => format!(
                "{}:l:{subscription_id}:{lifecycle_event}:{}",
                self.tenant,
                self.observed_at.timestamp()
            ),
            EventKind::Resolve { conflict_id, .. } => format!(
                "{}:r:{conflict_id}:{}",
                self.tenant,
                self.observed_at.timestamp_millis()
            ),
        }
    }

    /// An event without an etag or stamp cannot be de-duplicated safely by key: it is always processed
    /// (reconciliation by content still makes it a no-op when nothing changed).
    pub fn dedupable(&self) -> bool {
        match &self.kind {
            EventKind::GraphItem { etag, .. } => etag.is_some(),
            // A CRM record can come back to an earlier content (A → B → A): a key made of its
            // content would take the revert for a duplicate. The poll queues each version once
            // (`state::LastVersions`); a repeat is a no-op by content.
            EventKind::CrmRecord { .. } => false,
            EventKind::Lifecycle { .. } | EventKind::Resolve { .. } => false,
        }
    }

    pub fn into_envelope(self, headers: BTreeMap<String, String>) -> Envelope {
        let key = self.partition_key();
        let payload = serde_json::to_vec(&QueueEvent::V1(self)).unwrap_or_default();
        Envelope {
            id: uuid::Uuid::now_v7().to_string(),
            key,
            payload,
            headers,
            attempt: 0,
        }
    }
}

pub fn decode(payload: &[u8]) -> Result<EventV1, DecodeError> {
    match serde_json::from_slice::<QueueEvent>(payload) {
        Ok(QueueEvent::V1(e)) => Ok(e),
        Err(e) => Err(DecodeError(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> EventV1 {
        EventV1 {
            tenant: "contoso".into(),
            mailbox: "Rep1@Contoso.com".into(),
            source: Source::Notification,
            kind: EventKind::GraphItem {
                entity: Entity::Appointment,
                item_id: "AAMk1".into(),
                change: Change::Updated,
                etag: Some("W/\"ck1\"".into()),
                list_id: None,
            },
            observed_at: Utc::now(),
            subscription_id: Some("sub1".into()),
        }
    }

    #[test]
    fn envelope_round_trip_is_versioned() {
        let e = ev();
        let env = e.clone().into_envelope(BTreeMap::new());
        let text = String::from_utf8(env.payload.clone()).unwrap();
        assert!(text.contains("\"v\":\"1\""), "{text}");
        assert_eq!(decode(&env.payload).unwrap(), e);
        assert_eq!(env.key, "contoso|rep1@contoso.com");
    }

    #[test]
    fn lifecycle_event_round_trips() {
        let e = EventV1 {
            kind: EventKind::Lifecycle {
                subscription_id: "sub1".into(),
                lifecycle_event: "missed".into(),
            },
            source: Source::Lifecycle,
            ..ev()
        };
        let env = e.clone().into_envelope(BTreeMap::new());
        assert_eq!(decode(&env.payload).unwrap(), e);
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        assert!(decode(b"{not json").is_err());
        assert!(decode(br#"{"v":"9"}"#).is_err());
    }

    #[test]
    fn idempotency_key_differs_by_etag() {
        let a = ev();
        let mut b = ev();
        if let EventKind::GraphItem { etag, .. } = &mut b.kind {
            *etag = Some("W/\"ck2\"".into());
        }
        assert_ne!(a.idempotency_key(), b.idempotency_key());
        assert_eq!(a.idempotency_key(), ev().idempotency_key());
    }
}
