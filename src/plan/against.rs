//! `plan --against OLD_CONFIG`: the items whose plan differs between the configuration in
//! force today and the new one (a window change's unlinks, a direction change's creates).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cgc_core::Entity;
use serde::Serialize;

use super::report::{ItemPlan, Report, render_table};

/// `plan --against`: the new configuration's plan and what the change does. Its JSON is the
/// plan's document with one more key, `against`.
#[derive(Clone, Debug, Serialize)]
pub struct Compared {
    #[serde(flatten)]
    pub report: Report,
    pub against: Against,
}

impl Compared {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        let mut out = self.report.items_text();
        self.against.render(&mut out);
        render_table(&mut out, &self.report);
        out
    }
}

/// One item whose plan differs between the old and the new configuration.
#[derive(Clone, Debug, Serialize)]
pub struct ChangedItem {
    pub tenant: String,
    pub mailbox: String,
    pub entity: Entity,
    pub crm_id: Option<u64>,
    pub graph_id: Option<String>,
    pub title: String,
    /// The pair is linked today.
    pub linked: bool,
    pub old_ops: Vec<String>,
    pub new_ops: Vec<String>,
    pub reason: String,
}

/// What a configuration change does, item by item, and in sum.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Against {
    pub changed: Vec<ChangedItem>,
    /// The new plan's counts minus nothing: only the changed items, counted by their new ops.
    pub unlinks: usize,
    pub creates: usize,
    pub updates: usize,
    pub deletes: usize,
}

type ItemKey = (String, String, String, Option<u64>, String);

fn keyed(r: &Report) -> BTreeMap<ItemKey, ItemPlan> {
    let mut out = BTreeMap::new();
    for t in &r.tenants {
        for m in &t.mailboxes {
            for i in &m.items {
                let k = (
                    t.tenant.clone(),
                    m.mailbox.clone(),
                    i.entity.as_str().to_string(),
                    i.crm_id,
                    i.graph_id.clone().unwrap_or_default(),
                );
                out.insert(k, i.clone());
            }
        }
    }
    out
}

impl Against {
    /// The items whose operations differ between `old` and `new` (linked pairs first).
    pub fn between(old: &Report, new: &Report) -> Against {
        let (o, n) = (keyed(old), keyed(new));
        let mut keys: Vec<&ItemKey> = o.keys().chain(n.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut a = Against::default();
        for k in keys {
            let (oi, ni) = (o.get(k), n.get(k));
            let ops = |i: Option<&ItemPlan>| i.map(|i| i.ops.clone()).unwrap_or_default();
            if ops(oi) == ops(ni) {
                continue;
            }
            let any = ni.or(oi).cloned();
            let Some(i) = any else { continue };
            let new_ops = ops(ni);
            for op in &new_ops {
                match op.as_str() {
                    "unlink" => a.unlinks += 1,
                    "create-in-graph" | "create-in-crm" => a.creates += 1,
                    "update-graph" | "update-crm" => a.updates += 1,
                    "delete-in-graph" | "mark-deleted-in-crm" => a.deletes += 1,
                    _ => {}
                }
            }
            a.changed.push(ChangedItem {
                tenant: k.0.clone(),
                mailbox: k.1.clone(),
                entity: i.entity,
                crm_id: i.crm_id,
                graph_id: i.graph_id.clone(),
                title: i.title.clone(),
                linked: i.linked,
                old_ops: ops(oi),
                new_ops,
                reason: ni.map(|i| i.reason.clone()).unwrap_or_else(|| {
                    "not read under the new configuration (mailbox, entity or window left)".into()
                }),
            });
        }
        a.changed.sort_by_key(|c| !c.linked);
        a
    }
}

impl Against {
    fn render(&self, out: &mut String) {
        let a = self;
        let _ = writeln!(
            out,
            "against the old configuration: {} item(s) change ({} unlink, {} create, {} update, {} delete)",
            a.changed.len(),
            a.unlinks,
            a.creates,
            a.updates,
            a.deletes
        );
        for c in &a.changed {
            let _ = writeln!(
                out,
                "  {} {} crm {} {:?}{}: [{}] → [{}]: {}",
                c.mailbox,
                c.entity,
                c.crm_id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                c.title,
                if c.linked { " (linked today)" } else { "" },
                c.old_ops.join(", "),
                c.new_ops.join(", "),
                c.reason
            );
        }
    }
}
