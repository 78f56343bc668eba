//! App-only Microsoft Graph client.
//!
//! * one token per client, cached and refreshed 5 minutes before expiry, one refresh in flight;
//! * at most 4 requests in flight per mailbox (tokio semaphore per mailbox);
//! * 429 / 503 `Retry-After` honoured exactly, a bounded number of times;
//! * exponential backoff with jitter on 5xx / timeouts for idempotent calls only;
//! * redirects are never followed (a 3xx answer is an error), and the access token is only ever
//!   sent to `graph_url`'s scheme, host and port: a URL from an answer (`@odata.nextLink`,
//!   `@odata.deltaLink`) that points elsewhere is never requested.

mod auth;
mod delta;
mod errors;
mod resources;
mod subscriptions;
mod throttling;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, IF_MATCH, LOCATION};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Semaphore;

pub use delta::{DeltaProgress, DeltaRound, DeltaStart};
pub use errors::GraphError;
pub use resources::{WELL_KNOWN_FOLDERS, event_create_body, task_create_body};
pub use subscriptions::{NewSubscription, Subscription};
pub use throttling::{InMemoryThrottleShare, RequestObserver, RetryPolicy, ThrottleShare};

use crate::util::{encode_component, encode_segment, excerpt};

/// The `Prefer` header value every Outlook call carries.
pub const PREFER_IMMUTABLE_ID: &str = "IdType=\"ImmutableId\"";

/// Connection settings for one tenant.
#[derive(Clone)]
pub struct GraphConfig {
    /// e.g. `https://login.microsoftonline.com` (the token URL is
    /// `{login_url}/{azure_tenant_id}/oauth2/v2.0/token`).
    pub login_url: String,
    /// The Microsoft Entra (Azure AD) tenant of the customer (`graph_tenant_id` in the config
    /// file), not the connector's own tenant id.
    pub azure_tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphConfig")
            .field("login_url", &self.login_url)
            .field("azure_tenant_id", &self.azure_tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("graph_url", &self.graph_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Graph client; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
    /// Told after each page of a delta round (this clone only; see
    /// [`GraphClient::with_delta_progress`]).
    progress: Option<Arc<dyn Fn(delta::DeltaProgress) + Send + Sync>>,
}

struct Inner {
    http: reqwest::Client,
    cfg: GraphConfig,
    graph_url: String,
    /// Scheme, host and port of `graph_url`: the only place the access token goes.
    origin: Origin,
    token: auth::TokenCache,
    policy: RetryPolicy,
    /// Per mailbox (lower case): no request starts before this instant (a 429's Retry-After).
    windows: Mutex<HashMap<String, Instant>>,
    share: RwLock<Option<Arc<dyn ThrottleShare>>>,
    observer: RwLock<Option<Arc<dyn RequestObserver>>>,
    malformed: AtomicU64,
}

/// Per-mailbox limiters shared by every client of the process (same Graph URL, app and limit).
fn limiter(key: String, permits: usize) -> Arc<Semaphore> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Semaphore>>>> = OnceLock::new();
    let reg = REGISTRY.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = match reg.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.entry(key)
        .or_insert_with(|| Arc::new(Semaphore::new(permits)))
        .clone()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One request as the engine sees it.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: String,
    pub mailbox: Option<&'a str>,
    pub body: Option<&'a Value>,
    pub if_match: Option<&'a str>,
    /// Outlook resources get `Prefer: IdType="ImmutableId"`.
    pub outlook: bool,
    /// May be retried after 5xx / timeouts (GET, PATCH, DELETE, POST with transactionId).
    pub idempotent: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, url: String) -> Self {
        let idempotent = matches!(method, Method::GET | Method::PATCH | Method::DELETE);
        Call {
            method,
            url,
            mailbox: None,
            body: None,
            if_match: None,
            outlook: false,
            idempotent,
        }
    }
    pub fn mailbox(mut self, m: &'a str) -> Self {
        self.mailbox = Some(m);
        self
    }
    pub fn outlook(mut self, m: &'a str) -> Self {
        self.mailbox = Some(m);
        self.outlook = true;
        self
    }
    pub fn body(mut self, b: &'a Value) -> Self {
        self.body = Some(b);
        self
    }
    pub fn if_match(mut self, v: Option<&'a str>) -> Self {
        self.if_match = v;
        self
    }
    pub fn idempotent(mut self, v: bool) -> Self {
        self.idempotent = v;
        self
    }
}

/// A successful (2xx) answer.
#[allow(dead_code)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Result<Value, GraphError> {
        if self.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body)
            .map_err(|e| GraphError::parse(format!("invalid JSON from Graph: {e}"), &self.body))
    }
}

impl GraphClient {
    pub fn new(cfg: GraphConfig) -> Result<Self, GraphError> {
        Self::with_policy(cfg, RetryPolicy::default())
    }

