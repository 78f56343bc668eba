//! Application permissions (graph.md §5, "least that works for read/write sync") and the
//! `roles` claim of an app-only access token, where Entra ID lists the admin-consented ones.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Calendar events (appointments) read and written.
pub const CALENDARS: &str = "Calendars.ReadWrite";
/// Outlook contacts read and written.
pub const CONTACTS: &str = "Contacts.ReadWrite";
/// Messages read for the archive and moved to the success / failure folders (moving needs
/// ReadWrite; Mail.Read would only read).
pub const MAIL: &str = "Mail.ReadWrite";
/// To Do tasks, app-only.
pub const TASKS: &str = "Tasks.ReadWrite.All";
/// Users resolved by address.
pub const USERS: &str = "User.Read.All";

/// Every application permission the connector can need.
pub const ALL: &[&str] = &[CALENDARS, CONTACTS, MAIL, TASKS, USERS];

/// The `roles` claim of a JWT access token: its payload (the second of three dot-separated
/// base64url parts) decoded as JSON. The signature is **not** checked: this only reads what the
/// token says, for advice; Graph checks tokens. `None` when the token is not such a JWT (the
/// token stays opaque to every request), an empty list when the claim is missing (a token issued
/// without admin consent has no `roles`).
pub fn token_roles(token: &str) -> Option<Vec<String>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    if !claims.is_object() {
        return None;
    }
    Some(
        claims["roles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// A JWT-shaped token with these claims and a signature nobody can check (the simulator's).
pub(crate) fn unsigned_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"cgc-sim"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_are_read_from_the_payload_of_a_jwt() {
        let t = unsigned_jwt(&json!({"roles": [CALENDARS, USERS], "tid": "x"}));
        assert_eq!(t.split('.').count(), 3);
        assert_eq!(
            token_roles(&t),
            Some(vec![CALENDARS.to_string(), USERS.to_string()])
        );
    }

    #[test]
    fn a_jwt_without_roles_has_none_and_an_opaque_token_is_not_read() {
        let t = unsigned_jwt(&json!({"tid": "x"}));
        assert_eq!(token_roles(&t), Some(vec![]));
        assert_eq!(token_roles("sim.0123456789abcdef"), None);
        assert_eq!(token_roles("a.!!!.c"), None);
        assert_eq!(token_roles("a.b.c.d"), None);
        let not_object = URL_SAFE_NO_PAD.encode("[1]");
        assert_eq!(token_roles(&format!("h.{not_object}.s")), None);
    }
}
