//! Lost state is not a fresh start (expected-behaviour 38) and coming back is re-linking (37):
//! with no stored shadow, the item's fingerprint of the last agreed state decides exactly as the
//! stored shadow would. Also: leaving the window unlinks and never deletes (36).

mod common;

use cgc_core::*;
use common::*;
use serde_json::{Value, json};

const POLICIES: [ConflictPolicy; 4] = [
    ConflictPolicy::CrmWins,
    ConflictPolicy::GraphWins,
    ConflictPolicy::LatestChangeWins,
    ConflictPolicy::Manual,
];

fn contact() -> Canonical {
    Canonical::new()
        .with("given_name", "Jürgen")
        .with("surname", "Groß")
        .with("email", "juergen.gross@kunde.at")
        .with("business_phone", "+43 1 234 56")
        .with("mobile_phone", "+43 664 000")
        .with("job_title", "Geschäftsführer")
        .with("company", "Müller & Söhne GmbH")
}

fn task(status: &str) -> Canonical {
    Canonical::new()
        .with("title", "Angebot prüfen – ₹ 8.300")
        .with("body", "नमस्ते\n\nBitte bis Freitag")
        .with("start", "2026-11-20")
        .with("due", "2026-11-27")
        .with("status", status)
        .with("importance", "high")
}

fn email() -> Canonical {
    Canonical::new()
        .with("subject", "Angebot")
        .with("body", "Grüße")
        .with("sent", "2026-11-20T08:15Z")
        .with("people", json!(["ana@customer.test", "rep1@vendor.test"]))
}

fn shadows() -> Vec<(Entity, Canonical)> {
    vec![
        (Entity::Appointment, linked_appointment().0),
        (Entity::Contact, contact()),
        (Entity::Task, task("in-progress")),
        // a value To Do cannot show exactly (cancelled reads as completed there)
        (Entity::Task, task("cancelled")),
        (Entity::Email, email()),
    ]
}

/// A canonical value of `field` that differs from `current`.
fn other(entity: Entity, field: &str, current: &Value, n: usize) -> Value {
    let kind = entity.field_kind(field).unwrap_or(FieldKind::Text);
    let v = match kind {
        FieldKind::Text => json!(format!("geändert {n} – Grüße")),
        FieldKind::Email => json!(format!("neu{n}@x.test")),
        FieldKind::Bool => json!(!current.as_bool().unwrap_or(false)),
        FieldKind::Minutes => json!(30 + n as u64),
        FieldKind::Date => json!(format!("2026-12-0{}", 1 + n)),
        FieldKind::Instant | FieldKind::DateOrInstant => {
            json!(format!("2026-11-2{}T1{n}:00Z", 4 + n))
        }
        FieldKind::Enum(list) => {
            let options: Vec<&&str> = list
                .iter()
                .filter(|x| Some(**x) != current.as_str() && **x != "cancelled")
                .collect();
            json!(options[n % options.len()])
        }
        FieldKind::Attendees => {
            json!([{"address": format!("carl{n}@new.test"), "type": "optional"}])
        }
        FieldKind::People => json!([format!("carl{n}@new.test")]),
    };
    normalize_value(entity, field, &v).unwrap_or(v)
}

/// The fields one edit changes together (an appointment's timing moves as a whole).
fn edit(entity: Entity, shadow: &Canonical, field: &str, n: usize) -> Vec<(String, Value)> {
    if entity == Entity::Appointment && matches!(field, "start" | "end" | "all_day") {
        let h = 11 + n;
        return vec![
            ("start".into(), json!(format!("2026-11-23T{h}:00Z"))),
            ("end".into(), json!(format!("2026-11-23T{}:30Z", h + 1))),
            ("all_day".into(), json!(false)),
        ];
    }
    vec![(
        field.to_string(),
        other(entity, field, shadow.get(field), n),
    )]
}

struct Pair {
    graph: Value,
    crm: CrmFields,
}

impl Pair {
    fn new(e: Entity, shadow: &Canonical, ctx: &MapContext) -> Pair {
        let mut graph = to_graph(e, shadow, None);
        graph["id"] = json!("AAMkITEM");
        Pair {
            graph,
            crm: to_crm(e, shadow, None, ctx),
        }
    }

