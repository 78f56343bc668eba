//! SCENARIOS.md end to end: the real connector (all roles, embedded queue and store) against the
//! Graph and CRM.interface simulators. Each test is named after its scenario and asserts the end
//! state on both sides and the number of writes.

use std::time::Duration;

use crm_graph_connector::demo::{Harness, HarnessOptions, MAILBOX, REP_ID, crm_slot, wait_for};
use serde_json::{Value, json};

mod support;
use support::{
    Backend, ChaosProxy, Child, Writes, admin_get, body_text, child_config, conflict_case,
    crm_appointment, crm_field, crm_records_with_subject, dead_letter_count, extkey_rows,
    futures_depth, linked_appointments, lose_store, outlook_event, restart_after_loss, scaled,
    second_instance, spawn_connector, start, start_with,
};

async fn a1_crm_appointment_appears_in_calendar_linked(b: Backend) {
    let h = start(b).await;
    let w = Writes::now(&h);
    let (crm_id, ev_id) = crm_appointment(&h, "A1 review", 3).await;
    w.assert(
        &h,
        1,
        1,
        "one event created (CRM id inline), one ExtKey row",
    );
    let ev = h.graph.event(MAILBOX, &ev_id).unwrap();
    assert_eq!(ev["location"]["displayName"], "Room 1");
    // Linked on both systems: the CRM id on the event, the ExtKey row in CRM.
    let props = ev["singleValueExtendedProperties"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        props.iter().any(|p| p["value"] == crm_id.to_string()),
        "event carries the CRM id: {props:?}"
    );
    let links: Vec<_> = h
        .crm
        .records("ExtKey")
        .into_iter()
        .filter(|r| r.fields.get("ExtKey").map(String::as_str) == Some(ev_id.as_str()))
        .collect();
    assert_eq!(links.len(), 1, "one ExtKey row");
    assert_eq!(h.graph.events(MAILBOX).len(), 1, "exactly one event");
    h.stop().await;
}

async fn a2_outlook_event_appears_in_crm_with_resolved_attendees(b: Backend) {
    let h = start(b).await;
    let w = Writes::now(&h);
    h.graph
        .user_create_event(MAILBOX, outlook_event(4, "A2 kickoff"));
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "A2 kickoff").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let recs = crm_records_with_subject(&h, "A2 kickoff");
    assert_eq!(recs.len(), 1, "one CRM record");
    let f = &recs[0].fields;
    assert_eq!(f.get("Contact").map(String::as_str), Some("Meeting"));
    assert_eq!(f.get("A031Location").map(String::as_str), Some("Room 7"));
    assert!(
        f.get("Participants")
            .is_some_and(|p| p.contains("ana@customer.test")),
        "{f:?}"
    );
    assert!(
        f.get("MissingParticipants")
            .is_some_and(|p| p.contains("stranger@elsewhere.test")),
        "{f:?}"
    );
    assert_eq!(
        f.get("ConnectorMissingparticipants").map(String::as_str),
        Some("true")
    );
    assert_eq!(f.get("Text").map(String::as_str), Some("Hello team"));
    w.assert(
        &h,
        2,
        1,
        "record + ExtKey in one request; the CRM id stamped on the event",
    );
    h.stop().await;
}

async fn a3_opened_not_edited_keeps_crm_edit(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "A3 review", 2).await;
    let crm_writes = h.crm.write_log().len();
    h.crm
        .user_update("Contact", crm_id, &[("Text", "edited in CRM")]);
    // Opened twice in Outlook right after: changeKey and lastModifiedDateTime move, content not.
    h.graph.user_touch_event(MAILBOX, &ev_id);
    h.graph.user_touch_event(MAILBOX, &ev_id);
    h.settle().await.unwrap();
    assert_eq!(
        crm_field(&h, crm_id, "Text"),
        "edited in CRM",
        "the CRM edit survives"
    );
    let ev = h.graph.event(MAILBOX, &ev_id).unwrap();
    assert_eq!(body_text(&ev).as_deref(), Some("edited in CRM"));
    // Repeated touches cause no CRM write at all.
    for _ in 0..5 {
        h.graph.user_touch_event(MAILBOX, &ev_id);
    }
    h.settle().await.unwrap();
    assert_eq!(
        h.crm.write_log().len(),
        crm_writes,
        "touches wrote nothing to CRM"
    );
    h.stop().await;
}

async fn a4_subject_in_crm_and_location_in_outlook_both_survive(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "A4 review", 2).await;
    let w = Writes::now(&h);
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "A4 review (moved)")]);
    h.graph.user_update_event(
        MAILBOX,
        &ev_id,
        json!({"location": {"displayName": "Room 9"}}),
    );
    h.settle().await.unwrap();
    let ev = h.graph.event(MAILBOX, &ev_id).unwrap();
    assert_eq!(ev["subject"], "A4 review (moved)");
    assert_eq!(ev["location"]["displayName"], "Room 9");
    assert_eq!(crm_field(&h, crm_id, "Subject"), "A4 review (moved)");
    assert_eq!(crm_field(&h, crm_id, "A031Location"), "Room 9");
    w.assert(&h, 1, 1, "each side written once");
    h.stop().await;
}

async fn a5_conflict_crm_wins(b: Backend) {
    let (h, crm_id, ev_id) = conflict_case(b, "crm-wins").await;
    assert_eq!(crm_field(&h, crm_id, "Subject"), "A5 from CRM");
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "A5 from CRM"
    );
    h.stop().await;
}

async fn a5_conflict_graph_wins(b: Backend) {
    let (h, crm_id, ev_id) = conflict_case(b, "graph-wins").await;
    assert_eq!(crm_field(&h, crm_id, "Subject"), "A5 from Outlook");
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "A5 from Outlook"
    );
    h.stop().await;
}

async fn a5_conflict_latest_change_wins(b: Backend) {
    // CRM edits first, Outlook a moment later: the later content change wins on both sides.
    let (h, crm_id, ev_id) = conflict_case(b, "latest-change-wins").await;
    assert_eq!(crm_field(&h, crm_id, "Subject"), "A5 from Outlook");
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "A5 from Outlook"
    );
    h.stop().await;
}

async fn a5_conflict_manual_is_listed_and_resolved_through_admin_api(b: Backend) {
    let (h, crm_id, ev_id) = conflict_case(b, "manual").await;
    // Both sides stay as they are.
    assert_eq!(crm_field(&h, crm_id, "Subject"), "A5 from CRM");
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "A5 from Outlook"
    );
    let client = reqwest::Client::new();
    let url = format!("{}/admin/conflicts", h.admin_url());
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        401,
        "no token → 401"
    );
    let list: Value = client
        .get(&url)
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conflicts = list["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{list}");
    let c = &conflicts[0];
    assert_eq!(c["entity"], "appointment");
    assert_eq!(c["mailbox"], MAILBOX);
    assert_eq!(c["crm_id"], crm_id.to_string());
    assert_eq!(c["graph_id"], ev_id);
    let subject = c["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "subject")
        .expect("subject field");
    assert_eq!(subject["crm"], "A5 from CRM");
    assert_eq!(subject["graph"], "A5 from Outlook");
    assert_eq!(subject["base"], "A5 review");
    let id = c["id"].as_str().unwrap();
    let resolve = format!("{}/admin/conflicts/{id}/resolve", h.admin_url());
    // A field the conflict does not hold → 400; unknown id → 404.
    let r = client
        .post(&resolve)
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .json(&json!({"values": {"location": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(format!("{}/admin/conflicts/nope/resolve", h.admin_url()))
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .json(&json!({"take": "crm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A third value reaches both sides, with exactly one write on each; the echoes are no-ops.
    let w = Writes::now(&h);
    let r = client
        .post(&resolve)
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .json(&json!({"values": {"subject": "A5 agreed"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    h.settle().await.unwrap();
    w.assert(&h, 1, 1, "manual resolution: one write per side");
    assert_eq!(crm_field(&h, crm_id, "Subject"), "A5 agreed");
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "A5 agreed"
    );
    let list: Value = client
        .get(&url)
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["conflicts"].as_array().unwrap().len(),
        0,
        "conflict left the list"
    );
    // The audit trail records who resolved it, and how (one entry per side written).
    let audit: Value = client
        .get(format!("{}/admin/audit?tenant=contoso", h.admin_url()))
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resolved: Vec<&Value> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resolved_by"] == "admin-api")
        .collect();
    assert_eq!(resolved.len(), 2, "{audit}");
    assert!(resolved.iter().all(|e| e["field"] == "subject"
        && e["after"] == "A5 agreed"
        && e["cause"] == "conflict-resolution"));
    h.stop().await;
}

async fn a6_one_user_edit_causes_exactly_one_write(b: Backend) {
    let h = start(b).await;
    let (_crm_id, ev_id) = crm_appointment(&h, "A6 review", 2).await;
    let crm_before = h.crm.write_log().len();
    let graph_before = h.graph.app_writes(MAILBOX);
    let requests_before = h.graph.requests().len();
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "A6 renamed"}));
    h.settle().await.unwrap();
    assert_eq!(h.crm.write_log().len() - crm_before, 1, "one CRM write");
    // No content goes back to Outlook: the one Graph write is the new agreed state's fingerprint
    // (an extended property alone, which sends no meeting mail: expected-behaviour.md 38, 39).
    assert_eq!(
        h.graph.app_writes(MAILBOX) - graph_before,
        1,
        "only the sync-state property is written back"
    );
    let writes: Vec<Value> = h.graph.requests()[requests_before..]
        .iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| r.body.clone())
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let keys: Vec<&String> = writes[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["singleValueExtendedProperties"], "{writes:?}");
    assert!(
        writes[0]["singleValueExtendedProperties"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] == cgc_graph::SYNC_STATE_PROPERTY),
        "{writes:?}"
    );
    h.stop().await;
}

async fn a7_organizer_delete_sets_connector_deleted(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "A7 review", 2).await;
    let w = Writes::now(&h);
    h.graph.user_delete_event(MAILBOX, &ev_id);
    h.settle().await.unwrap();
    w.assert(&h, 1, 0, "one update setting ConnectorDeleted");
    let rec = h.crm.record("Contact", crm_id).expect("record kept");
    assert_ne!(
        rec.fields.get("DelCd").map(String::as_str),
        Some("1"),
        "no hard delete"
    );
    assert_eq!(
        rec.fields.get("ConnectorDeleted").map(String::as_str),
        Some("true")
    );
    h.stop().await;
}

async fn a7_crm_delete_removes_future_event(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "A7 future", 2).await;
    let w = Writes::now(&h);
    h.crm.user_delete("Contact", crm_id);
    h.settle().await.unwrap();
    w.assert(&h, 0, 1, "one Graph delete");
    assert!(
        h.graph.event(MAILBOX, &ev_id).is_none(),
        "future event removed"
    );
    h.stop().await;
}

async fn a7_crm_delete_leaves_past_event(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "A7 past", -2).await;
    let w = Writes::now(&h);
    h.crm.user_delete("Contact", crm_id);
    h.settle().await.unwrap();
    w.assert(&h, 0, 0, "a past event is left alone");
    assert!(h.graph.event(MAILBOX, &ev_id).is_some(), "past event stays");
    h.stop().await;
}

async fn a7_attendee_delete_only_unlinks(b: Backend) {
    let h = start(b).await;
    let mut ev = outlook_event(3, "A7 invite");
    ev["isOrganizer"] = json!(false);
    ev["organizer"] = json!({"emailAddress": {"address": "boss@partner.test", "name": "Boss"}});
    let created = h.graph.user_create_event(MAILBOX, ev);
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "A7 invite").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    h.graph
        .user_delete_event(MAILBOX, created["id"].as_str().unwrap());
    h.settle().await.unwrap();
    let recs = crm_records_with_subject(&h, "A7 invite");
    assert_eq!(recs.len(), 1);
    assert_ne!(
        recs[0].fields.get("ConnectorDeleted").map(String::as_str),
        Some("true"),
        "an attendee's delete does not mark the CRM record"
    );
    h.stop().await;
}

async fn a8_event_moved_outside_window_is_unlinked_not_deleted(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "A8 review", 2).await;
    let w = Writes::now(&h);
    let far = (chrono::Utc::now() + chrono::Duration::days(400)).date_naive();
    h.graph.user_update_event(
        MAILBOX,
        &ev_id,
        json!({"start": {"dateTime": format!("{far}T09:00:00"), "timeZone": "UTC"},
               "end": {"dateTime": format!("{far}T10:00:00"), "timeZone": "UTC"}}),
    );
    h.settle().await.unwrap();
    let rec = h.crm.record("Contact", crm_id).unwrap();
    assert_ne!(rec.fields.get("DelCd").map(String::as_str), Some("1"));
    assert_ne!(
        rec.fields.get("ConnectorDeleted").map(String::as_str),
        Some("true")
    );
    assert!(
        h.graph.event(MAILBOX, &ev_id).is_some(),
        "event not deleted"
    );
    // Unlinked: a later CRM edit no longer reaches the event.
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "A8 after unlink")]);
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "A8 review"
    );
    w.assert(&h, 0, 0, "unlinking writes nothing");
    h.stop().await;
}

