//! The decision procedure (ARCHITECTURE.md "Reconciliation", MAPPING.md comparison rule).

use super::fingerprint::Fingerprint;
use super::{
    AuditEntry, Cause, ConflictField, ConflictPolicy, Direction, Input, Op, Plan, PlanKind, Side,
    SideState,
};
use crate::mapping::{
    MapError, from_crm, from_graph, project_crm, project_graph, to_crm, to_graph,
};
use crate::model::normalize::{attendee_pairs, attendees_value, value_instant};
use crate::model::{Canonical, Entity, TIME_GROUP};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A side's content could not be mapped to canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("cannot read the Graph item: {0}")]
    Graph(MapError),
    #[error("cannot read the CRM record: {0}")]
    Crm(MapError),
}

/// Decides what to do with one item. Never panics: content that cannot be mapped gives a no-op
/// plan whose reason starts with `skipped:` and that keeps the shadow (use [`try_decide`] to get
/// the error itself, e.g. to dead-letter the event).
pub fn decide(input: &Input<'_>) -> Plan {
    try_decide(input).unwrap_or_else(|e| Plan {
        entity: input.entity,
        kind: PlanKind::NoOp,
        ops: Vec::new(),
        new_shadow: input.shadow.cloned(),
        audit: Vec::new(),
        reason: format!("skipped: {e}; nothing written"),
    })
}

#[derive(Clone, Copy)]
struct Caps {
    graph: bool,
    crm: bool,
}

fn caps(entity: Entity, dir: Direction) -> Caps {
    let graph = matches!(dir, Direction::Both | Direction::CrmToGraph) && entity != Entity::Email;
    let crm = matches!(dir, Direction::Both | Direction::GraphToCrm);
    Caps { graph, crm }
}

fn simple(
    entity: Entity,
    kind: PlanKind,
    ops: Vec<Op>,
    new_shadow: Option<Canonical>,
    audit: Vec<AuditEntry>,
    reason: impl Into<String>,
) -> Plan {
    Plan {
        entity,
        kind,
        ops,
        new_shadow,
        audit,
        reason: reason.into(),
    }
}

fn noop(entity: Entity, shadow: Option<Canonical>, reason: impl Into<String>) -> Plan {
    simple(
        entity,
        PlanKind::NoOp,
        Vec::new(),
        shadow,
        Vec::new(),
        reason,
    )
}

/// A side was not in a query's, listing's or delta's answer while the pair is linked: absence is
/// not deletion (expected-behaviour 35), so nothing is written, deleted or unlinked and the
/// shadow is kept.
fn absent(input: &Input<'_>, what: &str) -> Plan {
    noop(
        input.entity,
        input.shadow.cloned(),
        format!(
            "absent: {what} was not in the answer; nothing deleted, unlinked or written; link kept"
        ),
    )
}

fn unlink(entity: Entity, reason: impl Into<String>) -> Plan {
    simple(
        entity,
        PlanKind::Unlink,
        vec![Op::Unlink],
        None,
        Vec::new(),
        reason,
    )
}

fn deletion_audit(entity: Entity, side: Side, cause: Cause) -> Vec<AuditEntry> {
    vec![AuditEntry {
        entity,
        side,
        field: "deleted".into(),
        before: json!(false),
        after: json!(true),
        cause,
    }]
}

