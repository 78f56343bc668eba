//! The simulator's state: mailboxes, items, subscriptions, delta cursors, fault knobs.
//! Everything here is synchronous and runs under one mutex.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::GraphSimConfig;
use super::shape;
use crate::util::{graph_timestamp, odata_literals};

/// The Outlook / To Do item kinds the simulator stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Event,
    Contact,
    Task,
    Message,
}

impl Kind {
    pub fn odata_type(self) -> &'static str {
        match self {
            Kind::Event => "#Microsoft.Graph.Event",
            Kind::Contact => "#Microsoft.Graph.Contact",
            Kind::Task => "#Microsoft.Graph.TodoTask",
            Kind::Message => "#Microsoft.Graph.Message",
        }
    }
    fn lower_type(self) -> &'static str {
        match self {
            Kind::Event => "#microsoft.graph.event",
            Kind::Contact => "#microsoft.graph.contact",
            Kind::Task => "#microsoft.graph.todoTask",
            Kind::Message => "#microsoft.graph.message",
        }
    }
    pub fn outlook(self) -> bool {
        !matches!(self, Kind::Task)
    }
}

/// An error answer of the simulated Graph API.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
    pub location: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
            location: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            404,
            "ErrorItemNotFound",
            format!("The specified object was not found in the store. ({what})"),
        )
    }
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }
}

pub(crate) type ApiResult = Result<(u16, Value), ApiError>;

pub(crate) struct Item {
    pub kind: Kind,
    pub imm_id: String,
    /// The default (REST) id; changes when a message moves.
    pub rest_id: String,
    /// Folder id (messages, contacts) or list id (tasks); empty for events.
    pub container: String,
    pub data: Map<String, Value>,
    pub ext: Vec<(String, String)>,
    pub links: Vec<Value>,
    pub change_key: String,
    pub seq: u64,
    pub deleted: bool,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub transaction_id: Option<String>,
    /// The text a body was written as (served with `Prefer: outlook.body-content-type="text"`).
    pub text_body: Option<String>,
    /// On an attendee's copy of a meeting: (organizer mailbox, lower case; organizer's immutable id).
    pub organizer_ref: Option<(String, String)>,
    /// Series masters: per occurrence (key `YYYYMMDD` of its original start) an exception's
    /// changed fields, or a cancellation; with the seq of that change.
    pub overrides: std::collections::BTreeMap<String, Override>,
}

/// An exception or a cancelled occurrence of a series.
#[derive(Clone, Debug, Default)]
pub(crate) struct Override {
    pub data: Map<String, Value>,
    pub cancelled: bool,
    pub seq: u64,
}

impl Item {
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.change_key)
    }
    pub fn id(&self, immutable: bool) -> &str {
        if immutable {
            &self.imm_id
        } else {
            &self.rest_id
        }
    }
    pub fn has_id(&self, id: &str) -> bool {
        self.imm_id == id || self.rest_id == id
    }
}

/// How to render an item.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    pub immutable: bool,
    /// `None`: no extended properties; `Some(empty)`: all; `Some(ids)`: those.
    pub expand_ext: Option<Vec<String>>,
    pub expand_links: bool,
    /// `Prefer: outlook.timezone="..."` (start/end are served in UTC without it).
    pub tz: Option<String>,
    /// `Prefer: outlook.body-content-type="text"`.
    pub text_body: bool,
}

impl View {
    pub fn full() -> Self {
        View {
            immutable: true,
            expand_ext: Some(Vec::new()),
            expand_links: true,
            tz: None,
            text_body: false,
        }
    }
}

pub(crate) struct Folder {
    pub id: String,
    pub parent: Option<String>,
    pub name: String,
    pub wellknown: Option<String>,
}

pub(crate) struct TodoList {
    pub id: String,
    pub name: String,
    pub wellknown: String,
}

pub(crate) struct Mailbox {
    pub upn: String,
    pub user_id: String,
    pub display_name: String,
    pub items: Vec<Item>,
    pub folders: Vec<Folder>,
    pub lists: Vec<TodoList>,
    pub contacts_folder: String,
    pub denied: bool,
}

impl Mailbox {
    fn new(upn: &str) -> Self {
        let local = upn.split('@').next().unwrap_or(upn);
        let mut display = String::new();
        for (i, part) in local.split(['.', '_']).enumerate() {
            if i > 0 {
                display.push(' ');
            }
            let mut c = part.chars();
            if let Some(f) = c.next() {
                display.extend(f.to_uppercase());
                display.push_str(c.as_str());
            }
        }
        let folders = [
            ("Inbox", "inbox"),
            ("Sent Items", "sentitems"),
            ("Drafts", "drafts"),
            ("Deleted Items", "deleteditems"),
            ("Archive", "archive"),
            ("Junk Email", "junkemail"),
            ("Outbox", "outbox"),
        ]
        .iter()
        .map(|(n, w)| Folder {
            id: new_container_id(),
            parent: None,
            name: n.to_string(),
            wellknown: Some(w.to_string()),
        })
        .collect();
        Mailbox {
            upn: upn.to_string(),
            user_id: uuid::Uuid::new_v4().to_string(),
            display_name: display,
            items: Vec::new(),
            folders,
            lists: vec![TodoList {
                id: new_container_id(),
                name: "Tasks".into(),
                wellknown: "defaultList".into(),
            }],
            contacts_folder: new_container_id(),
            denied: false,
        }
    }