async fn a10_all_day_event_keeps_its_days(b: Backend) {
    let h = start(b).await;
    let d1 = (chrono::Utc::now() + chrono::Duration::days(5)).date_naive();
    let d3 = d1 + chrono::Duration::days(2);
    let w = Writes::now(&h);
    h.graph.user_create_event(
        MAILBOX,
        json!({"subject": "A10 offsite", "isAllDay": true,
               "start": {"dateTime": format!("{d1}T00:00:00"), "timeZone": "UTC"},
               "end": {"dateTime": format!("{}T00:00:00", d3 + chrono::Duration::days(1)), "timeZone": "UTC"}}),
    );
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "A10 offsite").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let r = &crm_records_with_subject(&h, "A10 offsite")[0];
    assert_eq!(
        r.fields.get("Date").map(String::as_str),
        Some(d1.to_string().as_str())
    );
    assert_eq!(
        r.fields.get("EndDate").map(String::as_str),
        Some(d3.to_string().as_str()),
        "EndDate inclusive"
    );
    assert_eq!(r.fields.get("Time").map(String::as_str).unwrap_or(""), "");
    assert_eq!(
        r.fields.get("EndTime").map(String::as_str).unwrap_or(""),
        ""
    );
    w.assert(&h, 2, 1, "record + ExtKey; the CRM id stamped on the event");
    h.stop().await;
}

async fn a12_excluded_fields_never_travel(b: Backend) {
    let h = start_with(HarnessOptions {
        appointments_toml: "exclude_fields = [\"location\"]".into(),
        ..b.options()
    })
    .await;
    let (crm_id, ev_id) = crm_appointment(&h, "A12 review", 2).await;
    let w = Writes::now(&h);
    let ev = h.graph.event(MAILBOX, &ev_id).unwrap();
    let loc = ev["location"]["displayName"].as_str().unwrap_or("");
    assert_eq!(loc, "", "CRM location did not travel to Outlook");
    h.graph.user_update_event(
        MAILBOX,
        &ev_id,
        json!({"location": {"displayName": "Room 5"}}),
    );
    h.crm
        .user_update("Contact", crm_id, &[("Text", "still synced")]);
    h.settle().await.unwrap();
    assert_eq!(
        crm_field(&h, crm_id, "A031Location"),
        "Room 1",
        "Outlook location did not travel to CRM"
    );
    let ev = h.graph.event(MAILBOX, &ev_id).unwrap();
    assert_eq!(ev["location"]["displayName"], "Room 5");
    assert_eq!(
        body_text(&ev).as_deref(),
        Some("still synced"),
        "other fields still travel"
    );
    w.assert(
        &h,
        0,
        1,
        "only the body reached Outlook; the location edit wrote nothing",
    );
    h.stop().await;
}

async fn p1_validation_handshake_answers_plain_token(b: Backend) {
    let h = start(b).await;
    let r = reqwest::Client::new()
        .post(format!(
            "{}/notifications?validationToken=a%20b%3Cc%3E",
            h.receiver_url()
        ))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "a b<c>");
    h.stop().await;
}

async fn p2_wrong_client_state_is_not_processed(b: Backend) {
    let h = start(b).await;
    let sub = h
        .app()
        .state
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let body = json!({"value": [{
        "subscriptionId": sub.id, "clientState": "wrong-secret", "changeType": "created",
        "resource": format!("Users/{MAILBOX}/Events/AAMkFAKE"), "tenantId": "t",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "AAMkFAKE", "@odata.etag": "W/\"x\""}
    }]});
    let r = reqwest::Client::new()
        .post(format!("{}/notifications", h.receiver_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let m = &h.app().metrics;
    assert_eq!(
        m.get(
            "notifications_total",
            &[("outcome", "client_state_mismatch")]
        ),
        1
    );
    let d = h.app().queue.depth().await.unwrap();
    assert_eq!(d.ready + d.in_flight + d.delayed, 0, "nothing queued");
    // Malformed body → 400, never a panic.
    let r = reqwest::Client::new()
        .post(format!("{}/notifications", h.receiver_url()))
        .header("content-type", "application/json")
        .body("{\"value\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    h.stop().await;
}

async fn p3_duplicate_and_created_updated_deliveries_make_one_write(b: Backend) {
    let h = start(b).await;
    h.graph.duplicate_deliveries(5);
    h.graph.created_plus_updated(true);
    let crm_before = h.crm.write_log().len();
    h.graph
        .user_create_event(MAILBOX, outlook_event(3, "P3 once"));
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "P3 once").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        crm_records_with_subject(&h, "P3 once").len(),
        1,
        "one record"
    );
    let writes: Vec<_> = h.crm.write_log().into_iter().skip(crm_before).collect();
    let by_table = |t: &str| writes.iter().filter(|w| w.table == t).count();
    assert_eq!(by_table("Contact"), 1, "one Contact write: {writes:?}");
    assert_eq!(
        by_table("ExtKey"),
        1,
        "one link row, in the same request: {writes:?}"
    );
    assert_eq!(writes.len(), 2, "nothing else written: {writes:?}");
    h.stop().await;
}

async fn p4_missed_triggers_delta_catch_up(b: Backend) {
    let h = start(b).await;
    h.graph.drop_notifications(1);
    h.graph
        .user_create_event(MAILBOX, outlook_event(3, "P4 missed"));
    h.settle().await.unwrap();
    assert!(
        crm_records_with_subject(&h, "P4 missed").is_empty(),
        "notification was lost"
    );
    let sub = h
        .graph
        .subscriptions()
        .into_iter()
        .find(|s| {
            s["resource"]
                .as_str()
                .is_some_and(|r| r.ends_with("/events"))
        })
        .unwrap();
    h.graph
        .send_lifecycle(sub["id"].as_str().unwrap(), "missed");
    let r = wait_for(
        "the CRM record after catch-up",
        Duration::from_secs(20),
        || async { !crm_records_with_subject(&h, "P4 missed").is_empty() },
    )
    .await;
    if r.is_err() {
        eprintln!(
            "DEAD {:?}",
            h.app()
                .queue
                .dead_letters()
                .await
                .unwrap()
                .iter()
                .map(|d| d.reason.clone())
                .collect::<Vec<_>>()
        );
    }
    r.unwrap();
    h.settle().await.unwrap();
    assert_eq!(crm_records_with_subject(&h, "P4 missed").len(), 1);
    h.stop().await;
}

async fn p4_subscription_removed_is_recreated(b: Backend) {
    let h = start(b).await;
    let sub = h
        .graph
        .subscriptions()
        .into_iter()
        .find(|s| {
            s["resource"]
                .as_str()
                .is_some_and(|r| r.ends_with("/events"))
        })
        .unwrap();
    let old = sub["id"].as_str().unwrap().to_string();
    h.graph.send_lifecycle(&old, "subscriptionRemoved");
    let r = wait_for(
        "a new events subscription",
        Duration::from_secs(20),
        || async {
            h.graph.subscriptions().iter().any(|s| {
                s["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/events"))
                    && s["id"].as_str() != Some(&old)
            })
        },
    )
    .await;
    if r.is_err() {
        eprintln!(
            "DEAD {:?}\n{}\n{:?}",
            h.app()
                .queue
                .dead_letters()
                .await
                .unwrap()
                .iter()
                .map(|d| d.reason.clone())
                .collect::<Vec<_>>(),
            h.app().metrics.render(),
            h.graph.deliveries()
        );
    }
    r.unwrap();
    h.settle().await.unwrap();
    h.graph
        .user_create_event(MAILBOX, outlook_event(3, "P4 after recreate"));
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "P4 after recreate").is_empty()
    })
    .await
    .unwrap();
    h.stop().await;
}

async fn p5_throttling_is_honoured_and_converges(b: Backend) {
    let h = start(b).await;
    h.graph.throttle_next(3, 1);
    h.graph
        .user_create_event(MAILBOX, outlook_event(3, "P5 throttled"));
    wait_for("the CRM record", Duration::from_secs(30), || async {
        !crm_records_with_subject(&h, "P5 throttled").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(crm_records_with_subject(&h, "P5 throttled").len(), 1);
    assert!(h.graph.max_concurrency_seen(MAILBOX) <= 4);
    h.stop().await;
}

async fn p6_crm_locked_and_down_then_converges(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "P6 review", 2).await;
    h.crm.lock_record(crm_id, 2);
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "P6 after lock"}));
    h.settle().await.unwrap();
    assert_eq!(crm_field(&h, crm_id, "Subject"), "P6 after lock");
    h.crm.set_unavailable(Duration::from_secs(2));
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "P6 after outage"}));
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.settle().await.unwrap();
    assert_eq!(crm_field(&h, crm_id, "Subject"), "P6 after outage");
    assert_eq!(
        h.app().queue.depth().await.unwrap().dead,
        0,
        "nothing dead-lettered"
    );
    h.stop().await;
}

async fn p7_killed_mid_run_loses_nothing_after_restart(b: Backend) {
    let mut h = start(b).await;
    // Stop the workers only: notifications keep arriving and are queued durably.
    h.restart(
        2,
        crm_graph_connector::run::Roles {
            receiver: true,
            worker: false,
            scheduler: true,
            admin: true,
        },
    )
    .await
    .unwrap();
    for i in 0..5 {
        h.graph
            .user_create_event(MAILBOX, outlook_event(3, &format!("P7 item {i}")));
    }
    h.graph.quiesce().await;
    wait_for("events queued", Duration::from_secs(20), || async {
        h.app()
            .queue
            .depth()
            .await
            // RabbitMQ counts prefetched messages as in flight.
            .map(|d| d.ready + d.in_flight >= 5)
            .unwrap_or(false)
    })
    .await
    .unwrap();
    // "Kill": drop the process state without draining, then start again on the same files.
    h.restart(2, crm_graph_connector::run::Roles::ALL)
        .await
        .unwrap();
    h.settle().await.unwrap();
    for i in 0..5 {
        assert_eq!(
            crm_records_with_subject(&h, &format!("P7 item {i}")).len(),
            1,
            "item {i}"
        );
    }
    h.stop().await;
}

