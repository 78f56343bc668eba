//! Notable occurrences, one small struct each, whose `emit()` both logs and counts (as vector's
//! `internal_events` do): a name is spelt once, and nothing is logged without being counted.

use std::time::Duration;

use super::{Metrics, loggable_id, metric};

/// An event a worker carried out, with its plan kind as the outcome.
pub struct EventDone<'a> {
    pub tenant: &'a str,
    /// The mailbox, when it is one the tenant syncs (a refused event names none).
    pub mailbox: Option<&'a str>,
    pub outcome: &'a str,
    pub writes: usize,
    pub latency: Duration,
    /// How the change was seen (`notification`, `delta`, `crm_poll`, …) and when.
    pub source: &'a str,
    pub observed_at: chrono::DateTime<chrono::Utc>,
}

impl EventDone<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EVENTS, &[("outcome", self.outcome)]);
        m.inc(
            metric::DECISIONS,
            &[("tenant", self.tenant), ("kind", self.outcome)],
        );
        if self.writes > 0 {
            // Change observed → other side written (a clock skew between processes reads as 0).
            let ms = (chrono::Utc::now() - self.observed_at)
                .num_milliseconds()
                .max(0);
            m.observe(
                metric::SYNC_LATENCY,
                &[("source", self.source)],
                ms as f64 / 1000.0,
            );
        }
        if let Some(mailbox) = self.mailbox {
            m.set_gauge(
                metric::MAILBOX_LAST_SYNC,
                &[("tenant", self.tenant), ("mailbox", mailbox)],
                chrono::Utc::now().timestamp(),
            );
        }
        m.add(metric::WRITES, &[], self.writes as u64);
        m.observe_event_latency(self.latency.as_millis() as u64);
    }
}

/// An exact duplicate of an event already done (acknowledged, nothing read or written).
pub struct EventDuplicate;

impl EventDuplicate {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EVENTS, &[("outcome", "duplicate")]);
    }
}

/// A failed event that will be tried again after `delay`.
pub struct EventRetried<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub attempt: u32,
    pub delay: Duration,
    pub reason: &'a str,
}

impl EventRetried<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EVENTS, &[("outcome", "retry")]);
        m.note_error(
            &[("tenant", self.tenant), ("mailbox", self.mailbox)],
            self.reason,
        );
        tracing::warn!(tenant = %self.tenant, mailbox = %self.mailbox, attempt = self.attempt,
            delay = ?self.delay, reason = %self.reason, "event will be retried");
    }
}

/// An event waiting for a lease another worker holds (no attempt counted).
pub struct EventWaiting<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub after: Duration,
    pub reason: &'a str,
}

impl EventWaiting<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EVENTS, &[("outcome", "wait")]);
        tracing::info!(tenant = %self.tenant, mailbox = %self.mailbox, after = ?self.after,
            reason = %self.reason, "event waits for a lease");
    }
}

/// An event parked in the dead letters for an operator.
pub struct EventDeadLettered<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub reason: &'a str,
}

impl EventDeadLettered<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EVENTS, &[("outcome", "dead")]);
        m.note_error(
            &[("tenant", self.tenant), ("mailbox", self.mailbox)],
            self.reason,
        );
        tracing::error!(tenant = %self.tenant, mailbox = %self.mailbox, reason = %self.reason,
            "event parked in dead letters");
    }
}

/// A queue message that does not decode as an event (parked in the dead letters).
pub struct EventUnreadable<'a> {
    pub event: &'a str,
    pub error: &'a str,
}

impl EventUnreadable<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EVENTS, &[("outcome", "dead")]);
        tracing::error!(event = %self.event, error = %self.error, "unreadable event parked in dead letters");
    }
}

/// An event naming a mailbox outside the tenant's domains (nothing read or written).
pub struct MailboxRefused<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
}

impl MailboxRefused<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EVENTS, &[("outcome", "refused_mailbox")]);
        tracing::warn!(tenant = %self.tenant, mailbox = %loggable_id(self.mailbox),
            "event names a mailbox outside the tenant's domains; refused");
    }
}

