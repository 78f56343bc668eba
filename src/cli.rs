//! Command line: one binary, several roles, simulators and admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::ExposeSecret;

use crate::config::Config;
use crate::context::{App, Tuning};
use crate::run::{self, Roles};

#[derive(Parser)]
#[command(
    name = "crm-graph-connector",
    version,
    about = "Two-way, content-based sync between Aurea CRM and Microsoft 365"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// All roles in one process (embedded queue and store by default).
    Run(ConfigArg),
    /// Only the HTTP receiver (scale-out).
    Receiver(ConfigArg),
    /// Only workers (scale-out).
    Worker(ConfigArg),
    /// Only the scheduler: subscriptions, delta catch-up, CRM poller (scale-out; safe to run twice).
    Scheduler(ConfigArg),
    /// Runs the connector against the built-in simulators on a scripted story, then exits.
    Demo,
    /// Runs a simulator on its own.
    Simulate {
        #[arg(value_enum)]
        which: Which,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Checks configuration, credentials and reachability of every tenant.
    Doctor(ConfigArg),
    /// Shows what a sync would do, writing nothing (exits non-zero when the plan would trip the
    /// mass-change guard).
    Plan(PlanArgs),
    /// Lists or resolves conflicts through the running service's admin API.
    Conflicts {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: Option<ConflictAction>,
    },
    /// Lists or replays dead letters through the running service's admin API.
    DeadLetters {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: Option<DeadLetterAction>,
    },
}

