//! Graph subscriptions per mailbox: which resources, create the missing ones, renew the due ones
//! (a subscription gone on Graph's side is made again and followed by a catch-up).

use std::sync::Arc;

use cgc_core::Entity;
use cgc_graph::{GraphError, NewSubscription};
use chrono::Utc;

use super::{WatchError, delta, graph_reads};
use crate::config::Direction;
use crate::context::{App, Tenant};
use crate::state::SubscriptionRecord;
use crate::telemetry::metric;

/// Graph resources subscribed for one mailbox, by entity.
pub(crate) async fn resources(
    t: &Tenant,
    mailbox: &str,
) -> Result<Vec<(Entity, String)>, WatchError> {
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

/// A new subscription's secret: 24 random bytes, hex.
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
) -> Result<bool, WatchError> {
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

pub(crate) async fn create_subscription(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mailbox: &str,
    resource: &str,
    public_url: &str,
) -> Result<SubscriptionRecord, WatchError> {
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
    let rec = SubscriptionRecord::new(
        &sub.id,
        &t.cfg.id,
        mailbox,
        resource,
        &secret,
        sub.expiration_date_time,
        created,
    );
    app.state.put_subscription(&rec).await?;
    app.metrics
        .inc(metric::SUBSCRIPTIONS_CREATED, &[("tenant", &t.cfg.id)]);
    tracing::info!(tenant = %t.cfg.id, mailbox, resource, subscription = %rec.id, "subscription created");
    Ok(rec)
}

/// Renews subscriptions once two thirds of their lifetime have passed.
pub async fn renew_due(app: &Arc<App>) -> Result<(), WatchError> {
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
                metric::SCHEDULER_ERRORS,
                &[("tenant", &tenant), ("job", "renew")],
            );
            tracing::warn!(tenant = %tenant, subscription = %id, error = ?e, "subscription renewal failed; others go on");
        }
    }
    Ok(())
}

/// Renews one subscription; one gone on Graph's side is made again and followed by a catch-up.
pub(crate) async fn renew(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    mut s: SubscriptionRecord,
) -> Result<(), WatchError> {
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
            delta::catch_up(app, t, &s.mailbox).await
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn public_url_of(app: &App) -> String {
    app.public_url()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestApp;

    #[test]
    fn client_state_is_48_hex_digits_and_new_each_time() {
        let a = client_state();
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, client_state());
    }

    #[tokio::test]
    async fn ensure_subscriptions_creates_each_resource_once() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        let url = app.public_url();
        assert!(ta.graph.subscriptions().is_empty());
        assert!(
            ensure_subscriptions(app, &t, crate::demo::MAILBOX, &url)
                .await
                .unwrap()
        );
        let resources: Vec<String> = ta
            .graph
            .subscriptions()
            .iter()
            .filter_map(|s| s["resource"].as_str().map(str::to_string))
            .collect();
        let wanted = super::resources(&t, crate::demo::MAILBOX).await.unwrap();
        assert_eq!(resources.len(), wanted.len());
        for (_, r) in &wanted {
            assert!(
                resources.iter().any(|x| x.eq_ignore_ascii_case(r)),
                "{r} subscribed"
            );
        }
        assert_eq!(app.state.subscriptions().await.unwrap().len(), wanted.len());
        // A second round finds them all: nothing created.
        assert!(
            !ensure_subscriptions(app, &t, crate::demo::MAILBOX, &url)
                .await
                .unwrap()
        );
        assert_eq!(ta.graph.subscriptions().len(), wanted.len());
    }
}
