//! Typed Graph errors and the mapping from HTTP answers to them.

use std::time::Duration;

use serde_json::Value;

use crate::util::excerpt;

/// Everything a Graph call can fail with. Each variant says what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The token endpoint refused us (or Graph rejected our token). Admin action needed.
    #[error("Graph authentication failed ({code}): {message}")]
    Auth { code: String, message: String },
    /// 429 after the client's own bounded waits: requeue and retry after `retry_after`.
    #[error("Graph throttled the request; retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    /// 500/502/503/504 after bounded retries (or on a call that may not be retried).
    #[error("Graph unavailable (HTTP {status}); retry later")]
    Unavailable {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("Graph item not found")]
    NotFound,
    /// 412 ErrorIrresolvableConflict: the item changed since the change key we sent.
    #[error(
        "Graph item changed since it was read (412 ErrorIrresolvableConflict); re-read and retry"
    )]
    PreconditionFailed,
    /// 410 / syncStateNotFound / resyncRequired: start a new delta round from scratch.
    #[error("Graph delta state is gone; start a full resync")]
    SyncReset { location: Option<String> },
    /// 403: typically the mailbox is outside the application access policy.
    #[error(
        "Graph denied access: {message} - check the app's permissions and the Exchange application access policy"
    )]
    AccessDenied { message: String },
    #[error("Graph answered HTTP {status} {code}: {message}")]
    Http {
        status: u16,
        code: String,
        message: String,
    },
    #[error("transport error talking to Graph: {0}")]
    Transport(String),
    #[error("Graph request timed out")]
    Timeout,
    #[error("unexpected Graph answer: {detail} (starts with {excerpt:?})")]
    Parse { detail: String, excerpt: String },
}

impl GraphError {
    /// Whether requeueing the work later can help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GraphError::Throttled { .. }
                | GraphError::Unavailable { .. }
                | GraphError::Transport(_)
                | GraphError::Timeout
        )
    }

    /// How long to wait before retrying, when Graph said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Throttled { retry_after } => Some(*retry_after),
            GraphError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn parse(detail: impl Into<String>, body: &str) -> Self {
        GraphError::Parse {
            detail: detail.into(),
            excerpt: excerpt(body, 200),
        }
    }
}

/// `{"error":{"code","message"}}` of a Graph error body; empty strings when absent.
pub(crate) fn error_code_message(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let err = &v["error"];
    let code = err["code"].as_str().unwrap_or("").to_string();
    let message = err["message"].as_str().unwrap_or("").to_string();
    (code, message)
}

pub(crate) fn is_sync_reset_code(code: &str) -> bool {
    code.eq_ignore_ascii_case("syncStateNotFound")
        || code.eq_ignore_ascii_case("resyncRequired")
        || code.eq_ignore_ascii_case("syncStateInvalid")
}

/// Maps a non-success Graph answer (after retries) to a [`GraphError`].
pub(crate) fn map_status(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    location: Option<String>,
) -> GraphError {
    let (code, message) = error_code_message(body);
    if status == 410 || is_sync_reset_code(&code) {
        return GraphError::SyncReset { location };
    }
    match status {
        300..=399 => GraphError::Http {
            status,
            code: "Redirect".into(),
            message: format!(
                "Graph answered a redirect{}; redirects are not followed - check `graph_url`",
                match location.as_deref() {
                    Some(l) => format!(" to {}", super::host_of(l)),
                    None => String::new(),
                }
            ),
        },
        404 => GraphError::NotFound,
        412 => GraphError::PreconditionFailed,
        403 => GraphError::AccessDenied {
            message: if message.is_empty() {
                excerpt(body, 200)
            } else {
                message
            },
        },
        401 => GraphError::Auth {
            code: if code.is_empty() {
                "InvalidAuthenticationToken".into()
            } else {
                code
            },
            message: format!(
                "Graph rejected the access token ({}) - grant admin consent for the application permissions \
                 (Calendars.ReadWrite, Contacts.ReadWrite, Mail.Read, Tasks.ReadWrite.All, User.Read.All)",
                if message.is_empty() {
                    "no message"
                } else {
                    &message
                }
            ),
        },
        429 => GraphError::Throttled {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        },
        500 | 502 | 503 | 504 => GraphError::Unavailable {
            status,
            retry_after,
        },
        _ => GraphError::Http {
            status,
            code,
            message,
        },
    }
}

