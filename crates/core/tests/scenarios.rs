//! Scenario tests (SCENARIOS.md A3-A12, C1, T1, E1), through the public API only.

mod common;

use cgc_core::*;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const E: Entity = Entity::Appointment;

fn touched(mut graph: Value) -> Value {
    graph["changeKey"] = json!("DwAAABYAAAA2");
    graph["@odata.etag"] = json!("W/\"DwAAABYAAAA2\"");
    graph["lastModifiedDateTime"] = json!("2026-11-21T07:59:00.0000000Z");
    graph
}

fn graph_writes(plan: &Plan) -> Vec<&Value> {
    plan.ops
        .iter()
        .filter_map(|o| match o {
            Op::UpdateGraph { patch } => Some(patch),
            Op::CreateGraph { body } => Some(body),
            _ => None,
        })
        .collect()
}

fn crm_writes(plan: &Plan) -> Vec<&CrmFields> {
    plan.ops
        .iter()
        .filter_map(|o| match o {
            Op::UpdateCrm { fields } | Op::CreateCrm { fields } => Some(fields),
            _ => None,
        })
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- A3

#[test]
fn a3_opened_not_edited_keeps_crm_edit() {
    let ctx = ctx();
    let (shadow, graph, mut crm) = linked_appointment();
    crm.insert(
        "Text".into(),
        "Agenda:\n\n1. Numbers & plans\n2. Hiring".into(),
    );
    // Graph was merely opened later: new changeKey / lastModifiedDateTime, same content, and
    // even a later observed change time must not make it win
    let p = policy(ConflictPolicy::LatestChangeWins);
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(touched(graph), Some("2026-11-21T08:00:00Z")),
        present_crm(crm, Some("2026-11-21T07:00:00Z")),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::CopyToGraph, "{plan}");
    assert!(crm_writes(&plan).is_empty(), "no CRM write: {plan}");
    let patch = graph_writes(&plan)[0];
    assert_eq!(
        patch,
        &json!({"body": {"contentType": "text", "content": "Agenda:\n\n1. Numbers & plans\n2. Hiring"}})
    );
    assert_eq!(plan.audit.len(), 1);
    assert_eq!(
        (plan.audit[0].side, plan.audit[0].field.as_str()),
        (Side::Graph, "body")
    );
    assert_eq!(plan.audit[0].cause, Cause::Notification);
    assert_eq!(
        plan.new_shadow.as_ref().map(|s| s.get("body").clone()),
        Some(json!("Agenda:\n\n1. Numbers & plans\n2. Hiring"))
    );
}

#[test]
fn a3_repeated_touches_cause_no_write_under_any_policy() {
    let ctx = ctx();
    let (shadow, graph, crm) = linked_appointment();
    for conflict in [
        ConflictPolicy::CrmWins,
        ConflictPolicy::GraphWins,
        ConflictPolicy::LatestChangeWins,
        ConflictPolicy::Manual,
    ] {
        let p = policy(conflict);
        let plan = decide(&input(
            E,
            Some(&shadow),
            present_graph(touched(graph.clone()), Some("2026-11-22T08:00:00Z")),
            present_crm(crm.clone(), Some("2026-11-20T08:00:00Z")),
            &p,
            &ctx,
        ));
        assert_eq!(plan.kind, PlanKind::NoOp, "{conflict:?}: {plan}");
        assert!(plan.is_noop());
        assert_eq!(plan.writes(), 0);
        assert_eq!(plan.new_shadow.as_ref(), Some(&shadow));
    }
}

// ---------------------------------------------------------------- A4

#[test]
fn a4_different_fields_merge_both_ways() {
    let ctx = ctx();
    let (shadow, mut graph, mut crm) = linked_appointment();
    crm.insert("Subject".into(), "Quarterly review (moved)".into());
    graph["location"] = json!({"displayName": "Room 5.01"});
    let p = Policy::default();
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Merge, "{plan}");
    assert_eq!(
        graph_writes(&plan),
        vec![&json!({"subject": "Quarterly review (moved)"})]
    );
    let crm_fields = crm_writes(&plan)[0];
    assert_eq!(
        crm_fields,
        &CrmFields::from([("A031Location".to_string(), "Room 5.01".to_string())])
    );
    let s = plan.new_shadow.expect("shadow");
    assert_eq!(s.get("subject"), &json!("Quarterly review (moved)"));
    assert_eq!(s.get("location"), &json!("Room 5.01"));
    assert_eq!(plan.audit.len(), 2);
}

// ---------------------------------------------------------------- A5

fn a5_setup(conflict: ConflictPolicy, graph_at: Option<&str>, crm_at: Option<&str>) -> Plan {
    let ctx = ctx();
    let (shadow, mut graph, mut crm) = linked_appointment();
    crm.insert("Subject".into(), "Review (CRM)".into());
    graph["subject"] = json!("Review (Outlook)");
    let p = policy(conflict);
    decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, graph_at),
        present_crm(crm, crm_at),
        &p,
        &ctx,
    ))
}

#[test]
fn a5_conflict_crm_wins() {
    let plan = a5_setup(ConflictPolicy::CrmWins, None, None);
    assert_eq!(plan.kind, PlanKind::CopyToGraph, "{plan}");
    assert_eq!(
        graph_writes(&plan),
        vec![&json!({"subject": "Review (CRM)"})]
    );
    assert!(crm_writes(&plan).is_empty());
    assert_eq!(
        plan.new_shadow.expect("shadow").get("subject"),
        &json!("Review (CRM)")
    );
    assert!(plan.reason.contains("crm-wins"), "{}", plan.reason);
}

