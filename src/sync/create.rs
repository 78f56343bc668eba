//! Creating the other half of an item exactly once, under a store lease, after looking for what
//! a concurrent or an earlier try made (expected-behaviour.md 6 and 27).

use std::time::Duration;

use cgc_core::{CrmFields, Entity};
use cgc_crm::{CrmError, ExtLink};
use serde_json::Value;

use super::{Pass, SyncError};
use crate::state::lease_names;

/// Stable Graph `transactionId` for creating the event of a CRM record: a retried create returns
/// the event made the first time.
pub fn transaction_id(tenant: &str, crm_id: u64) -> String {
    format!("cgc-{tenant}-{crm_id}")
}

impl Pass<'_> {
    /// The store lease `name` for this event's create, or a wait while another worker holds it.
    pub(super) async fn create_lease(
        &self,
        name: &str,
        busy: &str,
    ) -> Result<crate::lease::Held, SyncError> {
        let holder = format!("{}:{}", self.app.instance, self.event_id);
        crate::lease::acquire(self.app.state.store(), name, &holder)
            .await?
            .ok_or_else(|| SyncError::busy(Duration::from_millis(500), busy))
    }

    /// Creates the CRM record of a Graph item, once. Under a store lease (one meeting seen by
    /// several synced reps has one `iCalUId` but different mailboxes, so different partitions;
    /// any other item by its Graph id) it first looks for what a concurrent or an earlier try made
    /// — an ExtKey row, or a record made from Outlook whose link was never written because the
    /// answer was lost (expected-behaviour.md 27) — finishes that link and processes the event
    /// again (it then reconciles as a linked pair); only when nothing is found does it create.
    pub(super) async fn create_crm_once(
        &self,
        table: &str,
        fields: &CrmFields,
        ext: &ExtLink,
        owner: &str,
    ) -> Result<u64, SyncError> {
        let crm = &self.tenant.crm;
        let uid = ext
            .ext_uid
            .as_deref()
            .filter(|_| self.entity == Entity::Appointment);
        let lease_name = match uid {
            Some(uid) => lease_names::create_by_ical_uid(self.tid(), uid),
            None => lease_names::create_from_graph(self.tid(), self.entity, &ext.ext_key),
        };
        let held = self
            .create_lease(
                &lease_name,
                "the same item is being created by another worker",
            )
            .await?;
        let result = async {
            if crm
                .find_link(&ext.ext_key)
                .await?
                .is_some_and(|r| r.table_short == self.entity.crm_short())
            {
                return Err(SyncError::busy(Duration::from_millis(50), "the CRM record was made meanwhile; processing again links it"));
            }
            if let Some(uid) = uid {
                if crm.find_link_by_uid(uid).await?.is_some() {
                    return Err(SyncError::busy(Duration::from_millis(50), "the meeting was created from another mailbox meanwhile; processing again links it"));
                }
            }
            if let Some(orphan) = self.find_orphan(table, fields).await? {
                crm.upsert_link(orphan, ext, Some(self.mailbox)).await?;
                tracing::info!(tenant = %self.tid(), mailbox = %self.mailbox, crm_id = orphan,
                    "found the record an earlier try made (its answer was lost); link finished");
                return Err(SyncError::busy(Duration::from_millis(50), "finished the link of a record an earlier try made; processing again"));
            }
            match crm.create_linked(table, fields, ext, Some(owner)).await {
                Ok(id) => Ok(id),
                Err(CrmError::LinkNotWritten { record_id, source }) => {
                    // The record exists; only its ExtKey row is missing: finish it, never create again.
                    tracing::warn!(crm_id = record_id, error = %source, "record created but its link was not written; finishing the link");
                    crm.upsert_link(record_id, ext, Some(self.mailbox)).await?;
                    Ok(record_id)
                }
                Err(e) => Err(e.into()),
            }
        }
        .await;
        held.release().await;
        result
    }

    /// Creates the Graph item of a CRM record, once: under a store lease on the record, after
    /// looking for an item a concurrent or earlier try made (the CRM id it carries; for events
    /// the create's `transactionId` returns the first event anyway, expected-behaviour.md 6).
    pub(super) async fn create_graph_once(
        &self,
        crm_id: u64,
        body: &Value,
        list_id: Option<&str>,
    ) -> Result<(Value, Option<String>), SyncError> {
        let g = &self.tenant.graph;
        let cid = crm_id.to_string();
        let lease_name =
            lease_names::create_from_crm(self.tid(), self.entity, crm_id, self.mailbox);
        let held = self
            .create_lease(
                &lease_name,
                "the same record is being created in Graph by another worker",
            )
            .await?;
        let result = async {
            Ok(match self.entity {
                Entity::Appointment => {
                    let txn = transaction_id(self.tid(), crm_id);
                    (g.create_event(self.mailbox, body, &txn, &cid).await?, None)
                }
                Entity::Contact => {
                    if let Some(found) = g.find_contact_by_crm_id(self.mailbox, &cid).await? {
                        (found, None)
                    } else {
                        (g.create_contact(self.mailbox, body, &cid).await?, None)
                    }
                }
                Entity::Task => {
                    let list = self.todo_list(list_id).await?;
                    // A task made by an earlier try whose ExtKey write failed or whose answer was
                    // lost carries the linkedResource: find it instead of creating a second one.
                    if let Some(found) = g.find_task_by_crm_id(self.mailbox, &list, &cid).await? {
                        (found, Some(list))
                    } else {
                        (
                            g.create_task(self.mailbox, &list, body, &cid).await?,
                            Some(list),
                        )
                    }
                }
                Entity::Email => {
                    return Err(SyncError::Invariant(
                        "archived e-mail is one way (Graph to CRM)",
                    ));
                }
            })
        }
        .await;
        held.release().await;
        result
    }
}