/// A Graph item names a time zone nobody knows: its times are read as UTC.
pub struct UnknownTimeZone<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub item: &'a str,
    pub zone: &'a str,
}

impl UnknownTimeZone<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::UNKNOWN_TIME_ZONES, &[("tenant", self.tenant)]);
        tracing::warn!(tenant = %self.tenant, mailbox = %self.mailbox, item = %self.item, zone = %self.zone,
            "unknown time zone name; the item's times are read as UTC");
    }
}

/// An item's CRM-id mark names another rep's record: the claim is ignored.
pub struct ForeignCrmIdClaim<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub crm_id: u64,
}

impl ForeignCrmIdClaim<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::FOREIGN_CRM_ID_CLAIMS, &[("tenant", self.tenant)]);
        tracing::warn!(tenant = %self.tenant, mailbox = %self.mailbox, crm_id = self.crm_id,
            "the item claims a CRM record of another rep; claim ignored");
    }
}

/// A conflict parked for an operator: a real one (`conflict = "manual"`), or an unlinked item
/// several CRM records fit (`candidates`).
pub struct ConflictParked<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub entity: &'a str,
    pub conflict: &'a str,
    pub candidates: &'a [String],
}

impl ConflictParked<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(
            metric::CONFLICTS,
            &[("tenant", self.tenant), ("entity", self.entity)],
        );
        if self.candidates.is_empty() {
            tracing::warn!(tenant = %self.tenant, mailbox = %self.mailbox, conflict = %self.conflict,
                "conflict parked for an operator (conflict = \"manual\")");
        } else {
            tracing::warn!(tenant = %self.tenant, mailbox = %self.mailbox, conflict = %self.conflict,
                candidates = %self.candidates.join(","),
                "several CRM records match this Graph item; nothing created or linked until an operator picks one");
        }
    }
}

/// The mass-change guard holds a mailbox: a destructive change was refused and remembered.
pub struct MassChangeHeld<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub pairs: usize,
    pub share: f64,
    pub plan: &'a str,
}

impl MassChangeHeld<'_> {
    pub fn emit(&self, m: &Metrics) {
        let labels = [("tenant", self.tenant), ("mailbox", self.mailbox)];
        m.inc(metric::MASS_CHANGE_HELD, &labels);
        m.set_gauge(metric::MAILBOX_HELD, &labels, 1);
        tracing::error!(tenant = %self.tenant, mailbox = %self.mailbox, pairs = self.pairs, share = self.share,
            plan = %self.plan, "mass-change guard: too many deletes/unlinks in this mailbox; held, nothing changed; release it through the admin API once checked");
    }
}

/// A Graph write the invitation guard held (it would have mailed the attendees).
pub struct InvitationHeld<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub crm_id: u64,
    /// `past`, `first_sync` or `rate`.
    pub reason: &'a str,
    /// How many writes the mailbox now holds.
    pub held: usize,
}

impl InvitationHeld<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(
            metric::INVITATIONS_HELD,
            &[("tenant", self.tenant), ("reason", self.reason)],
        );
        m.set_gauge(
            metric::INVITATIONS_WAITING,
            &[("tenant", self.tenant), ("mailbox", self.mailbox)],
            self.held as i64,
        );
        tracing::warn!(tenant = %self.tenant, mailbox = %self.mailbox, crm_id = self.crm_id,
            reason = self.reason, "invitation guard: a write that would mail the attendees is held; list it with GET /admin/invitations, send it with POST /admin/invitations/release");
    }
}

/// An operator released a mailbox's held invitation-sending writes.
pub struct InvitationsReleased<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub writes: usize,
}

impl InvitationsReleased<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.set_gauge(
            metric::INVITATIONS_WAITING,
            &[("tenant", self.tenant), ("mailbox", self.mailbox)],
            0,
        );
        tracing::warn!(tenant = %self.tenant, mailbox = %self.mailbox, writes = self.writes,
            "invitation guard released by an operator: the held writes are queued again");
    }
}

