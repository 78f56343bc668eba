//! Change-notification subscriptions.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Call, GraphClient, GraphError};
use crate::util::rfc3339;

/// What to subscribe to.
#[derive(Clone)]
pub struct NewSubscription {
    /// e.g. `users/{id}/events`.
    pub resource: String,
    /// e.g. `created,updated,deleted`.
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub expiration: DateTime<Utc>,
    /// Per-subscription secret echoed in every notification (at most 128 characters).
    pub client_state: String,
}

impl std::fmt::Debug for NewSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSubscription")
            .field("resource", &self.resource)
            .field("change_type", &self.change_type)
            .field("notification_url", &self.notification_url)
            .field(
                "lifecycle_notification_url",
                &self.lifecycle_notification_url,
            )
            .field("expiration", &self.expiration)
            .field("client_state", &"[redacted]")
            .finish()
    }
}

impl NewSubscription {
    /// The POST /subscriptions body (exposed for snapshot tests).
    pub fn to_body(&self) -> Value {
        let mut body = json!({
            "changeType": self.change_type,
            "notificationUrl": self.notification_url,
            "resource": self.resource,
            "expirationDateTime": rfc3339(self.expiration),
            "clientState": self.client_state,
            "latestSupportedTlsVersion": "v1_2",
        });
        if let (Some(url), Value::Object(m)) = (&self.lifecycle_notification_url, &mut body) {
            m.insert(
                "lifecycleNotificationUrl".into(),
                Value::String(url.clone()),
            );
        }
        body
    }
}

/// A subscription as Graph returns it (the fields the connector uses).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub expiration_date_time: DateTime<Utc>,
    pub notification_url: String,
}

fn parse_subscription(body: &str) -> Result<Subscription, GraphError> {
    serde_json::from_str(body)
        .map_err(|e| GraphError::parse(format!("subscription answer: {e}"), body))
}

impl GraphClient {
    /// Creates a subscription; Graph validates both URLs before answering (up to ~10 s each).
    /// Not retried on 5xx (a retry could create a second subscription).
    pub async fn create_subscription(
        &self,
        s: &NewSubscription,
    ) -> Result<Subscription, GraphError> {
        let body = s.to_body();
        let url = self.api(&["subscriptions"], &[]);
        let mut call = Call::new(Method::POST, url).body(&body);
        call.outlook = true; // notifications then carry immutable ids
        let reply = self.execute(call).await?;
        parse_subscription(&reply.body)
    }

    pub async fn renew_subscription(
        &self,
        id: &str,
        expiration: DateTime<Utc>,
    ) -> Result<Subscription, GraphError> {
        let body = json!({ "expirationDateTime": rfc3339(expiration) });
        let url = self.api(&["subscriptions", id], &[]);
        let reply = self
            .execute(Call::new(Method::PATCH, url).body(&body))
            .await?;
        parse_subscription(&reply.body)
    }

    pub async fn reauthorize_subscription(&self, id: &str) -> Result<(), GraphError> {
        let url = self.api(&["subscriptions", id, "reauthorize"], &[]);
        self.execute(Call::new(Method::POST, url).idempotent(true))
            .await
            .map(|_| ())
    }

    /// Deletes a subscription; one that is already gone counts as deleted.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        let url = self.api(&["subscriptions", id], &[]);
        match self.execute(Call::new(Method::DELETE, url)).await {
            Ok(_) | Err(GraphError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
