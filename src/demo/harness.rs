//! The harness `demo` and the integration tests run on: both simulators and a connector on a
//! temporary data directory, with fast tuning.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cgc_crm::sim::{CrmSim, CrmSimConfig, Seed};
use cgc_graph::sim::{GraphSim, GraphSimConfig};
use serde_json::Value;

use crate::config::Config;
use crate::context::{App, Tuning};
use crate::run::{self, Roles, Running};

pub const TENANT: &str = "contoso";
pub const MAILBOX: &str = "rep1@contoso.com";
pub const REP_ID: &str = "4";
pub const ADMIN_TOKEN: &str = "demo-admin-token";

/// Simulators + a running connector on a temporary data directory.
pub struct Harness {
    pub graph: GraphSim,
    pub crm: CrmSim,
    pub running: Option<Running>,
    pub dir: std::path::PathBuf,
    pub config_text: String,
    /// Names this harness's RabbitMQ queues and Redis keys (unique per harness).
    pub prefix: String,
}

/// Options a test can change.
#[derive(Clone, Debug)]
pub struct HarnessOptions {
    pub conflict: &'static str,
    pub extra_tenant_toml: String,
    pub queue_toml: String,
    pub store_toml: String,
    /// Extra lines for `[tenants.appointments]`, e.g. `exclude_fields = ["location"]`.
    pub appointments_toml: String,
    pub reps: Vec<(&'static str, &'static str)>,
    pub workers: usize,
    /// Secrets the simulators accept (and the config carries); the simulators' defaults when None.
    pub graph_client_secret: Option<String>,
    pub crm_password: Option<String>,
    /// `[tenants.appointments] future_days` (90 unless set).
    pub future_days: u32,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions {
            conflict: "crm-wins",
            extra_tenant_toml: String::new(),
            queue_toml: String::new(),
            store_toml: String::new(),
            appointments_toml: String::new(),
            reps: vec![(REP_ID, MAILBOX)],
            workers: 2,
            graph_client_secret: None,
            crm_password: None,
            future_days: 90,
        }
    }
}

/// Short retries and scheduler ticks, so a story takes seconds.
pub fn fast_tuning(workers: usize) -> Tuning {
    Tuning {
        workers,
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        scheduler_tick: Duration::from_millis(200),
        drain: Duration::from_secs(5),
        ..Tuning::default()
    }
}

