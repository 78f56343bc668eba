//! The Grafana dashboard and the observability services of docker-compose.yml, checked by
//! parsing: every metric a panel queries is one the service exports (the registry in
//! `telemetry::metric`, itself checked against the `/metrics` of a running connector after a
//! sync), and the collector, Tempo, Prometheus and Grafana are wired to each other and to the
//! connector's config.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::telemetry::metric;

/// Aggregation operators and keywords: identifiers in PromQL that are never metric names.
const NOT_METRICS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The end of a quoted string starting at `i` (the index after its closing quote).
fn skip_string(c: &[char], i: usize) -> Result<usize, String> {
    let q = c[i];
    let mut j = i + 1;
    while j < c.len() {
        if c[j] == '\\' && q != '`' {
            j += 2;
            continue;
        }
        if c[j] == q {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err("unterminated string".into())
}

/// The index after the bracket closing the one at `i` (strings inside are skipped).
fn skip_group(c: &[char], i: usize, close: char) -> Result<usize, String> {
    let open = c[i];
    let mut depth = 0;
    let mut j = i;
    while j < c.len() {
        match c[j] {
            '"' | '\'' | '`' => {
                j = skip_string(c, j)?;
                continue;
            }
            x if x == open => depth += 1,
            x if x == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("unbalanced {open:?}"))
}

/// The metric (series) names a PromQL expression reads, in order: identifiers that are not
/// functions (followed by `(`), aggregation operators or keywords, label names (in `{…}` matchers
/// and the lists of `by`, `without`, `on`, …), strings, numbers or `[…]` ranges. An expression with
/// unbalanced brackets or an unterminated string is an error.
pub(crate) fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut parens = 0i32;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            '"' | '\'' | '`' => i = skip_string(&c, i)?,
            '{' => i = skip_group(&c, i, '}')?,
            '[' => i = skip_group(&c, i, ']')?,
            '}' | ']' => return Err(format!("unbalanced {ch:?}")),
            '#' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '(' => {
                parens += 1;
                i += 1;
            }
            ')' => {
                parens -= 1;
                if parens < 0 {
                    return Err("unbalanced ')'".into());
                }
                i += 1;
            }
            x if x.is_ascii_digit()
                || (x == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number or a duration (0.95, 1e3, 5m).
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                    i += 1;
                }
            }
            x if x.is_ascii_alphabetic() || x == '_' || x == ':' => {
                let start = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let mut next = i;
                while next < c.len() && c[next].is_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if c.get(next) == Some(&'(') {
                        i = skip_group(&c, next, ')')?;
                    }
                } else if NOT_METRICS.contains(&lower.as_str()) || c.get(next) == Some(&'(') {
                    // An operator, a keyword or a function call.
                } else {
                    out.push(word);
                }
            }
            _ => i += 1,
        }
    }
    if parens != 0 {
        return Err("unbalanced '('".into());
    }
    Ok(out)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// The dashboards shipped in deploy/grafana/dashboards/, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("deploy/grafana/dashboards exists") {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is valid JSON: {e}", path.display()));
            out.push((path.display().to_string(), v));
        }
    }
    assert!(!out.is_empty(), "at least one dashboard");
    out
}

/// The data source uid a target queries (its own, else its panel's).
fn datasource_uid<'a>(panel: &'a Value, target: &'a Value) -> Option<&'a str> {
    target["datasource"]["uid"]
        .as_str()
        .or_else(|| panel["datasource"]["uid"].as_str())
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(root().join(path))
        .unwrap_or_else(|e| panic!("{path} is readable: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path} is valid YAML: {e}"))
}