/// A message archived into CRM (or found archived already).
pub struct EmailArchived<'a> {
    pub tenant: &'a str,
}

impl EmailArchived<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EMAILS_ARCHIVED, &[("tenant", self.tenant)]);
    }
}

/// A message that cannot be archived: moved to the failure folder.
pub struct EmailFailed<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub message: &'a str,
    pub reason: &'a str,
}

impl EmailFailed<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::EMAILS_FAILED, &[("tenant", self.tenant)]);
        tracing::error!(tenant = %self.tenant, mailbox = %self.mailbox, message = %self.message,
            reason = %self.reason, "message cannot be archived; moved to the failure folder");
    }
}

/// A rep's e-mail address changed in CRM: another mailbox is read from now on.
pub struct RepAddressChanged<'a> {
    pub tenant: &'a str,
    pub rep_id: &'a str,
    pub old: &'a str,
    pub new: &'a str,
}

impl RepAddressChanged<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.inc(metric::REP_ADDRESS_CHANGES, &[("tenant", self.tenant)]);
        tracing::warn!(tenant = %self.tenant, rep = %self.rep_id, old_mailbox = %self.old, new_mailbox = %self.new,
            "a rep's e-mail address changed in CRM: the connector now reads the new mailbox and stops reading the old one; check that the change was intended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_occurrence_counts_under_its_one_name() {
        let m = Metrics::default();
        EventRetried {
            tenant: "t",
            mailbox: "m",
            attempt: 1,
            delay: Duration::from_secs(1),
            reason: "r",
        }
        .emit(&m);
        EventDeadLettered {
            tenant: "t",
            mailbox: "m",
            reason: "r",
        }
        .emit(&m);
        EventDone {
            tenant: "t",
            mailbox: Some("m"),
            outcome: "create",
            writes: 2,
            latency: Duration::from_millis(5),
            source: "notification",
            observed_at: chrono::Utc::now() - chrono::Duration::seconds(3),
        }
        .emit(&m);
        assert_eq!(
            m.get(metric::DECISIONS, &[("tenant", "t"), ("kind", "create")]),
            1
        );
        assert_eq!(m.observations(metric::SYNC_LATENCY), 1);
        let text = m.render();
        assert!(
            text.contains("cgc_sync_latency_seconds_bucket{source=\"notification\",le=\"2.5\"} 0"),
            "observed 3 s ago: {text}"
        );
        assert!(
            text.contains("cgc_sync_latency_seconds_bucket{source=\"notification\",le=\"5\"} 1"),
            "{text}"
        );
        assert_eq!(m.get(metric::EVENTS, &[("outcome", "retry")]), 1);
        assert_eq!(m.get(metric::EVENTS, &[("outcome", "dead")]), 1);
        assert_eq!(m.get(metric::EVENTS, &[("outcome", "create")]), 1);
        assert_eq!(m.get(metric::WRITES, &[]), 2);
        let at = m.gauge(
            metric::MAILBOX_LAST_SYNC,
            &[("tenant", "t"), ("mailbox", "m")],
        );
        assert!(
            (at - chrono::Utc::now().timestamp()).abs() < 60,
            "the mailbox's last sync is now: {at}"
        );
        MassChangeHeld {
            tenant: "t",
            mailbox: "m",
            pairs: 9,
            share: 0.25,
            plan: "Delete",
        }
        .emit(&m);
        assert_eq!(
            m.gauge(metric::MAILBOX_HELD, &[("tenant", "t"), ("mailbox", "m")]),
            1
        );
        ConflictParked {
            tenant: "t",
            mailbox: "m",
            entity: "contact",
            conflict: "c1",
            candidates: &["1".into(), "2".into()],
        }
        .emit(&m);
        assert_eq!(
            m.get(metric::CONFLICTS, &[("tenant", "t"), ("entity", "contact")]),
            1
        );
    }

    #[test]
    fn every_metric_name_is_spelt_once() {
        let mut names = metric::ALL.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), metric::ALL.len());
    }
}
