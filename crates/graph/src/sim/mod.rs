//! Microsoft Graph simulator (token endpoint + the Graph v1.0 subset the connector uses).
//!
//! Tests and the demo act as users through the `user_*` methods; the app talks HTTP.
//! Behaviour follows `shared/protocols/graph.md` section 8; see `crates/graph/README.md`.

mod control;
mod delivery;
mod http;
mod meeting_mail;
mod series;
mod shape;
mod state;
mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use state::{CommitFail, Delivery, LoggedRequest};
use state::{Kind, State, View};

/// Simulator identity: one tenant, one app registration, some mailboxes.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct GraphSimConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub mailboxes: Vec<String>,
}

impl Default for GraphSimConfig {
    fn default() -> Self {
        GraphSimConfig {
            tenant_id: "00000000-0000-0000-0000-000000000001".into(),
            client_id: "00000000-0000-0000-0000-000000000002".into(),
            client_secret: "secret".into(),
            mailboxes: vec!["rep1@contoso.com".into()],
        }
    }
}

impl std::fmt::Debug for GraphSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSimConfig")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("mailboxes", &self.mailboxes)
            .finish()
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    cancel: CancellationToken,
    wake: Notify,
    http: reqwest::Client,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A running simulator; clones share it.
#[derive(Clone)]
pub struct GraphSim {
    pub(crate) shared: Arc<Shared>,
}

/// Starts the simulator on `listen` (use port 0 for a free port).
pub async fn start(listen: SocketAddr, cfg: GraphSimConfig) -> std::io::Result<GraphSim> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State::new(cfg, format!("http://{addr}"))),
        cancel: CancellationToken::new(),
        wake: Notify::new(),
        http,
    });
    let app = http::router(shared.clone());
    let cancel = shared.cancel.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!("graph simulator stopped: {e}");
        }
    });
    tokio::spawn(delivery::delivery_loop(shared.clone()));
    Ok(GraphSim { shared })
}

/// Seed file for `simulate graph --seed FILE` (every key optional):
/// `{"tenant_id", "client_id", "client_secret", "mailboxes": [..],
///   "events": {"upn": [event, ..]}, "contacts": {..}, "tasks": {..},
///   "messages": {"upn": {"Inbox/CRM": [message, ..]}}}`
#[derive(Deserialize, Default)]
#[serde(default)]
struct Seed {
    #[serde(flatten)]
    config: Option<GraphSimConfig>,
    events: std::collections::HashMap<String, Vec<Value>>,
    contacts: std::collections::HashMap<String, Vec<Value>>,
    tasks: std::collections::HashMap<String, Vec<Value>>,
    messages: std::collections::HashMap<String, std::collections::HashMap<String, Vec<Value>>>,
}

/// `crm-graph-connector simulate graph`: runs until Ctrl-C.
pub async fn run_standalone(
    listen: SocketAddr,
    seed: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let seed: Seed = match &seed {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read seed file {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("seed file {} is not valid: {e}", path.display()))?
        }
        None => Seed::default(),
    };
    let cfg = seed.config.clone().unwrap_or_default();
    let sim = start(listen, cfg.clone()).await?;
    for (m, list) in &seed.events {
        sim.add_mailbox(m);
        for e in list {
            sim.user_create_event(m, e.clone());
        }
    }
    for (m, list) in &seed.contacts {
        sim.add_mailbox(m);
        for c in list {
            sim.user_create_contact(m, c.clone());
        }
    }
    for (m, list) in &seed.tasks {
        sim.add_mailbox(m);
        let l = sim.default_list_id(m);
        for t in list {
            sim.user_create_task(m, &l, t.clone());
        }
    }
    for (m, folders) in &seed.messages {
        sim.add_mailbox(m);
        for (path, list) in folders {
            for msg in list {
                sim.deliver_message(m, path, msg.clone());
            }
        }
    }
    println!("Graph simulator listening on {}", sim.base_url());
    println!(
        "  login_url = {}   graph_url = {}",
        sim.login_url(),
        sim.graph_url()
    );
    println!(
        "  tenant {}  client {}  mailboxes {:?}",
        cfg.tenant_id, cfg.client_id, cfg.mailboxes
    );
    println!(
        "  control API: {}/_sim/ (see crates/graph/README.md)",
        sim.base_url()
    );
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}