    /// Like [`GraphClient::new`] with explicit retry / concurrency settings (tests shorten them).
    pub fn with_policy(cfg: GraphConfig, policy: RetryPolicy) -> Result<Self, GraphError> {
        for (key, url) in [("graph_url", &cfg.graph_url), ("login_url", &cfg.login_url)] {
            if reqwest::Url::parse(url).is_err() {
                return Err(GraphError::Http {
                    status: 0,
                    code: "InvalidConfig".into(),
                    message: format!("`{key}` is not a valid URL: {url:?}"),
                });
            }
        }
        let http = reqwest::Client::builder()
            // Never follow a redirect: the bearer token (or the client secret of the token
            // request) must not travel to wherever a 3xx points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| GraphError::Transport(e.to_string()))?;
        let graph_url = cfg.graph_url.trim_end_matches('/').to_string();
        let origin = Origin::of(&graph_url).ok_or_else(|| GraphError::Http {
            status: 0,
            code: "InvalidConfig".into(),
            message: format!("`graph_url` has no host: {graph_url:?}"),
        })?;
        Ok(GraphClient {
            inner: Arc::new(Inner {
                http,
                cfg,
                graph_url,
                origin,
                token: auth::TokenCache::default(),
                policy,
                windows: Mutex::new(HashMap::new()),
                share: RwLock::new(None),
                observer: RwLock::new(None),
                malformed: AtomicU64::new(0),
            }),
            progress: None,
        })
    }

    /// Whether `url` has `graph_url`'s scheme, host and port (the only place the token is sent).
    pub fn is_graph_url(&self, url: &str) -> bool {
        Origin::of(url).is_some_and(|o| o == self.inner.origin)
    }

