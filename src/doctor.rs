//! `doctor`: one line per set-up check, with the fix when it fails. The commonest failures of
//! connectors like this one are set-up failures (consent missing, secret expired, no rep switched
//! on, a mailbox outside the access policy, a public URL Graph cannot reach); each is named here
//! with what to do, before anything is synced.

use cgc_graph::GraphError;

use crate::context::{App, Tenant};

/// One check's outcome, as printed.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub ok: bool,
    pub line: String,
}

fn ok(line: String) -> Check {
    Check { ok: true, line }
}

fn failed(line: String) -> Check {
    Check { ok: false, line }
}

/// Every check of every tenant: the Graph token, CRM.interface and its master user, the reps
/// switched on (and those outside `domains`), and each rep's mailbox.
pub async fn checks(app: &App) -> Vec<Check> {
    let mut out = Vec::new();
    for t in app.tenants.values() {
        let id = &t.cfg.id;
        let graph_ok = match t
            .graph
            .get_user(&format!("nobody@{}", t.cfg.domains[0]))
            .await
        {
            Ok(_) => {
                out.push(ok(format!("tenant {id}: Graph token and API: ok")));
                true
            }
            Err(e) => {
                out.push(failed(format!("tenant {id}: Graph: FAILED: {e}")));
                false
            }
        };
        out.extend(permission_checks(t).await);
        match crate::watch::mailboxes::switched_on_reps(t).await {
            Ok(reps) => out.extend(rep_checks(t, &reps, graph_ok).await),
            Err(e) => out.push(failed(format!(
                "tenant {id}: CRM.interface: FAILED: {e} (check crm_url, crm_user and crm_password; the master user must be able to read Rep)"
            ))),
        }
    }
    out
}

async fn rep_checks(t: &Tenant, reps: &[(String, String)], graph_ok: bool) -> Vec<Check> {
    let id = &t.cfg.id;
    let mut out = vec![ok(format!(
        "tenant {id}: CRM.interface and its master user: ok"
    ))];
    let (inside, outside): (Vec<_>, Vec<_>) = reps.iter().partition(|(_, m)| t.cfg.owns_mailbox(m));
    if inside.is_empty() {
        out.push(failed(format!(
            "tenant {id}: no rep to sync: no Rep record has ConnectorEnabled = true with an e-mail address in domains {:?}; switch reps on in CRM",
            t.cfg.domains
        )));
    } else {
        out.push(ok(format!("tenant {id}: {} rep(s) to sync", inside.len())));
    }
    for (rep, mail) in &outside {
        out.push(failed(format!(
            "tenant {id}: rep {rep} has mailbox {mail} outside domains {:?}: it is not synced; add its domain or correct its EMail in CRM",
            t.cfg.domains
        )));
    }
    if graph_ok {
        for (_, mail) in inside {
            out.push(mailbox_check(t, mail).await);
        }
    }
    out
}

/// The application permissions this tenant's configuration needs (graph.md §5): users always,
/// and each synced kind's.
pub fn needed_permissions(t: &crate::config::TenantConfig) -> Vec<&'static str> {
    use cgc_core::Direction::Off;
    use cgc_graph::permissions as p;
    let mut out = Vec::new();
    for (direction, permission) in [
        (t.appointments.entity.direction, p::CALENDARS),
        (t.contacts.direction, p::CONTACTS),
        (t.tasks.direction, p::TASKS),
        (t.emails.direction, p::MAIL),
    ] {
        if direction != Off {
            out.push(permission);
        }
    }
    out.push(p::USERS);
    out
}

/// One line per needed application permission: in the access token's `roles` claim, or the fix.
/// The token's payload is only decoded (its signature is not checked: Graph does that).
async fn permission_checks(t: &Tenant) -> Vec<Check> {
    let id = &t.cfg.id;
    let roles = match t.graph.token_roles().await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return vec![ok(format!(
                "tenant {id}: application permissions: not checked (the access token is not a JWT)"
            ))];
        }
        // The Graph line above names the token failure and its fix.
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    if roles.is_empty() {
        out.push(failed(format!(
            "tenant {id}: access token: FAILED: it has no roles claim: no application permission is admin-consented; in Entra ID open the app's API permissions and click 'Grant admin consent'"
        )));
    }
    for permission in needed_permissions(&t.cfg) {
        if roles.iter().any(|r| r == permission) {
            out.push(ok(format!(
                "tenant {id}: application permission {permission}: ok"
            )));
        } else {
            out.push(failed(format!(
                "tenant {id}: application permission {permission}: FAILED: not in the token's roles; in Entra ID add the application permission {permission} (Microsoft Graph, Application) to the app, then 'Grant admin consent'"
            )));
        }
    }
    out
}

