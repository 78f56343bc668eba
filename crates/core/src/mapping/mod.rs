//! Graph JSON <-> canonical <-> CRM fields, as MAPPING.md defines them.

mod crm;
mod graph;
pub mod records;
pub mod time;

use crate::model::{Canonical, CrmFields, Entity};
use std::collections::BTreeSet;

pub use crm::{from_crm, to_crm};
pub use graph::{from_graph, to_graph};

/// What the mapping needs to know about the tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct MapContext {
    /// The tenant's `crm_time_zone`: CRM dates and times are wall-clock times in this zone.
    pub crm_zone: chrono_tz::Tz,
    /// Lower-cased e-mail addresses that have a CRM Person (attendees with one go to
    /// `Participants`, the others to `MissingParticipants`).
    pub known_person_emails: BTreeSet<String>,
}

impl MapContext {
    /// A context for `crm_zone` with no known persons.
    pub fn new(crm_zone: chrono_tz::Tz) -> Self {
        Self {
            crm_zone,
            known_person_emails: BTreeSet::new(),
        }
    }
}

impl Default for MapContext {
    fn default() -> Self {
        Self::new(chrono_tz::Tz::UTC)
    }
}

/// A value that cannot be mapped; names the field and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the Graph item is not a JSON object")]
    NotAnObject,
    #[error("field `{field}`: {reason} (got {value})")]
    BadValue {
        field: String,
        value: String,
        reason: String,
    },
    /// Kept for callers that match on it; the mapping no longer produces it (an unknown zone is
    /// read as UTC, see `time::unknown_time_zones`).
    #[error(
        "field `{field}`: unknown time zone {zone:?} (expected UTC, an IANA name such as Europe/Berlin or a Windows name such as W. Europe Standard Time)"
    )]
    UnknownTimeZone { field: String, zone: String },
}

impl MapError {
    pub(crate) fn bad(field: &str, value: impl std::fmt::Display, reason: &str) -> Self {
        let mut value = value.to_string();
        if value.chars().count() > 80 {
            value = value.chars().take(77).collect::<String>() + "...";
        }
        MapError::BadValue {
            field: field.to_string(),
            value,
            reason: reason.to_string(),
        }
    }
}

/// The shadow as Graph would show it: `from_graph(to_graph(c))`. Values Graph cannot represent
/// exactly (a CRM `cancelled` task is `completed` in To Do) come back in Graph's reading.
pub fn project_graph(entity: Entity, c: &Canonical) -> Canonical {
    from_graph(entity, &to_graph(entity, c, None), &MapContext::default())
        .unwrap_or_else(|_| c.clone())
}

/// The shadow as CRM would show it: `from_crm(to_crm(c))` (attendee types are lost, times are
/// rounded through the CRM zone, ...).
pub fn project_crm(entity: Entity, c: &Canonical, ctx: &MapContext) -> Canonical {
    let fields: CrmFields = to_crm(entity, c, None, ctx);
    from_crm(entity, &fields, ctx).unwrap_or_else(|_| c.clone())
}

/// Whether `only` selects `field` (None selects everything).
pub(crate) fn wants(only: Option<&[String]>, field: &str) -> bool {
    only.is_none_or(|o| o.iter().any(|f| f == field))
}

/// Whether `only` selects any field of the appointment time group.
pub(crate) fn wants_time_group(only: Option<&[String]>) -> bool {
    crate::model::TIME_GROUP.iter().any(|f| wants(only, f))
}

/// Whether a canonical appointment is all-day: its `all_day` flag, or else a date-shaped start.
pub(crate) fn is_all_day(c: &Canonical) -> bool {
    c.get("all_day").as_bool().unwrap_or_else(|| {
        c.get("start")
            .as_str()
            .is_some_and(|s| crate::model::normalize::parse_date(s).is_some())
    })
}
