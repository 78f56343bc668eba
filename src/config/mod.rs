//! Typed configuration: the TOML file contract of `shared/design/CONFIG.md`.
//!
//! Every key of the contract is accepted; unknown keys, a missing required key, a bad URL or an
//! impossible combination stop the start with one line that names the key and says what is expected.
//! Secrets (`client_secret`, `crm_password`, `token`) may also come from `<key>_file` or from the
//! environment variable that the error message names.
//!
//! Submodules by concern: `backends` (receiver, admin, queue and store sections), `tenant` (a
//! tenant and its entity sections), `secrets` (value, `_file` or environment variable) and
//! `validate` (shared checks and error wording).

use std::path::Path;

use serde::Deserialize;

mod backends;
mod error;
mod secrets;
mod telemetry;
mod tenant;
mod validate;

pub use backends::{
    AdminConfig, QueueBackend, QueueConfig, ReceiverConfig, StoreBackend, StoreConfig, TlsFiles,
};
pub use telemetry::TelemetryConfig;
pub use tenant::{AppointmentsConfig, ContactScope, EmailsConfig, EntityConfig, TenantConfig};

pub use error::ConfigError;
use error::err;

/// `direction` and `conflict` take the core's own types: one definition, one spelling.
pub use cgc_core::{ConflictPolicy as Conflict, Direction};

// ---------- raw file shape (serde) ----------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    receiver: Option<backends::RawReceiver>,
    admin: Option<backends::RawAdmin>,
    queue: Option<backends::RawQueue>,
    store: Option<backends::RawStore>,
    telemetry: Option<telemetry::RawTelemetry>,
    #[serde(default)]
    tenants: Vec<tenant::RawTenant>,
}

// ---------- validated configuration ----------

#[derive(Clone, Debug)]
pub struct Config {
    pub receiver: ReceiverConfig,
    pub admin: Option<AdminConfig>,
    pub queue: QueueConfig,
    pub store: StoreConfig,
    /// `[telemetry]` (optional): trace export.
    pub telemetry: TelemetryConfig,
    pub tenants: Vec<TenantConfig>,
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
        let raw: RawFile =
            toml::from_str(text).map_err(|e| err(validate::describe_toml_error(text, &e)))?;
        validate(raw, env)
    }
}

/// Validates the sections in file order; the first mistake stops.
fn validate(raw: RawFile, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let receiver = backends::receiver(raw.receiver)?;
    let admin = backends::admin(raw.admin, env)?;
    let queue = backends::queue(raw.queue, env)?;
    let store = backends::store(raw.store, env)?;
    let telemetry = telemetry::telemetry(raw.telemetry)?;
    let mut tenants = Vec::new();
    for (i, t) in raw.tenants.into_iter().enumerate() {
        let tenant = tenant::tenant(i, t, &tenants, admin.is_some(), env)?;
        tenants.push(tenant);
    }
    Ok(Config {
        receiver,
        admin,
        queue,
        store,
        telemetry,
        tenants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    pub(super) const FULL: &str = r#"
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

    pub(super) fn no_env(_: &str) -> Option<String> {
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
}
