//! The worker role: consume events, hand each to the pass it names (an item's sync pass, a
//! lifecycle notification, an archived message, a conflict resolution), then acknowledge, retry,
//! defer or dead-letter it.
//!
//! Failures are typed where they arise ([`SyncError`]) and decided in one place
//! ([`SyncError::disposition`]); this loop only carries the decision out. Nothing is acknowledged
//! before its writes and the idempotency mark are done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cgc_backends::{Claim, Delivery};
use cgc_core::{Cause, Entity, PlanKind};
use tracing::Instrument;

use crate::context::App;
use crate::event::{self, Change, EventKind, EventV1, Source};
use crate::sync::{Disposition, Pass, Processed, SyncError, noop};
use crate::telemetry::events::{
    EventDeadLettered, EventDone, EventDuplicate, EventRetried, EventUnreadable, EventWaiting,
    MailboxRefused,
};
use crate::telemetry::trace;

/// How long an idempotency claim is held while an event is processed.
const CLAIM_LEASE: Duration = Duration::from_secs(120);
/// How long a done mark is kept.
const DONE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One consumer loop: receive, process, ack / retry / dead-letter, until shutdown.
pub async fn consume(app: Arc<App>, n: usize) {
    tracing::debug!(consumer = n, "worker started");
    loop {
        if app.shutdown.is_cancelled() {
            break;
        }
        let received = tokio::select! {
            r = app.queue.receive(Duration::from_millis(500)) => r,
            _ = app.shutdown.cancelled() => break,
        };
        match received {
            Ok(Some(d)) => handle_delivery(&app, d).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "queue receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::debug!(consumer = n, "worker stopped");
}

fn backoff(app: &App, attempt: u32) -> Duration {
    let base = app.tuning.retry_base.as_millis() as u64;
    let exp = base.saturating_mul(1u64 << attempt.min(16));
    let capped = exp.min(app.tuning.retry_max.as_millis() as u64);
    // Jitter: up to +25 %.
    let jitter = rand::random::<u64>() % (capped / 4 + 1);
    Duration::from_millis(capped + jitter)
}

async fn handle_delivery(app: &Arc<App>, d: Delivery) {
    let started = Instant::now();
    let ev = match event::decode(&d.envelope.payload) {
        Ok(e) => e,
        Err(e) => {
            EventUnreadable {
                event: &d.envelope.id,
                error: &e.to_string(),
            }
            .emit(&app.metrics);
            let _ = app.queue.dead_letter(d, &e.to_string()).await;
            return;
        }
    };
    // One span per event, a child of the span that put it on the queue (its `traceparent`).
    let span = tracing::info_span!("event", tenant = %ev.tenant, mailbox = %ev.mailbox,
        event = %d.envelope.id, attempt = d.envelope.attempt,
        entity = tracing::field::Empty, item = tracing::field::Empty,
        decision = tracing::field::Empty, trace_id = tracing::field::Empty);
    crate::telemetry::record_subject(&span, &ev);
    trace::continue_from(&span, &d.envelope.headers);
    handle_event(app, d, ev, started).instrument(span).await
}

/// Claims, processes and settles one decoded event (inside its span).
async fn handle_event(app: &Arc<App>, d: Delivery, ev: EventV1, started: Instant) {
    let attempt = d.envelope.attempt;
    let event_id = d.envelope.id.clone();
    let key = ev.idempotency_key();
    let dedup = ev.dedupable();
    // The echo of our own write costs no store round trip (the claim included).
    if echoes_own_write(app, &ev) {
        EventDone {
            tenant: &ev.tenant,
            mailbox: None,
            outcome: outcome_label(&PlanKind::NoOp),
            writes: 0,
            latency: started.elapsed(),
            source: source_label(&ev.source),
            observed_at: ev.observed_at,
        }
        .emit(&app.metrics);
        app.note_outcome(outcome_label(&PlanKind::NoOp), OWN_WRITE);
        if let Err(e) = app.queue.ack(d).await {
            tracing::warn!(error = %e, "ack failed; the event will be redelivered and be a no-op");
        }
        return;
    }
    if dedup {
        match app.state.store().claim(&key, CLAIM_LEASE).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Done) => {
                EventDuplicate.emit(&app.metrics);
                let _ = app.queue.ack(d).await;
                return;
            }
            Ok(Claim::InProgress) => {
                // Events of one mailbox are never in flight twice at once (partitioned queue), so a
                // claim still in progress was left by a worker that died mid-event: take over.
                // Processing is safe to repeat: it reconciles by content and creates idempotently.
                tracing::info!(event = %d.envelope.id, "taking over an event a stopped worker had claimed");
            }
            Err(e) => {
                let delay = backoff(app, attempt);
                let _ = app.queue.retry(d, delay, &format!("store: {e}")).await;
                return;
            }
        }
    }
    let result = process(app, &ev, &event_id).await;
    match result {
        Ok(p) => {
            tracing::Span::current().record("decision", outcome_label(&p.kind));
            if dedup {
                if let Err(e) = app.state.store().complete(&key, DONE_RETENTION).await {
                    tracing::warn!(error = %e, "could not record the done mark; a duplicate will be a content no-op");
                }
            }
            let synced = app
                .tenant(&ev.tenant)
                .is_some_and(|t| t.cfg.owns_mailbox(&ev.mailbox));
            EventDone {
                tenant: &ev.tenant,
                mailbox: synced.then_some(ev.mailbox.as_str()),
                outcome: outcome_label(&p.kind),
                writes: p.writes,
                latency: started.elapsed(),
                source: source_label(&ev.source),
                observed_at: ev.observed_at,
            }
            .emit(&app.metrics);
            app.note_outcome(outcome_label(&p.kind), &p.reason);
            if let Err(e) = app.queue.ack(d).await {
                tracing::warn!(error = %e, "ack failed; the event will be redelivered and be a no-op");
            }
        }
        Err(f) => {
            if dedup {
                let _ = app.state.store().release(&key).await;
            }
            let reason = f.to_string();
            match f.disposition() {
                Disposition::Retry { after } => {
                    let delay = after.unwrap_or_else(|| backoff(app, attempt));
                    EventRetried {
                        tenant: &ev.tenant,
                        mailbox: &ev.mailbox,
                        attempt,
                        delay,
                        reason: &reason,
                    }
                    .emit(&app.metrics);
                    if let Err(e) = app.queue.retry(d, delay, &reason).await {
                        tracing::error!(error = %e, "retry could not be scheduled; the event stays in flight and will be redelivered");
                    }
                }
                Disposition::Wait { after } => {
                    EventWaiting {
                        tenant: &ev.tenant,
                        mailbox: &ev.mailbox,
                        after,
                        reason: &reason,
                    }
                    .emit(&app.metrics);
                    if let Err(e) = app.queue.defer(d, after, &reason).await {
                        tracing::error!(error = %e, "event could not be deferred; it stays in flight and will be redelivered");
                    }
                }
                Disposition::DeadLetter => {
                    EventDeadLettered {
                        tenant: &ev.tenant,
                        mailbox: &ev.mailbox,
                        reason: &reason,
                    }
                    .emit(&app.metrics);
                    if let Err(e) = app.queue.dead_letter(d, &reason).await {
                        tracing::error!(error = %e, "dead-letter failed; the event will be redelivered");
                    }
                }
            }
        }
    }
}

