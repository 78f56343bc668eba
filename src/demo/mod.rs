//! `demo`: both simulators and the connector in one process, on a scripted story, printing what
//! happened on each side and why. The story runs on [`Harness`] (in `harness`, re-exported here),
//! which the integration tests build on too.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::context::App;
use crate::telemetry::metric;

mod epilogue;
mod harness;

pub use harness::{
    ADMIN_TOKEN, Harness, HarnessOptions, MAILBOX, REP_ID, TENANT, crm_slot, fast_tuning, wait_for,
};

fn counts(app: &App) -> Vec<(&'static str, u64)> {
    [
        "noop",
        "copy_to_graph",
        "copy_to_crm",
        "merge",
        "conflict",
        "create",
        "delete",
        "unlink",
        "duplicate",
    ]
    .into_iter()
    .map(|k| (k, app.metrics.get(metric::EVENTS, &[("outcome", k)])))
    .collect()
}

fn describe(before: &[(&'static str, u64)], after: &[(&'static str, u64)]) -> String {
    let parts: Vec<String> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.1 > b.1)
        .map(|(b, a)| format!("{} x{}", b.0.replace('_', "-"), a.1 - b.1))
        .collect();
    if parts.is_empty() {
        "nothing to do".into()
    } else {
        parts.join(", ")
    }
}

