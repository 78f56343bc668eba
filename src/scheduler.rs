//! The scheduler: runs the watch jobs (`crate::watch`) on time for every tenant and mailbox —
//! the mailbox list, subscriptions, delta catch-up, the CRM poller and the To Do poller — and
//! renews subscriptions. Safe to run in several processes: a store lease elects the active one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Direction, TenantConfig};
use crate::context::{App, Tenant};
use crate::lease::Leadership;
use crate::state::MailboxRecord;
use crate::telemetry::{metric, trace};
use crate::watch::{self, WatchError};
use tracing::Instrument;

/// The active scheduler renews its lease every tick; a scheduler that died is replaced after this.
const LEADER_LEASE: Duration = Duration::from_secs(15);
/// How often missing subscriptions (e.g. a failed recreate) are looked for.
const SUBSCRIPTION_CHECK_SECS: u64 = 60;
/// Longest pause of a failing mailbox's job.
const MAILBOX_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// The scheduler's per-mailbox jobs; a failure of one never stops another or another mailbox's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Job {
    Subscriptions,
    Delta,
    CrmPoll,
    TodoPoll,
}

/// The per-mailbox jobs in the order they run each tick (the mailbox list is read before them).
const JOBS: [Job; 4] = [Job::Subscriptions, Job::Delta, Job::CrmPoll, Job::TodoPoll];

impl Job {
    fn as_str(self) -> &'static str {
        match self {
            Job::Subscriptions => "subscriptions",
            Job::Delta => "delta",
            Job::CrmPoll => "crm_poll",
            Job::TodoPoll => "todo_poll",
        }
    }

    /// How often the job runs, in seconds.
    fn every_secs(self, cfg: &TenantConfig) -> u64 {
        match self {
            Job::Subscriptions => SUBSCRIPTION_CHECK_SECS,
            Job::Delta => cfg.safety_delta_seconds,
            Job::CrmPoll => cfg.crm_poll_seconds,
            Job::TodoPoll => cfg.todo_poll_seconds,
        }
    }

    /// Whether the tenant has anything for the job to do (To Do may be switched off).
    fn applies(self, cfg: &TenantConfig) -> bool {
        self != Job::TodoPoll || cfg.tasks.direction != Direction::Off
    }

    /// Runs the job for one mailbox; true when subscriptions were created (a catch-up follows).
    async fn run(
        self,
        app: &Arc<App>,
        t: &Arc<Tenant>,
        m: &MailboxRecord,
        public_url: &str,
    ) -> Result<bool, WatchError> {
        let mailbox = m.mailbox.as_str();
        match self {
            Job::Subscriptions => {
                watch::subscriptions::ensure_subscriptions(app, t, mailbox, public_url).await
            }
            Job::Delta => watch::delta::catch_up(app, t, mailbox)
                .await
                .map(|()| false),
            Job::CrmPoll => watch::crm_poll::poll_crm_mailbox(app, t, m)
                .await
                .map(|()| false),
            Job::TodoPoll => watch::delta::poll_tasks(app, t, mailbox)
                .await
                .map(|()| false),
        }
    }
}

#[derive(Default)]
struct Due {
    mailboxes: Option<Instant>,
    /// When each per-mailbox job last ran for the tenant (none yet: due now).
    last: HashMap<Job, Instant>,
    /// Mailboxes found by the last refresh.
    known_mailboxes: usize,
    /// Per (job, mailbox): consecutive failures and when the next try is allowed.
    backoff: HashMap<(Job, String), (u32, Instant)>,
}

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
        r: Result<(), WatchError>,
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
                    metric::SCHEDULER_ERRORS,
                    &[("tenant", tenant), ("job", job.as_str())],
                );
                app.metrics.note_error(
                    &[("tenant", tenant), ("mailbox", mailbox)],
                    &format!("{} job: {e}", job.as_str()),
                );
                tracing::warn!(tenant, mailbox, job = job.as_str(), failures = n, ?pause, error = ?e,
                    "scheduler job failed for this mailbox; other mailboxes go on, this one is tried again later");
                false
            }
        }
    }
}

/// The span of one job run: the events it publishes carry its trace context, so their
/// processing in the worker joins the job's trace (scheduler → queue → worker).
fn job_span(job: &'static str, tenant: &str, mailbox: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        job,
        tenant,
        mailbox,
        trace_id = tracing::field::Empty
    );
    trace::note_trace_id(&span);
    span
}

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
            if let Err(e) = watch::subscriptions::renew_due(&app).await {
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

/// One tenant's round: the mailbox list when due, then every due job for every mailbox.
async fn tick(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    d: &mut Due,
    public_url: &str,
) -> Result<(), WatchError> {
    let tid = t.cfg.id.as_str();
    refresh_if_due(app, t, d, public_url).await?;
    let mailboxes = app.state.mailboxes(tid).await?;
    for job in JOBS {
        if !is_due(d.last.get(&job).copied(), job.every_secs(&t.cfg)) {
            continue;
        }
        let mut created = false;
        if job.applies(&t.cfg) {
            for m in &mailboxes {
                if d.blocked(job, &m.mailbox) {
                    continue;
                }
                let span = job_span(job.as_str(), tid, &m.mailbox);
                let r = job.run(app, t, m, public_url).instrument(span).await;
                created |= matches!(r, Ok(true));
                d.record(app, tid, job, &m.mailbox, r.map(|_| ()));
            }
        }
        d.last.insert(job, Instant::now());
        if created {
            // Changes made while a mailbox had no subscription are found by delta.
            d.last.remove(&Job::Delta);
        }
    }
    Ok(())
}

/// Reads the mailbox list when due, or at once when the store lost it.
async fn refresh_if_due(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    d: &mut Due,
    public_url: &str,
) -> Result<(), WatchError> {
    let tid = t.cfg.id.as_str();
    // The store lost its data (e.g. Redis flushed) when the mailboxes we wrote are gone: refresh at once.
    let lost = d.known_mailboxes > 0 && app.state.mailboxes(tid).await?.is_empty();
    if !lost && !is_due(d.mailboxes, t.cfg.mailbox_refresh_seconds) {
        return Ok(());
    }
    if lost {
        tracing::warn!(tenant = %tid, "store lost its mailbox list: re-reading reps, re-subscribing, catching up");
    }
    let refreshed = watch::mailboxes::refresh_mailboxes(app, t, public_url)
        .instrument(job_span("mailboxes", tid, ""))
        .await;
    match refreshed {
        Ok(()) => {
            d.mailboxes = Some(Instant::now());
            // A fresh mailbox list starts with a catch-up.
            d.last.remove(&Job::Delta);
        }
        Err(e) => {
            // The known mailboxes keep syncing; the rep list is read again next tick.
            app.metrics.inc(
                metric::SCHEDULER_ERRORS,
                &[("tenant", tid), ("job", "mailboxes")],
            );
            tracing::warn!(tenant = %tid, error = ?e, "rep list could not be read; known mailboxes go on syncing");
        }
    }
    d.known_mailboxes = app.state.mailboxes(tid).await?.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
