//! Taking back one audited sync write: the note each write keeps (what the written side held
//! before it), the check that the item has not changed since, the one restoring write, and the
//! seal that makes the undo's echo (and any later touch) change nothing until a side really
//! changes. The restoring write itself is in `restore.rs`.

use std::collections::BTreeMap;

use cgc_core::mapping::records;
use cgc_core::{AuditEntry, CrmFields, Entity, Op, Side};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::observe::Observation;
use super::{Pass, Processed, SyncError, noop};
use crate::state::{AuditRecord, UndoNote, UndoSeal, WriteOp, undo as ids};

/// Why a pass of a pair an undo left changes nothing.
pub(super) const UNDO_SEALED: &str =
    "both sides still show what an operator's undo left; nothing written";

/// An undo seal as a pass sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SealState {
    /// Both sides still show what the undo left.
    Matches,
    /// A side changed since (or a pending seal outlived its undo).
    Changed,
    /// The undo is being written.
    Pending,
}

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

    /// The undo seal on the observed pair, if any, and whether both sides still show what the
    /// undo left (reads only).
    pub(super) async fn undo_seal_of(
        &self,
        obs: &Observation,
    ) -> Result<Option<(UndoSeal, SealState)>, SyncError> {
        let crm_id = obs.link.as_ref().map(|l| l.crm_id).or(obs.crm_id);
        let graph_id = obs.link.as_ref().map(|l| l.graph_id.as_str());
        let graph_id = graph_id.or(Some(obs.graph_id.as_str()));
        let Some(seal) = self
            .state()
            .undo_seal(self.tid(), self.entity, self.mailbox, crm_id, graph_id)
            .await?
        else {
            return Ok(None);
        };
        if seal.pending {
            let fresh = (Utc::now() - seal.at).to_std().unwrap_or_default() < ids::PENDING_SEAL;
            let state = if fresh {
                SealState::Pending
            } else {
                SealState::Changed
            };
            return Ok(Some((seal, state)));
        }
        let now = self
            .side_hashes(obs.graph.as_ref(), obs.crm.as_ref())
            .await?;
        let state = if now == (seal.graph.clone(), seal.crm.clone()) {
            SealState::Matches
        } else {
            SealState::Changed
        };
        Ok(Some((seal, state)))
    }

    /// Before a pass decides: a pair an undo left, whose sides both still show what the undo
    /// left, changes nothing; once either side changed the seal ends and the pass goes on. While
    /// an undo of the pair is being written, the pass waits.
    pub(super) async fn undo_sealed(
        &self,
        obs: &Observation,
    ) -> Result<Option<Processed>, SyncError> {
        match self.undo_seal_of(obs).await? {
            Some((_, SealState::Matches)) => Ok(Some(noop(UNDO_SEALED))),
            Some((_, SealState::Pending)) => Err(SyncError::busy(
                std::time::Duration::from_millis(500),
                "an operator's undo of this pair is being written",
            )),
            Some((seal, SealState::Changed)) => {
                self.state().remove_undo_seal(self.tid(), &seal).await?;
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

    /// Whether the pair is as the audited write left it: an undo's seal still matching, or (a
    /// linked pair) neither side changed since the last agreed state, or (a delete) the item still
    /// gone and not linked again.
    async fn unchanged_since(
        &self,
        op: WriteOp,
        side: Side,
        obs: &Observation,
    ) -> Result<Option<String>, UndoError> {
        match self.undo_seal_of(obs).await? {
            Some((_, SealState::Matches)) => return Ok(None),
            Some((_, SealState::Pending)) => {
                return Ok(Some("another undo of this pair is being written".into()));
            }
            Some((_, SealState::Changed)) => {
                return Ok(Some(
                    "the item changed since the last undo of this pair".into(),
                ));
            }
            None => {}
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
        let at = Utc::now();
        let event_id = format!("undo-{}", note.write);
        let undo_id = ids::audit_id(&event_id, at, side_name(side), "undo");
        // Passes of the pair wait while the undo writes (its own echo must not race it).
        let mut seal = UndoSeal {
            audit_id: undo_id.clone(),
            entity: self.entity,
            mailbox: self.mailbox.to_ascii_lowercase(),
            crm_id: obs.crm_id,
            graph_id: (!obs.graph_id.is_empty()).then(|| obs.graph_id.clone()),
            graph: String::new(),
            crm: String::new(),
            at,
            pending: true,
        };
        self.state().put_undo_seal(self.tid(), &seal).await?;
        let (crm_id, graph_id) = match self.restore(&note, side, &obs, records).await {
            Ok(ids) => ids,
            Err(e) => {
                self.state().remove_undo_seal(self.tid(), &seal).await?;
                return Err(e);
            }
        };
        done.writes = 1;
        let after = self.observe_now(crm_id, graph_id.as_deref()).await?;
        let (g, c) = self
            .side_hashes(after.graph.as_ref(), after.crm.as_ref())
            .await?;
        let pending_graph_id = seal.graph_id.take();
        seal.crm_id = crm_id;
        seal.graph_id = graph_id.clone();
        (seal.graph, seal.crm, seal.pending) = (g, c, false);
        self.state().put_undo_seal(self.tid(), &seal).await?;
        if pending_graph_id != graph_id {
            // A re-created item has a new id: the pending seal's entry under the old one goes.
            let old = UndoSeal {
                crm_id: None,
                graph_id: pending_graph_id,
                ..seal.clone()
            };
            self.state().remove_undo_seal(self.tid(), &old).await?;
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obs() -> Observation {
        Observation {
            graph: Some(json!({"subject": "Old", "location": {"displayName": "Room 1"}})),
            crm: Some(
                [("Subject", "Old"), ("A031Location", "Room 1")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Observation::default()
        }
    }

    #[test]
    fn an_update_keeps_only_the_written_values_as_each_side_held_them() {
        let o = obs();
        let patch = json!({"subject": "New", "singleValueExtendedProperties": []});
        let n = note(Entity::Appointment, &Op::UpdateGraph { patch }, &o).unwrap();
        assert_eq!((n.side, n.op), (Side::Graph, WriteOp::Update));
        assert_eq!(n.prior, json!({"subject": "Old"}));
        let fields: CrmFields = [("A031Location".to_string(), "Room 2".to_string())].into();
        let n = note(Entity::Appointment, &Op::UpdateCrm { fields }, &o).unwrap();
        assert_eq!((n.side, n.op), (Side::Crm, WriteOp::Update));
        assert_eq!(n.prior, json!({"A031Location": "Room 1"}));
    }

    #[test]
    fn deletes_keep_the_item_or_the_mark_and_creates_nothing() {
        let o = obs();
        let n = note(Entity::Appointment, &Op::DeleteGraph, &o).unwrap();
        assert_eq!(n.prior["subject"], "Old");
        let n = note(Entity::Appointment, &Op::MarkCrmDeleted, &o).unwrap();
        assert_eq!(n.prior, json!({"ConnectorDeleted": "false"}));
        assert!(note(Entity::Contact, &Op::MarkCrmDeleted, &o).is_none());
        let n = note(
            Entity::Appointment,
            &Op::CreateGraph { body: json!({}) },
            &o,
        )
        .unwrap();
        assert_eq!((n.op, n.prior.clone()), (WriteOp::Create, Value::Null));
        assert!(note(Entity::Appointment, &Op::Unlink, &o).is_none());
    }

    #[test]
    fn every_field_record_of_one_write_shares_its_write_id() {
        let o = obs();
        let notes: Vec<Note> = note(
            Entity::Appointment,
            &Op::UpdateGraph {
                patch: json!({"subject": "New", "location": {}}),
            },
            &o,
        )
        .into_iter()
        .collect();
        let at = Utc::now();
        let entry = |field: &str, side| AuditEntry {
            entity: Entity::Appointment,
            side,
            field: field.into(),
            before: Value::Null,
            after: Value::Null,
            cause: cgc_core::Cause::CrmPoll,
        };
        let a = for_entry(&notes, "ev", at, &entry("subject", Side::Graph)).unwrap();
        let b = for_entry(&notes, "ev", at, &entry("location", Side::Graph)).unwrap();
        assert_eq!(a.write, b.write);
        assert_ne!(
            record_id("ev", at, &entry("subject", Side::Graph)),
            record_id("ev", at, &entry("location", Side::Graph))
        );
        assert!(for_entry(&notes, "ev", at, &entry("subject", Side::Crm)).is_none());
    }
}
