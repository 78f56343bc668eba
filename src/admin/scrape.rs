//! Gauges read at scrape time (`GET /metrics`, and before each OTLP metrics export): what the clients skipped, each subscription's
//! expiry horizon, the queue's depth and dead letters, and the conflicts waiting.

use crate::context::App;
use crate::telemetry::metric;

/// Sets every scrape-time gauge from the clients, the store and the queue. A back end that
/// cannot be read leaves its gauges at their last value (the scrape still answers).
pub(crate) async fn refresh(app: &App) {
    // Rows and items the clients skipped as malformed (never an error for an unrelated event).
    for t in app.tenants.values() {
        let labels = [("tenant", t.cfg.id.as_str())];
        app.metrics.set_gauge(
            metric::CRM_MALFORMED_ROWS,
            &labels,
            t.crm.malformed_rows() as i64,
        );
        app.metrics.set_gauge(
            metric::GRAPH_MALFORMED_ITEMS,
            &labels,
            t.graph.malformed_items() as i64,
        );
    }
    // How long each subscription has left: a mailbox that stopped renewing shows here first.
    if let Ok(subs) = app.state.subscriptions().await {
        let now = chrono::Utc::now();
        for s in subs {
            let resource = s.resource.rsplit('/').next().unwrap_or("").to_string();
            app.metrics.set_gauge(
                metric::SUBSCRIPTION_EXPIRY_SECONDS,
                &[
                    ("tenant", s.tenant.as_str()),
                    ("mailbox", s.mailbox.as_str()),
                    ("resource", resource.as_str()),
                ],
                (s.expiration - now).num_seconds(),
            );
        }
    }
    match app.queue.depth().await {
        Ok(d) => {
            for (state, n) in [
                ("ready", d.ready),
                ("in_flight", d.in_flight),
                ("delayed", d.delayed),
            ] {
                app.metrics
                    .set_gauge(metric::QUEUE_DEPTH, &[("state", state)], n as i64);
            }
            app.metrics
                .set_gauge(metric::DEAD_LETTERS, &[], d.dead as i64);
        }
        Err(e) => tracing::debug!(error = %e, "queue depth not read for /metrics"),
    }
    if let Ok(conflicts) = app.state.conflicts().await {
        // Every tenant shows, 0 when none waits (a resolved last conflict goes back to 0).
        let mut open: std::collections::BTreeMap<&str, i64> =
            app.tenants.keys().map(|k| (k.as_str(), 0)).collect();
        for c in &conflicts {
            if let Some(n) = open.get_mut(c.tenant.as_str()) {
                *n += 1;
            }
        }
        for (tenant, n) in open {
            app.metrics
                .set_gauge(metric::CONFLICTS_OPEN, &[("tenant", tenant)], n);
        }
    }
}
