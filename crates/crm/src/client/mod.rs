//! The CRM.interface client: one `POST` of a `<request>` document per call.

pub mod error;
mod paging;
pub mod request;
pub mod response;
pub mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use error::CrmError;
pub use request::{BREAK_ON_ERROR_IF, ParsedRequest, build_request, parse_request};
pub use response::{ParsedResponse, parse_response};

use crate::model::{
    Command, CondOp, EXT_KEY_TABLE, EXT_SYSTEM_GRAPH, ExtKeyRow, ExtLink, ImportField, Outcome,
    Query, QueryPage, Record, RecordId, is_valid_name, parse_record_id,
};
use xml::MAX_DOCUMENT_BYTES;

/// Connection settings of one tenant's CRM.interface.
#[derive(Clone, Debug)]
pub struct CrmConfig {
    /// The endpoint, taken as is.
    pub url: String,
    pub user: String,
    pub password: SecretString,
    /// Whole-request timeout (connect, send, answer).
    pub timeout: Duration,
}

/// A CRM.interface client; cheap to clone.
#[derive(Clone)]
pub struct CrmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: String,
    user: String,
    password: SecretString,
    /// Rows skipped because they could not be read (see [`CrmClient::malformed_rows`]).
    malformed: AtomicU64,
    observer: std::sync::RwLock<Option<Arc<dyn RequestObserver>>>,
}

/// Told of each CRM.interface HTTP request (the connector counts them as metrics). Called
/// inline: keep it cheap and never blocking.
pub trait RequestObserver: Send + Sync {
    /// One request: its HTTP status (`None` when no answer came) and how long it took.
    fn request(&self, status: Option<u16>, elapsed: Duration);
}

impl std::fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("url", &self.inner.url)
            .field("user", &self.inner.user)
            .finish_non_exhaustive()
    }
}

const LINK_FIELDS: &[&str] = &[
    "ExtSystem",
    "ExtKey",
    "ExtUid",
    "TableShort",
    "RecordId",
    "DelCd",
];

