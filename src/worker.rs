//! Workers: consume events, fetch the changed item, reconcile with the other side and the shadow,
//! write the plan, record links, shadows and audit, then acknowledge.
//!
//! Failures are classified where they arise (`Failure`) and acted on in one place (`consume`):
//! retry later with the remote's Retry-After or backoff, or dead-letter with the reason. Nothing
//! is acknowledged before its writes and the idempotency mark are done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgc_backends::{Claim, Delivery};
use cgc_core::mapping::records;
use cgc_core::{
    Canonical, Cause, CrmFields, CrmItem, Entity, GraphItem, Input, MapContext, Op, Plan, PlanKind,
    SideState,
};
use cgc_crm::{Cond, CondOp, CrmError, ErrorCode, ExtLink, Query};
use cgc_graph::{CRM_ID_PROPERTY, GraphError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::Instrument;

use crate::context::{App, Tenant};
use crate::event::{self, Change, EventKind, EventV1, Source};
use crate::state::{AuditRecord, ConflictRecord, Link, State};

/// How a failed event is to be treated.
#[derive(Debug)]
pub enum Failure {
    /// Transient: try again after the given delay (or the ladder's own).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Waiting for something another worker holds (a create lease): try again after the delay
    /// without counting an attempt, so the retry ladder never gives up on it.
    Wait { after: Duration, reason: String },
    /// Permanent: park it for an operator, with the reason.
    Dead { reason: String },
}

impl From<GraphError> for Failure {
    fn from(e: GraphError) -> Self {
        if e.is_retryable() || matches!(e, GraphError::PreconditionFailed) {
            Failure::Retry {
                after: e.retry_after(),
                reason: format!("Graph: {e}"),
            }
        } else {
            Failure::Dead {
                reason: format!("Graph: {e}"),
            }
        }
    }
}

impl From<CrmError> for Failure {
    fn from(e: CrmError) -> Self {
        if e.is_retryable() {
            Failure::Retry {
                after: None,
                reason: format!("CRM.interface: {e}"),
            }
        } else {
            Failure::Dead {
                reason: format!("CRM.interface: {e}"),
            }
        }
    }
}

impl From<cgc_backends::StoreError> for Failure {
    fn from(e: cgc_backends::StoreError) -> Self {
        Failure::Retry {
            after: None,
            reason: format!("store: {e}"),
        }
    }
}

impl From<cgc_core::MapError> for Failure {
    fn from(e: cgc_core::MapError) -> Self {
        Failure::Dead {
            reason: format!("mapping: {e}"),
        }
    }
}

/// What one processed event did (for the demo, tests and logs).
#[derive(Clone, Debug)]
pub struct Processed {
    pub kind: PlanKind,
    pub reason: String,
    pub writes: usize,
}

/// Attendee addresses of one item looked up in CRM at most (the rest count as unknown persons).
pub const MAX_ATTENDEES_LOOKED_UP: usize = 200;
/// Entries the attendee look-up cache holds at most.
const PERSON_CACHE_MAX: usize = 20_000;

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
            app.metrics.inc("events_total", &[("outcome", "dead")]);
            tracing::error!(event = %d.envelope.id, error = %e, "unreadable event parked in dead letters");
            let _ = app.queue.dead_letter(d, &e.to_string()).await;
            return;
        }
    };
    let attempt = d.envelope.attempt;
    let event_id = d.envelope.id.clone();
    let key = ev.idempotency_key();
    let dedup = ev.dedupable();
    if dedup {
        match app.state.store().claim(&key, CLAIM_LEASE).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Done) => {
                app.metrics.inc("events_total", &[("outcome", "duplicate")]);
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
    let span =
        tracing::info_span!("event", tenant = %ev.tenant, mailbox = %ev.mailbox, event = %event_id);
    let result = process(app, &ev, &event_id).instrument(span).await;
    match result {
        Ok(p) => {
            if dedup {
                if let Err(e) = app.state.store().complete(&key, DONE_RETENTION).await {
                    tracing::warn!(error = %e, "could not record the done mark; a duplicate will be a content no-op");
                }
            }
            app.metrics
                .inc("events_total", &[("outcome", outcome_label(&p.kind))]);
            app.metrics.add("writes_total", &[], p.writes as u64);
            app.note_outcome(outcome_label(&p.kind), &p.reason);
            app.metrics
                .observe_event_latency(started.elapsed().as_millis() as u64);
            if let Err(e) = app.queue.ack(d).await {
                tracing::warn!(error = %e, "ack failed; the event will be redelivered and be a no-op");
            }
        }
        Err(f) => {
            if dedup {
                let _ = app.state.store().release(&key).await;
            }
            match f {
                Failure::Retry { after, reason } => {
                    let delay = after.unwrap_or_else(|| backoff(app, attempt));
                    app.metrics.inc("events_total", &[("outcome", "retry")]);
                    tracing::warn!(tenant = %ev.tenant, mailbox = %ev.mailbox, attempt, ?delay, %reason, "event will be retried");
                    if let Err(e) = app.queue.retry(d, delay, &reason).await {
                        tracing::error!(error = %e, "retry could not be scheduled; the event stays in flight and will be redelivered");
                    }
                }
                Failure::Wait { after, reason } => {
                    app.metrics.inc("events_total", &[("outcome", "wait")]);
                    tracing::info!(tenant = %ev.tenant, mailbox = %ev.mailbox, ?after, %reason, "event waits for a lease");
                    if let Err(e) = app.queue.defer(d, after, &reason).await {
                        tracing::error!(error = %e, "event could not be deferred; it stays in flight and will be redelivered");
                    }
                }
                Failure::Dead { reason } => {
                    app.metrics.inc("events_total", &[("outcome", "dead")]);
                    tracing::error!(tenant = %ev.tenant, mailbox = %ev.mailbox, %reason, "event parked in dead letters");
                    if let Err(e) = app.queue.dead_letter(d, &reason).await {
                        tracing::error!(error = %e, "dead-letter failed; the event will be redelivered");
                    }
                }
            }
        }
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

/// Processes one event; public so the demo and tests can drive it step by step.
pub async fn process(app: &Arc<App>, ev: &EventV1, event_id: &str) -> Result<Processed, Failure> {
    let Some(tenant) = app.tenant(&ev.tenant) else {
        return Err(Failure::Dead {
            reason: format!("unknown tenant {:?} (not in the config file)", ev.tenant),
        });
    };
    // A queue message is a claim: act only for a mailbox the tenant may sync.
    if !tenant.cfg.owns_mailbox(&ev.mailbox) {
        app.metrics
            .inc("events_total", &[("outcome", "refused_mailbox")]);
        tracing::warn!(tenant = %ev.tenant, mailbox = %crate::telemetry::loggable_id(&ev.mailbox),
            "event names a mailbox outside the tenant's domains; refused");
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
            crate::archive::archive_message(app, tenant, &ev.mailbox, item_id).await
        }
        EventKind::GraphItem {
            entity,
            item_id,
            change,
            list_id,
            ..
        } => {
            let mut sync = Sync::new(app, tenant, &ev.mailbox, *entity, cause, event_id);
            sync.graph_observed_at = Some(ev.observed_at);
            sync.from_graph(item_id, *change, list_id.as_deref()).await
        }
        EventKind::Resolve {
            conflict_id,
            resolution,
            by,
        } => crate::resolution::carry_out(app, conflict_id, resolution, by, event_id).await,
        EventKind::CrmRecord { entity, crm_id, .. } => {
            let sync = Sync::new(app, tenant, &ev.mailbox, *entity, cause, event_id);
            sync.from_crm(*crm_id).await
        }
    }
}

fn noop(reason: &str) -> Processed {
    Processed {
        kind: PlanKind::NoOp,
        reason: reason.to_string(),
        writes: 0,
    }
}

pub use cgc_graph::crm_id_on_item;

enum Matched {
    One(u64),
    /// Several CRM records fit (two persons share the e-mail address): create none, link none.
    Ambiguous(Vec<u64>),
    None,
}

/// One reconciliation of one item in one mailbox.
pub struct Sync<'a> {
    app: &'a Arc<App>,
    tenant: &'a Arc<Tenant>,
    mailbox: &'a str,
    entity: Entity,
    cause: Cause,
    event_id: &'a str,
    /// When the Graph-side change was observed (notification or delta), for `latest-change-wins`.
    pub graph_observed_at: Option<DateTime<Utc>>,
    /// The pair was found by matching (not from the store): its link marks are written on both systems.
    matched: std::sync::atomic::AtomicBool,
    /// Who resolved the conflict this sync writes (admin API), for the audit trail.
    pub resolved_by: Option<String>,
}

