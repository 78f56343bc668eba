//! Client-credentials token: cached per client, refreshed 5 minutes before expiry,
//! one refresh in flight (the cache lock is held while fetching).
//!
//! `expires_in` is read defensively ([`token_lifetime`]): capped at [`MAX_LIFETIME`] (24 h);
//! missing, non-numeric, zero or negative values count as [`FALLBACK_LIFETIME`] (5 minutes, so
//! the token is refreshed after half of that). No arithmetic on it can overflow.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::GraphConfig;
use super::errors::{GraphError, map_token_error};

/// Refresh this long before the token expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Longest lifetime believed, whatever `expires_in` says.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Lifetime assumed when `expires_in` is missing, not a number, zero or negative.
pub(crate) const FALLBACK_LIFETIME: Duration = Duration::from_secs(300);

/// The lifetime a token answer's `expires_in` (a number or a numeric string) stands for.
pub(crate) fn token_lifetime(expires_in: &Value) -> Duration {
    parsed_lifetime(expires_in).unwrap_or(FALLBACK_LIFETIME)
}

/// `expires_in` as a lifetime capped at [`MAX_LIFETIME`]; `None` when missing or unusable.
fn parsed_lifetime(expires_in: &Value) -> Option<Duration> {
    let secs: f64 = match expires_in {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    // +inf is capped like any huge value.
    if secs.is_nan() || secs < 1.0 {
        return None;
    }
    Some(if secs >= MAX_LIFETIME.as_secs_f64() {
        MAX_LIFETIME
    } else {
        Duration::from_secs(secs as u64)
    })
}

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
        let (token, lifetime) = fetch(http, cfg).await?;
        let usable = if lifetime > REFRESH_MARGIN * 2 {
            lifetime.saturating_sub(REFRESH_MARGIN)
        } else {
            lifetime / 2
        };
        let now = Instant::now();
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at: now.checked_add(usable).unwrap_or(now),
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
) -> Result<(SecretString, Duration), GraphError> {
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        cfg.login_url.trim_end_matches('/'),
        crate::util::encode_segment(&cfg.azure_tenant_id)
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
    let lifetime = token_lifetime(&v["expires_in"]);
    if parsed_lifetime(&v["expires_in"]).is_none() {
        tracing::warn!(
            "token answer without a usable `expires_in`; assuming {} s",
            FALLBACK_LIFETIME.as_secs()
        );
    }
    Ok((SecretString::from(token.to_string()), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lifetime_is_capped_and_never_overflows() {
        for v in [
            json!(u64::MAX),
            json!(1e300),
            json!(f64::MAX),
            json!("18446744073709551615"),
            json!("1e400"),
            json!(86_401),
        ] {
            assert_eq!(token_lifetime(&v), MAX_LIFETIME, "{v}");
        }
        assert_eq!(token_lifetime(&json!(3599)), Duration::from_secs(3599));
        assert_eq!(token_lifetime(&json!("3599")), Duration::from_secs(3599));
        assert_eq!(token_lifetime(&json!(3599.7)), Duration::from_secs(3599));
    }

    #[test]
    fn missing_negative_or_invalid_lifetime_is_short() {
        for v in [
            Value::Null,
            json!(-5),
            json!(i64::MIN),
            json!(0),
            json!(0.5),
            json!("soon"),
            json!("-3600"),
            json!("NaN"),
            json!("-inf"),
            json!(true),
            json!([3600]),
            json!({ "s": 3600 }),
        ] {
            assert_eq!(token_lifetime(&v), FALLBACK_LIFETIME, "{v}");
        }
    }
}