    pub fn find(&self, kind: Kind, id: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|i| i.kind == kind && !i.deleted && i.has_id(id))
    }

    /// Folder by id or well-known name (case-insensitive).
    pub fn folder(&self, key: &str) -> Option<&Folder> {
        self.folders.iter().find(|f| f.id == key).or_else(|| {
            let lower = key.to_ascii_lowercase();
            if lower == "msgfolderroot" {
                return None;
            }
            self.folders
                .iter()
                .find(|f| f.wellknown.as_deref() == Some(lower.as_str()))
        })
    }

    /// Resolves `Inbox/CRM` (first segment: well-known name or display name); creates missing ones when asked.
    pub fn folder_path(&mut self, path: &str, create: bool) -> Option<String> {
        let mut current: Option<String> = None;
        for seg in path.split('/').map(str::trim).filter(|s| !s.is_empty()) {
            let found = match &current {
                None => self.folder(seg).map(|f| f.id.clone()).or_else(|| {
                    self.folders
                        .iter()
                        .find(|f| f.parent.is_none() && f.name.eq_ignore_ascii_case(seg))
                        .map(|f| f.id.clone())
                }),
                Some(p) => self
                    .folders
                    .iter()
                    .find(|f| {
                        f.parent.as_deref() == Some(p.as_str()) && f.name.eq_ignore_ascii_case(seg)
                    })
                    .map(|f| f.id.clone()),
            };
            let id = match found {
                Some(id) => id,
                None if create => {
                    let id = new_container_id();
                    self.folders.push(Folder {
                        id: id.clone(),
                        parent: current.clone(),
                        name: seg.to_string(),
                        wellknown: None,
                    });
                    id
                }
                None => return None,
            };
            current = Some(id);
        }
        current
    }

    pub fn render_folder(&self, f: &Folder) -> Value {
        let children = self
            .folders
            .iter()
            .filter(|c| c.parent.as_deref() == Some(f.id.as_str()))
            .count();
        let total = self
            .items
            .iter()
            .filter(|i| i.kind == Kind::Message && !i.deleted && i.container == f.id)
            .count();
        let unread = self
            .items
            .iter()
            .filter(|i| {
                i.kind == Kind::Message
                    && !i.deleted
                    && i.container == f.id
                    && i.data.get("isRead") != Some(&Value::Bool(true))
            })
            .count();
        json!({
            "id": f.id,
            "displayName": f.name,
            "parentFolderId": f.parent.clone().unwrap_or_else(|| format!("root-{}", self.user_id)),
            "childFolderCount": children,
            "unreadItemCount": unread,
            "totalItemCount": total,
            "isHidden": false,
        })
    }

    pub fn render(&self, item: &Item, view: &View) -> Value {
        let mut m = item.data.clone();
        m.insert(
            "id".into(),
            Value::String(item.id(view.immutable).to_string()),
        );
        m.insert("@odata.etag".into(), Value::String(item.etag()));
        m.insert(
            "createdDateTime".into(),
            Value::String(graph_timestamp(item.created)),
        );
        m.insert(
            "lastModifiedDateTime".into(),
            Value::String(graph_timestamp(item.modified)),
        );
        if item.kind.outlook() {
            m.insert("changeKey".into(), Value::String(item.change_key.clone()));
        }
        match item.kind {
            Kind::Message | Kind::Contact => {
                m.insert(
                    "parentFolderId".into(),
                    Value::String(item.container.clone()),
                );
            }
            Kind::Event => {
                if let Some(t) = &item.transaction_id {
                    m.insert("transactionId".into(), Value::String(t.clone()));
                }
            }
            Kind::Task => {}
        }
        if let (Some(filter), true) = (&view.expand_ext, item.kind.outlook()) {
            let props: Vec<Value> = item
                .ext
                .iter()
                .filter(|(id, _)| {
                    filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(id))
                })
                .map(|(id, v)| json!({ "id": id, "value": v }))
                .collect();
            m.insert("singleValueExtendedProperties".into(), Value::Array(props));
        }
        if view.expand_links && item.kind == Kind::Task {
            m.insert("linkedResources".into(), Value::Array(item.links.clone()));
        }
        if matches!(item.kind, Kind::Event | Kind::Message) {
            shape::render_body(&mut m, item.text_body.as_deref(), view);
        }
        if item.kind == Kind::Event {
            shape::render_times(&mut m, view);
        }
        Value::Object(m)
    }
}

pub(crate) fn new_item_id(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!("AAMkAD{prefix}{u}AAA=")
}

fn new_container_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!("AAMkADF{u}AQ==")
}

fn new_change_key() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!("CQAAABYAAA{}", &u[..20])
}

/// A validated subscription.
pub(crate) struct Sub {
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub expiration: DateTime<Utc>,
    pub client_state: Option<String>,
    pub immutable: bool,
    pub mailbox: String,
    pub kind: Kind,
    pub container: Option<String>,
    pub tls: String,
}

impl Sub {
    pub fn render(&self, application_id: &str) -> Value {
        json!({
            "id": self.id,
            "resource": self.resource,
            "applicationId": application_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_timestamp(self.expiration),
            "creatorId": application_id,
            "includeResourceData": false,
            "latestSupportedTlsVersion": self.tls,
            "encryptionCertificate": null,
            "encryptionCertificateId": null,
            "notificationQueryOptions": null,
            "notificationUrlAppId": null,
        })
    }
    fn wants(&self, change: &str) -> bool {
        self.change_type
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(change))
    }
}

/// A notification waiting for delivery.
pub(crate) struct Outgoing {
    pub url: String,
    pub item: Value,
    pub due: Instant,
    pub attempts: u32,
    pub lifecycle: bool,
}

/// One delivery attempt, kept for tests.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub url: String,
    pub body: Value,
    /// HTTP status of the receiver's answer; `None` on timeout / transport error.
    pub status: Option<u16>,
}

/// One Graph API request the app made, kept for schema tests.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    /// Percent-decoded path, e.g. `/v1.0/users/rep1@contoso.com/events/AAMk...=`.
    pub path: String,
    /// Raw query string.
    pub query: String,
    pub prefer: Option<String>,
    pub if_match: Option<String>,
    pub body: Option<Value>,
    /// When the request arrived.
    pub at: Instant,
    /// The mailbox (lower-case UPN) a mailbox call addressed; `None` for directory and other calls.
    pub mailbox: Option<String>,
    /// The HTTP status answered (0 when the connection was closed without an answer).
    pub status: u16,
    /// Serial number (for updating the status once the answer is known).
    pub serial: u64,
}

/// (kind, container, window, delta endpoint path) of a delta cursor.
pub(crate) type CursorMeta = (
    Kind,
    Option<String>,
    Option<(DateTime<Utc>, DateTime<Utc>)>,
    String,
);

pub(crate) enum CursorState {
    /// Remaining pages of a round, then a delta token at `then_seq`.
    Pages {
        pages: VecDeque<Vec<Value>>,
        then_seq: u64,
        /// Where the round started (an empty-listing fault ends the round there).
        from_seq: u64,
        /// Carried to the round's deltaLink (the replay fault).
        replay_from: Option<u64>,
    },
    /// A delta token: changes after `since` (and, once, those after `replay_from`).
    Delta {
        since: u64,
        replay_from: Option<u64>,
    },
}

pub(crate) struct Cursor {
    pub mailbox: String,
    pub kind: Kind,
    pub container: Option<String>,
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub generation: u64,
    pub state: CursorState,
    /// Path of the delta endpoint, e.g. `/v1.0/users/x/calendarView/delta`.
    pub path: String,
}

#[derive(Default)]
pub(crate) struct Faults {
    pub throttle: u32,
    pub throttle_secs: u64,
    pub unavailable: u32,
    pub duplicates: u32,
    pub created_plus_updated: bool,
    pub drop: u32,
    pub delay: Duration,
    pub fail_token: Option<String>,
    /// The `roles` of tokens issued from now on (`None`: every permission the connector needs).
    pub token_roles: Option<Vec<String>>,
    pub latency: Duration,
    pub empty_delta_pages: bool,
    pub reject_todo_subscriptions: bool,
    pub hold_deliveries: bool,
    /// Extra `updated` notifications after each `created` (line 14).
    pub updates_after_create: u32,
    /// The next n change notifications are lost and a `missed` lifecycle notification follows.
    pub miss: u32,
    /// Each delta round repeats the items of the round before (line 11).
    pub replay_delta: bool,
    /// Per mailbox (lower case): the next writes are applied and then answered with a failure.
    pub commit_fail: HashMap<String, (u32, CommitFail)>,
    /// Per mailbox (lower case): the next list / delta / calendarView answer is empty.
    pub empty_listing: std::collections::HashSet<String>,
}

/// How a committed write fails (the "committed but failed" fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFail {
    /// 500 InternalServerError.
    Status500,
    /// 503 ServiceUnavailable.
    Status503,
    /// 504 GatewayTimeout.
    Status504,
    /// The connection is closed without an answer.
    CloseConnection,
}

