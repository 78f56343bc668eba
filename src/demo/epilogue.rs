//! The demo's last two steps (issue 16): the plan of one more change (a shorter window), shown
//! before anything is written, and the undo of one sync write.

use std::time::Duration;

use anyhow::Context;
use cgc_core::{Cause, Entity, Side};

use super::harness::{Harness, MAILBOX, REP_ID, TENANT, crm_slot, wait_for};
use crate::config::Config;
use crate::plan::PlanOptions;

/// Step 6: a new pair, then the plan of shortening the window to 3 days (its unlink), with
/// nothing written. Step 7: the organizer's delete of step 5 undone in CRM with one write.
/// `crm_id`: the record of the story's deleted event. True when both ended as expected.
pub(super) async fn plan_and_undo(h: &Harness, crm_id: u64) -> anyhow::Result<bool> {
    println!("6. Plan of one more change: the window's future shrinks from 90 to 3 days.");
    let (date, time) = crm_slot(5, 9);
    h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "Planning session"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "10:00"),
            ("RepID", REP_ID),
        ],
    );
    wait_for("the new event", Duration::from_secs(20), || async {
        h.graph
            .events(MAILBOX)
            .iter()
            .any(|e| e["subject"] == "Planning session")
    })
    .await?;
    h.settle().await?;
    let old = Config::parse(&h.config_text, &|_| None)?;
    let new = Config::parse(
        &h.config_text
            .replacen("future_days = 90", "future_days = 3", 1),
        &|_| None,
    )?;
    let (cw, gw) = (h.crm.write_log().len(), h.graph.app_writes(MAILBOX));
    let opts = PlanOptions {
        entity: Some(Entity::Appointment),
        ..PlanOptions::default()
    };
    let app = h.app().clone();
    let compared =
        crate::plan::plan_against_over(new, old, &opts, app.state.store().clone()).await?;
    for line in compared.to_text().lines() {
        println!("   {line}");
    }
    let written = (h.crm.write_log().len() - cw) + (h.graph.app_writes(MAILBOX) - gw) as usize;
    println!(
        "  -> plan: {} unlink(s); writes anywhere: {written}\n",
        compared.against.unlinks
    );
    let planned = compared.against.unlinks == 1 && written == 0;

    println!("7. Undo of one sync write: the deletion mark step 5 set in CRM.");
    let audit = app.state.audit_tail(TENANT, 1000).await?;
    let rec = audit
        .iter()
        .find(|r| {
            r.crm_id == Some(crm_id)
                && r.entry.side == Side::Crm
                && r.entry.field == "deleted"
                && r.entry.cause != Cause::Undo
        })
        .context("the audit record of the deletion mark")?;
    let (cw, gw) = (h.crm.write_log().len(), h.graph.app_writes(MAILBOX));
    let undone = crate::undo::undo_one(&app, &rec.id, "demo", false)
        .await
        .map_err(|e| anyhow::anyhow!("undo refused: {e:?}"))?;
    h.settle().await?;
    let mark = h
        .crm
        .record("Contact", crm_id)
        .and_then(|r| r.fields.get("ConnectorDeleted").cloned())
        .unwrap_or_default();
    let (crm_w, graph_w) = (
        h.crm.write_log().len() - cw,
        h.graph.app_writes(MAILBOX) - gw,
    );
    println!("   POST /admin/audit/{}/undo: {}", rec.id, undone.action);
    println!("   CRM ConnectorDeleted now: {mark:?}; the echo of the undo changed nothing");
    println!("  -> writes to CRM: {crm_w}, writes to Outlook: {graph_w}\n");
    Ok(planned && mark != "true" && (crm_w, graph_w) == (1, 0))
}
