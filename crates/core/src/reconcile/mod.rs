//! Reconciliation: compare both sides with the shadow, field by field, and plan the writes.

mod decide;
pub mod fingerprint;
pub mod guard;
pub mod plan;
mod resolve;

pub use decide::{DecideError, decide, try_decide};
pub use fingerprint::fingerprint;
pub use guard::{MassDeleteRefused, mass_delete_guard};
pub use plan::{AuditEntry, Cause, ConflictField, Op, Plan, PlanKind, Side};
pub use resolve::{Resolution, ResolveError, resolve_conflict};

use crate::mapping::MapContext;
use crate::model::{Canonical, CrmFields, Entity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which way changes travel for an entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    #[default]
    Both,
    CrmToGraph,
    GraphToCrm,
    Off,
}

impl Direction {
    /// Kebab-case name, as in the configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::CrmToGraph => "crm-to-graph",
            Direction::GraphToCrm => "graph-to-crm",
            Direction::Off => "off",
        }
    }
}

/// How a field both sides changed differently is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    #[default]
    CrmWins,
    GraphWins,
    LatestChangeWins,
    Manual,
}

impl ConflictPolicy {
    /// Kebab-case name, as in the configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConflictPolicy::CrmWins => "crm-wins",
            ConflictPolicy::GraphWins => "graph-wins",
            ConflictPolicy::LatestChangeWins => "latest-change-wins",
            ConflictPolicy::Manual => "manual",
        }
    }
}

/// A tenant's settings for one entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Policy {
    pub direction: Direction,
    pub conflict: ConflictPolicy,
    /// Canonical field names that never travel and never conflict.
    pub exclude_fields: Vec<String>,
}

impl Policy {
    /// The fields that never travel for `entity`: `exclude_fields`, where for appointments
    /// excluding any of `start`, `end`, `all_day` excludes all three (CRM derives all-day from
    /// empty times, so the three cannot travel apart).
    pub fn excluded(&self, entity: Entity) -> Vec<String> {
        let mut out = self.exclude_fields.clone();
        if entity == Entity::Appointment
            && out
                .iter()
                .any(|f| crate::model::TIME_GROUP.contains(&f.as_str()))
        {
            for f in crate::model::TIME_GROUP {
                if !out.iter().any(|x| x == f) {
                    out.push(f.to_string());
                }
            }
        }
        out
    }
}

/// What the worker found on one side.
#[derive(Clone, Debug, PartialEq)]
pub enum SideState<T> {
    /// Not in the answer of a query, listing or delta (or never existed). Without a shadow it is
    /// "not there yet" (the other side's item is created there). With a shadow, absence is not
    /// deletion (expected-behaviour 35): the plan is a no-op whose reason starts with `absent:`
    /// and that keeps the shadow; nothing is written, deleted, marked or unlinked.
    Absent,
    /// Read back as deleted: Graph answered 404 to a GET of the item (a delta `@removed` is
    /// confirmed that way); CRM returned it with `DelCd = 1` (or not at all to a read by id).
    /// Only this state leads to deletes, marks and unlinks.
    Deleted,
    Present(T),
}

/// The current Graph item.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphItem {
    pub item: serde_json::Value,
    /// When we observed its content change (not `lastModifiedDateTime` alone).
    pub changed_at: Option<DateTime<Utc>>,
}

/// The current CRM record.
#[derive(Clone, Debug, PartialEq)]
pub struct CrmItem {
    pub fields: CrmFields,
    pub changed_at: Option<DateTime<Utc>>,
}

/// Everything `decide` needs.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub entity: Entity,
    /// Last agreed state (None: first contact or lost store).
    pub shadow: Option<&'a Canonical>,
    /// The item's fingerprint of the last agreed state ([`fingerprint()`], read from the Graph
    /// item's extended property). Used only when `shadow` is None and both sides are present:
    /// the agreed state is rebuilt from it field by field, so a lost store is not a fresh start.
    /// A fingerprint that does not parse is ignored (first contact).
    pub fingerprint: Option<&'a str>,
    pub graph: SideState<GraphItem>,
    pub crm: SideState<CrmItem>,
    /// The mailbox owner organises this event (from item or link).
    pub graph_organizer: bool,
    pub policy: &'a Policy,
    pub ctx: &'a MapContext,
    pub now: DateTime<Utc>,
    /// Appointments: the sync window (start inclusive .. end inclusive).
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub cause: Cause,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluding_one_time_field_excludes_the_time_group() {
        let p = Policy {
            exclude_fields: vec!["end".into(), "body".into()],
            ..Policy::default()
        };
        let mut got = p.excluded(Entity::Appointment);
        got.sort();
        assert_eq!(got, vec!["all_day", "body", "end", "start"]);
        // tasks have no time group: their start is an ordinary field
        assert_eq!(p.excluded(Entity::Task), vec!["end", "body"]);
    }

    #[test]
    fn policy_reads_config_spelling() {
        let p: Policy = serde_json::from_value(serde_json::json!({
            "direction": "crm-to-graph", "conflict": "latest-change-wins", "exclude_fields": ["body"]
        }))
        .expect("parses");
        assert_eq!(p.direction, Direction::CrmToGraph);
        assert_eq!(p.conflict, ConflictPolicy::LatestChangeWins);
    }
}
