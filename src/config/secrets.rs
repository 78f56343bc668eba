//! Secrets (`client_secret`, `crm_password`, `admin.token`, and `queue.url`/`store.url`, which may
//! carry a password): the value, a `<key>_file`, or an environment variable named after the key.

use std::path::PathBuf;

use secrecy::SecretString;

use super::{ConfigError, err};

/// The secret `key` from its value, its `<key>_file`, or the environment variable `env_name`.
pub(super) fn secret(
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

/// Like [`secret`], with `default` when none of the three forms is given (URLs that may carry a
/// password: `queue.url`, `store.url`).
pub(super) fn secret_or(
    key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
    env_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    default: &str,
) -> Result<SecretString, ConfigError> {
    if value.is_none() && file.is_none() && env(env_name).is_none() {
        return Ok(SecretString::from(default.to_string()));
    }
    secret(key, value, file, env_name, env)
}

/// `CGC_<PART>_<PART>`: the environment variable a secret may come from.
pub(super) fn env_name(parts: &[&str]) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{FULL, no_env};
    use super::super::*;
    use secrecy::ExposeSecret;

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
}
