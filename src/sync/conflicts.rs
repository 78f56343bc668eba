//! Conflicts a pass parks for an operator: a real conflict under `conflict = "manual"`, and an
//! unlinked item several CRM records fit.

use cgc_core::{ConflictField, PlanKind};
use chrono::Utc;
use serde_json::Value;

use super::matching::contact_email;
use super::{Pass, Processed, SyncError};
use crate::state::{ConflictRecord, Link, State};
use crate::telemetry::events::ConflictParked;

impl Pass<'_> {
    /// An unlinked Graph item matches several CRM records: nothing is created or linked; an
    /// operator picks one through the admin API (`{"link": "<id>"}`).
    pub(super) async fn park_ambiguous(
        &self,
        graph_id: &str,
        item: &Value,
        ids: Vec<u64>,
    ) -> Result<Processed, SyncError> {
        let id = State::match_conflict_id(self.tid(), self.entity, self.mailbox, graph_id);
        let existing = self.state().conflict(&id).await?;
        let email = contact_email(item).unwrap_or_default();
        let candidates: Vec<String> = ids.iter().map(u64::to_string).collect();
        let rec = ConflictRecord {
            id: id.clone(),
            tenant: self.tid().to_string(),
            mailbox: self.mailbox.to_string(),
            entity: self.entity,
            crm_id: String::new(),
            graph_id: graph_id.to_string(),
            fields: vec![cgc_core::ConflictField {
                field: "email".into(),
                crm: Value::String(email.clone()),
                graph: Value::String(email),
                base: Value::Null,
            }],
            opened_at: existing.map(|c| c.opened_at).unwrap_or_else(Utc::now),
            candidates: candidates.clone(),
        };
        self.state().put_conflict(&rec).await?;
        ConflictParked {
            tenant: self.tid(),
            mailbox: self.mailbox,
            entity: self.entity.as_str(),
            conflict: &id,
            candidates: &candidates,
        }
        .emit(&self.app.metrics);
        Ok(Processed {
            kind: PlanKind::Conflict,
            reason: format!(
                "ambiguous match: CRM records {} fit; parked for an operator",
                candidates.join(", ")
            ),
            writes: 0,
        })
    }

    /// Parks a real conflict of a linked pair (`conflict = "manual"`); a conflict already open
    /// keeps its opening time.
    pub(super) async fn raise_conflict(
        &self,
        l: &Link,
        fields: &[ConflictField],
    ) -> Result<(), SyncError> {
        let id = State::conflict_id(self.tid(), self.entity, self.mailbox, l.crm_id);
        let opened_at = match self.state().conflict(&id).await? {
            Some(c) => c.opened_at,
            None => Utc::now(),
        };
        self.state()
            .put_conflict(&ConflictRecord {
                id: id.clone(),
                tenant: self.tid().to_string(),
                mailbox: self.mailbox.to_string(),
                entity: self.entity,
                crm_id: l.crm_id.to_string(),
                graph_id: l.graph_id.clone(),
                fields: fields.to_vec(),
                opened_at,
                candidates: Vec::new(),
            })
            .await?;
        ConflictParked {
            tenant: self.tid(),
            mailbox: self.mailbox,
            entity: self.entity.as_str(),
            conflict: &id,
            candidates: &[],
        }
        .emit(&self.app.metrics);
        Ok(())
    }
}
