//! The `[receiver]`, `[admin]`, `[queue]` and `[store]` sections: raw shape, validated shape, defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::secrets::{env_name, secret};
use super::validate::{parse_addr, parse_url, required};
use super::{ConfigError, err};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReceiver {
    listen: Option<String>,
    public_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    backend: Option<QueueBackend>,
    path: Option<PathBuf>,
    url: Option<String>,
    partitions: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    backend: Option<StoreBackend>,
    path: Option<PathBuf>,
    url: Option<String>,
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

/// `[receiver]`; without the section, listens on 127.0.0.1:8080.
pub(super) fn receiver(raw: Option<RawReceiver>) -> Result<ReceiverConfig, ConfigError> {
    Ok(match raw {
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
    })
}

/// `[admin]`; without the section there is no admin API.
pub(super) fn admin(
    raw: Option<RawAdmin>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<AdminConfig>, ConfigError> {
    Ok(match raw {
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
    })
}

/// `[queue]`, with its defaults.
pub(super) fn queue(raw: Option<RawQueue>) -> Result<QueueConfig, ConfigError> {
    let q = raw.unwrap_or(RawQueue {
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
    Ok(QueueConfig {
        backend,
        path: q.path.unwrap_or_else(|| PathBuf::from("./data/queue")),
        url,
        partitions,
    })
}

/// `[store]`, with its defaults.
pub(super) fn store(raw: Option<RawStore>) -> Result<StoreConfig, ConfigError> {
    let s = raw.unwrap_or(RawStore {
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
    Ok(StoreConfig {
        backend,
        path: s.path.unwrap_or_else(|| PathBuf::from("./data/state")),
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{FULL, no_env};
    use super::super::*;

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
}
