//! The last step of a pass: carry out a plan's operations in order, one small function per
//! [`Op`], then settle the link and the agreed state, and write the audit trail.

use std::collections::BTreeMap;

use cgc_core::{ConflictField, CrmFields, Entity, Op, Plan};
use cgc_crm::ExtLink;
use cgc_graph::{CRM_ID_PROPERTY, SYNC_STATE_PROPERTY, crm_id_on_item};
use chrono::Utc;
use serde_json::Value;

use super::observe::{Observation, carries_sync_state, is_instance};
use super::{Pass, Processed, SyncError};
use crate::state::{AuditRecord, Link};

/// What carrying out a plan has done so far.
struct Progress {
    /// The pair's link as it stands (a create makes one).
    link: Option<Link>,
    writes: usize,
    /// A delete or unlink ended the pair.
    unlinked: bool,
    /// The fingerprint of the new agreed state, until a Graph write has carried it.
    fingerprint: Option<String>,
    /// The change key the Graph item was read with.
    etag: Option<String>,
}

/// `v` with the single-value extended property `id` set to `value` (others kept).
pub(super) fn with_property(v: &Value, id: &str, value: &str) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        let mut props: Vec<Value> = m
            .get("singleValueExtendedProperties")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|p| !p["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        props.push(serde_json::json!({"id": id, "value": value}));
        m.insert("singleValueExtendedProperties".into(), Value::Array(props));
    }
    v
}

/// The fingerprint the plan's new agreed state needs on the Graph item, unless the item carries
/// it already (it then travels inside the plan's own Graph write, or in one PATCH of the property
/// alone: no meeting mail).
fn fingerprint_to_write(entity: Entity, plan: &Plan, item: Option<&Value>) -> Option<String> {
    if !carries_sync_state(entity) || is_instance(item) {
        return None;
    }
    plan.fingerprint().filter(|fp| {
        item.and_then(|v| cgc_graph::extended_property(v, SYNC_STATE_PROPERTY))
            .as_deref()
            != Some(fp.as_str())
    })
}

/// A write whose answer was an error or never came, that may have been carried out all the
/// same (expected-behaviour.md 27, 34; a retried PATCH then meets its own change as 412). Read
/// back at once: one that was carried out is done, and the pass agrees on it. Deciding later, on
/// the retry, would meet the user's next edit of the other side as a conflict with our own write.
fn maybe_applied(e: &SyncError) -> bool {
    use cgc_graph::GraphError as G;
    match e {
        SyncError::Graph(
            G::Unavailable { .. } | G::Transport(_) | G::Timeout | G::PreconditionFailed,
        ) => true,
        SyncError::Graph(G::Http { status, .. }) => *status >= 500,
        SyncError::Crm(cgc_crm::CrmError::Transport { .. } | cgc_crm::CrmError::Timeout) => true,
        _ => false,
    }
}

