//! An operator's resolution of a parked (manual) conflict.

use super::{AuditEntry, Cause, Op, Plan, PlanKind, Side};
use crate::mapping::{MapContext, project_crm, project_graph, to_crm, to_graph};
use crate::model::normalize::{ValueError, normalize_value};
use crate::model::{Canonical, Entity, TIME_GROUP};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the operator chose.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    TakeCrm,
    TakeGraph,
    /// Explicit canonical values, one for every conflicting field.
    Values(BTreeMap<String, Value>),
}

/// A resolution that cannot be applied (the admin API answers 400 with this message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("the conflict names no fields")]
    NoFields,
    #[error(
        "the resolution names no side and no values: send {{\"take\": \"crm\"}}, {{\"take\": \"graph\"}} or {{\"values\": {{...}}}}"
    )]
    NoSide,
    #[error("`{0}` is not a field of this entity")]
    UnknownField(String),
    #[error("`{0}` is not one of the conflict's fields")]
    NotInConflict(String),
    #[error("no value given for conflicting field `{0}`")]
    MissingValue(String),
    #[error("bad value: {0}")]
    BadValue(String),
}

/// Admin resolution of a parked (manual) conflict: chosen values reach both sides, new shadow = result.
/// The result starts from the shadow (or, without one, from CRM's content) with the chosen values
/// for `fields`; each side is written only where it does not already show the chosen value.
pub fn resolve_conflict(
    entity: Entity,
    shadow: Option<&Canonical>,
    graph: &Canonical,
    crm: &Canonical,
    fields: &[String],
    resolution: &Resolution,
    ctx: &MapContext,
) -> Result<Plan, ResolveError> {
    if fields.is_empty() {
        return Err(ResolveError::NoFields);
    }
    if let Some(f) = fields.iter().find(|f| !entity.has_field(f)) {
        return Err(ResolveError::UnknownField(f.clone()));
    }
    let mut chosen: BTreeMap<String, Value> = BTreeMap::new();
    let how = match resolution {
        Resolution::TakeCrm => {
            for f in fields {
                chosen.insert(f.clone(), crm.get(f).clone());
            }
            "taking CRM's values".to_string()
        }
        Resolution::TakeGraph => {
            for f in fields {
                chosen.insert(f.clone(), graph.get(f).clone());
            }
            "taking Graph's values".to_string()
        }
        Resolution::Values(values) => {
            if values.is_empty() {
                return Err(ResolveError::NoSide);
            }
            for k in values.keys() {
                if !entity.has_field(k) {
                    return Err(ResolveError::UnknownField(k.clone()));
                }
                if !fields.contains(k) {
                    return Err(ResolveError::NotInConflict(k.clone()));
                }
            }
            for f in fields {
                let v = values
                    .get(f)
                    .ok_or_else(|| ResolveError::MissingValue(f.clone()))?;
                let v = normalize_value(entity, f, v).map_err(|e| match e {
                    ValueError::UnknownField { field, .. } => ResolveError::UnknownField(field),
                    other => ResolveError::BadValue(other.to_string()),
                })?;
                chosen.insert(f.clone(), v);
            }
            "taking the operator's values".to_string()
        }
    };

    let mut new = shadow.cloned().unwrap_or_else(|| crm.clone());
    for (f, v) in &chosen {
        new.set(f, v.clone());
    }
    // keep the time group consistent: a chosen start/end shape decides all_day
    if entity == Entity::Appointment
        && fields.iter().any(|f| TIME_GROUP.contains(&f.as_str()))
        && !fields.iter().any(|f| f == "all_day")
        && let Some(s) = new.get("start").as_str()
    {
        let date_shaped = crate::model::normalize::parse_date(s).is_some();
        new.set("all_day", Value::Bool(date_shaped));
    }

    let pg = project_graph(entity, &new);
    let pc = project_crm(entity, &new, ctx);
    let graph_fields: Vec<String> = if entity == Entity::Email {
        Vec::new()
    } else {
        fields
            .iter()
            .filter(|f| pg.get(f) != graph.get(f))
            .cloned()
            .collect()
    };
    let crm_fields: Vec<String> = fields
        .iter()
        .filter(|f| pc.get(f) != crm.get(f))
        .cloned()
        .collect();

    let mut ops = Vec::new();
    let mut audit = Vec::new();
    if !graph_fields.is_empty() {
        ops.push(Op::UpdateGraph {
            patch: to_graph(entity, &new, Some(&graph_fields)),
        });
        audit.extend(graph_fields.iter().map(|f| AuditEntry {
            entity,
            side: Side::Graph,
            field: f.clone(),
            before: graph.get(f).clone(),
            after: new.get(f).clone(),
            cause: Cause::ConflictResolution,
        }));
    }
    if !crm_fields.is_empty() {
        ops.push(Op::UpdateCrm {
            fields: to_crm(entity, &new, Some(&crm_fields), ctx),
        });
        audit.extend(crm_fields.iter().map(|f| AuditEntry {
            entity,
            side: Side::Crm,
            field: f.clone(),
            before: crm.get(f).clone(),
            after: new.get(f).clone(),
            cause: Cause::ConflictResolution,
        }));
    }
    let kind = match (graph_fields.is_empty(), crm_fields.is_empty()) {
        (false, false) => PlanKind::Merge,
        (false, true) => PlanKind::CopyToGraph,
        (true, false) => PlanKind::CopyToCrm,
        (true, true) => PlanKind::NoOp,
    };
    Ok(Plan {
        entity,
        kind,
        ops,
        new_shadow: Some(new),
        audit,
        reason: format!("conflict on {} resolved by {how}", fields.join(", ")),
    })
}