    fn edit(&mut self, e: Entity, side: Side, fields: &[(String, Value)], ctx: &MapContext) {
        let only: Vec<String> = fields.iter().map(|(f, _)| f.clone()).collect();
        match side {
            Side::Graph => {
                let mut c = from_graph(e, &self.graph, ctx).expect("graph maps");
                for (f, v) in fields {
                    c.set(f, v.clone());
                }
                let patch = to_graph(e, &c, Some(&only));
                if let (Some(g), Some(p)) = (self.graph.as_object_mut(), patch.as_object()) {
                    for (k, v) in p {
                        g.insert(k.clone(), v.clone());
                    }
                }
            }
            Side::Crm => {
                let mut c = from_crm(e, &self.crm, ctx).expect("crm maps");
                for (f, v) in fields {
                    c.set(f, v.clone());
                }
                self.crm.extend(to_crm(e, &c, Some(&only), ctx));
            }
        }
    }

    fn decide(
        &self,
        e: Entity,
        shadow: Option<&Canonical>,
        fingerprint: Option<&str>,
        policy: &Policy,
        ctx: &MapContext,
    ) -> Plan {
        let mut i = input(
            e,
            shadow,
            present_graph(self.graph.clone(), Some("2026-11-21T10:00:00Z")),
            present_crm(self.crm.clone(), Some("2026-11-21T09:00:00Z")),
            policy,
            ctx,
        );
        i.fingerprint = fingerprint;
        decide(&i)
    }
}

/// The plan's kind and operations; a parked conflict's `base` is left out (after a lost store
/// the agreed value of a field both sides changed is not known: it is Null there).
fn both(p: &Plan) -> (PlanKind, Vec<Op>) {
    let ops = p
        .ops
        .iter()
        .map(|o| match o {
            Op::RaiseConflict { fields } => Op::RaiseConflict {
                fields: fields
                    .iter()
                    .map(|f| ConflictField {
                        base: Value::Null,
                        ..f.clone()
                    })
                    .collect(),
            },
            other => other.clone(),
        })
        .collect();
    (p.kind.clone(), ops)
}

/// Every field of every entity, edited on one side while the store was lost, under every
/// policy: the edit travels to the other side (the policy does not decide), exactly as with the
/// stored shadow.
#[test]
fn one_sided_edit_with_lost_store_travels_like_with_the_shadow() {
    let ctx = ctx();
    for (e, shadow) in shadows() {
        let fp = fingerprint(e, &shadow);
        for field in e.fields() {
            for side in [Side::Graph, Side::Crm] {
                if e == Entity::Email && side == Side::Crm {
                    continue; // one way: CRM edits of archived mail never travel
                }
                let changes = edit(e, &shadow, field, 0);
                let mut pair = Pair::new(e, &shadow, &ctx);
                pair.edit(e, side, &changes, &ctx);
                for conflict in POLICIES {
                    let p = policy(conflict);
                    let stored = pair.decide(e, Some(&shadow), None, &p, &ctx);
                    let rebuilt = pair.decide(e, None, Some(&fp), &p, &ctx);
                    let what = format!("{e} {field} edited in {side}, {}", conflict.as_str());
                    assert_eq!(
                        both(&rebuilt),
                        both(&stored),
                        "{what}\nstored: {stored}\nrebuilt: {rebuilt}"
                    );
                    let expected = match side {
                        Side::Graph => PlanKind::CopyToCrm,
                        Side::Crm => PlanKind::CopyToGraph,
                    };
                    assert_eq!(rebuilt.kind, expected, "{what}: {rebuilt}");
                    assert!(rebuilt.conflicts().is_empty(), "{what}: {rebuilt}");
                    assert!(
                        rebuilt
                            .reason
                            .contains("shadow rebuilt from the item's fingerprint"),
                        "{what}: {}",
                        rebuilt.reason
                    );
                    assert!(
                        !rebuilt.reason.contains("settled by"),
                        "{what}: {}",
                        rebuilt.reason
                    );
                    // the edited value (as the edited side reads it) survives and reaches the other
                    let new = rebuilt.new_shadow.as_ref().expect("a shadow");
                    assert_eq!(rebuilt.new_shadow, stored.new_shadow, "{what}");
                    let edited = match side {
                        Side::Graph => from_graph(e, &pair.graph, &ctx).expect("maps"),
                        Side::Crm => from_crm(e, &pair.crm, &ctx).expect("maps"),
                    };
                    for (f, _) in &changes {
                        assert_eq!(new.get(f), edited.get(f), "{what}: new shadow {f}");
                    }
                    let (mut g, mut c) = (Some(pair.graph.clone()), Some(pair.crm.clone()));
                    common::apply(&rebuilt, &mut g, &mut c);
                    let g_after = from_graph(e, &g.expect("graph"), &ctx).expect("maps");
                    let c_after = from_crm(e, &c.expect("crm"), &ctx).expect("maps");
                    for (f, v) in &changes {
                        assert_eq!(
                            project_graph(e, &new.clone()).get(f),
                            g_after.get(f),
                            "{what}: Graph {f}"
                        );
                        assert_eq!(
                            project_crm(e, new, &ctx).get(f),
                            c_after.get(f),
                            "{what}: CRM {f} ({v})"
                        );
                    }
                }
            }
        }
    }
}

