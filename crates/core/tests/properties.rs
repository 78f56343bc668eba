//! Property tests: random canonical items, random edit sequences on either side.
//!
//! The two sides are kept in their own representation (Graph JSON, CRM fields); edits go through
//! `to_graph`/`to_crm` of the edited canonical, plans are applied the way a worker would.

mod common;

use cgc_core::*;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use common::{apply, at, ctx};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

const TEXTS: &[&str] = &[
    "",
    "Quarterly review",
    "  Quarterly   review ",
    "Room 4.12",
    "line one\r\nline two",
    "Ünïcode ✓ & <b>",
    "x",
];
const ADDRESSES: &[&str] = &[
    "ana@customer.test",
    "Bob@Elsewhere.test",
    "carl@new.test",
    "room1@vendor.test",
];

fn normalized(entity: Entity, field: &'static str, v: Value) -> Value {
    normalize_value(entity, field, &v).unwrap_or(Value::Null)
}

fn field_value(entity: Entity, field: &'static str) -> BoxedStrategy<Value> {
    let kind = entity.field_kind(field).unwrap_or(FieldKind::Text);
    match kind {
        FieldKind::Text => select(TEXTS)
            .prop_map(move |t| normalized(entity, field, json!(t)))
            .boxed(),
        FieldKind::Email => select(ADDRESSES)
            .prop_map(move |a| normalized(entity, field, json!(a)))
            .boxed(),
        FieldKind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        FieldKind::Minutes => prop::option::of(select(&[0u64, 5, 15, 60, 1440][..]))
            .prop_map(|m| m.map(|m| json!(m)).unwrap_or(Value::Null))
            .boxed(),
        FieldKind::Date => prop::option::of(0i64..10)
            .prop_map(|d| {
                d.map(|d| json!((day0() + Duration::days(d)).format("%Y-%m-%d").to_string()))
                    .unwrap_or(Value::Null)
            })
            .boxed(),
        FieldKind::Instant | FieldKind::DateOrInstant => (0i64..10, 0i64..1440)
            .prop_map(|(d, m)| json!(instant(d, m)))
            .boxed(),
        FieldKind::Enum(list) => select(list).prop_map(|s| json!(s)).boxed(),
        FieldKind::Attendees => prop::collection::vec(
            (
                select(ADDRESSES),
                select(&["required", "optional", "resource"][..]),
            ),
            0..4,
        )
        .prop_map(move |v| {
            let list: Vec<Value> = v
                .into_iter()
                .map(|(a, t)| json!({"address": a, "type": t}))
                .collect();
            normalized(entity, field, Value::Array(list))
        })
        .boxed(),
        FieldKind::People => prop::collection::vec(select(ADDRESSES), 0..4)
            .prop_map(move |v| normalized(entity, field, json!(v)))
            .boxed(),
    }
}

fn day0() -> NaiveDate {
    // 2026-03-25: the range crosses the Europe/Berlin spring-forward (29 March)
    NaiveDate::from_ymd_opt(2026, 3, 25).unwrap_or_default()
}

fn instant(day: i64, minute: i64) -> String {
    let t = day0().and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
        + Duration::days(day)
        + Duration::minutes(minute);
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}

/// A consistent (start, end, all_day) triple.
fn timing() -> BoxedStrategy<Vec<(String, Value)>> {
    (
        any::<bool>(),
        0i64..10,
        select(&[0i64, 90, 150, 540, 1425][..]),
        select(&[0i64, 30, 60, 1440, 2880][..]),
    )
        .prop_map(|(all_day, day, minute, len)| {
            let (start, end) = if all_day {
                let s = day0() + Duration::days(day);
                let e = s + Duration::days(len / 1440);
                (
                    s.format("%Y-%m-%d").to_string(),
                    e.format("%Y-%m-%d").to_string(),
                )
            } else {
                (instant(day, minute), instant(day, minute + len))
            };
            vec![
                ("start".to_string(), json!(start)),
                ("end".to_string(), json!(end)),
                ("all_day".to_string(), json!(all_day)),
            ]
        })
        .boxed()
}

fn is_time(entity: Entity, field: &str) -> bool {
    entity == Entity::Appointment && matches!(field, "start" | "end" | "all_day")
}

