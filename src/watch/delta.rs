//! Graph → CRM change detection by delta query: the safety catch-up for events and contacts, the
//! To Do poll, and the events each round puts on the queue.

use std::sync::Arc;

use cgc_backends::Envelope;
use cgc_core::Entity;
use cgc_core::series::{self, Member};
use cgc_graph::{DeltaProgress, DeltaRound, DeltaStart, GraphClient, GraphError};
use chrono::Utc;
use serde_json::Value;

use super::{WatchError, graph_reads};
use crate::context::{App, Tenant};
use crate::event::{Change, EventKind, EventV1, Source};
use crate::telemetry::metric;

/// Delta catch-up for a mailbox's events and contacts: every change since the last round is
/// enqueued like a notification. `@removed` entries are enqueued as deletes that the worker
/// verifies with a GET (calendarView reports items outside the window as removed).
pub async fn catch_up(app: &Arc<App>, t: &Arc<Tenant>, mailbox: &str) -> Result<(), WatchError> {
    if graph_reads(t.cfg.appointments.entity.direction) {
        catch_up_events(app, t, mailbox).await?;
    }
    if graph_reads(t.cfg.contacts.direction) {
        catch_up_contacts(app, t, mailbox).await?;
    }
    Ok(())
}

async fn catch_up_events(app: &Arc<App>, t: &Arc<Tenant>, mailbox: &str) -> Result<(), WatchError> {
    let (start, end) = t.window(Utc::now());
    // The window is frozen in the delta token: a new day starts a new initial round.
    let key = format!("events:{mailbox}:{}", start.date_naive());
    let round = delta_round(app, t, mailbox, &key, |link, g| {
        let mailbox = mailbox.to_string();
        async move {
            g.calendar_view_delta(
                &mailbox,
                match link {
                    Some(l) => DeltaStart::Link(l),
                    None => DeltaStart::Window { start, end },
                },
            )
            .await
        }
    })
    .await?;
    enqueue_round(app, t, mailbox, Entity::Appointment, round, None).await
}

async fn catch_up_contacts(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
) -> Result<(), WatchError> {
    let key = format!("contacts:{mailbox}");
    let round = delta_round(app, t, mailbox, &key, |link, g| {
        let mailbox = mailbox.to_string();
        async move {
            g.contacts_delta(
                &mailbox,
                match link {
                    Some(l) => DeltaStart::Link(l),
                    None => DeltaStart::Initial,
                },
            )
            .await
        }
    })
    .await?;
    enqueue_round(app, t, mailbox, Entity::Contact, round, None).await
}

/// To Do has no app-only webhooks: its changes are found by a delta poll.
pub async fn poll_tasks(app: &Arc<App>, t: &Arc<Tenant>, mailbox: &str) -> Result<(), WatchError> {
    if !graph_reads(t.cfg.tasks.direction) {
        return Ok(());
    }
    let list = t.graph.default_todo_list(mailbox).await?;
    let key = format!("tasks:{mailbox}:{list}");
    let round = delta_round(app, t, mailbox, &key, |link, g| {
        let mailbox = mailbox.to_string();
        let list = list.clone();
        async move {
            g.tasks_delta(
                &mailbox,
                &list,
                match link {
                    Some(l) => DeltaStart::Link(l),
                    None => DeltaStart::Initial,
                },
            )
            .await
        }
    })
    .await?;
    enqueue_round(app, t, mailbox, Entity::Task, round, Some(list)).await
}

/// One delta round from the stored link (or an initial round); an expired token starts a new
/// initial round. The next link is stored before the round's events are enqueued.
async fn delta_round<F, Fut>(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    key: &str,
    call: F,
) -> Result<DeltaRound, WatchError>
where
    F: Fn(Option<String>, GraphClient) -> Fut,
    Fut: std::future::Future<Output = Result<DeltaRound, GraphError>>,
{
    let link = app.state.delta_token(&t.cfg.id, key).await?;
    let resource = key.split(':').next().unwrap_or(key);
    let round = match link.clone() {
        Some(l) => match call(Some(l), t.graph.clone()).await {
            Ok(r) => r,
            Err(GraphError::SyncReset { .. }) => {
                tracing::info!(tenant = %t.cfg.id, key, "delta token expired (syncStateNotFound): starting a new initial round");
                app.state.remove_delta_token(&t.cfg.id, key).await?;
                backfill(app, t, mailbox, resource, &call).await?
            }
            Err(e) => return Err(e.into()),
        },
        None => backfill(app, t, mailbox, resource, &call).await?,
    };
    app.state
        .put_delta_token(&t.cfg.id, key, &round.delta_link)
        .await?;
    Ok(round)
}

