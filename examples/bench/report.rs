//! The figures of one run: a nested JSON object (dotted names are paths), the printed table and
//! the reasons for any null.

use serde_json::{Map, Value, json};

/// Every key `target/bench/bench.json` must carry (issue 13), as paths.
pub const REQUIRED: [&str; 18] = [
    "receiver.noop_per_s",
    "receiver.embedded_per_s",
    "receiver.embedded_ratio",
    "receiver.rabbitmq_per_s",
    "receiver.rabbitmq_ratio",
    "receiver.broker_ceiling_per_s",
    "receiver.p99_ms_at_5k",
    "e2e.p50_ms",
    "e2e.p99_ms",
    "e2e.max_changes_per_s",
    "cost.graph_requests_per_change",
    "cost.crm_writes_per_touch",
    "cost.graph_requests_per_duplicate",
    "cost.store_round_trips_per_change",
    "polling.graph_requests_per_day",
    "ours.graph_requests_per_day",
    "polling.ratio",
    "rss_mb.run_1000_mailboxes",
];

#[derive(Default)]
pub struct Report {
    pub root: Map<String, Value>,
    pub rows: Vec<(String, String)>,
    pub notes: Vec<String>,
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

impl Report {
    /// Sets `path` (dotted) to `v`; a non-finite value becomes null.
    pub fn set(&mut self, path: &str, v: f64) {
        self.set_value(path, finite(v));
    }

    pub fn set_value(&mut self, path: &str, v: Value) {
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut node = &mut self.root;
        for p in parts {
            let entry = node
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            node = entry.as_object_mut().expect("an object");
        }
        node.insert(last.to_string(), v);
    }

    /// A null with its reason (printed and kept in `notes`).
    pub fn null(&mut self, path: &str, why: &str) {
        self.set_value(path, Value::Null);
        self.note(&format!("{path} = null: {why}"));
    }

    pub fn note(&mut self, s: &str) {
        eprintln!("note: {s}");
        self.notes.push(s.to_string());
    }

    pub fn row(&mut self, label: &str, value: String) {
        println!("  {label:<58} {value}");
        self.rows.push((label.to_string(), value));
    }

    pub fn get(&self, path: &str) -> Option<&Value> {
        lookup(&self.root, path)
    }

    pub fn num(&self, path: &str) -> f64 {
        self.get(path).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }

    /// The document: the figures, the table rows and the notes.
    pub fn document(&self) -> Value {
        let mut doc = self.root.clone();
        doc.insert("notes".into(), json!(self.notes));
        doc.insert(
            "table".into(),
            Value::Array(self.rows.iter().map(|(k, v)| json!([k, v])).collect()),
        );
        Value::Object(doc)
    }
}

fn lookup<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = root.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// `path` in a JSON document (dotted names are nested objects).
pub fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    doc.as_object().and_then(|m| lookup(m, path))
}

/// The required keys missing from `doc` (a key holding null is present).
pub fn missing(doc: &Value) -> Vec<&'static str> {
    REQUIRED
        .iter()
        .copied()
        .filter(|k| get(doc, k).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_and_the_key_list() {
        let mut r = Report::default();
        for (i, k) in REQUIRED.iter().enumerate() {
            r.set(k, i as f64);
        }
        r.null("receiver.noop_per_s", "test");
        let doc = r.document();
        assert!(missing(&doc).is_empty(), "{:?}", missing(&doc));
        assert_eq!(get(&doc, "e2e.p99_ms"), Some(&json!(8.0)));
        assert_eq!(get(&doc, "receiver.noop_per_s"), Some(&Value::Null));
        assert_eq!(doc["notes"].as_array().map(Vec::len), Some(1));
        let mut partial = Report::default();
        partial.set("e2e.p50_ms", 1.0);
        assert_eq!(missing(&partial.document()).len(), REQUIRED.len() - 1);
    }
}
