//! Lifecycle notifications (SCENARIOS.md P4): Graph tells that a subscription needs renewing, was
//! removed, or missed notifications. Called by the worker for lifecycle events.

use std::sync::Arc;

use super::subscriptions::{create_subscription, public_url_of, renew};
use super::{WatchError, delta};
use crate::context::{App, Tenant};
use crate::telemetry::metric;

/// Acts on one lifecycle notification of a known subscription: `reauthorizationRequired`
/// renews it, `subscriptionRemoved` makes it again and catches up, `missed` catches up.
pub async fn on_lifecycle(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    subscription_id: &str,
    lifecycle_event: &str,
) -> Result<(), WatchError> {
    let Some(s) = app.state.subscription(subscription_id).await? else {
        return Ok(());
    };
    // The event name is the sender's text: only the known ones become metric labels.
    let label = match lifecycle_event {
        "reauthorizationRequired" | "subscriptionRemoved" | "missed" => lifecycle_event,
        _ => "other",
    };
    app.metrics
        .inc(metric::LIFECYCLE_NOTIFICATIONS, &[("event", label)]);
    match lifecycle_event {
        "reauthorizationRequired" => renew(app, t, s).await,
        "subscriptionRemoved" => {
            app.state.remove_subscription(&s.id).await?;
            let public = public_url_of(app);
            create_subscription(app, t, mailbox, &s.resource, &public).await?;
            delta::catch_up(app, t, mailbox).await
        }
        "missed" => delta::catch_up(app, t, mailbox).await,
        other => {
            tracing::warn!(event = %crate::telemetry::loggable_id(other), "unknown lifecycle event ignored");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::MAILBOX;
    use crate::testing::TestApp;

    #[tokio::test]
    async fn reauthorization_required_renews_the_subscription() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        crate::watch::subscriptions::ensure_subscriptions(app, &t, MAILBOX, &app.public_url())
            .await
            .unwrap();
        let before = app.state.subscriptions().await.unwrap().remove(0);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        on_lifecycle(app, &t, MAILBOX, &before.id, "reauthorizationRequired")
            .await
            .unwrap();
        let after = app.state.subscription(&before.id).await.unwrap().unwrap();
        assert!(after.created > before.created, "renewal recorded");
        assert!(
            ta.graph.requests().iter().any(|r| r.method == "PATCH"
                && r.path.ends_with(&format!("/subscriptions/{}", before.id))),
            "Graph was asked to renew it"
        );
        assert_eq!(app.metrics.total(metric::LIFECYCLE_NOTIFICATIONS), 1);
    }

    #[tokio::test]
    async fn unknown_subscriptions_and_events_change_nothing() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        let requests = ta.graph.request_count();
        on_lifecycle(app, &t, MAILBOX, "no-such-subscription", "missed")
            .await
            .unwrap();
        assert_eq!(app.metrics.total(metric::LIFECYCLE_NOTIFICATIONS), 0);
        assert_eq!(ta.graph.request_count(), requests, "Graph not asked");
    }
}