async fn p7_process_killed_mid_run_converges_without_loss_or_duplicate(b: Backend) {
    let opts = b.options();
    let (graph, crm) = Harness::simulators(&opts).await.unwrap();
    let dir = std::env::temp_dir().join(format!("cgc-kill-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let (text, _receiver_port, ap) = child_config(&graph, &crm, &dir, &opts);
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let prefix = format!("cgc-k{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut child = spawn_connector(&cfg, &prefix);
    wait_for(
        "the events subscription",
        Duration::from_secs(30),
        || async {
            graph.subscriptions().iter().any(|s| {
                s["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/events"))
            })
        },
    )
    .await
    .unwrap();
    // Graph keeps retrying deliveries while the connector is down (for hours in reality).
    graph.set_delivery_retry(Duration::from_millis(500), 120);
    const N: usize = 12;
    for i in 0..N {
        graph.user_create_event(MAILBOX, outlook_event(3, &format!("P7 kill {i}")));
    }
    let count = |crm: &cgc_crm::sim::CrmSim, i: usize| {
        crm.records("Contact")
            .into_iter()
            .filter(|r| {
                r.fields.get("Subject").map(String::as_str) == Some(format!("P7 kill {i}").as_str())
            })
            .count()
    };
    // Kill as soon as the first records appear: the rest are queued or in flight.
    wait_for("first CRM writes", Duration::from_secs(30), || async {
        (0..N).any(|i| count(&crm, i) > 0)
    })
    .await
    .unwrap();
    let _ = child.0.kill();
    let _ = child.0.wait();
    child = spawn_connector(&cfg, &prefix);
    wait_for(
        "all records after restart",
        Duration::from_secs(90),
        || async { (0..N).all(|i| count(&crm, i) >= 1) },
    )
    .await
    .unwrap();
    // Idle: nothing queued, nothing dead.
    let client = reqwest::Client::new();
    wait_for("an idle queue", Duration::from_secs(30), || async {
        let r = client
            .get(format!("http://127.0.0.1:{ap}/admin/queue"))
            .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
            .send()
            .await;
        match r {
            Ok(r) => r.json::<Value>().await.is_ok_and(|d| {
                if d["dead"] != 0 {
                    eprintln!("queue depth: {d}");
                    let body = std::process::Command::new("curl")
                        .args([
                            "-s",
                            "-H",
                            &format!(
                                "Authorization: Bearer {}",
                                crm_graph_connector::demo::ADMIN_TOKEN
                            ),
                            &format!("http://127.0.0.1:{ap}/admin/dead-letters"),
                        ])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).to_string());
                    eprintln!("dead letters: {body:?}");
                }
                d["ready"] == 0 && d["in_flight"] == 0 && d["delayed"] == 0 && d["dead"] == 0
            }),
            Err(_) => false,
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    graph.quiesce().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..N {
        assert_eq!(count(&crm, i), 1, "exactly one CRM record for item {i}");
    }
    drop(child);
    graph.shutdown();
    crm.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn c1_graph_contact_links_to_existing_person_and_edits_flow_both_ways(b: Backend) {
    let h = start(b).await;
    let persons_before = h.crm.records("Person").len();
    let c = h.graph.user_create_contact(
        MAILBOX,
        json!({"givenName": "Ana", "surname": "Lopez", "jobTitle": "Buyer",
               "emailAddresses": [{"address": "Ana@Customer.test", "name": "Ana Lopez"}]}),
    );
    let cid = c["id"].as_str().unwrap().to_string();
    let person = || {
        h.crm
            .records("Person")
            .into_iter()
            .find(|r| {
                r.fields
                    .get("EMail")
                    .is_some_and(|e| e.eq_ignore_ascii_case("ana@customer.test"))
            })
            .unwrap()
    };
    wait_for("the job title in CRM", Duration::from_secs(20), || async {
        person().fields.get("JobTitle").map(String::as_str) == Some("Buyer")
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        h.crm.records("Person").len(),
        persons_before,
        "no second person"
    );
    // Edits flow both ways, field by field.
    h.graph
        .user_update_contact(MAILBOX, &cid, json!({"jobTitle": "Head of buying"}));
    h.settle().await.unwrap();
    assert_eq!(
        person().fields.get("JobTitle").map(String::as_str),
        Some("Head of buying")
    );
    h.crm
        .user_update("Person", person().id, &[("PhoneMobile", "+49 170 1234567")]);
    wait_for(
        "the mobile phone in Outlook",
        Duration::from_secs(20),
        || async {
            h.graph
                .contacts(MAILBOX)
                .iter()
                .any(|c| c["mobilePhone"] == "+49 170 1234567")
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(h.graph.contacts(MAILBOX).len(), 1, "one Outlook contact");
    h.stop().await;
}

async fn t1_cancelled_crm_task_is_not_turned_completed(b: Backend) {
    let h = start(b).await;
    let today = chrono::Utc::now().date_naive().to_string();
    let id = h.crm.user_insert(
        "Task",
        &[
            ("Subject", "T1 call back"),
            ("RepID", REP_ID),
            ("Status", "Cancelled"),
            ("DueDate", &today),
        ],
    );
    wait_for("the To Do task", Duration::from_secs(20), || async {
        h.graph
            .tasks(MAILBOX)
            .iter()
            .any(|t| t["title"] == "T1 call back")
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let tasks = h.graph.tasks(MAILBOX);
    let task = tasks.iter().find(|t| t["title"] == "T1 call back").unwrap();
    assert_eq!(
        task["status"], "completed",
        "To Do cannot show Cancelled: completed"
    );
    let status = h
        .crm
        .record("Task", id)
        .and_then(|r| r.fields.get("Status").cloned());
    assert_eq!(
        status.as_deref(),
        Some("Cancelled"),
        "the round trip keeps Cancelled"
    );
    assert_eq!(
        tasks
            .iter()
            .filter(|t| t["title"] == "T1 call back")
            .count(),
        1
    );
    h.stop().await;
}

async fn e1_archived_message_becomes_one_crm_record_and_moves(b: Backend) {
    let mut opts = b.options();
    opts.reps = vec![(REP_ID, MAILBOX), ("5", "rep2@contoso.com")];
    let h = start_with(opts).await;
    let msg = json!({"subject": "E1 offer", "internetMessageId": "<e1-offer@customer.test>",
        "body": {"contentType": "html", "content": "<p>Our offer</p>"},
        "receivedDateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "from": {"emailAddress": {"address": "ana@customer.test", "name": "Ana"}},
        "toRecipients": [{"emailAddress": {"address": MAILBOX, "name": "Rep"}}]});
    wait_for("the archive folders", Duration::from_secs(20), || async {
        h.graph
            .subscriptions()
            .iter()
            .filter(|s| {
                s["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/messages"))
            })
            .count()
            >= 2
    })
    .await
    .unwrap();
    h.graph.deliver_message(MAILBOX, "Inbox/CRM", msg.clone());
    h.graph
        .deliver_message("rep2@contoso.com", "Inbox/CRM", msg);
    let records = || {
        h.crm
            .records("Contact")
            .into_iter()
            .filter(|r| r.fields.get("Subject").map(String::as_str) == Some("E1 offer"))
            .collect::<Vec<_>>()
    };
    wait_for(
        "both messages in the success folder",
        Duration::from_secs(30),
        || async {
            h.graph.messages_in(MAILBOX, "Sync_Success").len() == 1
                && h.graph
                    .messages_in("rep2@contoso.com", "Sync_Success")
                    .len()
                    == 1
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let recs = records();
    assert_eq!(
        recs.len(),
        1,
        "one CRM record for one message archived from two mailboxes"
    );
    assert_eq!(
        recs[0].fields.get("Contact").map(String::as_str),
        Some("E-mail")
    );
    assert!(h.graph.messages_in(MAILBOX, "Inbox/CRM").is_empty());
    h.stop().await;
}

async fn a11_one_meeting_of_several_reps_is_one_crm_record(b: Backend) {
    let mut opts = b.options();
    opts.reps = vec![(REP_ID, MAILBOX), ("5", "rep2@contoso.com")];
    let h = start_with(opts).await;
    wait_for(
        "both event subscriptions",
        Duration::from_secs(20),
        || async {
            h.graph
                .subscriptions()
                .iter()
                .filter(|s| {
                    s["resource"]
                        .as_str()
                        .is_some_and(|r| r.ends_with("/events"))
                })
                .count()
                >= 2
        },
    )
    .await
    .unwrap();
    let mut ev = outlook_event(3, "A11 steering");
    ev["iCalUId"] = json!("040000008200E00074C5B7101A82E00800000000A11A11A11");
    ev["attendees"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "required", "emailAddress": {"address": "Rep2@contoso.com", "name": "Rep Two"}}));
    // rep2 is an internal attendee: Graph gives rep2 a copy of its own (expected-behaviour.md 12).
    h.graph.user_create_event(MAILBOX, ev);
    wait_for("rep2's copy", Duration::from_secs(10), || async {
        h.graph
            .events("rep2@contoso.com")
            .iter()
            .any(|e| e["subject"] == "A11 steering")
    })
    .await
    .unwrap();
    let copies: Vec<Value> = h
        .graph
        .events("rep2@contoso.com")
        .into_iter()
        .filter(|e| e["subject"] == "A11 steering")
        .collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["isOrganizer"], false);
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "A11 steering").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        crm_records_with_subject(&h, "A11 steering").len(),
        1,
        "one CRM record for one meeting"
    );
    let links: Vec<_> = h.app().state.links("contoso").await.unwrap();
    assert_eq!(
        links
            .iter()
            .filter(|l| l.ical_uid.as_deref()
                == Some("040000008200E00074C5B7101A82E00800000000A11A11A11"))
            .count(),
        2,
        "both reps' events are linked to it: {links:?}"
    );
    // Every synced rep attending is a participant (expected-behaviour.md 32), also when the
    // attendee list changes later.
    let rec = &crm_records_with_subject(&h, "A11 steering")[0];
    let participants = rec.fields.get("Participants").cloned().unwrap_or_default();
    assert!(
        participants
            .to_ascii_lowercase()
            .contains("rep2@contoso.com"),
        "rep2 is a participant: {:?}",
        rec.fields
    );
    assert!(
        !rec.fields
            .get("MissingParticipants")
            .is_some_and(|m| m.to_ascii_lowercase().contains("rep2@contoso.com")),
        "a synced rep is never a missing participant: {:?}",
        rec.fields
    );
    h.stop().await;
}

async fn p8_rep_switched_on_and_off_in_crm(b: Backend) {
    let h = start(b).await;
    let app = h.app().clone();
    let tenant = app.tenant("contoso").unwrap().clone();
    let subs_of = |m: &str| {
        h.graph
            .subscriptions()
            .into_iter()
            .filter(|s| s["resource"].as_str().is_some_and(|r| r.contains(m)))
            .count()
    };
    assert!(subs_of(MAILBOX) > 0);
    // Switched on: a new rep, and one whose mailbox is outside the tenant's domains.
    h.crm.user_insert(
        "Rep",
        &[
            ("RepID", "5"),
            ("EMail", "rep2@contoso.com"),
            ("ConnectorEnabled", "true"),
        ],
    );
    h.crm.user_insert(
        "Rep",
        &[
            ("RepID", "6"),
            ("EMail", "rep3@elsewhere.test"),
            ("ConnectorEnabled", "true"),
        ],
    );
    h.graph.add_mailbox("rep2@contoso.com");
    crm_graph_connector::watch::mailboxes::refresh_mailboxes(&app, &tenant, &app.public_url())
        .await
        .unwrap();
    assert!(
        subs_of("rep2@contoso.com") > 0,
        "new rep subscribed after the refresh"
    );
    assert_eq!(
        subs_of("rep3@elsewhere.test"),
        0,
        "mailbox outside the tenant's domains is never synced"
    );
    // Switched off: its subscriptions are deleted.
    let rep1 = h
        .crm
        .records("Rep")
        .into_iter()
        .find(|r| r.fields.get("EMail").map(String::as_str) == Some(MAILBOX))
        .unwrap();
    h.crm
        .user_update("Rep", rep1.id, &[("ConnectorEnabled", "false")]);
    crm_graph_connector::watch::mailboxes::refresh_mailboxes(&app, &tenant, &app.public_url())
        .await
        .unwrap();
    assert_eq!(
        subs_of(MAILBOX),
        0,
        "switched-off rep's subscriptions deleted"
    );
    let boxes: Vec<String> = app
        .state
        .mailboxes("contoso")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.mailbox)
        .collect();
    assert_eq!(boxes, vec!["rep2@contoso.com".to_string()]);
    h.stop().await;
}

async fn p9_ews_migration_matches_by_ical_uid_without_duplicates(b: Backend) {
    let h = start(b).await;
    let uid = "040000008200E00074C5B7101A82E00800000000E5E5E5E5";
    let mut ev = outlook_event(4, "P9 migrated");
    ev["iCalUId"] = json!(uid);
    let (date, time) = crm_slot(4, 10);
    // The EWS connector left a CRM record with its own external key and the iCalUId.
    let crm_id = h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Meeting"),
            ("Subject", "P9 migrated"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "11:00"),
            ("RepID", REP_ID),
        ],
    );
    h.crm.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "EWS"),
            ("ExtKey", "ews-item-1"),
            ("ExtUid", uid),
            ("TableShort", "MA"),
            ("RecordId", &crm_id.to_string()),
        ],
    );
    let created = h.graph.user_create_event(MAILBOX, ev);
    h.settle().await.unwrap();
    let events: Vec<_> = h
        .graph
        .events(MAILBOX)
        .into_iter()
        .filter(|e| e["subject"] == "P9 migrated")
        .collect();
    assert_eq!(events.len(), 1, "no second event");
    assert_eq!(
        crm_records_with_subject(&h, "P9 migrated").len(),
        1,
        "no second CRM record"
    );
    // Linked: a CRM edit reaches the existing event.
    h.crm
        .user_update("Contact", crm_id, &[("Text", "after migration")]);
    h.settle().await.unwrap();
    let ev = h
        .graph
        .event(MAILBOX, created["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(body_text(&ev).as_deref(), Some("after migration"));
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Issue 8: what an independent Graph and CRM.interface implementation showed.

async fn x8_html_entities_in_outlook_body_reach_crm_decoded(b: Backend) {
    let h = start(b).await;
    let mut ev = outlook_event(4, "X8 entities");
    ev["body"] = json!({"contentType": "html", "content":
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"><style>p{margin:0}</style></head>\
         <body><div>Bitte &amp; danke &ndash; Gr&uuml;&szlig;e&nbsp;aus Wien</div><div>Preis: 5&#8364; / &#x20B9;400&#1;</div></body></html>"});
    h.graph.user_create_event(MAILBOX, ev);
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "X8 entities").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let recs = crm_records_with_subject(&h, "X8 entities");
    assert_eq!(recs.len(), 1);
    let text = recs[0].fields.get("Text").cloned().unwrap_or_default();
    assert_eq!(
        text, "Bitte & danke – Grüße aus Wien\nPreis: 5€ / ₹400",
        "entities decoded, blocks as line breaks, the control character dropped"
    );
    assert_eq!(dead_letter_count(&h).await, 0);
    h.stop().await;
}

async fn x8_outlook_created_record_has_extkey_with_ical_uid_and_literal_id(b: Backend) {
    let h = start(b).await;
    let mut ev = outlook_event(4, "X8 extkey");
    ev["iCalUId"] = json!("040000008200E00074C5B7101A82E00800000000X8EXTKEY");
    let ev = h.graph.user_create_event(MAILBOX, ev);
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "X8 extkey").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let rec = &crm_records_with_subject(&h, "X8 extkey")[0];
    let rows = extkey_rows(&h, rec.id);
    assert_eq!(
        rows.len(),
        1,
        "one ExtKey row with the literal record id: {rows:?}"
    );
    let f = &rows[0].fields;
    assert_eq!(f.get("ExtSystem").map(String::as_str), Some("GraphApi"));
    assert_eq!(f.get("ExtKey").map(String::as_str), ev["id"].as_str());
    assert_eq!(
        f.get("ExtUid").map(String::as_str),
        Some("040000008200E00074C5B7101A82E00800000000X8EXTKEY")
    );
    assert_eq!(f.get("TableShort").map(String::as_str), Some("MA"));
    assert!(
        h.crm
            .records("ExtKey")
            .iter()
            .all(|r| !r.fields.get("RecordId").is_none_or(|v| v.trim().is_empty())),
        "no ExtKey row with an empty RecordId"
    );
    h.stop().await;
}

