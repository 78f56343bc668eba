//! CRM → Graph change detection: CRM.interface has no change feed, so each mailbox's records are
//! polled from a watermark (with overlap) and every version found becomes an event keyed by the
//! record's content.

use std::sync::Arc;

use cgc_core::Entity;
use cgc_crm::{Cond, CondOp, Query, Record};
use chrono::{DateTime, Utc};

use super::crm_records::{changed_since, stamp};
use super::{WatchError, delta::publish};
use crate::config::Direction;
use crate::context::{App, Tenant};
use crate::event::{EventKind, EventV1, Source};
use crate::state::MailboxRecord;
use crate::telemetry::metric;

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
    // The mailbox's first poll (a rep just switched on, or a lost store): what it finds is the
    // first sync, whose invitation-sending writes the invitation guard holds.
    let first_key = format!("crm-first-poll:{}", m.mailbox);
    let first_sync = app.state.watermark(&t.cfg.id, &first_key).await?.is_none();
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
    let mut read = 0usize;
    if first_sync {
        backfill_progress(app, t, m, read, false);
    }
    for entity in tables {
        let records = changed_records(t, entity, Some(&m.rep_id), since).await?;
        if first_sync {
            read += records.len();
            backfill_progress(app, t, m, read, false);
            tracing::info!(tenant = %t.cfg.id, mailbox = %m.mailbox, table = entity.crm_table(),
                records = records.len(), "backfill: first CRM poll read a table");
        }
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
    // CRM persons (contacts) of this mailbox: linked ones and those in the contact scope.
    let mut persons = None;
    let mut persons_read = 0;
    if crm_writes_to_graph(t.cfg.contacts.direction) {
        let mut p = super::contact_scope::person_events(app, t, m, since).await?;
        persons_read = p.events.len();
        events.append(&mut p.events);
        persons = Some(p);
    }
    if first_sync {
        mark_first_sync(&mut events);
    }
    // The overlap of the windows shows a version again: queue each version of a record once.
    let versions = app.state.queued_versions();
    events.retain(|e| version_of(e).is_none_or(|(r, s)| versions.is_new(&r, s)));
    let queued: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| version_of(e).map(|(r, s)| (r, s.to_string())))
        .collect();
    publish(app, events).await?;
    versions.remember(queued.iter().map(|(r, s)| (r.clone(), s.as_str())));
    if let Some(p) = persons {
        p.remember(app, t, m).await?;
    }
    if first_sync {
        app.state
            .put_watermark(&t.cfg.id, &first_key, started)
            .await?;
        backfill_progress(app, t, m, read + persons_read, true);
        tracing::info!(tenant = %t.cfg.id, mailbox = %m.mailbox, records = read + persons_read,
            "backfill: first CRM poll done");
    }
    if let Some(wm) = newest.max(old_watermark) {
        app.state.put_watermark(&t.cfg.id, &wm_key, wm).await?;
    }
    Ok(())
}

/// The record (tenant, mailbox, entity, id) and version a CRM record event stands for.
fn version_of(e: &EventV1) -> Option<(String, &str)> {
    match &e.kind {
        EventKind::CrmRecord {
            entity,
            crm_id,
            stamp,
            ..
        } => Some((
            format!("{}|{}|{}|{crm_id}", e.tenant, e.mailbox, entity.as_str()),
            stamp.as_str(),
        )),
        _ => None,
    }
}

/// The first CRM poll of a mailbox as a backfill (`resource = "crm"`): records read so far.
fn backfill_progress(app: &App, t: &Tenant, m: &MailboxRecord, read: usize, done: bool) {
    let labels = [
        ("tenant", t.cfg.id.as_str()),
        ("mailbox", m.mailbox.as_str()),
        ("resource", "crm"),
    ];
    app.metrics
        .set_gauge(metric::BACKFILL_ITEMS, &labels, read as i64);
    app.metrics
        .set_gauge(metric::BACKFILL_DONE, &labels, i64::from(done));
}

/// Marks the events of a mailbox's first poll.
fn mark_first_sync(events: &mut [EventV1]) {
    for e in events {
        if let EventKind::CrmRecord { first_sync, .. } = &mut e.kind {
            *first_sync = true;
        }
    }
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
                first_sync: false,
            },
            observed_at: changed.unwrap_or(started),
            subscription_id: None,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
