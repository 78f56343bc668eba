//! Checks the shipped deployment files by parsing them (no Docker engine runs here).

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn docker_compose_wires_every_role_with_healthchecks() {
        let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).expect("compose file is valid YAML");
        let services = doc["services"].as_mapping().expect("services");
        for name in [
            "rabbitmq",
            "redis",
            "scheduler",
            "receiver-1",
            "receiver-2",
            "worker",
            "graph-sim",
            "crm-sim",
        ] {
            let s = services
                .get(serde_yaml_ng::Value::from(name))
                .unwrap_or_else(|| panic!("service {name} missing"));
            if name != "worker" {
                assert!(s.get("healthcheck").is_some(), "{name} has a healthcheck");
            }
        }
        let worker = &services[&serde_yaml_ng::Value::from("worker")];
        assert_eq!(
            worker["deploy"]["replicas"].as_u64(),
            Some(3),
            "three workers"
        );
        // Every connector role runs the binary with a command this CLI knows.
        let cli = <crate::cli::Cli as clap::CommandFactory>::command();
        for (name, s) in services {
            let Some(cmd) = s.get("command").and_then(|c| c.as_sequence()) else {
                continue;
            };
            let args: Vec<String> = cmd
                .iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            if name.as_str() == Some("redis") {
                continue;
            }
            let mut argv = vec!["crm-graph-connector".to_string()];
            argv.extend(args);
            cli.clone()
                .try_get_matches_from(&argv)
                .unwrap_or_else(|e| panic!("service {name:?} command {argv:?} is not valid: {e}"));
        }
    }

    #[test]
    fn compose_publishes_no_broker_or_store_port_and_the_admin_api_on_loopback_only() {
        let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let services = &doc["services"];
        for name in ["rabbitmq", "redis"] {
            assert!(
                services[name].get("ports").is_none(),
                "{name} must not publish ports (guest credentials)"
            );
        }
        for p in services["scheduler"]["ports"].as_sequence().unwrap() {
            let p = p.as_str().unwrap();
            assert!(
                p.starts_with("127.0.0.1:"),
                "admin port {p} published beyond loopback"
            );
        }
    }

    #[test]
    fn compose_config_follows_the_config_contract() {
        let text = std::fs::read_to_string(root().join("deploy/config.compose.toml")).unwrap();
        let dir = std::env::temp_dir().join(format!("cgc-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for s in ["admin_token", "client_secret", "crm_password"] {
            std::fs::write(dir.join(s), "x").unwrap();
        }
        let text = text.replace("/run/secrets/", &format!("{}/", dir.display()));
        let c = crate::config::Config::parse(&text, &|_| None).expect("compose config is valid");
        assert_eq!(c.queue.backend, crate::config::QueueBackend::Rabbitmq);
        assert_eq!(c.store.backend, crate::config::StoreBackend::Redis);
    }

    #[test]
    fn dockerfile_is_multi_stage_and_non_root() {
        let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
        assert!(
            text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2
                || text.matches("FROM ").count() >= 2
        );
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("USER ") && !l.contains("root"))
        );
    }
}
