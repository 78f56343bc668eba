//! The scheduler: mailbox list from CRM, subscriptions (create, renew, recreate, delete), delta
//! catch-up, the CRM poller and the To Do poller. Safe to run in several processes: a store lease
//! elects the active one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgc_backends::Envelope;
use cgc_core::Entity;
use cgc_crm::{Cond, CondOp, Query};
use cgc_graph::{DeltaStart, GraphError, NewSubscription};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::Direction;
use crate::context::{App, Tenant};
use crate::event::{Change, EventKind, EventV1, Source};
use crate::state::{MailboxRecord, SubscriptionRecord};
use crate::sync::SyncError as Failure;

/// How far the CRM poller looks back before its watermark (clock skew, late commits).
pub const POLL_OVERLAP: chrono::Duration = chrono::Duration::seconds(120);
/// The active scheduler renews its lease every tick; a scheduler that died is replaced after this.
const LEADER_LEASE: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Due {
    mailboxes: Option<Instant>,
    crm_poll: Option<Instant>,
    todo_poll: Option<Instant>,
    safety_delta: Option<Instant>,
    subscriptions: Option<Instant>,
    /// Mailboxes found by the last refresh.
    known_mailboxes: usize,
    /// Per (job, mailbox): consecutive failures and when the next try is allowed.
    backoff: HashMap<(Job, String), (u32, Instant)>,
}

/// The scheduler's per-mailbox jobs; a failure of one never stops another or another mailbox's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Job {
    Subscriptions,
    Delta,
    CrmPoll,
    TodoPoll,
}

impl Job {
    fn as_str(self) -> &'static str {
        match self {
            Job::Subscriptions => "subscriptions",
            Job::Delta => "delta",
            Job::CrmPoll => "crm_poll",
            Job::TodoPoll => "todo_poll",
        }
    }
}

/// Longest pause of a failing mailbox's job.
const MAILBOX_BACKOFF_MAX: Duration = Duration::from_secs(600);

impl Due {
    fn blocked(&self, job: Job, mailbox: &str) -> bool {
        self.backoff
            .get(&(job, mailbox.to_string()))
            .is_some_and(|(_, next)| Instant::now() < *next)
    }

    /// Records the outcome of one mailbox's job: success clears its backoff; a failure is logged,
    /// counted and backed off (doubling from 5 s up to 10 min) without touching other mailboxes.
    fn record(
        &mut self,
        app: &App,
        tenant: &str,
        job: Job,
        mailbox: &str,
        r: Result<(), Failure>,
    ) -> bool {
        let key = (job, mailbox.to_string());
        match r {
            Ok(()) => {
                self.backoff.remove(&key);
                true
            }
            Err(e) => {
                let n = self.backoff.get(&key).map(|(n, _)| *n).unwrap_or(0) + 1;
                let pause = Duration::from_secs(5u64.saturating_mul(1u64 << (n - 1).min(8)))
                    .min(MAILBOX_BACKOFF_MAX);
                self.backoff.insert(key, (n, Instant::now() + pause));
                app.metrics.inc(
                    "scheduler_errors_total",
                    &[("tenant", tenant), ("job", job.as_str())],
                );
                tracing::warn!(tenant, mailbox, job = job.as_str(), failures = n, ?pause, error = ?e,
                    "scheduler job failed for this mailbox; other mailboxes go on, this one is tried again later");
                false
            }
        }
    }
}

/// How often missing subscriptions (e.g. a failed recreate) are looked for.
const SUBSCRIPTION_CHECK_SECS: u64 = 60;

fn is_due(last: Option<Instant>, every_secs: u64) -> bool {
    last.is_none_or(|t| t.elapsed() >= Duration::from_secs(every_secs))
}