async fn x8_malformed_extkey_row_never_fails_an_unrelated_event(b: Backend) {
    let h = start(b).await;
    // A row as a broken client left it: no RecordId, no TableShort.
    h.crm.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "AAMkBROKEN"),
            ("ExtUid", "040000BROKEN"),
        ],
    );
    let mut ev = outlook_event(4, "X8 after broken row");
    ev["iCalUId"] = json!("040000BROKEN");
    h.graph.user_create_event(MAILBOX, ev);
    let (crm_id, ev_id) = crm_appointment(&h, "X8 from CRM beside broken row", 3).await;
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "X8 after broken row").is_empty()
    })
    .await
    .unwrap();
    h.crm.user_update(
        "Contact",
        crm_id,
        &[("Subject", "X8 renamed beside broken row")],
    );
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "X8 renamed beside broken row"
    );
    assert_eq!(crm_records_with_subject(&h, "X8 after broken row").len(), 1);
    assert_eq!(dead_letter_count(&h).await, 0, "nothing dead-lettered");
    // Skipped, logged and counted.
    let metrics = reqwest::get(format!("{}/metrics", h.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let skipped: i64 = metrics
        .lines()
        .find(|l| l.starts_with("cgc_crm_malformed_rows{tenant=\"contoso\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("cgc_crm_malformed_rows in /metrics");
    assert!(skipped > 0, "the broken row was counted: {skipped}");
    h.stop().await;
}

async fn x8_ambiguous_contact_creates_none_and_is_parked(b: Backend) {
    let h = start(b).await;
    let first = h.crm.user_insert(
        "Person",
        &[
            ("FirstName", "Ravi"),
            ("LastName", "Sharma"),
            ("EMail", "info@shared.example.in"),
        ],
    );
    let second = h.crm.user_insert(
        "Person",
        &[
            ("FirstName", "Priya"),
            ("LastName", "Sharma"),
            ("EMail", "INFO@shared.example.in"),
        ],
    );
    let persons_before = h.crm.records("Person").len();
    let c = h.graph.user_create_contact(
        MAILBOX,
        json!({"givenName": "Ravi", "surname": "Sharma", "jobTitle": "Owner",
               "emailAddresses": [{"address": "info@shared.example.in", "name": "Ravi Sharma"}]}),
    );
    let cid = c["id"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let url = format!("{}/admin/conflicts", h.admin_url());
    let list = || async {
        client
            .get(&url)
            .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    wait_for("the parked match", Duration::from_secs(20), || async {
        !list().await["conflicts"].as_array().unwrap().is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        h.crm.records("Person").len(),
        persons_before,
        "no third person"
    );
    assert!(
        h.app()
            .state
            .links("contoso")
            .await
            .unwrap()
            .iter()
            .all(|l| l.graph_id != cid),
        "linked to none"
    );
    let l = list().await;
    let c = &l["conflicts"][0];
    assert_eq!(c["entity"], "contact");
    assert_eq!(c["graph_id"], cid.as_str());
    let mut cands: Vec<String> = c["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    cands.sort();
    let mut want = vec![first.to_string(), second.to_string()];
    want.sort();
    assert_eq!(cands, want, "both candidate person ids");
    // The operator picks the first: linked, edits flow, still no third person.
    let r = client
        .post(format!(
            "{}/admin/conflicts/{}/resolve",
            h.admin_url(),
            c["id"].as_str().unwrap()
        ))
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .json(&json!({"link": first.to_string()}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    h.settle().await.unwrap();
    assert!(list().await["conflicts"].as_array().unwrap().is_empty());
    assert_eq!(
        h.crm
            .record("Person", first)
            .unwrap()
            .fields
            .get("JobTitle")
            .map(String::as_str),
        Some("Owner")
    );
    assert_eq!(h.crm.records("Person").len(), persons_before);
    h.stop().await;
}

async fn x8_lease_left_by_a_dead_process_blocks_nothing(b: Backend) {
    let h = start(b).await;
    let uid = "040000008200E00074C5B7101A82E00800000000DEADLEASE";
    // A create lease as a killed process leaves it: its owner never renews or releases it.
    assert!(
        h.app()
            .state
            .store()
            .lease(
                &format!("contoso:create:ical:{uid}"),
                "dead-process:event",
                crm_graph_connector::lease::LEASE_TTL
            )
            .await
            .unwrap()
    );
    let mut ev = outlook_event(4, "X8 after a dead lease");
    ev["iCalUId"] = json!(uid);
    h.graph.user_create_event(MAILBOX, ev);
    wait_for(
        "the CRM record once the lease lapsed",
        Duration::from_secs(40),
        || async { !crm_records_with_subject(&h, "X8 after a dead lease").is_empty() },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        crm_records_with_subject(&h, "X8 after a dead lease").len(),
        1
    );
    assert_eq!(
        dead_letter_count(&h).await,
        0,
        "waiting for a lease never ends in dead letters"
    );
    h.stop().await;
}

async fn x8_unknown_mailbox_does_not_stop_the_tenant(b: Backend) {
    let h = start(b).await;
    // rep0's mailbox does not exist in Graph (404 on subscribe, delta and To Do); it sorts first.
    h.crm.user_insert(
        "Rep",
        &[
            ("RepID", "9"),
            ("EMail", "rep0@contoso.com"),
            ("ConnectorEnabled", "true"),
        ],
    );
    let app = h.app().clone();
    let tenant = app.tenant("contoso").unwrap().clone();
    crm_graph_connector::watch::mailboxes::refresh_mailboxes(&app, &tenant, &app.public_url())
        .await
        .unwrap();
    let (crm_id, ev_id) = crm_appointment(&h, "X8 beside a missing mailbox", 2).await;
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "X8 still syncing")]);
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "X8 still syncing"
    );
    assert!(
        app.metrics.total("scheduler_errors_total") > 0,
        "the failing mailbox is counted"
    );
    h.stop().await;
}

async fn x8_retry_after_holds_every_request_to_the_mailbox(b: Backend) {
    let h = start(b).await;
    let before = h.graph.requests().len();
    // The next app request answers 429 with Retry-After: 2; then a burst of creates arrives.
    h.graph.throttle_next(1, 2);
    for i in 0..8 {
        h.graph
            .user_create_event(MAILBOX, outlook_event(3, &format!("X8 throttled {i}")));
    }
    wait_for("all eight in CRM", Duration::from_secs(40), || async {
        (0..8).all(|i| !crm_records_with_subject(&h, &format!("X8 throttled {i}")).is_empty())
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let log: Vec<_> = h.graph.requests()[before..]
        .iter()
        .filter(|r| r.mailbox.as_deref() == Some(MAILBOX))
        .cloned()
        .collect();
    let first = log
        .iter()
        .find(|r| r.status == 429)
        .expect("the simulator throttled a request");
    // Requests already on their way when the 429 was answered (at most 3 more: 4 in flight) may
    // still arrive just after it; none may start later before the window ends.
    let on_their_way = log
        .iter()
        .filter(|r| r.at > first.at && r.at <= first.at + Duration::from_millis(500))
        .count();
    assert!(
        on_their_way <= 3,
        "{on_their_way} requests right after the 429"
    );
    let inside: Vec<_> = log
        .iter()
        .filter(|r| {
            r.at > first.at + Duration::from_millis(500)
                && r.at < first.at + Duration::from_millis(1900)
        })
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(
        inside.is_empty(),
        "requests inside the Retry-After window: {inside:?}"
    );
    assert!(
        h.graph.max_concurrency_seen(MAILBOX) <= 4,
        "never more than 4 in flight"
    );
    for i in 0..8 {
        assert_eq!(
            crm_records_with_subject(&h, &format!("X8 throttled {i}")).len(),
            1
        );
    }
    h.stop().await;
}

async fn x8_two_crm_edits_in_one_minute_both_reach_outlook(b: Backend) {
    let h = start(b).await;
    // UpdTime with minute precision and a clock that stands still: both edits carry the same
    // UpdDate/UpdTime (expected-behaviour.md 21).
    h.crm.set_upd_time_minutes(true);
    h.crm.set_clock(Some(chrono::Utc::now()));
    let (crm_id, ev_id) = crm_appointment(&h, "X8 minute", 2).await;
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "X8 minute first")]);
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "X8 minute first"
    );
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "X8 minute second")]);
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "X8 minute second",
        "the second edit of the same minute is not taken for a duplicate"
    );
    h.stop().await;
}

async fn x8_crm_edit_undone_by_the_user_reaches_outlook(b: Backend) {
    // A CRM user changes a subject and changes it back (A → B → A): the third version has the
    // content of the first, and is still a change to carry to Outlook, not a duplicate of it.
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "X8 revert", 2).await;
    for subject in ["X8 revert (typo)", "X8 revert"] {
        h.crm
            .user_update("Contact", crm_id, &[("Subject", subject)]);
        h.settle().await.unwrap();
        assert_eq!(
            h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
            subject,
            "every version of the CRM record reaches Outlook"
        );
    }
    // The same minute and a clock that stands still: A → B → A carries one UpdDate/UpdTime.
    h.crm.set_upd_time_minutes(true);
    h.crm.set_clock(Some(chrono::Utc::now()));
    for subject in ["X8 revert (again)", "X8 revert"] {
        h.crm
            .user_update("Contact", crm_id, &[("Subject", subject)]);
        h.settle().await.unwrap();
        assert_eq!(
            h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
            subject,
            "a revert within one minute reaches Outlook too"
        );
    }
    h.stop().await;
}

async fn x13_the_echo_of_our_own_graph_write_is_not_read_again(b: Backend) {
    // An Outlook edit goes to CRM, and the agreed state's fingerprint goes onto the event (one
    // PATCH). Graph then notifies that PATCH with the change key its answer gave us: the event
    // holds what we wrote, so nothing is read for it. The CRM poll's sight of our CRM write reads
    // the event once (to compare both sides).
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "X13 echo", 2).await;
    let gets_of_event = |h: &Harness| {
        h.graph
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/events/{ev_id}")))
            .count()
    };
    let (w, gets) = (Writes::now(&h), gets_of_event(&h));
    let notified = h.graph.deliveries().len();
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "X13 echo (Outlook)"}));
    h.settle().await.unwrap();
    assert_eq!(crm_field(&h, crm_id, "Subject"), "X13 echo (Outlook)");
    w.assert(&h, 1, 1, "the CRM update and the fingerprint PATCH");
    assert!(
        h.graph.deliveries().len() >= notified + 2,
        "the user's edit and our PATCH were both notified"
    );
    assert_eq!(
        gets_of_event(&h) - gets,
        2,
        "one GET for the user's edit, one for the CRM poll's sight of our CRM write, none for the echo of our PATCH"
    );
    h.stop().await;
}