/// Like [`decide`], but a side that cannot be mapped is an error.
pub fn try_decide(input: &Input<'_>) -> Result<Plan, DecideError> {
    let e = input.entity;
    let dir = input.policy.direction;
    if dir == Direction::Off {
        return Ok(noop(
            e,
            input.shadow.cloned(),
            format!("synchronisation of {e}s is off; nothing compared"),
        ));
    }
    let excluded = &input.policy.excluded(e);
    let g = match &input.graph {
        SideState::Present(it) => {
            Some(from_graph(e, &it.item, input.ctx).map_err(DecideError::Graph)?)
        }
        _ => None,
    };
    let c = match &input.crm {
        SideState::Present(it) => {
            Some(from_crm(e, &it.fields, input.ctx).map_err(DecideError::Crm)?)
        }
        _ => None,
    };
    let shadow = input.shadow.map(|s| s.without(excluded));
    let caps = caps(e, dir);

    if e == Entity::Appointment
        && let Some((from, to)) = input.window
    {
        // the sides' own starts; the shadow's only for a side confirmed deleted (an absent side
        // proves nothing, and a stale shadow start must not unlink it: expected-behaviour 35)
        let mut starts: Vec<&Value> = Vec::new();
        starts.extend(g.as_ref().map(|g| g.get("start")));
        starts.extend(c.as_ref().map(|c| c.get("start")));
        if matches!(input.graph, SideState::Deleted) || matches!(input.crm, SideState::Deleted) {
            starts.extend(input.shadow.map(|s| s.get("start")));
        }
        let outside = starts
            .iter()
            .filter_map(|v| value_instant(v))
            .any(|t| t < from || t > to);
        if outside {
            return Ok(if input.shadow.is_some() {
                unlink(
                    e,
                    "the appointment starts outside the sync window; unlinked, nothing deleted",
                )
            } else {
                noop(
                    e,
                    None,
                    "the appointment starts outside the sync window; not synced",
                )
            });
        }
    }

    let graph_deleted = matches!(input.graph, SideState::Deleted);
    let crm_deleted = matches!(input.crm, SideState::Deleted);
    let graph_absent = matches!(input.graph, SideState::Absent);
    let crm_absent = matches!(input.crm, SideState::Absent);
    Ok(match (g, c) {
        (Some(g), Some(c)) => {
            // lost store: the item's fingerprint tells the agreed state field by field
            let rebuilt = if shadow.is_none() {
                input.fingerprint.and_then(|t| Fingerprint::parse(e, t))
            } else {
                None
            };
            reconcile_both(input, g, c, shadow, rebuilt, caps)
        }
        (Some(g), None) => {
            if crm_deleted {
                on_crm_deleted(input, &g, shadow.as_ref(), caps)
            } else if shadow.is_some() {
                absent(input, "the CRM record")
            } else {
                create_in_crm(input, g, caps)
            }
        }
        (None, Some(c)) => {
            if graph_deleted {
                on_graph_deleted(input, caps)
            } else if shadow.is_some() {
                absent(input, "the Graph item")
            } else {
                create_in_graph(input, c, caps)
            }
        }
        (None, None) => {
            if shadow.is_some() && (graph_absent || crm_absent) {
                absent(
                    input,
                    match (graph_absent, crm_absent) {
                        (true, true) => "the item, on both sides,",
                        (true, false) => "the Graph item",
                        _ => "the CRM record",
                    },
                )
            } else if shadow.is_some() || graph_deleted || crm_deleted {
                unlink(e, "the item is gone on both sides; link removed")
            } else {
                noop(e, None, "nothing on either side")
            }
        }
    })
}

fn non_excluded(input: &Input<'_>) -> Vec<String> {
    let excluded = input.policy.excluded(input.entity);
    input
        .entity
        .fields()
        .iter()
        .filter(|f| !excluded.iter().any(|x| x == *f))
        .map(|f| f.to_string())
        .collect()
}

fn create_in_crm(input: &Input<'_>, g: Canonical, caps: Caps) -> Plan {
    let e = input.entity;
    if !caps.crm {
        return noop(
            e,
            None,
            format!(
                "new in Graph only; direction {} does not create in CRM",
                input.policy.direction.as_str()
            ),
        );
    }
    let only = non_excluded(input);
    let g = g.without(&input.policy.excluded(e));
    let mut fields = to_crm(e, &g, Some(&only), input.ctx);
    if e == Entity::Appointment {
        fields.insert("Contact".into(), "Meeting".into());
    }
    let audit = created_audit(e, Side::Crm, &g, &only, input.cause);
    simple(
        e,
        PlanKind::Create,
        vec![Op::CreateCrm { fields }],
        Some(g),
        audit,
        format!("new {e} in Graph; created in CRM"),
    )
}