fn item(entity: Entity) -> BoxedStrategy<Canonical> {
    let plain: Vec<&'static str> = entity
        .fields()
        .iter()
        .copied()
        .filter(|f| !is_time(entity, f))
        .collect();
    let values: Vec<BoxedStrategy<Value>> = plain.iter().map(|f| field_value(entity, f)).collect();
    (values, timing())
        .prop_map(move |(values, timing)| {
            let mut c = Canonical::new();
            for (f, v) in plain.iter().zip(values) {
                c.set(f, v);
            }
            if entity == Entity::Appointment {
                for (f, v) in timing {
                    c.set(&f, v);
                }
            }
            c
        })
        .boxed()
}

/// The fields one edit sets (the appointment time group is always edited as a whole).
fn edit(entity: Entity) -> BoxedStrategy<Vec<(String, Value)>> {
    select(entity.fields())
        .prop_flat_map(move |f| {
            if is_time(entity, f) {
                timing()
            } else {
                field_value(entity, f)
                    .prop_map(move |v| vec![(f.to_string(), v)])
                    .boxed()
            }
        })
        .boxed()
}

#[derive(Clone, Debug)]
enum Step {
    Edit(Side, Vec<(String, Value)>),
    Touch(Side),
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Graph), Just(Side::Crm)]
}

fn steps(entity: Entity) -> BoxedStrategy<Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => (side(), edit(entity)).prop_map(|(s, e)| Step::Edit(s, e)),
            1 => side().prop_map(Step::Touch),
        ],
        0..5,
    )
    .boxed()
}

fn policy(entity: Entity) -> BoxedStrategy<Policy> {
    (
        select(
            &[
                Direction::Both,
                Direction::Both,
                Direction::CrmToGraph,
                Direction::GraphToCrm,
            ][..],
        ),
        select(
            &[
                ConflictPolicy::CrmWins,
                ConflictPolicy::GraphWins,
                ConflictPolicy::LatestChangeWins,
                ConflictPolicy::Manual,
            ][..],
        ),
        prop::option::weighted(0.2, select(entity.fields())),
    )
        .prop_map(|(direction, conflict, excluded)| Policy {
            direction,
            conflict,
            exclude_fields: excluded.into_iter().map(str::to_string).collect(),
        })
        .boxed()
}

fn entity() -> impl Strategy<Value = Entity> {
    prop_oneof![
        3 => Just(Entity::Appointment),
        1 => Just(Entity::Contact),
        1 => Just(Entity::Task),
        1 => Just(Entity::Email),
    ]
}

struct World {
    graph: Value,
    crm: CrmFields,
    graph_at: Option<DateTime<Utc>>,
    crm_at: Option<DateTime<Utc>>,
    tick: i64,
}

impl World {
    fn new(entity: Entity, shadow: &Canonical, ctx: &MapContext) -> Self {
        let mut graph = to_graph(entity, shadow, None);
        graph["id"] = json!("AAMkITEM");
        graph["changeKey"] = json!("ck0");
        World {
            graph,
            crm: to_crm(entity, shadow, None, ctx),
            graph_at: None,
            crm_at: None,
            tick: 0,
        }
    }

    fn now(&mut self) -> Option<DateTime<Utc>> {
        self.tick += 1;
        Some(at("2026-03-20T00:00:00Z") + Duration::minutes(self.tick))
    }

    fn step(&mut self, entity: Entity, step: &Step, ctx: &MapContext) -> Result<(), MapError> {
        match step {
            Step::Touch(Side::Graph) => {
                self.graph["changeKey"] = json!(format!("ck{}", self.tick + 1));
                self.graph_at = self.now();
            }
            Step::Touch(Side::Crm) => {
                self.crm
                    .insert("UpdTime".into(), format!("{:02}:00", self.tick % 24));
                self.crm_at = self.now();
            }
            Step::Edit(Side::Graph, fields) => {
                let mut c = from_graph(entity, &self.graph, ctx)?;
                for (f, v) in fields {
                    c.set(f, v.clone());
                }
                let only: Vec<String> = fields.iter().map(|(f, _)| f.clone()).collect();
                let patch = to_graph(entity, &c, Some(&only));
                if let (Some(g), Some(p)) = (self.graph.as_object_mut(), patch.as_object()) {
                    for (k, v) in p {
                        g.insert(k.clone(), v.clone());
                    }
                }
                self.graph_at = self.now();
            }
            Step::Edit(Side::Crm, fields) => {
                let mut c = from_crm(entity, &self.crm, ctx)?;
                for (f, v) in fields {
                    c.set(f, v.clone());
                }
                let only: Vec<String> = fields.iter().map(|(f, _)| f.clone()).collect();
                self.crm.extend(to_crm(entity, &c, Some(&only), ctx));
                self.crm_at = self.now();
            }
        }
        Ok(())
    }