async fn x8_task_from_crm_is_created_once_when_the_create_answer_is_lost(b: Backend) {
    let h = start(b).await;
    // The To Do create is applied, but its answer never arrives.
    h.graph
        .commit_then_fail(MAILBOX, 1, cgc_graph::sim::CommitFail::CloseConnection);
    let (date, _) = crm_slot(3, 10);
    h.crm.user_insert(
        "Task",
        &[
            ("Subject", "X8 call back"),
            ("RepID", REP_ID),
            ("DueDate", &date),
            ("Status", "Open"),
        ],
    );
    wait_for("the To Do task", Duration::from_secs(30), || async {
        h.graph
            .tasks(MAILBOX)
            .iter()
            .any(|t| t["title"] == "X8 call back")
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let n = h
        .graph
        .tasks(MAILBOX)
        .iter()
        .filter(|t| t["title"] == "X8 call back")
        .count();
    assert_eq!(n, 1, "found by its linkedResource, not created again");
    assert_eq!(dead_letter_count(&h).await, 0);
    h.stop().await;
}

async fn x8_success_folder_found_anywhere_and_every_message_linked(b: Backend) {
    let mut opts = b.options();
    opts.reps = vec![(REP_ID, MAILBOX), ("5", "rep2@contoso.com")];
    let h = start_with(opts).await;
    // rep2 keeps its success folder under the Inbox (expected-behaviour.md 33).
    h.graph.deliver_message(
        "rep2@contoso.com",
        "Inbox/Sync_Success",
        json!({"subject": "older", "internetMessageId": "<older@customer.test>",
               "receivedDateTime": "2026-11-01T10:00:00Z"}),
    );
    wait_for("the archive folders", Duration::from_secs(20), || async {
        h.graph
            .subscriptions()
            .iter()
            .filter(|s| {
                s["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/messages"))
            })
            .count()
            >= 2
    })
    .await
    .unwrap();
    let msg = json!({"subject": "X8 offer", "internetMessageId": "<x8-offer@kunde.at>",
        "body": {"contentType": "html", "content": "<p>Gr&uuml;&szlig;e aus Graz</p>"},
        "receivedDateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "from": {"emailAddress": {"address": "ana@customer.test", "name": "Ana"}},
        "toRecipients": [{"emailAddress": {"address": MAILBOX, "name": "Rep"}}]});
    let m1 = h.graph.deliver_message(MAILBOX, "Inbox/CRM", msg.clone());
    let m2 = h
        .graph
        .deliver_message("rep2@contoso.com", "Inbox/CRM", msg);
    wait_for("both messages moved", Duration::from_secs(30), || async {
        h.graph.messages_in(MAILBOX, "Sync_Success").len() == 1
            && h.graph
                .messages_in("rep2@contoso.com", "Inbox/Sync_Success")
                .len()
                == 2
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert!(
        h.graph
            .folder_id("rep2@contoso.com", "Sync_Success")
            .is_none(),
        "no second success folder made at the top"
    );
    let recs = crm_records_with_subject(&h, "X8 offer");
    assert_eq!(recs.len(), 1, "one CRM record");
    assert_eq!(
        recs[0].fields.get("Text").map(String::as_str),
        Some("Grüße aus Graz")
    );
    let rows = extkey_rows(&h, recs[0].id);
    assert_eq!(
        rows.len(),
        2,
        "every message's ExtKey row points to the one record: {rows:?}"
    );
    for r in &rows {
        assert_eq!(
            r.fields.get("ExtUid").map(String::as_str),
            Some("<x8-offer@kunde.at>")
        );
    }
    let keys: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.fields.get("ExtKey").map(String::as_str))
        .collect();
    assert!(
        keys.contains(&m1["id"].as_str().unwrap()) && keys.contains(&m2["id"].as_str().unwrap()),
        "{keys:?}"
    );
    h.stop().await;
}

async fn x8_slow_event_runs_once_however_long_it_takes(b: Backend) {
    let h = start(b).await;
    // Every CRM request takes 12 s: creating the person takes over a minute, longer than the
    // embedded queue's old 60 s in-flight lease.
    h.crm.set_delay(Duration::from_secs(12));
    h.graph.user_create_contact(
        MAILBOX,
        json!({"givenName": "Jürgen", "surname": "Groß", "jobTitle": "Einkauf",
               "emailAddresses": [{"address": "j.gross@kunde.de", "name": "Jürgen Groß"}]}),
    );
    let persons = || {
        h.crm
            .records("Person")
            .into_iter()
            .filter(|r| {
                r.fields
                    .get("EMail")
                    .is_some_and(|e| e.eq_ignore_ascii_case("j.gross@kunde.de"))
            })
            .count()
    };
    wait_for("the person in CRM", Duration::from_secs(150), || async {
        persons() > 0
    })
    .await
    .unwrap();
    h.crm.set_delay(Duration::ZERO);
    h.settle().await.unwrap();
    assert_eq!(persons(), 1, "the slow event ran once: one person");
    assert_eq!(dead_letter_count(&h).await, 0);
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Issue 15: absence is not deletion, lost state is not a fresh start.

async fn x15_lost_store_keeps_edits_made_on_either_side(b: Backend) {
    let mut h = start(b).await;
    let mut pairs = Vec::new();
    for i in 0..6 {
        pairs.push(crm_appointment(&h, &format!("X15 pair {i}"), 2 + i).await);
    }
    lose_store(&mut h, b).await;
    // Three edits in Outlook, three in CRM, on different pairs, while the store is gone.
    for (i, (crm_id, ev_id)) in pairs.iter().enumerate() {
        if i < 3 {
            h.graph.user_update_event(
                MAILBOX,
                ev_id,
                json!({"subject": format!("X15 pair {i} edited in Outlook")}),
            );
        } else {
            h.crm.user_update(
                "Contact",
                *crm_id,
                &[("Subject", &format!("X15 pair {i} edited in CRM"))],
            );
        }
    }
    restart_after_loss(&mut h).await;
    // And one more edit on each side after the restart.
    h.graph.user_update_event(
        MAILBOX,
        &pairs[0].1,
        json!({"location": {"displayName": "Raum 12"}}),
    );
    h.crm
        .user_update("Contact", pairs[5].0, &[("A031Location", "Sala 3")]);
    h.settle().await.unwrap();
    assert_eq!(crm_field(&h, pairs[0].0, "A031Location"), "Raum 12");
    assert_eq!(
        h.graph.event(MAILBOX, &pairs[5].1).unwrap()["location"]["displayName"],
        "Sala 3"
    );
    for (i, (crm_id, ev_id)) in pairs.iter().enumerate() {
        let want = if i < 3 {
            format!("X15 pair {i} edited in Outlook")
        } else {
            format!("X15 pair {i} edited in CRM")
        };
        assert_eq!(
            crm_field(&h, *crm_id, "Subject"),
            want,
            "CRM side of pair {i}"
        );
        assert_eq!(
            h.graph.event(MAILBOX, ev_id).unwrap()["subject"],
            want.as_str(),
            "Outlook side of pair {i}: an edit since the last agreed state is kept, never reverted"
        );
    }
    assert_eq!(h.graph.events(MAILBOX).len(), 6, "no duplicate event");
    assert_eq!(
        h.crm
            .records("Contact")
            .iter()
            .filter(|r| r
                .fields
                .get("Subject")
                .is_some_and(|s| s.starts_with("X15 pair")))
            .count(),
        6,
        "no duplicate record"
    );
    h.stop().await;
}

async fn x15_moved_out_of_the_window_and_back_keeps_the_users_time(b: Backend) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "X15 window", 2).await;
    let far = (chrono::Utc::now() + chrono::Duration::days(200)).date_naive();
    h.graph.user_update_event(
        MAILBOX,
        &ev_id,
        json!({"start": {"dateTime": format!("{far}T09:00:00"), "timeZone": "UTC"},
               "end": {"dateTime": format!("{far}T10:00:00"), "timeZone": "UTC"}}),
    );
    h.settle().await.unwrap();
    // Back into the window, at another time than CRM still has (13:00 UTC = 14:00 Berlin in
    // winter, 15:00 in summer).
    let back = (chrono::Utc::now() + chrono::Duration::days(5)).date_naive();
    h.graph.user_update_event(
        MAILBOX,
        &ev_id,
        json!({"start": {"dateTime": format!("{back}T13:00:00"), "timeZone": "UTC"},
               "end": {"dateTime": format!("{back}T14:00:00"), "timeZone": "UTC"}}),
    );
    h.settle().await.unwrap();
    let ev = h.graph.event(MAILBOX, &ev_id).unwrap();
    assert!(
        ev["start"]["dateTime"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{back}T13:00")),
        "the user's new time is not overwritten: {}",
        ev["start"]
    );
    let local =
        chrono::NaiveDateTime::parse_from_str(&format!("{back}T13:00:00"), "%Y-%m-%dT%H:%M:%S")
            .unwrap()
            .and_utc()
            .with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(
        crm_field(&h, crm_id, "Date"),
        local.format("%Y-%m-%d").to_string()
    );
    assert_eq!(
        crm_field(&h, crm_id, "Time").get(..5),
        Some(local.format("%H:%M").to_string().as_str())
    );
    assert_eq!(
        crm_records_with_subject(&h, "X15 window").len(),
        1,
        "re-linked, not created anew"
    );
    assert_eq!(h.graph.events(MAILBOX).len(), 1);
    h.stop().await;
}

async fn x15_leaving_scope_unlinks_and_never_deletes(b: Backend) {
    let h = start(b).await;
    let (a_id, a_ev) = crm_appointment(&h, "X15 scope rep", 2).await;
    let (t_id, t_ev) = crm_appointment(&h, "X15 scope type", 3).await;
    let (w_id, w_ev) = crm_appointment(&h, "X15 scope window", 4).await;
    let w = Writes::now(&h);
    // The record's rep changes to one that is not synced; one becomes an e-mail record; one moves
    // out of the window in CRM.
    h.crm.user_update("Contact", a_id, &[("RepID", "77")]);
    h.crm.user_update("Contact", t_id, &[("Contact", "E-mail")]);
    let (far, _) = crm_graph_connector::demo::crm_slot(300, 10);
    h.crm
        .user_update("Contact", w_id, &[("Date", &far), ("EndDate", &far)]);
    h.settle().await.unwrap();
    for ev in [&a_ev, &t_ev, &w_ev] {
        let e = h.graph.event(MAILBOX, ev).expect("event kept");
        assert_ne!(e["isCancelled"], true, "never cancelled");
    }
    for id in [a_id, t_id, w_id] {
        assert_ne!(crm_field(&h, id, "DelCd"), "1");
        assert_ne!(crm_field(&h, id, "ConnectorDeleted"), "true");
    }
    w.assert(&h, 0, 0, "leaving scope writes nothing on either side");
    // Unlinked: later Outlook edits no longer reach the records.
    for ev in [&a_ev, &t_ev] {
        h.graph.user_update_event(
            MAILBOX,
            ev,
            json!({"location": {"displayName": "Elsewhere"}}),
        );
    }
    h.settle().await.unwrap();
    for id in [a_id, t_id] {
        assert_eq!(
            crm_field(&h, id, "A031Location"),
            "Room 1",
            "record {id} unlinked"
        );
    }
    w.assert(&h, 0, 0, "unlinked pairs write nothing");
    h.stop().await;
}

async fn x15_patch_carries_only_changed_properties_and_crm_only_fields_never_write_graph(
    b: Backend,
) {
    let h = start(b).await;
    let (crm_id, ev_id) = crm_appointment(&h, "X15 patch", 2).await;
    // CRM-only fields: the type and a status other than cancelled.
    let w = Writes::now(&h);
    h.crm.user_update(
        "Contact",
        crm_id,
        &[("Contact", "Telephone"), ("Status", "Done")],
    );
    h.settle().await.unwrap();
    w.assert(&h, 0, 0, "CRM-only fields cause no Graph write");
    let before = h.graph.requests().len();
    h.crm
        .user_update("Contact", crm_id, &[("A031Location", "Room 9")]);
    h.settle().await.unwrap();
    let patches: Vec<_> = h.graph.requests()[before..]
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains(&ev_id))
        .cloned()
        .collect();
    assert_eq!(patches.len(), 1, "one PATCH: {patches:?}");
    let body: Value = patches[0].body.clone().expect("PATCH body");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert!(
        keys.iter()
            .all(|k| *k == "location" || *k == "singleValueExtendedProperties"),
        "the PATCH carries only the changed property (and the sync state): {keys:?}"
    );
    assert_eq!(body["location"]["displayName"], "Room 9");
    h.stop().await;
}

async fn x15_empty_answers_delete_cancel_and_unlink_nothing(b: Backend) {
    let h = start(b).await;
    let pairs = linked_appointments(&h, "X15 empty", 20).await;
    let w = Writes::now(&h);
    // CRM answers every Contact query with no rows for several poll periods (a restore, a lag,
    // a permission change), while Outlook keeps notifying about the events.
    h.crm.set_empty_answers(
        Some("Contact"),
        cgc_crm::sim::EmptyAnswers::For(Duration::from_secs(6)),
    );
    for (_, ev) in &pairs {
        h.graph.user_touch_event(MAILBOX, ev);
    }
    // And one Graph listing comes back empty once, during a delta catch-up.
    h.graph.empty_listing_once(MAILBOX);
    let sub = h
        .graph
        .subscriptions()
        .into_iter()
        .find(|s| {
            s["resource"]
                .as_str()
                .is_some_and(|r| r.ends_with("/events"))
        })
        .unwrap();
    h.graph
        .send_lifecycle(sub["id"].as_str().unwrap(), "missed");
    tokio::time::sleep(Duration::from_secs(7)).await;
    h.settle().await.unwrap();
    w.assert(&h, 0, 0, "nothing written while answers were empty");
    for (crm_id, ev) in &pairs {
        let e = h.graph.event(MAILBOX, ev).expect("event kept");
        assert_ne!(e["isCancelled"], true);
        assert_ne!(crm_field(&h, *crm_id, "ConnectorDeleted"), "true");
    }
    // Still linked: an edit on either side travels.
    let (c0, e0) = &pairs[0];
    h.crm
        .user_update("Contact", *c0, &[("Subject", "X15 empty edited in CRM")]);
    h.graph.user_update_event(
        MAILBOX,
        &pairs[1].1,
        json!({"subject": "X15 empty edited in Outlook"}),
    );
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, e0).unwrap()["subject"],
        "X15 empty edited in CRM"
    );
    assert_eq!(
        crm_field(&h, pairs[1].0, "Subject"),
        "X15 empty edited in Outlook"
    );
    assert_eq!(
        h.graph.events(MAILBOX).len(),
        20,
        "nothing deleted or created again"
    );
    h.stop().await;
}