#[derive(clap::Args)]
pub struct ConfigArg {
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub mailbox: Option<String>,
    /// appointment, contact or task
    #[arg(long)]
    pub entity: Option<String>,
    /// The report as one JSON document (README "plan --json").
    #[arg(long)]
    pub json: bool,
    /// The configuration in force today: also shows what the change to --config does.
    #[arg(long)]
    pub against: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Which {
    Graph,
    Crm,
}

#[derive(Subcommand)]
pub enum ConflictAction {
    List,
    Resolve {
        id: String,
        /// crm or graph
        #[arg(long)]
        take: String,
    },
}

#[derive(Subcommand)]
pub enum DeadLetterAction {
    List,
    Replay {
        /// Replays one dead letter; all when omitted.
        #[arg(long)]
        id: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prefix of RabbitMQ queue names and Redis keys: `CGC_PREFIX`, default `cgc`. Lets several
/// deployments (or test runs) share one broker and one Redis.
fn prefix() -> String {
    std::env::var("CGC_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "cgc".into())
}

fn load(c: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(&c.config)?)
}

async fn serve(c: &ConfigArg, roles: Roles) -> anyhow::Result<()> {
    let config = load(c)?;
    crate::telemetry::init_with("info", config.telemetry.otlp_endpoint.as_deref())?;
    if config.tenants.is_empty() {
        tracing::warn!("no [[tenants]] configured: nothing will be synced");
    }
    let app = App::build(config, Tuning::default(), &prefix()).await?;
    let running = run::start(app, roles).await?;
    tracing::info!(receiver = ?running.bound.receiver, admin = ?running.bound.admin, "started; Ctrl-C to stop");
    run::shutdown_signal().await;
    tracing::info!("stopping: intake first, then draining in-flight events");
    running.stop().await;
    Ok(())
}

async fn dispatch(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Run(c) => serve(&c, Roles::ALL).await,
        Command::Receiver(c) => {
            serve(
                &c,
                Roles {
                    receiver: true,
                    worker: false,
                    scheduler: false,
                    admin: false,
                },
            )
            .await
        }
        Command::Worker(c) => {
            serve(
                &c,
                Roles {
                    receiver: false,
                    worker: true,
                    scheduler: false,
                    admin: false,
                },
            )
            .await
        }
        Command::Scheduler(c) => {
            serve(
                &c,
                Roles {
                    receiver: false,
                    worker: false,
                    scheduler: true,
                    admin: true,
                },
            )
            .await
        }
        Command::Demo => {
            crate::telemetry::init("warn");
            crate::demo::run().await
        }
        Command::Simulate {
            which,
            listen,
            seed,
        } => {
            crate::telemetry::init("info");
            let r = match which {
                Which::Graph => cgc_graph::sim::run_standalone(listen, seed).await,
                Which::Crm => cgc_crm::sim::run_standalone(listen, seed).await,
            };
            r.map_err(|e| anyhow::anyhow!("simulator: {e}"))
        }
        Command::Doctor(c) => doctor(&c).await,
        Command::Plan(p) => plan(&p).await,
        Command::Conflicts { config, action } => {
            let config = load(&config)?;
            match action.unwrap_or(ConflictAction::List) {
                ConflictAction::List => {
                    admin_call(&config, reqwest::Method::GET, "/admin/conflicts", None).await
                }
                ConflictAction::Resolve { id, take } => {
                    admin_call(
                        &config,
                        reqwest::Method::POST,
                        &format!("/admin/conflicts/{id}/resolve"),
                        Some(serde_json::json!({"take": take, "by": "cli"})),
                    )
                    .await
                }
            }
        }
        Command::DeadLetters { config, action } => {
            let config = load(&config)?;
            match action.unwrap_or(DeadLetterAction::List) {
                DeadLetterAction::List => {
                    admin_call(&config, reqwest::Method::GET, "/admin/dead-letters", None).await
                }
                DeadLetterAction::Replay { id } => {
                    admin_call(
                        &config,
                        reqwest::Method::POST,
                        "/admin/dead-letters/replay",
                        Some(serde_json::json!({"id": id})),
                    )
                    .await
                }
            }
        }
    }
}

async fn admin_call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let Some(admin) = &config.admin else {
        bail!(
            "the config file has no [admin] section: add [admin] listen and token, and restart the service"
        );
    };
    let url = format!("http://{}{path}", admin.listen);
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, &url)
        .bearer_auth(admin.token.expose_secret());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("admin API at {url} not reachable: is the service running?"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    println!("{pretty}");
    if !status.is_success() {
        bail!("admin API answered {status}");
    }
    Ok(())
}

/// `plan`: the report on stdout, progress on stderr; an error when the guard would trip.
async fn plan(p: &PlanArgs) -> anyhow::Result<()> {
    crate::telemetry::init("warn");
    let config = Config::load(&p.config)?;
    let entity =
        match &p.entity {
            Some(e) => Some(e.parse::<cgc_core::Entity>().map_err(|_| {
                anyhow::anyhow!("--entity: {e:?} is not appointment, contact or task")
            })?),
            None => None,
        };
    let opts = crate::plan::PlanOptions {
        tenant: p.tenant.clone(),
        mailbox: p.mailbox.clone(),
        entity,
        progress: !p.json,
    };
    let (text, json, tripped) = match &p.against {
        Some(old) => {
            let old = Config::load(old).context("--against")?;
            let c = crate::plan::plan_against(config, old, &opts, &prefix()).await?;
            (c.to_text(), c.to_json(), c.report.guard_tripped)
        }
        None => {
            let r = crate::plan::plan(config, &opts, &prefix()).await?;
            (r.to_text(), r.to_json(), r.guard_tripped)
        }
    };
    if p.json {
        println!("{json}");
    } else {
        print!("{text}");
    }
    if tripped {
        bail!(
            "the plan would trip the mass-change guard (see the mailboxes marked HOLD); nothing was written"
        );
    }
    Ok(())
}

async fn doctor(c: &ConfigArg) -> anyhow::Result<()> {
    let config = match load(c) {
        Ok(cfg) => cfg,
        Err(e) => {
            println!("config: FAILED: {e:#}");
            bail!("doctor found problems (see above)");
        }
    };
    println!("config: ok ({} tenant(s))", config.tenants.len());
    let public_url = config.receiver.public_url.clone();
    let app = match App::build(config, Tuning::default(), &prefix()).await {
        Ok(app) => app,
        Err(e) => {
            println!(
                "queue and store: FAILED: {e:#} (check queue.url and store.url; locally: bash scripts/services.sh)"
            );
            bail!("doctor found problems (see above)");
        }
    };
    println!("queue and store: ok");
    let mut all = crate::doctor::checks(&app).await;
    all.push(crate::doctor::handshake(&public_url).await);
    for check in &all {
        println!("{}", check.line);
    }
    if all.iter().any(|c| !c.ok) {
        bail!("doctor found problems (see above)");
    }
    Ok(())
}