    fn input<'a>(
        &self,
        entity: Entity,
        shadow: &'a Canonical,
        policy: &'a Policy,
        ctx: &'a MapContext,
    ) -> Input<'a> {
        self.input_with(entity, Some(shadow), None, policy, ctx)
    }

    fn input_with<'a>(
        &self,
        entity: Entity,
        shadow: Option<&'a Canonical>,
        fingerprint: Option<&'a str>,
        policy: &'a Policy,
        ctx: &'a MapContext,
    ) -> Input<'a> {
        Input {
            entity,
            shadow,
            fingerprint,
            graph: SideState::Present(GraphItem {
                item: self.graph.clone(),
                changed_at: self.graph_at,
            }),
            crm: SideState::Present(CrmItem {
                fields: self.crm.clone(),
                changed_at: self.crm_at,
            }),
            graph_organizer: true,
            policy,
            ctx,
            now: at("2026-03-20T00:00:00Z"),
            window: None,
            cause: Cause::Delta,
        }
    }
}

fn edited_fields(steps: &[Step], side: Side) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Edit(sd, fields) if *sd == side => Some(fields),
            _ => None,
        })
        .flatten()
        .map(|(f, _)| f.clone())
        .collect()
}

fn scenario() -> impl Strategy<Value = (Entity, Canonical, Vec<Step>, Policy)> {
    entity().prop_flat_map(|e| (Just(e), item(e), steps(e), policy(e)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(400), ..ProptestConfig::default() })]

    /// (1) touching without content change never yields a write.
    #[test]
    fn touching_never_writes(
        (e, shadow, _steps, policy) in scenario(),
        touches in prop::collection::vec(side(), 1..5),
    ) {
        let ctx = ctx();
        let mut w = World::new(e, &shadow, &ctx);
        for s in &touches {
            w.step(e, &Step::Touch(*s), &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let plan = decide(&w.input(e, &shadow, &policy, &ctx));
        prop_assert_eq!(plan.writes(), 0, "{}", plan);
        prop_assert_eq!(&plan.kind, &PlanKind::NoOp, "{}", plan);
    }

    /// (2) applying the plan and re-running decide yields no further writes (a no-op unless a
    /// manual conflict is parked), and (3) a field changed on one side only ends up equal on
    /// both, with the edited value surviving.
    #[test]
    fn converges_and_one_sided_changes_travel((e, shadow, steps, policy) in scenario()) {
        let ctx = ctx();
        let mut w = World::new(e, &shadow, &ctx);
        for s in &steps {
            w.step(e, s, &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let graph_edited = from_graph(e, &w.graph, &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let crm_edited = from_crm(e, &w.crm, &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let plan = try_decide(&w.input(e, &shadow, &policy, &ctx)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(plan.ops.iter().all(|o| matches!(o, Op::UpdateGraph { .. } | Op::UpdateCrm { .. } | Op::RaiseConflict { .. })), "{}", plan);
        let new_shadow = plan.new_shadow.clone().ok_or_else(|| TestCaseError::fail("no shadow"))?;

        let (mut g, mut c) = (Some(w.graph.clone()), Some(w.crm.clone()));
        apply(&plan, &mut g, &mut c);
        w.graph = g.ok_or_else(|| TestCaseError::fail("graph gone"))?;
        w.crm = c.ok_or_else(|| TestCaseError::fail("crm gone"))?;

        let again = decide(&w.input(e, &new_shadow, &policy, &ctx));
        prop_assert_eq!(again.writes(), 0, "first: {}\nagain: {}", plan, again);
        if policy.conflict != ConflictPolicy::Manual {
            prop_assert!(again.is_noop(), "first: {}\nagain: {}", plan, again);
        }

        // (3)
        let g_after = from_graph(e, &w.graph, &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let c_after = from_crm(e, &w.crm, &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // excluded fields stay as each side has them, so project with those filled in
        let fill = |side: &Canonical| {
            let mut out = new_shadow.clone();
            for f in &policy.excluded(e) {
                out.set(f, side.get(f).clone());
            }
            out
        };
        let pg = project_graph(e, &fill(&g_after));
        let pc = project_crm(e, &fill(&c_after), &ctx);
        let on_graph = edited_fields(&steps, Side::Graph);
        let on_crm = edited_fields(&steps, Side::Crm);
        let time_on_both = on_graph.iter().any(|f| is_time(e, f)) && on_crm.iter().any(|f| is_time(e, f));
        for (editor, mine, theirs) in [(Side::Graph, &on_graph, &on_crm), (Side::Crm, &on_crm, &on_graph)] {
            let may_travel = match (policy.direction, editor) {
                (Direction::Both, _) => e != Entity::Email || editor == Side::Graph,
                (Direction::GraphToCrm, Side::Graph) => true,
                (Direction::CrmToGraph, Side::Crm) => e != Entity::Email,
                _ => false,
            };
            for f in mine.iter().filter(|f| !theirs.contains(f)) {
                if !may_travel || policy.excluded(e).contains(f) || (is_time(e, f) && time_on_both) {
                    continue;
                }
                prop_assert_eq!(pg.get(f), g_after.get(f), "graph {} after {}", f, plan);
                prop_assert_eq!(pc.get(f), c_after.get(f), "crm {} after {}", f, plan);
                let edited = if editor == Side::Graph { graph_edited.get(f) } else { crm_edited.get(f) };
                let now = if editor == Side::Graph { g_after.get(f) } else { c_after.get(f) };
                prop_assert_eq!(edited, now, "the {:?} edit of {} did not survive: {}", editor, f, plan);
            }
        }

        // excluded fields never travel
        for f in &policy.excluded(e) {
            prop_assert_eq!(g_after.get(f), graph_edited.get(f), "excluded {} written to Graph", f);
            prop_assert_eq!(c_after.get(f), crm_edited.get(f), "excluded {} written to CRM", f);
        }
    }

    /// (4) no plan deletes CRM data: the only CRM "delete" is MarkCrmDeleted, and only for an
    /// appointment whose Graph side is Deleted, with a shadow; DeleteGraph only for a CRM-side
    /// Deleted with a shadow; creates only without a shadow.
    #[test]
    fn deletes_only_on_explicit_deletes(
        (e, shadow, graph_c, crm_c) in entity().prop_flat_map(|e| (Just(e), item(e), item(e), item(e))),
        graph_state in 0u8..3,
        crm_state in 0u8..3,
        has_shadow in any::<bool>(),
        organizer in any::<bool>(),
        conflict in select(&[ConflictPolicy::CrmWins, ConflictPolicy::Manual][..]),
    ) {
        let ctx = ctx();
        let graph = match graph_state {
            0 => SideState::Absent,
            1 => SideState::Deleted,
            _ => SideState::Present(GraphItem { item: to_graph(e, &graph_c, None), changed_at: None }),
        };
        let crm = match crm_state {
            0 => SideState::Absent,
            1 => SideState::Deleted,
            _ => SideState::Present(CrmItem { fields: to_crm(e, &crm_c, None, &ctx), changed_at: None }),
        };
        let policy = Policy { conflict, ..Policy::default() };
        let input = Input {
            entity: e,
            shadow: if has_shadow { Some(&shadow) } else { None },
            fingerprint: None,
            graph: graph.clone(),
            crm: crm.clone(),
            graph_organizer: organizer,
            policy: &policy,
            ctx: &ctx,
            now: at("2026-03-20T00:00:00Z"),
            window: None,
            cause: Cause::Delta,
        };
        let plan = decide(&input);
        for op in &plan.ops {
            match op {
                Op::MarkCrmDeleted => prop_assert!(
                    matches!(graph, SideState::Deleted) && e == Entity::Appointment && has_shadow && organizer,
                    "{}", plan
                ),
                Op::DeleteGraph => prop_assert!(matches!(crm, SideState::Deleted) && has_shadow, "{}", plan),
                Op::CreateGraph { .. } => prop_assert!(!has_shadow && matches!(graph, SideState::Absent) && e != Entity::Email, "{}", plan),
                Op::CreateCrm { .. } => prop_assert!(!has_shadow && matches!(crm, SideState::Absent), "{}", plan),
                _ => {}
            }
        }
        if matches!(plan.kind, PlanKind::Delete | PlanKind::Unlink) {
            prop_assert!(plan.new_shadow.is_none());
        }
    }

    /// Projections are stable: a value already in a side's reading maps to itself.
    #[test]
    fn projections_are_idempotent(e in entity().prop_flat_map(|e| (Just(e), item(e)))) {
        let (e, c) = e;
        let ctx = ctx();
        let pg = project_graph(e, &c);
        prop_assert_eq!(project_graph(e, &pg), pg.clone());
        let pc = project_crm(e, &c, &ctx);
        prop_assert_eq!(project_crm(e, &pc, &ctx), pc.clone());
        // and the hash survives a serde round trip
        let text = serde_json::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Canonical = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.content_hash(), c.content_hash());
    }

    /// (5) lost state is not a fresh start: with random one-sided edits (and touches), deciding
    /// from the item's fingerprint of the shadow, with no stored shadow, gives the same plan
    /// kind and operations as deciding with the stored shadow.
    #[test]
    fn fingerprint_decides_like_the_stored_shadow(
        (e, shadow, steps, policy) in scenario(),
        editor in side(),
    ) {
        let ctx = ctx();
        let mut w = World::new(e, &shadow, &ctx);
        let one_sided: Vec<Step> = steps
            .into_iter()
            .map(|s| match s {
                Step::Edit(_, f) => Step::Edit(editor, f),
                Step::Touch(t) => Step::Touch(t),
            })
            .collect();
        for s in &one_sided {
            w.step(e, s, &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let fp = fingerprint(e, &shadow);
        prop_assert!(fp.len() < 250, "{}", fp);
        let stored = try_decide(&w.input(e, &shadow, &policy, &ctx)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let rebuilt = try_decide(&w.input_with(e, None, Some(&fp), &policy, &ctx)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&rebuilt.kind, &stored.kind, "stored: {}\nrebuilt: {}", stored, rebuilt);
        prop_assert_eq!(&rebuilt.ops, &stored.ops, "stored: {}\nrebuilt: {}", stored, rebuilt);
        prop_assert!(rebuilt.reason.contains("fingerprint"), "{}", rebuilt.reason);
    }

    /// (6) absence is not deletion: whenever a side is Absent while a shadow exists, the plan
    /// has no operation at all (no delete, mark, unlink, write or conflict) and keeps the shadow.
    #[test]
    fn absent_side_with_shadow_never_acts(
        (e, shadow, other_c) in entity().prop_flat_map(|e| (Just(e), item(e), item(e))),
        other_state in 0u8..3,
        graph_absent in any::<bool>(),
        organizer in any::<bool>(),
        policy in entity().prop_flat_map(policy),
        with_window in any::<bool>(),
    ) {
        let ctx = ctx();
        let other_graph = || match other_state {
            0 => SideState::Absent,
            1 => SideState::Deleted,
            _ => SideState::Present(GraphItem { item: to_graph(e, &other_c, None), changed_at: None }),
        };
        let other_crm = || match other_state {
            0 => SideState::Absent,
            1 => SideState::Deleted,
            _ => SideState::Present(CrmItem { fields: to_crm(e, &other_c, None, &ctx), changed_at: None }),
        };
        let (graph, crm) = if graph_absent {
            (SideState::Absent, other_crm())
        } else {
            (other_graph(), SideState::Absent)
        };
        // a window that holds every generated start (an absent side never counts as outside)
        let window = with_window.then(|| (at("2026-03-01T00:00:00Z"), at("2026-05-01T00:00:00Z")));
        let fp = fingerprint(e, &other_c);
        let input = Input {
            entity: e,
            shadow: Some(&shadow),
            fingerprint: Some(&fp),
            graph,
            crm,
            graph_organizer: organizer,
            policy: &policy,
            ctx: &ctx,
            now: at("2026-03-20T00:00:00Z"),
            window,
            cause: Cause::Delta,
        };
        let plan = decide(&input);
        prop_assert!(plan.ops.is_empty(), "{}", plan);
        prop_assert_eq!(&plan.kind, &PlanKind::NoOp, "{}", plan);
        prop_assert_eq!(plan.new_shadow.as_ref(), Some(&shadow), "{}", plan);
        prop_assert!(plan.audit.is_empty(), "{}", plan);
        if policy.direction != Direction::Off {
            prop_assert!(plan.reason.starts_with("absent:"), "{}", plan.reason);
        }
    }
}
