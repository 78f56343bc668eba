//! One entity-addressed facade over both systems for a pass: read, update, delete and stamp an
//! item of the pass's entity, with one `match` on the entity per operation. Creates live in
//! `create.rs` (they need leases).

use std::collections::BTreeMap;

use cgc_core::mapping::records;
use cgc_core::{CrmFields, Entity};
use cgc_crm::{CrmError, ErrorCode};
use cgc_graph::crm_id_on_item;
use serde_json::Value;

use super::{Pass, SyncError};
use crate::context::App;
use crate::state::Link;

impl Pass<'_> {
    /// The To Do list of a task: the one it was linked in, else the mailbox's default list.
    pub(super) async fn todo_list(&self, list_id: Option<&str>) -> Result<String, SyncError> {
        Ok(match list_id {
            Some(l) => l.to_string(),
            None => self.tenant.graph.default_todo_list(self.mailbox).await?,
        })
    }

    pub(super) async fn graph_get(
        &self,
        id: &str,
        list_id: Option<&str>,
    ) -> Result<Option<Value>, SyncError> {
        let g = &self.tenant.graph;
        Ok(match self.entity {
            Entity::Appointment => g.get_event(self.mailbox, id).await?,
            Entity::Contact => g.get_contact(self.mailbox, id).await?,
            Entity::Task => {
                let list = self.todo_list(list_id).await?;
                g.get_task(self.mailbox, &list, id).await?
            }
            Entity::Email => g.get_message(self.mailbox, id).await?,
        })
    }

    pub(super) async fn crm_get(&self, id: u64) -> Result<Option<CrmFields>, SyncError> {
        let r = self
            .tenant
            .crm
            .get(
                self.entity.crm_table(),
                id,
                records::read_fields(self.entity),
                Some(self.mailbox),
            )
            .await?;
        Ok(r.map(|r| r.fields))
    }

    /// Updates the linked Graph item with `patch` (the change key read, when there is one).
    pub(super) async fn graph_update(
        &self,
        l: &Link,
        patch: &Value,
        etag: Option<&str>,
    ) -> Result<(), SyncError> {
        let g = &self.tenant.graph;
        match self.entity {
            Entity::Appointment => {
                let answer = g
                    .update_event(self.mailbox, &l.graph_id, patch, etag)
                    .await?;
                self.remember_written(&l.graph_id, &answer);
            }
            Entity::Contact => {
                let answer = g
                    .update_contact(self.mailbox, &l.graph_id, patch, etag)
                    .await?;
                self.remember_written(&l.graph_id, &answer);
            }
            Entity::Task => {
                let list = self.todo_list(l.list_id.as_deref()).await?;
                g.update_task(self.mailbox, &list, &l.graph_id, patch)
                    .await?;
            }
            Entity::Email => {}
        }
        Ok(())
    }

    /// Deletes the linked Graph item.
    pub(super) async fn graph_delete(&self, l: &Link) -> Result<(), SyncError> {
        let g = &self.tenant.graph;
        match self.entity {
            Entity::Appointment => g.delete_event(self.mailbox, &l.graph_id).await?,
            Entity::Contact => g.delete_contact(self.mailbox, &l.graph_id).await?,
            Entity::Task => {
                let list = self.todo_list(l.list_id.as_deref()).await?;
                g.delete_task(self.mailbox, &list, &l.graph_id).await?
            }
            Entity::Email => {}
        }
        Ok(())
    }

    /// Sets single-value extended properties (CRM id, agreed-state fingerprint) on a Graph item
    /// in one PATCH of the properties alone; only events and contacts carry them.
    pub(super) async fn graph_stamp(
        &self,
        graph_id: &str,
        props: &[(&str, &str)],
    ) -> Result<(), SyncError> {
        let g = &self.tenant.graph;
        match self.entity {
            Entity::Appointment => {
                let answer = g
                    .set_event_properties(self.mailbox, graph_id, props)
                    .await?;
                self.remember_written(graph_id, &answer);
            }
            Entity::Contact => {
                let answer = g
                    .set_contact_properties(self.mailbox, graph_id, props)
                    .await?;
                self.remember_written(graph_id, &answer);
            }
            _ => {}
        }
        Ok(())
    }

    /// Remembers the change key our write produced: its notification is then done without a GET.
    /// An undo's echo is left to its seal (which holds it in every process alike).
    fn remember_written(&self, graph_id: &str, answer: &Value) {
        if self.cause == cgc_core::Cause::Undo {
            return;
        }
        if let Some(ck) = change_key(answer) {
            let key = written_key(&self.tenant.cfg.id, self.mailbox, graph_id);
            self.app.state.written_versions().remember([(key, ck)]);
        }
    }

    /// Gives a To Do task the connector's linkedResource for its CRM record (MAPPING.md, Task
    /// identity: `applicationName` crm-graph-connector, `externalId` = the record id) unless
    /// `item` carries it already; the one way a task first created in To Do gets its link.
    pub(super) async fn link_task(
        &self,
        task_id: &str,
        list_id: Option<&str>,
        item: Option<&Value>,
        crm_id: u64,
    ) -> Result<bool, SyncError> {
        if self.entity != Entity::Task || item.and_then(crm_id_on_item) == Some(crm_id) {
            return Ok(false);
        }
        let list = self.todo_list(list_id).await?;
        self.tenant
            .graph
            .add_task_link(self.mailbox, &list, task_id, &crm_id.to_string())
            .await?;
        Ok(true)
    }

    /// Updates CRM fields of the linked record; a record another user holds is retried.
    pub(super) async fn crm_update(
        &self,
        id: u64,
        fields: &BTreeMap<String, String>,
    ) -> Result<(), SyncError> {
        let table = self.entity.crm_table();
        match self
            .tenant
            .crm
            .update(table, id, fields, Some(self.mailbox))
            .await
        {
            Ok(()) => Ok(()),
            Err(CrmError::Remote {
                code: ErrorCode::Locked,
                message,
            }) => Err(SyncError::Locked { id, message }),
            Err(e) => Err(e.into()),
        }
    }
}