fn source_label(s: &event::Source) -> &'static str {
    match s {
        event::Source::Notification => "notification",
        event::Source::Delta => "delta",
        event::Source::CrmPoll => "crm_poll",
        event::Source::Lifecycle => "lifecycle",
        event::Source::Admin => "admin",
    }
}

fn outcome_label(k: &PlanKind) -> &'static str {
    match k {
        PlanKind::NoOp => "noop",
        PlanKind::CopyToGraph => "copy_to_graph",
        PlanKind::CopyToCrm => "copy_to_crm",
        PlanKind::Merge => "merge",
        PlanKind::Conflict => "conflict",
        PlanKind::Create => "create",
        PlanKind::Delete => "delete",
        PlanKind::Unlink => "unlink",
    }
}

const OWN_WRITE: &str = "the change key of our own write: the item holds what we wrote";

/// A Graph change naming the change key one of this process's own writes produced (not a
/// delete): the item holds what we wrote, so there is nothing to read, claim or decide.
fn echoes_own_write(app: &App, ev: &EventV1) -> bool {
    match &ev.kind {
        EventKind::GraphItem {
            item_id,
            change,
            etag: Some(etag),
            ..
        } if *change != Change::Deleted => {
            crate::sync::is_own_write(&ev.tenant, &ev.mailbox, item_id, etag, app)
        }
        _ => false,
    }
}

/// Processes one event; public so the demo and tests can drive it step by step.
pub async fn process(app: &Arc<App>, ev: &EventV1, event_id: &str) -> Result<Processed, SyncError> {
    let Some(tenant) = app.tenant(&ev.tenant) else {
        return Err(SyncError::Refused(format!(
            "unknown tenant {:?} (not in the config file)",
            ev.tenant
        )));
    };
    // A queue message is a claim: act only for a mailbox the tenant may sync.
    if !tenant.cfg.owns_mailbox(&ev.mailbox) {
        MailboxRefused {
            tenant: &ev.tenant,
            mailbox: &ev.mailbox,
        }
        .emit(&app.metrics);
        return Ok(noop(
            "mailbox outside the tenant's domains: nothing read or written",
        ));
    }
    let cause = match ev.source {
        Source::Notification | Source::Lifecycle => Cause::Notification,
        Source::Delta => Cause::Delta,
        Source::CrmPoll => Cause::CrmPoll,
        Source::Admin => Cause::ConflictResolution,
    };
    match &ev.kind {
        EventKind::Lifecycle {
            subscription_id,
            lifecycle_event,
        } => {
            crate::watch::lifecycle::on_lifecycle(
                app,
                tenant,
                &ev.mailbox,
                subscription_id,
                lifecycle_event,
            )
            .await?;
            Ok(Processed {
                kind: PlanKind::NoOp,
                reason: format!("lifecycle {lifecycle_event} handled"),
                writes: 0,
            })
        }
        EventKind::GraphItem {
            entity: Entity::Email,
            item_id,
            change,
            ..
        } => {
            if *change == Change::Deleted {
                return Ok(noop("a message left the archive folder"));
            }
            crate::sync::archive::archive_message(app, tenant, &ev.mailbox, item_id).await
        }
        EventKind::GraphItem {
            entity,
            item_id,
            change,
            list_id,
            ..
        } => {
            if echoes_own_write(app, ev) {
                return Ok(noop(OWN_WRITE));
            }
            let mut sync = Pass::new(app, tenant, &ev.mailbox, *entity, cause, event_id);
            sync.graph_observed_at = Some(ev.observed_at);
            sync.from_graph(item_id, *change, list_id.as_deref()).await
        }
        EventKind::Resolve {
            conflict_id,
            resolution,
            by,
        } => crate::sync::resolution::carry_out(app, conflict_id, resolution, by, event_id).await,
        EventKind::CrmRecord {
            entity,
            crm_id,
            first_sync,
            ..
        } => {
            let mut sync = Pass::new(app, tenant, &ev.mailbox, *entity, cause, event_id);
            sync.first_sync = *first_sync;
            sync.from_crm(*crm_id).await
        }
    }
}
