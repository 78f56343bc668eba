//! What `plan` prints: per tenant and mailbox, one line per item that would change, then a
//! summary table; or, with `--json`, the same as one JSON document (README "plan --json").
//! The JSON shape is versioned (`version`); items are sorted, so the same state gives the same
//! output byte for byte.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cgc_core::{Entity, Op, Side};
use serde::Serialize;
use serde_json::Value;

use crate::sync::preview::Preview;

/// The JSON format's version.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub version: u32,
    pub tenants: Vec<TenantPlan>,
    pub summary: Summary,
    /// Some mailbox's plan would trip the mass-change guard (the command then exits non-zero).
    pub guard_tripped: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TenantPlan {
    pub tenant: String,
    pub mailboxes: Vec<MailboxPlan>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MailboxPlan {
    pub mailbox: String,
    pub rep_id: String,
    /// Pairs linked in the store today (all entities), what the mass-change guard counts.
    pub pairs: usize,
    pub items: Vec<ItemPlan>,
    pub summary: Summary,
    /// The guard's limit for this mailbox and whether the plan's destructive changes exceed it.
    pub guard_limit: usize,
    pub guard_tripped: bool,
}

/// One field a write would change on one side.
#[derive(Clone, Debug, Serialize)]
pub struct FieldChange {
    pub side: Side,
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// What the plan would do with one item.
#[derive(Clone, Debug, Serialize)]
pub struct ItemPlan {
    pub entity: Entity,
    pub crm_id: Option<u64>,
    pub graph_id: Option<String>,
    pub title: String,
    /// A link this sync would make, found by: `crm-id`, `extkey`, `ical-uid` or `e-mail`.
    pub link: Option<String>,
    /// The plan's kind (`no-op`, `create`, `copy-to-graph`, `merge`, …; `skip` when the pass stops
    /// before planning).
    pub kind: String,
    /// The operations, in order: `create-in-graph`, `create-in-crm`, `update-graph`,
    /// `update-crm`, `delete-in-graph`, `mark-deleted-in-crm`, `unlink`, `conflict`.
    pub ops: Vec<String>,
    pub changes: Vec<FieldChange>,
    pub conflicts: Vec<cgc_core::ConflictField>,
    /// Meeting messages Graph would send (invitations, updates, cancellations: one per
    /// attendee of an event the mailbox organises).
    pub meeting_messages: usize,
    /// The pair is linked and a delete, deletion mark or unlink is planned (the guard counts it).
    pub destructive: bool,
    /// The pair is linked today (in the store).
    pub linked: bool,
    pub reason: String,
}

/// Counts of a mailbox, a tenant or the whole plan.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub items: usize,
    pub links: usize,
    pub links_by: BTreeMap<String, usize>,
    pub creates_in_graph: usize,
    pub creates_in_crm: usize,
    pub updates_graph: usize,
    pub updates_crm: usize,
    pub unlinks: usize,
    pub deletes_in_graph: usize,
    pub deletes_in_crm: usize,
    pub conflicts: usize,
    pub meeting_messages: usize,
    pub unchanged: usize,
    pub destructive: usize,
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::CreateGraph { .. } => "create-in-graph",
        Op::CreateCrm { .. } => "create-in-crm",
        Op::UpdateGraph { .. } => "update-graph",
        Op::UpdateCrm { .. } => "update-crm",
        Op::DeleteGraph => "delete-in-graph",
        Op::MarkCrmDeleted => "mark-deleted-in-crm",
        Op::Unlink => "unlink",
        Op::RaiseConflict { .. } => "conflict",
    }
}

