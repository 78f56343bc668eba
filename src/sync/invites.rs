//! The pass's one call into the invitation guard (`crate::invitations`): before a plan is
//! carried out, a Graph event write that would mail attendees may be held.

use cgc_core::{Cause, Entity, Plan};

use super::observe::Observation;
use super::{Pass, Processed, SyncError, noop};
use crate::invitations::{self, Admit, Write};
use crate::telemetry::events::InvitationHeld;

impl Pass<'_> {
    /// `Some` (nothing is written, the write is remembered for release) when the invitation
    /// guard holds this plan's invitation-sending Graph write; `None` when the plan may go.
    pub(super) async fn held_for_invitations(
        &self,
        plan: &Plan,
        obs: &Observation,
    ) -> Result<Option<Processed>, SyncError> {
        if self.entity != Entity::Appointment {
            return Ok(None);
        }
        let item = obs.graph.as_ref();
        let Some(op) = plan
            .ops
            .iter()
            .find(|op| invitations::sends_meeting_mail(op, item))
        else {
            return Ok(None);
        };
        let Some(crm_id) = obs.link.as_ref().map(|l| l.crm_id).or(obs.crm_id) else {
            return Ok(None);
        };
        let w = Write {
            crm_id,
            graph_id: obs.link.as_ref().map(|l| l.graph_id.clone()),
            from_crm: self.cause == Cause::CrmPoll,
            ends: invitations::event_end(op, item),
            first_sync: self.first_sync,
        };
        let max = self.tenant.cfg.appointments.max_invitations_per_minute;
        let (admit, held) =
            invitations::admit(self.state(), self.tid(), self.mailbox, &w, max).await?;
        let Admit::Held(reason) = admit else {
            return Ok(None);
        };
        InvitationHeld {
            tenant: self.tid(),
            mailbox: &self.mailbox.to_ascii_lowercase(),
            crm_id,
            reason: reason.as_str(),
            held,
        }
        .emit(&self.app.metrics);
        Ok(Some(noop(&format!(
            "held by the invitation guard ({}): it would mail the attendees; nothing written, kept for release",
            reason.as_str()
        ))))
    }
}