async fn x15_mass_deletes_hold_the_mailbox_until_released(b: Backend) {
    let h = start(b).await;
    let pairs = linked_appointments(&h, "X15 guard", 12).await;
    // 10 of 12 records deleted in CRM at once: at 0.25 (at least 5 per window) only 5 pass.
    for (crm_id, _) in pairs.iter().take(10) {
        h.crm.user_delete("Contact", *crm_id);
    }
    wait_for("the mailbox held", Duration::from_secs(30), || async {
        admin_get(&h, "/admin/mailboxes").await["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mailbox"] == MAILBOX && m["held"] == true)
    })
    .await
    .unwrap();
    // Give the held events a few rounds: nothing more is deleted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = h.graph.events(MAILBOX).len();
    assert_eq!(left, 12 - 5, "five deletes passed, the rest wait");
    assert!(h.app().metrics.total("mass_change_held_total") > 0);
    assert_eq!(
        h.app().metrics.gauge(
            "mailbox_held",
            &[("tenant", "contoso"), ("mailbox", MAILBOX)]
        ),
        1
    );
    let m = admin_get(&h, "/admin/mailboxes").await;
    let mine = m["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mailbox"] == MAILBOX)
        .unwrap()
        .clone();
    assert_eq!(mine["mass_change_share"], 0.25);
    assert!(mine["refused_changes"].as_u64().unwrap() > 0, "{mine}");
    // One admin call releases it; the waiting deletes go through.
    let r = reqwest::Client::new()
        .post(format!("{}/admin/mailboxes/release", h.admin_url()))
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .json(&json!({"tenant": "contoso", "mailbox": MAILBOX}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.events(MAILBOX).len(),
        2,
        "the held deletes went through"
    );
    let m = admin_get(&h, "/admin/mailboxes").await;
    assert!(
        m["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["held"] == false),
        "{m}"
    );
    assert_eq!(
        h.app().metrics.gauge(
            "mailbox_held",
            &[("tenant", "contoso"), ("mailbox", MAILBOX)]
        ),
        0
    );
    h.stop().await;
}

async fn x15_committed_crm_create_with_lost_answer_gives_one_pair(b: Backend) {
    let h = start(b).await;
    for (n, how) in [
        (0, cgc_crm::sim::AfterCommit::Status500),
        (1, cgc_crm::sim::AfterCommit::Close),
    ] {
        let subject = format!("X15 lost answer {n}");
        // The record's insert is committed, then answered 500 / not at all.
        h.crm.fail_after_commit(Some("Contact"), 1, how);
        h.graph
            .user_create_event(MAILBOX, outlook_event(4 + n, &subject));
        wait_for("the CRM record", Duration::from_secs(30), || async {
            !crm_records_with_subject(&h, &subject).is_empty()
        })
        .await
        .unwrap();
        h.settle().await.unwrap();
        let recs = crm_records_with_subject(&h, &subject);
        assert_eq!(recs.len(), 1, "one CRM record ({how:?})");
        assert_eq!(
            extkey_rows(&h, recs[0].id).len(),
            1,
            "its link finished ({how:?})"
        );
        assert_eq!(
            h.graph
                .events(MAILBOX)
                .iter()
                .filter(|e| e["subject"] == subject.as_str())
                .count(),
            1,
            "never mirrored back as a second event ({how:?})"
        );
    }
    // The ExtKey import committed but answered with a closed connection: finished, not repeated.
    h.crm
        .fail_after_commit(Some("ExtKey"), 1, cgc_crm::sim::AfterCommit::Close);
    h.graph
        .user_create_event(MAILBOX, outlook_event(7, "X15 lost link answer"));
    wait_for("the CRM record", Duration::from_secs(30), || async {
        !crm_records_with_subject(&h, "X15 lost link answer").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let recs = crm_records_with_subject(&h, "X15 lost link answer");
    assert_eq!(recs.len(), 1);
    assert_eq!(extkey_rows(&h, recs[0].id).len(), 1);
    assert_eq!(dead_letter_count(&h).await, 0);
    assert!(
        admin_get(&h, "/admin/conflicts").await["conflicts"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    h.stop().await;
}

async fn x15_committed_graph_writes_with_failed_answers_give_one_item_and_no_conflict(b: Backend) {
    let h = start_with(HarnessOptions {
        conflict: "manual",
        ..b.options()
    })
    .await;
    // The event create is applied and answered 504: the retry's transactionId finds it.
    h.graph
        .commit_then_fail(MAILBOX, 1, cgc_graph::sim::CommitFail::Status504);
    let (crm_id, ev_id) = crm_appointment(&h, "X15 graph lost answer", 3).await;
    assert_eq!(
        h.graph
            .events(MAILBOX)
            .iter()
            .filter(|e| e["subject"] == "X15 graph lost answer")
            .count(),
        1
    );
    // A PATCH applied and answered 500: re-read, the fields hold the intended values: done.
    h.graph
        .commit_then_fail(MAILBOX, 1, cgc_graph::sim::CommitFail::Status500);
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "X15 graph patched")]);
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "X15 graph patched"
    );
    assert!(
        admin_get(&h, "/admin/conflicts").await["conflicts"]
            .as_array()
            .unwrap()
            .is_empty(),
        "an applied PATCH is never a conflict"
    );
    assert_eq!(dead_letter_count(&h).await, 0);
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Issue 11 (part): the public receiver.

async fn x11_receiver_caps_batches_and_looks_each_subscription_up_once(b: Backend) {
    let h = start(b).await;
    let url = format!("{}/notifications", h.receiver_url());
    let item = |id: &str| {
        json!({"subscriptionId": id, "clientState": "x", "changeType": "created",
               "resource": format!("Users/{MAILBOX}/Events/AAMkFLOOD"), "tenantId": "t",
               "resourceData": {"id": "AAMkFLOOD"}})
    };
    // Over the cap: 413 before any look-up, nothing queued.
    let lookups = h.app().metrics.total("subscription_lookups_total");
    let big: Vec<Value> = (0..1001).map(|i| item(&format!("unknown-{i}"))).collect();
    let r = reqwest::Client::new()
        .post(&url)
        .json(&json!({"value": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        h.app().metrics.total("subscription_lookups_total"),
        lookups,
        "no look-up"
    );
    // 1,000 notifications for one unknown id (with a line break in it): one look-up, all dropped.
    let forged = "unknown\n2026-12-03T00:00:00Z ERROR forged line";
    let many: Vec<Value> = (0..1000).map(|_| item(forged)).collect();
    let r = reqwest::Client::new()
        .post(&url)
        .json(&json!({"value": many}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        h.app().metrics.total("subscription_lookups_total") - lookups,
        1,
        "one store look-up for one id"
    );
    assert_eq!(
        h.app().metrics.get(
            "notifications_total",
            &[("outcome", "unknown_subscription")]
        ),
        1000
    );
    let d = h.app().queue.depth().await.unwrap();
    assert_eq!(d.ready + d.in_flight + d.delayed, 0, "nothing queued");
    h.stop().await;
}

async fn x11_receiver_sheds_load_and_cuts_slow_uploads(b: Backend) {
    use tokio::io::AsyncWriteExt;
    let mut h = start(b).await;
    let mut tuning = crm_graph_connector::demo::fast_tuning(2);
    tuning.receiver_max_in_flight = 1;
    tuning.receiver_request_timeout = Duration::from_secs(1);
    h.restart_with(tuning, crm_graph_connector::run::Roles::ALL)
        .await
        .unwrap();
    let addr = h.receiver_url().trim_start_matches("http://").to_string();
    // A slow client: headers sent, the body never finished.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"value\": [",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("{}/notifications", h.receiver_url());
    let r = reqwest::Client::new()
        .post(&url)
        .json(&json!({"value": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "shed while the one slot is held: never 202"
    );
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // The slow upload is cut after the request timeout; the slot is free again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = reqwest::Client::new()
        .post(&url)
        .json(&json!({"value": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        h.app()
            .metrics
            .get("notification_batches_total", &[("outcome", "timeout")])
            >= 1
    );
    drop(slow);
    h.stop().await;
}

async fn x11_crm_clock_behind_the_connector_loses_no_change(b: Backend) {
    // The CRM's clock stands ten minutes behind the connector's: every UpdDate/UpdTime it writes
    // is older than the connector's own time of the previous poll.
    let h = start(b).await;
    h.crm
        .set_clock(Some(chrono::Utc::now() - chrono::Duration::minutes(10)));
    let (crm_id, ev_id) = crm_appointment(&h, "X11 clock", 2).await;
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "X11 clock edited")]);
    h.settle().await.unwrap();
    assert_eq!(
        h.graph.event(MAILBOX, &ev_id).unwrap()["subject"],
        "X11 clock edited"
    );
    h.stop().await;
}

async fn x11_queue_message_for_a_foreign_mailbox_is_refused(b: Backend) {
    use crm_graph_connector::event::{Change, EventKind, EventV1, Source};
    let h = start(b).await;
    let graph_before = h.graph.requests().len();
    let ev = EventV1 {
        tenant: "contoso".into(),
        mailbox: "ceo@elsewhere.test".into(),
        source: Source::Notification,
        kind: EventKind::GraphItem {
            entity: cgc_core::Entity::Appointment,
            item_id: "AAMkFOREIGN".into(),
            change: Change::Created,
            etag: None,
            list_id: None,
        },
        observed_at: chrono::Utc::now(),
        subscription_id: None,
    };
    h.app()
        .queue
        .publish(vec![ev.into_envelope(Default::default())])
        .await
        .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        h.app()
            .metrics
            .get("events_total", &[("outcome", "refused_mailbox")]),
        1
    );
    assert!(
        h.graph.requests()[graph_before..]
            .iter()
            .all(|r| !r.path.to_ascii_lowercase().contains("elsewhere.test")),
        "the foreign mailbox was never read"
    );
    h.stop().await;
}

async fn x11_crm_id_claim_of_another_reps_record_is_ignored(b: Backend) {
    let h = start(b).await;
    let (date, time) = crm_slot(5, 9);
    let foreign = h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "X11 board only"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("RepID", "77"),
        ],
    );
    let mut ev = outlook_event(5, "X11 claims the board record");
    ev["singleValueExtendedProperties"] =
        json!([{"id": cgc_graph::CRM_ID_PROPERTY, "value": foreign.to_string()}]);
    h.graph.user_create_event(MAILBOX, ev);
    wait_for(
        "the event's own record",
        Duration::from_secs(20),
        || async { !crm_records_with_subject(&h, "X11 claims the board record").is_empty() },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        crm_field(&h, foreign, "Subject"),
        "X11 board only",
        "another rep's record is never linked on a claim"
    );
    assert!(h.app().metrics.total("foreign_crm_id_claims_total") >= 1);
    h.stop().await;
}

async fn x11_huge_attendee_lists_cost_bounded_crm_look_ups(b: Backend) {
    let h = start(b).await;
    let mut ev = outlook_event(6, "X11 all hands");
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "required", "emailAddress": {"address": format!("p{i}@kunde.example.in"), "name": "P"}}))
        .collect();
    ev["attendees"] = Value::Array(many);
    let before = h.crm.request_count();
    h.graph.user_create_event(MAILBOX, ev);
    wait_for("the record", Duration::from_secs(60), || async {
        !crm_records_with_subject(&h, "X11 all hands").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let spent = h.crm.request_count() - before;
    assert!(
        spent < 400,
        "{spent} CRM requests for one invitation with 1,000 attendees (cap {})",
        crm_graph_connector::sync::MAX_ATTENDEES_LOOKED_UP
    );
    h.stop().await;
}

async fn x11_logs_of_a_full_run_hold_no_secret(b: Backend) {
    let secret = |what: &str| format!("{what}-{}", uuid::Uuid::new_v4().simple());
    let mut opts = b.options();
    opts.graph_client_secret = Some(secret("graphsecret"));
    opts.crm_password = Some(secret("crmpassword"));
    let (graph, crm) = Harness::simulators(&opts).await.unwrap();
    let dir = std::env::temp_dir().join(format!("cgc-secrets-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let (text, rp, ap) = child_config(&graph, &crm, &dir, &opts);
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, &text).unwrap();
    let log_path = dir.join("connector.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let prefix = format!("cgc-s{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_crm-graph-connector"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "debug")
            .env("CGC_PREFIX", &prefix)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("connector binary starts"),
    );
    wait_for(
        "the events subscription",
        Duration::from_secs(30),
        || async {
            graph.subscriptions().iter().any(|s| {
                s["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/events"))
            })
        },
    )
    .await
    .unwrap();
    // A sync both ways, a notification with a wrong clientState, an admin call with a token.
    graph.user_create_event(MAILBOX, outlook_event(3, "X11 secrets"));
    let (date, time) = crm_slot(4, 10);
    crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "X11 secrets from CRM"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("RepID", REP_ID),
        ],
    );
    let sub = graph.subscriptions().into_iter().next().unwrap();
    let _ = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{rp}/notifications"))
        .json(&json!({"value": [{"subscriptionId": sub["id"], "clientState": "not-the-secret",
            "changeType": "updated", "resource": format!("Users/{MAILBOX}/Events/AAMkX"), "tenantId": "t",
            "resourceData": {"id": "AAMkX"}}]}))
        .send()
        .await;
    let _ = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{ap}/admin/conflicts"))
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .send()
        .await;
    wait_for("both synced", Duration::from_secs(30), || async {
        graph
            .events(MAILBOX)
            .iter()
            .any(|e| e["subject"] == "X11 secrets from CRM")
            && crm
                .records("Contact")
                .iter()
                .any(|r| r.fields.get("Subject").map(String::as_str) == Some("X11 secrets"))
    })
    .await
    .unwrap();
    let client_states: Vec<String> = graph
        .subscriptions()
        .iter()
        .filter_map(|s| s["clientState"].as_str().map(str::to_string))
        .collect();
    drop(child);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 20,
        "debug logs were written: {}",
        logs.lines().count()
    );
    assert!(
        logs.contains(MAILBOX),
        "the logs name what they are about (positive control)"
    );
    let mut secrets = vec![
        opts.graph_client_secret.clone().unwrap(),
        opts.crm_password.clone().unwrap(),
        crm_graph_connector::demo::ADMIN_TOKEN.to_string(),
    ];
    secrets.extend(graph.issued_tokens());
    secrets.extend(client_states);
    assert!(
        secrets.len() >= 5,
        "tokens and clientStates found: {secrets:?}"
    );
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret ({}…) appears in the logs",
            &s[..6.min(s.len())]
        );
    }
    graph.shutdown();
    crm.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Issue 9, the non-series parts: contact scope, task links, the invitation guard.

