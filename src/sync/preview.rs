//! A pass that only looks (the `plan` command): it observes and plans exactly like a sync pass
//! — the same reads, the same matching, the same scope rules and the core's plan — and writes
//! nothing: no Graph or CRM write, no link, shadow, guard or audit record.

use cgc_core::{Entity, Plan};
use cgc_graph::crm_id_on_item;

use super::observe::Observed;
use super::undo::{SealState, UNDO_SEALED};
use super::{Observation, Pass, Planned, SyncError};

/// What a pass would do with one item.
#[derive(Debug)]
pub struct Preview {
    pub obs: Observation,
    /// The plan; `None` when the pass would do nothing before planning (`reason` says why).
    pub plan: Option<Plan>,
    pub reason: String,
    /// How the pair's link is known: `store`, or found by `crm-id` (the CRM-id property on the
    /// Graph item), `extkey` (our ExtKey row in CRM), `ical-uid` (an older connector's ExtKey row)
    /// or `e-mail` (a contact's address).
    pub linked_by: Option<&'static str>,
    /// The plan passes the mass-change guard (a core plan, not a scope unlink).
    pub guarded: bool,
    /// An unlinked Graph item several CRM records fit: the CRM ids (parked, nothing created).
    pub ambiguous: Vec<u64>,
}

fn nothing(reason: &str) -> Preview {
    Preview {
        obs: Observation::default(),
        plan: None,
        reason: reason.to_string(),
        linked_by: None,
        guarded: false,
        ambiguous: Vec::new(),
    }
}

impl Pass<'_> {
    /// What a pass for a Graph item would do.
    pub async fn preview_graph(
        &self,
        graph_id: &str,
        list_id: Option<&str>,
    ) -> Result<Preview, SyncError> {
        let observed = self.observe_graph(graph_id, list_id).await?;
        self.preview(observed).await
    }

    /// What a pass for a CRM record would do.
    pub async fn preview_crm(&self, crm_id: u64) -> Result<Preview, SyncError> {
        let observed = self.observe_crm(crm_id).await?;
        self.preview(observed).await
    }

    async fn preview(&self, observed: Observed) -> Result<Preview, SyncError> {
        let obs = match observed {
            Observed::Nothing(reason) => return Ok(nothing(reason)),
            Observed::Ambiguous { candidates, .. } => {
                let mut p = nothing("several CRM records fit; parked for an operator to pick one");
                p.ambiguous = candidates;
                return Ok(p);
            }
            Observed::Master(master) => {
                // a plain occurrence or an exception whose master is not synced: the master's
                // pass (its exceptions and cancelled days are not previewed)
                return Box::pin(self.preview_graph(&master, None)).await;
            }
            Observed::Gone => return Ok(nothing("an event Graph does not have and no link knows")),
            Observed::Pair(obs)
                if obs.link.is_none()
                    && obs
                        .crm
                        .as_ref()
                        .is_some_and(cgc_core::series::is_member_record) =>
            {
                return Ok(nothing(
                    "a member record of a CRM series: linked to its occurrence once the series exists",
                ));
            }
            Observed::Pair(obs) => obs,
        };
        let linked_by = self.linked_by(&obs).await?;
        let mut p = Preview {
            linked_by,
            ..nothing("")
        };
        if let Some((_, SealState::Matches)) = self.undo_seal_of(&obs).await? {
            p.reason = UNDO_SEALED.into();
            p.obs = obs;
            return Ok(p);
        }
        match self.plan_for(&obs).await? {
            Planned::Skip(reason) => p.reason = reason.into(),
            Planned::LeftScope(plan) => {
                p.reason = plan.reason.clone();
                p.plan = Some(plan);
            }
            Planned::Decided(plan) => {
                p.reason = plan.reason.clone();
                p.plan = Some(plan);
                p.guarded = true;
            }
        }
        p.obs = obs;
        Ok(p)
    }

    /// How the observed pair's link is known (reads only; matching tries these in this order).
    async fn linked_by(&self, obs: &Observation) -> Result<Option<&'static str>, SyncError> {
        let Some(l) = &obs.link else {
            return Ok(None);
        };
        if !obs.matched {
            return Ok(Some("store"));
        }
        if obs.graph.as_ref().and_then(crm_id_on_item) == Some(l.crm_id) {
            return Ok(Some("crm-id"));
        }
        let row = self.tenant.crm.find_link(&l.graph_id).await?;
        if row.is_some_and(|r| r.record_id == l.crm_id) {
            return Ok(Some("extkey"));
        }
        Ok(Some(match self.entity {
            Entity::Contact => "e-mail",
            _ => "ical-uid",
        }))
    }
}
