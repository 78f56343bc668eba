//! The `plan` command (issue 16): reads both sides as a first sync (or the next sync after a
//! config change) would — the switched-on reps' mailboxes, the Graph calendarView, contacts and
//! To Do tasks, the CRM records of each rep, the links stored today — runs the same matching and
//! the core's reconciliation through a pass that only looks (`sync::preview`), and reports per
//! tenant and mailbox what would happen. It writes nothing to Graph, CRM, the queue or the store
//! (the store is opened read-only; the queue is never opened).
//!
//! - `readonly.rs`: the read-only store and the queue that refuses everything;
//! - `report.rs`: the report (JSON shape, text rendering, summary table);
//! - `against.rs`: `--against OLD_CONFIG`, what a configuration change does.

mod against;
mod readonly;
mod report;

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use cgc_core::{Cause, Entity};
use cgc_graph::DeltaStart;
use chrono::Utc;

use crate::config::Config;
use crate::context::{App, Tenant, Tuning};
use crate::state::MailboxRecord;
use crate::sync::Pass;
use crate::sync::preview::Preview;

pub use against::{Against, ChangedItem, Compared};
pub use readonly::{NoQueue, ReadOnlyStore};
pub use report::{ItemPlan, MailboxPlan, Report, Summary, TenantPlan};

/// Which part of the configuration to plan.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    pub tenant: Option<String>,
    pub mailbox: Option<String>,
    pub entity: Option<Entity>,
    /// Progress lines on stderr while reading.
    pub progress: bool,
}

/// The entities a plan covers.
const ENTITIES: [Entity; 3] = [Entity::Appointment, Entity::Contact, Entity::Task];

/// Plans `config` without writing anything; `prefix` names Redis keys as for the service.
pub async fn plan(config: Config, opts: &PlanOptions, prefix: &str) -> anyhow::Result<Report> {
    let store = Arc::new(ReadOnlyStore::open(&config, prefix).await?);
    plan_with(config, opts, store).await
}

/// Like [`plan`], reading a store this process already has open (read-only all the same).
pub async fn plan_over(
    config: Config,
    opts: &PlanOptions,
    store: Arc<dyn cgc_backends::Store>,
) -> anyhow::Result<Report> {
    plan_with(config, opts, Arc::new(ReadOnlyStore::over(store))).await
}

async fn plan_with(
    config: Config,
    opts: &PlanOptions,
    store: Arc<ReadOnlyStore>,
) -> anyhow::Result<Report> {
    let app = App::assemble(config, Tuning::default(), Arc::new(NoQueue), store.clone())?;
    if let Some(t) = opts.tenant.as_ref().filter(|t| app.tenant(t).is_none()) {
        anyhow::bail!("--tenant: no tenant {t:?} in the configuration");
    }
    let mut report = Report::default();
    for t in app.tenants.values() {
        if opts.tenant.as_ref().is_some_and(|x| *x != t.cfg.id) {
            continue;
        }
        let mailboxes = mailboxes(t, &store, opts).await?;
        let mut tp = TenantPlan {
            tenant: t.cfg.id.clone(),
            ..TenantPlan::default()
        };
        for m in &mailboxes {
            tp.mailboxes.push(plan_mailbox(&app, t, m, opts).await?);
        }
        report.tenants.push(tp);
    }
    report.finish();
    let refused = store.refused.load(std::sync::atomic::Ordering::SeqCst);
    anyhow::ensure!(
        refused == 0,
        "internal: the plan tried {refused} store write(s); none was made"
    );
    Ok(report)
}

/// `plan --against OLD`: the plan of `config` (the new one), with what the change from `old`
/// does — each item whose plan differs between the two configurations (a window change's
/// unlinks, a direction change's creates, an exclusion's updates), pairs that exist today first.
pub async fn plan_against(
    config: Config,
    old: Config,
    opts: &PlanOptions,
    prefix: &str,
) -> anyhow::Result<Compared> {
    let before = plan(old, opts, prefix).await?;
    let report = plan(config, opts, prefix).await?;
    let against = Against::between(&before, &report);
    Ok(Compared { report, against })
}

/// Like [`plan_against`], reading a store this process already has open.
pub async fn plan_against_over(
    config: Config,
    old: Config,
    opts: &PlanOptions,
    store: Arc<dyn cgc_backends::Store>,
) -> anyhow::Result<Compared> {
    let before = plan_over(old, opts, store.clone()).await?;
    let report = plan_over(config, opts, store).await?;
    let against = Against::between(&before, &report);
    Ok(Compared { report, against })
}

/// The mailboxes a first sync would serve: reps switched on in CRM, in the tenant's domains.
/// They are made known to the plan's own passes (scope rules ask), never stored.
async fn mailboxes(
    t: &Tenant,
    store: &ReadOnlyStore,
    opts: &PlanOptions,
) -> anyhow::Result<Vec<MailboxRecord>> {
    let reps = crate::watch::mailboxes::switched_on_reps(t)
        .await
        .with_context(|| format!("tenant {}: reading the reps switched on in CRM", t.cfg.id))?;
    let mut out = Vec::new();
    for (rep_id, mail) in reps {
        if !t.cfg.owns_mailbox(&mail) {
            continue;
        }
        let rec = MailboxRecord {
            mailbox: mail.clone(),
            rep_id,
        };
        store.seed(
            &format!("{}:mailboxes", t.cfg.id),
            &mail,
            serde_json::to_vec(&rec).unwrap_or_default(),
        );
        if opts
            .mailbox
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(&mail))
        {
            out.push(rec);
        }
    }
    Ok(out)
}