/// Nothing edited while the store was lost: no write, and the rebuilt shadow is the agreed one
/// as both sides show it.
#[test]
fn untouched_pair_with_lost_store_is_a_noop() {
    let ctx = ctx();
    for (e, shadow) in shadows() {
        let pair = Pair::new(e, &shadow, &ctx);
        for conflict in POLICIES {
            let plan = pair.decide(
                e,
                None,
                Some(&fingerprint(e, &shadow)),
                &policy(conflict),
                &ctx,
            );
            assert_eq!(plan.kind, PlanKind::NoOp, "{e}: {plan}");
            assert!(plan.ops.is_empty(), "{e}: {plan}");
            assert_eq!(plan.new_shadow.as_ref(), Some(&shadow), "{e}: {plan}");
            assert!(plan.reason.contains("fingerprint"), "{}", plan.reason);
            // the worker writes this fingerprint back; it is the one the item already carries
            assert_eq!(plan.fingerprint(), Some(fingerprint(e, &shadow)));
        }
    }
}

/// A field edited differently on both sides while the store was lost is a conflict, settled by
/// the policy (or parked) exactly as with the stored shadow; the other fields are not affected.
#[test]
fn field_edited_on_both_sides_is_a_conflict_like_with_the_shadow() {
    let ctx = ctx();
    for (e, shadow) in shadows() {
        if e == Entity::Email {
            continue;
        }
        let fp = fingerprint(e, &shadow);
        for field in e.fields() {
            let mut pair = Pair::new(e, &shadow, &ctx);
            pair.edit(e, Side::Graph, &edit(e, &shadow, field, 1), &ctx);
            pair.edit(e, Side::Crm, &edit(e, &shadow, field, 2), &ctx);
            for conflict in POLICIES {
                let p = policy(conflict);
                let stored = pair.decide(e, Some(&shadow), None, &p, &ctx);
                let rebuilt = pair.decide(e, None, Some(&fp), &p, &ctx);
                let what = format!("{e} {field}, {}", conflict.as_str());
                assert_eq!(
                    both(&rebuilt),
                    both(&stored),
                    "{what}\nstored: {stored}\nrebuilt: {rebuilt}"
                );
                let g_read = from_graph(e, &pair.graph, &ctx).expect("maps");
                let c_read = from_crm(e, &pair.crm, &ctx).expect("maps");
                let edited: Vec<String> = edit(e, &shadow, field, 1)
                    .into_iter()
                    .map(|(f, _)| f)
                    .collect();
                if edited.iter().all(|f| g_read.get(f) == c_read.get(f)) {
                    // a flag can only be flipped the same way on both sides
                    assert!(
                        rebuilt.reason.contains("the same way"),
                        "{what}: {}",
                        rebuilt.reason
                    );
                    assert_eq!(rebuilt.writes(), 0, "{what}: {rebuilt}");
                } else if conflict == ConflictPolicy::Manual {
                    assert_eq!(rebuilt.kind, PlanKind::Conflict, "{what}: {rebuilt}");
                    assert!(
                        rebuilt.conflicts().iter().all(|c| c.base.is_null()),
                        "{what}"
                    );
                } else {
                    assert!(
                        rebuilt.reason.contains("settled by"),
                        "{what}: {}",
                        rebuilt.reason
                    );
                }
            }
        }
    }
}

/// Different fields edited on the two sides while the store was lost merge both ways, under
/// every policy.
#[test]
fn different_fields_merge_with_lost_store() {
    let ctx = ctx();
    let (shadow, _, _) = linked_appointment();
    let e = Entity::Appointment;
    let mut pair = Pair::new(e, &shadow, &ctx);
    pair.edit(
        e,
        Side::Graph,
        &[("location".into(), json!("Wien, Ringstraße 1"))],
        &ctx,
    );
    pair.edit(
        e,
        Side::Crm,
        &[("subject".into(), json!("Jahresgespräch"))],
        &ctx,
    );
    for conflict in POLICIES {
        let plan = pair.decide(
            e,
            None,
            Some(&fingerprint(e, &shadow)),
            &policy(conflict),
            &ctx,
        );
        assert_eq!(plan.kind, PlanKind::Merge, "{plan}");
        let new = plan.new_shadow.as_ref().expect("shadow");
        assert_eq!(new.get("location"), &json!("Wien, Ringstraße 1"));
        assert_eq!(new.get("subject"), &json!("Jahresgespräch"));
        assert!(
            plan.reason.contains("Graph changed location"),
            "{}",
            plan.reason
        );
        assert!(
            plan.reason.contains("CRM changed subject"),
            "{}",
            plan.reason
        );
    }
}