impl Harness {
    /// Starts both simulators (seeded with the reps and one known person).
    pub async fn simulators(opts: &HarnessOptions) -> anyhow::Result<(GraphSim, CrmSim)> {
        let mut seed = Seed::default();
        let reps = opts
            .reps
            .iter()
            .map(|(id, mail)| {
                [
                    ("RepID", *id),
                    ("Name", *mail),
                    ("EMail", *mail),
                    ("ConnectorEnabled", "true"),
                    ("SyncAppointments", "true"),
                    ("SyncContacts", "true"),
                    ("SyncTasks", "true"),
                    ("SyncEmails", "true"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
            })
            .collect();
        seed.tables.insert("Rep".into(), reps);
        seed.tables.insert(
            "Person".into(),
            vec![
                [
                    ("FirstName", "Ana"),
                    ("LastName", "Lopez"),
                    ("EMail", "ana@customer.test"),
                    ("CoGrp", "1"),
                    ("CoNo", "1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ],
        );
        let crm = cgc_crm::sim::start(
            "127.0.0.1:0".parse()?,
            CrmSimConfig {
                seed,
                password: opts
                    .crm_password
                    .clone()
                    .unwrap_or_else(|| CrmSimConfig::default().password),
                ..CrmSimConfig::default()
            },
        )
        .await
        .context("starting the CRM.interface simulator")?;
        let graph = cgc_graph::sim::start(
            "127.0.0.1:0".parse()?,
            GraphSimConfig {
                mailboxes: opts.reps.iter().map(|(_, m)| m.to_string()).collect(),
                client_secret: opts
                    .graph_client_secret
                    .clone()
                    .unwrap_or_else(|| GraphSimConfig::default().client_secret),
                ..GraphSimConfig::default()
            },
        )
        .await
        .context("starting the Graph simulator")?;
        Ok((graph, crm))
    }

    pub fn config_text(
        graph: &GraphSim,
        crm: &CrmSim,
        dir: &std::path::Path,
        opts: &HarnessOptions,
    ) -> String {
        let gcfg = GraphSimConfig::default();
        let queue = if opts.queue_toml.is_empty() {
            format!(
                "[queue]\nbackend = \"embedded\"\npath = {:?}\n",
                dir.join("queue").display().to_string()
            )
        } else {
            opts.queue_toml.clone()
        };
        let store = if opts.store_toml.is_empty() {
            format!(
                "[store]\nbackend = \"embedded\"\npath = {:?}\n",
                dir.join("state").display().to_string()
            )
        } else {
            opts.store_toml.clone()
        };
        format!(
            r#"
[receiver]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

{queue}
{store}

[[tenants]]
id = "{TENANT}"
graph_tenant_id = "{tid}"
client_id = "{cid}"
client_secret = "{secret}"
login_url = "{login}"
graph_url = "{graph_url}"
domains = ["contoso.com"]
crm_url = "{crm_url}"
crm_user = "OCSU"
crm_password = "{crm_password}"
crm_time_zone = "Europe/Berlin"
crm_poll_seconds = 1
todo_poll_seconds = 1
mailbox_refresh_seconds = 86400
safety_delta_seconds = 21600
{extra}

[tenants.appointments]
direction = "both"
past_days = 7
future_days = {future_days}
conflict = "{conflict}"
{appointments}
"#,
            tid = gcfg.tenant_id,
            cid = gcfg.client_id,
            secret = opts
                .graph_client_secret
                .clone()
                .unwrap_or(gcfg.client_secret),
            crm_password = opts.crm_password.as_deref().unwrap_or("secret"),
            login = graph.login_url(),
            graph_url = graph.graph_url(),
            crm_url = crm.url(),
            extra = opts.extra_tenant_toml,
            conflict = opts.conflict,
            future_days = opts.future_days,
            appointments = opts.appointments_toml,
        )
    }

    /// Simulators plus the connector with all roles.
    pub async fn start(opts: HarnessOptions) -> anyhow::Result<Harness> {
        let (graph, crm) = Self::simulators(&opts).await?;
        let dir = std::env::temp_dir().join(format!("cgc-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)?;
        let config_text = Self::config_text(&graph, &crm, &dir, &opts);
        let mut h = Harness {
            graph,
            crm,
            running: None,
            dir,
            config_text,
            prefix: format!("cgc-t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        h.restart(opts.workers, Roles::ALL).await?;
        Ok(h)
    }

    /// (Re)starts the connector on the same data directory.
    pub async fn restart(&mut self, workers: usize, roles: Roles) -> anyhow::Result<()> {
        self.restart_with(fast_tuning(workers), roles).await
    }

    /// (Re)starts the connector with the given tuning. The receiver keeps its port across
    /// restarts, as a real deployment keeps its public URL.
    pub async fn restart_with(&mut self, tuning: Tuning, roles: Roles) -> anyhow::Result<()> {
        self.stop_connector().await;
        let config = Config::parse(&self.config_text, &|_| None)?;
        let app = App::build(config, tuning, &self.prefix).await?;
        self.running = Some(run::start(app, roles).await?);
        Ok(())
    }

    /// Stops the connector (not the simulators); the receiver keeps its port for the next start.
    pub async fn stop_connector(&mut self) {
        if let Some(r) = self.running.take() {
            if let Some(addr) = r.bound.receiver {
                self.config_text = self.config_text.replacen(
                    "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:0\"",
                    &format!("listen = \"{addr}\"\npublic_url = \"http://{addr}\""),
                    1,
                );
            }
            r.stop().await;
        }
    }

    /// Where the embedded store keeps its data (when the embedded store is used).
    pub fn embedded_state_dir(&self) -> std::path::PathBuf {
        self.dir.join("state")
    }

    pub fn app(&self) -> &Arc<App> {
        &self.running.as_ref().expect("connector running").app
    }

    pub fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.running
                .as_ref()
                .and_then(|r| r.bound.admin)
                .expect("admin bound")
        )
    }

    pub fn receiver_url(&self) -> String {
        format!(
            "http://{}",
            self.running
                .as_ref()
                .and_then(|r| r.bound.receiver)
                .expect("receiver bound")
        )
    }

    /// Waits until the mailbox has its event subscription.
    pub async fn wait_subscribed(&self) -> anyhow::Result<()> {
        wait_for(
            "the events subscription",
            Duration::from_secs(20),
            || async {
                self.graph.subscriptions().iter().any(|s| {
                    s.get("resource")
                        .and_then(Value::as_str)
                        .is_some_and(|r| r.ends_with("/events"))
                })
            },
        )
        .await
    }

    /// Waits until no notification is in flight and the queue is empty and stays so briefly.
    pub async fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet_since: Option<Instant> = None;
        loop {
            self.graph.quiesce().await;
            let d = self.app().queue.depth().await?;
            let idle = d.ready == 0 && d.in_flight == 0 && d.delayed == 0;
            if idle {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                // Longer than one CRM poll period, so the poller has looked at every change.
                if since.elapsed() >= Duration::from_millis(2500) {
                    return Ok(());
                }
            } else {
                quiet_since = None;
            }
            if Instant::now() > deadline {
                bail!("connector did not become idle within 30 s (queue: {d:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        let rabbit = self.running.as_ref().and_then(|r| {
            (r.app.config.queue.backend == crate::config::QueueBackend::Rabbitmq).then(|| {
                (
                    secrecy::ExposeSecret::expose_secret(&r.app.config.queue.url).to_string(),
                    r.app.config.queue.partitions,
                )
            })
        });
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        if let Some((url, partitions)) = rabbit {
            // Leave the broker as we found it.
            let opts = cgc_backends::QueueOptions {
                partitions,
                ..Default::default()
            };
            if let Ok(q) = cgc_backends::RabbitQueue::connect(&url, &self.prefix, opts).await {
                let _ = q.delete_topology().await;
                q.close().await;
            }
        }
        self.graph.shutdown();
        self.crm.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, cond: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CRM date and time strings for an instant `days` from now at `hour`:00 CRM local time.
pub fn crm_slot(days: i64, hour: u32) -> (String, String) {
    let zone: chrono_tz::Tz = chrono_tz::Europe::Berlin;
    let day = (chrono::Utc::now().with_timezone(&zone) + chrono::Duration::days(days)).date_naive();
    (day.format("%Y-%m-%d").to_string(), format!("{hour:02}:00"))
}