impl Pass<'_> {
    /// Writes a plan: the operations in order, then link, shadow, conflict and audit.
    pub async fn apply(&self, plan: Plan, obs: Observation) -> Result<Processed, SyncError> {
        // The invitation guard: a write that would mail attendees may wait (invitations.rs).
        if let Some(held) = self.held_for_invitations(&plan, &obs).await? {
            return Ok(held);
        }
        let mut p = Progress {
            link: obs.link.clone(),
            writes: 0,
            unlinked: false,
            fingerprint: fingerprint_to_write(self.entity, &plan, obs.graph.as_ref()),
            etag: obs
                .graph
                .as_ref()
                .and_then(|v| v.get("@odata.etag").and_then(Value::as_str))
                .map(str::to_string),
        };
        let mut notes = Vec::new();
        for op in &plan.ops {
            let note = super::undo::note(self.entity, op, &obs);
            match op {
                Op::CreateCrm { fields } => self.create_crm(fields, &obs, &mut p).await?,
                Op::CreateGraph { body } => self.create_graph(body, &obs, &mut p).await?,
                Op::UpdateGraph { patch } => self.update_graph(patch, &mut p).await?,
                Op::DeleteGraph => self.delete_graph(&mut p).await?,
                Op::UpdateCrm { fields } => self.update_crm(fields, &mut p).await?,
                Op::MarkCrmDeleted => self.mark_crm_deleted(&mut p).await?,
                Op::Unlink => p.unlinked = true,
                Op::RaiseConflict { fields } => self.park_conflict(fields, &p).await?,
            }
            notes.extend(note);
        }
        self.settle_link(&plan, &obs, &mut p).await?;
        self.write_audit(&plan, p.link.as_ref(), &notes).await?;
        Ok(Processed {
            kind: plan.kind.clone(),
            reason: plan.reason.clone(),
            writes: p.writes,
        })
    }

    /// Creates the CRM record of the Graph item, then stamps the CRM id (and the agreed state) on
    /// the item in one PATCH, so a lost store is rebuilt by matching.
    async fn create_crm(
        &self,
        fields: &CrmFields,
        obs: &Observation,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        let item = obs.graph.as_ref().ok_or(SyncError::Invariant(
            "plan creates a CRM record without a Graph item",
        ))?;
        let table = self.entity.crm_table();
        let ext = ExtLink {
            ext_key: obs.graph_id.clone(),
            ext_uid: item
                .get("iCalUId")
                .and_then(Value::as_str)
                .map(str::to_string),
            table_short: self.entity.crm_short().into(),
        };
        let mut fields = fields.clone();
        if table == "Contact" {
            // "new from connector": marks a record made from Outlook (never mirrored back).
            fields.insert("F5021".into(), "true".into());
            fields.extend(self.series_fields(item).await?);
        }
        let owner = self.record_owner(item).await?;
        let crm_id = self.create_crm_once(table, &fields, &ext, &owner).await?;
        p.writes += 1;
        let l = self.new_link(crm_id, &obs.graph_id, item, obs.list_id.as_deref());
        if is_instance(Some(item)) {
            // an occurrence shows its master's properties; it carries none of its own
            p.link = Some(l);
            return Ok(());
        }
        let cid = crm_id.to_string();
        let mut props: Vec<(&str, &str)> = vec![(CRM_ID_PROPERTY, &cid)];
        let fp = p.fingerprint.take();
        if let Some(fp) = &fp {
            props.push((SYNC_STATE_PROPERTY, fp));
        }
        self.graph_stamp(&obs.graph_id, &props).await?;
        // A task first created in To Do: its linkedResource, now that the record exists.
        if self
            .link_task(&obs.graph_id, obs.list_id.as_deref(), Some(item), crm_id)
            .await?
        {
            p.writes += 1;
        }
        p.link = Some(l);
        Ok(())
    }

    /// Creates the Graph item of the CRM record (carrying the agreed state), then its ExtKey row.
    async fn create_graph(
        &self,
        body: &Value,
        obs: &Observation,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        let crm_id =
            p.link
                .as_ref()
                .map(|l| l.crm_id)
                .or(obs.crm_id)
                .ok_or(SyncError::Invariant(
                    "plan creates a Graph item without a CRM record id",
                ))?;
        let body = match p.fingerprint.take() {
            Some(fp) => with_property(body, SYNC_STATE_PROPERTY, &fp),
            None => body.clone(),
        };
        let (body, cancel_days) = match obs.crm.as_ref() {
            Some(f) if cgc_core::series::is_master_record(f) => {
                self.series_body(crm_id, f, &body).await?
            }
            _ => (body, Vec::new()),
        };
        let (created, list) = self
            .create_graph_once(crm_id, &body, obs.list_id.as_deref())
            .await?;
        p.writes += 1 + self.trim_series(&created, &cancel_days).await?;
        let gid = created
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let l = self.new_link(crm_id, &gid, &created, list.as_deref());
        self.tenant
            .crm
            .upsert_link(
                crm_id,
                &ExtLink {
                    ext_key: gid.clone(),
                    ext_uid: l.ical_uid.clone(),
                    table_short: self.entity.crm_short().into(),
                },
                Some(self.mailbox),
            )
            .await?;
        p.link = Some(l);
        Ok(())
    }

    async fn update_graph(&self, patch: &Value, p: &mut Progress) -> Result<(), SyncError> {
        let l = p
            .link
            .as_ref()
            .ok_or(SyncError::Invariant("plan updates Graph without a link"))?;
        let patch = match p.fingerprint.take() {
            Some(fp) => with_property(patch, SYNC_STATE_PROPERTY, &fp),
            None => patch.clone(),
        };
        if let Err(e) = self.graph_update(l, &patch, p.etag.as_deref()).await
            && !(maybe_applied(&e) && self.graph_holds(l, &patch).await)
        {
            return Err(e);
        }
        p.writes += 1;
        Ok(())
    }

    async fn delete_graph(&self, p: &mut Progress) -> Result<(), SyncError> {
        if let Some(l) = &p.link {
            self.graph_delete(l).await?;
            p.writes += 1;
            p.unlinked = true;
        }
        Ok(())
    }

    async fn update_crm(
        &self,
        fields: &BTreeMap<String, String>,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        let l = p
            .link
            .as_ref()
            .ok_or(SyncError::Invariant("plan updates CRM without a link"))?;
        if let Err(e) = self.crm_update(l.crm_id, fields).await
            && !(maybe_applied(&e) && self.crm_holds(l.crm_id, fields).await)
        {
            return Err(e);
        }
        p.writes += 1;
        Ok(())
    }

    /// Whether the linked record holds every one of `fields` (a failed read says no).
    async fn crm_holds(&self, id: u64, fields: &BTreeMap<String, String>) -> bool {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let table = self.entity.crm_table();
        match self
            .tenant
            .crm
            .get(table, id, &names, Some(self.mailbox))
            .await
        {
            Ok(Some(r)) => fields
                .iter()
                .all(|(k, v)| r.fields.get(k).map(String::as_str) == Some(v.as_str())),
            _ => false,
        }
    }

    /// Whether the linked Graph item carries the agreed-state fingerprint `patch` wrote: a PATCH
    /// is applied whole or not at all, so the item then holds the whole patch. A patch without a
    /// fingerprint cannot be told apart (says no).
    async fn graph_holds(&self, l: &Link, patch: &Value) -> bool {
        let Some(fp) = cgc_graph::extended_property(patch, SYNC_STATE_PROPERTY) else {
            return false;
        };
        match self.graph_get(&l.graph_id, l.list_id.as_deref()).await {
            Ok(Some(item)) => {
                cgc_graph::extended_property(&item, SYNC_STATE_PROPERTY).as_deref()
                    == Some(fp.as_str())
            }
            _ => false,
        }
    }

    /// An appointment is marked (`ConnectorDeleted`), never hard-deleted; other entities are
    /// only unlinked.
    async fn mark_crm_deleted(&self, p: &mut Progress) -> Result<(), SyncError> {
        if let Some(l) = &p.link {
            if self.entity.crm_table() == "Contact" {
                let mut f = BTreeMap::new();
                f.insert("ConnectorDeleted".to_string(), "true".to_string());
                self.crm_update(l.crm_id, &f).await?;
                p.writes += 1;
            }
            p.unlinked = true;
        }
        Ok(())
    }

    async fn park_conflict(&self, fields: &[ConflictField], p: &Progress) -> Result<(), SyncError> {
        if let Some(l) = &p.link {
            self.raise_conflict(l, fields).await?;
        }
        Ok(())
    }

    /// Link and shadow: an ended pair loses its link; a settled one gets its link marks (when
    /// matched), the fingerprint if no Graph write carried it, its link and its new shadow.
    async fn settle_link(
        &self,
        plan: &Plan,
        obs: &Observation,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        let Some(l) = &p.link else {
            return Ok(());
        };
        match &plan.new_shadow {
            Some(s) if !p.unlinked => {
                if obs.matched {
                    self.mark_link(l, obs.graph.as_ref()).await?;
                }
                if let Some(fp) = p.fingerprint.take() {
                    self.graph_stamp(&l.graph_id, &[(SYNC_STATE_PROPERTY, &fp)])
                        .await?;
                }
                // What the store holds already is not written again (a no-op pass writes
                // nothing). A link found by matching is written whole, both of its keys.
                let stored = !obs.matched && obs.link.as_ref() == Some(l);
                if !stored {
                    self.state().put_link(self.tid(), l).await?;
                }
                if !stored || obs.shadow.as_ref() != Some(s) {
                    self.state().put_shadow(self.tid(), l, s).await?;
                }
            }
            _ => self.state().remove_link(self.tid(), l).await?,
        }
        Ok(())
    }

    /// Writes the link on both systems for a pair found by matching (lost store, another rep's
    /// meeting, an older connector's key): our ExtKey row in CRM and the CRM id on the Graph item,
    /// unless they are already there.
    pub(super) async fn mark_link(&self, l: &Link, item: Option<&Value>) -> Result<(), SyncError> {
        let crm = &self.tenant.crm;
        let has_row = crm
            .find_link(&l.graph_id)
            .await?
            .is_some_and(|row| row.record_id == l.crm_id);
        if !has_row {
            crm.upsert_link(
                l.crm_id,
                &ExtLink {
                    ext_key: l.graph_id.clone(),
                    ext_uid: l.ical_uid.clone(),
                    table_short: self.entity.crm_short().into(),
                },
                Some(self.mailbox),
            )
            .await?;
        }
        if l.slot.is_none() && item.and_then(crm_id_on_item) != Some(l.crm_id) {
            let cid = l.crm_id.to_string();
            self.graph_stamp(&l.graph_id, &[(CRM_ID_PROPERTY, &cid)])
                .await?;
            // Tasks carry the CRM id as a linkedResource instead.
            self.link_task(&l.graph_id, l.list_id.as_deref(), item, l.crm_id)
                .await?;
        }
        Ok(())
    }

    async fn write_audit(
        &self,
        plan: &Plan,
        link: Option<&Link>,
        notes: &[super::undo::Note],
    ) -> Result<(), SyncError> {
        let at = Utc::now();
        for entry in &plan.audit {
            self.state()
                .audit(
                    self.tid(),
                    &AuditRecord {
                        id: super::undo::record_id(self.event_id, at, entry),
                        undo: super::undo::for_entry(notes, self.event_id, at, entry),
                        at,
                        tenant: self.tid().to_string(),
                        mailbox: self.mailbox.to_string(),
                        crm_id: link.map(|l| l.crm_id),
                        graph_id: link.map(|l| l.graph_id.clone()),
                        event_id: self.event_id.to_string(),
                        entry: entry.clone(),
                        resolved_by: self.resolved_by.clone(),
                    },
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_property_replaces_the_same_property_and_keeps_others() {
        let v = serde_json::json!({"subject": "x", "singleValueExtendedProperties": [
            {"id": "String {a} Name One", "value": "1"},
            {"id": "STRING {B} NAME TWO", "value": "old"}
        ]});
        let out = with_property(&v, "String {b} Name Two", "new");
        let props = out["singleValueExtendedProperties"].as_array().unwrap();
        assert_eq!(props.len(), 2, "{props:?}");
        assert_eq!(props[0]["value"], "1");
        assert_eq!(props[1]["id"], "String {b} Name Two");
        assert_eq!(props[1]["value"], "new");
        assert_eq!(out["subject"], "x");
        let bare = with_property(&serde_json::json!({}), "p", "v");
        assert_eq!(bare["singleValueExtendedProperties"][0]["value"], "v");
    }
}