/// A fingerprint that is missing, malformed or another entity's is ignored: first contact.
#[test]
fn unusable_fingerprint_is_a_first_contact() {
    let ctx = ctx();
    let (shadow, _, _) = linked_appointment();
    let e = Entity::Appointment;
    let mut pair = Pair::new(e, &shadow, &ctx);
    pair.edit(e, Side::Graph, &[("location".into(), json!("Graz"))], &ctx);
    let p = policy(ConflictPolicy::CrmWins);
    let first = pair.decide(e, None, None, &p, &ctx);
    assert!(first.reason.contains("first sync"), "{first}");
    for bad in [
        "".to_string(),
        "v1:nonsense".to_string(),
        "v9:".to_string() + &fingerprint(e, &shadow)[3..],
        fingerprint(Entity::Contact, &contact()),
    ] {
        let plan = pair.decide(e, None, Some(&bad), &p, &ctx);
        assert_eq!(both(&plan), both(&first), "{bad:?}: {plan}");
        assert!(plan.reason.contains("first sync"), "{}", plan.reason);
    }
    // with a stored shadow the fingerprint is not consulted
    let other = fingerprint(e, &Canonical::new());
    let with_shadow = pair.decide(e, Some(&shadow), Some(&other), &p, &ctx);
    assert_eq!(
        both(&with_shadow),
        both(&pair.decide(e, Some(&shadow), None, &p, &ctx))
    );
    assert_eq!(with_shadow.kind, PlanKind::CopyToCrm, "{with_shadow}");
}

/// The plan's fingerprint is its new shadow's; after the worker applied the plan, the next
/// decision from the fingerprint alone is a no-op (nothing ping-pongs after a lost store).
#[test]
fn plan_fingerprint_describes_the_new_shadow() {
    let ctx = ctx();
    let (shadow, _, _) = linked_appointment();
    let e = Entity::Appointment;
    let mut pair = Pair::new(e, &shadow, &ctx);
    pair.edit(e, Side::Crm, &[("subject".into(), json!("Neu"))], &ctx);
    let plan = pair.decide(e, Some(&shadow), None, &Policy::default(), &ctx);
    let new = plan.new_shadow.clone().expect("shadow");
    let fp = plan.fingerprint().expect("fingerprint");
    assert_eq!(fp, fingerprint(e, &new));
    let (mut g, mut c) = (Some(pair.graph.clone()), Some(pair.crm.clone()));
    common::apply(&plan, &mut g, &mut c);
    let after = Pair {
        graph: g.expect("graph"),
        crm: c.expect("crm"),
    };
    let again = after.decide(e, None, Some(&fp), &Policy::default(), &ctx);
    assert!(again.is_noop(), "{again}");
    // a deleting or unlinking plan keeps no shadow, so there is no fingerprint to write
    let unlink = decide(&input(
        e,
        Some(&shadow),
        SideState::Deleted,
        present_crm(pair.crm.clone(), None),
        &Policy::default(),
        &ctx,
    ));
    assert_eq!(unlink.new_shadow, None);
    assert_eq!(unlink.fingerprint(), None);
}

// ---------------------------------------------------------------- scope (36) and re-link (37)

fn window() -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    Some((at("2026-11-14T00:00:00Z"), at("2027-02-19T00:00:00Z")))
}

fn no_delete(plan: &Plan) {
    assert!(
        plan.ops
            .iter()
            .all(|o| !matches!(o, Op::DeleteGraph | Op::MarkCrmDeleted)),
        "{plan}"
    );
    assert_eq!(plan.writes(), 0, "{plan}");
}