/// An initial delta round (the first sync of a mailbox's resource, a new day's calendar window,
/// or after an expired token): it reads everything, so it logs and exposes how far it is
/// (`backfill_items`, `backfill_done`).
async fn backfill<F, Fut>(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    resource: &str,
    call: &F,
) -> Result<DeltaRound, GraphError>
where
    F: Fn(Option<String>, GraphClient) -> Fut,
    Fut: std::future::Future<Output = Result<DeltaRound, GraphError>>,
{
    let labels = [
        ("tenant", t.cfg.id.as_str()),
        ("mailbox", mailbox),
        ("resource", resource),
    ];
    app.metrics.set_gauge(metric::BACKFILL_DONE, &labels, 0);
    app.metrics.set_gauge(metric::BACKFILL_ITEMS, &labels, 0);
    tracing::info!(tenant = %t.cfg.id, mailbox, resource, "backfill: initial delta round started");
    let (metrics, tenant, mbx, res) = (
        app.metrics.clone(),
        t.cfg.id.clone(),
        mailbox.to_string(),
        resource.to_string(),
    );
    let g = t.graph.with_delta_progress(move |p: DeltaProgress| {
        let labels = [
            ("tenant", tenant.as_str()),
            ("mailbox", mbx.as_str()),
            ("resource", res.as_str()),
        ];
        metrics.set_gauge(metric::BACKFILL_ITEMS, &labels, p.items as i64);
        if p.pages.is_multiple_of(BACKFILL_LOG_PAGES) {
            tracing::info!(tenant = %tenant, mailbox = %mbx, resource = %res, pages = p.pages,
                items = p.items, "backfill: in progress");
        }
    });
    let round = call(None, g).await?;
    let items = round.changed.len() + round.removed.len();
    app.metrics
        .set_gauge(metric::BACKFILL_ITEMS, &labels, items as i64);
    app.metrics.set_gauge(metric::BACKFILL_DONE, &labels, 1);
    tracing::info!(tenant = %t.cfg.id, mailbox, resource, items, "backfill: initial delta round done");
    Ok(round)
}

/// A backfill logs its progress every this many delta pages.
const BACKFILL_LOG_PAGES: u32 = 10;

/// Enqueues a round's changed items as updates and its removed items as deletes, unless the
/// removals trip the mass-delete guard.
async fn enqueue_round(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    entity: Entity,
    round: DeltaRound,
    list_id: Option<String>,
) -> Result<(), WatchError> {
    let tid = t.cfg.id.as_str();
    let mut events = Vec::new();
    let mut masters = std::collections::BTreeSet::new();
    for item in &round.changed {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        // calendarView delta reports a series by its occurrences, never its master
        // (expected-behaviour.md 11): one event for the master per round, not one per occurrence.
        if let (Member::Occurrence, Some(master)) = (Member::of(item), series::master_id(item)) {
            if masters.insert(master.to_string()) {
                events.push(item_event(
                    tid,
                    mailbox,
                    entity,
                    master,
                    Change::Updated,
                    None,
                    list_id.clone(),
                ));
            }
            continue;
        }
        events.push(item_event(
            tid,
            mailbox,
            entity,
            id,
            Change::Updated,
            etag_of(item),
            list_id.clone(),
        ));
    }
    if removals_allowed(app, t, mailbox, entity, &round.removed).await? {
        for id in &round.removed {
            events.push(item_event(
                tid,
                mailbox,
                entity,
                id,
                Change::Deleted,
                None,
                list_id.clone(),
            ));
        }
    }
    publish(app, events).await
}

/// Mass-delete guard: a round that would remove most linked items is refused and reported.
async fn removals_allowed(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    entity: Entity,
    removed: &[String],
) -> Result<bool, WatchError> {
    let mut linked_removed = 0;
    for id in removed {
        if app
            .state
            .link_by_graph(&t.cfg.id, entity, mailbox, id)
            .await?
            .is_some()
        {
            linked_removed += 1;
        }
    }
    let linked = app
        .state
        .links(&t.cfg.id)
        .await?
        .iter()
        .filter(|l| l.entity == entity && l.mailbox == mailbox)
        .count();
    if let Err(e) =
        cgc_core::mass_delete_guard(linked, linked_removed, t.cfg.mass_change_share.max(0.5))
    {
        app.metrics
            .inc(metric::MASS_DELETE_REFUSED, &[("tenant", &t.cfg.id)]);
        tracing::error!(tenant = %t.cfg.id, mailbox, entity = entity.as_str(), removed = linked_removed, linked, error = %e,
            "delta round removes too many linked items at once: deletes refused; check the mailbox, then resync");
        return Ok(false);
    }
    Ok(true)
}