/// Maps a failed token-endpoint answer to an admin-actionable [`GraphError::Auth`].
pub(crate) fn map_token_error(status: u16, content_type: &str, body: &str) -> GraphError {
    if (300..400).contains(&status) {
        return GraphError::Auth {
            code: "TokenRedirect".into(),
            message: format!(
                "token endpoint answered HTTP {status} (a redirect); redirects are not followed, so the \
                 client secret stays put - check `login_url` (expected https://login.microsoftonline.com)"
            ),
        };
    }
    let v: Option<Value> = serde_json::from_str(body).ok();
    let Some(v) = v.filter(|v| v.is_object()) else {
        let what = if content_type.contains("html") || body.trim_start().starts_with('<') {
            "an HTML page"
        } else {
            "a non-JSON answer"
        };
        return GraphError::Auth {
            code: "NonJsonTokenResponse".into(),
            message: format!(
                "token endpoint answered HTTP {status} with {what} instead of JSON - check `login_url` \
                 (expected https://login.microsoftonline.com) and any proxy in between"
            ),
        };
    };
    let description = v["error_description"].as_str().unwrap_or("");
    let error = v["error"].as_str().unwrap_or("");
    let num = v["error_codes"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_u64)
        .map(|n| n.to_string())
        .or_else(|| {
            description
                .strip_prefix("AADSTS")
                .map(|r| {
                    r.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .filter(|s| !s.is_empty())
        });
    let code = match &num {
        Some(n) => format!("AADSTS{n}"),
        None if !error.is_empty() => error.to_string(),
        None => format!("HTTP{status}"),
    };
    let first_line = description.lines().next().unwrap_or("").to_string();
    let message = match code.as_str() {
        "AADSTS7000222" => {
            "client secret expired - create a new one in Entra and update `client_secret`"
                .to_string()
        }
        "AADSTS7000215" => {
            "invalid client secret - copy the secret's value (not its id) from Entra and \
                            update `client_secret`"
                .to_string()
        }
        "AADSTS700016" => {
            "application not found in this tenant - check `client_id` and `graph_tenant_id`, \
                           and that an admin consented the app in this tenant"
                .to_string()
        }
        "AADSTS90002" => "tenant not found - check `graph_tenant_id`".to_string(),
        "AADSTS700027" => {
            "client assertion signature invalid - check the certificate registered in Entra"
                .to_string()
        }
        "AADSTS65001" | "AADSTS650051" => {
            "admin consent missing - grant admin consent for the application in Entra".to_string()
        }
        "AADSTS70011" => {
            "invalid scope - the scope must be https://graph.microsoft.com/.default".to_string()
        }
        _ => format!("token request failed (HTTP {status}): {first_line}"),
    };
    GraphError::Auth { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_secret_is_admin_actionable() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys are expired.","error_codes":[7000222]}"#;
        match map_token_error(401, "application/json", body) {
            GraphError::Auth { code, message } => {
                assert_eq!(code, "AADSTS7000222");
                assert_eq!(
                    message,
                    "client secret expired - create a new one in Entra and update `client_secret`"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn code_is_taken_from_description_without_error_codes() {
        let body = r#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'x' not found."}"#;
        assert!(matches!(map_token_error(400, "application/json", body),
            GraphError::Auth { code, .. } if code == "AADSTS90002"));
    }

    #[test]
    fn html_token_answer_is_typed() {
        let e = map_token_error(200, "text/html", "<html><body>Sign in</body></html>");
        assert!(matches!(e, GraphError::Auth { ref code, .. } if code == "NonJsonTokenResponse"));
    }

    #[test]
    fn sync_state_codes_any_case_are_resets() {
        let body = r#"{"error":{"code":"SyncStateNotFound","message":"gone"}}"#;
        assert!(matches!(
            map_status(400, body, None, None),
            GraphError::SyncReset { .. }
        ));
        let body = r#"{"error":{"code":"resyncRequired","message":"gone"}}"#;
        assert!(matches!(
            map_status(400, body, None, None),
            GraphError::SyncReset { .. }
        ));
        assert!(matches!(
            map_status(410, "", None, Some("L".into())),
            GraphError::SyncReset { location: Some(l) } if l == "L"
        ));
    }

    #[test]
    fn statuses_map_to_variants() {
        assert!(matches!(
            map_status(404, "", None, None),
            GraphError::NotFound
        ));
        assert!(matches!(
            map_status(412, "", None, None),
            GraphError::PreconditionFailed
        ));
        assert!(matches!(
            map_status(403, "", None, None),
            GraphError::AccessDenied { .. }
        ));
        let e = map_status(503, "", Some(Duration::from_secs(3)), None);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(!map_status(400, "{}", None, None).is_retryable());
    }
}