fn create_in_graph(input: &Input<'_>, c: Canonical, caps: Caps) -> Plan {
    let e = input.entity;
    if e == Entity::Email {
        return noop(
            e,
            None,
            "archived e-mail flows from Graph to CRM only; nothing created in Graph",
        );
    }
    if !caps.graph {
        return noop(
            e,
            None,
            format!(
                "new in CRM only; direction {} does not create in Graph",
                input.policy.direction.as_str()
            ),
        );
    }
    let only = non_excluded(input);
    let c = c.without(&input.policy.excluded(e));
    let body = to_graph(e, &c, Some(&only));
    let audit = created_audit(e, Side::Graph, &c, &only, input.cause);
    simple(
        e,
        PlanKind::Create,
        vec![Op::CreateGraph { body }],
        Some(c),
        audit,
        format!("new {e} in CRM; created in Graph"),
    )
}

fn created_audit(
    e: Entity,
    side: Side,
    content: &Canonical,
    only: &[String],
    cause: Cause,
) -> Vec<AuditEntry> {
    only.iter()
        .filter(|f| !content.get(f).is_null())
        .map(|f| AuditEntry {
            entity: e,
            side,
            field: f.clone(),
            before: Value::Null,
            after: content.get(f).clone(),
            cause,
        })
        .collect()
}

fn on_graph_deleted(input: &Input<'_>, caps: Caps) -> Plan {
    let e = input.entity;
    if input.shadow.is_none() {
        return unlink(e, "deleted in Graph but never synced; nothing deleted");
    }
    match e {
        Entity::Appointment if input.graph_organizer && caps.crm => simple(
            e,
            PlanKind::Delete,
            vec![Op::MarkCrmDeleted],
            None,
            deletion_audit(e, Side::Crm, input.cause),
            "the organizer deleted the event in Graph; the CRM record is marked deleted (ConnectorDeleted), not removed",
        ),
        Entity::Appointment if !input.graph_organizer => unlink(
            e,
            "an attendee's copy was deleted in Graph; only this mailbox's link is removed",
        ),
        Entity::Appointment => unlink(
            e,
            format!(
                "deleted in Graph; direction {} does not write CRM, link removed",
                input.policy.direction.as_str()
            ),
        ),
        _ => unlink(
            e,
            format!("{e} deleted in Graph; CRM data kept, link removed"),
        ),
    }
}

