//! Taking back one audited sync write: the note each write keeps (what the written side held
//! before it), the check that the item has not changed since, the one restoring write, and the
//! hold that makes the undo's echo (and any later touch) change nothing until a side really
//! changes.

use std::collections::BTreeMap;

use cgc_core::mapping::records;
use cgc_core::{AuditEntry, Canonical, CrmFields, Entity, Op, Side};
use cgc_graph::SYNC_STATE_PROPERTY;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::apply::with_property;
use super::observe::{Observation, carries_sync_state};
use super::{Pass, Processed, SyncError, noop};
use crate::state::{AuditRecord, Link, UndoHold, UndoNote, WriteOp, undo as ids};

/// Why a pass of a pair an undo left changes nothing.
pub(super) const UNDO_HELD: &str =
    "both sides still show what an operator's undo left; nothing written";

/// What one write of a plan changed on one side, noted before the write.
pub(super) struct Note {
    side: Side,
    op: WriteOp,
    prior: Value,
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Graph => "graph",
        Side::Crm => "crm",
    }
}

/// The note for one plan operation: the written side's values before it (only what it writes).
pub(super) fn note(entity: Entity, op: &Op, obs: &Observation) -> Option<Note> {
    let graph_props = |keys: &Value| -> Value {
        let mut out = serde_json::Map::new();
        for k in keys.as_object().into_iter().flat_map(|o| o.keys()) {
            if k != "singleValueExtendedProperties" {
                let v = obs.graph.as_ref().and_then(|g| g.get(k)).cloned();
                out.insert(k.clone(), v.unwrap_or(Value::Null));
            }
        }
        Value::Object(out)
    };
    let crm_fields = |keys: &CrmFields| -> Value {
        let crm = obs.crm.as_ref();
        let m: BTreeMap<&String, String> = keys
            .keys()
            .map(|k| (k, crm.and_then(|c| c.get(k)).cloned().unwrap_or_default()))
            .collect();
        json!(m)
    };
    let (side, op, prior) = match op {
        Op::CreateGraph { .. } => (Side::Graph, WriteOp::Create, Value::Null),
        Op::CreateCrm { .. } => (Side::Crm, WriteOp::Create, Value::Null),
        Op::UpdateGraph { patch } => (Side::Graph, WriteOp::Update, graph_props(patch)),
        Op::UpdateCrm { fields } => (Side::Crm, WriteOp::Update, crm_fields(fields)),
        Op::DeleteGraph => (
            Side::Graph,
            WriteOp::Delete,
            obs.graph.clone().unwrap_or_default(),
        ),
        Op::MarkCrmDeleted if entity == Entity::Appointment => {
            let was = obs
                .crm
                .as_ref()
                .and_then(|c| c.get("ConnectorDeleted"))
                .cloned()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "false".into());
            (
                Side::Crm,
                WriteOp::Delete,
                json!({ "ConnectorDeleted": was }),
            )
        }
        Op::MarkCrmDeleted | Op::Unlink | Op::RaiseConflict { .. } => return None,
    };
    Some(Note { side, op, prior })
}

/// The id of the audit record of `entry`.
pub(super) fn record_id(event_id: &str, at: DateTime<Utc>, entry: &AuditEntry) -> String {
    ids::audit_id(event_id, at, side_name(entry.side), &entry.field)
}

/// The undo note of `entry`: the note of the write on its side.
pub(super) fn for_entry(
    notes: &[Note],
    event_id: &str,
    at: DateTime<Utc>,
    entry: &AuditEntry,
) -> Option<UndoNote> {
    let n = notes.iter().find(|n| n.side == entry.side)?;
    Some(UndoNote {
        write: ids::write_id(event_id, at, side_name(n.side)),
        op: n.op,
        prior: n.prior.clone(),
        undoes: None,
    })
}

/// Why an undo did not happen.
#[derive(Debug)]
pub enum UndoError {
    /// The write cannot or may not be taken back (409), and why.
    Refused(String),
    Sync(SyncError),
}

impl From<SyncError> for UndoError {
    fn from(e: SyncError) -> Self {
        UndoError::Sync(e)
    }
}

impl From<cgc_backends::StoreError> for UndoError {
    fn from(e: cgc_backends::StoreError) -> Self {
        UndoError::Sync(e.into())
    }
}

fn refused<T>(why: impl Into<String>) -> Result<T, UndoError> {
    Err(UndoError::Refused(why.into()))
}

/// What an undo does (or, dry, would do).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Undone {
    pub audit_id: String,
    pub write: String,
    pub side: Side,
    pub op: WriteOp,
    pub fields: Vec<String>,
    /// One sentence: what is (or would be) written.
    pub action: String,
    pub writes: usize,
}