/// The scripted story.
pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "crm-graph-connector demo: Graph and CRM.interface simulators + the connector, in one process\n"
    );
    let h = Harness::start(HarnessOptions::default()).await?;
    h.wait_subscribed().await?;
    h.settle().await?;
    let app = h.app().clone();
    let crm_writes = || h.crm.write_log().len();
    let graph_writes = || h.graph.app_writes(MAILBOX);

    let seen = std::cell::Cell::new(app.recent.lock().map(|r| r.len()).unwrap_or(0));
    let report = |title: &str, before: &[(&'static str, u64)], cw: usize, gw: u64| {
        let _ = title;
        // Why: the distinct reasons the core gave for this step's plans.
        let recent: Vec<(String, String)> = app
            .recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let mut reasons: Vec<String> = Vec::new();
        for (kind, reason) in recent.iter().skip(seen.get().min(recent.len())) {
            let line = format!("{}: {reason}", kind.replace('_', "-"));
            if !reasons.contains(&line) {
                reasons.push(line);
            }
        }
        seen.set(recent.len());
        for r in reasons {
            println!("   why: {r}");
        }
        let after = counts(&app);
        println!(
            "  -> connector: {}; writes to CRM: {}, writes to Outlook: {}",
            describe(before, &after),
            h.crm.write_log().len() - cw,
            h.graph.app_writes(MAILBOX) - gw
        );
        println!();
    };

    // 1. A rep creates an appointment in CRM.
    println!(
        "1. A rep creates an appointment in CRM: \"Quarterly review\" in 2 days, 10:00-11:00."
    );
    let (b, cw, gw) = (counts(&app), crm_writes(), graph_writes());
    let (date, time) = crm_slot(2, 10);
    let crm_id = h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "Quarterly review"),
            ("Text", "Agenda: numbers"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "11:00"),
            ("RepID", REP_ID),
            ("A031Location", "Room 1"),
        ],
    );
    wait_for("the event in Outlook", Duration::from_secs(20), || async {
        !h.graph.events(MAILBOX).is_empty()
    })
    .await?;
    h.settle().await?;
    let ev = h
        .graph
        .events(MAILBOX)
        .into_iter()
        .next()
        .context("event created")?;
    let ev_id = ev["id"].as_str().unwrap_or_default().to_string();
    println!(
        "   Outlook now has: subject {}, location {}",
        ev["subject"], ev["location"]["displayName"]
    );
    report("create", &b, cw, gw);

    // 2. CRM edit, then the event is merely opened twice in Outlook.
    println!(
        "2. The rep edits the text in CRM; right after, the event is merely OPENED twice in Outlook"
    );
    println!(
        "   (Exchange bumps changeKey and lastModifiedDateTime; the content does not change)."
    );
    let (b, cw, gw) = (counts(&app), crm_writes(), graph_writes());
    h.crm.user_update(
        "Contact",
        crm_id,
        &[("Text", "Agenda: numbers, hiring plan")],
    );
    h.graph.user_touch_event(MAILBOX, &ev_id);
    h.graph.user_touch_event(MAILBOX, &ev_id);
    h.settle().await?;
    let ev = h
        .graph
        .event(MAILBOX, &ev_id)
        .context("event still there")?;
    let crm_text = h
        .crm
        .record("Contact", crm_id)
        .and_then(|r| r.fields.get("Text").cloned())
        .unwrap_or_default();
    let outlook_text = ev["body"]["content"]
        .as_str()
        .and_then(cgc_core::model::normalize::html_to_text)
        .unwrap_or_default();
    println!("   CRM text: {crm_text:?}; Outlook body (as text): {outlook_text:?}");
    let kept = crm_text == "Agenda: numbers, hiring plan" && outlook_text.contains("hiring plan");
    println!(
        "   {} the opened-not-edited event did not revert the CRM edit (a timestamp rule would have).",
        if kept { "OK:" } else { "FAILED:" }
    );
    report("touch", &b, cw, gw);

    // 3. Location edited in Outlook.
    println!("3. Someone changes the location in Outlook to \"Room 2\".");
    let (b, cw, gw) = (counts(&app), crm_writes(), graph_writes());
    h.graph.user_update_event(
        MAILBOX,
        &ev_id,
        json!({"location": {"displayName": "Room 2"}}),
    );
    h.settle().await?;
    let loc = h
        .crm
        .record("Contact", crm_id)
        .and_then(|r| r.fields.get("A031Location").cloned())
        .unwrap_or_default();
    println!("   CRM location now: {loc:?}");
    println!(
        "   (the one write to Outlook is the new agreed state's fingerprint, an extended property: no meeting mail)"
    );
    report("location", &b, cw, gw);

    // 4. Conflicting subject edits.
    println!(
        "4. Conflict: CRM sets the subject to \"Review (CRM)\" while Outlook sets \"Review (Outlook)\"."
    );
    println!("   Tenant policy: conflict = \"crm-wins\".");
    let (b, cw, gw) = (counts(&app), crm_writes(), graph_writes());
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "Review (CRM)")]);
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "Review (Outlook)"}));
    h.settle().await?;
    let ev = h
        .graph
        .event(MAILBOX, &ev_id)
        .context("event still there")?;
    let crm_subject = h
        .crm
        .record("Contact", crm_id)
        .and_then(|r| r.fields.get("Subject").cloned())
        .unwrap_or_default();
    println!(
        "   CRM subject: {crm_subject:?}; Outlook subject: {}",
        ev["subject"]
    );
    report("conflict", &b, cw, gw);

    // 5. Delete in Outlook.
    println!("5. The organizer deletes the event in Outlook.");
    let (b, cw, gw) = (counts(&app), crm_writes(), graph_writes());
    h.graph.user_delete_event(MAILBOX, &ev_id);
    h.settle().await?;
    let rec = h.crm.record("Contact", crm_id);
    println!(
        "   CRM record still there: {}; ConnectorDeleted = {:?} (never a hard delete)",
        rec.as_ref()
            .is_some_and(|r| r.fields.get("DelCd").is_none_or(|d| d != "1")),
        rec.as_ref()
            .and_then(|r| r.fields.get("ConnectorDeleted").cloned())
            .unwrap_or_default()
    );
    report("delete", &b, cw, gw);

    // 6 and 7. The plan of one more change, and the undo of one write.
    let kept = kept && epilogue::plan_and_undo(&h, crm_id).await?;

    // 8. A recurring series with one edited occurrence.
    let (b, cw, gw) = (counts(&app), crm_writes(), graph_writes());
    let series_ok = series_step(&h).await?;
    report("series", &b, cw, gw);

    let m = &app.metrics;
    println!(
        "Summary: {} notifications accepted, {} events processed, {} writes, {} conflicts parked, {} dead letters; {:.1} s.",
        m.get(metric::NOTIFICATIONS, &[("outcome", "accepted")]),
        m.total(metric::EVENTS),
        m.total(metric::WRITES),
        m.total(metric::CONFLICTS),
        app.queue.depth().await.map(|d| d.dead).unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    let ok = kept && series_ok;
    h.stop().await;
    if !ok {
        bail!("the demo story did not end as expected");
    }
    Ok(())
}