impl<'a> Sync<'a> {
    pub fn new(
        app: &'a Arc<App>,
        tenant: &'a Arc<Tenant>,
        mailbox: &'a str,
        entity: Entity,
        cause: Cause,
        event_id: &'a str,
    ) -> Self {
        Sync {
            app,
            tenant,
            mailbox,
            entity,
            cause,
            event_id,
            graph_observed_at: None,
            matched: std::sync::atomic::AtomicBool::new(false),
            resolved_by: None,
        }
    }

    fn state(&self) -> &State {
        &self.app.state
    }

    fn tid(&self) -> &str {
        &self.tenant.cfg.id
    }

    async fn graph_get(&self, id: &str, list_id: Option<&str>) -> Result<Option<Value>, Failure> {
        let g = &self.tenant.graph;
        Ok(match self.entity {
            Entity::Appointment => g.get_event(self.mailbox, id).await?,
            Entity::Contact => g.get_contact(self.mailbox, id).await?,
            Entity::Task => {
                let list = match list_id {
                    Some(l) => l.to_string(),
                    None => g.default_todo_list(self.mailbox).await?,
                };
                g.get_task(self.mailbox, &list, id).await?
            }
            Entity::Email => g.get_message(self.mailbox, id).await?,
        })
    }

    async fn crm_get(&self, id: u64) -> Result<Option<CrmFields>, Failure> {
        let r = self
            .tenant
            .crm
            .get(
                self.entity.crm_table(),
                id,
                records::read_fields(self.entity),
                Some(self.mailbox),
            )
            .await?;
        Ok(r.map(|r| r.fields))
    }

    /// Looks for the CRM record an unlinked Graph item belongs to: the CRM id it carries, the ExtKey
    /// row written on CRM, the iCalUId (one meeting for several reps, EWS migration), or the e-mail
    /// address for contacts. Returns the CRM id.
    async fn match_crm(&self, graph_id: &str, item: &Value) -> Result<Matched, Failure> {
        let crm = &self.tenant.crm;
        if let Some(id) = crm_id_on_item(item) {
            if let Some(f) = self.crm_get(id).await? {
                // The CRM id on an item is a claim by whoever edits the item: an appointment is
                // linked on it only when the record belongs to this rep (RepID or participant).
                let foreign =
                    self.entity == Entity::Appointment && self.out_of_scope(&f).await?.is_some();
                if foreign {
                    tracing::warn!(tenant = %self.tid(), mailbox = %self.mailbox, crm_id = id,
                        "the item claims a CRM record of another rep; claim ignored");
                    self.app
                        .metrics
                        .inc("foreign_crm_id_claims_total", &[("tenant", self.tid())]);
                } else if !records::is_deleted(&f) {
                    return Ok(Matched::One(id));
                }
            }
        }
        if let Some(row) = crm.find_link(graph_id).await? {
            if row.table_short == self.entity.crm_short() {
                return Ok(Matched::One(row.record_id));
            }
        }
        if self.entity == Entity::Appointment {
            if let Some(uid) = item.get("iCalUId").and_then(Value::as_str) {
                if let Some(row) = crm.find_link_by_uid(uid).await? {
                    if row.table_short == "MA" {
                        return Ok(Matched::One(row.record_id));
                    }
                }
            }
        }
        if self.entity == Entity::Contact {
            let addr = item
                .get("emailAddresses")
                .and_then(|a| a.get(0))
                .and_then(|a| a.get("address"))
                .and_then(Value::as_str)
                .map(|s| s.trim().to_ascii_lowercase());
            if let Some(addr) = addr.filter(|a| !a.is_empty()) {
                let found = crm
                    .query_all(
                        &Query {
                            table: "Person".into(),
                            conditions: vec![Cond {
                                field: "EMail".into(),
                                op: CondOp::Eq,
                                value: addr,
                            }],
                            fields: vec!["EMail".into(), "DelCd".into()],
                            max_records: Some(10),
                        },
                        None,
                    )
                    .await?;
                let live: Vec<u64> = found
                    .iter()
                    .filter(|r| !records::is_deleted(&r.fields))
                    .map(|r| r.id)
                    .collect();
                match live.len() {
                    0 => {}
                    1 => return Ok(Matched::One(live[0])),
                    _ => return Ok(Matched::Ambiguous(live)),
                }
            }
        }
        Ok(Matched::None)
    }

