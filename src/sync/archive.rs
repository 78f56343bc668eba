//! Archived e-mail (one way, Graph → CRM): a message placed in the tenant's archive folder becomes
//! one CRM e-mail record (keyed by `internetMessageId`, so archiving it from two mailboxes or twice
//! makes one record), then moves to the success folder; a message that cannot be archived moves to
//! the failure folder with the reason logged.

use std::sync::Arc;
use std::time::Duration;

use cgc_core::{Entity, MapContext, PlanKind};
use cgc_crm::ExtLink;
use serde_json::Value;

use crate::context::{App, Tenant};
use crate::sync::{Processed, SyncError};
use crate::telemetry::events::{EmailArchived, EmailFailed};

pub async fn archive_message(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    message_id: &str,
) -> Result<Processed, SyncError> {
    let g = &t.graph;
    let Some(msg) = g.get_message(mailbox, message_id).await? else {
        return Ok(Processed {
            kind: PlanKind::NoOp,
            reason: "message no longer exists".into(),
            writes: 0,
        });
    };
    let archive = g.find_mail_folder(mailbox, &t.cfg.emails.folder).await?;
    let in_archive = archive.is_some()
        && msg.get("parentFolderId").and_then(Value::as_str) == archive.as_deref();
    if !in_archive {
        return Ok(Processed {
            kind: PlanKind::NoOp,
            reason: "message is not in the archive folder".into(),
            writes: 0,
        });
    }
    let result = store_in_crm(app, t, mailbox, message_id, &msg).await;
    match result {
        Ok(created) => {
            let ok = g
                .ensure_mail_folder(mailbox, &t.cfg.emails.success_folder)
                .await?;
            g.move_message(mailbox, message_id, &ok).await?;
            EmailArchived { tenant: &t.cfg.id }.emit(&app.metrics);
            Ok(Processed {
                kind: if created {
                    PlanKind::Create
                } else {
                    PlanKind::NoOp
                },
                reason: if created {
                    "message archived as a CRM e-mail record".into()
                } else {
                    "message was already archived (same internetMessageId)".into()
                },
                writes: usize::from(created),
            })
        }
        Err(e) if e.is_permanent() => {
            let reason = e.to_string();
            let bad = g
                .ensure_mail_folder(mailbox, &t.cfg.emails.failure_folder)
                .await?;
            g.move_message(mailbox, message_id, &bad).await?;
            EmailFailed {
                tenant: &t.cfg.id,
                mailbox,
                message: message_id,
                reason: &reason,
            }
            .emit(&app.metrics);
            Ok(Processed {
                kind: PlanKind::NoOp,
                reason: format!("archiving failed: {reason}"),
                writes: 0,
            })
        }
        Err(retry) => Err(retry),
    }
}

/// Creates the CRM record unless one exists for the `internetMessageId`; true when created.
/// A store lease on the `internetMessageId` makes the check-then-create atomic across workers
/// (the same message archived from two mailboxes is handled in two partitions at once).
async fn store_in_crm(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    message_id: &str,
    msg: &Value,
) -> Result<bool, SyncError> {
    let imid = msg
        .get("internetMessageId")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SyncError::Refused("message has no internetMessageId".into()))?
        .to_string();
    let lease = crate::state::lease_names::archive(&t.cfg.id, &imid);
    let holder = format!("{}:{mailbox}:{message_id}", app.instance);
    let Some(held) = crate::lease::acquire(app.state.store(), &lease, &holder).await? else {
        return Err(SyncError::busy(
            Duration::from_secs(1),
            "the same message is being archived from another mailbox",
        ));
    };
    let result = create_once(t, mailbox, message_id, &imid, msg).await;
    held.release().await;
    result
}

async fn create_once(
    t: &Arc<Tenant>,
    mailbox: &str,
    message_id: &str,
    imid: &str,
    msg: &Value,
) -> Result<bool, SyncError> {
    if let Some(row) = t.crm.find_link_by_uid(imid).await? {
        // Archived before (from this or another mailbox): every message's ExtKey row points to the
        // one record (expected-behaviour.md 31).
        if t.crm.find_link(message_id).await?.is_none() {
            t.crm
                .upsert_link(
                    row.record_id,
                    &ExtLink {
                        ext_key: message_id.to_string(),
                        ext_uid: Some(imid.to_string()),
                        table_short: "MA".into(),
                    },
                    Some(mailbox),
                )
                .await?;
        }
        return Ok(false);
    }
    let ctx = MapContext {
        crm_zone: t.cfg.crm_time_zone,
        known_person_emails: Default::default(),
    };
    let canonical = cgc_core::from_graph(Entity::Email, msg, &ctx)?;
    let mut fields = cgc_core::to_crm(Entity::Email, &canonical, None, &ctx);
    fields.insert("F5021".into(), "true".into());
    let ext = ExtLink {
        ext_key: message_id.to_string(),
        ext_uid: Some(imid.to_string()),
        table_short: "MA".into(),
    };
    match t
        .crm
        .create_linked("Contact", &fields, &ext, Some(mailbox))
        .await
    {
        Ok(_) => {}
        Err(cgc_crm::CrmError::LinkNotWritten { record_id, source }) => {
            // The record exists; only its ExtKey row is missing: finish it, never create again.
            tracing::warn!(crm_id = record_id, error = %source, "e-mail record created but its link was not written; finishing the link");
            t.crm.upsert_link(record_id, &ext, Some(mailbox)).await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(true)
}
