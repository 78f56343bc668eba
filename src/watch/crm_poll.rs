//! CRM → Graph change detection: CRM.interface has no change feed, so each mailbox's records are
//! polled from a watermark (with overlap) and every version found becomes an event keyed by the
//! record's content.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cgc_core::Entity;
use cgc_crm::{Cond, CondOp, Query, Record};
use chrono::{DateTime, Utc};

use super::{WatchError, delta::publish};
use crate::config::Direction;
use crate::context::{App, Tenant};
use crate::event::{EventKind, EventV1, Source};
use crate::state::MailboxRecord;

/// How far the CRM poller looks back before its watermark (clock skew, late commits).
pub const POLL_OVERLAP: chrono::Duration = chrono::Duration::seconds(120);

fn crm_writes_to_graph(dir: Direction) -> bool {
    matches!(dir, Direction::Both | Direction::CrmToGraph)
}

/// CRM → Graph change detection for every mailbox of a tenant; one failing mailbox never stops
/// the others (the scheduler's tick does the same with a backoff per mailbox).
pub async fn poll_crm(app: &Arc<App>, t: &Arc<Tenant>) -> Result<(), WatchError> {
    for m in app.state.mailboxes(&t.cfg.id).await? {
        if let Err(e) = poll_crm_mailbox(app, t, &m).await {
            tracing::warn!(tenant = %t.cfg.id, mailbox = %m.mailbox, error = ?e, "CRM poll failed for this mailbox");
        }
    }
    Ok(())
}

/// CRM → Graph change detection for one mailbox: records changed since the watermark (with
/// overlap). Each event is keyed by the record's content, so a second edit within the same
/// `UpdTime` minute is a new event and a re-read unchanged record is a duplicate.
pub(crate) async fn poll_crm_mailbox(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    m: &MailboxRecord,
) -> Result<(), WatchError> {
    let started = Utc::now();
    let wm_key = format!("crm:{}", m.mailbox);
    let old_watermark = app.state.watermark(&t.cfg.id, &wm_key).await?;
    let since = old_watermark.map(|w| w - POLL_OVERLAP);
    // The newest change time seen, in the CRM's own clock: the next poll starts there, so a CRM
    // clock behind the connector's loses nothing.
    let mut newest: Option<DateTime<Utc>> = None;
    let mut events = Vec::new();
    let mut tables: Vec<Entity> = Vec::new();
    if crm_writes_to_graph(t.cfg.appointments.entity.direction) {
        tables.push(Entity::Appointment);
    }
    if crm_writes_to_graph(t.cfg.tasks.direction) {
        tables.push(Entity::Task);
    }
    for entity in tables {
        let records = changed_records(t, entity, Some(&m.rep_id), since).await?;
        events.extend(table_events(
            t,
            m,
            entity,
            records,
            since,
            started,
            &mut newest,
        ));
    }
    // Linked CRM persons (contacts) of this mailbox that changed.
    if crm_writes_to_graph(t.cfg.contacts.direction) {
        events.extend(poll_linked_persons(app, t, &m.mailbox, since).await?);
    }
    publish(app, events).await?;
    if let Some(wm) = newest.max(old_watermark) {
        app.state.put_watermark(&t.cfg.id, &wm_key, wm).await?;
    }
    Ok(())
}