async fn x9_todo_task_gets_its_linked_resource_once_the_crm_task_exists(b: Backend) {
    let h = start(b).await;
    let list = h.graph.default_list_id(MAILBOX);
    let t = h
        .graph
        .user_create_task(MAILBOX, &list, json!({"title": "T2 send the offer"}));
    let tid = t["id"].as_str().unwrap().to_string();
    let crm_task = || {
        h.crm
            .records("Task")
            .into_iter()
            .find(|r| r.fields.get("Subject").map(String::as_str) == Some("T2 send the offer"))
    };
    wait_for("the CRM task", Duration::from_secs(20), || async {
        crm_task().is_some()
    })
    .await
    .unwrap();
    let crm_id = crm_task().unwrap().id;
    wait_for("the linkedResource", Duration::from_secs(20), || async {
        h.graph.task(MAILBOX, &tid).is_some_and(|t| {
            t["linkedResources"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
    })
    .await
    .unwrap();
    // The link was the pass's last write; its echo (To Do reports the task changed) is a no-op.
    let w = Writes::now(&h);
    h.settle().await.unwrap();
    w.assert(&h, 0, 0, "the linked task's echo");
    let task = h.graph.task(MAILBOX, &tid).unwrap();
    let links = task["linkedResources"].as_array().unwrap();
    assert_eq!(links.len(), 1, "exactly one linkedResource: {links:?}");
    assert_eq!(links[0]["applicationName"], "crm-graph-connector");
    assert_eq!(links[0]["externalId"], crm_id.to_string());
    assert_eq!(
        h.crm
            .records("Task")
            .iter()
            .filter(|r| r.fields.get("Subject").map(String::as_str) == Some("T2 send the offer"))
            .count(),
        1,
        "one CRM task"
    );
    h.stop().await;
}

async fn x9_new_crm_person_of_a_company_the_rep_meets_reaches_outlook(b: Backend) {
    let h = start(b).await;
    // The rep meets company 1/1 (Ana Lopez's, seeded) in the window: its persons are in scope.
    let (date, time) = crm_slot(2, 9);
    h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "X9 visit at Customer"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "10:00"),
            ("RepID", REP_ID),
            ("CoGrp", "1"),
            ("CoNo", "1"),
        ],
    );
    h.crm.user_insert(
        "Person",
        &[
            ("FirstName", "Ben"),
            ("LastName", "Weber"),
            ("EMail", "ben@customer.test"),
            ("CoGrp", "1"),
            ("CoNo", "1"),
        ],
    );
    h.crm.user_insert(
        "Person",
        &[
            ("FirstName", "Cleo"),
            ("LastName", "Outside"),
            ("EMail", "cleo@elsewhere.test"),
            ("CoGrp", "2"),
            ("CoNo", "5"),
        ],
    );
    let has = |mail: &'static str| {
        let h = &h;
        move || async move {
            h.graph.contacts(MAILBOX).iter().any(|c| {
                c["emailAddresses"][0]["address"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(mail))
            })
        }
    };
    wait_for(
        "Ben in Outlook",
        Duration::from_secs(20),
        has("ben@customer.test"),
    )
    .await
    .unwrap();
    wait_for(
        "Ana (unchanged, of the same company) in Outlook",
        Duration::from_secs(20),
        has("ana@customer.test"),
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert!(
        !has("cleo@elsewhere.test")().await,
        "a person outside scope stays out"
    );
    assert_eq!(
        h.graph.contacts(MAILBOX).len(),
        2,
        "{:?}",
        h.graph.contacts(MAILBOX)
    );
    let ben = h
        .crm
        .records("Person")
        .into_iter()
        .find(|r| r.fields.get("EMail").map(String::as_str) == Some("ben@customer.test"))
        .unwrap();
    let links = h.app().state.links("contoso").await.unwrap();
    assert!(
        links
            .iter()
            .any(|l| l.entity == cgc_core::Entity::Contact && l.crm_id == ben.id),
        "Ben's contact is linked"
    );
    // A later edit of Ben in CRM reaches Outlook; the pair stays one contact.
    h.crm
        .user_update("Person", ben.id, &[("JobTitle", "Buyer")]);
    wait_for(
        "Ben's job title in Outlook",
        Duration::from_secs(20),
        || async {
            h.graph
                .contacts(MAILBOX)
                .iter()
                .any(|c| c["jobTitle"] == "Buyer")
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(h.graph.contacts(MAILBOX).len(), 2);
    h.stop().await;
}

async fn x9_contact_scope_linked_adds_no_person(b: Backend) {
    let mut opts = b.options();
    opts.extra_tenant_toml = "\n[tenants.contacts]\nscope = \"linked\"\n".into();
    let h = start_with(opts).await;
    let (date, time) = crm_slot(2, 9);
    h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "X9 linked-only visit"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "10:00"),
            ("RepID", REP_ID),
            ("CoGrp", "1"),
            ("CoNo", "1"),
        ],
    );
    wait_for("the visit in Outlook", Duration::from_secs(20), || async {
        events_with_subject(&h, MAILBOX, "X9 linked-only visit") == 1
    })
    .await
    .unwrap();
    h.crm.user_update(
        "Person",
        h.crm.records("Person")[0].id,
        &[("JobTitle", "Buyer")],
    );
    // Two polls later nothing was added.
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.settle().await.unwrap();
    assert!(
        h.graph.contacts(MAILBOX).is_empty(),
        "only linked persons travel"
    );
    h.stop().await;
}

/// A CRM meeting of rep `rep_id` with one attendee (a known person), `days` from today.
fn crm_meeting(h: &Harness, rep_id: &str, subject: &str, days: i64) -> u64 {
    let (date, time) = crm_slot(days, 10);
    h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Meeting"),
            ("Subject", subject),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "11:00"),
            ("RepID", rep_id),
            ("Participants", "ana@customer.test"),
        ],
    )
}

/// The writes the invitation guard holds (`GET /admin/invitations`).
async fn held_invitations(h: &Harness) -> Vec<Value> {
    admin_get(h, "/admin/invitations").await["invitations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn release_invitations(h: &Harness, mailbox: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/admin/invitations/release", h.admin_url()))
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .json(&json!({"tenant": "contoso", "mailbox": mailbox}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "release answered {}", r.status());
    r.json().await.unwrap()
}

fn events_with_subject(h: &Harness, mailbox: &str, subject: &str) -> usize {
    h.graph
        .events(mailbox)
        .iter()
        .filter(|e| e["subject"] == subject)
        .count()
}

