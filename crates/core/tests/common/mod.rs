#![allow(dead_code)]
//! Shared fixtures for the scenario and property tests.

use cgc_core::*;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

pub fn ctx() -> MapContext {
    let mut ctx = MapContext::new(chrono_tz::Europe::Berlin);
    ctx.known_person_emails.insert("ana@customer.test".into());
    ctx
}

/// A realistic Graph event as a GET returns it (HTML body, Windows zone, server fields).
pub fn graph_event() -> Value {
    json!({
        "@odata.etag": "W/\"DwAAABYAAAA1\"",
        "id": "AAMkAEVFTlQxAAA=",
        "changeKey": "DwAAABYAAAA1",
        "iCalUId": "040000008200E00074C5B7101A82E00800000000A1B2C3D4",
        "lastModifiedDateTime": "2026-11-20T08:00:00.7654321Z",
        "subject": "Quarterly review",
        "body": {"contentType": "html", "content": "<html><body><p>Agenda:</p><p>1. Numbers &amp; plans</p></body></html>"},
        "start": {"dateTime": "2026-11-23T09:00:00.0000000", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2026-11-23T10:00:00.0000000", "timeZone": "W. Europe Standard Time"},
        "isAllDay": false,
        "location": {"displayName": "Room 4.12"},
        "showAs": "busy",
        "sensitivity": "normal",
        "importance": "normal",
        "isReminderOn": true,
        "reminderMinutesBeforeStart": 15,
        "attendees": [
            {"type": "required", "status": {"response": "accepted"}, "emailAddress": {"name": "Ana", "address": "Ana@Customer.test"}},
            {"type": "optional", "emailAddress": {"address": "bob@elsewhere.test"}}
        ],
        "organizer": {"emailAddress": {"address": "rep1@vendor.test"}},
        "isOrganizer": true,
        "isCancelled": false
    })
}

/// A linked, in-sync appointment: (shadow, Graph item, CRM fields).
pub fn linked_appointment() -> (Canonical, Value, CrmFields) {
    let ctx = ctx();
    let graph = graph_event();
    let shadow = from_graph(Entity::Appointment, &graph, &ctx).expect("fixture maps");
    let mut crm = to_crm(Entity::Appointment, &shadow, None, &ctx);
    crm.insert("Contact".into(), "Meeting".into());
    crm.insert("RepID".into(), "4".into());
    (shadow, graph, crm)
}

pub fn present_graph(item: Value, changed_at: Option<&str>) -> SideState<GraphItem> {
    SideState::Present(GraphItem {
        item,
        changed_at: changed_at.map(at),
    })
}

pub fn present_crm(fields: CrmFields, changed_at: Option<&str>) -> SideState<CrmItem> {
    SideState::Present(CrmItem {
        fields,
        changed_at: changed_at.map(at),
    })
}

pub fn policy(conflict: ConflictPolicy) -> Policy {
    Policy {
        conflict,
        ..Policy::default()
    }
}

pub fn input<'a>(
    entity: Entity,
    shadow: Option<&'a Canonical>,
    graph: SideState<GraphItem>,
    crm: SideState<CrmItem>,
    policy: &'a Policy,
    ctx: &'a MapContext,
) -> Input<'a> {
    Input {
        entity,
        shadow,
        fingerprint: None,
        graph,
        crm,
        graph_organizer: true,
        policy,
        ctx,
        now: at("2026-11-21T12:00:00Z"),
        window: None,
        cause: Cause::Notification,
    }
}

/// Applies a plan's writes to a Graph item and CRM fields (the worker's job, simplified:
/// PATCH merges top-level properties, CRM updates overwrite fields).
pub fn apply(plan: &Plan, graph: &mut Option<Value>, crm: &mut Option<CrmFields>) {
    for op in &plan.ops {
        match op {
            Op::CreateGraph { body } => *graph = Some(body.clone()),
            Op::UpdateGraph { patch } => {
                if let (Some(Value::Object(g)), Some(p)) = (graph.as_mut(), patch.as_object()) {
                    for (k, v) in p {
                        g.insert(k.clone(), v.clone());
                    }
                }
            }
            Op::DeleteGraph => *graph = None,
            Op::CreateCrm { fields } => *crm = Some(fields.clone()),
            Op::UpdateCrm { fields } => {
                if let Some(c) = crm.as_mut() {
                    c.extend(fields.clone());
                }
            }
            Op::MarkCrmDeleted => {
                if let Some(c) = crm.as_mut() {
                    c.insert("ConnectorDeleted".into(), "true".into());
                }
            }
            Op::Unlink | Op::RaiseConflict { .. } => {}
        }
    }
}
