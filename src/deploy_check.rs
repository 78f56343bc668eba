//! Checks the shipped deployment files by parsing them (no Docker engine runs here).

#[cfg(test)]
mod dashboards;

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
            // Services of other images (Redis, the collector, Prometheus, …) run their own
            // commands; connector services take the image from the `x-connector` anchor.
            if s.get("image").is_some_and(|i| {
                !i.as_str()
                    .is_some_and(|i| i.starts_with("crm-graph-connector"))
            }) {
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

    /// Every document of every manifest in `deploy/k8s/`.
    fn k8s_documents() -> Vec<serde_yaml_ng::Value> {
        use serde::Deserialize;
        let dir = root().join("deploy/k8s");
        let mut docs = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("deploy/k8s exists")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let v = serde_yaml_ng::Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{} is valid YAML: {e}", path.display()));
                assert!(
                    v["apiVersion"].is_string() && v["kind"].is_string(),
                    "{}: every document has apiVersion and kind",
                    path.display()
                );
                docs.push(v);
            }
        }
        docs
    }

    fn of_kind<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> Vec<&'a serde_yaml_ng::Value> {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    }

    #[test]
    fn kubernetes_manifests_follow_the_config_and_the_cli() {
        let docs = k8s_documents();
        // The ConfigMap holds a config file that parses, with the secrets the Secret provides.
        let cm = of_kind(&docs, "ConfigMap")[0];
        let text = cm["data"]["config.toml"]
            .as_str()
            .expect("config.toml in the ConfigMap");
        let secret = of_kind(&docs, "Secret")[0];
        let keys = secret["stringData"].as_mapping().expect("stringData");
        let env = |k: &str| {
            keys.get(serde_yaml_ng::Value::from(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let config = crate::config::Config::parse(text, &env)
            .unwrap_or_else(|e| panic!("the ConfigMap's config: {e}"));
        assert!(
            !text.contains("replace"),
            "no secret value in the ConfigMap: they come from the Secret"
        );
        let receiver_port = config.receiver.listen.port();
        let admin_port = config.admin.as_ref().expect("an admin API").listen.port();
        // Every Deployment runs a command this CLI knows, as a non-root user, with the Secret.
        let cli = <crate::cli::Cli as clap::CommandFactory>::command();
        let deployments = of_kind(&docs, "Deployment");
        let mut roles = Vec::new();
        for d in &deployments {
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
            let c = &pod["containers"][0];
            let args: Vec<String> = c["args"]
                .as_sequence()
                .expect("args")
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            let mut argv = vec!["crm-graph-connector".to_string()];
            argv.extend(args.iter().cloned());
            cli.clone()
                .try_get_matches_from(&argv)
                .unwrap_or_else(|e| panic!("{argv:?} is not a valid command: {e}"));
            assert!(
                c["resources"]["requests"].is_mapping(),
                "{argv:?} requests resources"
            );
            let role = args[0].clone();
            // Probes hit the port the role really listens on.
            let (probe_port, ready_path) = match role.as_str() {
                "receiver" => (Some(receiver_port), "/readyz"),
                "scheduler" => (Some(admin_port), "/healthz"),
                _ => (None, ""),
            };
            if let Some(port) = probe_port {
                assert_eq!(
                    c["livenessProbe"]["httpGet"]["path"].as_str(),
                    Some("/healthz")
                );
                assert_eq!(
                    c["livenessProbe"]["httpGet"]["port"].as_u64(),
                    Some(port as u64)
                );
                assert_eq!(
                    c["readinessProbe"]["httpGet"]["path"].as_str(),
                    Some(ready_path)
                );
                assert_eq!(
                    c["readinessProbe"]["httpGet"]["port"].as_u64(),
                    Some(port as u64)
                );
                assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(port as u64));
            }
            roles.push(role);
        }
        roles.sort();
        assert_eq!(roles, vec!["receiver", "scheduler", "worker"]);
        // The ingress serves exactly the receiver's two public routes over TLS.
        let ing = of_kind(&docs, "Ingress")[0];
        assert!(
            ing["spec"]["tls"]
                .as_sequence()
                .is_some_and(|t| !t.is_empty())
        );
        let paths: Vec<&str> = ing["spec"]["rules"][0]["http"]["paths"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, vec!["/notifications", "/lifecycle"]);
        // Workers scale, receivers and workers survive voluntary disruptions, one scheduler.
        let hpa = of_kind(&docs, "HorizontalPodAutoscaler")[0];
        assert_eq!(
            hpa["spec"]["scaleTargetRef"]["name"].as_str(),
            Some("cgc-worker")
        );
        assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 2);
        let scheduler = deployments
            .iter()
            .find(|d| d["metadata"]["name"].as_str() == Some("cgc-scheduler"))
            .unwrap();
        assert_eq!(scheduler["spec"]["replicas"].as_u64(), Some(1));
        // The admin API is not exposed beyond the cluster.
        for svc in of_kind(&docs, "Service") {
            assert_ne!(svc["spec"]["type"].as_str(), Some("LoadBalancer"));
        }
    }
}
