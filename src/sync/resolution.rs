//! An operator's resolution of a parked conflict: validated by the admin API, carried out by a
//! worker on the mailbox's partition (so it is ordered with the pair's other events), written
//! through the same apply path as every sync, then the conflict leaves the list.

use std::collections::BTreeMap;
use std::sync::Arc;

use cgc_core::{Cause, Entity, MapContext, PlanKind, Resolution};
use serde_json::Value;

use crate::context::App;
use crate::state::ConflictRecord;
use crate::sync::{Observation, Pass, Processed, SyncError};
use cgc_core::mapping::records::read_fields as crm_read_fields;

/// What the operator chose.
pub enum Choice {
    /// Settle the fields of a linked pair.
    Settle(Resolution),
    /// Link an ambiguously matched Graph item to one of the candidate CRM records.
    Link(u64),
}

/// Reads a resolution body against its conflict; the error is the admin API's 400 message.
pub fn parse(c: &ConflictRecord, body: &Value) -> Result<Choice, String> {
    let take = body.get("take");
    let values = body.get("values");
    let link = body.get("link");
    if !c.candidates.is_empty() {
        let Some(link) = link else {
            return Err(format!(
                "this conflict is an ambiguous match: pick one record with {{\"link\": \"<id>\"}} (candidates: {})",
                c.candidates.join(", ")
            ));
        };
        let id = match link {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => return Err("link must be a CRM record id".into()),
        };
        if !c.candidates.contains(&id) {
            return Err(format!(
                "{id} is not one of the candidates: {}",
                c.candidates.join(", ")
            ));
        }
        return id
            .parse()
            .map(Choice::Link)
            .map_err(|_| "link must be a CRM record id".into());
    }
    if link.is_some() {
        return Err("link is only for ambiguous matches; use take or values".into());
    }
    let held: Vec<String> = c.fields.iter().map(|f| f.field.clone()).collect();
    match (take, values) {
        (Some(_), Some(_)) => Err("give either take or values, not both".into()),
        (Some(Value::String(s)), None) if s == "crm" => Ok(Choice::Settle(Resolution::TakeCrm)),
        (Some(Value::String(s)), None) if s == "graph" => Ok(Choice::Settle(Resolution::TakeGraph)),
        (Some(other), None) => Err(format!("take = {other}; expected \"crm\" or \"graph\"")),
        (None, Some(Value::Object(map))) => {
            if map.is_empty() {
                return Err("values is empty: name at least one field of the conflict".into());
            }
            if let Some(f) = map.keys().find(|k| !held.contains(k)) {
                return Err(format!(
                    "field {f:?} is not part of this conflict; it holds: {}",
                    held.join(", ")
                ));
            }
            let values: BTreeMap<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Ok(Choice::Settle(Resolution::Values(values)))
        }
        (None, Some(_)) => Err("values must be an object of field names to values".into()),
        (None, None) => Err(
            "name a side ({\"take\": \"crm\"} or {\"take\": \"graph\"}) or {\"values\": {...}}"
                .into(),
        ),
    }
}

fn done(reason: impl Into<String>, writes: usize) -> Processed {
    Processed {
        kind: if writes > 0 {
            PlanKind::Merge
        } else {
            PlanKind::NoOp
        },
        reason: reason.into(),
        writes,
    }
}

/// Carries out a queued resolution (worker side).
pub async fn carry_out(
    app: &Arc<App>,
    conflict_id: &str,
    body: &Value,
    by: &str,
    event_id: &str,
) -> Result<Processed, SyncError> {
    let Some(c) = app.state.conflict(conflict_id).await? else {
        return Ok(done("conflict already resolved", 0));
    };
    let Some(t) = app.tenant(&c.tenant) else {
        app.state.remove_conflict(&c.id).await?;
        return Ok(done("tenant no longer configured; conflict dropped", 0));
    };
    let choice = match parse(&c, body) {
        Ok(x) => x,
        Err(m) => return Err(SyncError::Refused(m)),
    };
    let mut sync = Pass::new(
        app,
        t,
        &c.mailbox,
        c.entity,
        Cause::ConflictResolution,
        event_id,
    );
    sync.resolved_by = Some(by.to_string());
    let resolution = match choice {
        Choice::Link(crm_id) => {
            let p = sync.link_chosen(&c.graph_id, crm_id).await?;
            app.state.remove_conflict(&c.id).await?;
            tracing::info!(conflict = %c.id, by, crm_id, "ambiguous match resolved: linked");
            return Ok(p);
        }
        Choice::Settle(r) => r,
    };
    let crm_id: u64 = match c.crm_id.trim().parse() {
        Ok(x) => x,
        Err(_) => {
            app.state.remove_conflict(&c.id).await?;
            return Ok(done("conflict holds a malformed CRM id; dropped", 0));
        }
    };
    let Some(link) = app
        .state
        .link_by_crm(&c.tenant, c.entity, &c.mailbox, crm_id)
        .await?
    else {
        app.state.remove_conflict(&c.id).await?;
        return Ok(done("the pair is no longer linked; conflict dropped", 0));
    };
    let item = match c.entity {
        Entity::Appointment => t.graph.get_event(&c.mailbox, &link.graph_id).await?,
        Entity::Contact => t.graph.get_contact(&c.mailbox, &link.graph_id).await?,
        Entity::Task => {
            let list = match &link.list_id {
                Some(l) => l.clone(),
                None => t.graph.default_todo_list(&c.mailbox).await?,
            };
            t.graph.get_task(&c.mailbox, &list, &link.graph_id).await?
        }
        Entity::Email => None,
    };
    let record = t
        .crm
        .get(
            c.entity.crm_table(),
            crm_id,
            crm_read_fields(c.entity),
            Some(&c.mailbox),
        )
        .await?;
    let (Some(item), Some(record)) = (item, record) else {
        app.state.remove_conflict(&c.id).await?;
        return Ok(done(
            "one side of the pair no longer exists; conflict dropped",
            0,
        ));
    };
    let ctx = sync.context(&[&item], None).await?;
    let ctx = MapContext { ..ctx };
    let shadow = app.state.shadow(&c.tenant, &link).await?;
    let graph_c = cgc_core::from_graph(c.entity, &item, &ctx)?;
    let crm_c = cgc_core::from_crm(c.entity, &record.fields, &ctx)?;
    let fields: Vec<String> = c.fields.iter().map(|f| f.field.clone()).collect();
    let plan = match cgc_core::resolve_conflict(
        c.entity,
        shadow.as_ref(),
        &graph_c,
        &crm_c,
        &fields,
        &resolution,
        &ctx,
    ) {
        Ok(p) => p,
        Err(e) => {
            return Err(SyncError::Refused(format!(
                "resolution cannot be applied: {e}"
            )));
        }
    };
    let obs = Observation {
        graph_id: link.graph_id.clone(),
        list_id: link.list_id.clone(),
        link: Some(link),
        graph: Some(item),
        ..Observation::default()
    };
    let p = sync.apply(plan, obs).await?;
    app.state.remove_conflict(&c.id).await?;
    tracing::info!(conflict = %c.id, by, writes = p.writes, "conflict resolved");
    Ok(p)
}
