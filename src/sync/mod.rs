//! One item's sync pass: observe both sides once, decide with the pure core, apply the plan.
//!
//! - `pass.rs`: the [`Pass`] (tenant, mailbox, entity, cause) and what it did ([`Processed`]);
//! - `observe.rs`: the [`Observation`] (link, Graph item, CRM record, shadow, matched) and the
//!   rules that turn it into the core's side states;
//! - `matching.rs`: finding the other half of an unlinked item (CRM-id mark, ExtKey, iCalUId,
//!   e-mail, a record an earlier try made);
//! - `sides.rs`: one entity-addressed facade over Graph and CRM (get, update, delete, stamp);
//! - `create.rs`: creating the other half exactly once, under a lease;
//! - `scope.rs`: whose an appointment is (scope, the owner of a new record);
//! - `series.rs`: recurring series (master, exceptions, cancelled days); `series_crm.rs`: a
//!   series made in CRM;
//! - `persons.rs`: the mapping context (attendees that are CRM persons or synced reps);
//! - `apply.rs`: one small function per plan operation, then link, shadow and audit;
//! - `invites.rs`: the call into the invitation guard before a plan is carried out;
//! - `conflicts.rs`: conflicts parked for an operator;
//! - `archive.rs`: archiving a message into CRM (e-mail is one way);
//! - `resolution.rs`: carrying out an operator's conflict resolution;
//! - `undo.rs`, `restore.rs`: taking back one audited write (admin API) and the seal that
//!   makes its echo a no-op; `preview.rs`: a pass that only looks (the `plan` command);
//! - `error.rs`: [`SyncError`] and the one place that decides retry, wait or dead letter.

mod apply;
pub mod archive;
mod conflicts;
mod create;
pub mod error;
mod invites;
mod matching;
mod observe;
mod pass;
mod persons;
pub mod preview;
pub mod resolution;
mod restore;
mod scope;
mod series;
mod series_crm;
mod sides;
pub mod undo;

use cgc_core::mapping::records;
use cgc_core::series::{Member, is_master_record, is_member_record};
use cgc_core::{Cause, Entity, Input, Op, Plan, PlanKind};
use chrono::Utc;
use serde_json::Value;

use crate::event::Change;
use crate::telemetry::events::MassChangeHeld;

pub use create::transaction_id;
pub use error::{Disposition, SyncError};
pub use observe::Observation;
pub use pass::{Pass, Processed, noop};
pub use persons::{MAX_ATTENDEES_LOOKED_UP, PERSON_CACHE_TTL};
pub use sides::is_own_write;

use observe::Observed;

