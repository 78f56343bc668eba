//! An in-process CRM.interface simulator that answers exactly the profile
//! (`shared/protocols/crm-interface.md`), with fault knobs and a small JSON control API under
//! `/_sim/`.

mod answer;
mod conn;
mod http;
pub mod schema;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::model::{Record, RecordId};
use state::{CommitFail, EmptyRule, State};

pub use answer::{Answer, AnswerStyle, build_response, build_response_with};
pub use state::{KEPT_REQUESTS, SIM_STAT_NO};

/// How long an "empty answers" fault lasts ([`CrmSim::set_empty_answers`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EmptyAnswers {
    /// For this long from now.
    For(Duration),
    /// For this many `<query>` commands.
    Queries(u32),
}

/// How a write request is answered after it was carried out ([`CrmSim::fail_after_commit`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterCommit {
    /// HTTP 500 with a short HTML body (JSON: `status_500`).
    #[serde(rename = "status_500")]
    Status500,
    /// The connection is closed without any answer.
    Close,
}

/// Initial data and settings, e.g. read from a JSON file for `simulate crm`:
/// `{"time_zone": "Europe/Berlin", "tables": {"Rep": [{"RepID": "4", "EMail": "rep1@contoso.com",
/// "ConnectorEnabled": "true"}]}}`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Seed {
    pub time_zone: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tables: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

/// Simulator settings. `Default`: user `OCSU`, password `secret`, zone `Europe/Berlin`, no data.
#[derive(Clone, Debug)]
pub struct CrmSimConfig {
    pub user: String,
    pub password: String,
    pub zone: chrono_tz::Tz,
    pub seed: Seed,
}

impl Default for CrmSimConfig {
    fn default() -> Self {
        CrmSimConfig {
            user: "OCSU".into(),
            password: "secret".into(),
            zone: chrono_tz::Europe::Berlin,
            seed: Seed::default(),
        }
    }
}

/// One write made through the XML API.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WriteLogEntry {
    /// `insert`, `update`, `delete` or `import`.
    pub command: String,
    pub table: String,
    pub id: RecordId,
    /// The fields written (for `delete`: none).
    pub fields: BTreeMap<String, String>,
    /// The impersonated mailbox address, if any.
    pub impersonate: Option<String>,
}

/// Path of the XML endpoint.
pub const ENDPOINT_PATH: &str = "/crm.interface";

pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle of a running simulator; cheap to clone.
#[derive(Clone)]
pub struct CrmSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for CrmSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn build_state(cfg: &CrmSimConfig) -> Result<State, String> {
    let mut st = State::new(cfg.user.clone(), cfg.password.clone(), cfg.zone);
    for (table, rows) in &cfg.seed.tables {
        for row in rows {
            st.seed_row(table, row).map_err(|e| format!("seed: {e}"))?;
        }
    }
    Ok(st)
}

/// Starts the simulator on `listen` (use port 0 for a free port).
pub async fn start(listen: SocketAddr, cfg: CrmSimConfig) -> std::io::Result<CrmSim> {
    let state =
        build_state(&cfg).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
    });
    let listener = conn::SimListener::new(tokio::net::TcpListener::bind(listen).await?);
    let addr = listener.addr()?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let app =
        http::router(shared.clone()).into_make_service_with_connect_info::<conn::KillSwitch>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "CRM.interface simulator stopped with an error");
        }
    });
    Ok(CrmSim {
        shared,
        addr,
        stop: Arc::new(stop_tx),
    })
}