async fn x9_past_crm_meeting_with_attendees_sends_no_invitation(b: Backend) {
    let h = start(b).await;
    let id = crm_meeting(&h, REP_ID, "X9 yesterday's meeting", -1);
    wait_for("the held write listed", Duration::from_secs(20), || async {
        held_invitations(&h)
            .await
            .iter()
            .any(|i| i["crm_id"].as_str() == Some(id.to_string().as_str()))
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let held = held_invitations(&h).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["reason"], "past");
    assert_eq!(held[0]["mailbox"], MAILBOX);
    assert_eq!(held[0]["tenant"], "contoso");
    assert!(
        held[0]["item"].is_null(),
        "a held create has no Graph item yet"
    );
    assert!(held[0]["since"].is_string());
    assert_eq!(h.graph.meeting_messages(MAILBOX), 0, "no meeting mail");
    assert_eq!(
        events_with_subject(&h, MAILBOX, "X9 yesterday's meeting"),
        0
    );
    assert_eq!(
        crm_field(&h, id, "Subject"),
        "X9 yesterday's meeting",
        "the CRM record keeps its data"
    );
    assert_eq!(
        h.app().metrics.get(
            "invitations_held_total",
            &[("tenant", "contoso"), ("reason", "past")]
        ),
        1
    );
    h.stop().await;
}

async fn x9_first_sync_of_a_mailbox_sends_no_invitation_until_released(b: Backend) {
    let h = start(b).await;
    let app = h.app().clone();
    let tenant = app.tenant("contoso").unwrap().clone();
    // A rep with a meeting already in CRM is switched on: the meeting is the first sync.
    const REP2: &str = "rep2@contoso.com";
    h.crm.user_insert(
        "Rep",
        &[
            ("RepID", "5"),
            ("EMail", REP2),
            ("ConnectorEnabled", "true"),
            ("SyncAppointments", "true"),
        ],
    );
    let id = crm_meeting(&h, "5", "X9 onboarding meeting", 3);
    h.graph.add_mailbox(REP2);
    crm_graph_connector::watch::mailboxes::refresh_mailboxes(&app, &tenant, &app.public_url())
        .await
        .unwrap();
    wait_for("the held write listed", Duration::from_secs(20), || async {
        held_invitations(&h)
            .await
            .iter()
            .any(|i| i["crm_id"].as_str() == Some(id.to_string().as_str()))
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let held = held_invitations(&h).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["reason"], "first_sync");
    assert_eq!(held[0]["mailbox"], REP2);
    assert_eq!(h.graph.meeting_messages(REP2), 0, "no meeting mail");
    assert_eq!(events_with_subject(&h, REP2, "X9 onboarding meeting"), 0);
    // Released: the write is sent once.
    let r = release_invitations(&h, REP2).await;
    assert_eq!(r["writes_queued"], 1, "{r}");
    wait_for("the event in Outlook", Duration::from_secs(20), || async {
        events_with_subject(&h, REP2, "X9 onboarding meeting") == 1
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(events_with_subject(&h, REP2, "X9 onboarding meeting"), 1);
    assert_eq!(h.graph.meeting_messages(REP2), 1, "one invitation, to Ana");
    assert!(held_invitations(&h).await.is_empty());
    h.stop().await;
}

async fn x9_invitations_beyond_the_limit_per_minute_are_held_until_released(b: Backend) {
    let mut opts = b.options();
    opts.appointments_toml = "max_invitations_per_minute = 3".into();
    let h = start_with(opts).await;
    let ids: Vec<u64> = (0..4)
        .map(|i| crm_meeting(&h, REP_ID, &format!("X9 burst {i}"), 2))
        .collect();
    wait_for(
        "three sent and one held",
        Duration::from_secs(30),
        || async {
            h.graph.meeting_messages(MAILBOX) == 3 && held_invitations(&h).await.len() == 1
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let held = held_invitations(&h).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["reason"], "rate");
    assert!(
        ids.iter()
            .any(|id| held[0]["crm_id"].as_str() == Some(id.to_string().as_str()))
    );
    let created = (0..4)
        .filter(|i| events_with_subject(&h, MAILBOX, &format!("X9 burst {i}")) == 1)
        .count();
    assert_eq!(created, 3, "N sent");
    assert_eq!(h.graph.meeting_messages(MAILBOX), 3);
    assert_eq!(
        h.app().metrics.gauge(
            "invitations_held",
            &[("tenant", "contoso"), ("mailbox", MAILBOX)]
        ),
        1
    );
    // Released: the held one is sent.
    release_invitations(&h, MAILBOX).await;
    wait_for("the fourth event", Duration::from_secs(20), || async {
        (0..4).all(|i| events_with_subject(&h, MAILBOX, &format!("X9 burst {i}")) == 1)
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(h.graph.meeting_messages(MAILBOX), 4);
    assert!(held_invitations(&h).await.is_empty());
    assert_eq!(
        h.app().metrics.gauge(
            "invitations_held",
            &[("tenant", "contoso"), ("mailbox", MAILBOX)]
        ),
        0
    );
    h.stop().await;
}

each_backend!(
    a1_crm_appointment_appears_in_calendar_linked,
    a2_outlook_event_appears_in_crm_with_resolved_attendees,
    a3_opened_not_edited_keeps_crm_edit,
    a4_subject_in_crm_and_location_in_outlook_both_survive,
    a5_conflict_crm_wins,
    a5_conflict_graph_wins,
    a5_conflict_manual_is_listed_and_resolved_through_admin_api,
    a5_conflict_latest_change_wins,
    a6_one_user_edit_causes_exactly_one_write,
    a7_organizer_delete_sets_connector_deleted,
    a7_crm_delete_removes_future_event,
    a7_crm_delete_leaves_past_event,
    a7_attendee_delete_only_unlinks,
    a8_event_moved_outside_window_is_unlinked_not_deleted,
    a10_all_day_event_keeps_its_days,
    a12_excluded_fields_never_travel,
    p1_validation_handshake_answers_plain_token,
    p2_wrong_client_state_is_not_processed,
    p3_duplicate_and_created_updated_deliveries_make_one_write,
    p4_missed_triggers_delta_catch_up,
    p4_subscription_removed_is_recreated,
    p5_throttling_is_honoured_and_converges,
    p6_crm_locked_and_down_then_converges,
    p7_killed_mid_run_loses_nothing_after_restart,
    p7_process_killed_mid_run_converges_without_loss_or_duplicate,
    c1_graph_contact_links_to_existing_person_and_edits_flow_both_ways,
    t1_cancelled_crm_task_is_not_turned_completed,
    e1_archived_message_becomes_one_crm_record_and_moves,
    a11_one_meeting_of_several_reps_is_one_crm_record,
    p8_rep_switched_on_and_off_in_crm,
    p9_ews_migration_matches_by_ical_uid_without_duplicates,
    x8_html_entities_in_outlook_body_reach_crm_decoded,
    x8_outlook_created_record_has_extkey_with_ical_uid_and_literal_id,
    x8_malformed_extkey_row_never_fails_an_unrelated_event,
    x8_ambiguous_contact_creates_none_and_is_parked,
    x8_lease_left_by_a_dead_process_blocks_nothing,
    x8_unknown_mailbox_does_not_stop_the_tenant,
    x8_retry_after_holds_every_request_to_the_mailbox,
    x8_slow_event_runs_once_however_long_it_takes,
    x8_two_crm_edits_in_one_minute_both_reach_outlook,
    x8_crm_edit_undone_by_the_user_reaches_outlook,
    x13_the_echo_of_our_own_graph_write_is_not_read_again,
    x8_task_from_crm_is_created_once_when_the_create_answer_is_lost,
    x8_success_folder_found_anywhere_and_every_message_linked,
    x15_empty_answers_delete_cancel_and_unlink_nothing,
    x15_mass_deletes_hold_the_mailbox_until_released,
    x15_committed_crm_create_with_lost_answer_gives_one_pair,
    x15_committed_graph_writes_with_failed_answers_give_one_item_and_no_conflict,
    x11_receiver_caps_batches_and_looks_each_subscription_up_once,
    x11_receiver_sheds_load_and_cuts_slow_uploads,
    x11_crm_clock_behind_the_connector_loses_no_change,
    x11_queue_message_for_a_foreign_mailbox_is_refused,
    x11_crm_id_claim_of_another_reps_record_is_ignored,
    x11_huge_attendee_lists_cost_bounded_crm_look_ups,
    x11_logs_of_a_full_run_hold_no_secret,
    x15_lost_store_keeps_edits_made_on_either_side,
    x15_moved_out_of_the_window_and_back_keeps_the_users_time,
    x15_leaving_scope_unlinks_and_never_deletes,
    x15_patch_carries_only_changed_properties_and_crm_only_fields_never_write_graph,
    x9_todo_task_gets_its_linked_resource_once_the_crm_task_exists,
    x9_past_crm_meeting_with_attendees_sends_no_invitation,
    x9_first_sync_of_a_mailbox_sends_no_invitation_until_released,
    x9_invitations_beyond_the_limit_per_minute_are_held_until_released,
    x9_new_crm_person_of_a_company_the_rep_meets_reaches_outlook,
    x9_contact_scope_linked_adds_no_person,
);

// ---------------------------------------------------------------------------------------------
// Scale-out only: several processes' worth of roles on real RabbitMQ and Redis, and their faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_two_receivers_two_workers_converge_without_duplicate_write() {
    let h = start_with(scaled()).await;
    let second = second_instance(&h).await;
    let r2 = format!("http://{}", second.bound.receiver.unwrap());
    let before = h.crm.write_log().len();
    for i in 0..6 {
        h.graph
            .user_create_event(MAILBOX, outlook_event(3, &format!("S1 item {i}")));
    }
    h.graph.quiesce().await;
    // Graph delivers at least once, through any receiver behind the load balancer: the same
    // notifications arrive a second time at the other receiver.
    let client = reqwest::Client::new();
    for d in h.graph.deliveries() {
        if d.url.ends_with("/notifications") {
            let r = client
                .post(format!("{r2}/notifications"))
                .json(&d.body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    }
    h.settle().await.unwrap();
    for i in 0..6 {
        assert_eq!(
            crm_records_with_subject(&h, &format!("S1 item {i}")).len(),
            1,
            "item {i}"
        );
    }
    let contact_writes = h
        .crm
        .write_log()
        .into_iter()
        .skip(before)
        .filter(|w| w.table == "Contact")
        .count();
    assert_eq!(contact_writes, 6, "one CRM write per created event");
    second.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_rabbitmq_cut_and_restored_answers_503_meanwhile_and_loses_nothing() {
    let proxy = ChaosProxy::start("127.0.0.1:5672").await;
    let mut opts = scaled();
    opts.queue_toml = format!(
        "[queue]\nbackend = \"rabbitmq\"\nurl = \"amqp://guest:guest@127.0.0.1:{}/%2f\"\npartitions = 4\n",
        proxy.port
    );
    let h = start_with(opts).await;
    // Graph keeps retrying failed deliveries (for hours in reality).
    h.graph.set_delivery_retry(Duration::from_millis(500), 40);
    proxy.down();
    h.graph
        .user_create_event(MAILBOX, outlook_event(3, "S2 during outage"));
    wait_for(
        "a 503 from the receiver",
        Duration::from_secs(20),
        || async { h.graph.deliveries().iter().any(|d| d.status == Some(503)) },
    )
    .await
    .unwrap();
    assert!(crm_records_with_subject(&h, "S2 during outage").is_empty());
    proxy.restore();
    wait_for(
        "the CRM record after the outage",
        Duration::from_secs(40),
        || async { !crm_records_with_subject(&h, "S2 during outage").is_empty() },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(crm_records_with_subject(&h, "S2 during outage").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_redis_data_lost_mid_run_converges_without_duplicates() {
    let mut opts = scaled();
    // A Redis database of its own, so flushing it cannot disturb tests running beside this one.
    opts.store_toml = "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/14\"\n".into();
    let h = start_with(opts).await;
    let (crm_id, ev_id) = crm_appointment(&h, "S3 from CRM", 2).await;
    h.graph
        .user_create_event(MAILBOX, outlook_event(3, "S3 from Outlook"));
    wait_for("the CRM record", Duration::from_secs(20), || async {
        !crm_records_with_subject(&h, "S3 from Outlook").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let client = redis::Client::open("redis://127.0.0.1:6379/14").unwrap();
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await.unwrap();
    // Both sides keep changing while the connector has forgotten everything.
    h.crm
        .user_update("Contact", crm_id, &[("Text", "after the flush")]);
    wait_for(
        "the mailbox re-read and re-subscribed",
        Duration::from_secs(30),
        || async {
            h.app()
                .state
                .subscriptions()
                .await
                .map(|s| !s.is_empty())
                .unwrap_or(false)
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(
        crm_records_with_subject(&h, "S3 from CRM").len(),
        1,
        "no duplicate CRM record"
    );
    assert_eq!(
        crm_records_with_subject(&h, "S3 from Outlook").len(),
        1,
        "no duplicate CRM record"
    );
    let events = h.graph.events(MAILBOX);
    for s in ["S3 from CRM", "S3 from Outlook"] {
        assert_eq!(
            events.iter().filter(|e| e["subject"] == s).count(),
            1,
            "one event {s}"
        );
    }
    assert_eq!(
        body_text(&h.graph.event(MAILBOX, &ev_id).unwrap()).as_deref(),
        Some("after the flush"),
        "the CRM edit made after the loss still reaches Outlook"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_poison_event_parks_after_the_ladder_and_replays() {
    let mut h = start_with(scaled()).await;
    // Fewer attempts so the ladder ends within the test.
    let tuning = crm_graph_connector::context::Tuning {
        max_attempts: 3,
        ..crm_graph_connector::demo::fast_tuning(2)
    };
    h.restart_with(tuning, crm_graph_connector::run::Roles::ALL)
        .await
        .unwrap();
    h.wait_subscribed().await.unwrap();
    let (crm_id, ev_id) = crm_appointment(&h, "S4 review", 2).await;
    h.crm.lock_record(crm_id, 1_000_000);
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "S4 renamed"}));
    let client = reqwest::Client::new();
    let token = crm_graph_connector::demo::ADMIN_TOKEN;
    let admin = h.admin_url();
    wait_for("a dead letter", Duration::from_secs(60), || async {
        let v: Value = client
            .get(format!("{admin}/admin/dead-letters"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["dead_letters"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; depth {:?}; metrics:\n{}",
            futures_depth(&h),
            h.app().metrics.render()
        )
    });
    let v: Value = client
        .get(format!("{admin}/admin/dead-letters"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dl = &v["dead_letters"][0];
    assert!(dl["reason"].as_str().unwrap().contains("locked"), "{dl}");
    assert_eq!(crm_field(&h, crm_id, "Subject"), "S4 review");
    // The operator clears the lock, then replays.
    h.crm.lock_record(crm_id, 0);
    let r = client
        .post(format!("{admin}/admin/dead-letters/replay"))
        .bearer_auth(token)
        .json(&json!({"id": dl["id"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_for(
        "the replayed edit in CRM",
        Duration::from_secs(30),
        || async { crm_field(&h, crm_id, "Subject") == "S4 renamed" },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    assert_eq!(h.app().queue.dead_letters().await.unwrap().len(), 0);
    h.stop().await;
}