/// Step 8: a weekly series of three made in Outlook, then its second meeting moved on its own:
/// one CRM master record and one exception record tied to it; the master is unchanged.
async fn series_step(h: &Harness) -> anyhow::Result<bool> {
    println!(
        "8. A rep makes a weekly series \"Jour fixe\" (3 meetings) in Outlook, then moves the second one to 11:00."
    );
    let first = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive();
    let weekday = format!("{:?}", chrono::Datelike::weekday(&first));
    let day_name = match weekday.as_str() {
        "Mon" => "monday",
        "Tue" => "tuesday",
        "Wed" => "wednesday",
        "Thu" => "thursday",
        "Fri" => "friday",
        "Sat" => "saturday",
        _ => "sunday",
    };
    let zone = "W. Europe Standard Time";
    let master = h.graph.user_create_event(
        MAILBOX,
        json!({"subject": "Jour fixe",
               "start": {"dateTime": format!("{first}T09:00:00"), "timeZone": zone},
               "end": {"dateTime": format!("{first}T09:30:00"), "timeZone": zone},
               "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [day_name]},
                              "range": {"type": "numbered", "startDate": first.to_string(), "numberOfOccurrences": 3}}}),
    );
    let master_id = master["id"].as_str().unwrap_or_default().to_string();
    let subject_is =
        |r: &cgc_crm::Record, s: &str| r.fields.get("Subject").map(String::as_str) == Some(s);
    wait_for("the series in CRM", Duration::from_secs(20), || async {
        h.crm
            .records("Contact")
            .iter()
            .any(|r| subject_is(r, "Jour fixe"))
    })
    .await?;
    h.settle().await?;
    let second = h
        .graph
        .instances(MAILBOX, &master_id)
        .get(1)
        .and_then(|o| o["id"].as_str().map(str::to_string))
        .context("the series has a second meeting")?;
    let day2 = first + chrono::Duration::days(7);
    h.graph.user_update_event(
        MAILBOX,
        &second,
        json!({"subject": "Jour fixe (moved)",
               "start": {"dateTime": format!("{day2}T11:00:00"), "timeZone": zone},
               "end": {"dateTime": format!("{day2}T11:30:00"), "timeZone": zone}}),
    );
    wait_for("the exception in CRM", Duration::from_secs(20), || async {
        h.crm
            .records("Contact")
            .iter()
            .any(|r| subject_is(r, "Jour fixe (moved)"))
    })
    .await?;
    h.settle().await?;
    let records = h.crm.records("Contact");
    let field = |r: &cgc_crm::Record, k: &str| r.fields.get(k).cloned().unwrap_or_default();
    let masters: Vec<_> = records
        .iter()
        .filter(|r| subject_is(r, "Jour fixe"))
        .collect();
    let exceptions: Vec<_> = records
        .iter()
        .filter(|r| subject_is(r, "Jour fixe (moved)"))
        .collect();
    let (Some(m), Some(e)) = (masters.first(), exceptions.first()) else {
        return Ok(false);
    };
    println!(
        "   CRM master: {} on {} {} (IsMasterContact = {}); exception: {} on {} {} (ContactStatNo/SeqNo = {}/{})",
        field(m, "Subject"),
        field(m, "Date"),
        field(m, "Time"),
        field(m, "IsMasterContact"),
        field(e, "Subject"),
        field(e, "Date"),
        field(e, "Time"),
        field(e, "ContactStatNo"),
        field(e, "ContactSeqNo"),
    );
    let tied = field(e, "ContactSeqNo") == (m.id & 0xFFFF_FFFF).to_string()
        && field(e, "ContactStatNo") == (m.id >> 32).to_string();
    let ok = masters.len() == 1
        && exceptions.len() == 1
        && tied
        && field(m, "Date") == first.to_string();
    println!(
        "   {} one master record and one exception record tied to it; plain occurrences made nothing",
        if ok { "OK:" } else { "FAILED:" }
    );
    Ok(ok)
}