/// The scheduler loop.
pub async fn run(app: Arc<App>) {
    let mut due: HashMap<String, Due> = HashMap::new();
    let mut was_leader = false;
    // Leadership is renewed in the background, so a long tick never lets the lease lapse and
    // never lets a second scheduler become active beside this one.
    let leadership = Leadership::spawn(
        app.state.store().clone(),
        app.instance.clone(),
        LEADER_LEASE,
    );
    loop {
        let leader = leadership.is_leader();
        if leader != was_leader {
            tracing::info!(active = leader, "scheduler leadership changed");
            was_leader = leader;
        }
        if leader {
            for tenant in app.tenants.values() {
                let d = due.entry(tenant.cfg.id.clone()).or_default();
                if let Err(e) = tick(&app, tenant, d, &app.public_url()).await {
                    tracing::warn!(tenant = %tenant.cfg.id, error = ?e, "scheduler round incomplete; will try again");
                }
            }
            if let Err(e) = renew_due(&app).await {
                tracing::warn!(error = ?e, "subscription renewal incomplete; will try again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(app.tuning.scheduler_tick) => {},
            _ = leadership.changed() => {},
            _ = app.shutdown.cancelled() => break,
        }
    }
    leadership.resign().await;
}

/// The scheduler's leader lease, taken and renewed every third of its lifetime by a task of its
/// own; `is_leader` tells whether this process holds it now.
pub struct Leadership {
    flag: Arc<std::sync::atomic::AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn cgc_backends::Store>,
    holder: String,
}

impl Leadership {
    pub fn spawn(
        store: Arc<dyn cgc_backends::Store>,
        holder: String,
        lease: Duration,
    ) -> Leadership {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (f, n, s, h) = (flag.clone(), notify.clone(), store.clone(), holder.clone());
        let task = tokio::spawn(async move {
            loop {
                let got = s.lease("scheduler", &h, lease).await.unwrap_or(false);
                if f.swap(got, std::sync::atomic::Ordering::SeqCst) != got {
                    n.notify_one();
                }
                tokio::time::sleep(lease / 3).await;
            }
        });
        Leadership {
            flag,
            notify,
            task,
            store,
            holder,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn changed(&self) {
        self.notify.notified().await
    }

    /// Stops renewing and frees the lease for another scheduler.
    pub async fn resign(self) {
        self.task.abort();
        let _ = self.store.unlease("scheduler", &self.holder).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn cgc_backends::Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn cgc_backends::Store> =
            Arc::new(cgc_backends::EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        (dir, s)
    }

    #[tokio::test]
    async fn leadership_is_renewed_in_the_background_and_never_shared() {
        let (_d, s) = store();
        let lease = Duration::from_millis(300);
        let a = Leadership::spawn(s.clone(), "a".into(), lease);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(a.is_leader());
        let b = Leadership::spawn(s.clone(), "b".into(), lease);
        // Several lease lifetimes pass while a's loop could be busy: a keeps it, b never gets it.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(a.is_leader() && !b.is_leader());
        }
        // a resigns: b takes over within one renewal period.
        a.resign().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(b.is_leader());
        b.resign().await;
    }

    #[test]
    fn a_failing_mailbox_backs_off_alone() {
        let mut d = Due::default();
        assert!(!d.blocked(Job::Delta, "a@x"));
        d.backoff.insert(
            (Job::Delta, "a@x".into()),
            (1, Instant::now() + Duration::from_secs(5)),
        );
        assert!(d.blocked(Job::Delta, "a@x"));
        assert!(
            !d.blocked(Job::Delta, "b@x"),
            "another mailbox is not held back"
        );
        assert!(
            !d.blocked(Job::CrmPoll, "a@x"),
            "another job of the mailbox is not held back"
        );
    }

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
}

async fn tick(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    d: &mut Due,
    public_url: &str,
) -> Result<(), Failure> {
    let t_cfg = &t.cfg;
    let tid = t_cfg.id.as_str();
    // The store lost its data (e.g. Redis flushed) when the mailboxes we wrote are gone: refresh at once.
    let lost = d.known_mailboxes > 0 && app.state.mailboxes(tid).await?.is_empty();
    if lost || is_due(d.mailboxes, t_cfg.mailbox_refresh_seconds) {
        if lost {
            tracing::warn!(tenant = %tid, "store lost its mailbox list: re-reading reps, re-subscribing, catching up");
        }
        match refresh_mailboxes(app, t, public_url).await {
            Ok(()) => {
                d.mailboxes = Some(Instant::now());
                // A fresh mailbox list starts with a catch-up.
                d.safety_delta = None;
            }
            Err(e) => {
                // The known mailboxes keep syncing; the rep list is read again next tick.
                app.metrics.inc(
                    "scheduler_errors_total",
                    &[("tenant", tid), ("job", "mailboxes")],
                );
                tracing::warn!(tenant = %tid, error = ?e, "rep list could not be read; known mailboxes go on syncing");
            }
        }
        d.known_mailboxes = app.state.mailboxes(tid).await?.len();
    }
    let mailboxes = app.state.mailboxes(tid).await?;
    if is_due(d.subscriptions, SUBSCRIPTION_CHECK_SECS) {
        let mut created = false;
        for m in &mailboxes {
            if d.blocked(Job::Subscriptions, &m.mailbox) {
                continue;
            }
            let r = ensure_subscriptions(app, t, &m.mailbox, public_url).await;
            if let Ok(true) = r {
                created = true;
            }
            d.record(app, tid, Job::Subscriptions, &m.mailbox, r.map(|_| ()));
        }
        d.subscriptions = Some(Instant::now());
        if created {
            // Changes made while a mailbox had no subscription are found by delta.
            d.safety_delta = None;
        }
    }
    if is_due(d.safety_delta, t_cfg.safety_delta_seconds) {
        for m in &mailboxes {
            if d.blocked(Job::Delta, &m.mailbox) {
                continue;
            }
            let r = catch_up(app, t, &m.mailbox).await;
            d.record(app, tid, Job::Delta, &m.mailbox, r);
        }
        d.safety_delta = Some(Instant::now());
    }
    if is_due(d.crm_poll, t_cfg.crm_poll_seconds) {
        for m in &mailboxes {
            if d.blocked(Job::CrmPoll, &m.mailbox) {
                continue;
            }
            let r = poll_crm_mailbox(app, t, m).await;
            d.record(app, tid, Job::CrmPoll, &m.mailbox, r);
        }
        d.crm_poll = Some(Instant::now());
    }
    if is_due(d.todo_poll, t_cfg.todo_poll_seconds) {
        if t_cfg.tasks.direction != Direction::Off {
            for m in &mailboxes {
                if d.blocked(Job::TodoPoll, &m.mailbox) {
                    continue;
                }
                let r = poll_tasks(app, t, &m.mailbox).await;
                d.record(app, tid, Job::TodoPoll, &m.mailbox, r);
            }
        }
        d.todo_poll = Some(Instant::now());
    }
    Ok(())
}

fn graph_reads(dir: Direction) -> bool {
    matches!(dir, Direction::Both | Direction::GraphToCrm)
}

/// Graph resources subscribed for one mailbox, by entity.
async fn resources(t: &Tenant, mailbox: &str) -> Result<Vec<(Entity, String)>, Failure> {
    let mut out = Vec::new();
    if graph_reads(t.cfg.appointments.entity.direction) {
        out.push((Entity::Appointment, format!("users/{mailbox}/events")));
    }
    if graph_reads(t.cfg.contacts.direction) {
        out.push((Entity::Contact, format!("users/{mailbox}/contacts")));
    }
    if t.cfg.emails.direction == Direction::GraphToCrm {
        let folder = t
            .graph
            .ensure_mail_folder(mailbox, &t.cfg.emails.folder)
            .await?;
        out.push((
            Entity::Email,
            format!("users/{mailbox}/mailFolders/{folder}/messages"),
        ));
    }
    Ok(out)
}

/// Reads the reps switched on in CRM, keeps mailboxes in the tenant's domains, subscribes new
/// ones and unsubscribes those switched off.
pub async fn refresh_mailboxes(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    public_url: &str,
) -> Result<(), Failure> {
    let reps = t
        .crm
        .query_all(
            &Query {
                table: "Rep".into(),
                conditions: vec![Cond {
                    field: "ConnectorEnabled".into(),
                    op: CondOp::Eq,
                    value: "true".into(),
                }],
                fields: vec![
                    "RepID".into(),
                    "EMail".into(),
                    "ConnectorEnabled".into(),
                    "DelCd".into(),
                ],
                max_records: Some(500),
            },
            None,
        )
        .await?;
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for r in reps {
        if r.fields.get("DelCd").is_some_and(|v| v == "1") {
            continue;
        }
        let Some(mail) = r.fields.get("EMail").map(|s| s.trim().to_ascii_lowercase()) else {
            continue;
        };
        if mail.is_empty() {
            continue;
        }
        if !t.cfg.owns_mailbox(&mail) {
            tracing::info!(tenant = %t.cfg.id, mailbox = %mail, "rep mailbox outside the tenant's domains: not synced");
            continue;
        }
        let rep_id = r.fields.get("RepID").cloned().unwrap_or_default();
        wanted.insert(mail, rep_id);
    }
    let have: BTreeSet<String> = app
        .state
        .mailboxes(&t.cfg.id)
        .await?
        .into_iter()
        .map(|m| m.mailbox)
        .collect();
    // Switched off: delete the subscriptions, forget the mailbox.
    for m in have.iter().filter(|m| !wanted.contains_key(*m)) {
        for s in app.state.subscriptions().await? {
            if s.tenant == t.cfg.id && s.mailbox == *m {
                match t.graph.delete_subscription(&s.id).await {
                    Ok(()) | Err(GraphError::NotFound) => {}
                    Err(e) => {
                        // It expires by itself; its notifications are dropped as unknown meanwhile.
                        tracing::warn!(tenant = %t.cfg.id, mailbox = %m, subscription = %s.id, error = %e,
                            "subscription of a switched-off mailbox could not be deleted; it expires by itself");
                    }
                }
                app.state.remove_subscription(&s.id).await?;
            }
        }
        app.state.remove_mailbox(&t.cfg.id, m).await?;
        tracing::info!(tenant = %t.cfg.id, mailbox = %m, "mailbox switched off: subscriptions deleted");
    }
    for (m, rep_id) in &wanted {
        app.state
            .put_mailbox(
                &t.cfg.id,
                &MailboxRecord {
                    mailbox: m.clone(),
                    rep_id: rep_id.clone(),
                },
            )
            .await?;
        // One mailbox that cannot be subscribed (e.g. 404: no such mailbox) never stops the others;
        // the subscription check retries it with a backoff.
        if let Err(e) = ensure_subscriptions(app, t, m, public_url).await {
            app.metrics.inc(
                "scheduler_errors_total",
                &[("tenant", &t.cfg.id), ("job", "subscriptions")],
            );
            tracing::warn!(tenant = %t.cfg.id, mailbox = %m, error = ?e, "mailbox could not be subscribed; other mailboxes go on");
        }
    }
    Ok(())
}

fn client_state() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

/// One subscription per (mailbox, resource); true when one had to be created.
pub async fn ensure_subscriptions(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    public_url: &str,
) -> Result<bool, Failure> {
    let existing = app.state.subscriptions().await?;
    let mut created = false;
    for (_, resource) in resources(t, mailbox).await? {
        if existing
            .iter()
            .any(|s| s.tenant == t.cfg.id && s.mailbox == mailbox && s.resource == resource)
        {
            continue;
        }
        create_subscription(app, t, mailbox, &resource, public_url).await?;
        created = true;
    }
    Ok(created)
}

async fn create_subscription(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    resource: &str,
    public_url: &str,
) -> Result<SubscriptionRecord, Failure> {
    let secret = client_state();
    let expiration = Utc::now() + app.tuning.subscription_lifetime;
    let created = Utc::now();
    // A notification that arrives before the record is stored is dropped as unknown; the delta
    // catch-up that follows every subscription create covers that gap.
    let sub = t
        .graph
        .create_subscription(&NewSubscription {
            resource: resource.to_string(),
            change_type: "created,updated,deleted".into(),
            notification_url: format!("{public_url}/notifications"),
            lifecycle_notification_url: Some(format!("{public_url}/lifecycle")),
            expiration,
            client_state: secret.clone(),
        })
        .await?;
    let rec = SubscriptionRecord {
        id: sub.id.clone(),
        tenant: t.cfg.id.clone(),
        mailbox: mailbox.to_string(),
        resource: resource.to_string(),
        client_state: secret,
        expiration: sub.expiration_date_time,
        created,
    };
    app.state.put_subscription(&rec).await?;
    app.metrics
        .inc("subscriptions_created_total", &[("tenant", &t.cfg.id)]);
    tracing::info!(tenant = %t.cfg.id, mailbox, resource, subscription = %rec.id, "subscription created");
    Ok(rec)
}

/// Renews subscriptions once two thirds of their lifetime have passed.
pub async fn renew_due(app: &Arc<App>) -> Result<(), Failure> {
    let now = Utc::now();
    for s in app.state.subscriptions().await? {
        let life = s.expiration - s.created;
        if now < s.created + life * 2 / 3 {
            continue;
        }
        let Some(t) = app.tenant(&s.tenant) else {
            continue;
        };
        let (tenant, id) = (s.tenant.clone(), s.id.clone());
        if let Err(e) = renew(app, t, s).await {
            // Each subscription on its own: the next round tries again, long before it expires.
            app.metrics.inc(
                "scheduler_errors_total",
                &[("tenant", &tenant), ("job", "renew")],
            );
            tracing::warn!(tenant = %tenant, subscription = %id, error = ?e, "subscription renewal failed; others go on");
        }
    }
    Ok(())
}

async fn renew(app: &Arc<App>, t: &Arc<Tenant>, mut s: SubscriptionRecord) -> Result<(), Failure> {
    let expiration = Utc::now() + app.tuning.subscription_lifetime;
    match t.graph.renew_subscription(&s.id, expiration).await {
        Ok(sub) => {
            s.created = Utc::now();
            s.expiration = sub.expiration_date_time;
            app.state.put_subscription(&s).await?;
            tracing::info!(tenant = %s.tenant, subscription = %s.id, "subscription renewed");
            Ok(())
        }
        Err(GraphError::NotFound) => {
            // Gone on Graph's side: make a new one and catch up what was missed.
            app.state.remove_subscription(&s.id).await?;
            let public = public_url_of(app);
            create_subscription(app, t, &s.mailbox, &s.resource, &public).await?;
            catch_up(app, t, &s.mailbox).await
        }
        Err(e) => Err(e.into()),
    }
}

fn public_url_of(app: &App) -> String {
    app.public_url()
}

/// Lifecycle notifications (SCENARIOS.md P4).
pub async fn on_lifecycle(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    subscription_id: &str,
    lifecycle_event: &str,
) -> Result<(), Failure> {
    let Some(s) = app.state.subscription(subscription_id).await? else {
        return Ok(());
    };
    // The event name is the sender's text: only the known ones become metric labels.
    let label = match lifecycle_event {
        "reauthorizationRequired" | "subscriptionRemoved" | "missed" => lifecycle_event,
        _ => "other",
    };
    app.metrics
        .inc("lifecycle_notifications_total", &[("event", label)]);
    match lifecycle_event {
        "reauthorizationRequired" => renew(app, t, s).await,
        "subscriptionRemoved" => {
            app.state.remove_subscription(&s.id).await?;
            let public = public_url_of(app);
            create_subscription(app, t, mailbox, &s.resource, &public).await?;
            catch_up(app, t, mailbox).await
        }
        "missed" => catch_up(app, t, mailbox).await,
        other => {
            tracing::warn!(event = %crate::telemetry::loggable_id(other), "unknown lifecycle event ignored");
            Ok(())
        }
    }
}

async fn publish(app: &App, events: Vec<EventV1>) -> Result<(), Failure> {
    if events.is_empty() {
        return Ok(());
    }
    let envs: Vec<Envelope> = events
        .into_iter()
        .map(|e| e.into_envelope(BTreeMap::new()))
        .collect();
    app.queue
        .publish(envs)
        .await
        .map_err(|e| Failure::Transient {
            after: None,
            reason: format!("queue: {e}"),
        })
}

fn item_event(
    t: &Tenant,
    mailbox: &str,
    entity: Entity,
    id: &str,
    change: Change,
    etag: Option<String>,
    list_id: Option<String>,
) -> EventV1 {
    EventV1 {
        tenant: t.cfg.id.clone(),
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

fn etag_of(v: &Value) -> Option<String> {
    v.get("@odata.etag")
        .or_else(|| v.get("changeKey"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Delta catch-up for a mailbox's events and contacts: every change since the last round is
/// enqueued like a notification. `@removed` entries are enqueued as deletes that the worker
/// verifies with a GET (calendarView reports items outside the window as removed).
pub async fn catch_up(app: &Arc<App>, t: &Arc<Tenant>, mailbox: &str) -> Result<(), Failure> {
    let now = Utc::now();
    if graph_reads(t.cfg.appointments.entity.direction) {
        let (start, end) = t.window(now);
        // The window is frozen in the delta token: a new day starts a new initial round.
        let key = format!("events:{mailbox}:{}", start.date_naive());
        let round = delta_round(app, t, &key, |link| {
            let g = t.graph.clone();
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
        enqueue_round(app, t, mailbox, Entity::Appointment, round, None).await?;
    }
    if graph_reads(t.cfg.contacts.direction) {
        let key = format!("contacts:{mailbox}");
        let round = delta_round(app, t, &key, |link| {
            let g = t.graph.clone();
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
        enqueue_round(app, t, mailbox, Entity::Contact, round, None).await?;
    }
    Ok(())
}

/// To Do has no app-only webhooks: its changes are found by a delta poll.
pub async fn poll_tasks(app: &Arc<App>, t: &Arc<Tenant>, mailbox: &str) -> Result<(), Failure> {
    if !graph_reads(t.cfg.tasks.direction) {
        return Ok(());
    }
    let list = t.graph.default_todo_list(mailbox).await?;
    let key = format!("tasks:{mailbox}:{list}");
    let round = delta_round(app, t, &key, |link| {
        let g = t.graph.clone();
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

async fn delta_round<F, Fut>(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    key: &str,
    call: F,
) -> Result<cgc_graph::DeltaRound, Failure>
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<cgc_graph::DeltaRound, GraphError>>,
{
    let link = app.state.delta_link(&t.cfg.id, key).await?;
    let round = match call(link.clone()).await {
        Ok(r) => r,
        Err(GraphError::SyncReset { .. }) if link.is_some() => {
            tracing::info!(tenant = %t.cfg.id, key, "delta token expired (syncStateNotFound): starting a new initial round");
            app.state.remove_delta_link(&t.cfg.id, key).await?;
            call(None).await?
        }
        Err(e) => return Err(e.into()),
    };
    app.state
        .put_delta_link(&t.cfg.id, key, &round.delta_link)
        .await?;
    Ok(round)
}

async fn enqueue_round(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    entity: Entity,
    round: cgc_graph::DeltaRound,
    list_id: Option<String>,
) -> Result<(), Failure> {
    let mut events = Vec::new();
    for item in &round.changed {
        if let Some(id) = item.get("id").and_then(Value::as_str) {
            events.push(item_event(
                t,
                mailbox,
                entity,
                id,
                Change::Updated,
                etag_of(item),
                list_id.clone(),
            ));
        }
    }
    // Mass-delete guard: a round that would remove most linked items is refused and reported.
    let linked_removed: Vec<&String> = {
        let mut v = Vec::new();
        for id in &round.removed {
            if app
                .state
                .link_by_graph(&t.cfg.id, entity, mailbox, id)
                .await?
                .is_some()
            {
                v.push(id);
            }
        }
        v
    };
    let linked = app
        .state
        .links(&t.cfg.id)
        .await?
        .iter()
        .filter(|l| l.entity == entity && l.mailbox == mailbox)
        .count();
    if let Err(e) = cgc_core::mass_delete_guard(
        linked,
        linked_removed.len(),
        t.cfg.mass_change_share.max(0.5),
    ) {
        app.metrics
            .inc("mass_delete_refused_total", &[("tenant", &t.cfg.id)]);
        tracing::error!(tenant = %t.cfg.id, mailbox, entity = entity.as_str(), removed = linked_removed.len(), linked, error = %e,
            "delta round removes too many linked items at once: deletes refused; check the mailbox, then resync");
    } else {
        for id in &round.removed {
            events.push(item_event(
                t,
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

/// CRM → Graph change detection for every mailbox of a tenant; one failing mailbox never stops
/// the others (the scheduler's tick does the same with a backoff per mailbox).
pub async fn poll_crm(app: &Arc<App>, t: &Arc<Tenant>) -> Result<(), Failure> {
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
async fn poll_crm_mailbox(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    m: &MailboxRecord,
) -> Result<(), Failure> {
    let started = Utc::now();
    let zone = t.cfg.crm_time_zone;
    let wm_key = format!("crm:{}", m.mailbox);
    let old_watermark = app.state.watermark(&t.cfg.id, &wm_key).await?;
    let since = old_watermark.map(|w| w - POLL_OVERLAP);
    // The newest change time seen, in the CRM's own clock: the next poll starts there, so a CRM
    // clock behind the connector's loses nothing.
    let mut newest: Option<DateTime<Utc>> = None;
    let mut events = Vec::new();
    let mut tables: Vec<(Entity, Vec<Cond>)> = Vec::new();
    let rep = Cond {
        field: "RepID".into(),
        op: CondOp::Eq,
        value: m.rep_id.clone(),
    };
    if matches!(
        t.cfg.appointments.entity.direction,
        Direction::Both | Direction::CrmToGraph
    ) {
        tables.push((Entity::Appointment, vec![rep.clone()]));
    }
    if matches!(
        t.cfg.tasks.direction,
        Direction::Both | Direction::CrmToGraph
    ) {
        tables.push((Entity::Task, vec![rep.clone()]));
    }
    for (entity, mut conds) in tables {
        conds.extend(changed_since(since, zone));
        let records = t
            .crm
            .query_all(
                &Query {
                    table: entity.crm_table().into(),
                    conditions: conds,
                    fields: cgc_core::mapping::records::read_fields(entity)
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                    max_records: Some(500),
                },
                None,
            )
            .await?;
        for r in records {
            let changed = cgc_crm::time::changed_at(&r.fields, zone);
            if let Some(c) = changed {
                newest = newest.max(Some(c));
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
    }
    // Linked CRM persons (contacts) of this mailbox that changed.
    if matches!(
        t.cfg.contacts.direction,
        Direction::Both | Direction::CrmToGraph
    ) {
        events.extend(poll_linked_persons(app, t, &m.mailbox, since).await?);
    }
    publish(app, events).await?;
    if let Some(wm) = newest.max(old_watermark) {
        app.state.put_watermark(&t.cfg.id, &wm_key, wm).await?;
    }
    Ok(())
}

async fn poll_linked_persons(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<EventV1>, Failure> {
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
    let conds: Vec<Cond> = changed_since(since, zone).into_iter().collect();
    let records = t
        .crm
        .query_all(
            &Query {
                table: "Person".into(),
                conditions: conds,
                fields: cgc_core::mapping::records::read_fields(Entity::Contact)
                    .iter()
                    .map(|f| f.to_string())
                    .collect(),
                max_records: Some(500),
            },
            None,
        )
        .await?;
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
