//! Every metric name the service exports, in one place (served with the `cgc_` prefix).

/// Events handled by workers, by `outcome` (a plan kind, `duplicate`, `retry`, `wait`, `dead`,
/// `refused_mailbox`).
pub const EVENTS: &str = "events_total";
/// Writes to Graph or CRM made by carrying out plans.
pub const WRITES: &str = "writes_total";
/// Change and lifecycle notifications received, by `outcome`.
pub const NOTIFICATIONS: &str = "notifications_total";
/// Notification POSTs, by `outcome` (`shed`, `timeout`, `too_large`, …).
pub const NOTIFICATION_BATCHES: &str = "notification_batches_total";
/// Subscription look-ups of the receiver, by `outcome` (cache or store).
pub const SUBSCRIPTION_LOOKUPS: &str = "subscription_lookups_total";
/// Graph subscriptions created, by tenant.
pub const SUBSCRIPTIONS_CREATED: &str = "subscriptions_created_total";
/// Lifecycle notifications handled, by `event`.
pub const LIFECYCLE_NOTIFICATIONS: &str = "lifecycle_notifications_total";
/// Scheduler jobs that failed for one mailbox, by tenant and `job`.
pub const SCHEDULER_ERRORS: &str = "scheduler_errors_total";
/// Role loops started again after a panic, by `role`.
pub const LOOP_RESTARTS: &str = "loop_restarts_total";
/// Conflicts parked for an operator, by tenant and entity.
pub const CONFLICTS: &str = "conflicts_total";
/// Messages archived into CRM, by tenant.
pub const EMAILS_ARCHIVED: &str = "emails_archived_total";
/// Messages that could not be archived (moved to the failure folder), by tenant.
pub const EMAILS_FAILED: &str = "emails_failed_total";
/// Items whose CRM-id mark names another rep's record (claim ignored), by tenant.
pub const FOREIGN_CRM_ID_CLAIMS: &str = "foreign_crm_id_claims_total";
/// Graph items with a time-zone name nobody knows (read as UTC), by tenant.
pub const UNKNOWN_TIME_ZONES: &str = "unknown_time_zones_total";
/// Destructive changes held by the mass-change guard, by tenant and mailbox.
pub const MASS_CHANGE_HELD: &str = "mass_change_held_total";
/// Deletes refused by the delta guard, by tenant.
pub const MASS_DELETE_REFUSED: &str = "mass_delete_refused_total";
/// Reps whose CRM e-mail address (so the mailbox read) changed, by tenant.
pub const REP_ADDRESS_CHANGES: &str = "rep_address_changes_total";
/// Graph writes the invitation guard held because they would mail attendees, by tenant and
/// `reason` (`past`, `first_sync`, `rate`).
pub const INVITATIONS_HELD: &str = "invitations_held_total";
/// Gauge: writes the invitation guard holds for a mailbox, by tenant and mailbox.
pub const INVITATIONS_WAITING: &str = "invitations_held";
/// Gauge: 1 while the mass-change guard holds a mailbox.
pub const MAILBOX_HELD: &str = "mailbox_held";
/// Gauge: malformed rows skipped in CRM answers, by tenant.
pub const CRM_MALFORMED_ROWS: &str = "crm_malformed_rows";
/// Gauge: malformed items skipped in Graph answers, by tenant.
pub const GRAPH_MALFORMED_ITEMS: &str = "graph_malformed_items";
/// Gauge: seconds until a subscription expires, by tenant, mailbox and resource (`events`,
/// `contacts`, `messages`); negative once it has.
pub const SUBSCRIPTION_EXPIRY_SECONDS: &str = "subscription_expiry_seconds";
/// Gauge: Unix time of the last event a worker of this process carried out for a mailbox, by
/// tenant and mailbox (a mailbox that stopped syncing stands still here).
pub const MAILBOX_LAST_SYNC: &str = "mailbox_last_sync_timestamp_seconds";
/// Summary: time from an event's receipt by a worker to its acknowledgement.
pub const EVENT_LATENCY_MS: &str = "event_latency_ms";
/// Decisions of the sync core for events carried out, by tenant and `kind` (a plan kind:
/// `noop`, `copy_to_graph`, `copy_to_crm`, `merge`, `conflict`, `create`, `delete`, `unlink`).
pub const DECISIONS: &str = "decisions_total";
/// Histogram: seconds from a change being observed (notification, delta or CRM poll) to the
/// other side written, for events that wrote, by `source` (`notification`, `delta`,
/// `crm_poll`, `lifecycle`, `admin`).
pub const SYNC_LATENCY: &str = "sync_latency_seconds";
/// Histogram: seconds of each Graph HTTP request (token requests aside), by tenant and `status`
/// (`error` when no answer came); `_count` counts requests.
pub const GRAPH_REQUESTS: &str = "graph_request_seconds";
/// Histogram: seconds of each CRM.interface request, by tenant and `status`.
pub const CRM_REQUESTS: &str = "crm_request_seconds";
/// Histogram: seconds a Graph request waited for a mailbox's throttling window (429
/// `Retry-After`), by tenant.
pub const THROTTLE_WAITS: &str = "graph_throttle_wait_seconds";
/// Gauge (at scrape time): queue messages by `state` (`ready`, `in_flight`, `delayed`).
pub const QUEUE_DEPTH: &str = "queue_depth";
/// Gauge (at scrape time): dead letters waiting for a replay.
pub const DEAD_LETTERS: &str = "dead_letters";
/// Gauge (at scrape time): conflicts waiting for an operator, by tenant.
pub const CONFLICTS_OPEN: &str = "conflicts_open";
/// Gauge: items a backfill has read so far, by tenant, mailbox and `resource` (`events`,
/// `contacts`, `tasks`: an initial delta round, i.e. the first sync of a mailbox, a new day's
/// calendar window or after an expired delta token; `crm`: a mailbox's first CRM poll).
pub const BACKFILL_ITEMS: &str = "backfill_items";
/// Gauge: 1 once a backfill of a mailbox's resource is complete, 0 while it runs.
pub const BACKFILL_DONE: &str = "backfill_done";