/// The key of a Graph item among the change keys our writes produced.
fn written_key(tenant: &str, mailbox: &str, graph_id: &str) -> String {
    format!("{tenant}|{}|{graph_id}", mailbox.to_ascii_lowercase())
}

/// An item's change key: `changeKey`, else its `@odata.etag` (`W/"…"`) without the wrapping.
fn change_key(item: &Value) -> Option<&str> {
    item.get("changeKey")
        .and_then(Value::as_str)
        .or_else(|| item.get("@odata.etag").and_then(Value::as_str).map(bare))
        .filter(|k| !k.is_empty())
}

/// A change key from an etag: `W/"abc"` → `abc`.
fn bare(etag: &str) -> &str {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"')
}

/// Whether a notification (or delta report) names the change key one of this process's own
/// writes produced: the item then holds exactly what we wrote, and there is nothing to read.
pub fn is_own_write(tenant: &str, mailbox: &str, graph_id: &str, etag: &str, app: &App) -> bool {
    let ck = bare(etag);
    !ck.is_empty()
        && !app
            .state
            .written_versions()
            .is_new(&written_key(tenant, mailbox, graph_id), ck)
}

#[cfg(test)]
mod own_write_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn change_keys_are_read_from_the_answer_and_from_etags_alike() {
        assert_eq!(change_key(&json!({"changeKey": "ck1"})), Some("ck1"));
        assert_eq!(
            change_key(&json!({"@odata.etag": "W/\"ck2\""})),
            Some("ck2")
        );
        assert_eq!(change_key(&json!({"changeKey": ""})), None);
        assert_eq!(change_key(&Value::Null), None);
        assert_eq!(bare(" W/\"ck3\" "), "ck3");
        assert_eq!(written_key("t", "Rep1@X.com", "id"), "t|rep1@x.com|id");
    }
}
