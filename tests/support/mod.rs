#![allow(dead_code)] // each test file uses a part of the support
//! Support for `scenarios.rs`: which back ends a scenario runs on, starting a harness, reading
//! and writing both sides, and fault tools (a chaos TCP proxy, a connector child process).

use std::sync::Arc;
use std::time::Duration;

use crm_graph_connector::demo::{Harness, HarnessOptions, MAILBOX, REP_ID, crm_slot, wait_for};
use serde_json::{Value, json};

// ---------- Back ends and starting a harness ----------

/// Which queue and store back ends a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// One machine: embedded queue and store.
    Embedded,
    /// Scale-out: real RabbitMQ and Redis (127.0.0.1), never skipped.
    RabbitRedis,
}

impl Backend {
    pub fn options(self) -> HarnessOptions {
        let mut o = HarnessOptions::default();
        if let Backend::RabbitRedis = self {
            o.queue_toml = SCALED_QUEUE.into();
            o.store_toml = SCALED_STORE.into();
        }
        o
    }
}

const SCALED_QUEUE: &str = "[queue]\nbackend = \"rabbitmq\"\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\npartitions = 4\n";
const SCALED_STORE: &str = "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n";

pub async fn start(b: Backend) -> Harness {
    start_with(b.options()).await
}

pub async fn start_with(opts: HarnessOptions) -> Harness {
    // Logs of a failing scenario: RUST_LOG=info cargo test ... -- --nocapture
    crm_graph_connector::telemetry::init("error");
    let h = Harness::start(opts).await.expect("harness starts (RabbitMQ and Redis must be up for the scale-out runs: bash scripts/services.sh)");
    h.wait_subscribed().await.expect("subscribed");
    h.settle().await.expect("idle after start");
    h
}

pub fn scaled() -> HarnessOptions {
    Backend::RabbitRedis.options()
}

/// A second connector (receiver + workers) on the same broker, Redis and prefix.
pub async fn second_instance(h: &Harness) -> crm_graph_connector::run::Running {
    let config = crm_graph_connector::config::Config::parse(&h.config_text, &|_| None).unwrap();
    let app = crm_graph_connector::context::App::build(
        config,
        crm_graph_connector::demo::fast_tuning(2),
        &h.prefix,
    )
    .await
    .unwrap();
    crm_graph_connector::run::start(
        app,
        crm_graph_connector::run::Roles {
            receiver: true,
            worker: true,
            scheduler: false,
            admin: false,
        },
    )
    .await
    .unwrap()
}

// ---------- Reading and writing both sides ----------

pub fn crm_field(h: &Harness, id: u64, f: &str) -> String {
    h.crm
        .record("Contact", id)
        .and_then(|r| r.fields.get(f).cloned())
        .unwrap_or_default()
}

/// A1 helper: an appointment created in CRM, and the Outlook event it became.
pub async fn crm_appointment(h: &Harness, subject: &str, days: i64) -> (u64, String) {
    let (date, time) = crm_slot(days, 10);
    let id = h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", subject),
            ("Text", "Agenda"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("EndTime", "11:00"),
            ("RepID", REP_ID),
            ("A031Location", "Room 1"),
        ],
    );
    wait_for("the event in Outlook", Duration::from_secs(20), || async {
        h.graph
            .events(MAILBOX)
            .iter()
            .any(|e| e["subject"].as_str() == Some(subject))
    })
    .await
    .expect("event appears");
    h.settle().await.unwrap();
    let ev = h
        .graph
        .events(MAILBOX)
        .into_iter()
        .find(|e| e["subject"].as_str() == Some(subject))
        .unwrap();
    (id, ev["id"].as_str().unwrap().to_string())
}

/// Writes the connector made on each side since a point in time.
pub struct Writes {
    crm: usize,
    graph: u64,
}

impl Writes {
    pub fn now(h: &Harness) -> Writes {
        Writes {
            crm: h.crm.write_log().len(),
            graph: h.graph.app_writes(MAILBOX),
        }
    }

    /// Asserts how many CRM write commands and Graph item writes happened since `self`.
    #[track_caller]
    pub fn assert(&self, h: &Harness, crm: usize, graph: u64, what: &str) {
        let log = h.crm.write_log();
        assert_eq!(
            (
                log.len() - self.crm,
                h.graph.app_writes(MAILBOX) - self.graph
            ),
            (crm, graph),
            "{what}: (CRM writes, Graph writes); CRM log since: {:?}",
            &log[self.crm..]
        );
    }
}

