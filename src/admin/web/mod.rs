//! The admin page (`/ui`): server-rendered HTML over the same data and code as the admin API —
//! the conflict inbox, mailbox health, dead letters with replay, the audit trail of one item.
//!
//! Login: a form takes the admin token (compared in constant time) and sets an HttpOnly,
//! SameSite=Strict cookie holding a random session id kept in this process's memory (never the
//! token). Every form carries a CSRF token derived from the session (HMAC with a per-process
//! key). No JavaScript; every value shown is HTML-escaped, and the pages' Content-Security-Policy
//! allows no script at all.

mod audit;
mod health;
mod html;
mod inbox;
mod session;

use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::context::App;
use session::{COOKIE, SESSION_TTL, Sessions, Web, token_matches};

pub(super) fn router(app: Arc<App>) -> Router {
    let web = Web {
        app,
        sessions: Arc::new(Sessions::new()),
    };
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/conflicts") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/conflicts", get(inbox::conflicts))
        .route("/ui/conflicts/{id}/resolve", post(inbox::resolve))
        .route("/ui/mailboxes", get(health::mailboxes))
        .route("/ui/dead-letters", get(health::dead_letters))
        .route("/ui/dead-letters/replay", post(health::replay))
        .route("/ui/audit", get(audit::audit))
        .with_state(web)
}

async fn login_form(AxState(web): AxState<Web>, headers: HeaderMap) -> Response {
    if web.sessions.find(&headers).is_some() {
        return Redirect::to("/ui/conflicts").into_response();
    }
    html::page_response(StatusCode::OK, "Log in", None, &html::login_form(None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(AxState(web): AxState<Web>, Form(f): Form<LoginForm>) -> Response {
    if web.app.config.admin.is_none() {
        return (StatusCode::NOT_FOUND, "admin page not configured").into_response();
    }
    if !token_matches(&web.app, f.token.trim()) {
        tracing::warn!("admin page login refused: wrong token");
        return html::page_response(
            StatusCode::UNAUTHORIZED,
            "Log in",
            None,
            &html::login_form(Some(
                "Wrong token: type the [admin] token of the connector's configuration.",
            )),
        );
    }
    let id = web.sessions.open();
    let mut r = Redirect::to("/ui/conflicts").into_response();
    let c = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let s = match web.form_session(&headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    web.sessions.close(&s.id);
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "cgc_admin_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}