/// Records of an entity's table changed on or after the day of `since` (of one rep, if given).
pub(crate) async fn changed_records(
    t: &Tenant,
    entity: Entity,
    rep_id: Option<&str>,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Record>, WatchError> {
    let mut conditions: Vec<Cond> = rep_id
        .map(|r| Cond {
            field: "RepID".into(),
            op: CondOp::Eq,
            value: r.to_string(),
        })
        .into_iter()
        .collect();
    conditions.extend(changed_since(since, t.cfg.crm_time_zone));
    Ok(t.crm
        .query_all(
            &Query {
                table: entity.crm_table().into(),
                conditions,
                fields: cgc_core::mapping::records::read_fields(entity)
                    .iter()
                    .map(|f| f.to_string())
                    .collect(),
                max_records: Some(500),
            },
            None,
        )
        .await?)
}

/// The events for one table's polled records: those changed since `since` (exact time), minus
/// appointments of type E-mail (archived messages); `newest` follows the change times seen.
fn table_events(
    t: &Tenant,
    m: &MailboxRecord,
    entity: Entity,
    records: Vec<Record>,
    since: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
    newest: &mut Option<DateTime<Utc>>,
) -> Vec<EventV1> {
    let zone = t.cfg.crm_time_zone;
    let mut events = Vec::new();
    for r in records {
        let changed = cgc_crm::time::changed_at(&r.fields, zone);
        if let Some(c) = changed {
            *newest = (*newest).max(Some(c));
        }
        if let (Some(since), Some(c)) = (since, changed) {
            if c < since {
                continue;
            }
        }
        if entity == Entity::Appointment
            && r.fields
                .get("Contact")
                .is_some_and(|c| c.eq_ignore_ascii_case("E-mail"))
        {
            continue;
        }
        let stamp = stamp(&r.fields);
        events.push(EventV1 {
            tenant: t.cfg.id.clone(),
            mailbox: m.mailbox.clone(),
            source: Source::CrmPoll,
            kind: EventKind::CrmRecord {
                entity,
                crm_id: r.id,
                stamp,
            },
            observed_at: changed.unwrap_or(started),
            subscription_id: None,
        });
    }
    events
}

/// Changed CRM persons linked to contacts of this mailbox.
async fn poll_linked_persons(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<EventV1>, WatchError> {
    let zone = t.cfg.crm_time_zone;
    let linked: BTreeSet<u64> = app
        .state
        .links(&t.cfg.id)
        .await?
        .into_iter()
        .filter(|l| l.entity == Entity::Contact && l.mailbox == mailbox)
        .map(|l| l.crm_id)
        .collect();
    if linked.is_empty() {
        return Ok(vec![]);
    }
    let records = changed_records(t, Entity::Contact, None, since).await?;
    Ok(records
        .into_iter()
        .filter(|r| linked.contains(&r.id))
        .filter(
            |r| match (since, cgc_crm::time::changed_at(&r.fields, zone)) {
                (Some(s), Some(c)) => c >= s,
                _ => true,
            },
        )
        .map(|r| EventV1 {
            tenant: t.cfg.id.clone(),
            mailbox: mailbox.to_string(),
            source: Source::CrmPoll,
            kind: EventKind::CrmRecord {
                entity: Entity::Contact,
                crm_id: r.id,
                stamp: stamp(&r.fields),
            },
            observed_at: Utc::now(),
            subscription_id: None,
        })
        .collect())
}

/// What identifies one version of a CRM record: its content, not `UpdDate`/`UpdTime` (which can
/// have minute precision, so two edits in one minute share them: expected-behaviour.md 21).
fn stamp(f: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in f {
        if k == "UpdDate" || k == "UpdTime" {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

/// The condition "changed on or after the watermark's day" (in the CRM's zone); the exact
/// time is compared after reading, as `UpdTime` may lack seconds.
fn changed_since(since: Option<DateTime<Utc>>, zone: chrono_tz::Tz) -> Option<Cond> {
    let since = since?;
    let (d, _) = cgc_crm::time::from_utc(since, zone);
    Some(Cond {
        field: "UpdDate".into(),
        op: CondOp::Ge,
        value: d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{MAILBOX, REP_ID};
    use crate::testing::TestApp;

    #[test]
    fn crm_stamps_follow_content_not_update_time() {
        let f = |subject: &str, time: &str| {
            BTreeMap::from([
                ("Subject".to_string(), subject.to_string()),
                ("UpdDate".to_string(), "2026-12-03".to_string()),
                ("UpdTime".to_string(), time.to_string()),
            ])
        };
        assert_ne!(
            stamp(&f("a", "10:00")),
            stamp(&f("b", "10:00")),
            "same minute, new content"
        );
        assert_eq!(
            stamp(&f("a", "10:00")),
            stamp(&f("a", "10:01")),
            "same content"
        );
    }

    #[test]
    fn stamps_tell_field_names_apart_and_are_24_hex_digits() {
        let one = BTreeMap::from([("Subject".to_string(), "ab".to_string())]);
        let other = BTreeMap::from([("Subjec".to_string(), "tab".to_string())]);
        assert_ne!(stamp(&one), stamp(&other), "key and value are separated");
        let s = stamp(&one);
        assert_eq!(s.len(), 24);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn changed_since_asks_for_the_watermarks_day_in_the_crm_zone() {
        assert!(changed_since(None, chrono_tz::Europe::Berlin).is_none());
        // 23:30 UTC is already the next day in Berlin.
        let since = "2026-03-01T23:30:00Z".parse::<DateTime<Utc>>().unwrap();
        let c = changed_since(Some(since), chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(c.field, "UpdDate");
        assert_eq!(c.op, CondOp::Ge);
        assert_eq!(c.value, "2026-03-02");
        let c = changed_since(Some(since), chrono_tz::UTC).unwrap();
        assert_eq!(c.value, "2026-03-01");
    }

    #[tokio::test]
    async fn poll_crm_enqueues_a_new_crm_appointment() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        crate::watch::mailboxes::refresh_mailboxes(app, &t, &app.public_url())
            .await
            .unwrap();
        ta.drain_queue().await;
        let (date, time) = crate::demo::crm_slot(2, 10);
        let id = ta.crm.user_insert(
            "Contact",
            &[
                ("Contact", "Visit"),
                ("Subject", "Polled"),
                ("Date", &date),
                ("Time", &time),
                ("EndDate", &date),
                ("EndTime", "11:00"),
                ("RepID", REP_ID),
            ],
        );
        poll_crm(app, &t).await.unwrap();
        let found = ta.drain_queue().await;
        let ours: Vec<&EventV1> = found
            .iter()
            .filter(|e| {
                matches!(e.kind, EventKind::CrmRecord { entity: Entity::Appointment, crm_id, .. } if crm_id == id)
            })
            .collect();
        assert_eq!(ours.len(), 1, "one event for the new record: {found:?}");
        assert_eq!(ours[0].source, Source::CrmPoll);
        assert_eq!(ours[0].mailbox, MAILBOX);
        assert!(
            app.state
                .watermark(&t.cfg.id, &format!("crm:{MAILBOX}"))
                .await
                .unwrap()
                .is_some(),
            "the watermark moved"
        );
    }
}