#[test]
fn a5_conflict_graph_wins() {
    let plan = a5_setup(ConflictPolicy::GraphWins, None, None);
    assert_eq!(plan.kind, PlanKind::CopyToCrm, "{plan}");
    assert_eq!(
        crm_writes(&plan)[0],
        &CrmFields::from([("Subject".to_string(), "Review (Outlook)".to_string())])
    );
    assert!(graph_writes(&plan).is_empty());
}

#[test]
fn a5_conflict_latest_change_wins() {
    // Graph's content change observed later: Graph wins
    let plan = a5_setup(
        ConflictPolicy::LatestChangeWins,
        Some("2026-11-21T10:00:00Z"),
        Some("2026-11-21T09:00:00Z"),
    );
    assert_eq!(plan.kind, PlanKind::CopyToCrm, "{plan}");
    // CRM later: CRM wins
    let plan = a5_setup(
        ConflictPolicy::LatestChangeWins,
        Some("2026-11-21T09:00:00Z"),
        Some("2026-11-21T10:00:00Z"),
    );
    assert_eq!(plan.kind, PlanKind::CopyToGraph, "{plan}");
    // tie and unknown: CRM
    let plan = a5_setup(
        ConflictPolicy::LatestChangeWins,
        Some("2026-11-21T10:00:00Z"),
        Some("2026-11-21T10:00:00Z"),
    );
    assert_eq!(plan.kind, PlanKind::CopyToGraph, "tie: {plan}");
    let plan = a5_setup(
        ConflictPolicy::LatestChangeWins,
        Some("2026-11-21T10:00:00Z"),
        None,
    );
    assert_eq!(plan.kind, PlanKind::CopyToGraph, "unknown: {plan}");
}

#[test]
fn a5_conflict_manual_raises_conflict_without_write() {
    let ctx = ctx();
    let (shadow, mut graph, mut crm) = linked_appointment();
    crm.insert("Subject".into(), "Review (CRM)".into());
    crm.insert("Text".into(), "New agenda".into()); // one-sided: still applied
    graph["subject"] = json!("Review (Outlook)");
    let p = policy(ConflictPolicy::Manual);
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Conflict, "{plan}");
    assert_eq!(
        plan.conflicts(),
        &[ConflictField {
            field: "subject".into(),
            crm: json!("Review (CRM)"),
            graph: json!("Review (Outlook)"),
            base: json!("Quarterly review"),
        }]
    );
    // the non-conflicting body change is written, the subject is not written anywhere
    assert_eq!(
        graph_writes(&plan),
        vec![&json!({"body": {"contentType": "text", "content": "New agenda"}})]
    );
    assert!(crm_writes(&plan).is_empty());
    let s = plan.new_shadow.expect("shadow");
    assert_eq!(s.get("subject"), &json!("Quarterly review"), "base kept");
    assert!(plan.audit.iter().all(|a| a.field != "subject"));
}

#[test]
fn a5_same_value_on_both_sides_is_no_write() {
    let ctx = ctx();
    let (shadow, mut graph, mut crm) = linked_appointment();
    crm.insert("Subject".into(), "Renamed".into());
    graph["subject"] = json!("  Renamed ");
    let p = policy(ConflictPolicy::Manual);
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::NoOp, "{plan}");
    assert_eq!(
        plan.new_shadow.expect("shadow").get("subject"),
        &json!("Renamed")
    );
}

// ---------------------------------------------------------------- A6

#[test]
fn a6_echo_is_noop() {
    let ctx = ctx();
    let p = Policy::default();
    // a CRM edit is copied to Graph ...
    let (shadow, graph, mut crm) = linked_appointment();
    crm.insert("A031Location".into(), "Room 7".into());
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph.clone(), None),
        present_crm(crm.clone(), None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.writes(), 1);
    let (mut g, mut c) = (Some(graph), Some(crm));
    apply(&plan, &mut g, &mut c);
    let new_shadow = plan.new_shadow.clone().expect("shadow");
    // ... and the notification our own write causes is a no-op
    let echo = decide(&input(
        E,
        Some(&new_shadow),
        present_graph(touched(g.clone().expect("graph")), None),
        present_crm(c.clone().expect("crm"), None),
        &p,
        &ctx,
    ));
    assert_eq!(echo.kind, PlanKind::NoOp, "{echo}");
    assert_eq!(echo.writes(), 0);
}