    /// The retry / concurrency settings in use.
    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    /// `{graph_url}/seg1/seg2?k=v`, segments and values percent-encoded.
    pub(crate) fn api(&self, segments: &[&str], query: &[(&str, &str)]) -> String {
        let mut url = self.inner.graph_url.clone();
        for s in segments {
            url.push('/');
            url.push_str(&encode_segment(s));
        }
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_component(v));
        }
        url
    }

    /// Shares this client's per-mailbox throttling windows with other clients or processes:
    /// the client consults `share` before a mailbox request (when its own knowledge says the
    /// mailbox is not throttled) and publishes every window a 429 opens. Applies to all clones.
    pub fn with_throttle_share(self, share: Arc<dyn ThrottleShare>) -> Self {
        match self.inner.share.write() {
            Ok(mut g) => *g = Some(share),
            Err(poisoned) => *poisoned.into_inner() = Some(share),
        }
        self
    }

    /// The application permissions in the `roles` claim of the current access token (fetched
    /// if none is cached): see [`crate::permissions::token_roles`]; the signature is not checked.
    /// `Ok(None)` when the token is not a JWT.
    pub async fn token_roles(&self) -> Result<Option<Vec<String>>, GraphError> {
        let token = self
            .inner
            .token
            .get(&self.inner.http, &self.inner.cfg)
            .await?;
        Ok(crate::permissions::token_roles(token.expose_secret()))
    }

    /// Tells `observer` of every request and throttling wait from now on (all clones).
    pub fn with_observer(self, observer: Arc<dyn RequestObserver>) -> Self {
        match self.inner.observer.write() {
            Ok(mut g) => *g = Some(observer),
            Err(poisoned) => *poisoned.into_inner() = Some(observer),
        }
        self
    }

    fn observer(&self) -> Option<Arc<dyn RequestObserver>> {
        match self.inner.observer.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Items of list and delta answers skipped because they were malformed (not an object,
    /// or without a string `id`), since this client was made (all clones).
    pub fn malformed_items(&self) -> u64 {
        self.inner.malformed.load(Ordering::Relaxed)
    }

    /// Counts and logs a malformed item; `true` when `item` is usable.
    pub(crate) fn well_formed(&self, item: &Value, what: &str) -> bool {
        let ok = item.is_object() && item["id"].as_str().is_some_and(|s| !s.trim().is_empty());
        if !ok {
            self.inner.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(what, item = %excerpt(&item.to_string(), 200), "skipping a malformed item in a Graph answer");
        }
        ok
    }

    fn semaphore(&self, mailbox: &str) -> Arc<Semaphore> {
        let permits = self.inner.policy.max_in_flight_per_mailbox.max(1);
        let key = format!(
            "{}|{}|{}|{}",
            self.inner.graph_url,
            self.inner.cfg.client_id,
            permits,
            mailbox.to_ascii_lowercase()
        );
        limiter(key, permits)
    }

    fn share(&self) -> Option<Arc<dyn ThrottleShare>> {
        match self.inner.share.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn local_window(&self, mailbox: &str) -> Option<Instant> {
        lock(&self.inner.windows)
            .get(&mailbox.to_ascii_lowercase())
            .copied()
            .filter(|u| *u > Instant::now())
    }

    fn extend_local_window(&self, mailbox: &str, until: Instant) {
        let mut w = lock(&self.inner.windows);
        let slot = w.entry(mailbox.to_ascii_lowercase()).or_insert(until);
        if *slot < until {
            *slot = until;
        }
    }

    /// Records a window a 429 opened and publishes it to the share.
    async fn open_window(&self, mailbox: &str, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        self.extend_local_window(mailbox, Instant::now() + wait);
        if let Some(share) = self.share() {
            share
                .set_throttled_until(&mailbox.to_ascii_lowercase(), SystemTime::now() + wait)
                .await;
        }
    }

    /// Waits out the mailbox's throttling window (ours or a shared one); a window longer than
    /// `max_retry_after` goes to the caller as `Throttled`.
    async fn wait_window(&self, mailbox: &str) -> Result<(), GraphError> {
        loop {
            let until = match self.local_window(mailbox) {
                Some(u) => Some(u),
                None => match self.share() {
                    Some(share) => {
                        let shared = share.throttled_until(&mailbox.to_ascii_lowercase()).await;
                        shared
                            .and_then(|t| t.duration_since(SystemTime::now()).ok())
                            .filter(|d| !d.is_zero())
                            .map(|d| {
                                let u = Instant::now() + d;
                                self.extend_local_window(mailbox, u);
                                u
                            })
                    }
                    None => None,
                },
            };
            let Some(until) = until else {
                return Ok(());
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if left > self.inner.policy.max_retry_after {
                return Err(GraphError::Throttled { retry_after: left });
            }
            tracing::debug!(
                mailbox,
                wait_ms = left.as_millis() as u64,
                "mailbox throttled, waiting"
            );
            tokio::time::sleep(left).await;
            if let Some(o) = self.observer() {
                o.throttle_wait(left);
            }
        }
    }

    /// Runs one call with token handling, the per-mailbox limit and the retry policy, in a
    /// `graph_request` span (method, path). `Ok` only for 2xx answers.
    pub(crate) async fn execute(&self, call: Call<'_>) -> Result<Reply, GraphError> {
        use tracing::Instrument;
        let path = reqwest::Url::parse(&call.url).map(|u| u.path().to_string());
        let span = tracing::info_span!("graph_request", method = %call.method,
            path = path.as_deref().unwrap_or(""));
        self.execute_in_span(call).instrument(span).await
    }

    async fn execute_in_span(&self, call: Call<'_>) -> Result<Reply, GraphError> {
        let policy = &self.inner.policy;
        let mut throttle_tries = 0u32;
        let mut retries = 0u32;
        let mut auth_retried = false;
        if !self.is_graph_url(&call.url) {
            tracing::warn!(
                host = %host_of(&call.url),
                "refusing to send the Graph token to a URL outside graph_url"
            );
            return Err(foreign_url_error("request URL", &call.url));
        }
        loop {
            if let Some(m) = call.mailbox {
                self.wait_window(m).await?;
            }
            let sem = call.mailbox.map(|m| self.semaphore(m));
            let permit = match &sem {
                Some(s) => Some(
                    s.clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| GraphError::Transport("mailbox limiter closed".into()))?,
                ),
                None => None,
            };
            // A window may have opened while we waited for a permit.
            if let Some(m) = call.mailbox
                && self.local_window(m).is_some()
            {
                drop(permit);
                continue;
            }
            let token = self
                .inner
                .token
                .get(&self.inner.http, &self.inner.cfg)
                .await?;
            let mut rb = self
                .inner
                .http
                .request(call.method.clone(), &call.url)
                .bearer_auth(token.expose_secret())
                .header(ACCEPT, "application/json");
            if call.outlook {
                rb = rb.header("Prefer", PREFER_IMMUTABLE_ID);
            }
            if let Some(v) = call.if_match {
                rb = rb.header(IF_MATCH, v);
            }
            if let Some(b) = call.body {
                rb = rb.json(b);
            }
            let sent_at = Instant::now();
            let sent = rb.send().await;
            let outcome = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.text().await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(e) => Err(transport_error(e)),
                    }
                }
                Err(e) => Err(transport_error(e)),
            };
            if let Some(o) = self.observer() {
                o.request(outcome.as_ref().ok().map(|x| x.0), sent_at.elapsed());
            }
            drop(permit);
            let (status, headers, body) = match outcome {
                Ok(x) => x,
                Err(err) => {
                    if call.idempotent && retries < policy.max_retries {
                        retries += 1;
                        tracing::debug!(url = %call.url, retries, "Graph transport error, retrying: {err}");
                        tokio::time::sleep(policy.backoff(retries)).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            if (200..300).contains(&status) {
                return Ok(Reply {
                    status,
                    headers,
                    body,
                });
            }
            let retry_after = throttling::parse_retry_after(&headers);
            match status {
                429 => {
                    let wait = retry_after.unwrap_or_else(|| policy.backoff(throttle_tries + 1));
                    if let Some(m) = call.mailbox {
                        // Every task of this client (and, through the share, other clients)
                        // waits the window out before its next request to this mailbox.
                        self.open_window(m, wait).await;
                    }
                    if throttle_tries < policy.max_throttle_retries
                        && wait <= policy.max_retry_after
                    {
                        throttle_tries += 1;
                        tracing::info!(url = %call.url, wait_ms = wait.as_millis() as u64, "Graph throttled (429), waiting");
                        if call.mailbox.is_none() {
                            tokio::time::sleep(wait).await;
                        }
                        continue;
                    }
                    return Err(GraphError::Throttled { retry_after: wait });
                }
                401 if !auth_retried => {
                    let (code, _) = errors::error_code_message(&body);
                    if code.eq_ignore_ascii_case("InvalidAuthenticationToken") || code.is_empty() {
                        auth_retried = true;
                        self.inner.token.invalidate().await;
                        continue;
                    }
                }
                500 | 502 | 503 | 504 => {
                    let may_retry = call.idempotent || (status == 503 && retry_after.is_some());
                    if may_retry && retries < policy.max_retries {
                        retries += 1;
                        let wait = match retry_after {
                            Some(ra) if ra <= policy.max_retry_after => ra,
                            Some(ra) => {
                                return Err(GraphError::Unavailable {
                                    status,
                                    retry_after: Some(ra),
                                });
                            }
                            None => policy.backoff(retries),
                        };
                        tracing::info!(url = %call.url, status, wait_ms = wait.as_millis() as u64, "Graph unavailable, retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
                _ => {}
            }
            let location = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let err = errors::map_status(status, &body, retry_after, location);
            if !matches!(err, GraphError::NotFound) {
                tracing::debug!(url = %call.url, status, body = %excerpt(&body, 300), "Graph call failed");
            }
            return Err(err);
        }
    }

    /// GET returning the JSON body, 404 as `None`.
    pub(crate) async fn get_opt(&self, call: Call<'_>) -> Result<Option<Value>, GraphError> {
        match self.execute(call).await {
            Ok(r) => r.json().map(Some),
            Err(GraphError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET a collection and follow every `@odata.nextLink`.
    pub(crate) async fn get_all(
        &self,
        url: String,
        mailbox: &str,
        outlook: bool,
    ) -> Result<Vec<Value>, GraphError> {
        let mut out = Vec::new();
        let mut next = Some(url);
        let mut pages = 0u32;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(GraphError::parse(
                    "more than 10000 pages; nextLink loop?",
                    &url,
                ));
            }
            let mut call = Call::new(Method::GET, url).mailbox(mailbox);
            call.outlook = outlook;
            let page = self.execute(call).await?.json()?;
            if let Some(items) = page["value"].as_array() {
                out.extend(
                    items
                        .iter()
                        .filter(|i| self.well_formed(i, "list item"))
                        .cloned(),
                );
            } else {
                return Err(GraphError::parse(
                    "collection answer without `value`",
                    &page.to_string(),
                ));
            }
            next = page["@odata.nextLink"].as_str().map(str::to_string);
            if let Some(n) = &next
                && !self.is_graph_url(n)
            {
                tracing::warn!(
                    host = %host_of(n),
                    "Graph handed out an @odata.nextLink outside graph_url; not followed"
                );
                return Err(foreign_url_error("`@odata.nextLink`", n));
            }
        }
        Ok(out)
    }
}

/// Scheme, host and port (explicit or the scheme's default) of a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn of(url: &str) -> Option<Origin> {
        let u = reqwest::Url::parse(url).ok()?;
        let host = u.host_str()?.to_ascii_lowercase();
        Some(Origin {
            scheme: u.scheme().to_ascii_lowercase(),
            host,
            port: u.port_or_known_default(),
        })
    }
}

/// The host (and port) of a URL, for logs; never the path or query (they may carry tokens).
pub(crate) fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "(no host)".into(),
        },
        Err(_) => "(not a URL)".into(),
    }
}

/// The error for a URL outside `graph_url` that the client will not request.
pub(crate) fn foreign_url_error(what: &str, url: &str) -> GraphError {
    GraphError::Parse {
        detail: format!(
            "{what} points outside graph_url (to {}); not requested, so the access token stays with Graph",
            host_of(url)
        ),
        excerpt: String::new(),
    }
}

fn transport_error(e: reqwest::Error) -> GraphError {
    if e.is_timeout() {
        GraphError::Timeout
    } else {
        GraphError::Transport(e.to_string())
    }
}
