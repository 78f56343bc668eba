//! Sessions of the admin page: a random id per login kept in this process's memory, the
//! CSRF token of each (HMAC of the id with a per-process key), and the admin token check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::html;
use crate::context::App;

/// The session cookie's name.
pub(super) const COOKIE: &str = "cgc_admin_session";
/// How long a login lasts.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest goes first): logins cannot grow memory without bound.
const MAX_SESSIONS: usize = 1000;

/// The page's state: the app and this process's sessions.
#[derive(Clone)]
pub(super) struct Web {
    pub(super) app: Arc<App>,
    pub(super) sessions: Arc<Sessions>,
}

pub(super) struct Sessions {
    /// Per-process key of the CSRF tokens.
    key: [u8; 32],
    /// Session id → when it ends.
    live: Mutex<HashMap<String, Instant>>,
}

/// A logged-in request: its CSRF token goes into every form of the page.
pub(super) struct Session {
    pub(super) id: String,
    pub csrf: String,
}

impl Sessions {
    pub(super) fn new() -> Self {
        Sessions {
            key: rand::random(),
            live: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn open(&self) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        if let Ok(mut live) = self.live.lock() {
            let now = Instant::now();
            live.retain(|_, end| *end > now);
            while live.len() >= MAX_SESSIONS {
                let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
                else {
                    break;
                };
                live.remove(&oldest);
            }
            live.insert(id.clone(), now + SESSION_TTL);
        }
        id
    }

    pub(super) fn close(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(id);
        }
    }

    fn csrf(&self, id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(b"csrf|");
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The live session the request's cookie names.
    pub(super) fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let live = self.live.lock().ok()?;
        let end = live.get(id)?;
        if *end <= Instant::now() {
            return None;
        }
        Some(Session {
            id: id.to_string(),
            csrf: self.csrf(id),
        })
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's (constant time).
    pub fn allows(&self, form_csrf: &str) -> bool {
        !form_csrf.is_empty() && bool::from(form_csrf.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a typed token is the admin token: both hashed first, so neither the content nor the
/// length is learnt from the time the comparison takes.
pub(super) fn token_matches(app: &App, given: &str) -> bool {
    let Some(admin) = &app.config.admin else {
        return false;
    };
    let want = admin.token.expose_secret();
    if given.is_empty() || want.is_empty() {
        return false;
    }
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(want.as_bytes()),
    );
    a.ct_eq(&b).into()
}

impl Web {
    /// The request's session, or the answer to give instead: the login page for a read, 403 for
    /// a form without a live session, 404 when no `[admin]` is configured.
    pub fn session(&self, headers: &HeaderMap) -> Result<Session, Box<Response>> {
        if self.app.config.admin.is_none() {
            return Err(Box::new(
                (StatusCode::NOT_FOUND, "admin page not configured").into_response(),
            ));
        }
        self.sessions
            .find(headers)
            .ok_or_else(|| Box::new(Redirect::to("/ui/login").into_response()))
    }

    /// [`Web::session`] for a form: the form's CSRF token must be the session's.
    pub fn form_session(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, Box<Response>> {
        let s = self.session(headers)?;
        if !s.allows(csrf) {
            return Err(Box::new(html::page_response(
                StatusCode::FORBIDDEN,
                "Refused",
                None,
                "<p class=\"error\">This form is stale or was not sent by the admin page \
                 (CSRF token missing or wrong). Open the page again and retry.</p>",
            )));
        }
        Ok(s)
    }

    pub fn app(&self) -> &App {
        &self.app
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let s = Sessions::new();
        let a = s.open();
        let b = s.open();
        assert_ne!(a, b);
        assert_ne!(s.csrf(&a), s.csrf(&b));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={a}")).unwrap(),
        );
        let found = s.find(&h).expect("live session");
        assert!(found.allows(&s.csrf(&a)));
        assert!(!found.allows(&s.csrf(&b)));
        assert!(!found.allows(""));
        s.close(&a);
        assert!(s.find(&h).is_none(), "closed by logout");
    }

    #[test]
    fn sessions_are_capped() {
        let s = Sessions::new();
        for _ in 0..MAX_SESSIONS + 10 {
            s.open();
        }
        assert_eq!(s.live.lock().unwrap().len(), MAX_SESSIONS);
    }
}