    /// Looks for the Graph item an unlinked CRM record belongs to: its ExtKey rows on CRM (our own
    /// GraphApi row by Graph id; an older connector's row, e.g. EWS, by its iCalUId), then the
    /// CRM-id property on Graph. Returns the Graph id and item.
    async fn match_graph(&self, crm_id: u64) -> Result<Option<(String, Value)>, Failure> {
        let rows = self
            .tenant
            .crm
            .query_all(
                &Query {
                    table: "ExtKey".into(),
                    conditions: vec![Cond {
                        field: "RecordId".into(),
                        op: CondOp::Eq,
                        value: crm_id.to_string(),
                    }],
                    fields: vec![
                        "ExtSystem".into(),
                        "ExtKey".into(),
                        "ExtUid".into(),
                        "TableShort".into(),
                        "DelCd".into(),
                    ],
                    max_records: Some(50),
                },
                None,
            )
            .await?;
        let g = &self.tenant.graph;
        let short = self.entity.crm_short();
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| !records::is_deleted(&r.fields))
            .filter(|r| {
                r.fields
                    .get("TableShort")
                    .is_none_or(|t| t.is_empty() || t == short)
            })
            .collect();
        for r in &rows {
            let system = r.fields.get("ExtSystem").map(String::as_str).unwrap_or("");
            if system.eq_ignore_ascii_case("GraphApi") {
                if let Some(gid) = r.fields.get("ExtKey").filter(|s| !s.is_empty()) {
                    if let Some(item) = self.graph_get(gid, None).await? {
                        return Ok(Some((gid.clone(), item)));
                    }
                }
            }
        }
        if self.entity == Entity::Appointment {
            // Migration (P9): a row of an older connector carries the iCalUId.
            for r in &rows {
                let Some(uid) = r.fields.get("ExtUid").filter(|s| !s.is_empty()) else {
                    continue;
                };
                if let Some(item) = g
                    .find_events_by_ical_uid(self.mailbox, uid)
                    .await?
                    .into_iter()
                    .next()
                {
                    if let Some(id) = item.get("id").and_then(Value::as_str) {
                        return Ok(Some((id.to_string(), item.clone())));
                    }
                }
            }
        }
        let found = match self.entity {
            Entity::Appointment => {
                g.find_event_by_crm_id(self.mailbox, &crm_id.to_string())
                    .await?
            }
            Entity::Contact => {
                g.find_contact_by_crm_id(self.mailbox, &crm_id.to_string())
                    .await?
            }
            _ => None,
        };
        Ok(found.and_then(|item| {
            let id = item.get("id").and_then(Value::as_str)?.to_string();
            Some((id, item))
        }))
    }

    /// Lower-cased attendee addresses that have a CRM person.
    async fn known_persons(
        &self,
        items: &[&Value],
        shadow: Option<&Canonical>,
    ) -> Result<BTreeSet<String>, Failure> {
        let mut addrs = BTreeSet::new();
        for item in items {
            for key in ["attendees"] {
                if let Some(list) = item.get(key).and_then(Value::as_array) {
                    for a in list {
                        if let Some(s) = a
                            .get("emailAddress")
                            .and_then(|e| e.get("address"))
                            .and_then(Value::as_str)
                        {
                            addrs.insert(s.trim().to_ascii_lowercase());
                        }
                    }
                }
            }
        }
        if let Some(Value::Array(list)) = shadow.map(|s| s.get("attendees")) {
            for a in list {
                if let Some(s) = a.get("address").and_then(Value::as_str) {
                    addrs.insert(s.to_ascii_lowercase());
                }
            }
        }
        let mut known = BTreeSet::new();
        if addrs.len() > MAX_ATTENDEES_LOOKED_UP {
            tracing::warn!(tenant = %self.tid(), mailbox = %self.mailbox, attendees = addrs.len(),
                cap = MAX_ATTENDEES_LOOKED_UP, "very large attendee list: only the first addresses are looked up in CRM");
        }
        for addr in addrs.into_iter().take(MAX_ATTENDEES_LOOKED_UP) {
            if addr.is_empty() {
                continue;
            }
            let cache_key = (self.tid().to_string(), addr.clone());
            let cached = self.app.person_cache.lock().ok().and_then(|c| {
                c.get(&cache_key)
                    .filter(|(_, at)| at.elapsed() < crate::context::PERSON_CACHE_TTL)
                    .map(|(k, _)| *k)
            });
            if let Some(is_known) = cached {
                if is_known {
                    known.insert(addr);
                }
                continue;
            }
            let found = self
                .tenant
                .crm
                .query(
                    &Query {
                        table: "Person".into(),
                        conditions: vec![Cond {
                            field: "EMail".into(),
                            op: CondOp::Eq,
                            value: addr.clone(),
                        }],
                        fields: vec!["EMail".into(), "DelCd".into()],
                        max_records: Some(5),
                    },
                    None,
                )
                .await?;
            let is_known = found
                .records
                .iter()
                .any(|r| !records::is_deleted(&r.fields));
            if let Ok(mut c) = self.app.person_cache.lock() {
                if c.len() >= PERSON_CACHE_MAX {
                    // Bounded: drop what has expired, and everything if that is not enough.
                    c.retain(|_, (_, at)| at.elapsed() < crate::context::PERSON_CACHE_TTL);
                    if c.len() >= PERSON_CACHE_MAX {
                        c.clear();
                    }
                }
                c.insert(cache_key, (is_known, Instant::now()));
            }
            if is_known {
                known.insert(addr);
            }
        }
        Ok(known)
    }

    /// The mapping context for these items: the attendee addresses that are CRM persons or
    /// synced reps of the tenant (a synced rep attending is a participant, expected-behaviour 32).
    pub async fn context(
        &self,
        items: &[&Value],
        shadow: Option<&Canonical>,
    ) -> Result<MapContext, Failure> {
        let known_person_emails = if self.entity == Entity::Appointment {
            let mut known = self.known_persons(items, shadow).await?;
            for m in self.state().mailboxes(self.tid()).await? {
                known.insert(m.mailbox.to_ascii_lowercase());
            }
            known
        } else {
            BTreeSet::new()
        };
        Ok(MapContext {
            crm_zone: self.tenant.cfg.crm_time_zone,
            known_person_emails,
        })
    }

    /// A Graph item changed.
    pub async fn from_graph(
        &self,
        graph_id: &str,
        change: Change,
        list_id: Option<&str>,
    ) -> Result<Processed, Failure> {
        let item = self.graph_get(graph_id, list_id).await?;
        let _ = change; // the current state decides, not the reported change type
        if self.entity == Entity::Appointment
            && item
                .as_ref()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
                == Some("occurrence")
        {
            // calendarView delta reports occurrences, never the master (expected-behaviour.md
            // 11): a plain occurrence is carried by its series master and creates nothing.
            return Ok(noop(
                "a plain occurrence of a series: its master carries it",
            ));
        }
        if self.entity == Entity::Appointment {
            if let Some(v) = &item {
                for zone in cgc_core::mapping::time::unknown_time_zones(v) {
                    // Kept in UTC, never dropped (expected-behaviour.md 40).
                    self.app
                        .metrics
                        .inc("unknown_time_zones_total", &[("tenant", self.tid())]);
                    tracing::warn!(tenant = %self.tid(), mailbox = %self.mailbox, item = %graph_id, zone = %zone,
                        "unknown time zone name; the item's times are read as UTC");
                }
            }
        }
        let mut link = self
            .state()
            .link_by_graph(self.tid(), self.entity, self.mailbox, graph_id)
            .await?;
        if link.is_none() {
            let Some(item) = &item else {
                return Ok(noop("item gone and never linked: nothing to do"));
            };
            match self.match_crm(graph_id, item).await? {
                Matched::One(crm_id) => {
                    link = Some(self.new_link(crm_id, graph_id, item, list_id));
                    self.matched
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Matched::Ambiguous(ids) => return self.park_ambiguous(graph_id, item, ids).await,
                Matched::None => {}
            }
        }
        let crm_fields = match &link {
            Some(l) => self.crm_get(l.crm_id).await?,
            None => None,
        };
        let crm_id = link.as_ref().map(|l| l.crm_id);
        self.reconcile(
            link,
            item,
            crm_fields,
            crm_id,
            graph_id.to_string(),
            list_id,
        )
        .await
    }

    /// An unlinked Graph item matches several CRM records: nothing is created or linked; an
    /// operator picks one through the admin API (`{"link": "<id>"}`).
    async fn park_ambiguous(
        &self,
        graph_id: &str,
        item: &Value,
        ids: Vec<u64>,
    ) -> Result<Processed, Failure> {
        let id = State::match_conflict_id(self.tid(), self.entity, self.mailbox, graph_id);
        let existing = self.state().conflict(&id).await?;
        let email = item
            .get("emailAddresses")
            .and_then(|a| a.get(0))
            .and_then(|a| a.get("address"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let candidates: Vec<String> = ids.iter().map(u64::to_string).collect();
        let rec = ConflictRecord {
            id: id.clone(),
            tenant: self.tid().to_string(),
            mailbox: self.mailbox.to_string(),
            entity: self.entity,
            crm_id: String::new(),
            graph_id: graph_id.to_string(),
            fields: vec![cgc_core::ConflictField {
                field: "email".into(),
                crm: Value::String(email.clone()),
                graph: Value::String(email),
                base: Value::Null,
            }],
            opened_at: existing.map(|c| c.opened_at).unwrap_or_else(Utc::now),
            candidates: candidates.clone(),
        };
        self.state().put_conflict(&rec).await?;
        self.app.metrics.inc(
            "conflicts_total",
            &[("tenant", self.tid()), ("entity", self.entity.as_str())],
        );
        tracing::warn!(tenant = %self.tid(), mailbox = %self.mailbox, conflict = %id, candidates = %candidates.join(","),
            "several CRM records match this Graph item; nothing created or linked until an operator picks one");
        Ok(Processed {
            kind: PlanKind::Conflict,
            reason: format!(
                "ambiguous match: CRM records {} fit; parked for an operator",
                candidates.join(", ")
            ),
            writes: 0,
        })
    }

    /// Links a Graph item to the CRM record an operator picked, then syncs the pair.
    pub async fn link_chosen(&self, graph_id: &str, crm_id: u64) -> Result<Processed, Failure> {
        let Some(item) = self.graph_get(graph_id, None).await? else {
            return Ok(noop("the Graph item is gone; nothing linked"));
        };
        let l = self.new_link(crm_id, graph_id, &item, None);
        self.mark_link(&l, Some(&item)).await?;
        self.state().put_link(self.tid(), &l).await?;
        self.from_graph(graph_id, Change::Updated, None).await
    }

    /// A CRM record changed.
    pub async fn from_crm(&self, crm_id: u64) -> Result<Processed, Failure> {
        let crm_fields = self.crm_get(crm_id).await?;
        let mut link = self
            .state()
            .link_by_crm(self.tid(), self.entity, self.mailbox, crm_id)
            .await?;
        let mut item = None;
        if let Some(l) = &link {
            item = self.graph_get(&l.graph_id, l.list_id.as_deref()).await?;
        } else {
            match &crm_fields {
                None => return Ok(noop("record gone and never linked: nothing to do")),
                Some(f) if records::is_deleted(f) => {
                    return Ok(noop("record deleted and never linked: nothing to do"));
                }
                Some(_) => {}
            }
            if let Some((gid, found)) = self.match_graph(crm_id).await? {
                link = Some(self.new_link(crm_id, &gid, &found, None));
                item = Some(found);
                self.matched
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let graph_id = link
            .as_ref()
            .map(|l| l.graph_id.clone())
            .unwrap_or_default();
        let list_id = link.as_ref().and_then(|l| l.list_id.clone());
        self.reconcile(
            link,
            item,
            crm_fields,
            Some(crm_id),
            graph_id,
            list_id.as_deref(),
        )
        .await
    }

    /// Writes the link on both systems for a pair found by matching (lost store, another rep's
    /// meeting, an older connector's key): our ExtKey row in CRM and the CRM id on the Graph item,
    /// unless they are already there.
    async fn mark_link(&self, l: &Link, item: Option<&Value>) -> Result<(), Failure> {
        let crm = &self.tenant.crm;
        let has_row = crm
            .find_link(&l.graph_id)
            .await?
            .is_some_and(|row| row.record_id == l.crm_id);
        if !has_row {
            crm.upsert_link(
                l.crm_id,
                &ExtLink {
                    ext_key: l.graph_id.clone(),
                    ext_uid: l.ical_uid.clone(),
                    table_short: self.entity.crm_short().into(),
                },
                Some(self.mailbox),
            )
            .await?;
        }
        let carries = item.and_then(crm_id_on_item) == Some(l.crm_id);
        if !carries {
            let g = &self.tenant.graph;
            let cid = l.crm_id.to_string();
            match self.entity {
                Entity::Appointment => g.set_event_crm_id(self.mailbox, &l.graph_id, &cid).await?,
                Entity::Contact => {
                    g.set_contact_crm_id(self.mailbox, &l.graph_id, &cid)
                        .await?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates the CRM record of a Graph item, once. Under a store lease (one meeting seen by
    /// several synced reps has one `iCalUId` but different mailboxes, so different partitions;
    /// any other item by its Graph id) it first looks for what a concurrent or an earlier try made
    /// — an ExtKey row, or a record made from Outlook whose link was never written because the
    /// answer was lost (expected-behaviour.md 27) — finishes that link and processes the event
    /// again (it then reconciles as a linked pair); only when nothing is found does it create.
    async fn create_crm_once(
        &self,
        table: &str,
        fields: &CrmFields,
        ext: &ExtLink,
        owner: &str,
    ) -> Result<u64, Failure> {
        let crm = &self.tenant.crm;
        let uid = ext
            .ext_uid
            .as_deref()
            .filter(|_| self.entity == Entity::Appointment);
        let lease_name = match uid {
            Some(uid) => format!("{}:create:ical:{uid}", self.tid()),
            None => format!(
                "{}:create:{}:g:{}",
                self.tid(),
                self.entity.as_str(),
                ext.ext_key
            ),
        };
        let holder = format!("{}:{}", self.app.instance, self.event_id);
        let Some(held) =
            crate::lease::acquire(self.app.state.store(), &lease_name, &holder).await?
        else {
            return Err(Failure::Wait {
                after: Duration::from_millis(500),
                reason: "the same item is being created by another worker".into(),
            });
        };
        let result = async {
            if crm
                .find_link(&ext.ext_key)
                .await?
                .is_some_and(|r| r.table_short == self.entity.crm_short())
            {
                return Err(Failure::Wait {
                    after: Duration::from_millis(50),
                    reason: "the CRM record was made meanwhile; processing again links it".into(),
                });
            }
            if let Some(uid) = uid {
                if crm.find_link_by_uid(uid).await?.is_some() {
                    return Err(Failure::Wait {
                        after: Duration::from_millis(50),
                        reason: "the meeting was created from another mailbox meanwhile; processing again links it".into(),
                    });
                }
            }
            if let Some(orphan) = self.find_orphan(table, fields).await? {
                crm.upsert_link(orphan, ext, Some(self.mailbox)).await?;
                tracing::info!(tenant = %self.tid(), mailbox = %self.mailbox, crm_id = orphan,
                    "found the record an earlier try made (its answer was lost); link finished");
                return Err(Failure::Wait {
                    after: Duration::from_millis(50),
                    reason: "finished the link of a record an earlier try made; processing again".into(),
                });
            }
            match crm.create_linked(table, fields, ext, Some(owner)).await {
                Ok(id) => Ok(id),
                Err(CrmError::LinkNotWritten { record_id, source }) => {
                    // The record exists; only its ExtKey row is missing: finish it, never create again.
                    tracing::warn!(crm_id = record_id, error = %source, "record created but its link was not written; finishing the link");
                    crm.upsert_link(record_id, ext, Some(self.mailbox)).await?;
                    Ok(record_id)
                }
                Err(e) => Err(e.into()),
            }
        }
        .await;
        held.release().await;
        result
    }

    /// Why a linked CRM appointment is no longer in this mailbox's scope, if it is not.
    async fn out_of_scope(&self, f: &CrmFields) -> Result<Option<&'static str>, Failure> {
        let mailbox = self.mailbox.to_ascii_lowercase();
        let rep = self
            .state()
            .mailboxes(self.tid())
            .await?
            .into_iter()
            .find(|m| m.mailbox == mailbox);
        Ok(records::left_scope(
            f,
            &mailbox,
            rep.as_ref().map(|r| r.rep_id.as_str()),
        ))
    }

    /// Creates the Graph item of a CRM record, once: under a store lease on the record, after
    /// looking for an item a concurrent or earlier try made (the CRM id it carries; for events
    /// the create's `transactionId` returns the first event anyway, expected-behaviour.md 6).
    async fn create_graph_once(
        &self,
        crm_id: u64,
        body: &Value,
        list_id: Option<&str>,
    ) -> Result<(Value, Option<String>), Failure> {
        let g = &self.tenant.graph;
        let cid = crm_id.to_string();
        let lease_name = format!(
            "{}:create:{}:c:{crm_id}:{}",
            self.tid(),
            self.entity.as_str(),
            self.mailbox.to_ascii_lowercase()
        );
        let holder = format!("{}:{}", self.app.instance, self.event_id);
        let Some(held) =
            crate::lease::acquire(self.app.state.store(), &lease_name, &holder).await?
        else {
            return Err(Failure::Wait {
                after: Duration::from_millis(500),
                reason: "the same record is being created in Graph by another worker".into(),
            });
        };
        let result = async {
            Ok(match self.entity {
                Entity::Appointment => {
                    let txn = transaction_id(self.tid(), crm_id);
                    (g.create_event(self.mailbox, body, &txn, &cid).await?, None)
                }
                Entity::Contact => {
                    if let Some(found) = g.find_contact_by_crm_id(self.mailbox, &cid).await? {
                        (found, None)
                    } else {
                        (g.create_contact(self.mailbox, body, &cid).await?, None)
                    }
                }
                Entity::Task => {
                    let list = match list_id {
                        Some(l) => l.to_string(),
                        None => g.default_todo_list(self.mailbox).await?,
                    };
                    // A task made by an earlier try whose ExtKey write failed or whose answer was
                    // lost carries the linkedResource: find it instead of creating a second one.
                    if let Some(found) = g.find_task_by_crm_id(self.mailbox, &list, &cid).await? {
                        (found, Some(list))
                    } else {
                        (
                            g.create_task(self.mailbox, &list, body, &cid).await?,
                            Some(list),
                        )
                    }
                }
                Entity::Email => {
                    return Err(Failure::Dead {
                        reason: "archived e-mail is one way (Graph to CRM)".into(),
                    });
                }
            })
        }
        .await;
        held.release().await;
        result
    }

    /// Whose record a new CRM appointment is: a meeting seen first through an attendee's copy
    /// belongs to its organizer when the organizer is a synced rep of the tenant (the record is
    /// created impersonating the organizer, so its `RepID` is the organizer's).
    async fn record_owner(&self, item: &Value) -> Result<String, Failure> {
        if self.entity != Entity::Appointment
            || item.get("isOrganizer").and_then(Value::as_bool) != Some(false)
        {
            return Ok(self.mailbox.to_string());
        }
        let Some(org) = item
            .pointer("/organizer/emailAddress/address")
            .and_then(Value::as_str)
            .map(|a| a.trim().to_ascii_lowercase())
        else {
            return Ok(self.mailbox.to_string());
        };
        let synced = self
            .state()
            .mailboxes(self.tid())
            .await?
            .iter()
            .any(|m| m.mailbox == org);
        Ok(if synced {
            org
        } else {
            self.mailbox.to_string()
        })
    }

    /// A record this connector made from Outlook whose link is missing: `F5021` (new from
    /// connector) set, the same day and subject, no live GraphApi ExtKey row. Only appointments
    /// carry the mark; exactly one such record is adopted, several are left alone.
    async fn find_orphan(&self, table: &str, fields: &CrmFields) -> Result<Option<u64>, Failure> {
        if table != "Contact" {
            return Ok(None);
        }
        let Some(date) = fields.get("Date").filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let crm = &self.tenant.crm;
        let found = crm
            .query_all(
                &Query {
                    table: table.into(),
                    conditions: vec![
                        Cond {
                            field: "F5021".into(),
                            op: CondOp::Eq,
                            value: "true".into(),
                        },
                        Cond {
                            field: "Date".into(),
                            op: CondOp::Eq,
                            value: date.clone(),
                        },
                    ],
                    fields: vec![
                        "Subject".into(),
                        "Time".into(),
                        "Contact".into(),
                        "DelCd".into(),
                    ],
                    max_records: Some(200),
                },
                Some(self.mailbox),
            )
            .await?;
        let same = |k: &str, r: &cgc_crm::Record| {
            let want = fields.get(k).map(|s| s.trim()).unwrap_or("");
            let have = r.fields.get(k).map(|s| s.trim()).unwrap_or("");
            want == have || (k == "Time" && have.get(..5) == want.get(..5))
        };
        let mut hits = Vec::new();
        for r in found.iter().filter(|r| !records::is_deleted(&r.fields)) {
            if !(same("Subject", r) && same("Time", r) && same("Contact", r)) {
                continue;
            }
            let rows = crm.link_rows_for_record(r.id).await?;
            if rows.is_empty() {
                hits.push(r.id);
            }
        }
        Ok((hits.len() == 1).then(|| hits[0]))
    }

    fn new_link(&self, crm_id: u64, graph_id: &str, item: &Value, list_id: Option<&str>) -> Link {
        Link {
            entity: self.entity,
            mailbox: self.mailbox.to_ascii_lowercase(),
            crm_id,
            graph_id: graph_id.to_string(),
            ical_uid: item
                .get("iCalUId")
                .and_then(Value::as_str)
                .map(str::to_string),
            organizer: item
                .get("isOrganizer")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            list_id: list_id.map(str::to_string),
        }
    }

    async fn reconcile(
        &self,
        link: Option<Link>,
        item: Option<Value>,
        crm_fields: Option<CrmFields>,
        crm_id: Option<u64>,
        graph_id: String,
        list_id: Option<&str>,
    ) -> Result<Processed, Failure> {
        let tenant = self.tenant;
        let now = Utc::now();
        let shadow = match &link {
            Some(l) => self.state().shadow(self.tid(), l).await?,
            None => None,
        };
        // Skip CRM appointments the connector must not sync.
        if self.entity == Entity::Appointment && link.is_none() {
            if let Some(f) = &crm_fields {
                if let Some(reason) = records::unlinked_appointment_skipped(f, item.is_some()) {
                    return Ok(noop(reason));
                }
            }
        }
        // Leaving scope is unlinking (expected-behaviour.md 36): the record's rep is no longer
        // this mailbox's owner (and the owner is no participant), or its type is no longer one
        // the connector syncs. Nothing is deleted or cancelled, and nothing is written.
        if self.entity == Entity::Appointment && link.is_some() {
            if let Some(f) = crm_fields.as_ref().filter(|f| !records::is_deleted(f)) {
                if let Some(why) = self.out_of_scope(f).await? {
                    return self
                        .apply(
                            Plan {
                                entity: self.entity,
                                kind: PlanKind::Unlink,
                                ops: vec![Op::Unlink],
                                new_shadow: None,
                                audit: Vec::new(),
                                reason: format!("{why}; unlinked, nothing deleted"),
                            },
                            link,
                            item,
                            crm_id,
                            graph_id,
                            list_id,
                        )
                        .await;
                }
            }
        }
        let empty = Value::Null;
        let ctx = self
            .context(&[item.as_ref().unwrap_or(&empty)], shadow.as_ref())
            .await?;
        let graph_side = match &item {
            Some(v) => SideState::Present(GraphItem {
                item: v.clone(),
                // The time we observed the Graph change; for a CRM-side event, Graph's own
                // lastModifiedDateTime. Either only matters when the content really differs
                // from the shadow, so a mere touch never wins a conflict.
                changed_at: self.graph_observed_at.or_else(|| {
                    v.get("lastModifiedDateTime")
                        .and_then(Value::as_str)
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|d| d.with_timezone(&Utc))
                }),
            }),
            None if link.is_some() => SideState::Deleted,
            None => SideState::Absent,
        };
        // A CRM record is deleted only when it is read back with DelCd = 1; one missing from an
        // answer (a restore, a lag, a permission change) is absent, and absence deletes nothing
        // (expected-behaviour.md 35). A Graph item is deleted when its GET answered 404.
        let crm_side = match &crm_fields {
            Some(f) if records::is_deleted(f) => SideState::Deleted,
            Some(f) => SideState::Present(CrmItem {
                fields: f.clone(),
                changed_at: cgc_crm::time::changed_at(f, tenant.cfg.crm_time_zone),
            }),
            None => SideState::Absent,
        };
        let organizer = match &item {
            Some(v) => v
                .get("isOrganizer")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            None => link.as_ref().map(|l| l.organizer).unwrap_or(true),
        };
        let policy = tenant.policy(self.entity);
        let window = (self.entity == Entity::Appointment).then(|| tenant.window(now));
        // Without a shadow (lost store, re-linked pair), the item's fingerprint of the last agreed
        // state lets the core tell an edit from a stale copy (expected-behaviour.md 38).
        let fingerprint = match (&shadow, &item) {
            (None, Some(v)) if carries_sync_state(self.entity) => {
                cgc_graph::extended_property(v, cgc_graph::SYNC_STATE_PROPERTY)
            }
            _ => None,
        };
        let plan = cgc_core::decide(&Input {
            fingerprint: fingerprint.as_deref(),
            entity: self.entity,
            shadow: shadow.as_ref(),
            graph: graph_side,
            crm: crm_side,
            graph_organizer: organizer,
            policy: &policy,
            ctx: &ctx,
            now,
            window,
            cause: self.cause,
        });
        tracing::info!(
            tenant = %self.tid(), mailbox = %self.mailbox, entity = self.entity.as_str(),
            item = %graph_id, plan = ?plan.kind, reason = %plan.reason, "reconciled"
        );
        let destructive = plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::DeleteGraph | Op::MarkCrmDeleted | Op::Unlink));
        if destructive && link.is_some() {
            let mailbox = self.mailbox.to_ascii_lowercase();
            let pairs = self
                .state()
                .links(self.tid())
                .await?
                .iter()
                .filter(|l| l.mailbox == mailbox)
                .count();
            let cfg = &tenant.cfg;
            let change = crate::guard::Pending {
                entity: self.entity,
                from_crm: self.cause == Cause::CrmPoll,
                crm_id: link.as_ref().map(|l| l.crm_id).or(crm_id),
                graph_id: link
                    .as_ref()
                    .map(|l| l.graph_id.clone())
                    .or_else(|| (!graph_id.is_empty()).then(|| graph_id.clone())),
                list_id: link.as_ref().and_then(|l| l.list_id.clone()),
            };
            let admit = crate::guard::admit(
                self.state(),
                self.tid(),
                &mailbox,
                cfg.mass_change_share,
                cfg.mass_change_window_seconds,
                pairs,
                change,
            )
            .await?;
            if admit == crate::guard::Admit::Held {
                self.app.metrics.inc(
                    "mass_change_held_total",
                    &[("tenant", self.tid()), ("mailbox", &mailbox)],
                );
                self.app.metrics.set_gauge(
                    "mailbox_held",
                    &[("tenant", self.tid()), ("mailbox", &mailbox)],
                    1,
                );
                tracing::error!(tenant = %self.tid(), mailbox = %mailbox, pairs, share = cfg.mass_change_share,
                    plan = ?plan.kind, "mass-change guard: too many deletes/unlinks in this mailbox; held, nothing changed; release it through the admin API once checked");
                // Nothing is written and the change is remembered: on release it is processed
                // again (the items are untouched on both sides meanwhile).
                return Ok(Processed {
                    kind: PlanKind::NoOp,
                    reason: "held by the mass-change guard; nothing changed, kept for release"
                        .into(),
                    writes: 0,
                });
            }
        }
        self.apply(plan, link, item, crm_id, graph_id, list_id)
            .await
    }

    /// Writes a plan: the operations in order, then link, shadow, conflict and audit.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        plan: Plan,
        mut link: Option<Link>,
        item: Option<Value>,
        crm_id: Option<u64>,
        graph_id: String,
        list_id: Option<&str>,
    ) -> Result<Processed, Failure> {
        let tenant = self.tenant;
        let g = &tenant.graph;
        let crm = &tenant.crm;
        let table = self.entity.crm_table();
        let mut writes = 0usize;
        let mut unlinked = false;
        let etag = item
            .as_ref()
            .and_then(|v| v.get("@odata.etag").and_then(Value::as_str))
            .map(str::to_string);
        // The fingerprint of the new agreed state travels on the Graph item: inside the plan's own
        // Graph write when there is one, else in one PATCH of the property alone (no meeting mail).
        let mut fp_pending: Option<String> = if carries_sync_state(self.entity) {
            plan.fingerprint().filter(|fp| {
                item.as_ref()
                    .and_then(|v| cgc_graph::extended_property(v, cgc_graph::SYNC_STATE_PROPERTY))
                    .as_deref()
                    != Some(fp.as_str())
            })
        } else {
            None
        };
        for op in &plan.ops {
            match op {
                Op::CreateCrm { fields } => {
                    let item = item.as_ref().ok_or_else(|| Failure::Dead {
                        reason: "plan creates a CRM record without a Graph item".into(),
                    })?;
                    let ext = ExtLink {
                        ext_key: graph_id.clone(),
                        ext_uid: item
                            .get("iCalUId")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        table_short: self.entity.crm_short().into(),
                    };
                    let mut fields = fields.clone();
                    if table == "Contact" {
                        // "new from connector": marks a record made from Outlook (never mirrored back).
                        fields.insert("F5021".into(), "true".into());
                    }
                    let owner = self.record_owner(item).await?;
                    let crm_id = self.create_crm_once(table, &fields, &ext, &owner).await?;
                    writes += 1;
                    let l = self.new_link(crm_id, &graph_id, item, list_id);
                    // Stamp the CRM id (and the agreed state) on the Graph item too, so a lost
                    // store is rebuilt by matching: one PATCH of the two properties.
                    let cid = crm_id.to_string();
                    let mut props: Vec<(&str, &str)> = vec![(CRM_ID_PROPERTY, &cid)];
                    let fp = fp_pending.take();
                    if let Some(fp) = &fp {
                        props.push((cgc_graph::SYNC_STATE_PROPERTY, fp));
                    }
                    match self.entity {
                        Entity::Appointment => {
                            g.set_event_properties(self.mailbox, &graph_id, &props)
                                .await?
                        }
                        Entity::Contact => {
                            g.set_contact_properties(self.mailbox, &graph_id, &props)
                                .await?
                        }
                        _ => {}
                    }
                    link = Some(l);
                }
                Op::CreateGraph { body } => {
                    let crm_id = link.as_ref().map(|l| l.crm_id).or(crm_id).ok_or_else(|| {
                        Failure::Dead {
                            reason: "plan creates a Graph item without a CRM record id".into(),
                        }
                    })?;
                    let body = match fp_pending.take() {
                        Some(fp) => with_property(body, cgc_graph::SYNC_STATE_PROPERTY, &fp),
                        None => body.clone(),
                    };
                    let (created, list) = self.create_graph_once(crm_id, &body, list_id).await?;
                    writes += 1;
                    let gid = created
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let l = self.new_link(crm_id, &gid, &created, list.as_deref());
                    crm.upsert_link(
                        crm_id,
                        &ExtLink {
                            ext_key: gid.clone(),
                            ext_uid: l.ical_uid.clone(),
                            table_short: self.entity.crm_short().into(),
                        },
                        Some(self.mailbox),
                    )
                    .await?;
                    link = Some(l);
                }
                Op::UpdateGraph { patch } => {
                    let l = link.as_ref().ok_or_else(|| Failure::Dead {
                        reason: "plan updates Graph without a link".into(),
                    })?;
                    let patch = match fp_pending.take() {
                        Some(fp) => with_property(patch, cgc_graph::SYNC_STATE_PROPERTY, &fp),
                        None => patch.clone(),
                    };
                    let patch = &patch;
                    match self.entity {
                        Entity::Appointment => {
                            g.update_event(self.mailbox, &l.graph_id, patch, etag.as_deref())
                                .await?;
                        }
                        Entity::Contact => {
                            g.update_contact(self.mailbox, &l.graph_id, patch, etag.as_deref())
                                .await?;
                        }
                        Entity::Task => {
                            let list = match &l.list_id {
                                Some(x) => x.clone(),
                                None => g.default_todo_list(self.mailbox).await?,
                            };
                            g.update_task(self.mailbox, &list, &l.graph_id, patch)
                                .await?;
                        }
                        Entity::Email => {}
                    }
                    writes += 1;
                }
                Op::DeleteGraph => {
                    if let Some(l) = &link {
                        match self.entity {
                            Entity::Appointment => {
                                g.delete_event(self.mailbox, &l.graph_id).await?
                            }
                            Entity::Contact => g.delete_contact(self.mailbox, &l.graph_id).await?,
                            Entity::Task => {
                                let list = match &l.list_id {
                                    Some(x) => x.clone(),
                                    None => g.default_todo_list(self.mailbox).await?,
                                };
                                g.delete_task(self.mailbox, &list, &l.graph_id).await?
                            }
                            Entity::Email => {}
                        }
                        writes += 1;
                        unlinked = true;
                    }
                }
                Op::UpdateCrm { fields } => {
                    let l = link.as_ref().ok_or_else(|| Failure::Dead {
                        reason: "plan updates CRM without a link".into(),
                    })?;
                    crm_update(crm, table, l.crm_id, fields, self.mailbox).await?;
                    writes += 1;
                }
                Op::MarkCrmDeleted => {
                    if let Some(l) = &link {
                        if table == "Contact" {
                            let mut f = BTreeMap::new();
                            f.insert("ConnectorDeleted".to_string(), "true".to_string());
                            crm_update(crm, table, l.crm_id, &f, self.mailbox).await?;
                            writes += 1;
                        }
                        unlinked = true;
                    }
                }
                Op::Unlink => unlinked = true,
                Op::RaiseConflict { fields } => {
                    if let Some(l) = &link {
                        let id =
                            State::conflict_id(self.tid(), self.entity, self.mailbox, l.crm_id);
                        let opened_at = match self.state().conflict(&id).await? {
                            Some(c) => c.opened_at,
                            None => Utc::now(),
                        };
                        self.state()
                            .put_conflict(&ConflictRecord {
                                id: id.clone(),
                                tenant: self.tid().to_string(),
                                mailbox: self.mailbox.to_string(),
                                entity: self.entity,
                                crm_id: l.crm_id.to_string(),
                                graph_id: l.graph_id.clone(),
                                fields: fields.clone(),
                                opened_at,
                                candidates: Vec::new(),
                            })
                            .await?;
                        self.app.metrics.inc(
                            "conflicts_total",
                            &[("tenant", self.tid()), ("entity", self.entity.as_str())],
                        );
                        tracing::warn!(tenant = %self.tid(), mailbox = %self.mailbox, conflict = %id,
                            "conflict parked for an operator (conflict = \"manual\")");
                    }
                }
            }
        }
        // Link and shadow.
        if let Some(l) = &link {
            if unlinked || plan.new_shadow.is_none() {
                self.state().remove_link(self.tid(), l).await?;
            } else if let Some(s) = &plan.new_shadow {
                if self.matched.load(std::sync::atomic::Ordering::Relaxed) {
                    self.mark_link(l, item.as_ref()).await?;
                }
                if let Some(fp) = fp_pending.take() {
                    match self.entity {
                        Entity::Appointment => {
                            g.set_event_properties(
                                self.mailbox,
                                &l.graph_id,
                                &[(cgc_graph::SYNC_STATE_PROPERTY, &fp)],
                            )
                            .await?
                        }
                        Entity::Contact => {
                            g.set_contact_properties(
                                self.mailbox,
                                &l.graph_id,
                                &[(cgc_graph::SYNC_STATE_PROPERTY, &fp)],
                            )
                            .await?
                        }
                        _ => {}
                    }
                }
                self.state().put_link(self.tid(), l).await?;
                self.state().put_shadow(self.tid(), l, s).await?;
            }
        }
        for entry in &plan.audit {
            self.state()
                .audit(
                    self.tid(),
                    &AuditRecord {
                        at: Utc::now(),
                        tenant: self.tid().to_string(),
                        mailbox: self.mailbox.to_string(),
                        crm_id: link.as_ref().map(|l| l.crm_id),
                        graph_id: link.as_ref().map(|l| l.graph_id.clone()),
                        event_id: self.event_id.to_string(),
                        entry: entry.clone(),
                        resolved_by: self.resolved_by.clone(),
                    },
                )
                .await?;
        }
        Ok(Processed {
            kind: plan.kind.clone(),
            reason: plan.reason.clone(),
            writes,
        })
    }
}

/// Entities whose Graph items carry the fingerprint of the last agreed state.
fn carries_sync_state(e: Entity) -> bool {
    matches!(e, Entity::Appointment | Entity::Contact)
}

/// `v` with the single-value extended property `id` set to `value` (others kept).
fn with_property(v: &Value, id: &str, value: &str) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        let mut props: Vec<Value> = m
            .get("singleValueExtendedProperties")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|p| !p["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        props.push(serde_json::json!({"id": id, "value": value}));
        m.insert("singleValueExtendedProperties".into(), Value::Array(props));
    }
    v
}

/// Stable Graph `transactionId` for creating the event of a CRM record: a retried create returns
/// the event made the first time.
pub fn transaction_id(tenant: &str, crm_id: u64) -> String {
    format!("cgc-{tenant}-{crm_id}")
}

async fn crm_update(
    crm: &cgc_crm::CrmClient,
    table: &str,
    id: u64,
    fields: &BTreeMap<String, String>,
    mailbox: &str,
) -> Result<(), Failure> {
    match crm.update(table, id, fields, Some(mailbox)).await {
        Ok(()) => Ok(()),
        Err(CrmError::Remote {
            code: ErrorCode::Locked,
            message,
        }) => Err(Failure::Retry {
            after: None,
            reason: format!("CRM record {id} is locked: {message}"),
        }),
        Err(e) => Err(e.into()),
    }
}