/// Metric exports to `[telemetry] otlp_endpoint` that failed (collector down or refusing).
pub const OTLP_EXPORT_FAILURES: &str = "otlp_export_failures_total";

/// Every name above.
pub const ALL: &[&str] = &[
    EVENTS,
    WRITES,
    NOTIFICATIONS,
    NOTIFICATION_BATCHES,
    SUBSCRIPTION_LOOKUPS,
    SUBSCRIPTIONS_CREATED,
    LIFECYCLE_NOTIFICATIONS,
    SCHEDULER_ERRORS,
    LOOP_RESTARTS,
    CONFLICTS,
    EMAILS_ARCHIVED,
    EMAILS_FAILED,
    FOREIGN_CRM_ID_CLAIMS,
    UNKNOWN_TIME_ZONES,
    MASS_CHANGE_HELD,
    MASS_DELETE_REFUSED,
    REP_ADDRESS_CHANGES,
    MAILBOX_HELD,
    INVITATIONS_HELD,
    INVITATIONS_WAITING,
    CRM_MALFORMED_ROWS,
    GRAPH_MALFORMED_ITEMS,
    SUBSCRIPTION_EXPIRY_SECONDS,
    MAILBOX_LAST_SYNC,
    EVENT_LATENCY_MS,
    DECISIONS,
    SYNC_LATENCY,
    GRAPH_REQUESTS,
    CRM_REQUESTS,
    THROTTLE_WAITS,
    QUEUE_DEPTH,
    DEAD_LETTERS,
    CONFLICTS_OPEN,
    BACKFILL_ITEMS,
    BACKFILL_DONE,
    OTLP_EXPORT_FAILURES,
];

/// The histograms among [`ALL`] (served as `_bucket`, `_sum` and `_count` series).
pub const HISTOGRAMS: &[&str] = &[SYNC_LATENCY, GRAPH_REQUESTS, CRM_REQUESTS, THROTTLE_WAITS];
/// The summaries among [`ALL`] (served as `_sum` and `_count` series).
pub const SUMMARIES: &[&str] = &[EVENT_LATENCY_MS];

/// Every series name `/metrics` can serve, with the `cgc_` prefix: a counter or gauge under its
/// name, a histogram as `_bucket`, `_sum` and `_count`, a summary as `_sum` and `_count`.
pub fn series_names() -> Vec<String> {
    let mut out = Vec::new();
    for name in ALL {
        let base = format!("cgc_{name}");
        if HISTOGRAMS.contains(name) {
            out.extend(["_bucket", "_sum", "_count"].map(|s| format!("{base}{s}")));
        } else if SUMMARIES.contains(name) {
            out.extend(["_sum", "_count"].map(|s| format!("{base}{s}")));
        } else {
            out.push(base);
        }
    }
    out
}