/// Whether the app may read one mailbox: a look-up of an item that does not exist answers 404
/// when it may, 403 when the mailbox is outside the application access policy.
async fn mailbox_check(t: &Tenant, mailbox: &str) -> Check {
    let id = &t.cfg.id;
    match t.graph.get_event(mailbox, "cgc-doctor-probe").await {
        Ok(_) => ok(format!("tenant {id}: mailbox {mailbox}: reachable")),
        Err(e @ GraphError::AccessDenied { .. }) => failed(format!(
            "tenant {id}: mailbox {mailbox}: FAILED: {e} (add the mailbox to the Exchange application access policy / RBAC for Applications scope; changes can take hours)"
        )),
        Err(e) => failed(format!(
            "tenant {id}: mailbox {mailbox}: FAILED: {e} (does the user exist and have an Exchange Online mailbox?)"
        )),
    }
}

/// Whether Graph can validate subscriptions at `public_url`: the receiver must echo a
/// `validationToken` at `{public_url}/notifications`.
pub async fn handshake(public_url: &str) -> Check {
    let token = format!("cgc-doctor-{}", uuid::Uuid::new_v4().simple());
    let url = format!("{public_url}/notifications?validationToken={token}");
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("public URL: FAILED: {e}")),
    };
    match client.post(&url).send().await {
        Ok(r) if r.status().is_success() => match r.text().await {
            Ok(body) if body == token => ok(format!(
                "public URL {public_url}: answers Graph's validation handshake: ok"
            )),
            _ => failed(format!(
                "public URL {public_url}: FAILED: the answer does not echo the validationToken; is the receiver behind it?"
            )),
        },
        Ok(r) => failed(format!(
            "public URL {public_url}: FAILED: HTTP {} to the validation handshake; route {public_url}/notifications to the receiver",
            r.status()
        )),
        Err(e) => failed(format!(
            "public URL {public_url}: FAILED: not reachable ({e}); Graph could not create subscriptions. Start the receiver and route [receiver] public_url to it"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::MAILBOX;
    use crate::testing::TestApp;

    fn failures(c: &[Check]) -> Vec<&str> {
        c.iter()
            .filter(|c| !c.ok)
            .map(|c| c.line.as_str())
            .collect()
    }

    #[tokio::test]
    async fn a_healthy_set_up_passes_every_check() {
        let t = TestApp::start().await;
        let c = checks(&t.app).await;
        assert!(failures(&c).is_empty(), "{c:#?}");
        assert!(
            c.iter()
                .any(|c| c.line.contains(MAILBOX) && c.line.contains("reachable"))
        );
        assert!(handshake(&t.app.public_url()).await.ok);
    }

    #[tokio::test]
    async fn a_rejected_client_secret_is_reported_with_its_advice() {
        let t = TestApp::start().await;
        t.graph.fail_token(Some("AADSTS7000215"));
        let c = checks(&t.app).await;
        let f = failures(&c);
        assert!(
            f.iter()
                .any(|l| l.contains("Graph: FAILED") && l.contains("client_secret")),
            "{f:#?}"
        );
    }

    async fn failed_lines(t: &TestApp) -> Vec<String> {
        failures(&checks(&t.app).await)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[tokio::test]
    async fn an_expired_secret_and_an_unknown_app_are_reported_with_their_advice() {
        let t = TestApp::start().await;
        t.graph.fail_token(Some("AADSTS7000222"));
        let f = failed_lines(&t).await;
        assert!(
            f.iter().any(|l| l.contains("Graph: FAILED")
                && l.contains("AADSTS7000222")
                && l.contains("expired")
                && l.contains("create a new one")),
            "{f:#?}"
        );
        let t = TestApp::start().await;
        t.graph.fail_token(Some("AADSTS700016"));
        let f = failed_lines(&t).await;
        assert!(
            f.iter().any(|l| l.contains("AADSTS700016")
                && l.contains("client_id")
                && l.contains("consented")),
            "{f:#?}"
        );
    }

    #[tokio::test]
    async fn each_needed_permission_is_checked_in_the_tokens_roles() {
        let t = TestApp::start().await;
        let c = checks(&t.app).await;
        for p in needed_permissions(&t.app.tenants.values().next().unwrap().cfg) {
            assert!(
                c.iter()
                    .any(|c| c.ok && c.line.contains(&format!("application permission {p}: ok"))),
                "{p}: {c:#?}"
            );
        }
    }

    #[tokio::test]
    async fn a_token_missing_a_role_names_that_permission_and_the_fix() {
        use cgc_graph::permissions as p;
        let t = TestApp::start().await;
        t.graph
            .set_token_roles(Some(&[p::CALENDARS, p::USERS, p::MAIL, p::TASKS]));
        let c = checks(&t.app).await;
        let f = failures(&c);
        assert_eq!(
            f.iter()
                .filter(|l| l.contains("application permission"))
                .count(),
            1,
            "only Contacts.ReadWrite is missing: {f:#?}"
        );
        assert!(
            f.iter().any(
                |l| l.contains("application permission Contacts.ReadWrite: FAILED")
                    && l.contains("Grant admin consent")
            ),
            "{f:#?}"
        );
        assert!(
            c.iter().any(|c| c.ok
                && c.line
                    .contains("application permission Calendars.ReadWrite: ok")),
            "{c:#?}"
        );
    }

    #[tokio::test]
    async fn a_token_without_admin_consent_has_no_roles_and_every_permission_fails() {
        let t = TestApp::start().await;
        t.graph.set_token_roles(Some(&[]));
        let f = failed_lines(&t).await;
        assert!(
            f.iter()
                .any(|l| l.contains("no roles claim") && l.contains("Grant admin consent")),
            "{f:#?}"
        );
        assert!(
            f.iter()
                .any(|l| l.contains("Graph: FAILED") && l.contains("InvalidAuthenticationToken")),
            "Graph refuses a token without roles (401): {f:#?}"
        );
        for p in needed_permissions(&t.app.tenants.values().next().unwrap().cfg) {
            assert!(
                f.iter()
                    .any(|l| l.contains(&format!("application permission {p}: FAILED"))),
                "{p}: {f:#?}"
            );
        }
    }

    #[tokio::test]
    async fn a_mailbox_outside_the_access_policy_is_named_with_the_fix() {
        let t = TestApp::start().await;
        t.graph.deny_mailbox(MAILBOX, true);
        let f: Vec<String> = failures(&checks(&t.app).await)
            .into_iter()
            .map(String::from)
            .collect();
        assert!(
            f.iter()
                .any(|l| l.contains(MAILBOX) && l.contains("application access policy")),
            "{f:#?}"
        );
    }

    #[tokio::test]
    async fn no_rep_switched_on_and_reps_outside_the_domains_are_named() {
        let t = TestApp::start().await;
        let rep = t
            .crm
            .records("Rep")
            .into_iter()
            .find(|r| r.fields.get("EMail").map(String::as_str) == Some(MAILBOX))
            .unwrap();
        t.crm
            .user_update("Rep", rep.id, &[("ConnectorEnabled", "false")]);
        t.crm.user_insert(
            "Rep",
            &[
                ("RepID", "9"),
                ("EMail", "rep9@elsewhere.test"),
                ("ConnectorEnabled", "true"),
            ],
        );
        let f: Vec<String> = failures(&checks(&t.app).await)
            .into_iter()
            .map(String::from)
            .collect();
        assert!(f.iter().any(|l| l.contains("no rep to sync")), "{f:#?}");
        assert!(
            f.iter()
                .any(|l| l.contains("rep9@elsewhere.test") && l.contains("outside domains")),
            "{f:#?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_crm_is_reported() {
        let t = TestApp::start().await;
        t.crm.set_unavailable(std::time::Duration::from_secs(600));
        let f: Vec<String> = failures(&checks(&t.app).await)
            .into_iter()
            .map(String::from)
            .collect();
        assert!(
            f.iter().any(|l| l.contains("CRM.interface: FAILED")),
            "{f:#?}"
        );
    }

    #[tokio::test]
    async fn a_public_url_without_a_receiver_fails_the_handshake_check() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = handshake(&format!("http://127.0.0.1:{port}")).await;
        assert!(!c.ok && c.line.contains("not reachable"), "{c:?}");
    }
}