/// Puts found events on the queue (nothing to do for none).
pub(crate) async fn publish(app: &App, events: Vec<EventV1>) -> Result<(), WatchError> {
    if events.is_empty() {
        return Ok(());
    }
    // The job's trace context goes with each event (scheduler → queue → worker).
    let context = crate::telemetry::trace::headers_of(&tracing::Span::current());
    let envs: Vec<Envelope> = events
        .into_iter()
        .map(|e| e.into_envelope(context.clone()))
        .collect();
    Ok(app.queue.publish(envs).await?)
}

/// The event for one Graph item a delta round reported.
fn item_event(
    tenant: &str,
    mailbox: &str,
    entity: Entity,
    id: &str,
    change: Change,
    etag: Option<String>,
    list_id: Option<String>,
) -> EventV1 {
    EventV1 {
        tenant: tenant.to_string(),
        mailbox: mailbox.to_string(),
        source: Source::Delta,
        kind: EventKind::GraphItem {
            entity,
            item_id: id.to_string(),
            change,
            etag,
            list_id,
        },
        observed_at: Utc::now(),
        subscription_id: None,
    }
}

/// The item's version as Graph names it: `@odata.etag`, else `changeKey`.
fn etag_of(v: &Value) -> Option<String> {
    v.get("@odata.etag")
        .or_else(|| v.get("changeKey"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::MAILBOX;
    use crate::testing::TestApp;
    use serde_json::json;

    #[test]
    fn etag_prefers_odata_etag_then_change_key() {
        assert_eq!(
            etag_of(&json!({"@odata.etag": "W/\"a\"", "changeKey": "b"})).as_deref(),
            Some("W/\"a\"")
        );
        assert_eq!(etag_of(&json!({"changeKey": "b"})).as_deref(), Some("b"));
        assert_eq!(etag_of(&json!({"id": "x"})), None);
        assert_eq!(etag_of(&json!({"changeKey": 7})), None, "not a string");
    }

    #[test]
    fn item_events_come_from_delta_and_carry_the_item() {
        let ev = item_event(
            "contoso",
            MAILBOX,
            Entity::Task,
            "T1",
            Change::Deleted,
            None,
            Some("L1".into()),
        );
        assert_eq!(ev.tenant, "contoso");
        assert_eq!(ev.mailbox, MAILBOX);
        assert_eq!(ev.source, Source::Delta);
        assert_eq!(ev.subscription_id, None);
        assert_eq!(
            ev.kind,
            EventKind::GraphItem {
                entity: Entity::Task,
                item_id: "T1".into(),
                change: Change::Deleted,
                etag: None,
                list_id: Some("L1".into()),
            }
        );
    }

    #[tokio::test]
    async fn catch_up_enqueues_an_event_made_in_outlook() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        let day = (Utc::now() + chrono::Duration::days(1)).date_naive();
        let made = ta.graph.user_create_event(
            MAILBOX,
            json!({"subject": "Made in Outlook",
                   "start": {"dateTime": format!("{day}T09:00:00"), "timeZone": "UTC"},
                   "end": {"dateTime": format!("{day}T10:00:00"), "timeZone": "UTC"}}),
        );
        catch_up(app, &t, MAILBOX).await.unwrap();
        let found = ta.drain_queue().await;
        assert!(
            found.iter().any(|e| matches!(&e.kind,
                EventKind::GraphItem { entity: Entity::Appointment, item_id, change: Change::Updated, .. }
                    if Some(item_id.as_str()) == made["id"].as_str())),
            "the new event is enqueued: {found:?}"
        );
        // The next round starts at the stored link: nothing new, nothing enqueued.
        catch_up(app, &t, MAILBOX).await.unwrap();
        assert!(ta.drain_queue().await.is_empty());
    }

    #[tokio::test]
    async fn a_series_reported_by_its_occurrences_is_enqueued_once_by_its_master() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        let day = (Utc::now() + chrono::Duration::days(1)).date_naive();
        let master = ta.graph.user_create_event(
            MAILBOX,
            json!({"subject": "Daily",
                   "start": {"dateTime": format!("{day}T09:00:00"), "timeZone": "UTC"},
                   "end": {"dateTime": format!("{day}T09:15:00"), "timeZone": "UTC"},
                   "recurrence": {"pattern": {"type": "daily", "interval": 1},
                                  "range": {"type": "numbered", "startDate": day.to_string(), "numberOfOccurrences": 5}}}),
        );
        catch_up(app, &t, MAILBOX).await.unwrap();
        let ids: Vec<String> = ta
            .drain_queue()
            .await
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::GraphItem { item_id, .. } => Some(item_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            ids,
            vec![master["id"].as_str().unwrap().to_string()],
            "five occurrences, one event for their master"
        );
    }

    /// Log lines (JSON) written while the returned guard lives, on this thread.
    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let w = self.clone();
            tracing::subscriber::set_default(
                tracing_subscriber::fmt()
                    .json()
                    .with_writer(move || w.clone())
                    .finish(),
            )
        }
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[tokio::test]
    async fn a_first_delta_round_logs_and_exposes_its_progress() {
        use crate::demo::TENANT;
        let t = TestApp::start().await;
        t.graph.set_delta_page_size(1);
        for i in 0..12 {
            t.outlook_event(&format!("backfill {i}"), None);
        }
        let logs = Logs::default();
        let guard = logs.capture();
        catch_up(&t.app, &t.tenant(), MAILBOX).await.unwrap();
        drop(guard);
        let labels = [
            ("tenant", TENANT),
            ("mailbox", MAILBOX),
            ("resource", "events"),
        ];
        let items = t.app.metrics.gauge(metric::BACKFILL_ITEMS, &labels);
        assert!(items >= 12, "every event read: {items}");
        assert_eq!(t.app.metrics.gauge(metric::BACKFILL_DONE, &labels), 1);
        let text = logs.text();
        let progress: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("backfill: in progress"))
            .collect();
        assert!(
            progress
                .iter()
                .any(|l| l.contains(r#""pages":10"#) && l.contains(r#""items":10"#)),
            "one page of one item each, logged at page 10: {text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("backfill: initial delta round done")
                    && l.contains(&format!(r#""items":{items}"#))),
            "{text}"
        );
        // The next round follows the stored delta link: no backfill, the gauges stay.
        t.app.metrics.set_gauge(metric::BACKFILL_DONE, &labels, 7);
        let logs = Logs::default();
        let guard = logs.capture();
        catch_up(&t.app, &t.tenant(), MAILBOX).await.unwrap();
        drop(guard);
        assert_eq!(t.app.metrics.gauge(metric::BACKFILL_DONE, &labels), 7);
        assert!(!logs.text().contains("backfill"), "{}", logs.text());
    }

    #[tokio::test]
    async fn a_mailboxs_first_crm_poll_logs_and_exposes_its_progress() {
        use crate::demo::{REP_ID, TENANT};
        let t = TestApp::start().await;
        t.sync_rep().await;
        t.crm_appointment("backfill from CRM", REP_ID);
        let m = crate::state::MailboxRecord {
            mailbox: MAILBOX.into(),
            rep_id: REP_ID.into(),
        };
        let labels = [
            ("tenant", TENANT),
            ("mailbox", MAILBOX),
            ("resource", "crm"),
        ];
        let logs = Logs::default();
        let guard = logs.capture();
        super::super::crm_poll::poll_crm_mailbox(&t.app, &t.tenant(), &m)
            .await
            .unwrap();
        drop(guard);
        assert!(t.app.metrics.gauge(metric::BACKFILL_ITEMS, &labels) >= 1);
        assert_eq!(t.app.metrics.gauge(metric::BACKFILL_DONE, &labels), 1);
        let text = logs.text();
        assert!(
            text.contains("backfill: first CRM poll read a table"),
            "{text}"
        );
        assert!(text.contains("backfill: first CRM poll done"), "{text}");
        // The second poll is no first sync.
        t.app.metrics.set_gauge(metric::BACKFILL_DONE, &labels, 7);
        super::super::crm_poll::poll_crm_mailbox(&t.app, &t.tenant(), &m)
            .await
            .unwrap();
        assert_eq!(t.app.metrics.gauge(metric::BACKFILL_DONE, &labels), 7);
    }
}