/// A pair whose start moved outside the window, on either side, is unlinked and nothing is
/// deleted, also when the other side is confirmed deleted at the same time.
#[test]
fn start_outside_the_window_on_either_side_unlinks_without_delete() {
    let ctx = ctx();
    let (shadow, graph, crm) = linked_appointment();
    let p = Policy::default();
    let mut g_out = graph.clone();
    g_out["start"] = json!({"dateTime": "2027-06-01T09:00:00", "timeZone": "UTC"});
    g_out["end"] = json!({"dateTime": "2027-06-01T10:00:00", "timeZone": "UTC"});
    let mut c_out = crm.clone();
    c_out.insert("Date".into(), "2026-10-01".into());
    c_out.insert("EndDate".into(), "2026-10-01".into());
    let cases = [
        (
            "Graph moved out",
            present_graph(g_out.clone(), None),
            present_crm(crm.clone(), None),
        ),
        (
            "CRM moved out",
            present_graph(graph.clone(), None),
            present_crm(c_out.clone(), None),
        ),
        (
            "Graph out, CRM deleted",
            present_graph(g_out.clone(), None),
            SideState::Deleted,
        ),
        (
            "CRM out, Graph deleted",
            SideState::Deleted,
            present_crm(c_out.clone(), None),
        ),
        // the present side's own start is outside: the absence is explained by the scope
        (
            "Graph out, CRM absent",
            present_graph(g_out, None),
            SideState::Absent,
        ),
        (
            "CRM out, Graph absent",
            SideState::Absent,
            present_crm(c_out, None),
        ),
    ];
    for (what, g, c) in cases {
        for organizer in [true, false] {
            let mut i = input(
                Entity::Appointment,
                Some(&shadow),
                g.clone(),
                c.clone(),
                &p,
                &ctx,
            );
            i.window = window();
            i.graph_organizer = organizer;
            let plan = decide(&i);
            assert_eq!(plan.kind, PlanKind::Unlink, "{what}: {plan}");
            assert_eq!(plan.ops, vec![Op::Unlink], "{what}: {plan}");
            assert!(
                plan.reason.contains("nothing deleted"),
                "{what}: {}",
                plan.reason
            );
            no_delete(&plan);
        }
    }
    // an absent side with the present side inside the window keeps the link, even when the
    // stored shadow's start is outside (stale)
    let mut old = shadow.clone();
    old.set("start", json!("2026-10-01T08:00Z"));
    let mut i = input(
        Entity::Appointment,
        Some(&old),
        present_graph(graph, None),
        SideState::Absent,
        &p,
        &ctx,
    );
    i.window = window();
    let plan = decide(&i);
    assert_eq!(plan.kind, PlanKind::NoOp, "{plan}");
    assert!(plan.reason.starts_with("absent:"), "{}", plan.reason);
    assert_eq!(plan.new_shadow.as_ref(), Some(&old));
}

/// Coming back is re-linking: the pair was apart (no stored shadow), the Graph event was moved
/// meanwhile; the item's fingerprint shows CRM kept the agreed start, so Graph's new start is
/// copied to CRM under every policy, even CRM-wins.
#[test]
fn relinked_pair_copies_the_start_moved_while_apart() {
    let ctx = ctx();
    let (shadow, mut graph, crm) = linked_appointment();
    let fp = fingerprint(Entity::Appointment, &shadow);
    graph["start"] =
        json!({"dateTime": "2026-11-24T14:00:00.0000000", "timeZone": "W. Europe Standard Time"});
    graph["end"] =
        json!({"dateTime": "2026-11-24T15:00:00.0000000", "timeZone": "W. Europe Standard Time"});
    for conflict in POLICIES {
        let p = policy(conflict);
        let mut i = input(
            Entity::Appointment,
            None,
            present_graph(graph.clone(), Some("2026-11-01T00:00:00Z")),
            present_crm(crm.clone(), Some("2026-11-21T00:00:00Z")),
            &p,
            &ctx,
        );
        i.fingerprint = Some(&fp);
        i.window = window();
        let plan = decide(&i);
        assert_eq!(
            plan.kind,
            PlanKind::CopyToCrm,
            "{}: {plan}",
            conflict.as_str()
        );
        let Some(Op::UpdateCrm { fields }) = plan.ops.first() else {
            panic!("expected a CRM update: {plan}")
        };
        assert_eq!(fields.get("Date").map(String::as_str), Some("2026-11-24"));
        assert_eq!(fields.get("Time").map(String::as_str), Some("14:00"));
        assert_eq!(fields.get("EndTime").map(String::as_str), Some("15:00"));
        assert!(!fields.contains_key("Subject"), "{fields:?}");
        assert!(
            plan.reason.contains("Graph changed start"),
            "{}",
            plan.reason
        );
        assert!(!plan.reason.contains("settled by"), "{}", plan.reason);
        let new = plan.new_shadow.as_ref().expect("shadow");
        assert_eq!(new.get("start"), &json!("2026-11-24T13:00Z"));
        // without the fingerprint the policy would have decided (CRM-wins keeps the old start)
        if conflict == ConflictPolicy::CrmWins {
            i.fingerprint = None;
            let blind = decide(&i);
            assert_ne!(blind.kind, PlanKind::CopyToCrm, "{blind}");
        }
    }
}
