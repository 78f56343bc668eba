//! Typed configuration: the TOML file contract of `shared/design/CONFIG.md`.
//!
//! Every key of the contract is accepted; unknown keys, a missing required key, a bad URL or an
//! impossible combination stop the start with one line that names the key and says what is expected.
//! Secrets (`client_secret`, `crm_password`, `token`) may also come from `<key>_file` or from the
//! environment variable that the error message names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A configuration mistake, phrased for the person who edits the file.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// `direction` and `conflict` take the core's own types: one definition, one spelling.
pub use cgc_core::{ConflictPolicy as Conflict, Direction};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    #[default]
    Embedded,
    Rabbitmq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Embedded,
    Redis,
}

// ---------- raw file shape (serde) ----------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    receiver: Option<RawReceiver>,
    admin: Option<RawAdmin>,
    queue: Option<RawQueue>,
    store: Option<RawStore>,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    listen: Option<String>,
    public_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    backend: Option<QueueBackend>,
    path: Option<PathBuf>,
    url: Option<String>,
    partitions: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<StoreBackend>,
    path: Option<PathBuf>,
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: Option<String>,
    graph_tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    login_url: Option<String>,
    graph_url: Option<String>,
    #[serde(default)]
    domains: Vec<String>,
    crm_url: Option<String>,
    crm_user: Option<String>,
    crm_password: Option<String>,
    crm_password_file: Option<PathBuf>,
    crm_time_zone: Option<String>,
    crm_poll_seconds: Option<u64>,
    mailbox_refresh_seconds: Option<u64>,
    todo_poll_seconds: Option<u64>,
    safety_delta_seconds: Option<u64>,
    mass_change_share: Option<f64>,
    mass_change_window_seconds: Option<u64>,
    appointments: Option<RawAppointments>,
    contacts: Option<RawEntity>,
    tasks: Option<RawEntity>,
    emails: Option<RawEmails>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppointments {
    direction: Option<Direction>,
    past_days: Option<u32>,
    future_days: Option<u32>,
    conflict: Option<Conflict>,
    exclude_fields: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity {
    direction: Option<Direction>,
    conflict: Option<Conflict>,
    exclude_fields: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmails {
    direction: Option<Direction>,
    folder: Option<String>,
    success_folder: Option<String>,
    failure_folder: Option<String>,
}

// ---------- validated configuration ----------

#[derive(Clone, Debug)]
pub struct Config {
    pub receiver: ReceiverConfig,
    pub admin: Option<AdminConfig>,
    pub queue: QueueConfig,
    pub store: StoreConfig,
    pub tenants: Vec<TenantConfig>,
}

#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: SecretString,
}

#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub backend: QueueBackend,
    pub path: PathBuf,
    pub url: String,
    pub partitions: u32,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub path: PathBuf,
    pub url: String,
}

#[derive(Clone, Debug)]
pub struct EntityConfig {
    pub direction: Direction,
    pub conflict: Conflict,
    pub exclude_fields: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct AppointmentsConfig {
    pub entity: EntityConfig,
    pub past_days: u32,
    pub future_days: u32,
}

#[derive(Clone, Debug)]
pub struct EmailsConfig {
    pub direction: Direction,
    pub folder: String,
    pub success_folder: String,
    pub failure_folder: String,
}

#[derive(Clone, Debug)]
pub struct TenantConfig {
    pub id: String,
    pub graph_tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub login_url: String,
    pub graph_url: String,
    pub domains: Vec<String>,
    pub crm_url: String,
    pub crm_user: String,
    pub crm_password: SecretString,
    pub crm_time_zone: chrono_tz::Tz,
    pub crm_poll_seconds: u64,
    pub mailbox_refresh_seconds: u64,
    pub todo_poll_seconds: u64,
    pub safety_delta_seconds: u64,
    /// Mass-change guard: when a mailbox's deletes and unlinks within the window would exceed this
    /// share of its pairs, they stop and the mailbox is held until an operator releases it.
    pub mass_change_share: f64,
    pub mass_change_window_seconds: u64,
    pub appointments: AppointmentsConfig,
    pub contacts: EntityConfig,
    pub tasks: EntityConfig,
    pub emails: EmailsConfig,
}

impl TenantConfig {
    /// True when `mailbox`'s domain is one of the tenant's domains (letter case ignored).
    pub fn owns_mailbox(&self, mailbox: &str) -> bool {
        match mailbox.rsplit_once('@') {
            Some((_, domain)) => self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)),
            None => false,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read config file {}: {e} (pass an existing TOML file with --config)",
                path.display()
            ))
        })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates TOML text; `env` looks up environment variables (injected for tests).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| err(describe_toml_error(text, &e)))?;
        validate(raw, env)
    }
}