impl CrmClient {
    pub fn new(cfg: CrmConfig) -> Result<Self, CrmError> {
        if reqwest::Url::parse(&cfg.url).is_err() {
            return Err(CrmError::Transport {
                status: None,
                excerpt: "the CRM.interface URL is not a valid URL; check crm_url".into(),
            });
        }
        let http = reqwest::Client::builder()
            // Never follow a redirect: the request body carries the CRM password, and a 307/308
            // would send it on to wherever the answer points. A 3xx is an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| CrmError::Transport {
                status: None,
                excerpt: format!("cannot create the HTTP client: {e}"),
            })?;
        Ok(CrmClient {
            inner: Arc::new(Inner {
                http,
                url: cfg.url,
                user: cfg.user,
                password: cfg.password,
                malformed: AtomicU64::new(0),
                observer: std::sync::RwLock::new(None),
            }),
        })
    }

    /// Runs commands in one `<request>` (with user/pwd, `corr=<uuid>` checked on the answer,
    /// optional `impersonate="email=<addr>"`). Returns one outcome per answered command in order;
    /// breaks have no outcome, and a break that stopped the request leaves the rest unanswered.
    pub async fn execute(
        &self,
        commands: &[Command],
        impersonate: Option<&str>,
    ) -> Result<Vec<Outcome>, CrmError> {
        check_names(commands)?;
        let corr = uuid::Uuid::new_v4().to_string();
        let body = build_request(
            commands,
            &self.inner.user,
            self.inner.password.expose_secret(),
            &corr,
            impersonate,
        );
        let span = tracing::info_span!("crm_request", commands = commands.len());
        let answer = tracing::Instrument::instrument(self.post(body), span).await?;
        let parsed = parse_response(&answer, commands)?;
        if parsed.malformed > 0 {
            self.count_malformed(parsed.malformed);
        }
        match parsed.attr("corr") {
            Some(c) if c == corr => {}
            None if parsed.error.is_some() => {}
            _ => return Err(CrmError::CorrMismatch),
        }
        if let Some((code, message)) = parsed.error {
            return Err(CrmError::Remote { code, message });
        }
        Ok(parsed.outcomes)
    }

    /// How many rows this client (and its clones) skipped so far because they could not be
    /// read: record elements of an answer without a valid id, link rows without a valid
    /// `RecordId`, `ExtKey` or `TableShort`. Each skip is also logged (`tracing::warn`).
    pub fn malformed_rows(&self) -> u64 {
        self.inner.malformed.load(Ordering::Relaxed)
    }

    /// Tells `observer` of every request from now on (all clones).
    pub fn with_observer(self, observer: Arc<dyn RequestObserver>) -> Self {
        match self.inner.observer.write() {
            Ok(mut g) => *g = Some(observer),
            Err(poisoned) => *poisoned.into_inner() = Some(observer),
        }
        self
    }

    async fn post(&self, body: String) -> Result<String, CrmError> {
        let started = std::time::Instant::now();
        let mut status = None;
        let r = self.post_once(body, &mut status).await;
        let observer = match self.inner.observer.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(o) = observer {
            o.request(status, started.elapsed());
        }
        r
    }

    fn count_malformed(&self, n: u64) {
        self.inner.malformed.fetch_add(n, Ordering::Relaxed);
    }

    async fn post_once(
        &self,
        body: String,
        answered: &mut Option<u16>,
    ) -> Result<String, CrmError> {
        tracing::debug!(url = %self.inner.url, bytes = body.len(), "CRM.interface request");
        let result = self
            .inner
            .http
            .post(&self.inner.url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => return Err(transport_error(e)),
        };
        let status = resp.status();
        *answered = Some(status.as_u16());
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(redirect_target)
                .unwrap_or_else(|| "(no Location)".into());
            tracing::warn!(status = status.as_u16(), to = %to, "CRM.interface answered a redirect; not followed");
            return Err(CrmError::Transport {
                status: Some(status.as_u16()),
                excerpt: format!(
                    "a redirect to {to}; redirects are not followed (the request carries the password) - check crm_url"
                ),
            });
        }
        if status.is_success()
            && let Some(len) = resp.content_length()
            && len > MAX_DOCUMENT_BYTES as u64
        {
            return Err(CrmError::parse(
                format!(
                    "answer larger than {MAX_DOCUMENT_BYTES} bytes (Content-Length {len}); not read"
                ),
                "",
            ));
        }
        let mut buf: Vec<u8> = Vec::new();
        let cap = if status.is_success() {
            MAX_DOCUMENT_BYTES
        } else {
            4096
        };
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > cap {
                        if status.is_success() {
                            return Err(CrmError::parse(
                                format!("answer larger than {MAX_DOCUMENT_BYTES} bytes"),
                                &String::from_utf8_lossy(&buf[..buf.len().min(1024)]),
                            ));
                        }
                        buf.extend_from_slice(&chunk[..cap.saturating_sub(buf.len())]);
                        break;
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(CrmError::Timeout),
                Err(e) if !status.is_success() => {
                    tracing::debug!(error = %e.without_url(), "error reading a failed answer");
                    break;
                }
                Err(e) => return Err(transport_error(e)),
            }
        }
        if !status.is_success() {
            return Err(CrmError::Transport {
                status: Some(status.as_u16()),
                excerpt: error::excerpt(&String::from_utf8_lossy(&buf)),
            });
        }
        String::from_utf8(buf).map_err(|e| {
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            CrmError::parse("answer is not UTF-8", &lossy)
        })
    }

    /// Runs one query (one page: at most `maxrecords` records, `more` set when capped).
    pub async fn query(&self, q: &Query, impersonate: Option<&str>) -> Result<QueryPage, CrmError> {
        match self.single(Command::Query(q.clone()), impersonate).await? {
            Outcome::Records(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads a record by id (`None` if no such record; deleted records are returned with `DelCd`).
    pub async fn get(
        &self,
        table: &str,
        id: RecordId,
        fields: &[&str],
        impersonate: Option<&str>,
    ) -> Result<Option<Record>, CrmError> {
        let q = Query::new(table)
            .with_cond("id", CondOp::Eq, id.to_string())
            .with_fields(fields);
        let page = self.query(&q, impersonate).await?;
        Ok(page.records.into_iter().find(|r| r.id == id))
    }

    /// Updates fields of a record (`nochange` is success).
    pub async fn update(
        &self,
        table: &str,
        id: RecordId,
        fields: &BTreeMap<String, String>,
        impersonate: Option<&str>,
    ) -> Result<(), CrmError> {
        let command = Command::Update {
            table: table.to_string(),
            id,
            fields: fields.clone(),
        };
        self.single_write(command, impersonate).await.map(|_| ())
    }

    /// Deletes a record (CRM sets `DelCd=1`; deleting a deleted record is `nochange`, success).
    pub async fn delete(
        &self,
        table: &str,
        id: RecordId,
        impersonate: Option<&str>,
    ) -> Result<(), CrmError> {
        let command = Command::Delete {
            table: table.to_string(),
            id,
        };
        self.single_write(command, impersonate).await.map(|_| ())
    }

    /// Creates a record that no Graph item stands for (one `<insert>`); returns its id.
    pub async fn create(
        &self,
        table: &str,
        fields: &BTreeMap<String, String>,
        impersonate: Option<&str>,
    ) -> Result<RecordId, CrmError> {
        let insert = Command::Insert {
            table: table.to_string(),
            fields: fields.clone(),
        };
        self.single_write(insert, impersonate).await
    }

    /// Creates a record linked to a Graph item; returns the record id. If a `GraphApi` link row
    /// with `link.ext_key` exists already, its record id is returned and nothing is written.
    /// Otherwise two requests: an `<insert>` of the record, then an `<import>` of its `ExtKey`
    /// row (match-up on ExtSystem + ExtKey; `RecordId` is the new id as a literal, since
    /// CRM.interface cannot refer to an id created earlier in the same request).
    ///
    /// If the insert fails, that error is returned (no record was made, unless the answer was
    /// lost: a `Timeout` or `Transport` error of the insert may hide a committed record). If the
    /// link import fails, the error is [`CrmError::LinkNotWritten`] with the created id: finish
    /// the link with [`CrmClient::upsert_link`] instead of creating again.
    pub async fn create_linked(
        &self,
        table: &str,
        fields: &BTreeMap<String, String>,
        link: &ExtLink,
        impersonate: Option<&str>,
    ) -> Result<RecordId, CrmError> {
        if let Some(existing) = self.find_link(&link.ext_key).await? {
            tracing::debug!(
                record = existing.record_id,
                "create_linked: link already exists"
            );
            return Ok(existing.record_id);
        }
        let insert = Command::Insert {
            table: table.to_string(),
            fields: fields.clone(),
        };
        let new_id = self.single_write(insert, impersonate).await?;
        if let Err(e) = self.upsert_link(new_id, link, impersonate).await {
            tracing::warn!(
                record = new_id,
                error = %e,
                "create_linked: record created, its ExtKey link was not written"
            );
            return Err(CrmError::LinkNotWritten {
                record_id: new_id,
                source: Box::new(e),
            });
        }
        Ok(new_id)
    }

    /// `<import>` of the `ExtKey` row linking `record` (match-up on ExtSystem + ExtKey; idempotent).
    pub async fn upsert_link(
        &self,
        record: RecordId,
        link: &ExtLink,
        impersonate: Option<&str>,
    ) -> Result<(), CrmError> {
        let command = link_import(record, link);
        self.single_write(command, impersonate).await.map(|_| ())
    }

    /// The `GraphApi` link row with this `ExtKey` (compared exactly), if any. Deleted rows and
    /// rows that cannot be read (no valid `RecordId`, no `TableShort`) are skipped, logged and
    /// counted ([`CrmClient::malformed_rows`]); the lowest-id remaining row wins.
    pub async fn find_link(&self, ext_key: &str) -> Result<Option<ExtKeyRow>, CrmError> {
        let q = Query::new(EXT_KEY_TABLE)
            .with_cond("ExtSystem", CondOp::Eq, EXT_SYSTEM_GRAPH)
            .with_cond("ExtKey", CondOp::Eq, ext_key)
            .with_fields(LINK_FIELDS);
        let records = self.query_all(&q, None).await?;
        // Conditions ignore letter case; Graph ids do not.
        let rows = self.link_rows(records, |r| {
            r.field("ExtKey") == Some(ext_key)
                && r.field("ExtSystem")
                    .is_some_and(|s| s.trim().eq_ignore_ascii_case(EXT_SYSTEM_GRAPH))
        });
        Ok(rows.into_iter().next())
    }

    /// The link row with this `ExtUid` (iCalUId / internetMessageId, compared exactly), if any.
    /// Rows of any `ExtSystem` qualify (older connectors' rows are how migration finds records);
    /// a `GraphApi` row is preferred. Unreadable rows are skipped as in [`CrmClient::find_link`].
    pub async fn find_link_by_uid(&self, ext_uid: &str) -> Result<Option<ExtKeyRow>, CrmError> {
        let q = Query::new(EXT_KEY_TABLE)
            .with_cond("ExtUid", CondOp::Eq, ext_uid)
            .with_fields(LINK_FIELDS);
        let records = self.query_all(&q, None).await?;
        let rows = self.link_rows(records, |r| r.field("ExtUid") == Some(ext_uid));
        let graph = rows
            .iter()
            .position(|r| r.ext_system.eq_ignore_ascii_case(EXT_SYSTEM_GRAPH));
        Ok(match graph {
            Some(i) => rows.into_iter().nth(i),
            None => rows.into_iter().next(),
        })
    }

    /// Every live `ExtKey` row whose `RecordId` is `record_id`, of any `ExtSystem` and any
    /// `TableShort` (ids are unique per info area only: filter on `table_short`), by row id.
    /// Unreadable rows are skipped as in [`CrmClient::find_link`].
    pub async fn link_rows_for_record(
        &self,
        record_id: RecordId,
    ) -> Result<Vec<ExtKeyRow>, CrmError> {
        let q = Query::new(EXT_KEY_TABLE)
            .with_cond("RecordId", CondOp::Eq, record_id.to_string())
            .with_fields(LINK_FIELDS);
        let records = self.query_all(&q, None).await?;
        let rows = self.link_rows(records, |_| true);
        Ok(rows
            .into_iter()
            .filter(|r| r.record_id == record_id)
            .collect())
    }

    /// The live rows accepted by `keep` as [`ExtKeyRow`]s, by row id; rows that cannot be read are
    /// logged and counted.
    fn link_rows(&self, records: Vec<Record>, keep: impl Fn(&Record) -> bool) -> Vec<ExtKeyRow> {
        let mut rows: Vec<ExtKeyRow> = Vec::new();
        for r in records.into_iter().filter(|r| !r.is_deleted() && keep(r)) {
            match link_row(&r) {
                Ok(row) => rows.push(row),
                Err(reason) => {
                    self.count_malformed(1);
                    tracing::warn!(
                        row = r.id,
                        reason,
                        "skipping an ExtKey row that cannot be read"
                    );
                }
            }
        }
        rows.sort_by_key(|r| r.id);
        rows
    }

    async fn single(
        &self,
        command: Command,
        impersonate: Option<&str>,
    ) -> Result<Outcome, CrmError> {
        let mut outcomes = self.execute(&[command], impersonate).await?;
        if outcomes.is_empty() {
            return Err(missing_answer());
        }
        match outcomes.swap_remove(0) {
            Outcome::Failed { code, message, .. } => Err(CrmError::Remote { code, message }),
            other => Ok(other),
        }
    }

    async fn single_write(
        &self,
        command: Command,
        impersonate: Option<&str>,
    ) -> Result<RecordId, CrmError> {
        match self.single(command, impersonate).await? {
            Outcome::Written { id, .. } => Ok(id),
            other => Err(unexpected(&other)),
        }
    }
}

fn link_import(record: RecordId, link: &ExtLink) -> Command {
    let mut fields = vec![
        ImportField::new("ExtSystem", EXT_SYSTEM_GRAPH, true),
        ImportField::new("ExtKey", link.ext_key.clone(), true),
        ImportField::new("RecordId", record.to_string(), false),
        ImportField::new("TableShort", link.table_short.clone(), false),
    ];
    if let Some(uid) = &link.ext_uid {
        fields.push(ImportField::new("ExtUid", uid.clone(), false));
    }
    Command::Import {
        table: EXT_KEY_TABLE.to_string(),
        fields,
    }
}

/// An `ExtKey` record as a [`ExtKeyRow`], or why it cannot be one.
fn link_row(row: &Record) -> Result<ExtKeyRow, &'static str> {
    let record_id = row
        .field("RecordId")
        .and_then(parse_record_id)
        .ok_or("RecordId is missing, empty or not a record id")?;
    let ext_key = row
        .field("ExtKey")
        .filter(|k| !k.trim().is_empty())
        .ok_or("ExtKey is missing or empty")?;
    let table_short = row
        .field("TableShort")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("TableShort is missing or empty")?;
    let ext_uid = row
        .field("ExtUid")
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    Ok(ExtKeyRow {
        id: row.id,
        ext_system: row
            .field("ExtSystem")
            .unwrap_or_default()
            .trim()
            .to_string(),
        ext_key: ext_key.to_string(),
        ext_uid,
        table_short: table_short.to_string(),
        record_id,
    })
}

fn check_names(commands: &[Command]) -> Result<(), CrmError> {
    let bad = |name: &str| CrmError::Remote {
        code: crate::model::ErrorCode::Field,
        message: format!(
            "{:?} is not a valid table or field name",
            name.chars().take(40).collect::<String>()
        ),
    };
    for c in commands {
        if let Some(table) = c.table()
            && !is_valid_name(table)
        {
            return Err(bad(table));
        }
        let names: Vec<&str> = match c {
            Command::Query(q) => q
                .fields
                .iter()
                .map(String::as_str)
                .chain(q.conditions.iter().map(|c| c.field.as_str()))
                .collect(),
            Command::Insert { fields, .. } | Command::Update { fields, .. } => {
                fields.keys().map(String::as_str).collect()
            }
            Command::Import { fields, .. } => fields.iter().map(|f| f.name.as_str()).collect(),
            Command::Delete { .. } | Command::BreakOnError => Vec::new(),
        };
        if let Some(n) = names.into_iter().find(|n| !is_valid_name(n)) {
            return Err(bad(n));
        }
    }
    Ok(())
}

/// Scheme, host and port of a redirect's `Location` (never its path or query), for messages.
fn redirect_target(location: &str) -> String {
    match reqwest::Url::parse(location) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "(a URL without host)".into(),
        },
        Err(_) => "(a relative or invalid URL)".into(),
    }
}

fn transport_error(e: reqwest::Error) -> CrmError {
    if e.is_timeout() {
        return CrmError::Timeout;
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    CrmError::Transport {
        status: None,
        excerpt: error::excerpt(&text),
    }
}

fn unexpected(outcome: &Outcome) -> CrmError {
    CrmError::Parse {
        detail: format!("unexpected answer kind: {outcome:?}")
            .chars()
            .take(200)
            .collect(),
        excerpt: String::new(),
    }
}

fn missing_answer() -> CrmError {
    CrmError::Parse {
        detail: "the answer has no result for the command".into(),
        excerpt: String::new(),
    }
}
