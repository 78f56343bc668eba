//! P12's model: every pair's expected value of each mapped field (the last edit), the edits a
//! user makes on either side, and reading both sides back through MAPPING.md's appointment rows.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use crm_graph_connector::demo::{Harness, MAILBOX, REP_ID};
use serde_json::{Value, json};

use super::inputs::{self, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Subject,
    Location,
    Body,
    /// `start` and `end` (a move or a new length): one field for the same-field rule.
    Time,
}

pub const FIELDS: [Field; 4] = [Field::Subject, Field::Location, Field::Body, Field::Time];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Crm,
    Outlook,
}

/// The mapped fields of one appointment, canonical (times in UTC, bodies as text).
#[derive(Clone, Debug, PartialEq)]
pub struct Values {
    pub subject: String,
    pub location: String,
    pub body: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Values {
    pub fn get(&self, f: Field) -> String {
        match f {
            Field::Subject => self.subject.clone(),
            Field::Location => self.location.clone(),
            Field::Body => self.body.clone(),
            Field::Time => format!("{} – {}", self.start, self.end),
        }
    }
}

pub struct Pair {
    /// `P12-07`: every subject of the pair starts with it (duplicates are counted by it).
    pub tag: String,
    pub crm_id: u64,
    pub ev_id: String,
    pub made_in: Side,
    pub want: Values,
    /// Every value each field had, oldest first (reverts pick from here).
    pub history: Vec<Values>,
}

/// One user edit, as the round log prints it (read through `Debug`).
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct Edit {
    pub pair: usize,
    pub side: Side,
    pub field: Field,
    pub value: String,
    pub revert: bool,
}

/// A new value for `f` of pair `p`: a revert to an earlier value (A → B → A) now and then,
/// else a fresh one that differs from the current value.
pub fn next_value(rng: &mut Rng, p: &Pair, f: Field, dst: NaiveDate) -> (Values, bool) {
    let mut v = p.want.clone();
    let earlier: Vec<&Values> = p
        .history
        .iter()
        .filter(|h| h.get(f) != p.want.get(f))
        .collect();
    let revert = !earlier.is_empty() && rng.chance(30);
    if revert {
        let old = *rng.pick(&earlier);
        match f {
            Field::Subject => v.subject = old.subject.clone(),
            Field::Location => v.location = old.location.clone(),
            Field::Body => v.body = old.body.clone(),
            Field::Time => (v.start, v.end) = (old.start, old.end),
        }
        return (v, true);
    }
    for _ in 0..20 {
        match f {
            Field::Subject => v.subject = inputs::subject(rng, &p.tag),
            Field::Location => v.location = inputs::location(rng),
            Field::Body => v.body = inputs::body(rng),
            Field::Time => {
                if rng.chance(25) {
                    // A new length only.
                    v.end = v.start + chrono::Duration::minutes(30 * (1 + rng.below(4) as i64));
                } else {
                    (v.start, v.end) = inputs::slot(rng, dst);
                }
            }
        }
        if v.get(f) != p.want.get(f) {
            break;
        }
    }
    (v, false)
}

/// Makes the edit on `side` as a user would, and records it as the pair's expected value.
pub fn apply(h: &Harness, rng: &mut Rng, p: &mut Pair, side: Side, f: Field, v: Values) {
    match side {
        Side::Crm => {
            let (date, time) = inputs::crm_date_time(v.start);
            let (end_date, end_time) = inputs::crm_date_time(v.end);
            let fields: Vec<(&str, &str)> = match f {
                Field::Subject => vec![("Subject", &v.subject)],
                Field::Location => vec![("A031Location", &v.location)],
                Field::Body => vec![("Text", &v.body)],
                Field::Time => vec![
                    ("Date", &date),
                    ("Time", &time),
                    ("EndDate", &end_date),
                    ("EndTime", &end_time),
                ],
            };
            h.crm
                .try_user_update("Contact", p.crm_id, &fields)
                .unwrap_or_else(|e| panic!("CRM user edit of {} refused: {e}", p.tag));
        }
        Side::Outlook => {
            let patch = match f {
                Field::Subject => json!({"subject": v.subject}),
                Field::Location => json!({"location": {"displayName": v.location}}),
                Field::Body => json!({"body": inputs::html_body(rng, &v.body)}),
                Field::Time => json!({
                    "start": inputs::graph_time(rng, v.start),
                    "end": inputs::graph_time(rng, v.end),
                }),
            };
            let r = h.graph.user_update_event(MAILBOX, &p.ev_id, patch);
            assert!(!r.is_null(), "Outlook user edit of {} refused", p.tag);
        }
    }
    p.want = v.clone();
    p.history.push(v);
}

/// A pair's first values, created in CRM or in Outlook (not yet linked).
pub fn create(h: &Harness, rng: &mut Rng, tag: &str, side: Side, dst: NaiveDate) -> Values {
    let (start, end) = inputs::slot(rng, dst);
    let v = Values {
        subject: inputs::subject(rng, tag),
        location: inputs::location(rng),
        body: inputs::body(rng),
        start,
        end,
    };
    match side {
        Side::Crm => {
            let (date, time) = inputs::crm_date_time(start);
            let (end_date, end_time) = inputs::crm_date_time(end);
            let id = h.crm.user_insert(
                "Contact",
                &[
                    ("Contact", "Visit"),
                    ("Subject", &v.subject),
                    ("Text", &v.body),
                    ("Date", &date),
                    ("Time", &time),
                    ("EndDate", &end_date),
                    ("EndTime", &end_time),
                    ("RepID", REP_ID),
                    ("A031Location", &v.location),
                ],
            );
            assert_ne!(id, 0, "CRM insert of {tag} refused");
        }
        Side::Outlook => {
            let r = h.graph.user_create_event(
                MAILBOX,
                json!({
                    "subject": v.subject,
                    "body": inputs::html_body(rng, &v.body),
                    "start": inputs::graph_time(rng, start),
                    "end": inputs::graph_time(rng, end),
                    "location": {"displayName": v.location},
                }),
            );
            assert!(!r.is_null(), "Outlook create of {tag} refused");
        }
    }
    v
}

/// Live CRM appointments whose subject starts with `tag` (a pair's tag).
pub fn crm_records(h: &Harness, tag: &str) -> Vec<cgc_crm::Record> {
    h.crm
        .records("Contact")
        .into_iter()
        .filter(|r| r.fields.get("DelCd").map(|d| d.trim()) != Some("1"))
        .filter(|r| {
            r.fields
                .get("Subject")
                .is_some_and(|s| s.starts_with(&format!("{tag} ")))
        })
        .collect()
}

/// Outlook events whose subject starts with `tag`.
pub fn graph_events(h: &Harness, tag: &str) -> Vec<Value> {
    h.graph
        .events(MAILBOX)
        .into_iter()
        .filter(|e| {
            e["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{tag} ")))
        })
        .collect()
}

