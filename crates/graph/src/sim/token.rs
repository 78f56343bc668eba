//! The simulator's access tokens: JWT-shaped (header.payload.signature, base64url JSON), with the
//! app permissions configured for the simulator in `roles` (all the connector needs unless the
//! `token_roles` fault says otherwise), as Entra ID issues them for client credentials. Graph
//! calls are refused as Graph refuses them: no `roles` at all → 401, the resource's permission
//! missing → 403.

use axum::http::Method;
use serde_json::json;

use super::state::ApiError;
use crate::permissions::{self, token_roles};

/// A new access token for `tenant` and `client_id` carrying `roles` (`None`: every permission
/// the connector can need; an empty list: no `roles` claim, a token without admin consent).
pub(crate) fn issue(
    tenant: &str,
    client_id: &str,
    roles: Option<&[String]>,
    lifetime_secs: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "tid": tenant,
        "appid": client_id,
        "idtyp": "app",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_secs,
        "jti": uuid::Uuid::new_v4().simple().to_string(),
    });
    let roles: Vec<String> = match roles {
        Some(r) => r.to_vec(),
        None => permissions::ALL.iter().map(|s| s.to_string()).collect(),
    };
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    permissions::unsigned_jwt(&claims)
}

/// The permission family a request needs (`Calendars.`, …), from `/users/{id}/<resource>`.
fn family(segs: &[String]) -> Option<&'static str> {
    if segs
        .first()
        .is_none_or(|s| !s.eq_ignore_ascii_case("users"))
    {
        return None;
    }
    if segs.len() <= 2 {
        return Some("User.");
    }
    match segs[2].to_ascii_lowercase().as_str() {
        "events" | "calendar" | "calendars" | "calendarview" => Some("Calendars."),
        "contacts" | "contactfolders" => Some("Contacts."),
        "messages" | "mailfolders" => Some("Mail."),
        "todo" => Some("Tasks."),
        _ => None,
    }
}

/// Whether a token with these roles may make the request; the error Graph answers otherwise.
pub(crate) fn check(bearer: &str, method: &Method, segs: &[String]) -> Result<(), ApiError> {
    // Tokens the simulator did not mint as JWTs (none today) are not judged by their roles.
    let Some(roles) = token_roles(bearer) else {
        return Ok(());
    };
    if roles.is_empty() {
        return Err(ApiError::new(
            401,
            "InvalidAuthenticationToken",
            "Either scp or roles claim need to be present in the token.",
        ));
    }
    let Some(family) = family(segs) else {
        return Ok(());
    };
    let write = *method != Method::GET;
    let allowed = roles
        .iter()
        .any(|r| r.starts_with(family) && (!write || r.contains("ReadWrite")));
    if allowed {
        return Ok(());
    }
    Err(if family == "User." {
        ApiError::new(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    } else {
        ApiError::new(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').map(str::to_string).collect()
    }

    #[test]
    fn a_default_token_carries_every_permission_and_may_do_everything() {
        let t = issue("t", "c", None, 3599);
        assert_eq!(
            token_roles(&t).unwrap(),
            permissions::ALL
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
        assert!(check(&t, &Method::GET, &segs("users/a@x")).is_ok());
        for p in [
            "users/a@x/events",
            "users/a@x/contacts/1",
            "users/a@x/todo/lists",
            "users/a@x/mailFolders/inbox/messages",
        ] {
            assert!(check(&t, &Method::PATCH, &segs(p)).is_ok(), "{p}");
        }
        // User.Read.All reads users; it writes none (nor does the connector).
        assert_eq!(
            check(&t, &Method::PATCH, &segs("users/a@x"))
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn missing_roles_are_refused_as_graph_refuses_them() {
        let none = issue("t", "c", Some(&[]), 3599);
        assert_eq!(
            check(&none, &Method::GET, &segs("users/a@x"))
                .unwrap_err()
                .status,
            401
        );
        let cal = issue(
            "t",
            "c",
            Some(&["Calendars.ReadWrite".into(), "Contacts.Read".into()]),
            3599,
        );
        assert!(check(&cal, &Method::POST, &segs("users/a@x/events")).is_ok());
        assert!(
            check(&cal, &Method::GET, &segs("users/a@x/contacts")).is_ok(),
            "read with Read"
        );
        assert_eq!(
            check(&cal, &Method::POST, &segs("users/a@x/contacts"))
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            check(&cal, &Method::GET, &segs("users/a@x/todo/lists"))
                .unwrap_err()
                .status,
            403
        );
        let e = check(&cal, &Method::GET, &segs("users/a@x")).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (403, "Authorization_RequestDenied")
        );
        assert!(check(&cal, &Method::POST, &segs("subscriptions")).is_ok());
    }
}
