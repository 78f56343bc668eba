//! The pass itself: one reconciliation of one item in one mailbox, and what it did.

use std::sync::Arc;

use cgc_core::{Cause, Entity, PlanKind};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::SyncError;
use crate::context::{App, Tenant};
use crate::state::{Link, MailboxRecord, State};

/// What one processed event did (for the demo, tests and logs).
#[derive(Clone, Debug)]
pub struct Processed {
    pub kind: PlanKind,
    pub reason: String,
    pub writes: usize,
}

/// A pass that changed nothing, and why.
pub fn noop(reason: &str) -> Processed {
    Processed {
        kind: PlanKind::NoOp,
        reason: reason.to_string(),
        writes: 0,
    }
}

/// One reconciliation of one item in one mailbox.
pub struct Pass<'a> {
    pub(super) app: &'a Arc<App>,
    pub(super) tenant: &'a Arc<Tenant>,
    pub(super) mailbox: &'a str,
    pub(super) entity: Entity,
    pub(super) cause: Cause,
    pub(super) event_id: &'a str,
    /// When the Graph-side change was observed (notification or delta), for `latest-change-wins`.
    pub graph_observed_at: Option<DateTime<Utc>>,
    /// Who resolved the conflict this pass writes (admin API), for the audit trail.
    pub resolved_by: Option<String>,
    /// The change was found by the mailbox's first sync (the invitation guard holds what would
    /// mail attendees).
    pub first_sync: bool,
    /// The tenant's synced mailboxes, read once per pass (scope, owner and attendee rules all
    /// ask).
    mailboxes: tokio::sync::OnceCell<Vec<MailboxRecord>>,
}

impl<'a> Pass<'a> {
    pub fn new(
        app: &'a Arc<App>,
        tenant: &'a Arc<Tenant>,
        mailbox: &'a str,
        entity: Entity,
        cause: Cause,
        event_id: &'a str,
    ) -> Self {
        Pass {
            app,
            tenant,
            mailbox,
            entity,
            cause,
            event_id,
            graph_observed_at: None,
            resolved_by: None,
            first_sync: false,
            mailboxes: tokio::sync::OnceCell::new(),
        }
    }

    pub(super) fn state(&self) -> &State {
        &self.app.state
    }

    /// The tenant's synced mailboxes (one store read per pass).
    pub(super) async fn synced_mailboxes(&self) -> Result<&[MailboxRecord], SyncError> {
        let list = self
            .mailboxes
            .get_or_try_init(|| self.app.state.mailboxes(&self.tenant.cfg.id))
            .await?;
        Ok(list)
    }

    pub(super) fn tid(&self) -> &str {
        &self.tenant.cfg.id
    }

    pub(super) fn new_link(
        &self,
        crm_id: u64,
        graph_id: &str,
        item: &Value,
        list_id: Option<&str>,
    ) -> Link {
        Link {
            entity: self.entity,
            mailbox: self.mailbox.to_ascii_lowercase(),
            crm_id,
            graph_id: graph_id.to_string(),
            ical_uid: item
                .get("iCalUId")
                .and_then(Value::as_str)
                .map(str::to_string),
            organizer: item
                .get("isOrganizer")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            list_id: list_id.map(str::to_string),
            slot: crate::state::SeriesSlot::of(item),
            series: cgc_core::series::Member::of(item) == cgc_core::series::Member::Master,
        }
    }
}