fn attendees(v: Option<&Value>, mailbox: &str) -> usize {
    v.and_then(|v| v.get("attendees"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|x| {
                    !x["emailAddress"]["address"]
                        .as_str()
                        .is_some_and(|m| m.eq_ignore_ascii_case(mailbox))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Meeting messages one operation makes Graph send.
fn messages(op: &Op, item: Option<&Value>, mailbox: &str) -> usize {
    let organizer = item
        .and_then(|v| v.get("isOrganizer"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    match op {
        Op::CreateGraph { body } => attendees(Some(body), mailbox),
        Op::UpdateGraph { patch } if organizer => {
            let content = patch
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k != "singleValueExtendedProperties"));
            let after = if patch.get("attendees").is_some() {
                Some(patch)
            } else {
                item
            };
            if content {
                attendees(after, mailbox)
            } else {
                0
            }
        }
        Op::DeleteGraph if organizer => attendees(item, mailbox),
        _ => 0,
    }
}

fn title(p: &Preview) -> String {
    let g = p.obs.graph.as_ref();
    let from_graph = ["subject", "displayName", "title"]
        .iter()
        .find_map(|k| g.and_then(|v| v.get(*k)).and_then(Value::as_str));
    let from_crm = ["Subject", "LastName", "Text"]
        .iter()
        .find_map(|k| p.obs.crm.as_ref().and_then(|c| c.get(*k)));
    from_graph
        .or(from_crm.map(String::as_str))
        .unwrap_or("")
        .to_string()
}

impl ItemPlan {
    pub fn from_preview(
        entity: Entity,
        mailbox: &str,
        graph_id: Option<&str>,
        p: &Preview,
    ) -> ItemPlan {
        let gid = (!p.obs.graph_id.is_empty())
            .then(|| p.obs.graph_id.clone())
            .or(graph_id.map(str::to_string));
        let ops: Vec<&Op> = p.plan.iter().flat_map(|pl| pl.ops.iter()).collect();
        let destructive = p.guarded
            && p.obs.link.is_some()
            && ops
                .iter()
                .any(|o| matches!(o, Op::DeleteGraph | Op::MarkCrmDeleted | Op::Unlink));
        let mut names: Vec<String> = ops.iter().map(|o| op_name(o).to_string()).collect();
        if !p.ambiguous.is_empty() {
            names.push("conflict".into());
        }
        ItemPlan {
            entity,
            crm_id: p.obs.crm_id,
            graph_id: gid,
            title: title(p),
            link: p.linked_by.filter(|b| *b != "store").map(str::to_string),
            kind: p
                .plan
                .as_ref()
                .map(|pl| pl.kind.as_str().to_string())
                .unwrap_or_else(|| "skip".into()),
            ops: names,
            changes: p
                .plan
                .iter()
                .flat_map(|pl| pl.audit.iter())
                .map(|a| FieldChange {
                    side: a.side,
                    field: a.field.clone(),
                    old: a.before.clone(),
                    new: a.after.clone(),
                })
                .collect(),
            conflicts: p
                .plan
                .as_ref()
                .map(|pl| pl.conflicts().to_vec())
                .unwrap_or_default(),
            meeting_messages: ops
                .iter()
                .map(|o| messages(o, p.obs.graph.as_ref(), mailbox))
                .sum(),
            destructive,
            linked: p.linked_by == Some("store"),
            reason: p.reason.clone(),
        }
    }

    fn sort_key(&self) -> (String, String, Option<u64>, String) {
        (
            self.entity.as_str().to_string(),
            self.ops.join(","),
            self.crm_id,
            self.graph_id.clone().unwrap_or_default(),
        )
    }
}

impl Summary {
    fn add_item(&mut self, i: &ItemPlan) {
        self.items += 1;
        if let Some(by) = &i.link {
            self.links += 1;
            *self.links_by.entry(by.clone()).or_default() += 1;
        }
        for op in &i.ops {
            match op.as_str() {
                "create-in-graph" => self.creates_in_graph += 1,
                "create-in-crm" => self.creates_in_crm += 1,
                "update-graph" => self.updates_graph += 1,
                "update-crm" => self.updates_crm += 1,
                "delete-in-graph" => self.deletes_in_graph += 1,
                "mark-deleted-in-crm" => self.deletes_in_crm += 1,
                "unlink" => self.unlinks += 1,
                "conflict" => self.conflicts += 1,
                _ => {}
            }
        }
        if i.ops.is_empty() && i.link.is_none() {
            self.unchanged += 1;
        }
        self.meeting_messages += i.meeting_messages;
        self.destructive += usize::from(i.destructive);
    }

    fn add(&mut self, o: &Summary) {
        self.items += o.items;
        self.links += o.links;
        for (k, v) in &o.links_by {
            *self.links_by.entry(k.clone()).or_default() += v;
        }
        self.creates_in_graph += o.creates_in_graph;
        self.creates_in_crm += o.creates_in_crm;
        self.updates_graph += o.updates_graph;
        self.updates_crm += o.updates_crm;
        self.unlinks += o.unlinks;
        self.deletes_in_graph += o.deletes_in_graph;
        self.deletes_in_crm += o.deletes_in_crm;
        self.conflicts += o.conflicts;
        self.meeting_messages += o.meeting_messages;
        self.unchanged += o.unchanged;
        self.destructive += o.destructive;
    }
}

impl MailboxPlan {
    /// Sorts the items, sums them and applies the mass-change guard's rule.
    pub fn finish(&mut self, share: f64) {
        self.items.sort_by_key(ItemPlan::sort_key);
        let mut s = Summary::default();
        for i in &self.items {
            s.add_item(i);
        }
        self.guard_limit = crate::guard::limit(share, self.pairs);
        self.guard_tripped = s.destructive > self.guard_limit;
        self.summary = s;
    }
}

impl Report {
    /// Sums tenants and the whole plan.
    pub fn finish(&mut self) {
        self.version = VERSION;
        let mut all = Summary::default();
        for t in &mut self.tenants {
            let mut s = Summary::default();
            for m in &t.mailboxes {
                s.add(&m.summary);
                self.guard_tripped |= m.guard_tripped;
            }
            all.add(&s);
            t.summary = s;
        }
        self.summary = all;
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The human rendering: per mailbox one line per item that would change, then the table.
    pub fn to_text(&self) -> String {
        let mut out = self.items_text();
        render_table(&mut out, self);
        out
    }

    /// The per-mailbox lines, without the summary table.
    pub fn items_text(&self) -> String {
        let mut out = String::new();
        for t in &self.tenants {
            for m in &t.mailboxes {
                let _ = writeln!(
                    out,
                    "tenant {}, mailbox {} (rep {}), {} pairs linked today",
                    t.tenant, m.mailbox, m.rep_id, m.pairs
                );
                for i in m
                    .items
                    .iter()
                    .filter(|i| !i.ops.is_empty() || i.link.is_some())
                {
                    render_item(&mut out, i);
                }
                if m.guard_tripped {
                    let _ = writeln!(
                        out,
                        "  ! {} deletes/unlinks exceed the mass-change guard's {} for this mailbox: the sync would hold it",
                        m.summary.destructive, m.guard_limit
                    );
                }
            }
        }
        out
    }
}

fn ids(i: &ItemPlan) -> String {
    let c = i.crm_id.map(|c| format!("crm {c}")).unwrap_or_default();
    let g = i
        .graph_id
        .as_deref()
        .map(|g| format!("graph {g}"))
        .unwrap_or_default();
    match (c.is_empty(), g.is_empty()) {
        (false, false) => format!("{c} / {g}"),
        _ => format!("{c}{g}"),
    }
}

fn render_item(out: &mut String, i: &ItemPlan) {
    let head = format!("{} {} {:?}", i.entity, ids(i), i.title);
    if let Some(by) = &i.link {
        let _ = writeln!(out, "  link      {head} by {by}");
    }
    for op in &i.ops {
        let word = match op.as_str() {
            "create-in-graph" => "create    in Graph:",
            "create-in-crm" => "create    in CRM:",
            "update-graph" => "update    Graph:",
            "update-crm" => "update    CRM:",
            "delete-in-graph" => "delete    in Graph:",
            "mark-deleted-in-crm" => "delete    in CRM (ConnectorDeleted):",
            "unlink" => "unlink   ",
            _ => "conflict ",
        };
        let _ = writeln!(out, "  {word} {head}");
        let side = match op.as_str() {
            "update-graph" => Some(Side::Graph),
            "update-crm" => Some(Side::Crm),
            _ => None,
        };
        for c in i.changes.iter().filter(|c| Some(c.side) == side) {
            let _ = writeln!(out, "              {}: {} → {}", c.field, c.old, c.new);
        }
        if op == "conflict" {
            for c in &i.conflicts {
                let _ = writeln!(
                    out,
                    "              {}: CRM {} / Graph {} (was {})",
                    c.field, c.crm, c.graph, c.base
                );
            }
        }
    }
    if i.meeting_messages > 0 {
        let _ = writeln!(
            out,
            "              {} meeting message(s) sent by Graph",
            i.meeting_messages
        );
    }
    if !i.ops.is_empty() {
        let _ = writeln!(out, "              why: {}", i.reason);
    }
}

pub(super) fn render_table(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "\n{:<12} {:<28} {:>5} {:>13} {:>13} {:>7} {:>13} {:>9} {:>8} {:>5}",
        "tenant",
        "mailbox",
        "links",
        "create G/CRM",
        "update G/CRM",
        "unlink",
        "delete G/CRM",
        "conflicts",
        "messages",
        "guard"
    );
    let row = |out: &mut String, t: &str, m: &str, s: &Summary, guard: &str| {
        let _ = writeln!(
            out,
            "{:<12} {:<28} {:>5} {:>13} {:>13} {:>7} {:>13} {:>9} {:>8} {:>5}",
            t,
            m,
            s.links,
            format!("{}/{}", s.creates_in_graph, s.creates_in_crm),
            format!("{}/{}", s.updates_graph, s.updates_crm),
            s.unlinks,
            format!("{}/{}", s.deletes_in_graph, s.deletes_in_crm),
            s.conflicts,
            s.meeting_messages,
            guard
        );
    };
    for t in &r.tenants {
        for m in &t.mailboxes {
            row(
                out,
                &t.tenant,
                &m.mailbox,
                &m.summary,
                if m.guard_tripped { "HOLD" } else { "ok" },
            );
        }
    }
    row(
        out,
        "all",
        "",
        &r.summary,
        if r.guard_tripped { "HOLD" } else { "ok" },
    );
}