pub fn outlook_event(days: i64, subject: &str) -> Value {
    let day = (chrono::Utc::now() + chrono::Duration::days(days)).date_naive();
    json!({
        "subject": subject,
        "body": {"contentType": "html", "content": "<p>Hello <b>team</b></p>"},
        "start": {"dateTime": format!("{day}T09:00:00.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": format!("{day}T10:00:00.0000000"), "timeZone": "UTC"},
        "location": {"displayName": "Room 7"},
        "attendees": [
            {"type": "required", "emailAddress": {"address": "ana@customer.test", "name": "Ana"}},
            {"type": "optional", "emailAddress": {"address": "stranger@elsewhere.test", "name": "X"}}
        ]
    })
}

/// An event's body as text (Graph serves bodies as HTML: expected-behaviour.md 9).
pub fn body_text(ev: &Value) -> Option<String> {
    cgc_core::model::normalize::html_to_text(ev["body"]["content"].as_str()?)
}

pub fn crm_records_with_subject(h: &Harness, subject: &str) -> Vec<cgc_crm::Record> {
    h.crm
        .records("Contact")
        .into_iter()
        .filter(|r| r.fields.get("Subject").map(String::as_str) == Some(subject))
        .collect()
}

pub async fn conflict_case(b: Backend, policy: &'static str) -> (Harness, u64, String) {
    let h = start_with(HarnessOptions {
        conflict: policy,
        ..b.options()
    })
    .await;
    let (crm_id, ev_id) = crm_appointment(&h, "A5 review", 2).await;
    // Both edits land before the connector sees either (the CRM poller runs once a second).
    h.crm
        .user_update("Contact", crm_id, &[("Subject", "A5 from CRM")]);
    h.graph
        .user_update_event(MAILBOX, &ev_id, json!({"subject": "A5 from Outlook"}));
    h.settle().await.unwrap();
    (h, crm_id, ev_id)
}

/// Dead letters of the queue (none may be left after a scenario converges).
pub async fn dead_letter_count(h: &Harness) -> usize {
    h.app()
        .queue
        .dead_letters()
        .await
        .map(|d| d.len())
        .unwrap_or(usize::MAX)
}

/// ExtKey rows (ExtSystem GraphApi) that point at a record.
pub fn extkey_rows(h: &Harness, record_id: u64) -> Vec<cgc_crm::Record> {
    h.crm
        .records("ExtKey")
        .into_iter()
        .filter(|r| {
            r.fields.get("RecordId").map(|s| s.trim()) == Some(record_id.to_string().as_str())
        })
        .collect()
}

pub async fn admin_get(h: &Harness, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", h.admin_url()))
        .bearer_auth(crm_graph_connector::demo::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `n` CRM appointments of rep1, linked to their Outlook events; (record id, event id) each.
pub async fn linked_appointments(h: &Harness, prefix: &str, n: usize) -> Vec<(u64, String)> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (date, time) = crm_slot(2 + (i % 20) as i64, 8 + (i % 8) as u32);
        let subject = format!("{prefix} {i}");
        let id = h.crm.user_insert(
            "Contact",
            &[
                ("Contact", "Visit"),
                ("Subject", &subject),
                ("Date", &date),
                ("Time", &time),
                ("EndDate", &date),
                ("RepID", REP_ID),
            ],
        );
        ids.push((id, subject));
    }
    wait_for(
        "every event in Outlook",
        Duration::from_secs(60),
        || async {
            let evs = h.graph.events(MAILBOX);
            ids.iter()
                .all(|(_, s)| evs.iter().any(|e| e["subject"] == s.as_str()))
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let evs = h.graph.events(MAILBOX);
    ids.into_iter()
        .map(|(id, s)| {
            let ev = evs.iter().find(|e| e["subject"] == s.as_str()).unwrap();
            (id, ev["id"].as_str().unwrap().to_string())
        })
        .collect()
}

pub fn futures_depth(h: &Harness) -> String {
    let app = h.app().clone();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async { format!("{:?}", app.queue.depth().await) })
    })
    .join()
    .unwrap_or_default()
}

// ---------- Lost state ----------

/// Stops the connector and loses every link, shadow and key (Redis keys of this harness deleted;
/// the embedded state directory removed), as after a lost store. [`restart_after_loss`] starts
/// it again.
pub async fn lose_store(h: &mut Harness, b: Backend) {
    h.stop_connector().await;
    match b {
        Backend::Embedded => {
            std::fs::remove_dir_all(h.embedded_state_dir()).expect("state directory removed");
        }
        Backend::RabbitRedis => {
            let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .expect("Redis reachable");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", h.prefix))
                .query_async(&mut con)
                .await
                .unwrap();
            assert!(!keys.is_empty(), "the store had data");
            for k in keys {
                let _: () = redis::cmd("DEL")
                    .arg(&k)
                    .query_async(&mut con)
                    .await
                    .unwrap();
            }
        }
    }
}

pub async fn restart_after_loss(h: &mut Harness) {
    h.restart(2, crm_graph_connector::run::Roles::ALL)
        .await
        .unwrap();
    h.wait_subscribed().await.unwrap();
    h.settle().await.unwrap();
}

// ---------- Processes and faults ----------

/// The harness config for a connector run as a child process: fixed receiver and admin ports (a
/// child cannot report port 0 back). Returns the text and the two ports.
pub fn child_config(
    graph: &cgc_graph::sim::GraphSim,
    crm: &cgc_crm::sim::CrmSim,
    dir: &std::path::Path,
    opts: &HarnessOptions,
) -> (String, u16, u16) {
    let (rp, ap) = (free_port(), free_port());
    let text = Harness::config_text(graph, crm, dir, opts)
        .replacen(
            "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{rp}\"\npublic_url = \"http://127.0.0.1:{rp}\""),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{ap}\""),
            1,
        );
    (text, rp, ap)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_connector(config: &std::path::Path, prefix: &str) -> Child {
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_crm-graph-connector"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .env("CGC_PREFIX", prefix)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("connector binary starts"),
    )
}

/// A loopback TCP proxy that can cut every connection and refuse new ones (chaos proxy).
pub struct ChaosProxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl ChaosProxy {
    pub async fn start(target: &'static str) -> ChaosProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let cut3 = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {},
                        _ = cut3.notified() => {},
                    }
                });
            }
        });
        ChaosProxy { port, up, cut }
    }

    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Each named scenario `async fn name(b: Backend)` as two tests: embedded, and RabbitMQ + Redis.
#[macro_export]
macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        /// The scenarios on the embedded queue and store (one machine).
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await
                }
            )*
        }
        /// The same scenarios on real RabbitMQ and Redis (scale-out).
        mod rabbitmq_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::RabbitRedis).await
                }
            )*
        }
    };
}