impl Pass<'_> {
    /// A Graph item changed (the current state decides, not the reported change type).
    pub async fn from_graph(
        &self,
        graph_id: &str,
        _change: Change,
        list_id: Option<&str>,
    ) -> Result<Processed, SyncError> {
        match self.observe_graph(graph_id, list_id).await? {
            Observed::Nothing(reason) => Ok(noop(reason)),
            Observed::Ambiguous { item, candidates } => {
                self.park_ambiguous(graph_id, &item, candidates).await
            }
            Observed::Master(master) => {
                Box::pin(self.from_graph(&master, Change::Updated, None)).await
            }
            Observed::Gone => self.look_at_series_masters().await,
            Observed::Pair(obs) => {
                let master = obs
                    .graph
                    .clone()
                    .filter(|v| Member::of(v) == Member::Master);
                let mut done = self.settle(obs).await?;
                if let Some(m) = master {
                    done.writes += self.sync_members(graph_id, &m).await?;
                }
                Ok(done)
            }
        }
    }

    /// A CRM record changed.
    pub async fn from_crm(&self, crm_id: u64) -> Result<Processed, SyncError> {
        match self.observe_crm(crm_id).await? {
            Observed::Nothing(reason) => Ok(noop(reason)),
            Observed::Ambiguous { .. } => Err(SyncError::Invariant(
                "a CRM record matched several Graph items",
            )),
            Observed::Master(master) => {
                Box::pin(self.from_graph(&master, Change::Updated, None)).await
            }
            Observed::Gone => Ok(noop("record gone and never linked: nothing to do")),
            Observed::Pair(obs) => {
                let fields = obs.crm.clone().unwrap_or_default();
                let appointment =
                    self.entity == Entity::Appointment && !records::is_deleted(&fields);
                if appointment && obs.link.is_none() && is_member_record(&fields) {
                    return self.member_from_crm(obs, &fields).await;
                }
                let master = appointment && is_master_record(&fields);
                let mut done = self.settle(obs).await?;
                if master {
                    done.writes += self.link_crm_members(crm_id).await?;
                }
                Ok(done)
            }
        }
    }

    /// Links a Graph item to the CRM record an operator picked, then syncs the pair.
    pub async fn link_chosen(&self, graph_id: &str, crm_id: u64) -> Result<Processed, SyncError> {
        let Some(item) = self.graph_get(graph_id, None).await? else {
            return Ok(noop("the Graph item is gone; nothing linked"));
        };
        let l = self.new_link(crm_id, graph_id, &item, None);
        self.mark_link(&l, Some(&item)).await?;
        self.state().put_link(self.tid(), &l).await?;
        self.from_graph(graph_id, Change::Updated, None).await
    }

    /// Decides and applies: records the connector does not sync are left alone, a pair that
    /// left the mailbox's scope is unlinked, destructive plans pass the mass-change guard.
    pub(super) async fn settle(&self, obs: Observation) -> Result<Processed, SyncError> {
        if let Some(held) = self.undo_sealed(&obs).await? {
            return Ok(held);
        }
        match self.plan_for(&obs).await? {
            Planned::Skip(reason) => Ok(noop(reason)),
            Planned::LeftScope(plan) => self.apply(plan, obs).await,
            Planned::Decided(plan) => {
                if self.held_by_guard(&plan, &obs).await? {
                    // Nothing is written and the change is remembered: on release it is
                    // processed again (the items are untouched on both sides meanwhile).
                    return Ok(noop(
                        "held by the mass-change guard; nothing changed, kept for release",
                    ));
                }
                self.apply(plan, obs).await
            }
        }
    }

    /// What a pass would do with the observed pair, before the mass-change guard; reads only.
    pub(super) async fn plan_for(&self, obs: &Observation) -> Result<Planned, SyncError> {
        if self.entity == Entity::Appointment {
            if let (None, Some(f)) = (&obs.link, &obs.crm) {
                if let Some(reason) = records::unlinked_appointment_skipped(f, obs.graph.is_some())
                {
                    return Ok(Planned::Skip(reason));
                }
            }
            // Leaving scope is unlinking (expected-behaviour.md 36): the record's rep is no longer
            // this mailbox's owner (and the owner is no participant), or its type is no longer one
            // the connector syncs. Nothing is deleted or cancelled, and nothing is written.
            if let (Some(_), Some(f)) = (&obs.link, &obs.crm) {
                if !records::is_deleted(f) {
                    if let Some(why) = self.out_of_scope(f).await? {
                        return Ok(Planned::LeftScope(unlink_plan(self.entity, why)));
                    }
                }
            }
        }
        Ok(Planned::Decided(self.decide(obs).await?))
    }

    /// The core's plan for the observed pair.
    async fn decide(&self, obs: &Observation) -> Result<Plan, SyncError> {
        let empty = Value::Null;
        let ctx = self
            .context(&[obs.graph.as_ref().unwrap_or(&empty)], obs.shadow.as_ref())
            .await?;
        let now = Utc::now();
        let policy = self.tenant.policy(self.entity);
        let fingerprint =
            observe::stored_fingerprint(self.entity, obs.shadow.as_ref(), obs.graph.as_ref());
        let plan = cgc_core::decide(&Input {
            fingerprint: fingerprint.as_deref(),
            entity: self.entity,
            shadow: obs.shadow.as_ref(),
            graph: observe::graph_side(
                obs.graph.as_ref(),
                obs.link.is_some(),
                self.graph_observed_at,
            ),
            crm: observe::crm_side(obs.crm.as_ref(), self.tenant.cfg.crm_time_zone),
            graph_organizer: observe::organizer(obs.graph.as_ref(), obs.link.as_ref()),
            policy: &policy,
            ctx: &ctx,
            now,
            window: (self.entity == Entity::Appointment && !self.window_waived(obs))
                .then(|| self.tenant.window(now)),
            cause: self.cause,
        });
        tracing::info!(
            tenant = %self.tid(), mailbox = %self.mailbox, entity = self.entity.as_str(),
            item = %obs.graph_id, plan = ?plan.kind, reason = %plan.reason, "reconciled"
        );
        Ok(plan)
    }

    /// Whether the mass-change guard holds this destructive plan of a linked pair (then nothing
    /// is written and the change is remembered for release).
    async fn held_by_guard(&self, plan: &Plan, obs: &Observation) -> Result<bool, SyncError> {
        let destructive = plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::DeleteGraph | Op::MarkCrmDeleted | Op::Unlink));
        let Some(link) = obs.link.as_ref().filter(|_| destructive) else {
            return Ok(false);
        };
        let mailbox = self.mailbox.to_ascii_lowercase();
        let pairs = self
            .state()
            .links(self.tid())
            .await?
            .iter()
            .filter(|l| l.mailbox == mailbox)
            .count();
        let cfg = &self.tenant.cfg;
        let change = crate::guard::Pending {
            entity: self.entity,
            from_crm: self.cause == Cause::CrmPoll,
            crm_id: Some(link.crm_id),
            graph_id: Some(link.graph_id.clone()),
            list_id: link.list_id.clone(),
        };
        let admit = crate::guard::admit(
            self.state(),
            self.tid(),
            &mailbox,
            cfg.mass_change_share,
            cfg.mass_change_window_seconds,
            pairs,
            change,
        )
        .await?;
        if admit != crate::guard::Admit::Held {
            return Ok(false);
        }
        MassChangeHeld {
            tenant: self.tid(),
            mailbox: &mailbox,
            pairs,
            share: cfg.mass_change_share,
            plan: &format!("{:?}", plan.kind),
        }
        .emit(&self.app.metrics);
        Ok(true)
    }
}

/// What a pass would do with an observed pair.
pub(super) enum Planned {
    /// Not a record the connector syncs: nothing to do, and why.
    Skip(&'static str),
    /// The pair left the mailbox's scope: unlinked, never guarded.
    LeftScope(Plan),
    /// The core's plan (destructive ones pass the mass-change guard).
    Decided(Plan),
}

/// The plan of a pair that left the mailbox's scope: unlink, nothing deleted or written.
fn unlink_plan(entity: Entity, why: &str) -> Plan {
    Plan {
        entity,
        kind: PlanKind::Unlink,
        ops: vec![Op::Unlink],
        new_shadow: None,
        audit: Vec::new(),
        reason: format!("{why}; unlinked, nothing deleted"),
    }
}