impl Pass<'_> {
    /// Content hashes of both sides as they stand (`none`: no item on that side).
    async fn side_hashes(
        &self,
        graph: Option<&Value>,
        crm: Option<&CrmFields>,
    ) -> Result<(String, String), SyncError> {
        let empty = Value::Null;
        let ctx = self.context(&[graph.unwrap_or(&empty)], None).await?;
        let g = match graph {
            Some(v) => cgc_core::from_graph(self.entity, v, &ctx)
                .map(|c| c.content_hash())
                .unwrap_or_else(|e| format!("unreadable: {e}")),
            None => "none".into(),
        };
        let c = match crm {
            Some(f) => {
                let flags = format!(
                    "{}|{}",
                    f.get("DelCd").map(|s| s.trim()).unwrap_or(""),
                    f.get("ConnectorDeleted")
                        .map(|s| s.trim().to_ascii_lowercase())
                        .unwrap_or_default()
                );
                let content = cgc_core::from_crm(self.entity, f, &ctx)
                    .map(|c| c.content_hash())
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                format!("{content}|{flags}")
            }
            None => "none".into(),
        };
        Ok((g, c))
    }

    /// The undo hold on the observed pair, if any, and whether both sides still show what the
    /// undo left (reads only).
    pub(super) async fn undo_hold_of(
        &self,
        obs: &Observation,
    ) -> Result<Option<(UndoHold, bool)>, SyncError> {
        let crm_id = obs.link.as_ref().map(|l| l.crm_id).or(obs.crm_id);
        let graph_id = obs.link.as_ref().map(|l| l.graph_id.as_str());
        let graph_id = graph_id.or(Some(obs.graph_id.as_str()));
        let Some(hold) = self
            .state()
            .undo_hold(self.tid(), self.entity, self.mailbox, crm_id, graph_id)
            .await?
        else {
            return Ok(None);
        };
        let now = self
            .side_hashes(obs.graph.as_ref(), obs.crm.as_ref())
            .await?;
        let same = now == (hold.graph.clone(), hold.crm.clone());
        Ok(Some((hold, same)))
    }

    /// Before a pass decides: a pair an undo left, whose sides both still show what the undo
    /// left, changes nothing; once either side changed the hold ends and the pass goes on.
    pub(super) async fn undo_held(
        &self,
        obs: &Observation,
    ) -> Result<Option<Processed>, SyncError> {
        match self.undo_hold_of(obs).await? {
            Some((_, true)) => Ok(Some(noop(UNDO_HELD))),
            Some((hold, false)) => {
                self.state().remove_undo_hold(self.tid(), &hold).await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The pair as it stands now, read from both sides (no matching, no writes).
    async fn observe_now(
        &self,
        crm_id: Option<u64>,
        graph_id: Option<&str>,
    ) -> Result<Observation, SyncError> {
        let link = match crm_id {
            Some(c) => {
                self.state()
                    .link_by_crm(self.tid(), self.entity, self.mailbox, c)
                    .await?
            }
            None => None,
        };
        let gid = link
            .as_ref()
            .map(|l| l.graph_id.clone())
            .or(graph_id.map(str::to_string));
        let list = link.as_ref().and_then(|l| l.list_id.clone());
        let graph = match &gid {
            Some(g) => self.graph_get(g, list.as_deref()).await?,
            None => None,
        };
        let crm = match crm_id {
            Some(c) => self.crm_get(c).await?,
            None => None,
        };
        let shadow = match &link {
            Some(l) => self.state().shadow(self.tid(), l).await?,
            None => None,
        };
        Ok(Observation {
            link,
            graph,
            crm,
            crm_id,
            graph_id: gid.unwrap_or_default(),
            list_id: list,
            shadow,
            matched: false,
        })
    }

    /// Whether the pair is as the audited write left it: an undo's hold still matching, or (a
    /// linked pair) neither side changed since the last agreed state, or (a delete) the item still
    /// gone and not linked again.
    async fn unchanged_since(
        &self,
        op: WriteOp,
        side: Side,
        obs: &Observation,
    ) -> Result<Option<String>, UndoError> {
        let hold = self
            .state()
            .undo_hold(
                self.tid(),
                self.entity,
                self.mailbox,
                obs.crm_id,
                Some(&obs.graph_id),
            )
            .await?;
        if let Some(h) = hold {
            let now = self
                .side_hashes(obs.graph.as_ref(), obs.crm.as_ref())
                .await?;
            return Ok((now != (h.graph.clone(), h.crm.clone()))
                .then(|| "the item changed since the last undo of this pair".to_string()));
        }
        if op == WriteOp::Delete {
            if obs.link.is_some() {
                return Ok(Some("the pair was linked again since the delete".into()));
            }
            let gone = match side {
                Side::Graph => obs.graph.is_none(),
                Side::Crm => obs.crm.as_ref().is_some_and(|f| {
                    f.get("ConnectorDeleted")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
                        && !records::is_deleted(f)
                }),
            };
            return Ok((!gone).then(|| "the deleted item is back or was changed since".to_string()));
        }
        if obs.link.is_none() {
            return Ok(Some("the pair is no longer linked".into()));
        }
        if obs.graph.is_none() || obs.crm.is_none() {
            return Ok(Some("one side of the pair is gone".into()));
        }
        let plan = self.decide(obs).await?;
        Ok((!plan.ops.is_empty())
            .then(|| format!("the item changed since the write ({})", plan.reason)))
    }

    /// Takes back one audited write (`records`: its field records, newest first), or with
    /// `dry_run` only says what it would do. Refuses when the item changed since.
    pub async fn undo(
        &self,
        records: &[AuditRecord],
        by: &str,
        dry_run: bool,
    ) -> Result<Undone, UndoError> {
        let Some(first) = records.first() else {
            return refused("no audit record");
        };
        let Some(note) = first.undo.clone() else {
            return refused(
                "this audit record was written before writes kept what they replaced; it cannot be undone",
            );
        };
        if note.undoes.is_some() {
            return refused(
                "this record is an undo; make the change again instead of undoing an undo",
            );
        }
        let side = first.entry.side;
        let fields: Vec<String> = records.iter().map(|r| r.entry.field.clone()).collect();
        let obs = self
            .observe_now(first.crm_id, first.graph_id.as_deref())
            .await?;
        if let Some(why) = self.unchanged_since(note.op, side, &obs).await? {
            return refused(format!("{why}; a newer edit is never overwritten"));
        }
        let action = match (note.op, side) {
            (WriteOp::Update, s) => format!("restore {} on {s} to the values before the write", fields.join(", ")),
            (WriteOp::Create, Side::Graph) => "delete the Graph item the write created and unlink the pair".into(),
            (WriteOp::Create, Side::Crm) if self.entity == Entity::Appointment => {
                "mark the CRM record the write created deleted (ConnectorDeleted) and unlink the pair".into()
            }
            (WriteOp::Create, Side::Crm) => {
                return refused(format!("the connector never deletes a CRM {}; remove it in CRM", self.entity));
            }
            (WriteOp::Delete, Side::Graph) => "re-create the Graph item from the audit record and link it again".into(),
            (WriteOp::Delete, Side::Crm) => "clear ConnectorDeleted on the CRM record".into(),
        };
        let mut done = Undone {
            audit_id: first.id.clone(),
            write: note.write.clone(),
            side,
            op: note.op,
            fields,
            action,
            writes: 0,
        };
        if dry_run {
            return Ok(done);
        }
        let (crm_id, graph_id) = self.restore(&note, side, &obs, records).await?;
        done.writes = 1;
        let after = self.observe_now(crm_id, graph_id.as_deref()).await?;
        let (g, c) = self
            .side_hashes(after.graph.as_ref(), after.crm.as_ref())
            .await?;
        let at = Utc::now();
        let event_id = format!("undo-{}", note.write);
        let undo_id = ids::audit_id(&event_id, at, side_name(side), "undo");
        self.state()
            .put_undo_hold(
                self.tid(),
                &UndoHold {
                    audit_id: undo_id.clone(),
                    entity: self.entity,
                    mailbox: self.mailbox.to_ascii_lowercase(),
                    crm_id,
                    graph_id: graph_id.clone(),
                    graph: g,
                    crm: c,
                    at,
                },
            )
            .await?;
        for (i, r) in records.iter().enumerate() {
            let rec = AuditRecord {
                id: if i == 0 {
                    undo_id.clone()
                } else {
                    ids::audit_id(&event_id, at, side_name(side), &r.entry.field)
                },
                at,
                tenant: self.tid().to_string(),
                mailbox: self.mailbox.to_ascii_lowercase(),
                crm_id,
                graph_id: graph_id.clone(),
                event_id: event_id.clone(),
                entry: AuditEntry {
                    before: r.entry.after.clone(),
                    after: r.entry.before.clone(),
                    cause: cgc_core::Cause::Undo,
                    ..r.entry.clone()
                },
                resolved_by: Some(by.to_string()),
                undo: Some(UndoNote {
                    write: ids::write_id(&event_id, at, side_name(side)),
                    op: note.op,
                    prior: Value::Null,
                    undoes: Some(note.write.clone()),
                }),
            };
            self.state().audit(self.tid(), &rec).await?;
        }
        Ok(done)
    }

    /// The one restoring write; the pair's (crm id, graph id) afterwards.
    async fn restore(
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
fn string_fields(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect()
}
