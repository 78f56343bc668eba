//! The mapping context of a pass: which attendee addresses are CRM persons (looked up once per
//! address and cached for a while, bounded) or synced reps of the tenant.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cgc_core::mapping::records;
use cgc_core::{Canonical, Entity, MapContext};
use cgc_crm::{Cond, CondOp, Query};
use serde_json::Value;

use super::{Pass, SyncError};

/// Attendee addresses of one item looked up in CRM at most (the rest count as unknown persons).
pub const MAX_ATTENDEES_LOOKED_UP: usize = 200;
/// Entries the attendee look-up cache holds at most.
const PERSON_CACHE_MAX: usize = 20_000;
/// How long a person look-up (attendee e-mail → CRM person) is reused.
pub const PERSON_CACHE_TTL: Duration = Duration::from_secs(300);

impl Pass<'_> {
    /// Lower-cased attendee addresses that have a CRM person.
    pub(super) async fn known_persons(
        &self,
        items: &[&Value],
        shadow: Option<&Canonical>,
    ) -> Result<BTreeSet<String>, SyncError> {
        let mut addrs = BTreeSet::new();
        for item in items {
            for key in ["attendees"] {
                if let Some(list) = item.get(key).and_then(Value::as_array) {
                    for a in list {
                        if let Some(s) = a
                            .get("emailAddress")
                            .and_then(|e| e.get("address"))
                            .and_then(Value::as_str)
                        {
                            addrs.insert(s.trim().to_ascii_lowercase());
                        }
                    }
                }
            }
        }
        if let Some(Value::Array(list)) = shadow.map(|s| s.get("attendees")) {
            for a in list {
                if let Some(s) = a.get("address").and_then(Value::as_str) {
                    addrs.insert(s.to_ascii_lowercase());
                }
            }
        }
        let mut known = BTreeSet::new();
        if addrs.len() > MAX_ATTENDEES_LOOKED_UP {
            tracing::warn!(tenant = %self.tid(), mailbox = %self.mailbox, attendees = addrs.len(),
                cap = MAX_ATTENDEES_LOOKED_UP, "very large attendee list: only the first addresses are looked up in CRM");
        }
        for addr in addrs.into_iter().take(MAX_ATTENDEES_LOOKED_UP) {
            if addr.is_empty() {
                continue;
            }
            let cache_key = (self.tid().to_string(), addr.clone());
            let cached = self.app.person_cache.lock().ok().and_then(|c| {
                c.get(&cache_key)
                    .filter(|(_, at)| at.elapsed() < PERSON_CACHE_TTL)
                    .map(|(k, _)| *k)
            });
            if let Some(is_known) = cached {
                if is_known {
                    known.insert(addr);
                }
                continue;
            }
            let found = self
                .tenant
                .crm
                .query(
                    &Query {
                        table: "Person".into(),
                        conditions: vec![Cond {
                            field: "EMail".into(),
                            op: CondOp::Eq,
                            value: addr.clone(),
                        }],
                        fields: vec!["EMail".into(), "DelCd".into()],
                        max_records: Some(5),
                    },
                    None,
                )
                .await?;
            let is_known = found
                .records
                .iter()
                .any(|r| !records::is_deleted(&r.fields));
            if let Ok(mut c) = self.app.person_cache.lock() {
                if c.len() >= PERSON_CACHE_MAX {
                    // Bounded: drop what has expired, and everything if that is not enough.
                    c.retain(|_, (_, at)| at.elapsed() < PERSON_CACHE_TTL);
                    if c.len() >= PERSON_CACHE_MAX {
                        c.clear();
                    }
                }
                c.insert(cache_key, (is_known, Instant::now()));
            }
            if is_known {
                known.insert(addr);
            }
        }
        Ok(known)
    }

    /// The mapping context for these items: the attendee addresses that are CRM persons or
    /// synced reps of the tenant (a synced rep attending is a participant, expected-behaviour 32).
    pub async fn context(
        &self,
        items: &[&Value],
        shadow: Option<&Canonical>,
    ) -> Result<MapContext, SyncError> {
        let known_person_emails = if self.entity == Entity::Appointment {
            let mut known = self.known_persons(items, shadow).await?;
            for m in self.synced_mailboxes().await? {
                known.insert(m.mailbox.to_ascii_lowercase());
            }
            known
        } else {
            BTreeSet::new()
        };
        Ok(MapContext {
            crm_zone: self.tenant.cfg.crm_time_zone,
            known_person_emails,
        })
    }
}
