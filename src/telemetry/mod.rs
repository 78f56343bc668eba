//! Logging (tracing) and the counters served at `/metrics` (Prometheus text format).
//!
//! Metric names are defined once in [`metric`]; notable occurrences are structs in [`events`]
//! whose `emit()` both logs and counts, so names stay consistent and nothing is logged without
//! being counted.

pub mod events;
pub mod metric;
pub mod otlp;
pub mod requests;
pub mod snapshot;
pub mod trace;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Installs the tracing subscriber once (`RUST_LOG` filter, default `info`; log lines in JSON when
/// stderr is not a terminal, see [`json_logs`]), with spans traced but not exported.
pub fn init(default_filter: &str) {
    let _ = init_with(default_filter, None);
}

/// [`init`] with trace export to an OTLP/HTTP endpoint (`[telemetry] otlp_endpoint`) when given.
/// Log lines inside a traced span carry its `trace_id`. A second call changes nothing.
pub fn init_with(
    default_filter: &str,
    otlp_endpoint: Option<&str>,
) -> Result<(), trace::ExporterError> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Registry};
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        let provider = match trace::provider(otlp_endpoint) {
            Ok(p) => p,
            Err(e) => {
                result = Err(e);
                return;
            }
        };
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let json = json_logs(std::env::var("CGC_LOG_JSON").ok().as_deref(), terminal);
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(terminal && !json);
        let logs: Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync> = if json {
            logs.json().boxed()
        } else {
            logs.boxed()
        };
        // Spans are traced at info whatever the log filter says; other crates' spans only at warn.
        let traced = Targets::new().with_default(LevelFilter::WARN).with_targets(
            [
                "crm_graph_connector",
                "cgc_core",
                "cgc_crm",
                "cgc_graph",
                "cgc_backends",
            ]
            .map(|t| (t, LevelFilter::INFO)),
        );
        let _ = tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .with(trace::layer(provider).with_filter(traced))
            .try_init();
    });
    result
}

/// Whether log lines are JSON: `CGC_LOG_JSON=1` JSON, `=0` readable text; otherwise JSON when
/// stderr (where logs go) is not a terminal (a container, a file) and text on a terminal.
pub fn json_logs(setting: Option<&str>, terminal: bool) -> bool {
    match setting.map(str::trim) {
        Some("1") => true,
        Some("0") => false,
        _ => !terminal,
    }
}

/// Prometheus label text, values with `"`, `\` and line breaks replaced (never a forged line).
fn label_text(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace(['"', '\\', '\n'], "_")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Counters by name and label set.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(String, String), u64>>,
    gauges: Mutex<BTreeMap<(String, String), i64>>,
    /// The last error seen per label set (tenant and mailbox): Unix time and reason.
    errors: Mutex<BTreeMap<String, (i64, String)>>,
    histograms: Mutex<BTreeMap<(String, String), Histogram>>,
    latency_ms_sum: AtomicU64,
    latency_count: AtomicU64,
    started: Started,
}

/// When a registry was made: the start of its cumulative counts.
struct Started(std::time::SystemTime);

impl Default for Started {
    fn default() -> Self {
        Started(std::time::SystemTime::now())
    }
}