#[test]
fn a6_create_echo_is_noop() {
    let ctx = ctx();
    let p = Policy::default();
    let (_, _, crm) = linked_appointment();
    let plan = decide(&input(
        E,
        None,
        SideState::Absent,
        present_crm(crm.clone(), None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Create);
    let Op::CreateGraph { body } = &plan.ops[0] else {
        panic!("expected CreateGraph, got {plan}")
    };
    // Graph answers with the created item plus its own fields
    let mut created = body.clone();
    created["id"] = json!("AAMkNEW");
    created["changeKey"] = json!("ck1");
    created["bodyPreview"] = json!("...");
    let shadow = plan.new_shadow.clone().expect("shadow");
    let echo = decide(&input(
        E,
        Some(&shadow),
        present_graph(created, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(echo.kind, PlanKind::NoOp, "{echo}");
}

// ---------------------------------------------------------------- A7

#[test]
fn a7_organizer_delete_marks_crm_deleted() {
    let ctx = ctx();
    let (shadow, _, crm) = linked_appointment();
    let p = Policy::default();
    let plan = decide(&input(
        E,
        Some(&shadow),
        SideState::Deleted,
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Delete);
    assert_eq!(plan.ops, vec![Op::MarkCrmDeleted]);
    assert_eq!(plan.new_shadow, None);
    assert_eq!(plan.audit.len(), 1);
    assert_eq!(plan.audit[0].side, Side::Crm);
}

#[test]
fn a7_attendee_delete_only_unlinks() {
    let ctx = ctx();
    let (shadow, _, crm) = linked_appointment();
    let p = Policy::default();
    let mut i = input(
        E,
        Some(&shadow),
        SideState::Deleted,
        present_crm(crm, None),
        &p,
        &ctx,
    );
    i.graph_organizer = false;
    let plan = decide(&i);
    assert_eq!(plan.kind, PlanKind::Unlink);
    assert_eq!(plan.ops, vec![Op::Unlink]);
    assert_eq!(plan.writes(), 0);
    assert_eq!(plan.new_shadow, None);
}

#[test]
fn a7_crm_delete_removes_future_event() {
    let ctx = ctx();
    let (shadow, graph, _) = linked_appointment();
    let p = Policy::default();
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        SideState::Deleted,
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Delete, "{plan}");
    assert_eq!(plan.ops, vec![Op::DeleteGraph]);
    assert_eq!(plan.new_shadow, None);
}

#[test]
fn a7_crm_delete_keeps_past_event() {
    let ctx = ctx();
    let (shadow, graph, _) = linked_appointment();
    let p = Policy::default();
    let mut i = input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        SideState::Deleted,
        &p,
        &ctx,
    );
    i.now = at("2026-11-24T00:00:00Z"); // the event (23 Nov) is past
    let plan = decide(&i);
    assert_eq!(plan.kind, PlanKind::Unlink, "{plan}");
    assert_eq!(plan.writes(), 0);
}

#[test]
fn a7_crm_delete_keeps_cancelled_event() {
    let ctx = ctx();
    let (shadow, mut graph, _) = linked_appointment();
    graph["isCancelled"] = json!(true);
    let p = Policy::default();
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        SideState::Deleted,
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Unlink, "{plan}");
}

#[test]
fn a7_contact_and_task_deletes() {
    let ctx = ctx();
    let p = Policy::default();
    let person = CrmFields::from([
        ("FirstName".to_string(), "Ana".to_string()),
        ("EMail".to_string(), "ana@customer.test".to_string()),
    ]);
    let shadow = from_crm(Entity::Contact, &person, &ctx).expect("maps");
    let graph = to_graph(Entity::Contact, &shadow, None);
    // CRM deleted -> Graph contact deleted
    let plan = decide(&input(
        Entity::Contact,
        Some(&shadow),
        present_graph(graph.clone(), None),
        SideState::Deleted,
        &p,
        &ctx,
    ));
    assert_eq!(plan.ops, vec![Op::DeleteGraph]);
    // Graph deleted -> CRM data kept, link dropped (never MarkCrmDeleted for contacts)
    let plan = decide(&input(
        Entity::Contact,
        Some(&shadow),
        SideState::Deleted,
        present_crm(person, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.ops, vec![Op::Unlink]);
}

#[test]
fn a7_without_shadow_nothing_is_deleted() {
    let ctx = ctx();
    let (_, graph, crm) = linked_appointment();
    let p = Policy::default();
    let plan = decide(&input(
        E,
        None,
        present_graph(graph, None),
        SideState::Deleted,
        &p,
        &ctx,
    ));
    assert_eq!(plan.writes(), 0, "{plan}");
    let plan = decide(&input(
        E,
        None,
        SideState::Deleted,
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.writes(), 0, "{plan}");
}

/// Absence is not deletion (expected-behaviour 35): a side missing from an answer while the pair
/// is linked gives a no-op that keeps the shadow; nothing is deleted, marked, unlinked or written.
#[test]
fn a7_absent_with_shadow_keeps_the_link_and_writes_nothing() {
    let ctx = ctx();
    let (shadow, graph, mut crm) = linked_appointment();
    let p = Policy::default();
    // even when the present side has changed meanwhile
    let mut edited = graph.clone();
    edited["subject"] = json!("Renamed while CRM was not in the answer");
    crm.insert("Subject".into(), "Renamed in CRM".into());
    for (g, c, what) in [
        (
            SideState::Absent,
            present_crm(crm.clone(), None),
            "Graph item",
        ),
        (
            present_graph(edited.clone(), None),
            SideState::Absent,
            "CRM record",
        ),
        (SideState::Absent, SideState::Absent, "both sides"),
        (SideState::Absent, SideState::Deleted, "Graph item"),
        (SideState::Deleted, SideState::Absent, "CRM record"),
    ] {
        let plan = decide(&input(E, Some(&shadow), g, c, &p, &ctx));
        assert_eq!(plan.kind, PlanKind::NoOp, "{plan}");
        assert!(plan.ops.is_empty(), "{plan}");
        assert_eq!(plan.new_shadow.as_ref(), Some(&shadow), "{plan}");
        assert!(plan.audit.is_empty(), "{plan}");
        assert!(plan.reason.starts_with("absent:"), "{}", plan.reason);
        assert!(plan.reason.contains(what), "{what}: {}", plan.reason);
        assert!(plan.reason.contains("link kept"), "{}", plan.reason);
    }
    // only a confirmed delete deletes (here: Graph read back as 404, organizer's event)
    let plan = decide(&input(
        E,
        Some(&shadow),
        SideState::Deleted,
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.ops, vec![Op::MarkCrmDeleted], "{plan}");
    // without a shadow, absent means "not there yet": the other side's item is created
    let plan = decide(&input(
        E,
        None,
        present_graph(graph, None),
        SideState::Absent,
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Create, "{plan}");
}

// ---------------------------------------------------------------- A8

#[test]
fn a8_out_of_window_unlinks() {
    let ctx = ctx();
    let (shadow, mut graph, crm) = linked_appointment();
    graph["start"] = json!({"dateTime": "2027-06-01T09:00:00", "timeZone": "UTC"});
    graph["end"] = json!({"dateTime": "2027-06-01T10:00:00", "timeZone": "UTC"});
    let p = Policy::default();
    let window = Some((at("2026-11-14T00:00:00Z"), at("2027-02-19T00:00:00Z")));
    let mut i = input(
        E,
        Some(&shadow),
        present_graph(graph.clone(), None),
        present_crm(crm.clone(), None),
        &p,
        &ctx,
    );
    i.window = window;
    let plan = decide(&i);
    assert_eq!(plan.kind, PlanKind::Unlink, "{plan}");
    assert_eq!(plan.ops, vec![Op::Unlink]);
    // a delete of an item outside the window is not a delete either
    let mut i = input(
        E,
        Some(&shadow),
        present_graph(graph.clone(), None),
        SideState::Deleted,
        &p,
        &ctx,
    );
    i.window = window;
    assert_eq!(decide(&i).ops, vec![Op::Unlink]);
    // unlinked and outside: nothing is created
    let mut i = input(
        E,
        None,
        present_graph(graph, None),
        SideState::Absent,
        &p,
        &ctx,
    );
    i.window = window;
    let plan = decide(&i);
    assert!(plan.is_noop(), "{plan}");
    // inside the window the same event syncs normally
    let mut i = input(
        E,
        Some(&shadow),
        present_graph(graph_event(), None),
        present_crm(crm, None),
        &p,
        &ctx,
    );
    i.window = window;
    assert_eq!(decide(&i).kind, PlanKind::NoOp);
}

// ---------------------------------------------------------------- A10

#[test]
fn a10_all_day_round_trip() {
    let ctx = ctx();
    let mut graph = graph_event();
    graph["isAllDay"] = json!(true);
    graph["start"] = json!({"dateTime": "2026-12-24T00:00:00.0000000", "timeZone": "UTC"});
    graph["end"] = json!({"dateTime": "2026-12-26T00:00:00.0000000", "timeZone": "UTC"});
    let c = from_graph(E, &graph, &ctx).expect("maps");
    assert_eq!(c.get("all_day"), &json!(true));
    assert_eq!(c.get("start"), &json!("2026-12-24"));
    assert_eq!(
        c.get("end"),
        &json!("2026-12-25"),
        "canonical end is the last day, inclusive"
    );

    let crm = to_crm(E, &c, None, &ctx);
    assert_eq!(crm["Date"], "2026-12-24");
    assert_eq!(crm["Time"], "");
    assert_eq!(crm["EndDate"], "2026-12-25");
    assert_eq!(crm["EndTime"], "");
    let back_from_crm = from_crm(E, &crm, &ctx).expect("maps");
    for f in ["start", "end", "all_day"] {
        assert_eq!(back_from_crm.get(f), c.get(f), "{f}");
    }

    let back = to_graph(E, &c, None);
    assert_eq!(back["isAllDay"], json!(true));
    assert_eq!(
        back["start"],
        json!({"dateTime": "2026-12-24T00:00:00", "timeZone": "UTC"})
    );
    assert_eq!(
        back["end"],
        json!({"dateTime": "2026-12-26T00:00:00", "timeZone": "UTC"})
    );

    // a one-day event created from CRM keeps its single day
    let one_day = CrmFields::from([
        ("Subject".to_string(), "Holiday".to_string()),
        ("Date".to_string(), "2026-12-31".to_string()),
        ("EndDate".to_string(), "2026-12-31".to_string()),
    ]);
    let p = Policy::default();
    let plan = decide(&input(
        E,
        None,
        SideState::Absent,
        present_crm(one_day, None),
        &p,
        &ctx,
    ));
    let Op::CreateGraph { body } = &plan.ops[0] else {
        panic!("{plan}")
    };
    assert_eq!(body["isAllDay"], json!(true));
    assert_eq!(body["start"]["dateTime"], json!("2026-12-31T00:00:00"));
    assert_eq!(body["end"]["dateTime"], json!("2027-01-01T00:00:00"));
}

#[test]
fn a10_dst_conversion() {
    let ctx = ctx(); // CRM in Europe/Berlin
    let mut graph = graph_event();
    let mut start_of = |dt: &str, zone: &str| {
        graph["start"] = json!({"dateTime": dt, "timeZone": zone});
        graph["end"] = json!({"dateTime": dt, "timeZone": zone});
        from_graph(E, &graph, &ctx)
            .expect("maps")
            .get("start")
            .clone()
    };
    // 09:00 Berlin wall-clock before and after the spring change
    assert_eq!(
        start_of("2026-03-27T09:00:00.0000000", "W. Europe Standard Time"),
        json!("2026-03-27T08:00Z")
    );
    assert_eq!(
        start_of("2026-03-30T09:00:00.0000000", "Europe/Berlin"),
        json!("2026-03-30T07:00Z")
    );
    // US zones change on other dates: 2026-03-09 is already summer time in New York
    assert_eq!(
        start_of("2026-03-09T09:00:00", "Eastern Standard Time"),
        json!("2026-03-09T13:00Z")
    );
    assert_eq!(
        start_of("2026-11-02T09:00:00", "Pacific Standard Time"),
        json!("2026-11-02T17:00Z")
    );
    assert_eq!(
        start_of("2026-07-01T09:00:00", "GMT Standard Time"),
        json!("2026-07-01T08:00Z")
    );
    assert_eq!(
        start_of("2026-07-01T09:00:00", "UTC"),
        json!("2026-07-01T09:00Z")
    );

    // canonical -> CRM wall-clock on both sides of the autumn change
    let c = Canonical::new()
        .with("start", "2026-10-24T07:00Z")
        .with("end", "2026-10-26T08:00Z")
        .with("all_day", false);
    let crm = to_crm(E, &c, None, &ctx);
    assert_eq!(
        (crm["Date"].as_str(), crm["Time"].as_str()),
        ("2026-10-24", "09:00")
    );
    assert_eq!(
        (crm["EndDate"].as_str(), crm["EndTime"].as_str()),
        ("2026-10-26", "09:00")
    );
    assert_eq!(
        from_crm(E, &crm, &ctx).expect("maps").get("start"),
        c.get("start")
    );

    // nonexistent and ambiguous CRM wall-clock times are read deterministically
    let read = |date: &str, time: &str| {
        let f = CrmFields::from([
            ("Date".to_string(), date.to_string()),
            ("Time".to_string(), time.to_string()),
        ]);
        from_crm(E, &f, &ctx).expect("maps").get("start").clone()
    };
    assert_eq!(read("2026-03-29", "02:30"), json!("2026-03-29T01:30Z"));
    assert_eq!(read("2026-10-25", "02:30"), json!("2026-10-25T00:30Z"));
    // an unknown zone is kept in UTC, never a reason to drop the item (expected-behaviour 40)
    let unknown =
        json!({"start": {"dateTime": "2026-01-01T09:00:00", "timeZone": "Mars Standard Time"}});
    assert_eq!(
        from_graph(E, &unknown, &ctx).expect("maps").get("start"),
        &json!("2026-01-01T09:00Z")
    );
    assert_eq!(
        cgc_core::mapping::time::unknown_time_zones(&unknown),
        vec!["Mars Standard Time".to_string()]
    );
    // any Windows zone of CLDR is read in its own zone
    let brazil = json!({"start": {"dateTime": "2026-01-01T09:00:00", "timeZone": "Central Brazilian Standard Time"}});
    assert_eq!(
        from_graph(E, &brazil, &ctx).expect("maps").get("start"),
        &json!("2026-01-01T13:00Z")
    );
}

// ---------------------------------------------------------------- A12

#[test]
fn a12_excluded_fields_never_travel() {
    let ctx = ctx();
    let (shadow, mut graph, mut crm) = linked_appointment();
    graph["body"] = json!({"contentType": "text", "content": "private notes (Outlook)"});
    crm.insert("Text".into(), "internal notes (CRM)".into());
    crm.insert("Subject".into(), "Renamed".into());
    let p = Policy {
        conflict: ConflictPolicy::Manual,
        exclude_fields: vec!["body".into()],
        ..Policy::default()
    };
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph.clone(), None),
        present_crm(crm.clone(), None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::CopyToGraph, "{plan}");
    assert_eq!(graph_writes(&plan), vec![&json!({"subject": "Renamed"})]);
    assert!(plan.conflicts().is_empty());
    assert!(plan.audit.iter().all(|a| a.field != "body"));
    // creates leave excluded fields out too
    let plan = decide(&input(
        E,
        None,
        present_graph(graph, None),
        SideState::Absent,
        &p,
        &ctx,
    ));
    let fields = crm_writes(&plan)[0];
    assert!(!fields.contains_key("Text"), "{fields:?}");
    assert_eq!(fields.get("Contact").map(String::as_str), Some("Meeting"));
    let plan = decide(&input(
        E,
        None,
        SideState::Absent,
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert!(!keys(graph_writes(&plan)[0]).contains(&"body".to_string()));
}

// ---------------------------------------------------------------- A2 / attendees

#[test]
fn a2_graph_event_creates_crm_meeting_with_participants() {
    let ctx = ctx();
    let p = Policy::default();
    let plan = decide(&input(
        E,
        None,
        present_graph(graph_event(), None),
        SideState::Absent,
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Create);
    let f = crm_writes(&plan)[0];
    assert_eq!(f["Contact"], "Meeting");
    assert_eq!(f["Participants"], "ana@customer.test");
    assert_eq!(f["MissingParticipants"], "bob@elsewhere.test");
    assert_eq!(f["ConnectorMissingparticipants"], "true");
    assert_eq!(f["Date"], "2026-11-23");
    assert_eq!(f["Time"], "09:00");
    assert_eq!(f["Text"], "Agenda:\n\n1. Numbers & plans");
    assert_eq!(f["ReminderDur"], "15");
    assert_eq!(f["ReminderUnit"], "min");
}

#[test]
fn attendee_types_are_not_a_change_and_survive_crm_edits() {
    let ctx = ctx();
    let (shadow, graph, mut crm) = linked_appointment();
    // CRM cannot hold types: the optional attendee reads as required there, which is no change
    let p = Policy::default();
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph.clone(), None),
        present_crm(crm.clone(), None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::NoOp, "{plan}");
    // CRM adds a participant: Graph gets the new list, bob stays optional
    crm.insert(
        "MissingParticipants".into(),
        "bob@elsewhere.test;carl@new.test".into(),
    );
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(
        graph_writes(&plan),
        vec![&json!({"attendees": [
            {"emailAddress": {"address": "ana@customer.test"}, "type": "required"},
            {"emailAddress": {"address": "bob@elsewhere.test"}, "type": "optional"},
            {"emailAddress": {"address": "carl@new.test"}, "type": "required"}
        ]})]
    );
}

// ---------------------------------------------------------------- direction

#[test]
fn direction_limits_which_side_is_written() {
    let ctx = ctx();
    let (shadow, mut graph, mut crm) = linked_appointment();
    crm.insert("Subject".into(), "CRM subject".into());
    graph["location"] = json!({"displayName": "Outlook room"});
    for (direction, graph_written, crm_written) in [
        (Direction::CrmToGraph, true, false),
        (Direction::GraphToCrm, false, true),
        (Direction::Off, false, false),
    ] {
        let p = Policy {
            direction,
            ..Policy::default()
        };
        let plan = decide(&input(
            E,
            Some(&shadow),
            present_graph(graph.clone(), None),
            present_crm(crm.clone(), None),
            &p,
            &ctx,
        ));
        assert_eq!(
            !graph_writes(&plan).is_empty(),
            graph_written,
            "{direction:?}: {plan}"
        );
        assert_eq!(
            !crm_writes(&plan).is_empty(),
            crm_written,
            "{direction:?}: {plan}"
        );
        if direction == Direction::Off {
            assert_eq!(plan.kind, PlanKind::NoOp);
        }
    }
    // a conflict under a one-way direction goes to the source side, never to manual
    graph["subject"] = json!("Outlook subject");
    let p = Policy {
        direction: Direction::CrmToGraph,
        conflict: ConflictPolicy::Manual,
        ..Policy::default()
    };
    let plan = decide(&input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert!(plan.conflicts().is_empty(), "{plan}");
    assert_eq!(
        graph_writes(&plan),
        vec![&json!({"subject": "CRM subject"})]
    );
}

// ---------------------------------------------------------------- C1

fn graph_contact() -> Value {
    json!({
        "id": "AAMkCONTACT",
        "givenName": "Ana",
        "surname": "Lopez",
        "emailAddresses": [{"name": "Ana Lopez", "address": "Ana.Lopez@Customer.test"}],
        "businessPhones": [],
        "mobilePhone": "+34 600 000 000",
        "jobTitle": "Buyer",
        "companyName": "Customer S.A."
    })
}

fn crm_person() -> CrmFields {
    CrmFields::from([
        ("FirstName".to_string(), "Ana".to_string()),
        ("LastName".to_string(), "López".to_string()),
        ("EMail".to_string(), "ana.lopez@customer.test".to_string()),
        ("PhoneBusiness".to_string(), "+34 91 000 00 00".to_string()),
        ("PhoneMobile".to_string(), "".to_string()),
        ("JobTitle".to_string(), "Buyer".to_string()),
        ("Company".to_string(), "Customer S.A.".to_string()),
    ])
}

#[test]
fn c1_matched_contact_merges_without_creating() {
    let ctx = ctx();
    let p = Policy::default(); // crm-wins
    let plan = decide(&input(
        Entity::Contact,
        None,
        present_graph(graph_contact(), None),
        present_crm(crm_person(), None),
        &p,
        &ctx,
    ));
    assert!(
        !plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::CreateCrm { .. } | Op::CreateGraph { .. })),
        "{plan}"
    );
    assert_eq!(plan.kind, PlanKind::Merge, "{plan}");
    // Graph's empty phone takes CRM's, CRM's empty mobile takes Graph's, the differing
    // surname follows the policy (crm-wins); e-mail letter case is no difference
    assert_eq!(
        graph_writes(&plan),
        vec![&json!({"businessPhones": ["+34 91 000 00 00"], "surname": "López"})]
    );
    assert_eq!(
        crm_writes(&plan)[0],
        &CrmFields::from([("PhoneMobile".to_string(), "+34 600 000 000".to_string())])
    );
    let s = plan.new_shadow.expect("shadow");
    assert_eq!(s.get("email"), &json!("ana.lopez@customer.test"));
}

#[test]
fn c1_matched_contact_manual_conflict_without_shadow() {
    let ctx = ctx();
    let p = policy(ConflictPolicy::Manual);
    let plan = decide(&input(
        Entity::Contact,
        None,
        present_graph(graph_contact(), None),
        present_crm(crm_person(), None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Conflict);
    assert_eq!(plan.conflicts().len(), 1);
    assert_eq!(plan.conflicts()[0].field, "surname");
    assert_eq!(plan.conflicts()[0].base, Value::Null);
}

#[test]
fn c1_contact_edits_flow_both_ways_by_field() {
    let ctx = ctx();
    let shadow = from_crm(Entity::Contact, &crm_person(), &ctx).expect("maps");
    let mut graph = to_graph(Entity::Contact, &shadow, None);
    let mut crm = crm_person();
    graph["jobTitle"] = json!("Head of purchasing");
    crm.insert("PhoneBusiness".into(), "+34 91 111 11 11".into());
    let p = Policy::default();
    let plan = decide(&input(
        Entity::Contact,
        Some(&shadow),
        present_graph(graph, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Merge);
    assert_eq!(
        graph_writes(&plan),
        vec![&json!({"businessPhones": ["+34 91 111 11 11"]})]
    );
    assert_eq!(
        crm_writes(&plan)[0],
        &CrmFields::from([("JobTitle".to_string(), "Head of purchasing".to_string())])
    );
}

// ---------------------------------------------------------------- T1

fn crm_task(status: &str) -> CrmFields {
    CrmFields::from([
        ("Subject".to_string(), "Send proposal".to_string()),
        ("Text".to_string(), "Draft v2".to_string()),
        ("DueDate".to_string(), "2026-11-30".to_string()),
        ("Status".to_string(), status.to_string()),
        ("Priority".to_string(), "High".to_string()),
    ])
}

#[test]
fn t1_cancelled_not_turned_completed() {
    let ctx = ctx();
    let p = Policy::default();
    let crm = crm_task("Cancelled");
    // first sync: created in To Do as completed, the shadow remembers "cancelled"
    let plan = decide(&input(
        Entity::Task,
        None,
        SideState::Absent,
        present_crm(crm.clone(), None),
        &p,
        &ctx,
    ));
    let Op::CreateGraph { body } = &plan.ops[0] else {
        panic!("{plan}")
    };
    assert_eq!(body["status"], json!("completed"));
    assert_eq!(
        body["dueDateTime"],
        json!({"dateTime": "2026-11-30T00:00:00", "timeZone": "UTC"})
    );
    let shadow = plan.new_shadow.clone().expect("shadow");
    assert_eq!(shadow.get("status"), &json!("cancelled"));
    let mut todo = body.clone();
    todo["id"] = json!("AAMkTASK");
    todo["dueDateTime"] = json!({"dateTime": "2026-11-30T00:00:00.0000000", "timeZone": "UTC"});
    // the echo and later touches change nothing
    let plan = decide(&input(
        Entity::Task,
        Some(&shadow),
        present_graph(todo.clone(), None),
        present_crm(crm.clone(), None),
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::NoOp, "{plan}");
    // a title edit in To Do reaches CRM without touching Status
    todo["title"] = json!("Send proposal v3");
    let plan = decide(&input(
        Entity::Task,
        Some(&shadow),
        present_graph(todo, None),
        present_crm(crm, None),
        &p,
        &ctx,
    ));
    assert_eq!(
        crm_writes(&plan)[0],
        &CrmFields::from([("Subject".to_string(), "Send proposal v3".to_string())])
    );
    assert_eq!(
        plan.new_shadow.expect("shadow").get("status"),
        &json!("cancelled")
    );
}

#[test]
fn t1_status_map() {
    let ctx = ctx();
    for (graph, canonical) in [
        ("notStarted", "open"),
        ("inProgress", "in-progress"),
        ("completed", "completed"),
        ("waitingOnOthers", "on-hold"),
        ("deferred", "on-hold"),
    ] {
        let c = from_graph(Entity::Task, &json!({"status": graph}), &ctx).expect("maps");
        assert_eq!(c.get("status"), &json!(canonical), "{graph}");
    }
    for (crm, canonical, graph) in [
        ("Open", "open", "notStarted"),
        ("In progress", "in-progress", "inProgress"),
        ("Completed", "completed", "completed"),
        ("On hold", "on-hold", "waitingOnOthers"),
        ("Cancelled", "cancelled", "completed"),
    ] {
        let c = from_crm(Entity::Task, &crm_task(crm), &ctx).expect("maps");
        assert_eq!(c.get("status"), &json!(canonical));
        assert_eq!(to_graph(Entity::Task, &c, None)["status"], json!(graph));
        assert_eq!(to_crm(Entity::Task, &c, None, &ctx)["Status"], crm);
    }
    assert!(from_crm(Entity::Task, &crm_task("Someday"), &ctx).is_err());
}

// ---------------------------------------------------------------- E1

#[test]
fn e1_archived_message_becomes_one_crm_email_record() {
    let ctx = ctx();
    let message = json!({
        "id": "AAMkMSG",
        "internetMessageId": "<abc@customer.test>",
        "subject": "Offer",
        "body": {"contentType": "html", "content": "<p>Hello,<br>see attached.</p>"},
        "receivedDateTime": "2026-11-20T15:04:05Z",
        "from": {"emailAddress": {"address": "Ana@Customer.test"}},
        "toRecipients": [{"emailAddress": {"address": "rep1@vendor.test"}}],
        "ccRecipients": [{"emailAddress": {"address": "bob@elsewhere.test"}}]
    });
    let p = Policy {
        direction: Direction::GraphToCrm,
        ..Policy::default()
    };
    let plan = decide(&input(
        Entity::Email,
        None,
        present_graph(message, None),
        SideState::Absent,
        &p,
        &ctx,
    ));
    assert_eq!(plan.kind, PlanKind::Create);
    let f = crm_writes(&plan)[0];
    assert_eq!(f["Contact"], "E-mail");
    assert_eq!(f["Subject"], "Offer");
    assert_eq!(f["Text"], "Hello,\nsee attached.");
    assert_eq!(
        (f["Date"].as_str(), f["Time"].as_str()),
        ("2026-11-20", "16:04")
    );
    assert_eq!(f["Participants"], "ana@customer.test");
    assert_eq!(
        f["MissingParticipants"],
        "bob@elsewhere.test;rep1@vendor.test"
    );
    // never the other way, even with direction both
    let p = Policy::default();
    let plan = decide(&input(
        Entity::Email,
        None,
        SideState::Absent,
        present_crm(f.clone(), None),
        &p,
        &ctx,
    ));
    assert!(plan.is_noop(), "{plan}");
}

// ---------------------------------------------------------------- robustness

#[test]
fn unmappable_input_is_skipped_with_a_typed_error() {
    let ctx = ctx();
    let (shadow, graph, mut crm) = linked_appointment();
    crm.insert("Date".into(), "23.11.2026".into());
    let p = Policy::default();
    let i = input(
        E,
        Some(&shadow),
        present_graph(graph, None),
        present_crm(crm, None),
        &p,
        &ctx,
    );
    let err = try_decide(&i).unwrap_err();
    assert!(
        matches!(&err, DecideError::Crm(MapError::BadValue { field, .. }) if field == "Date"),
        "{err}"
    );
    let plan = decide(&i);
    assert!(plan.is_noop());
    assert!(plan.reason.starts_with("skipped:"), "{}", plan.reason);
    assert_eq!(plan.new_shadow.as_ref(), Some(&shadow));

    let i = input(
        E,
        None,
        present_graph(json!(["not", "an", "event"]), None),
        SideState::Absent,
        &p,
        &ctx,
    );
    assert!(matches!(
        try_decide(&i),
        Err(DecideError::Graph(MapError::NotAnObject))
    ));
}

#[test]
fn plan_display_has_one_line_per_op() {
    let plan = a5_setup(ConflictPolicy::Manual, None, None);
    let text = plan.to_string();
    assert!(text.starts_with("appointment conflict: "), "{text}");
    assert_eq!(text.lines().count(), 1 + plan.ops.len());
    assert!(text.contains("raise conflict on: subject"), "{text}");
    let json = serde_json::to_value(&plan).expect("serialises");
    assert_eq!(json["kind"], json!("conflict"));
    assert_eq!(json["ops"][0]["op"], json!("raise-conflict"));
}

// ---------------------------------------------------------------- resolve_conflict

fn conflict_sides() -> (Canonical, Canonical, Canonical) {
    let ctx = ctx();
    let (shadow, mut graph, mut crm) = linked_appointment();
    graph["subject"] = json!("Review (Outlook)");
    crm.insert("Subject".into(), "Review (CRM)".into());
    let g = from_graph(E, &graph, &ctx).expect("maps");
    let c = from_crm(E, &crm, &ctx).expect("maps");
    (shadow, g, c)
}

#[test]
fn resolve_conflict_take_crm_writes_graph_only() {
    let ctx = ctx();
    let (shadow, g, c) = conflict_sides();
    let fields = vec!["subject".to_string()];
    let plan = resolve_conflict(
        E,
        Some(&shadow),
        &g,
        &c,
        &fields,
        &Resolution::TakeCrm,
        &ctx,
    )
    .expect("resolves");
    assert_eq!(
        plan.ops,
        vec![Op::UpdateGraph {
            patch: json!({"subject": "Review (CRM)"})
        }]
    );
    assert_eq!(plan.audit[0].cause, Cause::ConflictResolution);
    assert_eq!(
        plan.new_shadow.expect("shadow").get("subject"),
        &json!("Review (CRM)")
    );
}

#[test]
fn resolve_conflict_third_value_reaches_both_sides() {
    let ctx = ctx();
    let (shadow, g, c) = conflict_sides();
    let fields = vec!["subject".to_string()];
    let values = BTreeMap::from([("subject".to_string(), json!("  Review (agreed) "))]);
    let plan = resolve_conflict(
        E,
        Some(&shadow),
        &g,
        &c,
        &fields,
        &Resolution::Values(values),
        &ctx,
    )
    .expect("resolves");
    assert_eq!(plan.kind, PlanKind::Merge);
    assert_eq!(plan.writes(), 2);
    assert!(plan.ops.contains(&Op::UpdateGraph {
        patch: json!({"subject": "Review (agreed)"})
    }));
    assert!(plan.ops.contains(&Op::UpdateCrm {
        fields: CrmFields::from([("Subject".to_string(), "Review (agreed)".to_string())])
    }));
    // after the writes, a normal decide is a no-op
    let new_shadow = plan.new_shadow.clone().expect("shadow");
    let mut graph = Some(to_graph(E, &g, None));
    let mut crm = Some(to_crm(E, &c, None, &ctx));
    apply(&plan, &mut graph, &mut crm);
    let p = policy(ConflictPolicy::Manual);
    let after = decide(&input(
        E,
        Some(&new_shadow),
        present_graph(graph.expect("graph"), None),
        present_crm(crm.expect("crm"), None),
        &p,
        &ctx,
    ));
    assert_eq!(after.kind, PlanKind::NoOp, "{after}");
}

#[test]
fn resolve_conflict_rejects_bad_requests() {
    let ctx = ctx();
    let (shadow, g, c) = conflict_sides();
    let fields = vec!["subject".to_string()];
    let run = |fields: &[String], r: Resolution| {
        resolve_conflict(E, Some(&shadow), &g, &c, fields, &r, &ctx)
    };
    assert_eq!(
        run(&fields, Resolution::Values(BTreeMap::new())).unwrap_err(),
        ResolveError::NoSide
    );
    assert_eq!(
        run(&[], Resolution::TakeCrm).unwrap_err(),
        ResolveError::NoFields
    );
    assert_eq!(
        run(&["colour".to_string()], Resolution::TakeCrm).unwrap_err(),
        ResolveError::UnknownField("colour".into())
    );
    assert_eq!(
        run(
            &fields,
            Resolution::Values(BTreeMap::from([
                ("subject".to_string(), json!("x")),
                ("location".to_string(), json!("y"))
            ]))
        )
        .unwrap_err(),
        ResolveError::NotInConflict("location".into())
    );
    assert_eq!(
        run(
            &["subject".to_string(), "location".to_string()],
            Resolution::Values(BTreeMap::from([("subject".to_string(), json!("x"))]))
        )
        .unwrap_err(),
        ResolveError::MissingValue("location".into())
    );
    assert!(matches!(
        run(
            &fields,
            Resolution::Values(BTreeMap::from([("subject".to_string(), json!(42))]))
        ),
        Err(ResolveError::BadValue(_))
    ));
}
