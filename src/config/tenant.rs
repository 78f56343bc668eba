//! One `[[tenants]]` entry and its entity sections (`appointments`, `contacts`, `tasks`, `emails`).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use super::secrets::{env_name, secret};
use super::validate::{check_excludes, days, parse_url, required};
use super::{ConfigError, Conflict, Direction, err};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
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
    contacts: Option<RawContacts>,
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
    max_invitations_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContacts {
    direction: Option<Direction>,
    conflict: Option<Conflict>,
    exclude_fields: Option<Vec<String>>,
    scope: Option<toml::Value>,
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
    /// Invitation guard: Graph writes that mail attendees, per mailbox and minute, beyond which
    /// they are held (0 = no limit).
    pub max_invitations_per_minute: u32,
}

/// Which CRM persons belong in a rep's Outlook contacts besides those already linked
/// (`[tenants.contacts] scope`). The CRM profile names no rep on a Company and no creator on a
/// Person, so both rules go through the rep's own appointments (`Contact` records with the rep's
/// `RepID` whose date lies in the window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContactScope {
    /// `"companies"`: every person of a company (`CoGrp`/`CoNo`) the rep has appointments with.
    pub companies: bool,
    /// `"appointments"`: the persons (`PeGrp`/`PeNo`) the rep has appointments with.
    pub appointments: bool,
}

impl ContactScope {
    /// `"linked"`: only persons already linked to an Outlook contact.
    pub const LINKED: ContactScope = ContactScope {
        companies: false,
        appointments: false,
    };

    /// Whether the scope adds any person beyond the linked ones.
    pub fn adds_persons(self) -> bool {
        self.companies || self.appointments
    }
}

impl Default for ContactScope {
    fn default() -> Self {
        ContactScope {
            companies: true,
            appointments: false,
        }
    }
}

const SCOPE_VALUES: &str = "\"linked\", \"companies\", \"appointments\" or a list of them, e.g. [\"companies\", \"appointments\"]";

/// `[tenants.contacts] scope`: one value or a list of values.
fn contact_scope(key: &str, v: Option<toml::Value>) -> Result<ContactScope, ConfigError> {
    let Some(v) = v else {
        return Ok(ContactScope::default());
    };
    let names: Vec<toml::Value> = match v {
        toml::Value::Array(a) => a,
        other => vec![other],
    };
    let mut scope = ContactScope::LINKED;
    for n in &names {
        match n.as_str() {
            Some("linked") => {}
            Some("companies") => scope.companies = true,
            Some("appointments") => scope.appointments = true,
            Some(other @ ("created" | "owned")) => {
                return Err(err(format!(
                    "{key} = {other:?}: the CRM profile names no creator or owner of a Person or Company; expected {SCOPE_VALUES}"
                )));
            }
            _ => return Err(err(format!("{key} = {n}; expected {SCOPE_VALUES}"))),
        }
    }
    if names.is_empty() {
        return Err(err(format!("{key} = []; expected {SCOPE_VALUES}")));
    }
    Ok(scope)
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
    /// Which CRM persons reach a rep's Outlook without being linked first.
    pub contact_scope: ContactScope,
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

/// Validates tenant number `i`; `earlier` are the tenants before it (ids are unique),
/// `has_admin` whether there is an `[admin]` section (manual conflicts need one).
pub(super) fn tenant(
    i: usize,
    t: RawTenant,
    earlier: &[TenantConfig],
    has_admin: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TenantConfig, ConfigError> {
    let id = required(&format!("tenants[{i}].id"), t.id)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(format!(
            "tenants[{i}].id = {id:?}; expected letters, digits, '-' or '_'"
        )));
    }
    if earlier.iter().any(|x| x.id == id) {
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
            max_invitations_per_minute: None,
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
            max_invitations_per_minute: a.max_invitations_per_minute.unwrap_or(30),
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
    let (contacts, contact_scope) = match t.contacts {
        None => (
            entity(&k("contacts"), None, cgc_core::Entity::Contact)?,
            ContactScope::default(),
        ),
        Some(c) => (
            entity(
                &k("contacts"),
                Some(RawEntity {
                    direction: c.direction,
                    conflict: c.conflict,
                    exclude_fields: c.exclude_fields,
                }),
                cgc_core::Entity::Contact,
            )?,
            contact_scope(&k("contacts.scope"), c.scope)?,
        ),
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
        contact_scope,
        contacts,
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
    if manual && !has_admin {
        return Err(err(format!(
            "tenants[{}] uses conflict = \"manual\" but there is no [admin] section; add [admin] listen and token so conflicts can be resolved",
            tenant.id
        )));
    }
    Ok(tenant)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{FULL, no_env};
    use super::super::*;

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
    fn contact_scope_defaults_to_companies_and_takes_a_value_or_a_list() {
        let c = Config::parse(FULL, &no_env).unwrap();
        assert_eq!(c.tenants[0].contact_scope, ContactScope::default());
        assert!(c.tenants[0].contact_scope.companies);
        let with = |scope: &str| {
            FULL.replacen(
                "[tenants.contacts]\n",
                &format!("[tenants.contacts]\nscope = {scope}\n"),
                1,
            )
        };
        let c = Config::parse(&with("\"linked\""), &no_env).unwrap();
        assert_eq!(c.tenants[0].contact_scope, ContactScope::LINKED);
        assert!(!c.tenants[0].contact_scope.adds_persons());
        let c = Config::parse(&with("[\"companies\", \"appointments\"]"), &no_env).unwrap();
        assert!(c.tenants[0].contact_scope.companies && c.tenants[0].contact_scope.appointments);
        for bad in ["\"created\"", "\"everyone\"", "[]", "3"] {
            let e = Config::parse(&with(bad), &no_env).unwrap_err().to_string();
            assert!(
                e.contains("contacts.scope") && e.contains("\"companies\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn max_invitations_per_minute_defaults_to_30() {
        let c = Config::parse(FULL, &no_env).unwrap();
        assert_eq!(c.tenants[0].appointments.max_invitations_per_minute, 30);
        let text = FULL.replacen(
            "[tenants.appointments]\n",
            "[tenants.appointments]\nmax_invitations_per_minute = 0\n",
            1,
        );
        let c = Config::parse(&text, &no_env).unwrap();
        assert_eq!(c.tenants[0].appointments.max_invitations_per_minute, 0);
        let text = FULL.replacen(
            "[tenants.appointments]\n",
            "[tenants.appointments]\nmax_invitations_per_minute = -1\n",
            1,
        );
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("max_invitations_per_minute"), "{e}");
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
}
