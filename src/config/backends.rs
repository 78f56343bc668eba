//! The `[receiver]`, `[admin]`, `[queue]` and `[store]` sections: raw shape, validated shape, defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::secrets::{env_name, secret, secret_or};
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
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
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
    url_file: Option<PathBuf>,
    partitions: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    backend: Option<StoreBackend>,
    path: Option<PathBuf>,
    url: Option<String>,
    url_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
    /// The built-in TLS listener (`tls_cert_file` and `tls_key_file`, PEM), for a set-up
    /// without a TLS-terminating ingress; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// A PEM certificate chain and its private key (read when the receiver starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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
    /// May carry the broker password: a secret (`url`, `url_file` or `CGC_QUEUE_URL`).
    pub url: SecretString,
    pub partitions: u32,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub path: PathBuf,
    /// May carry the Redis password: a secret (`url`, `url_file` or `CGC_STORE_URL`).
    pub url: SecretString,
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
            tls: match (r.tls_cert_file, r.tls_key_file) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(err(
                        "receiver.tls_cert_file and receiver.tls_key_file go together: give both (PEM files) for the built-in TLS listener, or neither",
                    ));
                }
            },
        },
        None => ReceiverConfig {
            listen: parse_addr("receiver.listen", "127.0.0.1:8080")?,
            public_url: "http://127.0.0.1:8080".into(),
            tls: None,
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
pub(super) fn queue(
    raw: Option<RawQueue>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<QueueConfig, ConfigError> {
    let q = raw.unwrap_or(RawQueue {
        backend: None,
        path: None,
        url: None,
        url_file: None,
        partitions: None,
    });
    let partitions = q.partitions.unwrap_or(16);
    if partitions == 0 || partitions > 1024 {
        return Err(err(format!(
            "queue.partitions = {partitions}; expected a number from 1 to 1024"
        )));
    }
    let url = secret_or(
        "queue.url",
        q.url,
        q.url_file,
        &env_name(&["QUEUE", "URL"]),
        env,
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )?;
    let backend = q.backend.unwrap_or_default();
    let text = url.expose_secret();
    if backend == QueueBackend::Rabbitmq
        && !(text.starts_with("amqp://") || text.starts_with("amqps://"))
    {
        return Err(err(format!(
            "queue.url must be an amqp:// or amqps:// URL when queue.backend = \"rabbitmq\" (got a {} URL)",
            text.split_once("://")
                .map(|(scheme, _)| scheme)
                .unwrap_or("malformed")
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
pub(super) fn store(
    raw: Option<RawStore>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StoreConfig, ConfigError> {
    let s = raw.unwrap_or(RawStore {
        backend: None,
        path: None,
        url: None,
        url_file: None,
    });
    let url = secret_or(
        "store.url",
        s.url,
        s.url_file,
        &env_name(&["STORE", "URL"]),
        env,
        "redis://127.0.0.1:6379",
    )?;
    let backend = s.backend.unwrap_or_default();
    let text = url.expose_secret();
    if backend == StoreBackend::Redis
        && !(text.starts_with("redis://") || text.starts_with("rediss://"))
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
    fn broker_and_redis_urls_are_secrets_from_a_value_a_file_or_the_environment() {
        use secrecy::ExposeSecret;
        let with_password = FULL
            .replace(
                "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
                "url = \"amqp://cgc:Br0ker-Pa55@mq:5672/%2f\"",
            )
            .replace(
                "url = \"redis://127.0.0.1:6379\"",
                "url = \"redis://:R3dis-Pa55@cache:6379\"",
            );
        let cfg = Config::parse(&with_password, &no_env).unwrap();
        assert_eq!(
            cfg.queue.url.expose_secret(),
            "amqp://cgc:Br0ker-Pa55@mq:5672/%2f"
        );
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("Br0ker-Pa55") && !shown.contains("R3dis-Pa55"),
            "{shown}"
        );
        // From files.
        let dir = tempfile::tempdir().unwrap();
        let (qf, sf) = (dir.path().join("q"), dir.path().join("s"));
        std::fs::write(&qf, "amqps://cgc:from-file@mq:5671/%2f\n").unwrap();
        std::fs::write(&sf, "rediss://:from-file@cache:6380\n").unwrap();
        let text = FULL
            .replace(
                "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
                &format!("url_file = {:?}", qf.display().to_string()),
            )
            .replace(
                "url = \"redis://127.0.0.1:6379\"",
                &format!("url_file = {:?}", sf.display().to_string()),
            );
        let cfg = Config::parse(&text, &no_env).unwrap();
        assert_eq!(
            cfg.queue.url.expose_secret(),
            "amqps://cgc:from-file@mq:5671/%2f"
        );
        assert_eq!(
            cfg.store.url.expose_secret(),
            "rediss://:from-file@cache:6380"
        );
        // From the environment, and the defaults without any.
        let bare = FULL
            .replace("url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n", "")
            .replace("url = \"redis://127.0.0.1:6379\"\n", "");
        let env = |k: &str| match k {
            "CGC_QUEUE_URL" => Some("amqp://env:env@mq/%2f".to_string()),
            "CGC_STORE_URL" => Some("redis://:env@cache".to_string()),
            _ => None,
        };
        let cfg = Config::parse(&bare, &env).unwrap();
        assert_eq!(cfg.queue.url.expose_secret(), "amqp://env:env@mq/%2f");
        assert_eq!(cfg.store.url.expose_secret(), "redis://:env@cache");
        let cfg = Config::parse(&bare, &no_env).unwrap();
        assert_eq!(
            cfg.queue.url.expose_secret(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(cfg.store.url.expose_secret(), "redis://127.0.0.1:6379");
        // Both forms at once is a mistake that names the key.
        let both = FULL.replace(
            "url = \"redis://127.0.0.1:6379\"",
            &format!(
                "url = \"redis://x\"\nurl_file = {:?}",
                sf.display().to_string()
            ),
        );
        let e = Config::parse(&both, &no_env).unwrap_err().to_string();
        assert!(
            e.contains("store.url") && e.contains("store.url_file"),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_scheme_is_named_without_the_password() {
        let text = FULL
            .replace(
                "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
                "url = \"http://user:S3cret@mq:5672\"",
            )
            .replacen("backend = \"embedded\"", "backend = \"rabbitmq\"", 1);
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("queue.url") && e.contains("http"), "{e}");
        assert!(!e.contains("S3cret"), "{e}");
    }

    #[test]
    fn the_tls_files_go_together() {
        let with = |extra: &str| {
            FULL.replace(
                "public_url = \"https://hooks.example.com\"",
                &format!("public_url = \"https://hooks.example.com\"\n{extra}"),
            )
        };
        let c = Config::parse(
            &with("tls_cert_file = \"/etc/cgc/tls.crt\"\ntls_key_file = \"/etc/cgc/tls.key\""),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.receiver.tls,
            Some(TlsFiles {
                cert: "/etc/cgc/tls.crt".into(),
                key: "/etc/cgc/tls.key".into()
            })
        );
        assert_eq!(Config::parse(FULL, &no_env).unwrap().receiver.tls, None);
        let e = Config::parse(&with("tls_cert_file = \"/etc/cgc/tls.crt\""), &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("receiver.tls_key_file"), "{e}");
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
