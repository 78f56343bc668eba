//! Undo of sync writes through the admin API (issue 16), on both back ends: each write is taken
//! back with one write on the side it wrote, its echo changes nothing, a newer edit is never
//! overwritten, and a mailbox's burst of writes is undone newest first.

#[allow(dead_code)]
mod support;

use crm_graph_connector::demo::{ADMIN_TOKEN, Harness, MAILBOX};
use crm_graph_connector::run::Roles;
use serde_json::{Value, json};
use support::*;

async fn post(h: &Harness, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", h.admin_url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The newest audit record of a sync write on `side` to `field` (cause not an undo).
async fn audited(h: &Harness, side: &str, field: &str) -> Value {
    let audit = admin_get(h, "/admin/audit?tenant=contoso&limit=1000").await;
    audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["side"] == side && r["field"] == field && r["cause"] != "undo")
        .cloned()
        .unwrap_or_else(|| panic!("no audit record of {side} {field}: {audit}"))
}

async fn undo(h: &Harness, rec: &Value) -> (u16, Value) {
    let id = rec["id"].as_str().expect("audit records have ids");
    post(h, &format!("/admin/audit/{id}/undo"), json!({})).await
}

/// Whether a pass since the undo was held by it (the undo's echo was seen and changed nothing).
fn echo_held(h: &Harness) -> bool {
    h.app()
        .recent
        .lock()
        .unwrap()
        .iter()
        .any(|(_, reason)| reason.contains("what an operator's undo left"))
}

fn subject(h: &Harness, ev_id: &str) -> Value {
    h.graph.event(MAILBOX, ev_id).unwrap()["subject"].clone()
}

async fn undo_of_an_update_restores_the_written_side_with_one_write(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "U1 review", 2).await;
    // A CRM edit copied to Outlook, undone on Outlook's side.
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "U1 from CRM")]);
    h.settle().await.unwrap();
    assert_eq!(subject(&h, &ev_id), "U1 from CRM");
    let rec = audited(&h, "graph", "subject").await;
    assert_eq!(rec["undo"]["prior"]["subject"], "U1 review", "{rec}");
    let w = Writes::now(&h);
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 200, "{body}");
    h.settle().await.unwrap();
    w.assert(&h, 0, 1, "one Graph write; its echo changes nothing");
    assert!(echo_held(&h), "the echo was seen and held");
    assert_eq!(subject(&h, &ev_id), "U1 review");
    assert_eq!(crm_field(&h, crm_id, "Subject"), "U1 from CRM", "CRM kept");
    // The undo is audited, and the same write is not undone twice.
    let own = admin_get(&h, "/admin/audit?tenant=contoso&limit=1000").await;
    assert!(
        own["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["cause"] == "undo" && r["side"] == "graph" && r["after"] == "U1 review"),
        "{own}"
    );
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 409, "{body}");

    // An Outlook edit copied to CRM, undone on CRM's side.
    h.graph.user_update_event(
        MAILBOX,
        &ev_id,
        json!({"location": {"displayName": "Room 9"}}),
    );
    h.settle().await.unwrap();
    assert_eq!(crm_field(&h, crm_id, "A031Location"), "Room 9");
    let rec = audited(&h, "crm", "location").await;
    let w = Writes::now(&h);
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 200, "{body}");
    h.settle().await.unwrap();
    w.assert(&h, 1, 0, "one CRM write; its echo changes nothing");
    assert_eq!(crm_field(&h, crm_id, "A031Location"), "Room 1");
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["location"]["displayName"],
        "Room 9",
        "Outlook kept"
    );
    h.stop().await;
}

async fn undo_of_a_create_removes_what_it_made_with_one_write(b: Backend) {
    let h = start(b).await;
    // A CRM appointment became an Outlook event: the undo deletes the event.
    let (crm_id, ev_id) = crm_appointment(&h, "U2 visit", 2).await;
    let rec = audited(&h, "graph", "subject").await;
    assert_eq!(rec["undo"]["op"], "create", "{rec}");
    let w = Writes::now(&h);
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 200, "{body}");
    h.settle().await.unwrap();
    w.assert(&h, 0, 1, "one Graph delete; nothing re-created");
    assert!(h.graph.event(MAILBOX, &ev_id).is_none());
    assert_eq!(crm_field(&h, crm_id, "Subject"), "U2 visit", "CRM kept");

    // An Outlook event became a CRM record: the undo marks the record deleted.
    let ev = h
        .graph
        .user_create_event(MAILBOX, outlook_event(3, "U2 from Outlook"));
    h.settle().await.unwrap();
    let made = crm_records_with_subject(&h, "U2 from Outlook");
    assert_eq!(made.len(), 1);
    let rec = audited(&h, "crm", "subject").await;
    let w = Writes::now(&h);
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 200, "{body}");
    h.settle().await.unwrap();
    w.assert(&h, 1, 0, "one CRM write (ConnectorDeleted); nothing else");
    assert_eq!(crm_field(&h, made[0].id, "ConnectorDeleted"), "true");
    assert!(h.graph.event(MAILBOX, ev["id"].as_str().unwrap()).is_some());
    h.stop().await;
}