impl GraphSim {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.lock().base_url.clone()
    }
    pub fn login_url(&self) -> String {
        self.base_url()
    }
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url())
    }

    /// Adds a mailbox (no-op if it exists); returns its user id.
    pub fn add_mailbox(&self, upn: &str) -> String {
        let mut st = self.lock();
        let i = st.add_mailbox(upn);
        st.mailboxes[i].user_id.clone()
    }

    /// The Graph user id (GUID) of a mailbox, as used in notification `resource`s.
    pub fn user_id(&self, mailbox: &str) -> Option<String> {
        let st = self.lock();
        st.mailbox(mailbox).map(|i| st.mailboxes[i].user_id.clone())
    }

    /// Mailbox answers 403 ErrorAccessDenied "Access to OData is disabled." (application access policy).
    pub fn deny_mailbox(&self, mailbox: &str, denied: bool) {
        let mut st = self.lock();
        if let Some(i) = st.mailbox(mailbox) {
            st.mailboxes[i].denied = denied;
        }
    }

    fn user_create(
        &self,
        mailbox: &str,
        kind: Kind,
        container: Option<String>,
        body: Value,
    ) -> Value {
        let mut st = self.lock();
        let Some(m) = st.mailbox(mailbox) else {
            return Value::Null;
        };
        let container = container.unwrap_or_else(|| match kind {
            Kind::Contact => st.mailboxes[m].contacts_folder.clone(),
            _ => String::new(),
        });
        let r = st.create_item(m, kind, &container, &body, false, &View::full());
        drop(st);
        self.wake();
        r.map(|(_, v)| v).unwrap_or(Value::Null)
    }

    fn user_update(&self, mailbox: &str, kind: Kind, id: &str, patch: Value) -> Value {
        let mut st = self.lock();
        let Some(m) = st.mailbox(mailbox) else {
            return Value::Null;
        };
        let r = st.patch_item(m, kind, id, &patch, None, false, &View::full());
        drop(st);
        self.wake();
        r.map(|(_, v)| v).unwrap_or(Value::Null)
    }

    fn user_delete(&self, mailbox: &str, kind: Kind, id: &str) {
        let mut st = self.lock();
        if let Some(m) = st.mailbox(mailbox) {
            let _ = st.delete_item(m, kind, id, false);
        }
        drop(st);
        self.wake();
    }

    fn item(&self, mailbox: &str, kind: Kind, id: &str) -> Option<Value> {
        let st = self.lock();
        let m = st.mailbox(mailbox)?;
        let mb = &st.mailboxes[m];
        mb.find(kind, id)
            .map(|i| mb.render(&mb.items[i], &View::full()))
    }

    fn all(&self, mailbox: &str, kind: Kind) -> Vec<Value> {
        let st = self.lock();
        let Some(m) = st.mailbox(mailbox) else {
            return Vec::new();
        };
        st.list_items(m, kind, None, None, &View::full())
            .unwrap_or_default()
    }

    // ---------------------------------------------------------------- events

    /// The user creates an event in Outlook (returned with immutable id and all properties).
    pub fn user_create_event(&self, mailbox: &str, body: Value) -> Value {
        self.user_create(mailbox, Kind::Event, None, body)
    }
    pub fn user_update_event(&self, mailbox: &str, id: &str, patch: Value) -> Value {
        self.user_update(mailbox, Kind::Event, id, patch)
    }
    /// New changeKey + lastModifiedDateTime, same content, an `updated` notification.
    pub fn user_touch_event(&self, mailbox: &str, id: &str) {
        let mut st = self.lock();
        if let Some(m) = st.mailbox(mailbox) {
            let _ = st.touch_item(m, Kind::Event, id);
        }
        drop(st);
        self.wake();
    }
    pub fn user_delete_event(&self, mailbox: &str, id: &str) {
        self.user_delete(mailbox, Kind::Event, id)
    }
    pub fn event(&self, mailbox: &str, id: &str) -> Option<Value> {
        self.item(mailbox, Kind::Event, id)
    }
    pub fn events(&self, mailbox: &str) -> Vec<Value> {
        self.all(mailbox, Kind::Event)
    }
    /// A series master's occurrences and exceptions (not its cancelled ones) from two years
    /// back to three years ahead, as `/events/{id}/instances` serves them.
    pub fn instances(&self, mailbox: &str, master_id: &str) -> Vec<Value> {
        let st = self.lock();
        let Some(m) = st.mailbox(mailbox) else {
            return Vec::new();
        };
        let now = chrono::Utc::now();
        let window = (
            now - chrono::Duration::days(730),
            now + chrono::Duration::days(1095),
        );
        st.instances(m, master_id, window, &View::full())
            .ok()
            .and_then(|(_, v)| v["value"].as_array().cloned())
            .unwrap_or_default()
    }

    // ---------------------------------------------------------------- contacts

    pub fn user_create_contact(&self, mailbox: &str, body: Value) -> Value {
        self.user_create(mailbox, Kind::Contact, None, body)
    }
    pub fn user_update_contact(&self, mailbox: &str, id: &str, patch: Value) -> Value {
        self.user_update(mailbox, Kind::Contact, id, patch)
    }
    pub fn user_touch_contact(&self, mailbox: &str, id: &str) {
        let mut st = self.lock();
        if let Some(m) = st.mailbox(mailbox) {
            let _ = st.touch_item(m, Kind::Contact, id);
        }
        drop(st);
        self.wake();
    }
    pub fn user_delete_contact(&self, mailbox: &str, id: &str) {
        self.user_delete(mailbox, Kind::Contact, id)
    }
    pub fn contact(&self, mailbox: &str, id: &str) -> Option<Value> {
        self.item(mailbox, Kind::Contact, id)
    }
    pub fn contacts(&self, mailbox: &str) -> Vec<Value> {
        self.all(mailbox, Kind::Contact)
    }

    // ---------------------------------------------------------------- To Do

    /// Id of the mailbox's default To Do list (empty string for an unknown mailbox).
    pub fn default_list_id(&self, mailbox: &str) -> String {
        let st = self.lock();
        st.mailbox(mailbox)
            .and_then(|m| {
                st.mailboxes[m]
                    .lists
                    .iter()
                    .find(|l| l.wellknown == "defaultList")
                    .map(|l| l.id.clone())
            })
            .unwrap_or_default()
    }
    /// The user creates a task in list `list_id`; `Null` when the mailbox or list is unknown.
    pub fn user_create_task(&self, mailbox: &str, list_id: &str, body: Value) -> Value {
        {
            let st = self.lock();
            let known = st
                .mailbox(mailbox)
                .is_some_and(|m| st.mailboxes[m].lists.iter().any(|l| l.id == list_id));
            if !known {
                return Value::Null;
            }
        }
        self.user_create(mailbox, Kind::Task, Some(list_id.to_string()), body)
    }
    pub fn user_update_task(&self, mailbox: &str, id: &str, patch: Value) -> Value {
        self.user_update(mailbox, Kind::Task, id, patch)
    }
    pub fn user_delete_task(&self, mailbox: &str, id: &str) {
        self.user_delete(mailbox, Kind::Task, id)
    }
    pub fn task(&self, mailbox: &str, id: &str) -> Option<Value> {
        self.item(mailbox, Kind::Task, id)
    }
    pub fn tasks(&self, mailbox: &str) -> Vec<Value> {
        self.all(mailbox, Kind::Task)
    }

    // ---------------------------------------------------------------- mail

    /// A message arrives in (or is placed into) `folder_path` (e.g. `Inbox/CRM`; missing folders are created).
    pub fn deliver_message(&self, mailbox: &str, folder_path: &str, body: Value) -> Value {
        let folder = {
            let mut st = self.lock();
            let Some(m) = st.mailbox(mailbox) else {
                return Value::Null;
            };
            let path = if folder_path.trim().is_empty() {
                "inbox"
            } else {
                folder_path
            };
            st.mailboxes[m].folder_path(path, true)
        };
        match folder {
            Some(f) => self.user_create(mailbox, Kind::Message, Some(f), body),
            None => Value::Null,
        }
    }

    /// Messages currently in `folder_path` (empty when the folder does not exist).
    pub fn messages_in(&self, mailbox: &str, folder_path: &str) -> Vec<Value> {
        let mut st = self.lock();
        let Some(m) = st.mailbox(mailbox) else {
            return Vec::new();
        };
        let Some(f) = st.mailboxes[m].folder_path(folder_path, false) else {
            return Vec::new();
        };
        st.list_items(m, Kind::Message, Some(&f), None, &View::full())
            .unwrap_or_default()
    }

    /// The id of a mail folder path, if it exists.
    pub fn folder_id(&self, mailbox: &str, folder_path: &str) -> Option<String> {
        let mut st = self.lock();
        let m = st.mailbox(mailbox)?;
        st.mailboxes[m].folder_path(folder_path, false)
    }

    // ---------------------------------------------------------------- counters

    /// POST/PATCH/DELETE by the app that changed an item (a deduplicated transactionId POST does not count).
    /// Meeting messages Graph would have mailed to attendees for events `mailbox` organises
    /// (expected-behaviour.md 39; `meeting_mail.rs`).
    pub fn meeting_messages(&self, mailbox: &str) -> u64 {
        self.lock()
            .meeting_messages
            .get(&mailbox.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    pub fn app_writes(&self, mailbox: &str) -> u64 {
        self.lock()
            .app_writes
            .get(&mailbox.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
    /// Graph API requests (not token requests, not `/_sim`).
    pub fn request_count(&self) -> u64 {
        self.lock().request_count
    }
    /// Every access token the token endpoint handed out (for tests that look for leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }
    /// Token endpoint requests.
    pub fn token_requests(&self) -> u64 {
        self.lock().token_requests
    }
    /// Highest number of concurrent requests seen for a mailbox (rejected ones included).
    pub fn max_concurrency_seen(&self, mailbox: &str) -> u32 {
        self.lock()
            .max_seen
            .get(&mailbox.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
    /// Active subscriptions as Graph renders them.
    pub fn subscriptions(&self) -> Vec<Value> {
        let st = self.lock();
        let now = chrono::Utc::now();
        st.subs
            .iter()
            .filter(|s| s.expiration > now)
            .map(|s| s.render(&st.cfg.client_id))
            .collect()
    }
    /// Every Graph API request the app made (method, path, query, body), oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().requests.clone()
    }
    /// Every notification POST attempted, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    // ---------------------------------------------------------------- fault knobs

    /// The next `n` app requests answer 429 with `Retry-After: retry_after_secs`.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        let mut st = self.lock();
        st.faults.throttle = n;
        st.faults.throttle_secs = retry_after_secs;
    }
    /// Opens a throttling window on a mailbox now: every request to it that starts within
    /// `retry_after_secs` is answered 429 with the remaining seconds in `Retry-After`.
    pub fn throttle_mailbox(&self, mailbox: &str, retry_after_secs: u64) {
        let mut st = self.lock();
        st.throttled_until.insert(
            mailbox.to_ascii_lowercase(),
            std::time::Instant::now() + Duration::from_secs(retry_after_secs),
        );
    }
    /// "Committed but failed": the next `n` writes to `mailbox` (POST of an event, contact or
    /// task; any PATCH) are applied and then answered with `how` (500 / 503 / 504, or the
    /// connection closed without an answer).
    pub fn commit_then_fail(&self, mailbox: &str, n: u32, how: CommitFail) {
        self.lock()
            .faults
            .commit_fail
            .insert(mailbox.to_ascii_lowercase(), (n, how));
    }
    /// "Empty listing once": the next list, delta or calendarView answer for `mailbox` is an
    /// empty page although items exist: a collection GET gets `{"value": []}`, a delta request
    /// an empty last page whose deltaLink yields that round's content in the next round.
    pub fn empty_listing_once(&self, mailbox: &str) {
        self.lock()
            .faults
            .empty_listing
            .insert(mailbox.to_ascii_lowercase());
    }
    /// Each `created` notification is followed by `n` `updated` ones (line 14).
    pub fn updates_after_create(&self, n: u32) {
        self.lock().faults.updates_after_create = n;
    }
    /// The next `n` change notifications are lost and a `missed` lifecycle notification is
    /// sent to each affected subscription instead (line 14).
    pub fn miss_notifications(&self, n: u32) {
        self.lock().faults.miss = n;
    }
    /// Every delta round also repeats the items of the round before it (line 11).
    pub fn replay_delta(&self, on: bool) {
        self.lock().faults.replay_delta = on;
    }
    /// The next `n` app requests answer 503 without Retry-After.
    pub fn unavailable_next(&self, n: u32) {
        self.lock().faults.unavailable = n;
    }
    /// Each notification is delivered `k` times (k = 0 or 1: once).
    pub fn duplicate_deliveries(&self, k: u32) {
        self.lock().faults.duplicates = k;
    }
    /// A create notifies `created` and then `updated`.
    pub fn created_plus_updated(&self, on: bool) {
        self.lock().faults.created_plus_updated = on;
    }
    /// The next `n` change notifications are lost, without a `missed` lifecycle notification.
    pub fn drop_notifications(&self, n: u32) {
        self.lock().faults.drop = n;
    }
    /// Notifications queued from now on wait `d` before delivery.
    pub fn delay_notifications(&self, d: Duration) {
        self.lock().faults.delay = d;
    }
    /// While on, notifications queue up without being sent; switching it off sends them
    /// (batched per URL). `quiesce` does not resolve while deliveries are held.
    pub fn hold_deliveries(&self, on: bool) {
        self.lock().faults.hold_deliveries = on;
        self.wake();
    }
    /// Every Graph request takes at least `d` (makes concurrency observable).
    pub fn set_latency(&self, d: Duration) {
        self.lock().faults.latency = d;
    }
    /// Delta rounds start with an empty page that still carries a nextLink.
    pub fn empty_delta_pages(&self, on: bool) {
        self.lock().faults.empty_delta_pages = on;
    }
    /// Delta page size (default 10; `Prefer: odata.maxpagesize` overrides it).
    pub fn set_delta_page_size(&self, n: usize) {
        self.lock().delta_page_size = n.max(1);
    }
    /// Refuse todoTask subscriptions as app-only Graph does per the docs (default: refused, line 5).
    pub fn reject_todo_subscriptions(&self, on: bool) {
        self.lock().faults.reject_todo_subscriptions = on;
    }
    /// Delivery retry: first backoff step and attempts before a notification is dropped
    /// (defaults 200 ms, 5; real Graph retries for up to 4 hours).
    pub fn set_delivery_retry(&self, base: Duration, max_attempts: u32) {
        let mut st = self.lock();
        st.delivery_retry_base = base;
        st.delivery_max_attempts = max_attempts.max(1);
    }
    /// Timeout of the validation handshake (default 10 s) and of deliveries (default 3 s).
    pub fn set_timeouts(&self, validation: Duration, delivery: Duration) {
        let mut st = self.lock();
        st.validation_timeout = validation;
        st.delivery_timeout = delivery;
    }
    /// Lifecycle notification: `missed` | `subscriptionRemoved` (also deletes it) | `reauthorizationRequired`.
    pub fn send_lifecycle(&self, subscription_id: &str, event: &str) {
        self.lock().lifecycle(subscription_id, event);
        self.wake();
    }
    /// Next use of any delta or skip link issued so far -> 410 SyncStateNotFound.
    pub fn expire_delta_tokens(&self) {
        let mut st = self.lock();
        let g = st.generation;
        st.expired_generations.insert(g, false);
        st.generation += 1;
    }
    /// Next use of any delta link issued so far -> 410 resyncRequired with a Location header.
    pub fn reset_delta_tokens(&self) {
        let mut st = self.lock();
        let g = st.generation;
        st.expired_generations.insert(g, true);
        st.generation += 1;
    }
    /// The token endpoint answers that AADSTS error (`None`: normal; `"html"`: an HTML page).
    pub fn fail_token(&self, aadsts_code: Option<&str>) {
        self.lock().faults.fail_token = aadsts_code.map(str::to_string);
    }
    /// The app permissions (`roles` claim) of access tokens issued from now on: `None` for every
    /// permission the connector needs (the default), a list for only those (an empty one: a
    /// token without admin consent, which has no `roles`). Tokens already issued keep theirs.
    pub fn set_token_roles(&self, roles: Option<&[&str]>) {
        self.lock().faults.token_roles = roles.map(|r| r.iter().map(|s| s.to_string()).collect());
    }
    /// Every access token issued so far becomes invalid (Graph answers 401).
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }
    /// Resolves when no notification is queued or in flight.
    pub fn quiesce(&self) -> impl Future<Output = ()> + Send + 'static {
        let sh = self.shared.clone();
        async move {
            loop {
                {
                    let st = sh.lock();
                    if st.queue.is_empty() && st.deliveries_in_flight == 0 {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    /// Stops the HTTP server and the delivery task.
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }
}
