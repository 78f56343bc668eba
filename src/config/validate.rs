//! Shared checks (required keys, socket addresses, URLs, day counts, field names) and the
//! one-line description of a TOML error.

use std::net::SocketAddr;

use super::{ConfigError, err};

/// Turns a TOML/serde error into one line naming the section and key.
pub(super) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
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

/// A required key: present and not blank.
pub(super) fn required(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(err(format!("{key} is required"))),
    }
}

/// The longest window side accepted (ten years): beyond, date arithmetic could overflow.
const MAX_WINDOW_DAYS: u32 = 3660;

pub(super) fn days(key: &str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if d <= MAX_WINDOW_DAYS => Ok(d),
        Some(d) => Err(err(format!(
            "{key} = {d}: expected a number of days from 0 to {MAX_WINDOW_DAYS}"
        ))),
    }
}

pub(super) fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
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
pub(super) fn parse_url(
    key: &str,
    v: &str,
    https_unless_loopback: bool,
) -> Result<String, ConfigError> {
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

pub(super) fn check_excludes(
    key: &str,
    fields: &[String],
    allowed: &[&str],
) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{FULL, no_env};
    use super::super::*;

    #[test]
    fn unknown_key_names_section_and_key() {
        let text = FULL.replace("listen = \"127.0.0.1:8080\"", "lisen = \"127.0.0.1:8080\"");
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        assert!(e.contains("[receiver]"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
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
    fn unknown_exclude_field_is_refused() {
        let text = FULL.replacen("exclude_fields = []", "exclude_fields = [\"colour\"]", 1);
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(
            e.contains("appointments.exclude_fields") && e.contains("colour"),
            "{e}"
        );
    }
}
