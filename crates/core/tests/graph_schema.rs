//! `to_graph` bodies use only properties the Graph v1.0 schema declares, with the right JSON types
//! (checked against tests/fixtures/graph-schema-subset.json, flattened from the project's
//! shared/protocols/graph-v1.0-schema.json).

mod common;

use cgc_core::*;
use serde_json::{Value, json};

fn schema() -> Value {
    serde_json::from_str(include_str!("fixtures/graph-schema-subset.json")).expect("fixture parses")
}

fn check(schema: &Value, ty: &str, v: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(props) = schema["types"][ty].as_object() else {
        errors.push(format!("{path}: type {ty} missing from the fixture"));
        return;
    };
    let Some(obj) = v.as_object() else {
        errors.push(format!("{path}: expected an object of type {ty}"));
        return;
    };
    for (k, val) in obj {
        if k.contains('@') {
            continue;
        }
        let Some(p) = props.get(k) else {
            errors.push(format!("{path}.{k}: not a property of {ty}"));
            continue;
        };
        let pty = p["type"].as_str().unwrap_or("");
        let nullable = p["nullable"].as_bool().unwrap_or(true);
        let items: Vec<&Value> = if p["collection"].as_bool().unwrap_or(false) {
            match val.as_array() {
                Some(a) => a.iter().collect(),
                None if val.is_null() && nullable => continue,
                None => {
                    errors.push(format!("{path}.{k}: expected an array"));
                    continue;
                }
            }
        } else {
            vec![val]
        };
        for item in items {
            let here = format!("{path}.{k}");
            if item.is_null() {
                if !nullable {
                    errors.push(format!("{here}: null not allowed"));
                }
                continue;
            }
            let ok = match pty {
                "Edm.String" => item.is_string(),
                "Edm.Boolean" => item.is_boolean(),
                "Edm.Int32" => item.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                "Edm.DateTimeOffset" => item
                    .as_str()
                    .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
                other if schema["enums"][other].is_array() => item.as_str().is_some_and(|s| {
                    schema["enums"][other]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|x| x == s))
                }),
                other => {
                    check(schema, other, item, &here, errors);
                    true
                }
            };
            if !ok {
                errors.push(format!("{here}: {item} is not a valid {pty}"));
            }
        }
    }
}

fn full(entity: Entity) -> Vec<Canonical> {
    let ctx = common::ctx();
    match entity {
        Entity::Appointment => {
            let (shadow, _, _) = common::linked_appointment();
            let all_day = shadow
                .clone()
                .with("all_day", true)
                .with("start", "2026-12-24")
                .with("end", "2026-12-25")
                .with("reminder", Value::Null);
            vec![shadow, all_day, Canonical::new()]
        }
        Entity::Contact => vec![
            Canonical::new()
                .with("given_name", "Ana")
                .with("email", "ana@customer.test")
                .with("business_phone", "+1 555"),
            Canonical::new(),
        ],
        Entity::Task => vec![
            from_crm(
                Entity::Task,
                &CrmFields::from([
                    ("Subject".to_string(), "x".to_string()),
                    ("DueDate".to_string(), "2026-11-30".to_string()),
                    ("Status".to_string(), "Cancelled".to_string()),
                ]),
                &ctx,
            )
            .expect("maps"),
            Canonical::new(),
        ],
        Entity::Email => vec![
            Canonical::new()
                .with("subject", "Offer")
                .with("sent", "2026-11-20T15:04Z")
                .with("people", json!(["a@b.test"])),
            Canonical::new(),
        ],
    }
}

#[test]
fn to_graph_bodies_match_the_graph_schema() {
    let schema = schema();
    let mut errors = Vec::new();
    for (entity, ty) in [
        (Entity::Appointment, "event"),
        (Entity::Contact, "contact"),
        (Entity::Task, "todoTask"),
        (Entity::Email, "message"),
    ] {
        for c in full(entity) {
            let body = to_graph(entity, &c, None);
            check(&schema, ty, &body, ty, &mut errors);
            // and every single-field patch
            for f in entity.fields() {
                let patch = to_graph(entity, &c, Some(&[f.to_string()]));
                assert!(
                    patch.as_object().is_some_and(|o| !o.is_empty()),
                    "{entity}.{f} gives an empty patch"
                );
                check(&schema, ty, &patch, &format!("{ty}[{f}]"), &mut errors);
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_schema_check_catches_mistakes() {
    let schema = schema();
    let mut errors = Vec::new();
    check(
        &schema,
        "event",
        &json!({"subject": 5, "colour": "red", "showAs": "away", "start": {"dateTime": "x", "zone": "UTC"}}),
        "event",
        &mut errors,
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
}
