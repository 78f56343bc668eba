//! Canonical entities: the normalised content of one item, independent of Graph and CRM spelling.

pub mod normalize;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// CRM field name -> text value ("" = empty).
pub type CrmFields = BTreeMap<String, String>;

/// The synced kinds of item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    Appointment,
    Contact,
    Task,
    Email,
}

/// Canonical appointment fields, MAPPING.md order (`kind` and `recurrence` are handled by the
/// worker: `kind` is set on create, recurrence is structural, not a field value).
pub const APPOINTMENT_FIELDS: &[&str] = &[
    "subject",
    "body",
    "start",
    "end",
    "all_day",
    "location",
    "show_as",
    "private",
    "importance",
    "reminder",
    "attendees",
    "cancelled",
];
/// Canonical contact fields, MAPPING.md order.
pub const CONTACT_FIELDS: &[&str] = &[
    "given_name",
    "surname",
    "email",
    "business_phone",
    "mobile_phone",
    "job_title",
    "company",
];
/// Canonical task fields, MAPPING.md order.
pub const TASK_FIELDS: &[&str] = &[
    "title",
    "body",
    "start",
    "due",
    "status",
    "completed",
    "importance",
];
/// Canonical archived e-mail fields, MAPPING.md order.
pub const EMAIL_FIELDS: &[&str] = &["subject", "body", "sent", "people"];

/// Appointment fields that only make sense together (Graph needs start, end and isAllDay
/// consistent; CRM derives all-day from empty times). Writes of one carry the others.
pub const TIME_GROUP: &[&str] = &["start", "end", "all_day"];

/// Canonical spelling of `show_as`.
pub const SHOW_AS: &[&str] = &["free", "tentative", "busy", "oof", "workingElsewhere"];
/// Canonical spelling of `importance`.
pub const IMPORTANCE: &[&str] = &["low", "normal", "high"];
/// Canonical spelling of task `status`.
pub const TASK_STATUS: &[&str] = &["open", "in-progress", "completed", "on-hold", "cancelled"];
/// Canonical attendee types.
pub const ATTENDEE_TYPES: &[&str] = &["required", "optional", "resource"];

/// The shape of a canonical field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Normalised text (`String`), Null when empty.
    Text,
    /// Lower-cased e-mail address.
    Email,
    /// Appointment start/end: `"YYYY-MM-DD"` when all-day, else `"YYYY-MM-DDTHH:MMZ"`.
    DateOrInstant,
    /// `"YYYY-MM-DD"`.
    Date,
    /// `"YYYY-MM-DDTHH:MMZ"`.
    Instant,
    /// `true`/`false`, never Null.
    Bool,
    /// Whole minutes (number), Null = none.
    Minutes,
    /// Sorted, de-duplicated `[{"address", "type"}]`.
    Attendees,
    /// Sorted, de-duplicated array of lower-cased addresses.
    People,
    /// One of the listed canonical spellings; never Null (defaults apply).
    Enum(&'static [&'static str]),
}

impl Entity {
    /// Every entity, in declaration order.
    pub const ALL: [Entity; 4] = [
        Entity::Appointment,
        Entity::Contact,
        Entity::Task,
        Entity::Email,
    ];

    /// `"appointment" | "contact" | "task" | "email"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Entity::Appointment => "appointment",
            Entity::Contact => "contact",
            Entity::Task => "task",
            Entity::Email => "email",
        }
    }

    /// CRM.interface XML table name.
    pub fn crm_table(&self) -> &'static str {
        match self {
            Entity::Appointment | Entity::Email => "Contact",
            Entity::Contact => "Person",
            Entity::Task => "Task",
        }
    }

    /// CRM info area (two letters).
    pub fn crm_short(&self) -> &'static str {
        match self {
            Entity::Appointment | Entity::Email => "MA",
            Entity::Contact => "KP",
            Entity::Task => "A1",
        }
    }

    /// Canonical field names, MAPPING.md order.
    pub fn fields(&self) -> &'static [&'static str] {
        match self {
            Entity::Appointment => APPOINTMENT_FIELDS,
            Entity::Contact => CONTACT_FIELDS,
            Entity::Task => TASK_FIELDS,
            Entity::Email => EMAIL_FIELDS,
        }
    }

    /// Whether `field` is one of this entity's canonical fields.
    pub fn has_field(&self, field: &str) -> bool {
        self.fields().contains(&field)
    }

    /// The value shape of a canonical field, None for an unknown field.
    pub fn field_kind(&self, field: &str) -> Option<FieldKind> {
        use FieldKind::*;
        let kind = match (self, field) {
            (Entity::Appointment, "subject" | "body" | "location") => Text,
            (Entity::Appointment, "start" | "end") => DateOrInstant,
            (Entity::Appointment, "all_day" | "private" | "cancelled") => Bool,
            (Entity::Appointment, "show_as") => Enum(SHOW_AS),
            (Entity::Appointment, "importance") => Enum(IMPORTANCE),
            (Entity::Appointment, "reminder") => Minutes,
            (Entity::Appointment, "attendees") => Attendees,
            (Entity::Contact, "email") => Email,
            (
                Entity::Contact,
                "given_name" | "surname" | "business_phone" | "mobile_phone" | "job_title"
                | "company",
            ) => Text,
            (Entity::Task, "title" | "body") => Text,
            (Entity::Task, "start" | "due" | "completed") => Date,
            (Entity::Task, "status") => Enum(TASK_STATUS),
            (Entity::Task, "importance") => Enum(IMPORTANCE),
            (Entity::Email, "subject" | "body") => Text,
            (Entity::Email, "sent") => Instant,
            (Entity::Email, "people") => People,
            _ => return None,
        };
        Some(kind)
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entity name that is not one of `appointment`, `contact`, `task`, `email`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown entity {0:?}: expected appointment, contact, task or email")]
pub struct UnknownEntity(pub String);

impl FromStr for Entity {
    type Err = UnknownEntity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "appointment" | "appointments" => Ok(Entity::Appointment),
            "contact" | "contacts" => Ok(Entity::Contact),
            "task" | "tasks" => Ok(Entity::Task),
            "email" | "emails" => Ok(Entity::Email),
            _ => Err(UnknownEntity(s.to_string())),
        }
    }
}