pub(crate) struct State {
    pub cfg: GraphSimConfig,
    pub base_url: String,
    pub mailboxes: Vec<Mailbox>,
    pub tokens: HashMap<String, Instant>,
    pub token_requests: u64,
    pub seq: u64,
    pub subs: Vec<Sub>,
    pub cursors: HashMap<String, Cursor>,
    pub generation: u64,
    /// generation -> whether the 410 carries a Location (sync reset) or not (SyncStateNotFound).
    pub expired_generations: HashMap<u64, bool>,
    pub faults: Faults,
    pub request_count: u64,
    pub app_writes: HashMap<String, u64>,
    /// Meeting messages Graph would have mailed to attendees, per organizer mailbox (lower case).
    pub meeting_messages: HashMap<String, u64>,
    pub inflight: HashMap<String, u32>,
    pub max_seen: HashMap<String, u32>,
    pub mailbox_limit: u32,
    pub queue: VecDeque<Outgoing>,
    pub deliveries_in_flight: u32,
    pub requests: Vec<LoggedRequest>,
    pub deliveries: Vec<Delivery>,
    pub delta_page_size: usize,
    pub request_serial: u64,
    /// Per mailbox (lower case): every request starting before this instant is answered 429.
    pub throttled_until: HashMap<String, Instant>,
    pub delivery_retry_base: Duration,
    pub delivery_max_attempts: u32,
    pub delivery_timeout: Duration,
    pub validation_timeout: Duration,
}

const REQUEST_LOG_CAP: usize = 10_000;

impl State {
    pub fn new(cfg: GraphSimConfig, base_url: String) -> Self {
        let mailboxes = cfg.mailboxes.iter().map(|m| Mailbox::new(m)).collect();
        State {
            cfg,
            base_url,
            mailboxes,
            tokens: HashMap::new(),
            token_requests: 0,
            seq: 0,
            subs: Vec::new(),
            cursors: HashMap::new(),
            generation: 0,
            expired_generations: HashMap::new(),
            faults: Faults {
                reject_todo_subscriptions: true,
                ..Faults::default()
            },
            request_count: 0,
            app_writes: HashMap::new(),
            meeting_messages: HashMap::new(),
            inflight: HashMap::new(),
            max_seen: HashMap::new(),
            mailbox_limit: 4,
            queue: VecDeque::new(),
            deliveries_in_flight: 0,
            requests: Vec::new(),
            deliveries: Vec::new(),
            delta_page_size: 10,
            request_serial: 0,
            throttled_until: HashMap::new(),
            delivery_retry_base: Duration::from_millis(200),
            delivery_max_attempts: 5,
            delivery_timeout: Duration::from_secs(3),
            validation_timeout: Duration::from_secs(10),
        }
    }

    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    pub fn log_request(&mut self, mut r: LoggedRequest) -> u64 {
        if self.requests.len() >= REQUEST_LOG_CAP {
            self.requests.remove(0);
        }
        self.request_serial += 1;
        r.serial = self.request_serial;
        self.requests.push(r);
        self.request_serial
    }

    pub fn log_status(&mut self, serial: u64, status: u16) {
        if let Some(r) = self.requests.iter_mut().rev().find(|r| r.serial == serial) {
            r.status = status;
        }
    }

    pub fn log_delivery(&mut self, d: Delivery) {
        if self.deliveries.len() >= REQUEST_LOG_CAP {
            self.deliveries.remove(0);
        }
        self.deliveries.push(d);
    }

    /// Mailbox index by UPN (case-insensitive) or user id.
    pub fn mailbox(&self, key: &str) -> Option<usize> {
        self.mailboxes
            .iter()
            .position(|m| m.upn.eq_ignore_ascii_case(key) || m.user_id.eq_ignore_ascii_case(key))
    }