/// Turns a TOML/serde error into one line naming the section and key.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let section = before
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
                .unwrap_or("top level");
            // The key on the offending line, when the error points at a value.
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            match line_text.split_once('=') {
                Some((k, _)) if !k.trim().starts_with('[') && !msg.contains(k.trim()) => {
                    format!("line {line}, in {section}: key `{}`: {msg}", k.trim())
                }
                _ => format!("line {line}, in {section}: {msg}"),
            }
        }
        None => msg,
    }
}

fn secret(
    key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
    env_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, ConfigError> {
    if value.is_some() && file.is_some() {
        return Err(err(format!(
            "{key}: give either the value or {key}_file, not both"
        )));
    }
    if let Some(v) = value {
        return Ok(SecretString::from(v));
    }
    if let Some(path) = file {
        let v = std::fs::read_to_string(&path).map_err(|e| {
            err(format!(
                "{key}_file: cannot read {}: {e} (expected a file holding the secret)",
                path.display()
            ))
        })?;
        return Ok(SecretString::from(
            v.trim_end_matches(['\n', '\r']).to_string(),
        ));
    }
    if let Some(v) = env(env_name) {
        return Ok(SecretString::from(v));
    }
    Err(err(format!(
        "{key} is missing: set {key}, {key}_file, or the environment variable {env_name}"
    )))
}

/// The longest window side accepted (ten years): beyond, date arithmetic could overflow.
const MAX_WINDOW_DAYS: u32 = 3660;

fn days(key: &str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if d <= MAX_WINDOW_DAYS => Ok(d),
        Some(d) => Err(err(format!(
            "{key} = {d}: expected a number of days from 0 to {MAX_WINDOW_DAYS}"
        ))),
    }
}

fn env_name(parts: &[&str]) -> String {
    let mut s = String::from("CGC");
    for p in parts {
        s.push('_');
        s.extend(p.chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        }));
    }
    s
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        err(format!(
            "{key} = {v:?} is not a socket address (expected host:port, e.g. \"127.0.0.1:8080\")"
        ))
    })
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Checks an http(s) URL; https is required unless the host is loopback.
fn parse_url(key: &str, v: &str, https_unless_loopback: bool) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(v).map_err(|e| {
        err(format!(
            "{key} = {v:?} is not a valid URL ({e}); expected e.g. \"https://host/path\""
        ))
    })?;
    match url.scheme() {
        "https" => {}
        "http" if !https_unless_loopback || is_loopback_host(&url) => {}
        "http" => {
            return Err(err(format!(
                "{key} = {v:?} must use https (plain http is only allowed for a loopback host)"
            )));
        }
        other => {
            return Err(err(format!(
                "{key} = {v:?} has scheme {other:?}; expected https"
            )));
        }
    }
    Ok(v.trim_end_matches('/').to_string())
}