#[test]
fn promql_names_are_found_past_functions_labels_strings_and_ranges() {
    let names = |e: &str| metric_names(e).unwrap();
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (le, source) (rate(cgc_sync_latency_seconds_bucket{tenant="a",mailbox=~"b.*"}[5m])))"#
        ),
        vec!["cgc_sync_latency_seconds_bucket"]
    );
    assert_eq!(
        names("time() - max by (tenant, mailbox) (cgc_mailbox_last_sync_timestamp_seconds)"),
        vec!["cgc_mailbox_last_sync_timestamp_seconds"]
    );
    assert_eq!(
        names("count by (tenant) (a == 0) / on (tenant) group_left (x) b offset 5m > bool 1e3"),
        vec!["a", "b"]
    );
    assert_eq!(names(r#"up{job="sum(x)"}"#), vec!["up"]);
    assert!(metric_names("sum(rate(x[5m])").is_err());
    assert!(metric_names(r#"x{a="b}"#).is_err());
    assert!(metric_names("x]").is_err());
}

#[test]
fn every_dashboard_panel_queries_metrics_the_service_exports() {
    let exported: BTreeSet<String> = metric::series_names().into_iter().collect();
    let mut queried = BTreeSet::new();
    let mut trace_panels = 0;
    for (file, d) in dashboards() {
        for p in panels(&d) {
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            assert!(
                !targets.is_empty(),
                "{file}: panel {} has no query",
                p["title"]
            );
            for t in targets {
                match datasource_uid(p, t) {
                    Some("prometheus") => {
                        let expr = t["expr"].as_str().expect("a Prometheus target has expr");
                        let names = metric_names(expr)
                            .unwrap_or_else(|e| panic!("{file}: {expr:?} does not parse: {e}"));
                        assert!(!names.is_empty(), "{file}: {expr:?} reads no metric");
                        for n in names {
                            assert!(
                                exported.contains(&n),
                                "{file}: panel {} queries {n}, which the service does not export",
                                p["title"]
                            );
                            queried.insert(n);
                        }
                    }
                    Some("tempo") => trace_panels += 1,
                    other => panic!("{file}: panel {} uses data source {other:?}", p["title"]),
                }
            }
        }
    }
    assert!(trace_panels > 0, "a trace view");
    // The issue's list: each topic has a panel.
    for n in [
        "cgc_notifications_total",
        "cgc_events_total",
        "cgc_decisions_total",
        "cgc_sync_latency_seconds_bucket",
        "cgc_graph_request_seconds_count",
        "cgc_graph_request_seconds_bucket",
        "cgc_crm_request_seconds_count",
        "cgc_crm_request_seconds_bucket",
        "cgc_graph_throttle_wait_seconds_count",
        "cgc_queue_depth",
        "cgc_dead_letters",
        "cgc_subscription_expiry_seconds",
        "cgc_conflicts_open",
        "cgc_mailbox_last_sync_timestamp_seconds",
        "cgc_backfill_items",
    ] {
        assert!(queried.contains(n), "no panel shows {n}");
    }
}

#[test]
fn a_series_name_outside_the_registry_is_refused() {
    let exported: BTreeSet<String> = metric::series_names().into_iter().collect();
    assert!(
        exported.contains("cgc_graph_request_seconds_bucket"),
        "a histogram's buckets"
    );
    assert!(
        exported.contains("cgc_event_latency_ms_count"),
        "a summary's count"
    );
    assert!(
        !exported.contains("cgc_events_total_count"),
        "a counter has no _count"
    );
    assert!(
        !exported.contains("cgc_queue_depth_bucket"),
        "a gauge has no buckets"
    );
    assert!(
        !exported.contains("cgc_graph_request_seconds"),
        "a histogram has no bare series"
    );
}

#[test]
fn grafana_provisions_the_data_sources_the_dashboards_use() {
    let ds = yaml("deploy/grafana/provisioning/datasources/datasources.yaml");
    let sources = ds["datasources"].as_sequence().expect("datasources");
    let uid_of = |kind: &str| {
        sources
            .iter()
            .find(|s| s["type"].as_str() == Some(kind))
            .and_then(|s| {
                Some((
                    s["uid"].as_str()?.to_string(),
                    s["url"].as_str()?.to_string(),
                ))
            })
            .unwrap_or_else(|| panic!("a {kind} data source with uid and url"))
    };
    let (prom, prom_url) = uid_of("prometheus");
    let (tempo, tempo_url) = uid_of("tempo");
    assert_eq!((prom.as_str(), tempo.as_str()), ("prometheus", "tempo"));
    assert_eq!(prom_url, "http://prometheus:9090");
    assert_eq!(tempo_url, "http://tempo:3200");
    let tempo_cfg = yaml("deploy/tempo.yaml");
    assert_eq!(tempo_cfg["server"]["http_listen_port"].as_u64(), Some(3200));
    let providers = yaml("deploy/grafana/provisioning/dashboards/dashboards.yaml");
    assert_eq!(
        providers["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
}

#[test]
fn compose_wires_collector_tempo_prometheus_and_grafana_to_the_connector() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let service = |n: &str| &compose["services"][n];
    for n in ["otel-collector", "tempo", "prometheus", "grafana"] {
        assert!(service(n).is_mapping(), "service {n}");
    }
    // Every file a service mounts from the repository exists (the collector's config first).
    for (name, s) in services {
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            if let Some(rel) = host.strip_prefix("./") {
                assert!(
                    root().join(rel).exists(),
                    "{name:?} mounts {host}, which is missing"
                );
            }
        }
    }
    let collector_mount = service("otel-collector")["volumes"][0].as_str().unwrap();
    assert!(
        collector_mount.starts_with("./deploy/otel-collector.yaml:"),
        "{collector_mount}"
    );
    let command: Vec<&str> = service("otel-collector")["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let in_container = collector_mount.split(':').nth(1).unwrap();
    assert!(
        command
            .iter()
            .any(|a| *a == format!("--config={in_container}")),
        "the collector reads the mounted file: {command:?}"
    );
    // The connector's spans go to the collector's OTLP/HTTP receiver, and from there to Tempo.
    let text = std::fs::read_to_string(root().join("deploy/config.compose.toml")).unwrap();
    let config: toml::Value = toml::from_str(&text).unwrap();
    let endpoint = config["telemetry"]["otlp_endpoint"]
        .as_str()
        .expect("[telemetry] otlp_endpoint");
    let collector = yaml("deploy/otel-collector.yaml");
    let http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .unwrap();
    let port = http.rsplit(':').next().unwrap();
    assert_eq!(endpoint, format!("http://otel-collector:{port}"));
    let pipeline = &collector["service"]["pipelines"]["traces"];
    let exporter = pipeline["exporters"][0].as_str().unwrap();
    assert_eq!(pipeline["receivers"][0].as_str(), Some("otlp"));
    assert_eq!(
        collector["exporters"][exporter]["endpoint"].as_str(),
        Some("tempo:4317")
    );
    // The metrics' OTLP copy is accepted too (a metrics pipeline on the same receiver), so the
    // connector's metrics export does not fail against this collector.
    let metrics = &collector["service"]["pipelines"]["metrics"];
    assert_eq!(metrics["receivers"][0].as_str(), Some("otlp"));
    let exporter = metrics["exporters"][0].as_str().unwrap();
    assert!(
        collector["exporters"].get(exporter).is_some(),
        "{exporter} is configured"
    );
    let tempo = yaml("deploy/tempo.yaml");
    assert_eq!(
        tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("0.0.0.0:4317")
    );
    // Prometheus scrapes /metrics of every connector process on the admin port.
    let admin_listen = config["admin"]["listen"].as_str().unwrap();
    let admin_port: u64 = admin_listen.rsplit(':').next().unwrap().parse().unwrap();
    let prom = yaml("deploy/prometheus.yml");
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let sd = &job["dns_sd_configs"][0];
    assert_eq!(sd["port"].as_u64(), Some(admin_port));
    let scraped: BTreeSet<&str> = sd["names"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for (name, s) in services {
        let name = name.as_str().unwrap();
        let role = s["command"][0].as_str().unwrap_or("");
        if ["scheduler", "receiver", "worker"].contains(&role) {
            assert!(scraped.contains(name), "Prometheus does not scrape {name}");
        }
    }
    // Nothing of the observability stack is published beyond the host's loopback, and the
    // collector and Tempo not at all.
    for n in ["prometheus", "grafana"] {
        for p in service(n)["ports"]
            .as_sequence()
            .expect("published for the operator")
        {
            assert!(
                p.as_str().unwrap().starts_with("127.0.0.1:"),
                "{n} publishes {p:?}"
            );
        }
    }
    for n in ["otel-collector", "tempo"] {
        assert!(service(n).get("ports").is_none(), "{n} publishes ports");
    }
}

/// The series names in a Prometheus text exposition, and the families with their `# TYPE`.
fn scraped(text: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut series = BTreeSet::new();
    let mut types = Vec::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let mut it = t.split_whitespace();
            types.push((
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            ));
        } else if !l.starts_with('#') && !l.trim().is_empty() {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            series.insert(l[..end].to_string());
        }
    }
    (series, types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_connector_serves_registered_series_only_and_the_panels_metrics_after_a_sync() {
    use crate::demo::{Harness, HarnessOptions, MAILBOX, crm_slot};
    let h = Harness::start(HarnessOptions::default()).await.unwrap();
    h.wait_subscribed().await.unwrap();
    let day = (chrono::Utc::now() + chrono::Duration::days(4)).date_naive();
    h.graph.user_create_event(
        MAILBOX,
        serde_json::json!({
            "subject": "metrics from Outlook",
            "start": {"dateTime": format!("{day}T09:00:00.0000000"), "timeZone": "UTC"},
            "end": {"dateTime": format!("{day}T10:00:00.0000000"), "timeZone": "UTC"},
        }),
    );
    let (date, time) = crm_slot(5, 10);
    h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", "metrics from CRM"),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("RepID", crate::demo::REP_ID),
        ],
    );
    h.settle().await.unwrap();
    let text = reqwest::get(format!("{}/metrics", h.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    h.stop().await;
    let exported: BTreeSet<String> = metric::series_names().into_iter().collect();
    let (series, types) = scraped(&text);
    for s in &series {
        assert!(
            exported.contains(s),
            "{s} is served but not in telemetry::metric: {text}"
        );
    }
    for (family, kind) in &types {
        let name = family.strip_prefix("cgc_").expect("the cgc_ prefix");
        let registered = match kind.as_str() {
            "histogram" => metric::HISTOGRAMS.contains(&name),
            "summary" => metric::SUMMARIES.contains(&name),
            _ => {
                metric::ALL.contains(&name)
                    && !metric::HISTOGRAMS.contains(&name)
                    && !metric::SUMMARIES.contains(&name)
            }
        };
        assert!(
            registered,
            "{family} is served as a {kind}, registered otherwise"
        );
    }
    // A sync both ways fills what the dashboard's panels read.
    for n in [
        "cgc_events_total",
        "cgc_decisions_total",
        "cgc_sync_latency_seconds_bucket",
        "cgc_graph_request_seconds_count",
        "cgc_crm_request_seconds_bucket",
        "cgc_queue_depth",
        "cgc_dead_letters",
        "cgc_conflicts_open",
        "cgc_subscription_expiry_seconds",
        "cgc_mailbox_last_sync_timestamp_seconds",
        "cgc_backfill_items",
        "cgc_backfill_done",
    ] {
        assert!(series.contains(n), "{n} not served after a sync: {text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("cgc_graph_request_seconds_count{")
                && l.contains("status=\"200\"")),
        "Graph requests by status: {text}"
    );
}