static NULL: Value = Value::Null;

/// Canonical, normalised content of one item: canonical field name -> JSON value (Null = empty/absent).
/// Values: text as String (trimmed, CRLF/CR folded to LF, runs of spaces/tabs folded); e-mail lower-cased;
/// instants as "YYYY-MM-DDTHH:MMZ" (UTC, to the minute); dates "YYYY-MM-DD"; bools; reminder minutes as number;
/// attendees as a sorted, de-duplicated array of {"address": "...", "type": "required|optional|resource"};
/// enums in canonical spelling (show_as: "free|tentative|busy|oof|workingElsewhere"; importance "low|normal|high";
/// task status "open|in-progress|completed|on-hold|cancelled").
///
/// All-day appointments hold dates in `start` and `end`, with `end` the last day, inclusive
/// (CRM's convention; Graph's exclusive end is converted in the mapping).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Canonical {
    pub fields: BTreeMap<String, Value>,
}

impl Canonical {
    /// An empty item.
    pub fn new() -> Self {
        Self::default()
    }

    /// The field's value, `&Value::Null` when missing.
    pub fn get(&self, field: &str) -> &Value {
        self.fields.get(field).unwrap_or(&NULL)
    }

    /// Sets a field; a Null value removes it (Null and missing mean the same).
    pub fn set(&mut self, field: &str, value: Value) {
        if value.is_null() {
            self.fields.remove(field);
        } else {
            self.fields.insert(field.to_string(), value);
        }
    }

    /// Builder form of [`Canonical::set`].
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.set(field, value.into());
        self
    }

    /// A copy without the named fields.
    pub fn without(&self, fields: &[String]) -> Canonical {
        let mut out = self.clone();
        for f in fields {
            out.fields.remove(f);
        }
        out
    }

    /// Canonical JSON text: object keys sorted at every level, Null top-level fields left out.
    pub fn canonical_json(&self) -> String {
        let mut out = String::from("{");
        let mut first = true;
        for (k, v) in &self.fields {
            if v.is_null() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            write_json_string(&mut out, k);
            out.push(':');
            write_sorted(&mut out, v);
        }
        out.push('}');
        out
    }

    /// Stable sha256 hex of the canonical JSON (independent of map ordering features).
    pub fn content_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

/// Canonical JSON text of one value: object keys sorted at every level.
pub fn canonical_value_json(v: &Value) -> String {
    let mut out = String::new();
    write_sorted(&mut out, v);
    out
}

fn write_json_string(out: &mut String, s: &str) {
    // serde_json's string escaping is deterministic; a String always serialises.
    out.push_str(&Value::String(s.to_string()).to_string());
}

fn write_sorted(out: &mut String, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, k);
                out.push(':');
                write_sorted(out, &map[k.as_str()]);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entity_names_and_tables() {
        assert_eq!(Entity::Appointment.as_str(), "appointment");
        assert_eq!(Entity::Contact.crm_table(), "Person");
        assert_eq!(Entity::Task.crm_short(), "A1");
        assert_eq!(Entity::Email.crm_table(), "Contact");
        assert_eq!("Tasks".parse::<Entity>(), Ok(Entity::Task));
        assert!("meeting".parse::<Entity>().is_err());
        assert_eq!(
            serde_json::to_value(Entity::Email).ok(),
            Some(json!("email"))
        );
        for e in Entity::ALL {
            for f in e.fields() {
                assert!(e.field_kind(f).is_some(), "{e} {f} has no kind");
            }
        }
    }

    #[test]
    fn get_missing_is_null_and_set_null_removes() {
        let mut c = Canonical::new().with("subject", "x");
        assert_eq!(c.get("subject"), &json!("x"));
        assert_eq!(c.get("body"), &Value::Null);
        c.set("subject", Value::Null);
        assert!(c.fields.is_empty());
    }

    #[test]
    fn content_hash_is_stable_and_content_sensitive() {
        let a = Canonical::new().with("subject", "Review").with(
            "attendees",
            json!([{"type": "required", "address": "a@x.test"}]),
        );
        let mut b = Canonical::new();
        b.set(
            "attendees",
            json!([{"address": "a@x.test", "type": "required"}]),
        );
        b.set("subject", json!("Review"));
        assert_eq!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash().len(), 64);
        let c = a.clone().with("subject", "Review 2");
        assert_ne!(a.content_hash(), c.content_hash());
        // a stored Null is the same as a missing field
        let mut d = a.clone();
        d.fields.insert("body".into(), Value::Null);
        assert_eq!(a.content_hash(), d.content_hash());
    }
}
