//! Plans: what a reconciliation decided, as data (printable, testable, dry-runnable).

use crate::model::{Canonical, CrmFields, Entity};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    Notification,
    Delta,
    CrmPoll,
    ConflictResolution,
    /// An operator undid an audited sync write (admin API).
    Undo,
}

/// One of the two systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Graph,
    Crm,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Graph => "Graph",
            Side::Crm => "CRM",
        })
    }
}

/// The overall shape of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanKind {
    NoOp,
    CopyToGraph,
    CopyToCrm,
    Merge,
    Conflict,
    Create,
    Delete,
    Unlink,
}

impl PlanKind {
    /// Kebab-case name, as serialised.
    pub fn as_str(&self) -> &'static str {
        match self {
            PlanKind::NoOp => "no-op",
            PlanKind::CopyToGraph => "copy-to-graph",
            PlanKind::CopyToCrm => "copy-to-crm",
            PlanKind::Merge => "merge",
            PlanKind::Conflict => "conflict",
            PlanKind::Create => "create",
            PlanKind::Delete => "delete",
            PlanKind::Unlink => "unlink",
        }
    }
}

/// One operation for the worker. There is deliberately no hard delete of CRM data.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Full content body (the worker adds transactionId + CRM-id property).
    CreateGraph {
        body: serde_json::Value,
    },
    /// Only changed properties.
    UpdateGraph {
        patch: serde_json::Value,
    },
    DeleteGraph,
    /// Full field set (appointments from Graph: Contact = "Meeting").
    CreateCrm {
        fields: CrmFields,
    },
    /// Only changed fields.
    UpdateCrm {
        fields: CrmFields,
    },
    /// ConnectorDeleted = true, never a hard delete.
    MarkCrmDeleted,
    /// Forget the link, touch neither side.
    Unlink,
    RaiseConflict {
        fields: Vec<ConflictField>,
    },
}

impl Op {
    /// Whether this operation writes to Graph or CRM.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Unlink | Op::RaiseConflict { .. })
    }
}

fn keys_of(v: &serde_json::Value) -> String {
    v.as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateGraph { body } => write!(f, "create in Graph: {}", keys_of(body)),
            Op::UpdateGraph { patch } => write!(f, "update Graph: {}", keys_of(patch)),
            Op::DeleteGraph => f.write_str("delete in Graph"),
            Op::CreateCrm { fields } => write!(
                f,
                "create in CRM: {}",
                fields.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Op::UpdateCrm { fields } => write!(
                f,
                "update CRM: {}",
                fields.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Op::MarkCrmDeleted => f.write_str("mark CRM record deleted (ConnectorDeleted = true)"),
            Op::Unlink => f.write_str("unlink (both sides kept as they are)"),
            Op::RaiseConflict { fields } => write!(
                f,
                "raise conflict on: {}",
                fields
                    .iter()
                    .map(|c| c.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// One field both sides changed differently, for an operator to settle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictField {
    pub field: String,
    pub crm: serde_json::Value,
    pub graph: serde_json::Value,
    pub base: serde_json::Value,
}

/// One field written to one side (before = that side's old value).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub entity: Entity,
    pub side: Side,
    pub field: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub cause: Cause,
}

/// The decision for one item.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub entity: Entity,
    pub kind: PlanKind,
    pub ops: Vec<Op>,
    /// None => no shadow any more (unlinked / deleted). Store it whenever it is Some, even for a
    /// no-op plan (a first contact that already agrees establishes the shadow without writes).
    pub new_shadow: Option<Canonical>,
    /// One per field written to a side (before = that side's old value).
    pub audit: Vec<AuditEntry>,
    /// One human sentence: why.
    pub reason: String,
}

impl Plan {
    /// No operation at all (no write, no unlink, no conflict).
    pub fn is_noop(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations that write to Graph or CRM.
    pub fn writes(&self) -> usize {
        self.ops.iter().filter(|o| o.is_write()).count()
    }

    /// The fingerprint of the new shadow ([`crate::fingerprint()`]), for the worker to carry on
    /// the Graph item (its extended property) when it writes the item; None when the plan keeps
    /// no shadow.
    pub fn fingerprint(&self) -> Option<String> {
        self.new_shadow
            .as_ref()
            .map(|s| crate::reconcile::fingerprint::fingerprint(self.entity, s))
    }

    /// The conflict fields, when the plan raises a conflict.
    pub fn conflicts(&self) -> &[ConflictField] {
        self.ops
            .iter()
            .find_map(|o| match o {
                Op::RaiseConflict { fields } => Some(fields.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }
}

impl fmt::Display for Plan {
    /// A header line (`entity kind: reason`), then one line per op.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.entity, self.kind.as_str(), self.reason)?;
        for op in &self.ops {
            write!(f, "\n  - {op}")?;
        }
        Ok(())
    }
}
