//! The admin page (`/ui`) on the real connector against the simulators, on both back ends: login
//! refusal, session cookie, CSRF and escaping over plain HTTP, dead letters replayed from the
//! page, and a real headless Chromium (driven through ChromeDriver's WebDriver HTTP API) that
//! logs in, resolves a conflict by clicking "Take Outlook", and reads the audit trail; both
//! sides then hold Outlook's value.
//!
//! Needs Debian `chromium` and `chromium-driver` (`.ci/run` installs them when missing); the
//! browser test fails, never skips, without them. `CGC_ADMIN_SCREENSHOT=docs/admin-page.png`
//! saves a screenshot of the conflict inbox.

use std::time::Duration;

use crm_graph_connector::demo::{ADMIN_TOKEN, Harness, HarnessOptions, MAILBOX, wait_for};
use serde_json::{Value, json};

mod support;
use support::{Backend, crm_appointment, crm_field, start_with};

mod webdriver;
use webdriver::Browser;

/// A manual-policy connector with one open conflict on the subject: (harness, CRM id, event id).
async fn conflict(b: Backend, outlook_subject: &str) -> (Harness, u64, String) {
    let h = start_with(HarnessOptions {
        conflict: "manual",
        ..b.options()
    })
    .await;
    let (crm_id, ev_id) = crm_appointment(&h, "A5 review", 2).await;
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "A5 from CRM")]);
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": outlook_subject}));
    h.settle().await.unwrap();
    assert_eq!(open_conflicts(&h).await.len(), 1, "one conflict to resolve");
    (h, crm_id, ev_id)
}

