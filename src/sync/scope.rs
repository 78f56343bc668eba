//! Whose an appointment is: whether a linked CRM record is still in this mailbox's scope, and
//! which rep a new CRM record made from a meeting belongs to.

use cgc_core::mapping::records;
use cgc_core::{CrmFields, Entity};
use serde_json::Value;

use super::{Pass, SyncError};

impl Pass<'_> {
    /// Why a linked CRM appointment is no longer in this mailbox's scope, if it is not.
    pub(super) async fn out_of_scope(
        &self,
        f: &CrmFields,
    ) -> Result<Option<&'static str>, SyncError> {
        let mailbox = self.mailbox.to_ascii_lowercase();
        let rep = self
            .synced_mailboxes()
            .await?
            .into_iter()
            .find(|m| m.mailbox == mailbox);
        Ok(records::left_scope(
            f,
            &mailbox,
            rep.as_ref().map(|r| r.rep_id.as_str()),
        ))
    }

    /// Whose record a new CRM appointment is: a meeting seen first through an attendee's copy
    /// belongs to its organizer when the organizer is a synced rep of the tenant (the record is
    /// created impersonating the organizer, so its `RepID` is the organizer's).
    pub(super) async fn record_owner(&self, item: &Value) -> Result<String, SyncError> {
        if self.entity != Entity::Appointment
            || item.get("isOrganizer").and_then(Value::as_bool) != Some(false)
        {
            return Ok(self.mailbox.to_string());
        }
        let Some(org) = item
            .pointer("/organizer/emailAddress/address")
            .and_then(Value::as_str)
            .map(|a| a.trim().to_ascii_lowercase())
        else {
            return Ok(self.mailbox.to_string());
        };
        let synced = self
            .synced_mailboxes()
            .await?
            .iter()
            .any(|m| m.mailbox == org);
        Ok(if synced {
            org
        } else {
            self.mailbox.to_string()
        })
    }
}