async fn undo_of_a_delete_restores_the_item_with_one_write(b: Backend) {
    let h = start(b).await;
    // Deleted in CRM, so removed from Outlook: the undo re-creates and re-links the event.
    let (crm_id, ev_id) = crm_appointment(&h, "U3 future", 2).await;
    h.crm.user_delete("Contact", crm_id);
    h.settle().await.unwrap();
    assert!(h.graph.event(MAILBOX, &ev_id).is_none());
    let rec = audited(&h, "graph", "deleted").await;
    let w = Writes::now(&h);
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 200, "{body}");
    h.settle().await.unwrap();
    w.assert(&h, 0, 1, "one Graph create; its echo deletes nothing");
    let back: Vec<Value> = h
        .graph
        .events(MAILBOX)
        .into_iter()
        .filter(|e| e["subject"] == "U3 future")
        .collect();
    assert_eq!(back.len(), 1, "re-created once");
    let link = h
        .app()
        .state
        .link_by_crm("contoso", cgc_core::Entity::Appointment, MAILBOX, crm_id)
        .await
        .unwrap()
        .expect("linked again");
    assert_eq!(link.graph_id, back[0]["id"].as_str().unwrap());

    // Deleted by its organizer in Outlook, so marked deleted in CRM: the undo clears the mark.
    let (crm_id, ev_id) = crm_appointment(&h, "U3 organizer", 3).await;
    h.graph.user_delete_event(MAILBOX, &ev_id);
    h.settle().await.unwrap();
    assert_eq!(crm_field(&h, crm_id, "ConnectorDeleted"), "true");
    let rec = audited(&h, "crm", "deleted").await;
    let w = Writes::now(&h);
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 200, "{body}");
    h.settle().await.unwrap();
    w.assert(&h, 1, 0, "one CRM write; nothing re-created in Outlook");
    assert_ne!(crm_field(&h, crm_id, "ConnectorDeleted"), "true");
    h.stop().await;
}

async fn undo_refuses_after_a_newer_user_edit(b: Backend) {
    let mut h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "U4 review", 2).await;
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "U4 from CRM")]);
    h.settle().await.unwrap();
    let rec = audited(&h, "graph", "subject").await;
    // Bad requests name what is wrong; a dry run writes nothing.
    let w = Writes::now(&h);
    let (status, _) = post(&h, "/admin/audit/au-nope/undo", json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = post(
        &h,
        "/admin/undo",
        json!({"tenant": "contoso", "mailbox": MAILBOX, "since": "yesterday"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("since"), "{body}");
    let id = rec["id"].as_str().unwrap();
    let (status, body) = post(
        &h,
        &format!("/admin/audit/{id}/undo"),
        json!({"dry_run": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["undone"]["writes"], 0, "{body}");
    w.assert(&h, 0, 0, "a dry run writes nothing");
    // The user edits the event before any worker saw it (no worker runs): the item changed
    // since the audited write, so the undo refuses and writes nothing.
    h.restart(
        2,
        Roles {
            worker: false,
            ..Roles::ALL
        },
    )
    .await
    .unwrap();
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "U4 from Outlook"}));
    let w = Writes::now(&h);
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("changed since")),
        "{body}"
    );
    w.assert(&h, 0, 0, "nothing written");
    // Once the edit is synced, the older write is behind a newer one and still refused.
    h.restart(2, Roles::ALL).await.unwrap();
    h.wait_subscribed().await.unwrap();
    h.settle().await.unwrap();
    assert_eq!(crm_field(&h, crm_id, "Subject"), "U4 from Outlook");
    let (status, body) = undo(&h, &rec).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        subject(&h, &ev_id),
        "U4 from Outlook",
        "the user's edit kept"
    );
    h.stop().await;
}

async fn mailbox_undo_reverts_a_burst_of_twenty_writes_newest_first(b: Backend) {
    let h = start(b).await;
    let since = chrono::Utc::now();
    let pairs = linked_appointments(&h, "U5 burst", 20).await;
    let ask = |dry: bool| json!({"tenant": "contoso", "mailbox": MAILBOX, "since": since.to_rfc3339(), "dry_run": dry});
    let w = Writes::now(&h);
    let (status, plan) = post(&h, "/admin/undo", ask(true)).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["undone"].as_array().unwrap().len(), 20, "{plan}");
    assert_eq!(plan["writes"], 0);
    w.assert(&h, 0, 0, "a dry run writes nothing");
    let (status, done) = post(&h, "/admin/undo", ask(false)).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["undone"].as_array().unwrap().len(), 20, "{done}");
    assert_eq!(done["refused"].as_array().unwrap().len(), 0, "{done}");
    let ats: Vec<&str> = done["undone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["audit_id"].as_str().unwrap())
        .collect();
    assert_eq!(ats.len(), 20);
    h.settle().await.unwrap();
    w.assert(
        &h,
        0,
        20,
        "one Graph delete per write; echoes change nothing",
    );
    for (crm_id, ev_id) in &pairs {
        assert!(h.graph.event(MAILBOX, ev_id).is_none(), "{ev_id} removed");
        assert!(h.crm.record("Contact", *crm_id).is_some(), "CRM kept");
    }
    // Nothing is left to undo.
    let (_, again) = post(&h, "/admin/undo", ask(true)).await;
    assert_eq!(again["undone"].as_array().unwrap().len(), 0, "{again}");
    h.stop().await;
}

each_backend!(
    undo_of_an_update_restores_the_written_side_with_one_write,
    undo_of_a_create_removes_what_it_made_with_one_write,
    undo_of_a_delete_restores_the_item_with_one_write,
    undo_refuses_after_a_newer_user_edit,
    mailbox_undo_reverts_a_burst_of_twenty_writes_newest_first,
);