async fn open_conflicts(h: &Harness) -> Vec<Value> {
    support::admin_get(h, "/admin/conflicts").await["conflicts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in over plain HTTP: the session cookie (`name=value`).
async fn login(h: &Harness) -> String {
    let r = client()
        .post(format!("{}/ui/login", h.admin_url()))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a right token logs in");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

async fn page(h: &Harness, cookie: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{}{path}", h.admin_url()))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The CSRF token of the first form of a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

async fn login_is_refused_without_the_token_and_values_are_escaped(b: Backend) {
    let (h, crm_id, ev_id) = conflict(b, "A5 <script>alert(\"x\")</script> from Outlook").await;
    let admin = h.admin_url();
    let c = client();
    // No session: the pages send to the login form, the forms are refused.
    let r = c.get(format!("{admin}/ui/conflicts")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    for token in ["wrong", "", &format!("{ADMIN_TOKEN}x")] {
        let r = c
            .post(format!("{admin}/ui/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "token {token:?} refused");
        assert!(r.headers().get("set-cookie").is_none(), "no cookie");
        assert!(r.text().await.unwrap().contains("Wrong token"));
    }
    // The right token: an HttpOnly, SameSite=Strict cookie that is not the token.
    let r = c
        .post(format!("{admin}/ui/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains(ADMIN_TOKEN),
        "the cookie never holds the token: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    // A made-up session id is no session.
    let (status, _) = page(&h, "cgc_admin_session=00ff", "/ui/conflicts").await;
    assert_eq!(status, 303);
    // The cookie opens the page, not the JSON API (that one takes the bearer token only).
    let r = c
        .get(format!("{admin}/admin/conflicts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The inbox shows the three values, the Outlook subject escaped.
    let r = c
        .get(format!("{admin}/ui/conflicts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'"),
        "no script may run: {csp}"
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains("A5 &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; from Outlook"),
        "{html}"
    );
    assert!(!html.contains("<script"), "no markup from a value: {html}");
    for v in ["A5 from CRM", "A5 review", &crm_id.to_string()] {
        assert!(html.contains(v), "{v} shown: {html}");
    }
    // A form without the session's CSRF token changes nothing.
    let id = open_conflicts(&h).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The JSON resolution the page shares keeps its answers (unknown id 404, bad body 400).
    for (path, body, want) in [
        ("nope", json!({"take": "crm"}), 404),
        (id.as_str(), json!({"take": "both"}), 400),
    ] {
        let r = c
            .post(format!("{admin}/admin/conflicts/{path}/resolve"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{body}");
    }
    let resolve = format!("{admin}/ui/conflicts/{id}/resolve");
    for csrf in ["", "0123abcd"] {
        let r = c
            .post(&resolve)
            .header("cookie", &cookie)
            .form(&[("csrf", csrf), ("take", "crm")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "csrf {csrf:?} refused");
    }
    h.settle().await.unwrap();
    assert_eq!(open_conflicts(&h).await.len(), 1, "still open");
    // A typed value with the right token reaches both sides.
    let csrf = csrf_of(&html);
    let r = c
        .post(&resolve)
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("take", "typed"),
            ("value.subject", "A5 typed"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    both_sides_hold(&h, crm_id, &ev_id, "A5 typed").await;
    // Logout ends the session.
    let r = c
        .post(format!("{admin}/ui/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (status, _) = page(&h, &cookie, "/ui/conflicts").await;
    assert_eq!(status, 303, "logged out");
    h.stop().await;
}

async fn both_sides_hold(h: &Harness, crm_id: u64, ev_id: &str, subject: &str) {
    wait_for(
        "the chosen subject on both sides",
        Duration::from_secs(30),
        || async {
            crm_field(h, crm_id, "Subject") == subject
                && h.graph.event(MAILBOX, ev_id).unwrap()["subject"] == subject
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: CRM {:?}, Outlook {:?}",
            crm_field(h, crm_id, "Subject"),
            h.graph.event(MAILBOX, ev_id).unwrap()["subject"]
        )
    });
    h.settle().await.unwrap();
    assert!(open_conflicts(h).await.is_empty(), "the conflict is closed");
    assert_eq!(crm_field(h, crm_id, "Subject"), subject);
    assert_eq!(h.graph.event(MAILBOX, ev_id).unwrap()["subject"], subject);
}

async fn headless_chromium_resolves_a_conflict_taking_outlook(b: Backend) {
    let (h, crm_id, ev_id) = conflict(b, "A5 from Outlook").await;
    let admin = h.admin_url();
    let browser = Browser::start().await;
    // Not logged in: the login form; the token typed into it opens the inbox.
    browser.go(&format!("{admin}/ui/conflicts")).await;
    let url = browser.url_ending("/ui/login").await;
    assert!(url.ends_with("/ui/login"), "sent to the login form: {url}");
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#login").await;
    let url = browser.url_ending("/ui/conflicts").await;
    assert!(url.ends_with("/ui/conflicts"), "logged in: {url}");
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "cgc_admin_session")
        .unwrap_or_else(|| panic!("session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert_ne!(session["value"], ADMIN_TOKEN);
    // Both values and the base side by side.
    let card = browser.text(".conflict").await;
    for v in ["A5 from CRM", "A5 from Outlook", "A5 review", "subject"] {
        assert!(card.contains(v), "{v} in the inbox: {card}");
    }
    if let Ok(path) = std::env::var("CGC_ADMIN_SCREENSHOT") {
        std::fs::write(&path, browser.screenshot().await).unwrap();
        eprintln!("screenshot saved to {path}");
    }
    browser.click(".conflict button.take-graph").await;
    assert!(
        browser.text("#notice").await.contains("queued"),
        "the page says the resolution is queued"
    );
    both_sides_hold(&h, crm_id, &ev_id, "A5 from Outlook").await;
    // The inbox is empty now, and the audit trail says why CRM's subject changed.
    browser.go(&format!("{admin}/ui/conflicts")).await;
    assert_eq!(browser.text("#empty").await, "No open conflict.");
    browser.go(&format!("{admin}/ui/audit?item={crm_id}")).await;
    let trail = browser.text("#audit").await;
    assert!(
        trail.contains("an operator's conflict resolution") && trail.contains("admin-page"),
        "{trail}"
    );
    assert!(
        trail.contains("A5 from CRM") && trail.contains("A5 from Outlook"),
        "{trail}"
    );
    browser.quit().await;
    h.stop().await;
}

async fn mailbox_health_and_dead_letters_replayed_from_the_page(b: Backend) {
    let mut h = start_with(b.options()).await;
    // Fewer attempts so the ladder ends within the test.
    let tuning = crm_graph_connector::context::Tuning {
        max_attempts: 3,
        ..crm_graph_connector::demo::fast_tuning(2)
    };
    h.restart_with(tuning, crm_graph_connector::run::Roles::ALL)
        .await
        .unwrap();
    h.wait_subscribed().await.unwrap();
    let (crm_id, ev_id) = crm_appointment(&h, "W3 review", 2).await;
    h.crm.lock_record(crm_id, 1_000_000);
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "W3 renamed"}));
    wait_for("a dead letter", Duration::from_secs(60), || async {
        h.app()
            .queue
            .dead_letters()
            .await
            .is_ok_and(|d| !d.is_empty())
    })
    .await
    .unwrap();
    let cookie = login(&h).await;
    // Mailbox health: the mailbox with its last sync, subscription expiry and last error.
    let (status, html) = page(&h, &cookie, "/ui/mailboxes").await;
    assert_eq!(status, 200);
    let row = html
        .split("<tr>")
        .find(|r| r.contains(MAILBOX))
        .unwrap_or_else(|| panic!("a row for {MAILBOX}: {html}"));
    assert!(row.contains("events: "), "subscription expiry: {row}");
    assert!(row.contains(" ago)"), "a last sync: {row}");
    assert!(
        row.contains("last write: "),
        "the last audited write: {row}"
    );
    assert!(row.contains("locked"), "the last error: {row}");
    // The dead letter, replayed with its button once the lock is gone.
    let (status, html) = page(&h, &cookie, "/ui/dead-letters").await;
    assert_eq!(status, 200);
    assert!(html.contains("locked"), "{html}");
    let id = h.app().queue.dead_letters().await.unwrap()[0]
        .envelope
        .id
        .clone();
    assert!(html.contains(&id), "{html}");
    h.crm.lock_record(crm_id, 0);
    let r = client()
        .post(format!("{}/ui/dead-letters/replay", h.admin_url()))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&html).as_str()), ("id", id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/dead-letters?replayed=1");
    wait_for(
        "the replayed edit in CRM",
        Duration::from_secs(30),
        || async { crm_field(&h, crm_id, "Subject") == "W3 renamed" },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let (_, html) = page(&h, &cookie, "/ui/dead-letters").await;
    assert!(html.contains("No dead letter."), "{html}");
    h.stop().await;
}

each_backend!(
    login_is_refused_without_the_token_and_values_are_escaped,
    headless_chromium_resolves_a_conflict_taking_outlook,
    mailbox_health_and_dead_letters_replayed_from_the_page,
);