fn check_excludes(key: &str, fields: &[String], allowed: &[&str]) -> Result<(), ConfigError> {
    for f in fields {
        if !allowed.contains(&f.as_str()) {
            return Err(err(format!(
                "{key} names unknown field {f:?}; expected canonical names from MAPPING.md: {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn entity(
    key: &str,
    raw: Option<RawEntity>,
    allowed: cgc_core::Entity,
) -> Result<EntityConfig, ConfigError> {
    let raw = raw.unwrap_or(RawEntity {
        direction: None,
        conflict: None,
        exclude_fields: None,
    });
    let exclude_fields = raw.exclude_fields.unwrap_or_default();
    check_excludes(
        &format!("{key}.exclude_fields"),
        &exclude_fields,
        allowed.fields(),
    )?;
    Ok(EntityConfig {
        direction: raw.direction.unwrap_or_default(),
        conflict: raw.conflict.unwrap_or_default(),
        exclude_fields,
    })
}

fn required(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(err(format!("{key} is required"))),
    }
}

fn validate(raw: RawFile, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let receiver = match raw.receiver {
        Some(r) => ReceiverConfig {
            listen: parse_addr(
                "receiver.listen",
                r.listen.as_deref().unwrap_or("127.0.0.1:8080"),
            )?,
            public_url: parse_url(
                "receiver.public_url",
                &required("receiver.public_url", r.public_url)?,
                true,
            )?,
        },
        None => ReceiverConfig {
            listen: parse_addr("receiver.listen", "127.0.0.1:8080")?,
            public_url: "http://127.0.0.1:8080".into(),
        },
    };
    let admin = match raw.admin {
        Some(a) => Some(AdminConfig {
            listen: parse_addr(
                "admin.listen",
                a.listen.as_deref().unwrap_or("127.0.0.1:9090"),
            )?,
            token: {
                let t = secret(
                    "admin.token",
                    a.token,
                    a.token_file,
                    &env_name(&["ADMIN", "TOKEN"]),
                    env,
                )?;
                // An empty token would turn admin authentication off: refuse it.
                if t.expose_secret().trim().is_empty() {
                    return Err(err(
                        "admin.token is empty: set a long random token (e.g. `openssl rand -hex 32`); an empty one would leave the admin API open".to_string(),
                    ));
                }
                t
            },
        }),
        None => None,
    };
    let queue = {
        let q = raw.queue.unwrap_or(RawQueue {
            backend: None,
            path: None,
            url: None,
            partitions: None,
        });
        let partitions = q.partitions.unwrap_or(16);
        if partitions == 0 || partitions > 1024 {
            return Err(err(format!(
                "queue.partitions = {partitions}; expected a number from 1 to 1024"
            )));
        }
        let url = q
            .url
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let backend = q.backend.unwrap_or_default();
        if backend == QueueBackend::Rabbitmq
            && !(url.starts_with("amqp://") || url.starts_with("amqps://"))
        {
            return Err(err(format!(
                "queue.url must be an amqp:// or amqps:// URL when queue.backend = \"rabbitmq\" (got a {} URL)",
                url.split(':').next().unwrap_or("malformed")
            )));
        }
        QueueConfig {
            backend,
            path: q.path.unwrap_or_else(|| PathBuf::from("./data/queue")),
            url,
            partitions,
        }
    };
    let store = {
        let s = raw.store.unwrap_or(RawStore {
            backend: None,
            path: None,
            url: None,
        });
        let url = s.url.unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        let backend = s.backend.unwrap_or_default();
        if backend == StoreBackend::Redis
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(err(
                "store.url must be a redis:// or rediss:// URL when store.backend = \"redis\"",
            ));
        }
        StoreConfig {
            backend,
            path: s.path.unwrap_or_else(|| PathBuf::from("./data/state")),
            url,
        }
    };

    let mut tenants = Vec::new();
    for (i, t) in raw.tenants.into_iter().enumerate() {
        let id = required(&format!("tenants[{i}].id"), t.id)?;
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(format!(
                "tenants[{i}].id = {id:?}; expected letters, digits, '-' or '_'"
            )));
        }
        if tenants.iter().any(|x: &TenantConfig| x.id == id) {
            return Err(err(format!(
                "tenants[{i}].id = {id:?} is used twice; expected a unique id per tenant"
            )));
        }
        let k = |name: &str| format!("tenants[{id}].{name}");
        let graph_tenant_id = required(&k("graph_tenant_id"), t.graph_tenant_id)?;
        let client_id = required(&k("client_id"), t.client_id)?;
        let client_secret = secret(
            &k("client_secret"),
            t.client_secret,
            t.client_secret_file,
            &env_name(&[&id, "CLIENT_SECRET"]),
            env,
        )?;
        let login_url = parse_url(
            &k("login_url"),
            t.login_url
                .as_deref()
                .unwrap_or("https://login.microsoftonline.com"),
            true,
        )?;
        let graph_url = parse_url(
            &k("graph_url"),
            t.graph_url
                .as_deref()
                .unwrap_or("https://graph.microsoft.com/v1.0"),
            true,
        )?;
        if t.domains.is_empty() {
            return Err(err(format!(
                "{} is empty; expected at least one mailbox domain, e.g. [\"contoso.com\"]",
                k("domains")
            )));
        }
        let crm_url_raw = required(&k("crm_url"), t.crm_url)?;
        // Taken as is, nothing appended: keep the exact text (only validated).
        parse_url(&k("crm_url"), &crm_url_raw, true)?;
        let crm_user = required(&k("crm_user"), t.crm_user)?;
        let crm_password = secret(
            &k("crm_password"),
            t.crm_password,
            t.crm_password_file,
            &env_name(&[&id, "CRM_PASSWORD"]),
            env,
        )?;
        let zone_name = t.crm_time_zone.unwrap_or_else(|| "Europe/Berlin".into());
        let crm_time_zone: chrono_tz::Tz = zone_name.parse().map_err(|_| {
            err(format!(
                "{} = {zone_name:?} is not an IANA time zone; expected e.g. \"Europe/Berlin\"",
                k("crm_time_zone")
            ))
        })?;
        let seconds = |name: &str, v: Option<u64>, default: u64| -> Result<u64, ConfigError> {
            let v = v.unwrap_or(default);
            if v == 0 {
                return Err(err(format!(
                    "{} = 0; expected a number of seconds > 0",
                    k(name)
                )));
            }
            Ok(v)
        };
        let appointments = {
            let a = t.appointments.unwrap_or(RawAppointments {
                direction: None,
                past_days: None,
                future_days: None,
                conflict: None,
                exclude_fields: None,
            });
            let exclude_fields = a.exclude_fields.unwrap_or_default();
            check_excludes(
                &k("appointments.exclude_fields"),
                &exclude_fields,
                &[
                    cgc_core::Entity::Appointment.fields(),
                    &["kind", "recurrence"],
                ]
                .concat(),
            )?;
            AppointmentsConfig {
                entity: EntityConfig {
                    direction: a.direction.unwrap_or_default(),
                    conflict: a.conflict.unwrap_or_default(),
                    exclude_fields,
                },
                past_days: days(&k("appointments.past_days"), a.past_days, 7)?,
                future_days: days(&k("appointments.future_days"), a.future_days, 90)?,
            }
        };
        let emails = {
            let e = t.emails.unwrap_or(RawEmails {
                direction: None,
                folder: None,
                success_folder: None,
                failure_folder: None,
            });
            let direction = e.direction.unwrap_or(Direction::GraphToCrm);
            if !matches!(direction, Direction::GraphToCrm | Direction::Off) {
                return Err(err(format!(
                    "{} must be \"graph-to-crm\" or \"off\" (archiving is one way)",
                    k("emails.direction")
                )));
            }
            EmailsConfig {
                direction,
                folder: e.folder.unwrap_or_else(|| "Inbox/CRM".into()),
                success_folder: e.success_folder.unwrap_or_else(|| "Sync_Success".into()),
                failure_folder: e.failure_folder.unwrap_or_else(|| "Sync_Failure".into()),
            }
        };
        let tenant = TenantConfig {
            graph_tenant_id,
            client_id,
            client_secret,
            login_url,
            graph_url,
            domains: t
                .domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            crm_url: crm_url_raw,
            crm_user,
            crm_password,
            crm_time_zone,
            crm_poll_seconds: seconds("crm_poll_seconds", t.crm_poll_seconds, 30)?,
            mailbox_refresh_seconds: seconds(
                "mailbox_refresh_seconds",
                t.mailbox_refresh_seconds,
                86_400,
            )?,
            todo_poll_seconds: seconds("todo_poll_seconds", t.todo_poll_seconds, 60)?,
            safety_delta_seconds: seconds("safety_delta_seconds", t.safety_delta_seconds, 21_600)?,
            mass_change_share: match t.mass_change_share {
                None => 0.25,
                Some(x) if x > 0.0 && x <= 1.0 => x,
                Some(x) => {
                    return Err(err(format!(
                        "{} = {x}: expected a share greater than 0 and at most 1 (e.g. 0.25)",
                        k("mass_change_share")
                    )));
                }
            },
            mass_change_window_seconds: seconds(
                "mass_change_window_seconds",
                t.mass_change_window_seconds,
                3_600,
            )?,
            appointments,
            contacts: entity(&k("contacts"), t.contacts, cgc_core::Entity::Contact)?,
            tasks: entity(&k("tasks"), t.tasks, cgc_core::Entity::Task)?,
            emails,
            id,
        };
        let manual = [
            tenant.appointments.entity.conflict,
            tenant.contacts.conflict,
            tenant.tasks.conflict,
        ]
        .contains(&Conflict::Manual);
        if manual && admin.is_none() {
            return Err(err(format!(
                "tenants[{}] uses conflict = \"manual\" but there is no [admin] section; add [admin] listen and token so conflicts can be resolved",
                tenant.id
            )));
        }
        tenants.push(tenant);
    }
    Ok(Config {
        receiver,
        admin,
        queue,
        store,
        tenants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const FULL: &str = r#"
[receiver]
listen = "127.0.0.1:8080"
public_url = "https://hooks.example.com"

[admin]
listen = "127.0.0.1:9090"
token = "admintoken"

[queue]
backend = "embedded"
path = "./data/queue"
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
partitions = 16

[store]
backend = "embedded"
path = "./data/state"
url = "redis://127.0.0.1:6379"

[[tenants]]
id = "contoso"
graph_tenant_id = "00000000-0000-0000-0000-000000000001"
client_id = "00000000-0000-0000-0000-000000000002"
client_secret = "s3cret"
login_url = "https://login.microsoftonline.com"
graph_url = "https://graph.microsoft.com/v1.0"
domains = ["contoso.com"]
crm_url = "https://crm.contoso.com/crm.interface"
crm_user = "OCSU"
crm_password = "pw"
crm_time_zone = "Europe/Berlin"
crm_poll_seconds = 30
mailbox_refresh_seconds = 86400
todo_poll_seconds = 60
safety_delta_seconds = 21600

[tenants.appointments]
direction = "both"
past_days = 7
future_days = 90
conflict = "crm-wins"
exclude_fields = []

[tenants.contacts]
direction = "both"
conflict = "crm-wins"
exclude_fields = []

[tenants.tasks]
direction = "both"
conflict = "crm-wins"
exclude_fields = []

[tenants.emails]
direction = "graph-to-crm"
folder = "Inbox/CRM"
success_folder = "Sync_Success"
failure_folder = "Sync_Failure"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_contract_key_is_accepted() {
        let c = Config::parse(FULL, &no_env).expect("contract example parses");
        assert_eq!(c.tenants.len(), 1);
        let t = &c.tenants[0];
        assert_eq!(t.id, "contoso");
        assert_eq!(t.crm_url, "https://crm.contoso.com/crm.interface");
        assert_eq!(t.client_secret.expose_secret(), "s3cret");
        assert_eq!(t.appointments.future_days, 90);
        assert_eq!(t.emails.folder, "Inbox/CRM");
        assert_eq!(c.queue.partitions, 16);
        assert!(c.admin.is_some());
    }

    #[test]
    fn unknown_key_names_section_and_key() {
        let text = FULL.replace("listen = \"127.0.0.1:8080\"", "lisen = \"127.0.0.1:8080\"");
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        assert!(e.contains("[receiver]"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn missing_secret_names_key_file_and_env_var() {
        let text = FULL.replace("client_secret = \"s3cret\"\n", "");
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("tenants[contoso].client_secret"), "{e}");
        assert!(e.contains("CGC_CONTOSO_CLIENT_SECRET"), "{e}");
        let env = |k: &str| (k == "CGC_CONTOSO_CLIENT_SECRET").then(|| "fromenv".to_string());
        let c = Config::parse(&text, &env).unwrap();
        assert_eq!(c.tenants[0].client_secret.expose_secret(), "fromenv");
    }

    #[test]
    fn an_empty_admin_token_is_refused_in_every_form() {
        let e = Config::parse(
            &FULL.replace("token = \"admintoken\"", "token = \"\""),
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("admin.token is empty"), "{e}");
        let f = std::env::temp_dir().join(format!("cgc-cfg-tok-{}", std::process::id()));
        std::fs::write(&f, "\n").unwrap();
        let text = FULL.replace(
            "token = \"admintoken\"",
            &format!("token_file = {:?}", f.display().to_string()),
        );
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("admin.token is empty"), "{e}");
        let text = FULL.replace("token = \"admintoken\"\n", "");
        let env = |k: &str| (k == "CGC_ADMIN_TOKEN").then(String::new);
        let e = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(e.contains("admin.token is empty"), "{e}");
    }

    #[test]
    fn mass_change_keys_default_and_are_checked() {
        let c = Config::parse(FULL, &no_env).unwrap();
        assert_eq!(c.tenants[0].mass_change_share, 0.25);
        assert_eq!(c.tenants[0].mass_change_window_seconds, 3600);
        let text = FULL.replace(
            "safety_delta_seconds = 21600",
            "safety_delta_seconds = 21600\nmass_change_share = 0.1\nmass_change_window_seconds = 600",
        );
        let c = Config::parse(&text, &no_env).unwrap();
        assert_eq!(c.tenants[0].mass_change_share, 0.1);
        assert_eq!(c.tenants[0].mass_change_window_seconds, 600);
        let text = FULL.replace(
            "safety_delta_seconds = 21600",
            "safety_delta_seconds = 21600\nmass_change_share = 1.5",
        );
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("mass_change_share"), "{e}");
    }

    #[test]
    fn window_days_are_bounded() {
        let text = FULL.replace("future_days = 90", "future_days = 4294967295");
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(
            e.contains("appointments.future_days") && e.contains("3660"),
            "{e}"
        );
        let text = FULL.replace("past_days = 7", "past_days = 3660");
        assert!(Config::parse(&text, &no_env).is_ok());
    }

    #[test]
    fn secret_from_file() {
        let dir = std::env::temp_dir().join(format!("cgc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "filepw\n").unwrap();
        let text = FULL.replace(
            "crm_password = \"pw\"",
            &format!("crm_password_file = {:?}", f.display().to_string()),
        );
        let c = Config::parse(&text, &no_env).unwrap();
        assert_eq!(c.tenants[0].crm_password.expose_secret(), "filepw");
    }

    #[test]
    fn public_url_must_be_https_unless_loopback() {
        let text = FULL.replace("https://hooks.example.com", "http://hooks.example.com");
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(
            e.contains("receiver.public_url") && e.contains("https"),
            "{e}"
        );
        let text = FULL.replace("https://hooks.example.com", "http://127.0.0.1:8080");
        assert!(Config::parse(&text, &no_env).is_ok());
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (
                "crm_time_zone = \"Europe/Berlin\"",
                "crm_time_zone = \"Mars/Base\"",
                "crm_time_zone",
            ),
            (
                "conflict = \"crm-wins\"\nexclude_fields = []\n\n[tenants.contacts]",
                "conflict = \"newest\"\nexclude_fields = []\n\n[tenants.contacts]",
                "conflict",
            ),
            ("partitions = 16", "partitions = 0", "queue.partitions"),
            (
                "crm_url = \"https://crm.contoso.com/crm.interface\"",
                "crm_url = \"not a url\"",
                "crm_url",
            ),
            ("domains = [\"contoso.com\"]", "domains = []", "domains"),
        ];
        for (from, to, key) in cases {
            let text = FULL.replacen(from, to, 1);
            assert_ne!(text, FULL, "replacement for {key} applied");
            let e = Config::parse(&text, &no_env).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn manual_conflict_requires_admin() {
        let text = FULL
            .replacen("conflict = \"crm-wins\"", "conflict = \"manual\"", 1)
            .replace(
                "[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"admintoken\"\n",
                "",
            );
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("manual") && e.contains("[admin]"), "{e}");
    }

    #[test]
    fn missing_sections_take_defaults() {
        let text = r#"
[receiver]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
[[tenants]]
id = "t1"
graph_tenant_id = "g"
client_id = "c"
client_secret = "s"
domains = ["a.com"]
crm_url = "http://127.0.0.1:1/crm"
crm_user = "u"
crm_password = "p"
"#;
        let c = Config::parse(text, &no_env).unwrap();
        assert_eq!(c.queue.backend, QueueBackend::Embedded);
        assert_eq!(c.store.backend, StoreBackend::Embedded);
        let t = &c.tenants[0];
        assert_eq!(t.appointments.past_days, 7);
        assert_eq!(t.appointments.entity.conflict, Conflict::CrmWins);
        assert_eq!(t.emails.success_folder, "Sync_Success");
        assert!(t.owns_mailbox("Rep@A.com"));
        assert!(!t.owns_mailbox("rep@b.com"));
    }

    #[test]
    fn unknown_exclude_field_is_refused() {
        let text = FULL.replacen("exclude_fields = []", "exclude_fields = [\"colour\"]", 1);
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(
            e.contains("appointments.exclude_fields") && e.contains("colour"),
            "{e}"
        );
    }
}