/// The CRM record's mapped fields, canonical; `Err` names what cannot be read.
pub fn crm_values(h: &Harness, id: u64) -> Result<Values, String> {
    let r = h
        .crm
        .record("Contact", id)
        .ok_or_else(|| format!("CRM record {id} is gone"))?;
    let f = |k: &str| r.fields.get(k).cloned().unwrap_or_default();
    let at = |d: &str, t: &str| -> Result<DateTime<Utc>, String> {
        let t5 = f(t);
        let t5 = t5.get(..5).unwrap_or(&t5);
        let local = NaiveDateTime::parse_from_str(&format!("{} {t5}", f(d)), "%Y-%m-%d %H:%M")
            .map_err(|e| format!("CRM {d}/{t} {:?}/{:?}: {e}", f(d), f(t)))?;
        inputs::local_utc(local).ok_or_else(|| format!("CRM {d}/{t} {local} is not one instant"))
    };
    Ok(Values {
        subject: f("Subject"),
        location: f("A031Location"),
        body: f("Text"),
        start: at("Date", "Time")?,
        end: at("EndDate", "EndTime")?,
    })
}

/// The Outlook event's mapped fields, canonical (the simulator serves times in UTC).
pub fn graph_values(h: &Harness, id: &str) -> Result<Values, String> {
    let ev = h
        .graph
        .event(MAILBOX, id)
        .ok_or_else(|| format!("Outlook event {id} is gone"))?;
    let at = |k: &str| -> Result<DateTime<Utc>, String> {
        let dt = ev[k]["dateTime"].as_str().unwrap_or_default();
        if ev[k]["timeZone"] != "UTC" {
            return Err(format!("event {k} not in UTC: {}", ev[k]));
        }
        NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|t| t.and_utc())
            .map_err(|e| format!("event {k} {dt:?}: {e}"))
    };
    Ok(Values {
        subject: ev["subject"].as_str().unwrap_or_default().to_string(),
        location: ev["location"]["displayName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body: ev["body"]["content"]
            .as_str()
            .and_then(cgc_core::model::normalize::html_to_text)
            .unwrap_or_default(),
        start: at("start")?,
        end: at("end")?,
    })
}

/// Field by field, what differs between `want` and a side's values.
pub fn diff(side: &str, want: &Values, got: &Values) -> Vec<String> {
    FIELDS
        .iter()
        .filter(|f| want.get(**f) != got.get(**f))
        .map(|f| {
            format!(
                "{side} {f:?}: want {:?}, has {:?}",
                want.get(*f),
                got.get(*f)
            )
        })
        .collect()
}