fn progress(opts: &PlanOptions, line: impl FnOnce() -> String) {
    if opts.progress {
        eprintln!("plan: {}", line());
    }
}

async fn plan_mailbox(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    m: &MailboxRecord,
    opts: &PlanOptions,
) -> anyhow::Result<MailboxPlan> {
    let mut mp = MailboxPlan {
        mailbox: m.mailbox.clone(),
        rep_id: m.rep_id.clone(),
        ..MailboxPlan::default()
    };
    let links = app.state.links(&t.cfg.id).await?;
    mp.pairs = links.iter().filter(|l| l.mailbox == m.mailbox).count();
    for entity in ENTITIES {
        if opts.entity.is_some_and(|e| e != entity) {
            continue;
        }
        let items = plan_entity(app, t, m, entity, &links, opts)
            .await
            .with_context(|| {
                format!(
                    "tenant {}, mailbox {}: planning {entity}s",
                    t.cfg.id, m.mailbox
                )
            })?;
        mp.items.extend(items);
    }
    mp.finish(t.cfg.mass_change_share);
    Ok(mp)
}

/// The Graph items a first sync reads (id, To Do list).
async fn graph_items(
    t: &Tenant,
    mailbox: &str,
    entity: Entity,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let g = &t.graph;
    let (round, list) = match entity {
        Entity::Appointment => {
            let (start, end) = t.window(Utc::now());
            let w = DeltaStart::Window { start, end };
            (g.calendar_view_delta(mailbox, w).await?, None)
        }
        Entity::Contact => (g.contacts_delta(mailbox, DeltaStart::Initial).await?, None),
        Entity::Task => {
            let list = g.default_todo_list(mailbox).await?;
            let round = g.tasks_delta(mailbox, &list, DeltaStart::Initial).await?;
            (round, Some(list))
        }
        Entity::Email => return Ok(Vec::new()),
    };
    Ok(round
        .changed
        .iter()
        .filter_map(|v| v.get("id").and_then(|i| i.as_str()))
        .map(|id| (id.to_string(), list.clone()))
        .collect())
}

async fn plan_entity(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    m: &MailboxRecord,
    entity: Entity,
    links: &[crate::state::Link],
    opts: &PlanOptions,
) -> anyhow::Result<Vec<ItemPlan>> {
    let mut out = Vec::new();
    if t.policy(entity).direction == cgc_core::Direction::Off {
        return Ok(out);
    }
    let mailbox = m.mailbox.as_str();
    let graph = graph_items(t, mailbox, entity).await?;
    progress(opts, || {
        format!("{mailbox}: {} Graph {entity}s read", graph.len())
    });
    let mut seen_crm = BTreeSet::new();
    let by_graph = Pass::new(app, t, mailbox, entity, Cause::Delta, "plan");
    for (i, (id, list)) in graph.iter().enumerate() {
        let p = by_graph.preview_graph(id, list.as_deref()).await?;
        seen_crm.extend(p.obs.crm_id);
        seen_crm.extend(p.ambiguous.iter().copied());
        out.push(item(entity, mailbox, Some(id), &p));
        if (i + 1) % 100 == 0 {
            progress(opts, || {
                format!("{mailbox}: {} of {} {entity}s planned", i + 1, graph.len())
            });
        }
    }
    // CRM records of the rep (appointments, tasks) and the pairs stored today.
    let mut crm_ids: Vec<u64> = Vec::new();
    if matches!(entity, Entity::Appointment | Entity::Task) {
        let records = crate::watch::crm_poll::changed_records(t, entity, Some(&m.rep_id), None)
            .await
            .map_err(|e| anyhow::anyhow!("reading CRM {}s: {e:?}", entity))?;
        crm_ids.extend(records.iter().map(|r| r.id));
    }
    crm_ids.extend(
        links
            .iter()
            .filter(|l| l.entity == entity && l.mailbox == m.mailbox)
            .map(|l| l.crm_id),
    );
    progress(opts, || {
        format!("{mailbox}: {} CRM {entity} records read", crm_ids.len())
    });
    let by_crm = Pass::new(app, t, mailbox, entity, Cause::CrmPoll, "plan");
    for id in crm_ids {
        if !seen_crm.insert(id) {
            continue;
        }
        let p = by_crm.preview_crm(id).await?;
        out.push(item(entity, mailbox, None, &p));
    }
    Ok(out)
}

fn item(entity: Entity, mailbox: &str, graph_id: Option<&str>, p: &Preview) -> ItemPlan {
    ItemPlan::from_preview(entity, mailbox, graph_id, p)
}