    pub fn add_mailbox(&mut self, upn: &str) -> usize {
        if let Some(i) = self.mailbox(upn) {
            return i;
        }
        self.mailboxes.push(Mailbox::new(upn));
        self.mailboxes.len() - 1
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn count_write(&mut self, mbx: usize, by_app: bool) {
        if by_app {
            let key = self.mailboxes[mbx].upn.to_ascii_lowercase();
            *self.app_writes.entry(key).or_default() += 1;
        }
    }

    /// Counts the meeting messages a write of an event sends (`meeting_mail.rs`).
    pub(crate) fn count_meeting_mail(
        &mut self,
        mbx: usize,
        before: Option<&Map<String, Value>>,
        after: &Map<String, Value>,
        copy: bool,
    ) {
        let n = super::meeting_mail::messages(before, after, copy);
        if n > 0 {
            let key = self.mailboxes[mbx].upn.to_ascii_lowercase();
            *self.meeting_messages.entry(key).or_default() += n;
        }
    }

    // ------------------------------------------------------------------ items

    /// Creates an item. `body` must be an object.
    pub fn create_item(
        &mut self,
        mbx: usize,
        kind: Kind,
        container: &str,
        body: &Value,
        by_app: bool,
        view: &View,
    ) -> ApiResult {
        let Value::Object(input) = body else {
            return Err(ApiError::bad("The request body must be a JSON object."));
        };
        let transaction_id = match input.get("transactionId") {
            Some(Value::String(t)) if kind == Kind::Event => Some(t.clone()),
            Some(Value::Null) | None => None,
            Some(_) if kind == Kind::Event => {
                return Err(ApiError::bad("transactionId must be a string."));
            }
            Some(_) => {
                return Err(ApiError::bad(format!(
                    "Property 'transactionId' does not exist on this {kind:?}."
                )));
            }
        };
        if let Some(t) = &transaction_id {
            let mb = &self.mailboxes[mbx];
            if let Some(existing) = mb
                .items
                .iter()
                .find(|i| i.kind == kind && !i.deleted && i.transaction_id.as_deref() == Some(t))
            {
                // Same transactionId: the original, no second event.
                return Ok((201, mb.render(existing, view)));
            }
        }
        shape::check_known(kind, input)?;
        let mut data = Map::new();
        let mut ext = Vec::new();
        let mut links = Vec::new();
        for (k, v) in input {
            if by_app && shape::read_only(k) {
                continue;
            }
            match k.as_str() {
                "singleValueExtendedProperties" => ext = parse_ext(v)?,
                "linkedResources" if kind == Kind::Task => links = parse_links(v)?,
                "id"
                | "changeKey"
                | "createdDateTime"
                | "lastModifiedDateTime"
                | "transactionId"
                | "parentFolderId"
                | "extensions" => {}
                k if k.starts_with('@') => {}
                _ => {
                    data.insert(k.clone(), v.clone());
                }
            }
        }
        let now = Utc::now();
        let (upn, display) = (
            self.mailboxes[mbx].upn.clone(),
            self.mailboxes[mbx].display_name.clone(),
        );
        apply_defaults(kind, &mut data, &upn, &display, now);
        let mut text_body = None;
        if matches!(kind, Kind::Event | Kind::Message) {
            let (b, t) = shape::normalize_body(data.get("body").unwrap_or(&Value::Null))?;
            data.insert("body".into(), b);
            data.insert(
                "bodyPreview".into(),
                Value::String(shape::preview(data.get("body"))),
            );
            text_body = t;
        }
        if kind == Kind::Event {
            shape::check_event_times(&data)?;
            fill_recurrence_zone(&mut data);
        }
        let seq = self.next_seq();
        let prefix = match kind {
            Kind::Event => "E",
            Kind::Contact => "C",
            Kind::Task => "T",
            Kind::Message => "M",
        };
        let imm_id = new_item_id(prefix);
        let rest_id = if kind.outlook() {
            new_item_id(&format!("{prefix}R"))
        } else {
            imm_id.clone()
        };
        let item = Item {
            kind,
            imm_id,
            rest_id,
            container: container.to_string(),
            data,
            ext,
            links,
            change_key: new_change_key(),
            seq,
            deleted: false,
            created: now,
            modified: now,
            transaction_id,
            text_body,
            organizer_ref: None,
            overrides: Default::default(),
        };
        let rendered = self.mailboxes[mbx].render(&item, view);
        if kind == Kind::Event {
            self.count_meeting_mail(mbx, None, &item.data, item.organizer_ref.is_some());
        }
        self.mailboxes[mbx].items.push(item);
        let idx = self.mailboxes[mbx].items.len() - 1;
        self.count_write(mbx, by_app);
        self.emit(mbx, idx, "created", None);
        self.sync_copies(mbx, idx);
        Ok((201, rendered))
    }

    fn check_if_match(item: &Item, if_match: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = if_match.map(str::trim) else {
            return Ok(());
        };
        if expected == "*" {
            return Ok(());
        }
        let bare = expected.trim_start_matches("W/").trim_matches('"');
        if bare == item.change_key {
            return Ok(());
        }
        Err(ApiError::new(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch_item(
        &mut self,
        mbx: usize,
        kind: Kind,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
        by_app: bool,
        view: &View,
    ) -> ApiResult {
        let Value::Object(input) = patch else {
            return Err(ApiError::bad("The request body must be a JSON object."));
        };
        shape::check_known(kind, input)?;
        let idx = match self.mailboxes[mbx].find(kind, id) {
            Some(i) => i,
            None if kind == Kind::Event => {
                return self.patch_occurrence(mbx, id, input, if_match, by_app, view);
            }
            None => return Err(ApiError::not_found(id)),
        };
        Self::check_if_match(&self.mailboxes[mbx].items[idx], if_match)?;
        let mut new_ext = None;
        let mut new_links = None;
        for (k, v) in input {
            if k == "singleValueExtendedProperties" {
                new_ext = Some(parse_ext(v)?);
            }
            if k == "linkedResources" && kind == Kind::Task {
                new_links = Some(parse_links(v)?);
            }
            if k == "transactionId" {
                return Err(ApiError::bad("transactionId can't be changed."));
            }
        }
        let mut data = self.mailboxes[mbx].items[idx].data.clone();
        for (k, v) in input {
            if by_app && shape::read_only(k) {
                continue;
            }
            match k.as_str() {
                "singleValueExtendedProperties"
                | "multiValueExtendedProperties"
                | "attachments"
                | "checklistItems"
                | "linkedResources"
                | "id"
                | "changeKey"
                | "createdDateTime"
                | "lastModifiedDateTime"
                | "parentFolderId"
                | "extensions" => {}
                k if k.starts_with('@') => {}
                _ => {
                    data.insert(k.clone(), v.clone());
                }
            }
        }
        let mut new_text = None;
        if matches!(kind, Kind::Event | Kind::Message) && input.contains_key("body") {
            let (b, t) = shape::normalize_body(data.get("body").unwrap_or(&Value::Null))?;
            data.insert("body".into(), b);
            new_text = Some(t);
        }
        if kind == Kind::Event {
            for (k, orig) in [
                ("start", "originalStartTimeZone"),
                ("end", "originalEndTimeZone"),
            ] {
                if input.contains_key(k)
                    && let Some(z) = data
                        .get(k)
                        .and_then(|v| v["timeZone"].as_str())
                        .map(str::to_string)
                {
                    data.insert(orig.into(), Value::String(z));
                }
            }
            shape::check_event_times(&data)?;
            fill_recurrence_zone(&mut data);
            if input.contains_key("recurrence") {
                let series = data.get("recurrence").is_some_and(|r| !r.is_null());
                data.insert(
                    "type".into(),
                    json!(if series {
                        "seriesMaster"
                    } else {
                        "singleInstance"
                    }),
                );
            }
        }
        let seq = self.next_seq();
        if kind == Kind::Event {
            let before = self.mailboxes[mbx].items[idx].data.clone();
            let copy = self.mailboxes[mbx].items[idx].organizer_ref.is_some();
            self.count_meeting_mail(mbx, Some(&before), &data, copy);
        }
        let item = &mut self.mailboxes[mbx].items[idx];
        item.data = data;
        if let Some(t) = new_text {
            item.text_body = t;
        }
        if let Some(ext) = new_ext {
            for (pid, pv) in ext {
                match item
                    .ext
                    .iter_mut()
                    .find(|(i, _)| i.eq_ignore_ascii_case(&pid))
                {
                    Some(slot) => slot.1 = pv,
                    None => item.ext.push((pid, pv)),
                }
            }
        }
        if let Some(links) = new_links {
            item.links.extend(links);
        }
        if kind == Kind::Event && input.contains_key("location") {
            let loc = item.data.get("location").cloned().unwrap_or(Value::Null);
            item.data.insert(
                "locations".into(),
                if loc.is_null() {
                    json!([])
                } else {
                    json!([loc])
                },
            );
        }
        if input.contains_key("body") {
            let preview = body_preview(item.data.get("body"));
            if matches!(kind, Kind::Event | Kind::Message) {
                item.data
                    .insert("bodyPreview".into(), Value::String(preview));
            }
            if kind == Kind::Task {
                item.data.insert(
                    "bodyLastModifiedDateTime".into(),
                    Value::String(graph_timestamp(Utc::now())),
                );
            }
        }
        if kind == Kind::Contact
            && !input.contains_key("displayName")
            && (input.contains_key("givenName") || input.contains_key("surname"))
        {
            let dn = contact_display_name(&item.data);
            item.data.insert("displayName".into(), Value::String(dn));
        }
        item.change_key = new_change_key();
        item.modified = Utc::now();
        item.seq = seq;
        let rendered = self.mailboxes[mbx].render(&self.mailboxes[mbx].items[idx], view);
        self.count_write(mbx, by_app);
        self.emit(mbx, idx, "updated", None);
        self.sync_copies(mbx, idx);
        Ok((200, rendered))
    }

    /// New changeKey and lastModifiedDateTime, same content, an `updated` notification.
    pub fn touch_item(&mut self, mbx: usize, kind: Kind, id: &str) -> Result<(), ApiError> {
        let idx = self.mailboxes[mbx]
            .find(kind, id)
            .ok_or_else(|| ApiError::not_found(id))?;
        let seq = self.next_seq();
        let item = &mut self.mailboxes[mbx].items[idx];
        item.change_key = new_change_key();
        item.modified = Utc::now();
        item.seq = seq;
        self.emit(mbx, idx, "updated", None);
        Ok(())
    }

    pub fn delete_item(&mut self, mbx: usize, kind: Kind, id: &str, by_app: bool) -> ApiResult {
        let idx = match self.mailboxes[mbx].find(kind, id) {
            Some(i) => i,
            None if kind == Kind::Event => return self.cancel_occurrence(mbx, id, by_app),
            None => return Err(ApiError::not_found(id)),
        };
        let seq = self.next_seq();
        let item = &mut self.mailboxes[mbx].items[idx];
        item.deleted = true;
        item.seq = seq;
        item.modified = Utc::now();
        self.count_write(mbx, by_app);
        self.emit(mbx, idx, "deleted", None);
        self.sync_copies(mbx, idx);
        Ok((204, Value::Null))
    }

    /// `POST …/tasks/{id}/linkedResources` (graph.md 3.3): adds one linkedResource to a task
    /// (the server makes its id); the task changes (new change key, reported by delta).
    pub fn add_task_link(
        &mut self,
        mbx: usize,
        container: &str,
        id: &str,
        body: &Value,
        by_app: bool,
    ) -> ApiResult {
        let idx = self.mailboxes[mbx]
            .find(Kind::Task, id)
            .filter(|i| self.mailboxes[mbx].items[*i].container == container)
            .ok_or_else(|| ApiError::not_found(id))?;
        let mut link = parse_links(&Value::Array(vec![body.clone()]))?;
        let Some(link) = link.pop() else {
            return Err(ApiError::bad("The request body must be a linkedResource."));
        };
        let seq = self.next_seq();
        let item = &mut self.mailboxes[mbx].items[idx];
        item.links.push(link.clone());
        item.change_key = new_change_key();
        item.modified = Utc::now();
        item.seq = seq;
        self.count_write(mbx, by_app);
        self.emit(mbx, idx, "updated", None);
        Ok((201, link))
    }

    /// `GET …/tasks/{id}/linkedResources`.
    pub fn task_links(&self, mbx: usize, container: &str, id: &str) -> ApiResult {
        let mb = &self.mailboxes[mbx];
        let idx = mb
            .find(Kind::Task, id)
            .filter(|i| mb.items[*i].container == container)
            .ok_or_else(|| ApiError::not_found(id))?;
        Ok((200, json!({ "value": mb.items[idx].links })))
    }

    /// Moves a message: new default id, same immutable id.
    pub fn move_message(
        &mut self,
        mbx: usize,
        id: &str,
        destination: &str,
        view: &View,
    ) -> ApiResult {
        let idx = self.mailboxes[mbx]
            .find(Kind::Message, id)
            .ok_or_else(|| ApiError::not_found(id))?;
        let dest = self.mailboxes[mbx]
            .folder(destination)
            .map(|f| f.id.clone())
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "ErrorInvalidIdMalformed",
                    "Destination folder not found.",
                )
            })?;
        let seq = self.next_seq();
        let item = &mut self.mailboxes[mbx].items[idx];
        let old = std::mem::replace(&mut item.container, dest.clone());
        if old != dest {
            item.rest_id = new_item_id("MR");
        }
        item.change_key = new_change_key();
        item.modified = Utc::now();
        item.seq = seq;
        let rendered = self.mailboxes[mbx].render(&self.mailboxes[mbx].items[idx], view);
        self.count_write(mbx, true);
        if old != dest {
            // Folder-scoped subscriptions see delete + create, mailbox-wide ones an update.
            self.emit(mbx, idx, "deleted", Some(Some(old)));
            self.emit(mbx, idx, "created", Some(Some(dest)));
            self.emit(mbx, idx, "updated", Some(None));
        } else {
            self.emit(mbx, idx, "updated", None);
        }
        Ok((201, rendered))
    }

    /// Live items of a kind (optionally in one container) filtered by an OData `$filter`.
    pub fn list_items(
        &self,
        mbx: usize,
        kind: Kind,
        container: Option<&str>,
        filter: Option<&str>,
        view: &View,
    ) -> Result<Vec<Value>, ApiError> {
        let mb = &self.mailboxes[mbx];
        let pred = parse_filter(filter)?;
        Ok(mb
            .items
            .iter()
            .filter(|i| i.kind == kind && !i.deleted)
            .filter(|i| container.is_none_or(|c| i.container == c))
            .filter(|i| pred.matches(i))
            .map(|i| mb.render(i, view))
            .collect())
    }

    // ------------------------------------------------------------------ notifications

    /// Queues notifications for a change of item `idx`. `scope`: `None` = every matching
    /// subscription; `Some(Some(c))` = only subscriptions scoped to container `c`;
    /// `Some(None)` = only mailbox-wide subscriptions.
    pub(crate) fn emit(
        &mut self,
        mbx: usize,
        idx: usize,
        change: &str,
        scope: Option<Option<String>>,
    ) {
        let now = Utc::now();
        self.subs.retain(|s| s.expiration > now);
        let (kind, container, imm, rest, etag, user_id, upn) = {
            let mb = &self.mailboxes[mbx];
            let it = &mb.items[idx];
            (
                it.kind,
                it.container.clone(),
                it.imm_id.clone(),
                it.rest_id.clone(),
                it.etag(),
                mb.user_id.clone(),
                mb.upn.clone(),
            )
        };
        let due = Instant::now() + self.faults.delay;
        let mut out = Vec::new();
        for s in &self.subs {
            if !s.mailbox.eq_ignore_ascii_case(&upn) || s.kind != kind {
                continue;
            }
            let in_scope = match (&scope, &s.container) {
                (None, None) => true,
                (None, Some(c)) => *c == container,
                (Some(Some(only)), Some(c)) => c == only,
                (Some(Some(_)), None) => false,
                (Some(None), None) => true,
                (Some(None), Some(_)) => false,
            };
            if !in_scope {
                continue;
            }
            let mut changes = Vec::new();
            if s.wants(change) {
                changes.push(change.to_string());
            }
            let extra = self
                .faults
                .updates_after_create
                .max(u32::from(self.faults.created_plus_updated));
            if change == "created" && s.wants("updated") {
                for _ in 0..extra {
                    changes.push("updated".to_string());
                }
            }
            for c in changes {
                let id = if s.immutable {
                    imm.clone()
                } else {
                    rest.clone()
                };
                let resource = match kind {
                    Kind::Event => format!("Users/{user_id}/Events/{id}"),
                    Kind::Contact => format!("Users/{user_id}/Contacts/{id}"),
                    Kind::Message => format!("Users/{user_id}/Messages/{id}"),
                    Kind::Task => format!("Users/{user_id}/Todo/Lists/{container}/Tasks/{id}"),
                };
                let item = json!({
                    "id": uuid::Uuid::new_v4().to_string(),
                    "subscriptionId": s.id,
                    "subscriptionExpirationDateTime": s.expiration.to_rfc3339(),
                    "clientState": s.client_state,
                    "changeType": c,
                    "resource": resource,
                    "tenantId": self.cfg.tenant_id,
                    "resourceData": {
                        "@odata.type": kind.odata_type(),
                        "@odata.id": resource,
                        "@odata.etag": etag,
                        "id": id,
                    }
                });
                out.push((s.notification_url.clone(), item));
            }
        }
        let mut missed: Vec<String> = Vec::new();
        for (url, item) in out {
            if self.faults.drop > 0 {
                self.faults.drop -= 1;
                continue;
            }
            if self.faults.miss > 0 {
                self.faults.miss -= 1;
                let sub = item["subscriptionId"].as_str().unwrap_or("").to_string();
                if !missed.contains(&sub) {
                    missed.push(sub);
                }
                continue;
            }
            for _ in 0..self.faults.duplicates.max(1) {
                self.queue.push_back(Outgoing {
                    url: url.clone(),
                    item: item.clone(),
                    due,
                    attempts: 0,
                    lifecycle: false,
                });
            }
        }
        for sub in missed {
            self.lifecycle(&sub, "missed");
        }
    }

    /// Queues a lifecycle notification; `subscriptionRemoved` also deletes the subscription.
    pub fn lifecycle(&mut self, sub_id: &str, event: &str) -> bool {
        let Some(pos) = self.subs.iter().position(|s| s.id == sub_id) else {
            return false;
        };
        let s = &self.subs[pos];
        let item = json!({
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": s.expiration.to_rfc3339(),
            "tenantId": self.cfg.tenant_id,
            "clientState": s.client_state,
            "lifecycleEvent": event,
        });
        let url = s.lifecycle_url.clone();
        if event == "subscriptionRemoved" {
            self.subs.remove(pos);
        }
        match url {
            Some(url) => {
                self.queue.push_back(Outgoing {
                    url,
                    item,
                    due: Instant::now() + self.faults.delay,
                    attempts: 0,
                    lifecycle: true,
                });
                true
            }
            None => false,
        }
    }

    // ------------------------------------------------------------------ delta

    fn in_window(item: &Item, window: Option<(DateTime<Utc>, DateTime<Utc>)>) -> bool {
        if window.is_none() {
            return true;
        }
        item.span()
            .is_some_and(|s| super::series::overlaps(s, window))
    }

    fn removed(kind: Kind, id: &str) -> Value {
        json!({ "@odata.type": kind.lower_type(), "id": id, "@removed": { "reason": "deleted" } })
    }

    /// Items of a round: the initial state (`since` = None) or the changes after `since`
    /// (plus, once, those in `(replay_from, since]`: an item repeated in a later round).
    fn round_items(
        &self,
        mbx: usize,
        meta: &CursorMeta,
        since: Option<u64>,
        replay_from: Option<u64>,
        view: &View,
    ) -> Vec<Value> {
        let mb = &self.mailboxes[mbx];
        let (kind, container, window, _) = meta;
        let view = View {
            expand_ext: None,
            expand_links: false,
            ..view.clone()
        };
        let after = match (since, replay_from) {
            (Some(s), Some(r)) => Some(s.min(r)),
            (s, _) => s,
        };
        if *kind == Kind::Event
            && let Some(w) = window
        {
            return match after {
                None => mb.calendar_view(*w, &view, true),
                Some(s) => mb
                    .calendar_changes(*w, s, &view)
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect(),
            };
        }
        let in_scope =
            |i: &&Item| i.kind == *kind && container.as_ref().is_none_or(|c| &i.container == c);
        match after {
            None => mb
                .items
                .iter()
                .filter(in_scope)
                .filter(|i| !i.deleted && Self::in_window(i, *window))
                .map(|i| mb.render(i, &view))
                .collect(),
            Some(s) => {
                let mut changed: Vec<&Item> = mb
                    .items
                    .iter()
                    .filter(in_scope)
                    .filter(|i| i.seq > s)
                    .collect();
                changed.sort_by_key(|i| i.seq);
                changed
                    .into_iter()
                    .map(|i| {
                        if i.deleted || !Self::in_window(i, *window) {
                            Self::removed(i.kind, i.id(view.immutable))
                        } else {
                            mb.render(i, &view)
                        }
                    })
                    .collect()
            }
        }
    }

    /// Starts or continues a delta round; answers one page.
    #[allow(clippy::too_many_arguments)]
    pub fn delta_page(
        &mut self,
        mbx: usize,
        kind: Kind,
        container: Option<String>,
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
        token: Option<(bool, String)>,
        path: &str,
        view: &View,
        page_size: Option<usize>,
        empty_once: bool,
    ) -> ApiResult {
        let upn = self.mailboxes[mbx].upn.clone();
        let (cursor_meta, from_seq, since, replay_from) = match token {
            None => (
                (kind, container, window, path.to_string()),
                0u64,
                None,
                None,
            ),
            Some((is_skip, tok)) => {
                let Some(c) = self.cursors.get(&tok) else {
                    return Err(ApiError::new(
                        410,
                        "SyncStateNotFound",
                        "The sync state generation is not found; token unknown.",
                    ));
                };
                if !c.mailbox.eq_ignore_ascii_case(&upn) {
                    return Err(ApiError::new(
                        400,
                        "SyncStateInvalid",
                        "The delta token belongs to another mailbox.",
                    ));
                }
                if let Some(with_location) = self.expired_generations.get(&c.generation) {
                    let mut e = ApiError::new(
                        410,
                        if *with_location {
                            "resyncRequired"
                        } else {
                            "SyncStateNotFound"
                        },
                        format!(
                            "The sync state generation is not found; generation={};[highest={}]",
                            c.generation, self.generation
                        ),
                    );
                    if *with_location {
                        let mut loc = format!("{}{}", self.base_url, c.path);
                        if let Some((s, e)) = c.window {
                            loc.push_str(&format!(
                                "?startDateTime={}&endDateTime={}",
                                crate::util::encode_component(&crate::util::rfc3339(s)),
                                crate::util::encode_component(&crate::util::rfc3339(e))
                            ));
                        }
                        e.location = Some(loc);
                    }
                    return Err(e);
                }
                let meta = (c.kind, c.container.clone(), c.window, c.path.clone());
                match &c.state {
                    CursorState::Pages {
                        pages,
                        then_seq,
                        from_seq,
                        replay_from,
                    } if is_skip => {
                        let (then, from, replay) = (*then_seq, *from_seq, *replay_from);
                        if empty_once {
                            // An empty end of round whose deltaLink yields this round's content again.
                            return Ok(self.answer_page(
                                &upn,
                                meta,
                                Vec::new(),
                                VecDeque::new(),
                                from,
                                None,
                                from,
                            ));
                        }
                        // Serve the stored page; a retried GET of the same nextLink gets the same page.
                        let page = pages.front().cloned().unwrap_or_default();
                        let rest: VecDeque<Vec<Value>> = pages.iter().skip(1).cloned().collect();
                        return Ok(self.answer_page(&upn, meta, page, rest, then, replay, from));
                    }
                    CursorState::Delta { since, replay_from } if !is_skip => {
                        (meta, *since, Some(*since), *replay_from)
                    }
                    _ => {
                        return Err(ApiError::new(
                            400,
                            "SyncStateInvalid",
                            "Token type does not match the query option.",
                        ));
                    }
                }
            }
        };
        let then_seq = self.seq;
        if empty_once {
            let again = since.unwrap_or(0);
            return Ok(self.answer_page(
                &upn,
                cursor_meta,
                Vec::new(),
                VecDeque::new(),
                again,
                replay_from,
                again,
            ));
        }
        let items = self.round_items(mbx, &cursor_meta, since, replay_from, view);
        let size = page_size.unwrap_or(self.delta_page_size).max(1);
        let mut chunks: VecDeque<Vec<Value>> = items.chunks(size).map(|c| c.to_vec()).collect();
        if self.faults.empty_delta_pages {
            chunks.push_front(Vec::new());
        }
        let first = chunks.pop_front().unwrap_or_default();
        let replay = self
            .faults
            .replay_delta
            .then_some(from_seq.max(since.unwrap_or(0)));
        Ok(self.answer_page(
            &upn,
            cursor_meta,
            first,
            chunks,
            then_seq,
            replay,
            since.unwrap_or(0),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_page(
        &mut self,
        upn: &str,
        meta: CursorMeta,
        page: Vec<Value>,
        rest: VecDeque<Vec<Value>>,
        then_seq: u64,
        replay_from: Option<u64>,
        from_seq: u64,
    ) -> (u16, Value) {
        let (kind, container, window, path) = meta;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (key, state) = if rest.is_empty() {
            (
                "@odata.deltaLink",
                CursorState::Delta {
                    since: then_seq,
                    replay_from,
                },
            )
        } else {
            (
                "@odata.nextLink",
                CursorState::Pages {
                    pages: rest,
                    then_seq,
                    from_seq,
                    replay_from,
                },
            )
        };
        let param = if rest_is_delta(&state) {
            "$deltatoken"
        } else {
            "$skiptoken"
        };
        let link = format!("{}{}?{}={}", self.base_url, path, param, token);
        self.cursors.insert(
            token,
            Cursor {
                mailbox: upn.to_string(),
                kind,
                container,
                window,
                generation: self.generation,
                state,
                path,
            },
        );
        let context = match kind {
            Kind::Event => "Collection(event)",
            Kind::Contact => "Collection(contact)",
            Kind::Task => "Collection(todoTask)",
            Kind::Message => "Collection(message)",
        };
        (
            200,
            json!({
                "@odata.context": format!("{}/$metadata#{}", self.graph_url(), context),
                key: link,
                "value": page,
            }),
        )
    }
}

fn rest_is_delta(s: &CursorState) -> bool {
    matches!(s, CursorState::Delta { .. })
}

fn parse_ext(v: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let Some(arr) = v.as_array() else {
        return Err(ApiError::bad(
            "singleValueExtendedProperties must be an array.",
        ));
    };
    arr.iter()
        .map(|p| match (p["id"].as_str(), &p["value"]) {
            (Some(id), Value::String(val)) => Ok((id.to_string(), val.clone())),
            _ => Err(ApiError::bad(
                "Each singleValueExtendedProperty needs a string id and a string value.",
            )),
        })
        .collect()
}

fn parse_links(v: &Value) -> Result<Vec<Value>, ApiError> {
    let Some(arr) = v.as_array() else {
        return Err(ApiError::bad("linkedResources must be an array."));
    };
    arr.iter()
        .map(|l| match l {
            Value::Object(m) => {
                let mut m = m.clone();
                m.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "applicationName" | "displayName" | "externalId" | "webUrl"
                    )
                });
                m.insert("id".into(), Value::String(uuid::Uuid::new_v4().to_string()));
                Ok(Value::Object(m))
            }
            _ => Err(ApiError::bad("Each linkedResource must be an object.")),
        })
        .collect()
}

fn body_preview(body: Option<&Value>) -> String {
    shape::preview(body)
}

/// `recurrence.range.recurrenceTimeZone` defaults to the start's zone.
fn fill_recurrence_zone(data: &mut Map<String, Value>) {
    let zone = data
        .get("start")
        .and_then(|s| s["timeZone"].as_str())
        .unwrap_or("UTC")
        .to_string();
    if let Some(Value::Object(r)) = data.get_mut("recurrence")
        && let Some(Value::Object(range)) = r.get_mut("range")
        && !range
            .get("recurrenceTimeZone")
            .is_some_and(Value::is_string)
    {
        range.insert("recurrenceTimeZone".into(), Value::String(zone));
    }
}

fn contact_display_name(data: &Map<String, Value>) -> String {
    let g = data.get("givenName").and_then(Value::as_str).unwrap_or("");
    let s = data.get("surname").and_then(Value::as_str).unwrap_or("");
    format!("{g} {s}").trim().to_string()
}

fn default(data: &mut Map<String, Value>, key: &str, v: Value) {
    if !data.contains_key(key) {
        data.insert(key.to_string(), v);
    }
}

fn apply_defaults(
    kind: Kind,
    data: &mut Map<String, Value>,
    upn: &str,
    display: &str,
    now: DateTime<Utc>,
) {
    default(data, "categories", json!([]));
    match kind {
        Kind::Event => {
            default(data, "subject", json!(""));
            default(
                data,
                "body",
                json!({ "contentType": "text", "content": "" }),
            );
            let preview = body_preview(data.get("body"));
            data.insert("bodyPreview".into(), Value::String(preview));
            // A meeting that lands in several calendars keeps its iCalUId (the control API
            // passes one to model an invitation); otherwise a new one is generated.
            if !data.get("iCalUId").is_some_and(Value::is_string) {
                let hex = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
                data.insert(
                    "iCalUId".into(),
                    Value::String(format!("040000008200E00074C5B7101A82E00800000000{hex}")),
                );
            }
            let is_series = data.get("recurrence").is_some_and(|r| !r.is_null());
            data.insert(
                "type".into(),
                json!(if is_series {
                    "seriesMaster"
                } else {
                    "singleInstance"
                }),
            );
            data.insert("seriesMasterId".into(), Value::Null);
            default(data, "isAllDay", json!(false));
            default(data, "isCancelled", json!(false));
            default(data, "isDraft", json!(false));
            default(data, "isOrganizer", json!(true));
            default(
                data,
                "organizer",
                json!({ "emailAddress": { "name": display, "address": upn } }),
            );
            default(data, "showAs", json!("busy"));
            default(data, "sensitivity", json!("normal"));
            default(data, "importance", json!("normal"));
            default(data, "isReminderOn", json!(true));
            default(data, "reminderMinutesBeforeStart", json!(15));
            default(data, "attendees", json!([]));
            default(data, "hasAttachments", json!(false));
            default(data, "responseRequested", json!(true));
            default(data, "isOnlineMeeting", json!(false));
            default(
                data,
                "responseStatus",
                json!({ "response": "organizer", "time": "0001-01-01T00:00:00Z" }),
            );
            default(data, "location", json!({ "displayName": "" }));
            let loc = data.get("location").cloned().unwrap_or(Value::Null);
            let loc_empty = loc.is_null() || loc["displayName"].as_str().is_some_and(str::is_empty);
            default(
                data,
                "locations",
                if loc_empty { json!([]) } else { json!([loc]) },
            );
            let start_tz = data
                .get("start")
                .and_then(|s| s["timeZone"].as_str())
                .unwrap_or("UTC")
                .to_string();
            let end_tz = data
                .get("end")
                .and_then(|s| s["timeZone"].as_str())
                .unwrap_or("UTC")
                .to_string();
            default(data, "originalStartTimeZone", Value::String(start_tz));
            default(data, "originalEndTimeZone", Value::String(end_tz));
            data.insert(
                "webLink".into(),
                json!(
                    "https://outlook.office365.com/owa/?itemid=sim&exvsurl=1&path=/calendar/item"
                ),
            );
        }
        Kind::Contact => {
            default(data, "emailAddresses", json!([]));
            default(data, "businessPhones", json!([]));
            default(data, "homePhones", json!([]));
            let dn = contact_display_name(data);
            default(data, "displayName", Value::String(dn.clone()));
            default(data, "fileAs", Value::String(dn));
        }
        Kind::Task => {
            default(data, "title", json!(""));
            default(data, "status", json!("notStarted"));
            default(data, "importance", json!("normal"));
            default(data, "isReminderOn", json!(false));
            default(data, "hasAttachments", json!(false));
            default(
                data,
                "body",
                json!({ "content": "", "contentType": "text" }),
            );
            data.insert(
                "bodyLastModifiedDateTime".into(),
                Value::String(graph_timestamp(now)),
            );
        }
        Kind::Message => {
            let ts = graph_timestamp(now);
            default(data, "subject", json!(""));
            default(
                data,
                "body",
                json!({ "contentType": "html", "content": "" }),
            );
            let preview = body_preview(data.get("body"));
            data.insert("bodyPreview".into(), Value::String(preview));
            default(data, "receivedDateTime", Value::String(ts.clone()));
            default(data, "sentDateTime", Value::String(ts));
            default(
                data,
                "internetMessageId",
                Value::String(format!(
                    "<{}@sim.contoso.test>",
                    uuid::Uuid::new_v4().simple()
                )),
            );
            default(data, "conversationId", Value::String(new_item_id("V")));
            default(data, "isRead", json!(false));
            default(data, "isDraft", json!(false));
            default(data, "hasAttachments", json!(false));
            default(data, "importance", json!("normal"));
            default(data, "inferenceClassification", json!("focused"));
            default(data, "toRecipients", json!([]));
            default(data, "ccRecipients", json!([]));
            default(data, "bccRecipients", json!([]));
            default(data, "replyTo", json!([]));
            default(data, "flag", json!({ "flagStatus": "notFlagged" }));
            if !data.contains_key("sender")
                && let Some(from) = data.get("from").cloned()
            {
                data.insert("sender".into(), from);
            }
            data.insert("webLink".into(), json!("https://outlook.office365.com/owa/?ItemID=sim&exvsurl=1&viewmodel=ReadMessageItem"));
        }
    }
}

/// A parsed `$filter` the simulator understands.
pub(crate) enum Filter {
    All,
    ExtProp { id: String, value: String },
    Field { name: String, value: String },
}

impl Filter {
    fn matches(&self, item: &Item) -> bool {
        match self {
            Filter::All => true,
            Filter::ExtProp { id, value } => item
                .ext
                .iter()
                .any(|(i, v)| i.eq_ignore_ascii_case(id) && v == value),
            Filter::Field { name, value } => {
                item.data.get(name).and_then(Value::as_str) == Some(value.as_str())
            }
        }
    }
}

/// Supports `singleValueExtendedProperties/Any(ep: ep/id eq '..' and ep/value eq '..')` and
/// `<field> eq '..'` (e.g. `iCalUId`, `displayName`).
pub(crate) fn parse_filter(filter: Option<&str>) -> Result<Filter, ApiError> {
    let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(Filter::All);
    };
    let lits = odata_literals(f);
    if f.to_ascii_lowercase()
        .starts_with("singlevalueextendedproperties/any(")
    {
        if lits.len() == 2 && f.contains("/id eq") && f.contains("/value eq") {
            return Ok(Filter::ExtProp {
                id: lits[0].clone(),
                value: lits[1].clone(),
            });
        }
        return Err(ApiError::new(
            400,
            "ErrorInvalidUrlQueryFilter",
            "The extended property filter is not supported.",
        ));
    }
    if let Some((name, _)) = f.split_once(" eq ") {
        let name = name.trim();
        if lits.len() == 1 && name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(Filter::Field {
                name: name.to_string(),
                value: lits[0].clone(),
            });
        }
    }
    Err(ApiError::new(
        400,
        "ErrorInvalidUrlQueryFilter",
        format!("The query filter '{f}' is not supported by the simulator."),
    ))
}

