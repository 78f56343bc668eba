//! A copy of every series of [`Metrics`] at one moment, with its labels as pairs again: what
//! the OTLP metrics export sends, the same series `/metrics` renders.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{BUCKETS, Metrics};

/// One series: its name (without the `cgc_` prefix), its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series<T> {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: T,
}

/// A histogram series: counts per bucket of [`BUCKETS`] (not cumulative), and one more for the
/// observations above the last bound.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// Every series at one moment; counts are cumulative since `started`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub started: SystemTime,
    pub counters: Vec<Series<u64>>,
    pub gauges: Vec<Series<i64>>,
    pub histograms: Vec<Series<HistogramValue>>,
    /// Summaries: (sum, count).
    pub summaries: Vec<Series<(f64, u64)>>,
}

/// The label pairs of a label text (`k="v",k2="v2"`; values hold no `"`, see `label_text`).
fn labels_of(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((k, r)) = rest.split_once("=\"") {
        let Some((v, r)) = r.split_once('"') else {
            break;
        };
        out.push((k.to_string(), v.to_string()));
        rest = r.strip_prefix(',').unwrap_or(r);
    }
    out
}

impl Metrics {
    /// Every series now (a poisoned lock leaves its kind out, as `render` does).
    pub fn snapshot(&self) -> Snapshot {
        fn series<T, U>(
            m: &std::sync::Mutex<std::collections::BTreeMap<(String, String), T>>,
            f: impl Fn(&T) -> U,
        ) -> Vec<Series<U>> {
            m.lock()
                .map(|m| {
                    m.iter()
                        .map(|((name, labels), v)| Series {
                            name: name.clone(),
                            labels: labels_of(labels),
                            value: f(v),
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        let histograms = series(&self.histograms, |h| {
            let mut counts = h.buckets.to_vec();
            counts.push(h.count.saturating_sub(h.buckets.iter().sum()));
            HistogramValue {
                bounds: &BUCKETS,
                counts,
                sum: h.sum,
                count: h.count,
            }
        });
        Snapshot {
            started: self.started.0,
            counters: series(&self.counters, |v| *v),
            gauges: series(&self.gauges, |v| *v),
            histograms,
            summaries: vec![Series {
                name: super::metric::EVENT_LATENCY_MS.to_string(),
                labels: Vec::new(),
                value: (
                    self.latency_ms_sum.load(Ordering::Relaxed) as f64,
                    self.latency_count.load(Ordering::Relaxed),
                ),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_snapshot_holds_every_series_with_its_labels_as_pairs() {
        let m = Metrics::default();
        m.add("events_total", &[("outcome", "create")], 2);
        m.inc("writes_total", &[]);
        m.set_gauge(
            "mailbox_held",
            &[("tenant", "t"), ("mailbox", "a,b=\"c\"@x")],
            -3,
        );
        m.observe("sync_latency_seconds", &[("source", "delta")], 0.004);
        m.observe("sync_latency_seconds", &[("source", "delta")], 0.3);
        m.observe("sync_latency_seconds", &[("source", "delta")], 9999.0);
        m.observe_event_latency(40);
        let s = m.snapshot();
        assert_eq!(
            s.counters,
            vec![
                Series {
                    name: "events_total".into(),
                    labels: pairs(&[("outcome", "create")]),
                    value: 2
                },
                Series {
                    name: "writes_total".into(),
                    labels: vec![],
                    value: 1
                },
            ]
        );
        assert_eq!(s.gauges.len(), 1);
        assert_eq!(
            s.gauges[0].labels,
            pairs(&[("tenant", "t"), ("mailbox", "a,b=_c_@x")]),
            "the value as /metrics shows it"
        );
        assert_eq!(s.gauges[0].value, -3);
        let h = &s.histograms[0].value;
        assert_eq!(s.histograms[0].labels, pairs(&[("source", "delta")]));
        assert_eq!(h.bounds, &BUCKETS[..]);
        assert_eq!(h.counts.len(), BUCKETS.len() + 1);
        assert_eq!(h.counts[0], 1, "≤ 5 ms");
        assert_eq!(h.counts[BUCKETS.len()], 1, "above 600 s");
        assert_eq!(h.counts.iter().sum::<u64>(), 3);
        assert_eq!(h.count, 3);
        assert_eq!(s.summaries[0].name, "event_latency_ms");
        assert_eq!(s.summaries[0].value, (40.0, 1));
    }
}
