//! The restoring write of an undo (`undo.rs` decides whether and what): the written side's
//! prior values put back, a created item removed, a deleted one re-created and linked again.

use std::collections::BTreeMap;

use cgc_core::{Canonical, Entity, Side};
use cgc_graph::SYNC_STATE_PROPERTY;
use chrono::Utc;
use serde_json::Value;

use super::apply::with_property;
use super::observe::{Observation, carries_sync_state};
use super::undo::UndoError;
use super::{Pass, SyncError};
use crate::state::{AuditRecord, Link, UndoNote, WriteOp};

fn refused<T>(why: impl Into<String>) -> Result<T, UndoError> {
    Err(UndoError::Refused(why.into()))
}

impl Pass<'_> {
    /// The one restoring write; the pair's (crm id, graph id) afterwards.
    pub(super) async fn restore(
        &self,
        note: &UndoNote,
        side: Side,
        obs: &Observation,
        records: &[AuditRecord],
    ) -> Result<(Option<u64>, Option<String>), UndoError> {
        let crm_id = obs.crm_id;
        let gid = (!obs.graph_id.is_empty()).then(|| obs.graph_id.clone());
        match (note.op, side) {
            (WriteOp::Update, Side::Graph) => {
                let l = obs
                    .link
                    .as_ref()
                    .ok_or(SyncError::Invariant("undo without a link"))?;
                let shadow = self.shadow_after(obs, side, &note.prior, records).await?;
                let mut patch = note.prior.clone();
                if let (Some(s), true) = (&shadow, carries_sync_state(self.entity)) {
                    patch = with_property(
                        &patch,
                        SYNC_STATE_PROPERTY,
                        &cgc_core::fingerprint(self.entity, s),
                    );
                }
                self.graph_update(l, &patch, None).await?;
                if let Some(s) = shadow {
                    self.state().put_shadow(self.tid(), l, &s).await?;
                }
            }
            (WriteOp::Update, Side::Crm) => {
                let l = obs
                    .link
                    .as_ref()
                    .ok_or(SyncError::Invariant("undo without a link"))?;
                let shadow = self.shadow_after(obs, side, &note.prior, records).await?;
                self.crm_update(l.crm_id, &string_fields(&note.prior))
                    .await?;
                if let Some(s) = shadow {
                    self.state().put_shadow(self.tid(), l, &s).await?;
                }
            }
            (WriteOp::Create, Side::Graph) => {
                let l = obs
                    .link
                    .as_ref()
                    .ok_or(SyncError::Invariant("undo without a link"))?;
                self.graph_delete(l).await?;
                self.state().remove_link(self.tid(), l).await?;
            }
            (WriteOp::Create, Side::Crm) => {
                let l = obs
                    .link
                    .as_ref()
                    .ok_or(SyncError::Invariant("undo without a link"))?;
                let f = BTreeMap::from([("ConnectorDeleted".to_string(), "true".to_string())]);
                self.crm_update(l.crm_id, &f).await?;
                self.state().remove_link(self.tid(), l).await?;
            }
            (WriteOp::Delete, Side::Crm) => {
                let id =
                    crm_id.ok_or(SyncError::Invariant("undo of a CRM delete without its id"))?;
                self.crm_update(id, &string_fields(&note.prior)).await?;
            }
            (WriteOp::Delete, Side::Graph) => {
                let id = crm_id.ok_or(SyncError::Invariant(
                    "undo of a Graph delete without the CRM id",
                ))?;
                return Ok((Some(id), Some(self.recreate(id, &note.prior).await?)));
            }
        }
        Ok((crm_id, gid))
    }

    /// The agreed state after restoring `prior` on `side`: the stored shadow with the restored
    /// fields as that side will show them (a later edit on the other side then travels).
    async fn shadow_after(
        &self,
        obs: &Observation,
        side: Side,
        prior: &Value,
        records: &[AuditRecord],
    ) -> Result<Option<Canonical>, SyncError> {
        let Some(mut shadow) = obs.shadow.clone() else {
            return Ok(None);
        };
        let empty = Value::Null;
        let ctx = self
            .context(&[obs.graph.as_ref().unwrap_or(&empty)], None)
            .await?;
        let restored = match side {
            Side::Graph => {
                let mut item = obs.graph.clone().unwrap_or_default();
                if let (Value::Object(m), Some(p)) = (&mut item, prior.as_object()) {
                    m.extend(p.clone());
                }
                cgc_core::from_graph(self.entity, &item, &ctx).ok()
            }
            Side::Crm => {
                let mut f = obs.crm.clone().unwrap_or_default();
                f.extend(string_fields(prior));
                cgc_core::from_crm(self.entity, &f, &ctx).ok()
            }
        };
        if let Some(r) = restored {
            for rec in records {
                shadow.set(&rec.entry.field, r.get(&rec.entry.field).clone());
            }
        }
        Ok(Some(shadow))
    }

    /// Re-creates a deleted Graph item from the item the audit record kept, marked with the CRM
    /// id, and links it again in the store (one write: the CRM side is not written; the item's
    /// CRM-id mark lets matching find the pair if the store is lost).
    async fn recreate(&self, crm_id: u64, prior: &Value) -> Result<String, UndoError> {
        let ctx = self.context(&[prior], None).await?;
        let canonical = cgc_core::from_graph(self.entity, prior, &ctx).map_err(|e| {
            UndoError::Refused(format!("the audit record's item cannot be read: {e}"))
        })?;
        let mut body = cgc_core::to_graph(self.entity, &canonical, None);
        if carries_sync_state(self.entity) {
            body = with_property(
                &body,
                SYNC_STATE_PROPERTY,
                &cgc_core::fingerprint(self.entity, &canonical),
            );
        }
        let g = &self.tenant.graph;
        let cid = crm_id.to_string();
        let (created, list) = match self.entity {
            Entity::Appointment => {
                let txn = format!(
                    "{}-undo-{}",
                    super::transaction_id(self.tid(), crm_id),
                    Utc::now().timestamp_millis()
                );
                (
                    g.create_event(self.mailbox, &body, &txn, &cid)
                        .await
                        .map_err(SyncError::from)?,
                    None,
                )
            }
            Entity::Contact => (
                g.create_contact(self.mailbox, &body, &cid)
                    .await
                    .map_err(SyncError::from)?,
                None,
            ),
            Entity::Task => {
                let list = self.todo_list(None).await?;
                (
                    g.create_task(self.mailbox, &list, &body, &cid)
                        .await
                        .map_err(SyncError::from)?,
                    Some(list),
                )
            }
            Entity::Email => return refused("archived e-mail is not re-created in Graph"),
        };
        let gid = created
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let l: Link = self.new_link(crm_id, &gid, &created, list.as_deref());
        self.state().put_link(self.tid(), &l).await?;
        self.state().put_shadow(self.tid(), &l, &canonical).await?;
        Ok(gid)
    }
}

/// A JSON object of CRM field values as fields (non-strings skipped).
pub(super) fn string_fields(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect()
}