/// The ids inside `singleValueExtendedProperties($filter=id eq '..' or id eq '..')`
/// (`Some(empty)` for a bare expand) and whether linkedResources are expanded.
pub(crate) fn parse_expand(expand: Option<&str>) -> (Option<Vec<String>>, bool) {
    let Some(e) = expand else {
        return (None, false);
    };
    let lower = e.to_ascii_lowercase();
    let links = lower.contains("linkedresources");
    let ext = if let Some(start) = lower.find("singlevalueextendedproperties") {
        let rest = &e[start..];
        let inner = match rest.split_once('(') {
            Some((_, r)) => {
                // Up to the matching ')' outside literals.
                let mut depth = 1usize;
                let mut in_lit = false;
                let mut end = r.len();
                for (i, c) in r.char_indices() {
                    match c {
                        '\'' => in_lit = !in_lit,
                        '(' if !in_lit => depth += 1,
                        ')' if !in_lit => {
                            depth -= 1;
                            if depth == 0 {
                                end = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                &r[..end]
            }
            None => "",
        };
        Some(odata_literals(inner))
    } else {
        None
    };
    (ext, links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parses_ext_prop_and_field() {
        let f = "singleValueExtendedProperties/Any(ep: ep/id eq 'String {x} Name A' and ep/value eq 'O''1')";
        match parse_filter(Some(f)) {
            Ok(Filter::ExtProp { id, value }) => {
                assert_eq!(id, "String {x} Name A");
                assert_eq!(value, "O'1");
            }
            _ => panic!("not parsed"),
        }
        assert!(matches!(
            parse_filter(Some("iCalUId eq 'abc'")),
            Ok(Filter::Field { .. })
        ));
        assert!(parse_filter(Some("startswith(subject,'a')")).is_err());
    }

    #[test]
    fn expand_extracts_property_id() {
        let (ext, links) = parse_expand(Some(
            "singleValueExtendedProperties($filter=id eq 'String {x} Name A')",
        ));
        assert_eq!(ext, Some(vec!["String {x} Name A".to_string()]));
        assert!(!links);
        let (ext, _) = parse_expand(Some(
            "singleValueExtendedProperties($filter=id eq 'String {x} Name A' or id eq 'String {y} Name B')",
        ));
        assert_eq!(
            ext,
            Some(vec![
                "String {x} Name A".to_string(),
                "String {y} Name B".to_string()
            ])
        );
        assert_eq!(parse_expand(Some("linkedResources")), (None, true));
    }

    #[test]
    fn preview_strips_tags_and_folds_whitespace() {
        let b = json!({"content": "<p>Hello</p>\n\n <b>world</b>"});
        assert_eq!(body_preview(Some(&b)), "Hello world");
    }
}