impl Metrics {
    pub fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &str, labels: &[(&str, &str)], n: u64) {
        let labels = label_text(labels);
        if let Ok(mut m) = self.counters.lock() {
            *m.entry((name.to_string(), labels)).or_insert(0) += n;
        }
    }

    /// Sets a gauge (a value that goes up and down, e.g. `mailbox_held`).
    pub fn set_gauge(&self, name: &str, labels: &[(&str, &str)], value: i64) {
        let labels = label_text(labels);
        if let Ok(mut m) = self.gauges.lock() {
            m.insert((name.to_string(), labels), value);
        }
    }

    /// The current value of a gauge (0 when never set).
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> i64 {
        let labels = label_text(labels);
        self.gauges
            .lock()
            .ok()
            .and_then(|m| m.get(&(name.to_string(), labels)).copied())
            .unwrap_or(0)
    }

    /// Notes the last error of a mailbox (`[("tenant", …), ("mailbox", …)]`) for the admin page.
    pub fn note_error(&self, labels: &[(&str, &str)], reason: &str) {
        if let Ok(mut m) = self.errors.lock() {
            let reason: String = reason.chars().take(500).collect();
            m.insert(label_text(labels), (chrono::Utc::now().timestamp(), reason));
        }
    }

    /// The last error noted for a label set: (Unix time, reason).
    pub fn last_error(&self, labels: &[(&str, &str)]) -> Option<(i64, String)> {
        let labels = label_text(labels);
        self.errors.lock().ok()?.get(&labels).cloned()
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let labels = label_text(labels);
        self.counters
            .lock()
            .ok()
            .and_then(|m| m.get(&(name.to_string(), labels)).copied())
            .unwrap_or(0)
    }

    /// Sum over all label sets of a counter.
    pub fn total(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| n == name)
                    .map(|(_, v)| *v)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Records one observation (in seconds) in a histogram with [`BUCKETS`].
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], seconds: f64) {
        let labels = label_text(labels);
        if let Ok(mut m) = self.histograms.lock() {
            m.entry((name.to_string(), labels))
                .or_default()
                .record(seconds);
        }
    }

    /// Observations of a histogram over all label sets.
    pub fn observations(&self, name: &str) -> u64 {
        self.histograms
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| n == name)
                    .map(|(_, h)| h.count)
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn observe_event_latency(&self, ms: u64) {
        self.latency_ms_sum.fetch_add(ms, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(m) = self.counters.lock() {
            let mut last = String::new();
            for ((name, labels), v) in m.iter() {
                if *name != last {
                    out.push_str(&format!("# TYPE cgc_{name} counter\n"));
                    last = name.clone();
                }
                if labels.is_empty() {
                    out.push_str(&format!("cgc_{name} {v}\n"));
                } else {
                    out.push_str(&format!("cgc_{name}{{{labels}}} {v}\n"));
                }
            }
        }
        if let Ok(m) = self.gauges.lock() {
            let mut last = String::new();
            for ((name, labels), v) in m.iter() {
                if *name != last {
                    out.push_str(&format!("# TYPE cgc_{name} gauge\n"));
                    last = name.clone();
                }
                if labels.is_empty() {
                    out.push_str(&format!("cgc_{name} {v}\n"));
                } else {
                    out.push_str(&format!("cgc_{name}{{{labels}}} {v}\n"));
                }
            }
        }
        if let Ok(m) = self.histograms.lock() {
            let mut last = String::new();
            for ((name, labels), h) in m.iter() {
                if *name != last {
                    out.push_str(&format!("# TYPE cgc_{name} histogram\n"));
                    last = name.clone();
                }
                h.render(&mut out, name, labels);
            }
        }
        out.push_str("# TYPE cgc_event_latency_ms summary\n");
        out.push_str(&format!(
            "cgc_event_latency_ms_sum {}\ncgc_event_latency_ms_count {}\n",
            self.latency_ms_sum.load(Ordering::Relaxed),
            self.latency_count.load(Ordering::Relaxed)
        ));
        out
    }
}

/// Upper bounds (seconds) of every histogram's buckets: 5 ms to 10 minutes.
pub const BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// One histogram series: counts per bucket (not cumulative), sum and count.
#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn record(&mut self, seconds: f64) {
        let v = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            out.push_str(&format!(
                "cgc_{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}\n"
            ));
        }
        out.push_str(&format!(
            "cgc_{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n",
            self.count
        ));
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        out.push_str(&format!("cgc_{name}_sum{braces} {}\n", self.sum));
        out.push_str(&format!("cgc_{name}_count{braces} {}\n", self.count));
    }
}

/// Longest part of an id that reaches a log line.
pub const LOGGED_ID_CHARS: usize = 48;

