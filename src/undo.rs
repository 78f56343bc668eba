//! Undo of audited sync writes (admin API `POST /admin/audit/{id}/undo` and `POST /admin/undo`):
//! finds a write's field records in the audit trail, checks that it is the pair's newest write
//! not yet undone, and hands it to the pass that takes it back (`sync::undo`).

use std::collections::HashSet;
use std::sync::Arc;

use cgc_core::Cause;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::context::App;
use crate::state::{AUDIT_CAP, AuditRecord};
use crate::sync::Pass;
use crate::sync::undo::{UndoError, Undone};

/// An undo request that failed before or while undoing.
#[derive(Debug)]
pub enum Refusal {
    /// No audit record with that id (404).
    NotFound(String),
    /// Cannot or may not be undone (409), and why.
    Conflict(String),
    /// The store, Graph or CRM failed (503); nothing or only part was written, say which.
    Unavailable(String),
}

/// The audit trail of one tenant, newest first, with the writes already undone.
struct Trail {
    records: Vec<AuditRecord>,
    undone: HashSet<String>,
}

async fn trail(app: &App, tenant: &str) -> Result<Trail, Refusal> {
    let records = app
        .state
        .audit_tail(tenant, AUDIT_CAP)
        .await
        .map_err(|e| Refusal::Unavailable(format!("store unavailable: {e}")))?;
    let undone = records
        .iter()
        .filter_map(|r| r.undo.as_ref().and_then(|u| u.undoes.clone()))
        .collect();
    Ok(Trail { records, undone })
}

fn same_pair(a: &AuditRecord, b: &AuditRecord) -> bool {
    a.entry.entity == b.entry.entity
        && a.mailbox.eq_ignore_ascii_case(&b.mailbox)
        && ((a.crm_id.is_some() && a.crm_id == b.crm_id)
            || (a.graph_id.is_some() && a.graph_id == b.graph_id))
}

impl Trail {
    /// The field records of the write `write` (newest first).
    fn write(&self, write: &str) -> Vec<AuditRecord> {
        self.records
            .iter()
            .filter(|r| r.undo.as_ref().is_some_and(|u| u.write == write))
            .cloned()
            .collect()
    }

    /// Why the write of `rec` is not the one to undo now, if it is not.
    fn blocked(&self, rec: &AuditRecord) -> Option<String> {
        let note = rec.undo.as_ref()?;
        if self.undone.contains(&note.write) {
            return Some("this write was undone already".into());
        }
        let newer = self
            .records
            .iter()
            .take_while(|r| r.id != rec.id)
            .find(|r| {
                same_pair(r, rec)
                    && r.undo.as_ref().is_some_and(|u| {
                        u.write != note.write
                            && u.undoes.is_none()
                            && !self.undone.contains(&u.write)
                    })
            });
        newer.map(|r| {
            format!(
                "a newer sync write of the same pair ({}, audit id {}) is not undone; undo it first",
                r.at, r.id
            )
        })
    }
}

async fn undo_write(
    app: &Arc<App>,
    trail: &Trail,
    rec: &AuditRecord,
    by: &str,
    dry_run: bool,
) -> Result<Undone, Refusal> {
    if rec.entry.cause == Cause::Undo {
        return Err(Refusal::Conflict(
            "this record is an undo; make the change again instead of undoing an undo".into(),
        ));
    }
    let Some(note) = &rec.undo else {
        return Err(Refusal::Conflict(
            "this audit record was written before writes kept what they replaced; it cannot be undone".into(),
        ));
    };
    if let Some(why) = trail.blocked(rec) {
        return Err(Refusal::Conflict(why));
    }
    let Some(tenant) = app.tenant(&rec.tenant) else {
        return Err(Refusal::Conflict(format!(
            "tenant {:?} is no longer configured",
            rec.tenant
        )));
    };
    let records = trail.write(&note.write);
    let event_id = format!("undo-{}", note.write);
    let mailbox = rec.mailbox.to_ascii_lowercase();
    let pass = Pass::new(
        app,
        tenant,
        &mailbox,
        rec.entry.entity,
        Cause::Undo,
        &event_id,
    );
    pass.undo(&records, by, dry_run).await.map_err(|e| match e {
        UndoError::Refused(why) => Refusal::Conflict(why),
        UndoError::Sync(e) => Refusal::Unavailable(format!(
            "the undo did not complete ({e}); the audit trail shows whether it wrote"
        )),
    })
}

/// Undoes (or, dry, describes undoing) the write the audit record `id` is part of.
pub async fn undo_one(
    app: &Arc<App>,
    id: &str,
    by: &str,
    dry_run: bool,
) -> Result<Undone, Refusal> {
    for t in app.tenants.keys() {
        let trail = trail(app, t).await?;
        if let Some(rec) = trail.records.iter().find(|r| r.id == id) {
            return undo_write(app, &trail, rec, by, dry_run).await;
        }
    }
    Err(Refusal::NotFound(format!("no audit record with id {id}")))
}

/// Undoes every sync write of one mailbox at or after `since`, newest first; with `dry_run`
/// lists what it would do. A write that may not be undone is reported and the rest go on.
pub async fn undo_mailbox(
    app: &Arc<App>,
    tenant: &str,
    mailbox: &str,
    since: DateTime<Utc>,
    by: &str,
    dry_run: bool,
) -> Result<Value, Refusal> {
    if app.tenant(tenant).is_none() {
        return Err(Refusal::NotFound(format!("no tenant {tenant:?}")));
    }
    let mut trail = trail(app, tenant).await?;
    let mut seen = HashSet::new();
    let todo: Vec<AuditRecord> = trail
        .records
        .iter()
        .filter(|r| r.mailbox.eq_ignore_ascii_case(mailbox) && r.at >= since)
        .filter(|r| r.entry.cause != Cause::Undo)
        .filter(|r| {
            r.undo
                .as_ref()
                .is_some_and(|u| u.undoes.is_none() && seen.insert(u.write.clone()))
        })
        .cloned()
        .collect();
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    for rec in &todo {
        match undo_write(app, &trail, rec, by, dry_run).await {
            Ok(u) => {
                // Later (older) writes of the same pair see this one as undone.
                trail.undone.insert(u.write.clone());
                done.push(u);
            }
            Err(Refusal::Unavailable(m)) => return Err(Refusal::Unavailable(m)),
            Err(Refusal::Conflict(why) | Refusal::NotFound(why)) => refused.push(json!({
                "audit_id": rec.id, "at": rec.at, "crm_id": rec.crm_id,
                "graph_id": rec.graph_id, "reason": why,
            })),
        }
    }
    Ok(json!({
        "tenant": tenant,
        "mailbox": mailbox.to_ascii_lowercase(),
        "since": since,
        "dry_run": dry_run,
        "writes": done.iter().map(|u| u.writes).sum::<usize>(),
        "undone": done,
        "refused": refused,
    }))
}