fn on_crm_deleted(
    input: &Input<'_>,
    g: &Canonical,
    shadow: Option<&Canonical>,
    caps: Caps,
) -> Plan {
    let e = input.entity;
    let Some(shadow) = shadow else {
        return unlink(e, "deleted in CRM but never synced; nothing deleted");
    };
    let delete = || {
        simple(
            e,
            PlanKind::Delete,
            vec![Op::DeleteGraph],
            None,
            deletion_audit(e, Side::Graph, input.cause),
            format!("{e} deleted in CRM; removed from Graph"),
        )
    };
    if !caps.graph {
        return unlink(
            e,
            format!(
                "deleted in CRM; direction {} does not write Graph, link removed",
                input.policy.direction.as_str()
            ),
        );
    }
    match e {
        Entity::Appointment => {
            // the shadow's start (falls back to Graph's when the start field is excluded)
            let start =
                value_instant(shadow.get("start")).or_else(|| value_instant(g.get("start")));
            let future = start.is_some_and(|s| s > input.now);
            let cancelled = shadow.get("cancelled").as_bool().unwrap_or(false)
                || g.get("cancelled").as_bool().unwrap_or(false);
            if !future {
                unlink(
                    e,
                    "deleted in CRM, but the event is past; kept in Graph, link removed",
                )
            } else if cancelled {
                unlink(
                    e,
                    "deleted in CRM, but the event is cancelled; kept in Graph, link removed",
                )
            } else {
                delete()
            }
        }
        Entity::Contact | Entity::Task => delete(),
        Entity::Email => unlink(
            e,
            "archived e-mail deleted in CRM; the message is kept, link removed",
        ),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum D {
    /// Neither side changed.
    Keep,
    /// Graph's value wins (CRM is written if it differs).
    FromGraph,
    /// CRM's value wins.
    FromCrm,
    /// Both sides hold the same content (possibly as each can represent it).
    Agree(Value),
    /// Both changed differently; not settled yet.
    Conflict,
    /// Not written because of the direction; the named side's value stays in force.
    Ignored(Side),
    /// Parked for an operator.
    Manual,
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// CRM cannot hold attendee types: take them from Graph's current list, then from the shadow.
fn enrich_crm(e: Entity, c: &Canonical, g: &Canonical, shadow: Option<&Canonical>) -> Canonical {
    if e != Entity::Appointment || c.get("attendees").is_null() {
        return c.clone();
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    if let Some(s) = shadow {
        types.extend(attendee_pairs(s.get("attendees")));
    }
    types.extend(attendee_pairs(g.get("attendees")));
    let pairs: Vec<(String, Option<String>)> = attendee_pairs(c.get("attendees"))
        .into_iter()
        .map(|(a, _)| {
            let t = types.get(&a).cloned();
            (a, t)
        })
        .collect();
    let mut out = c.clone();
    out.set("attendees", attendees_value(pairs));
    out
}

fn winner(input: &Input<'_>, caps: Caps) -> Option<Side> {
    if caps.graph && !caps.crm {
        return Some(Side::Crm); // only Graph is written: CRM is the source
    }
    if caps.crm && !caps.graph {
        return Some(Side::Graph);
    }
    match input.policy.conflict {
        ConflictPolicy::CrmWins => Some(Side::Crm),
        ConflictPolicy::GraphWins => Some(Side::Graph),
        ConflictPolicy::LatestChangeWins => {
            let g_at = match &input.graph {
                SideState::Present(it) => it.changed_at,
                _ => None,
            };
            let c_at = match &input.crm {
                SideState::Present(it) => it.changed_at,
                _ => None,
            };
            match (g_at, c_at) {
                (Some(g), Some(c)) if g > c => Some(Side::Graph),
                _ => Some(Side::Crm), // tie or unknown: CRM
            }
        }
        ConflictPolicy::Manual => None,
    }
}

fn list(fields: &[&str]) -> String {
    fields.join(", ")
}

/// Both sides present. The agreed state is the stored `shadow`, or (store lost) the item's
/// fingerprint `rebuilt`, which tells per field whether each side still shows the agreed value,
/// or neither (first contact).
fn reconcile_both(
    input: &Input<'_>,
    g: Canonical,
    c: Canonical,
    shadow: Option<Canonical>,
    rebuilt: Option<Fingerprint>,
    caps: Caps,
) -> Plan {
    let e = input.entity;
    let ctx = input.ctx;
    let excluded = &input.policy.excluded(e);
    let fields: Vec<&'static str> = e
        .fields()
        .iter()
        .copied()
        .filter(|f| !excluded.iter().any(|x| x == f))
        .collect();
    // Projections: excluded fields are filled with the target side's own values (that side keeps
    // them), so fields the CRM derives together (Date -> start and end) project correctly.
    let fill = |base: &Canonical, side: &Canonical| {
        let mut out = base.clone();
        for f in excluded {
            out.set(f, side.get(f).clone());
        }
        out
    };
    let projected = shadow.as_ref().map(|b| {
        (
            project_graph(e, &fill(b, &g)),
            project_crm(e, &fill(b, &c), ctx),
        )
    });
    let g_on_crm = project_crm(e, &fill(&g, &c), ctx);
    let c_on_graph = project_graph(e, &fill(&c, &g));
    let c_val = enrich_crm(e, &c, &g, shadow.as_ref());

    // per field: (Graph changed, CRM changed) since the agreed state, when it is known
    let changes = |f: &str| -> Option<(bool, bool)> {
        match (&projected, &rebuilt) {
            (Some((pg, pc)), _) => Some((g.get(f) != pg.get(f), c.get(f) != pc.get(f))),
            (None, Some(fp)) => Some((
                !fp.graph_unchanged(f, g.get(f)),
                !fp.crm_unchanged(f, c.get(f)),
            )),
            (None, None) => None,
        }
    };
    let mut d: BTreeMap<&'static str, D> = BTreeMap::new();
    let (mut g_only, mut c_only, mut same) = (Vec::new(), Vec::new(), Vec::new());
    let mut both_changed: Vec<&str> = Vec::new();
    for &f in &fields {
        let (gv, cv) = (g.get(f), c.get(f));
        let agreed = if gv == cv || g_on_crm.get(f) == cv {
            Some(gv.clone())
        } else if c_on_graph.get(f) == gv {
            Some(c_val.get(f).clone())
        } else {
            None
        };
        let dec = match changes(f) {
            Some(changed) => match changed {
                (false, false) => D::Keep,
                (true, false) => {
                    g_only.push(f);
                    D::FromGraph
                }
                (false, true) => {
                    c_only.push(f);
                    D::FromCrm
                }
                (true, true) => match agreed {
                    Some(v) => {
                        same.push(f);
                        D::Agree(v)
                    }
                    None => {
                        both_changed.push(f);
                        D::Conflict
                    }
                },
            },
            None => match agreed {
                Some(v) => D::Agree(v),
                None if is_empty(gv) => {
                    c_only.push(f);
                    D::FromCrm
                }
                None if is_empty(cv) => {
                    g_only.push(f);
                    D::FromGraph
                }
                None => D::Conflict,
            },
        };
        d.insert(f, dec);
    }

    // start, end and all_day travel together: when both sides touched the timing, every changed
    // member is settled (or parked) as one unit, so one side's timing wins as a whole
    if e == Entity::Appointment {
        let group: Vec<&'static str> = TIME_GROUP
            .iter()
            .copied()
            .filter(|f| d.contains_key(f))
            .collect();
        let touched = |side: &D| {
            group
                .iter()
                .any(|f| d.get(f) == Some(side) || d.get(f) == Some(&D::Conflict))
        };
        if touched(&D::FromGraph) && touched(&D::FromCrm) {
            for f in &group {
                if let Some(x) = d.get_mut(f)
                    && matches!(x, D::FromGraph | D::FromCrm | D::Agree(_))
                {
                    *x = D::Conflict;
                }
            }
        }
    }

    same.retain(|f| matches!(d.get(f), Some(D::Agree(_))));

    let win = winner(input, caps);
    let mut settled = Vec::new();
    for (f, x) in d.iter_mut() {
        if *x == D::Conflict {
            *x = match win {
                Some(Side::Graph) => D::FromGraph,
                Some(Side::Crm) => D::FromCrm,
                None => D::Manual,
            };
            if win.is_some() {
                settled.push(*f);
            }
        }
    }
    let mut ignored = Vec::new();
    for (f, x) in d.iter_mut() {
        if *x == D::FromGraph && !caps.crm {
            *x = D::Ignored(Side::Crm);
            ignored.push(*f);
        } else if *x == D::FromCrm && !caps.graph {
            *x = D::Ignored(Side::Graph);
            ignored.push(*f);
        }
    }

    // the agreed value: the stored shadow's, or (rebuilt) the reading of a side that still shows
    // it, Null when unknown
    let has_base = shadow.is_some() || rebuilt.is_some();
    let base = |f: &str| match (&shadow, &rebuilt) {
        (Some(b), _) => b.get(f).clone(),
        (None, Some(fp)) if fp.graph_unchanged(f, g.get(f)) => g.get(f).clone(),
        (None, Some(fp)) if fp.crm_unchanged(f, c.get(f)) => c_val.get(f).clone(),
        _ => Value::Null,
    };
    let mut new = Canonical::new();
    for &f in &fields {
        let v = match &d[f] {
            D::Keep => base(f),
            D::FromGraph => g.get(f).clone(),
            D::FromCrm => c_val.get(f).clone(),
            D::Agree(v) => v.clone(),
            D::Ignored(side) => match (has_base, side) {
                (true, _) => base(f),
                (false, Side::Crm) => c_val.get(f).clone(),
                (false, Side::Graph) => g.get(f).clone(),
            },
            D::Manual | D::Conflict => base(f),
        };
        new.set(f, v);
    }
    // rebuilt: a kept field holds Graph's reading; where that reading is lossy for CRM (a
    // cancelled task shows as completed in To Do) the CRM reading is the agreed value
    if shadow.is_none() && rebuilt.is_some() {
        let pg = project_graph(e, &fill(&new, &g));
        let pc = project_crm(e, &fill(&new, &c), ctx);
        let lossy: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|f| d[*f] == D::Keep && (pg.get(f) != g.get(f) || pc.get(f) != c.get(f)))
            .collect();
        for f in lossy {
            new.set(f, c_val.get(f).clone());
        }
    }

    let pg_new = project_graph(e, &fill(&new, &g));
    let pc_new = project_crm(e, &fill(&new, &c), ctx);
    let travels = |x: &D| matches!(x, D::Keep | D::FromGraph | D::FromCrm | D::Agree(_));
    let graph_fields: Vec<String> = fields
        .iter()
        .filter(|f| caps.graph && travels(&d[**f]) && pg_new.get(f) != g.get(f))
        .map(|f| f.to_string())
        .collect();
    let crm_fields: Vec<String> = fields
        .iter()
        .filter(|f| caps.crm && travels(&d[**f]) && pc_new.get(f) != c.get(f))
        .map(|f| f.to_string())
        .collect();
    let manual: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| d[f] == D::Manual)
        .collect();

    let mut ops = Vec::new();
    let mut audit = Vec::new();
    if !graph_fields.is_empty() {
        ops.push(Op::UpdateGraph {
            patch: to_graph(e, &new, Some(&graph_fields)),
        });
        audit.extend(graph_fields.iter().map(|f| AuditEntry {
            entity: e,
            side: Side::Graph,
            field: f.clone(),
            before: g.get(f).clone(),
            after: new.get(f).clone(),
            cause: input.cause,
        }));
    }
    if !crm_fields.is_empty() {
        ops.push(Op::UpdateCrm {
            fields: to_crm(e, &new, Some(&crm_fields), ctx),
        });
        audit.extend(crm_fields.iter().map(|f| AuditEntry {
            entity: e,
            side: Side::Crm,
            field: f.clone(),
            before: c.get(f).clone(),
            after: new.get(f).clone(),
            cause: input.cause,
        }));
    }
    if !manual.is_empty() {
        ops.push(Op::RaiseConflict {
            fields: manual
                .iter()
                .map(|f| ConflictField {
                    field: f.to_string(),
                    crm: c.get(f).clone(),
                    graph: g.get(f).clone(),
                    base: base(f),
                })
                .collect(),
        });
    }

    let kind = if !manual.is_empty() {
        PlanKind::Conflict
    } else {
        match (graph_fields.is_empty(), crm_fields.is_empty()) {
            (false, false) => PlanKind::Merge,
            (false, true) => PlanKind::CopyToGraph,
            (true, false) => PlanKind::CopyToCrm,
            (true, true) => PlanKind::NoOp,
        }
    };

    let mut parts: Vec<String> = Vec::new();
    if shadow.is_none() && rebuilt.is_some() {
        parts.push("shadow rebuilt from the item's fingerprint".into());
    } else if shadow.is_none() {
        parts.push("first sync of a matched pair".into());
    }
    if !g_only.is_empty() {
        parts.push(format!("Graph changed {}", list(&g_only)));
    }
    if !c_only.is_empty() {
        parts.push(format!("CRM changed {}", list(&c_only)));
    }
    if !same.is_empty() {
        parts.push(format!("both changed {} the same way", list(&same)));
    }
    both_changed.retain(|f| settled.contains(f) || manual.contains(f));
    if !both_changed.is_empty() && shadow.is_none() {
        parts.push(format!(
            "both changed {} since the agreed state",
            list(&both_changed)
        ));
    }
    if !settled.is_empty() {
        let by = if caps.graph && caps.crm {
            input.policy.conflict.as_str()
        } else {
            input.policy.direction.as_str()
        };
        parts.push(format!("conflict on {} settled by {by}", list(&settled)));
    }
    if !manual.is_empty() {
        parts.push(format!(
            "conflict on {} parked for manual resolution",
            list(&manual)
        ));
    }
    if !ignored.is_empty() {
        parts.push(format!(
            "{} not synced (direction {})",
            list(&ignored),
            input.policy.direction.as_str()
        ));
    }
    if parts.is_empty() || (parts.len() == 1 && shadow.is_none()) {
        parts.push(if shadow.is_none() && rebuilt.is_none() {
            "both sides already agree".into()
        } else {
            "neither side changed content since the last sync".into()
        });
    }
    let mut reason = parts.join("; ");
    if ops.is_empty() {
        reason.push_str("; nothing to write");
    }

    simple(e, kind, ops, Some(new), audit, reason)
}