/// Runs the simulator until Ctrl-C (for `simulate crm`). The seed file is JSON ([`Seed`]).
pub async fn run_standalone(
    listen: SocketAddr,
    seed: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = CrmSimConfig::default();
    if let Some(path) = seed {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read seed file {}: {e}", path.display()))?;
        let seed: Seed = serde_json::from_str(&text)
            .map_err(|e| format!("seed file {} is not valid: {e}", path.display()))?;
        if let Some(zone) = &seed.time_zone {
            cfg.zone = zone
                .parse()
                .map_err(|_| format!("seed file: unknown time zone {zone:?}"))?;
        }
        if let Some(user) = &seed.user {
            cfg.user = user.clone();
        }
        if let Some(password) = &seed.password {
            cfg.password = password.clone();
        }
        cfg.seed = seed;
    }
    let sim = start(listen, cfg).await?;
    tracing::info!(url = %sim.url(), "CRM.interface simulator listening; Ctrl-C stops it");
    println!("CRM.interface simulator listening on {}", sim.url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}

/// `now + d`, saturating far in the future instead of overflowing.
pub(crate) fn instant_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

fn pairs(fields: &[(&str, &str)]) -> BTreeMap<String, String> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl CrmSim {
    /// The XML endpoint, e.g. `http://127.0.0.1:PORT/crm.interface`.
    pub fn url(&self) -> String {
        format!("http://{}{ENDPOINT_PATH}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Inserts a record as a CRM user would (not in the write log; UpdDate/UpdTime = now).
    /// Returns 0 (never a valid id) and logs a warning if the table, a field or a value is invalid;
    /// see [`CrmSim::try_user_insert`].
    pub fn user_insert(&self, table: &str, fields: &[(&str, &str)]) -> RecordId {
        self.try_user_insert(table, fields).unwrap_or_else(|e| {
            tracing::warn!(table, error = %e, "sim user_insert refused");
            0
        })
    }

    /// Like [`CrmSim::user_insert`], with the refusal as an error text.
    pub fn try_user_insert(
        &self,
        table: &str,
        fields: &[(&str, &str)],
    ) -> Result<RecordId, String> {
        self.shared
            .lock()
            .user_insert(table, pairs(fields))
            .map_err(|(code, msg)| format!("{code}: {msg}"))
    }

    /// Updates a record as a CRM user would (not logged); ignored with a warning if refused.
    pub fn user_update(&self, table: &str, id: RecordId, fields: &[(&str, &str)]) {
        if let Err(e) = self.try_user_update(table, id, fields) {
            tracing::warn!(table, id, error = %e, "sim user_update refused");
        }
    }

    pub fn try_user_update(
        &self,
        table: &str,
        id: RecordId,
        fields: &[(&str, &str)],
    ) -> Result<(), String> {
        self.shared
            .lock()
            .user_update(table, id, pairs(fields))
            .map(|_| ())
            .map_err(|(code, msg)| format!("{code}: {msg}"))
    }

    /// Deletes a record as a CRM user would (`DelCd = 1`; not logged).
    pub fn user_delete(&self, table: &str, id: RecordId) {
        if let Err(e) = self.try_user_delete(table, id) {
            tracing::warn!(table, id, error = %e, "sim user_delete refused");
        }
    }

    pub fn try_user_delete(&self, table: &str, id: RecordId) -> Result<(), String> {
        self.shared
            .lock()
            .user_delete(table, id)
            .map(|_| ())
            .map_err(|(code, msg)| format!("{code}: {msg}"))
    }

    /// A record with all stored fields, including UpdDate, UpdTime and DelCd.
    pub fn record(&self, table: &str, id: RecordId) -> Option<Record> {
        self.shared.lock().record(table, id)
    }

    /// All records of a table (deleted ones included), by id.
    pub fn records(&self, table: &str) -> Vec<Record> {
        self.shared.lock().records(table)
    }

    /// Every write made through the XML API that changed or created a record.
    pub fn write_log(&self) -> Vec<WriteLogEntry> {
        self.shared.lock().write_log.clone()
    }

    pub fn clear_write_log(&self) {
        self.shared.lock().write_log.clear();
    }

    /// The next `times` API writes to record `id` answer `LOCKED`.
    pub fn lock_record(&self, id: RecordId, times: u32) {
        self.shared.lock().lock(id, times);
    }

    /// Delays every answer by `d` (the request is carried out first).
    pub fn set_delay(&self, d: Duration) {
        self.shared.lock().delay = d;
    }

    /// Answers 503 with an HTML body and no Retry-After for `d` from now (zero: available again).
    pub fn set_unavailable(&self, d: Duration) {
        self.shared.lock().unavailable_until = if d.is_zero() {
            None
        } else {
            Some(instant_after(d))
        };
    }

    /// Number of requests to the XML endpoint so far (503 answers included).
    pub fn request_count(&self) -> u64 {
        self.shared.lock().request_count
    }

    /// The raw bodies of the last [`KEPT_REQUESTS`] requests to the XML endpoint, oldest first
    /// (bodies that are not UTF-8 are not kept).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().recent_requests.iter().cloned().collect()
    }

    /// Answers print every record id padded with spaces (`id="  4294967298 "`, and
    /// `RecordId` values), as CRM.interface may (expected-behaviour line 19).
    pub fn set_pad_ids(&self, on: bool) {
        self.shared.lock().pad_ids = on;
    }

    /// The next record created gets the id `StatNo × 2^32 + SeqNo` = `record_id(stat_no,
    /// seq_no)`, later ones count up from there (ids in use are skipped). `set_next_id(u32::MAX,
    /// 1)` hands out ids above 2^63 (line 19). Default: StatNo [`SIM_STAT_NO`], SeqNo 1.
    pub fn set_next_id(&self, stat_no: u32, seq_no: u32) {
        self.shared.lock().set_next_id(stat_no, seq_no);
    }

    /// `UpdTime` is stored as HH:MM (seconds dropped), so two versions of a record written in
    /// the same minute carry the same `UpdDate`/`UpdTime` (line 21). Default: HH:MM:SS.
    pub fn set_upd_time_minutes(&self, on: bool) {
        self.shared.lock().minute_upd_time = on;
    }

    /// A fixed clock for `UpdDate`/`UpdTime` (`None`: the system clock).
    pub fn set_clock(&self, now: Option<DateTime<Utc>>) {
        self.shared.lock().clock = now;
    }

    /// "Empty answers" fault: every `<query>` on `table` (`None`: on every table) answers no
    /// records and no error, as a CRM does during a restore, a replication lag or a permission
    /// change, for a duration or a number of queries. A new call for the same `table` replaces
    /// the old one; `For(ZERO)` or `Queries(0)` ends it. Writes are not affected.
    pub fn set_empty_answers(&self, table: Option<&str>, how: EmptyAnswers) {
        let rule = match how {
            EmptyAnswers::For(d) if d.is_zero() => None,
            EmptyAnswers::Queries(0) => None,
            EmptyAnswers::For(d) => Some(EmptyRule {
                table: table.map(str::to_string),
                until: Some(instant_after(d)),
                remaining: None,
            }),
            EmptyAnswers::Queries(n) => Some(EmptyRule {
                table: table.map(str::to_string),
                until: None,
                remaining: Some(n),
            }),
        };
        self.shared
            .lock()
            .set_empty_rule(table.map(str::to_string), rule);
    }

    /// Ends every "empty answers" fault.
    pub fn clear_empty_answers(&self) {
        self.shared.lock().empty_rules.clear();
    }

    /// "Committed but failed" fault: the next `times` requests that carry a write command on
    /// `table` (`None`: on any table) are carried out (committed) and then answered with HTTP 500
    /// or not at all (the connection is closed), as [`AfterCommit`] says. A new call replaces the
    /// old one; `times = 0` ends it.
    pub fn fail_after_commit(&self, table: Option<&str>, times: u32, how: AfterCommit) {
        self.shared.lock().commit_fail = (times > 0).then(|| CommitFail {
            table: table.map(str::to_string),
            remaining: times,
            how,
        });
    }

    /// Stops accepting connections; in-flight requests finish.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}