/// An id as it may appear in a log line: at most [`LOGGED_ID_CHARS`] characters, control
/// characters (a newline could forge a log line) replaced.
pub fn loggable_id(id: &str) -> String {
    let mut out: String = id
        .chars()
        .take(LOGGED_ID_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if id.chars().count() > LOGGED_ID_CHARS {
        out.push('…');
    }
    out
}

/// Records the entity and item an event is about in `span` (fields `entity`, `item`).
pub fn record_subject(span: &tracing::Span, ev: &crate::event::EventV1) {
    use crate::event::EventKind;
    let (entity, item) = match &ev.kind {
        EventKind::GraphItem {
            entity, item_id, ..
        } => (Some(entity.as_str()), Some(loggable_id(item_id))),
        EventKind::CrmRecord { entity, crm_id, .. } => {
            (Some(entity.as_str()), Some(crm_id.to_string()))
        }
        EventKind::Resolve { conflict_id, .. } => (None, Some(loggable_id(conflict_id))),
        EventKind::Lifecycle {
            subscription_id, ..
        } => (None, Some(loggable_id(subscription_id))),
    };
    if let Some(e) = entity {
        span.record("entity", e);
    }
    if let Some(i) = item {
        span.record("item", i.as_str());
    }
}

/// Dropped notifications are logged as a summary at most once a second, not a line each.
#[derive(Default)]
pub struct DropLog {
    inner: Mutex<(Option<Instant>, BTreeMap<&'static str, u64>, Option<String>)>,
}

impl DropLog {
    pub(crate) fn note(&self, reason: &'static str, subscription: &str) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        *g.1.entry(reason).or_insert(0) += 1;
        if g.2.is_none() {
            g.2 = Some(loggable_id(subscription));
        }
        let due = g.0.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            let counts: Vec<String> = g.1.iter().map(|(r, n)| format!("{r}={n}")).collect();
            tracing::warn!(dropped = %counts.join(" "), example_subscription = %g.2.as_deref().unwrap_or(""),
                "notifications dropped since the last summary");
            g.0 = Some(Instant::now());
            g.1.clear();
            g.2 = None;
        }
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn logs_are_json_off_a_terminal_and_text_on_one_unless_cgc_log_json_says() {
        assert!(json_logs(None, false), "a container: JSON");
        assert!(!json_logs(None, true), "a terminal: text");
        assert!(json_logs(Some("1"), true));
        assert!(!json_logs(Some("0"), false));
        assert!(
            json_logs(Some("yes"), false),
            "an unknown value: the default"
        );
    }

    #[test]
    fn ids_in_log_lines_are_truncated_and_cannot_forge_a_line() {
        assert_eq!(loggable_id("abc"), "abc");
        let forged = "sub\n2026-12-03T00:00:00Z ERROR admin token leaked";
        let l = loggable_id(forged);
        assert!(!l.contains('\n'), "{l}");
        assert!(l.starts_with("sub?2026"), "{l}");
        let long = "x".repeat(5000);
        let l = loggable_id(&long);
        assert_eq!(l.chars().count(), LOGGED_ID_CHARS + 1);
        assert!(l.ends_with('…'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_prometheus_text() {
        let m = Metrics::default();
        m.inc("notifications_total", &[("outcome", "accepted")]);
        m.add("notifications_total", &[("outcome", "accepted")], 2);
        m.inc("notifications_total", &[("outcome", "rejected")]);
        assert_eq!(m.get("notifications_total", &[("outcome", "accepted")]), 3);
        assert_eq!(m.total("notifications_total"), 4);
        let text = m.render();
        assert!(
            text.contains("cgc_notifications_total{outcome=\"accepted\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let m = Metrics::default();
        m.observe("graph_request_seconds", &[("status", "200")], 0.003);
        m.observe("graph_request_seconds", &[("status", "200")], 0.2);
        m.observe("graph_request_seconds", &[("status", "200")], 9999.0);
        assert_eq!(m.observations("graph_request_seconds"), 3);
        let text = m.render();
        assert!(
            text.contains("# TYPE cgc_graph_request_seconds histogram"),
            "{text}"
        );
        for line in [
            "cgc_graph_request_seconds_bucket{status=\"200\",le=\"0.005\"} 1",
            "cgc_graph_request_seconds_bucket{status=\"200\",le=\"0.25\"} 2",
            "cgc_graph_request_seconds_bucket{status=\"200\",le=\"600\"} 2",
            "cgc_graph_request_seconds_bucket{status=\"200\",le=\"+Inf\"} 3",
            "cgc_graph_request_seconds_count{status=\"200\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in {text}");
        }
    }

    #[test]
    fn gauges_go_up_and_down_and_render_as_gauges() {
        let m = Metrics::default();
        m.set_gauge("mailbox_held", &[("tenant", "t"), ("mailbox", "a@x")], 1);
        assert_eq!(
            m.gauge("mailbox_held", &[("tenant", "t"), ("mailbox", "a@x")]),
            1
        );
        let text = m.render();
        assert!(text.contains("# TYPE cgc_mailbox_held gauge"), "{text}");
        assert!(
            text.contains("cgc_mailbox_held{tenant=\"t\",mailbox=\"a@x\"} 1"),
            "{text}"
        );
        m.set_gauge("mailbox_held", &[("tenant", "t"), ("mailbox", "a@x")], 0);
        assert_eq!(
            m.gauge("mailbox_held", &[("tenant", "t"), ("mailbox", "a@x")]),
            0
        );
    }

    #[test]
    fn the_last_error_of_each_mailbox_is_kept() {
        let m = Metrics::default();
        let a = [("tenant", "t"), ("mailbox", "a@x")];
        assert_eq!(m.last_error(&a), None);
        events::EventRetried {
            tenant: "t",
            mailbox: "a@x",
            attempt: 1,
            delay: Duration::from_secs(1),
            reason: "CRM record locked",
        }
        .emit(&m);
        assert_eq!(m.last_error(&a).unwrap().1, "CRM record locked");
        m.note_error(&a, &"x".repeat(2000));
        assert_eq!(
            m.last_error(&a).unwrap().1.len(),
            500,
            "a long reason is cut"
        );
        assert_eq!(m.last_error(&[("tenant", "t"), ("mailbox", "b@x")]), None);
    }
}
