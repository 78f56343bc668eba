//! Client-credentials token: cached per client, refreshed 5 minutes before expiry,
//! one refresh in flight (the cache lock is held while fetching).

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::GraphConfig;
use super::errors::{GraphError, map_token_error};

/// Refresh this long before the token expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Default)]
pub(crate) struct TokenCache {
    state: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

impl TokenCache {
    pub async fn get(
        &self,
        http: &reqwest::Client,
        cfg: &GraphConfig,
    ) -> Result<SecretString, GraphError> {
        let mut guard = self.state.lock().await;
        if let Some(c) = guard.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, expires_in) = fetch(http, cfg).await?;
        let lifetime = Duration::from_secs(expires_in);
        let usable = if lifetime > REFRESH_MARGIN * 2 {
            lifetime - REFRESH_MARGIN
        } else {
            lifetime / 2
        };
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + usable,
        });
        Ok(token)
    }

    pub async fn invalidate(&self) {
        *self.state.lock().await = None;
    }
}

async fn fetch(
    http: &reqwest::Client,
    cfg: &GraphConfig,
) -> Result<(SecretString, u64), GraphError> {
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        cfg.login_url.trim_end_matches('/'),
        crate::util::encode_segment(&cfg.tenant_id)
    );
    let form = [
        ("client_id", cfg.client_id.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_secret", cfg.client_secret.expose_secret()),
        ("grant_type", "client_credentials"),
    ];
    let resp = http.post(&url).form(&form).send().await.map_err(|e| {
        if e.is_timeout() {
            GraphError::Timeout
        } else {
            GraphError::Transport(format!("token endpoint: {e}"))
        }
    })?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = resp
        .text()
        .await
        .map_err(|e| GraphError::Transport(format!("token endpoint: {e}")))?;
    if !(200..300).contains(&status) {
        let err = map_token_error(status, &content_type, &body);
        tracing::warn!(status, "Graph token request failed: {err}");
        return Err(err);
    }
    let v: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => return Err(map_token_error(status, &content_type, &body)),
    };
    let Some(token) = v["access_token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(map_token_error(status, &content_type, &body));
    };
    let expires_in = match &v["expires_in"] {
        Value::Number(n) => n.as_u64().unwrap_or(3599),
        Value::String(s) => s.parse().unwrap_or(3599),
        _ => 3599,
    };
    Ok((SecretString::from(token.to_string()), expires_in))
}
