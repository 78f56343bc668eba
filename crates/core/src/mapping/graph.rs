//! Graph JSON <-> canonical.

use super::time::{GraphDateTime, local_to_utc, parse_graph_datetime, resolve_zone};
use super::{MapContext, MapError, is_all_day, wants, wants_time_group};
use crate::model::normalize::{
    addresses_of, attendee_pairs, attendees_value, format_date, format_instant, html_to_text,
    normalize_email, normalize_text, parse_loose_instant, people_value, text_value,
    truncate_minute, value_date, value_instant,
};
use crate::model::{Canonical, Entity, IMPORTANCE, SHOW_AS};
use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use serde_json::{Map, Value, json};

type Obj = Map<String, Value>;

fn opt_str<'a>(o: &'a Obj, key: &str) -> Result<Option<&'a str>, MapError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(MapError::bad(key, other, "expected a string")),
    }
}

fn opt_bool(o: &Obj, key: &str) -> Result<Option<bool>, MapError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(MapError::bad(key, other, "expected true or false")),
    }
}

fn opt_obj<'a>(o: &'a Obj, key: &str) -> Result<Option<&'a Obj>, MapError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(MapError::bad(key, other, "expected an object")),
    }
}

fn opt_array<'a>(o: &'a Obj, key: &str) -> Result<&'a [Value], MapError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a.as_slice()),
        Some(other) => Err(MapError::bad(key, other, "expected an array")),
    }
}

fn text(o: &Obj, key: &str) -> Result<Value, MapError> {
    Ok(opt_str(o, key)?.map(text_value).unwrap_or(Value::Null))
}

/// `itemBody`: HTML reduced to text, plain text normalised.
fn body(o: &Obj, key: &str) -> Result<Value, MapError> {
    let Some(b) = opt_obj(o, key)? else {
        return Ok(Value::Null);
    };
    let content = opt_str(b, "content")
        .map_err(|_| MapError::bad(key, "content", "expected a string content"))?;
    let html = opt_str(b, "contentType")
        .map_err(|_| MapError::bad(key, "contentType", "expected text or html"))?
        .is_some_and(|t| t.eq_ignore_ascii_case("html"));
    let s = content.unwrap_or("");
    let out = if html {
        html_to_text(s)
    } else {
        normalize_text(s)
    };
    Ok(out.map(Value::String).unwrap_or(Value::Null))
}

fn enum_value(
    o: &Obj,
    key: &str,
    allowed: &[&str],
    default: &str,
    also_default: &[&str],
) -> Result<Value, MapError> {
    match opt_str(o, key)? {
        None => Ok(json!(default)),
        Some(s) if also_default.iter().any(|d| d.eq_ignore_ascii_case(s)) => Ok(json!(default)),
        Some(s) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(s))
            .map(|a| json!(a))
            .ok_or_else(|| {
                MapError::bad(key, s, &format!("expected one of {}", allowed.join(", ")))
            }),
    }
}

/// A `dateTimeTimeZone` as a UTC instant (`timeZone` missing means UTC).
fn date_time_zone(o: &Obj, key: &str) -> Result<Option<DateTime<Utc>>, MapError> {
    let Some(d) = opt_obj(o, key)? else {
        return Ok(None);
    };
    let Some(dt) =
        opt_str(d, "dateTime").map_err(|_| MapError::bad(key, "dateTime", "expected a string"))?
    else {
        return Ok(None);
    };
    let parsed = parse_graph_datetime(dt).ok_or_else(|| {
        MapError::bad(key, dt, "expected a date-time such as 2026-11-23T09:00:00")
    })?;
    match parsed {
        GraphDateTime::Absolute(a) => Ok(Some(a)),
        GraphDateTime::Local(local) => {
            let zone_name = opt_str(d, "timeZone")
                .map_err(|_| MapError::bad(key, "timeZone", "expected a string"))?
                .unwrap_or("UTC");
            // an unknown zone is read as UTC, never a reason to drop the item (the worker logs
            // it: see `time::unknown_time_zones`)
            let tz = resolve_zone(zone_name).unwrap_or(chrono_tz::Tz::UTC);
            Ok(Some(local_to_utc(local, tz)))
        }
    }
}

/// The wall-clock date written in a `dateTimeTimeZone` (no zone conversion: all-day events and
/// To Do dates are floating days).
fn floating_date(o: &Obj, key: &str) -> Result<Option<(NaiveDate, bool)>, MapError> {
    let Some(d) = opt_obj(o, key)? else {
        return Ok(None);
    };
    let Some(dt) =
        opt_str(d, "dateTime").map_err(|_| MapError::bad(key, "dateTime", "expected a string"))?
    else {
        return Ok(None);
    };
    match parse_graph_datetime(dt) {
        Some(GraphDateTime::Local(l)) => {
            Ok(Some((l.date(), l.time().num_seconds_from_midnight() == 0)))
        }
        Some(GraphDateTime::Absolute(a)) => Ok(Some((
            a.date_naive(),
            a.time().num_seconds_from_midnight() == 0,
        ))),
        None => Err(MapError::bad(
            key,
            dt,
            "expected a date-time such as 2026-11-23T00:00:00",
        )),
    }
}

fn instant(o: &Obj, key: &str) -> Result<Value, MapError> {
    Ok(date_time_zone(o, key)?
        .map(|a| json!(format_instant(truncate_minute(a))))
        .unwrap_or(Value::Null))
}

fn recipient_address(v: &Value) -> Option<&str> {
    v.get("emailAddress")?.get("address")?.as_str()
}

/// Canonical form of a Graph item.
pub fn from_graph(entity: Entity, item: &Value, _ctx: &MapContext) -> Result<Canonical, MapError> {
    let o = item.as_object().ok_or(MapError::NotAnObject)?;
    let mut c = Canonical::new();
    match entity {
        Entity::Appointment => {
            c.set("subject", text(o, "subject")?);
            c.set("body", body(o, "body")?);
            let all_day = opt_bool(o, "isAllDay")?.unwrap_or(false);
            c.set("all_day", json!(all_day));
            if all_day {
                let start = floating_date(o, "start")?.map(|(d, _)| d);
                let end = floating_date(o, "end")?
                    .map(|(d, midnight)| if midnight { d - Duration::days(1) } else { d });
                let end = match (start, end) {
                    (Some(s), Some(e)) if e < s => Some(s),
                    (Some(s), None) => Some(s),
                    (_, e) => e,
                };
                c.set(
                    "start",
                    start.map(|d| json!(format_date(d))).unwrap_or(Value::Null),
                );
                c.set(
                    "end",
                    end.map(|d| json!(format_date(d))).unwrap_or(Value::Null),
                );
            } else {
                c.set("start", instant(o, "start")?);
                c.set("end", instant(o, "end")?);
            }
            let location = opt_obj(o, "location")?;
            c.set(
                "location",
                match location {
                    Some(l) => text(l, "displayName").map_err(|_| {
                        MapError::bad("location", "displayName", "expected a string")
                    })?,
                    None => Value::Null,
                },
            );
            c.set(
                "show_as",
                enum_value(o, "showAs", SHOW_AS, "busy", &["unknown"])?,
            );
            let private =
                opt_str(o, "sensitivity")?.is_some_and(|s| s.eq_ignore_ascii_case("private"));
            c.set("private", json!(private));
            c.set(
                "importance",
                enum_value(o, "importance", IMPORTANCE, "normal", &[])?,
            );
            let reminder = if opt_bool(o, "isReminderOn")?.unwrap_or(false) {
                match o.get("reminderMinutesBeforeStart") {
                    None | Some(Value::Null) => json!(15),
                    Some(v) => json!(v.as_u64().ok_or_else(|| MapError::bad(
                        "reminderMinutesBeforeStart",
                        v,
                        "expected whole minutes"
                    ))?),
                }
            } else {
                Value::Null
            };
            c.set("reminder", reminder);
            let mut pairs = Vec::new();
            for a in opt_array(o, "attendees")? {
                let Some(address) = recipient_address(a) else {
                    continue;
                };
                let ty = a.get("type").and_then(Value::as_str);
                pairs.push((address.to_string(), ty.map(str::to_string)));
            }
            c.set("attendees", attendees_value(pairs));
            c.set(
                "cancelled",
                json!(opt_bool(o, "isCancelled")?.unwrap_or(false)),
            );
        }
        Entity::Contact => {
            c.set("given_name", text(o, "givenName")?);
            c.set("surname", text(o, "surname")?);
            let email = opt_array(o, "emailAddresses")?
                .iter()
                .filter_map(|e| e.get("address").and_then(Value::as_str))
                .find_map(normalize_email);
            c.set("email", email.map(Value::String).unwrap_or(Value::Null));
            let phone = opt_array(o, "businessPhones")?
                .iter()
                .filter_map(Value::as_str)
                .find_map(normalize_text);
            c.set(
                "business_phone",
                phone.map(Value::String).unwrap_or(Value::Null),
            );
            c.set("mobile_phone", text(o, "mobilePhone")?);
            c.set("job_title", text(o, "jobTitle")?);
            c.set("company", text(o, "companyName")?);
        }
        Entity::Task => {
            c.set("title", text(o, "title")?);
            c.set("body", body(o, "body")?);
            for (field, key) in [
                ("start", "startDateTime"),
                ("due", "dueDateTime"),
                ("completed", "completedDateTime"),
            ] {
                let d = floating_date(o, key)?.map(|(d, _)| json!(format_date(d)));
                c.set(field, d.unwrap_or(Value::Null));
            }
            let status = match opt_str(o, "status")? {
                None => "open",
                Some(s) => match s {
                    "notStarted" => "open",
                    "inProgress" => "in-progress",
                    "completed" => "completed",
                    "waitingOnOthers" | "deferred" => "on-hold",
                    other => {
                        return Err(MapError::bad(
                            "status",
                            other,
                            "expected notStarted, inProgress, completed, waitingOnOthers or deferred",
                        ));
                    }
                },
            };
            c.set("status", json!(status));
            c.set(
                "importance",
                enum_value(o, "importance", IMPORTANCE, "normal", &[])?,
            );
        }
        Entity::Email => {
            c.set("subject", text(o, "subject")?);
            c.set("body", body(o, "body")?);
            let sent = match opt_str(o, "receivedDateTime")? {
                None => Value::Null,
                Some(s) => json!(format_instant(parse_loose_instant(s).ok_or_else(|| {
                    MapError::bad("receivedDateTime", s, "expected an ISO 8601 instant")
                })?)),
            };
            c.set("sent", sent);
            let mut people: Vec<String> = Vec::new();
            if let Some(from) = o.get("from") {
                people.extend(recipient_address(from).map(str::to_string));
            }
            for key in ["toRecipients", "ccRecipients"] {
                people.extend(
                    opt_array(o, key)?
                        .iter()
                        .filter_map(recipient_address)
                        .map(str::to_string),
                );
            }
            c.set("people", people_value(people));
        }
    }
    Ok(c)
}

fn str_or_empty(v: &Value) -> Value {
    json!(v.as_str().unwrap_or(""))
}

fn text_body(v: &Value) -> Value {
    json!({"contentType": "text", "content": v.as_str().unwrap_or("")})
}

fn utc_dtz(dt: chrono::NaiveDateTime) -> Value {
    json!({"dateTime": dt.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"})
}

fn date_dtz(d: Option<NaiveDate>) -> Value {
    match d.and_then(|d| d.and_hms_opt(0, 0, 0)) {
        Some(n) => utc_dtz(n),
        None => Value::Null,
    }
}

/// Graph JSON body for the given canonical fields (all mapped fields when `only` is None).
/// Only properties declared in the Graph v1.0 schema, with the right JSON types. Bodies are
/// written as `contentType: text`; times as `timeZone: UTC`; an appointment time field carries
/// the whole time group (`start`, `end`, `isAllDay`) because Graph needs them consistent.
pub fn to_graph(entity: Entity, c: &Canonical, only: Option<&[String]>) -> Value {
    let mut o = Obj::new();
    let w = |f: &str| wants(only, f);
    match entity {
        Entity::Appointment => {
            if w("subject") {
                o.insert("subject".into(), str_or_empty(c.get("subject")));
            }
            if w("body") {
                o.insert("body".into(), text_body(c.get("body")));
            }
            if wants_time_group(only) {
                let all_day = is_all_day(c);
                for (field, key) in [("start", "start"), ("end", "end")] {
                    let v = c.get(field);
                    if v.is_null() && !w(field) {
                        continue;
                    }
                    let out = if all_day {
                        let d = value_date(v).map(|d| {
                            if field == "end" {
                                d + Duration::days(1)
                            } else {
                                d
                            }
                        });
                        date_dtz(d)
                    } else {
                        value_instant(v)
                            .map(|i| utc_dtz(i.naive_utc()))
                            .unwrap_or(Value::Null)
                    };
                    o.insert(key.into(), out);
                }
                o.insert("isAllDay".into(), json!(all_day));
            }
            if w("location") {
                o.insert(
                    "location".into(),
                    json!({"displayName": c.get("location").as_str().unwrap_or("")}),
                );
            }
            if w("show_as") {
                o.insert(
                    "showAs".into(),
                    json!(c.get("show_as").as_str().unwrap_or("busy")),
                );
            }
            if w("private") {
                let p = c.get("private").as_bool().unwrap_or(false);
                o.insert(
                    "sensitivity".into(),
                    json!(if p { "private" } else { "normal" }),
                );
            }
            if w("importance") {
                o.insert(
                    "importance".into(),
                    json!(c.get("importance").as_str().unwrap_or("normal")),
                );
            }
            if w("reminder") {
                match c.get("reminder").as_u64() {
                    Some(n) => {
                        o.insert("isReminderOn".into(), json!(true));
                        o.insert(
                            "reminderMinutesBeforeStart".into(),
                            json!(n.min(i32::MAX as u64)),
                        );
                    }
                    None => {
                        o.insert("isReminderOn".into(), json!(false));
                    }
                }
            }
            if w("attendees") {
                let list: Vec<Value> = attendee_pairs(c.get("attendees"))
                    .into_iter()
                    .map(|(a, t)| json!({"emailAddress": {"address": a}, "type": t}))
                    .collect();
                o.insert("attendees".into(), Value::Array(list));
            }
            if w("cancelled") {
                o.insert(
                    "isCancelled".into(),
                    json!(c.get("cancelled").as_bool().unwrap_or(false)),
                );
            }
        }
        Entity::Contact => {
            if w("given_name") {
                o.insert("givenName".into(), str_or_empty(c.get("given_name")));
            }
            if w("surname") {
                o.insert("surname".into(), str_or_empty(c.get("surname")));
            }
            if w("email") {
                let list = match c.get("email").as_str() {
                    Some(e) => json!([{"address": e}]),
                    None => json!([]),
                };
                o.insert("emailAddresses".into(), list);
            }
            if w("business_phone") {
                let list = match c.get("business_phone").as_str() {
                    Some(p) => json!([p]),
                    None => json!([]),
                };
                o.insert("businessPhones".into(), list);
            }
            if w("mobile_phone") {
                o.insert("mobilePhone".into(), str_or_empty(c.get("mobile_phone")));
            }
            if w("job_title") {
                o.insert("jobTitle".into(), str_or_empty(c.get("job_title")));
            }
            if w("company") {
                o.insert("companyName".into(), str_or_empty(c.get("company")));
            }
        }
        Entity::Task => {
            if w("title") {
                o.insert("title".into(), str_or_empty(c.get("title")));
            }
            if w("body") {
                o.insert("body".into(), text_body(c.get("body")));
            }
            for (field, key) in [
                ("start", "startDateTime"),
                ("due", "dueDateTime"),
                ("completed", "completedDateTime"),
            ] {
                if w(field) {
                    o.insert(key.into(), date_dtz(value_date(c.get(field))));
                }
            }
            if w("status") {
                let s = match c.get("status").as_str().unwrap_or("open") {
                    "in-progress" => "inProgress",
                    "completed" | "cancelled" => "completed",
                    "on-hold" => "waitingOnOthers",
                    _ => "notStarted",
                };
                o.insert("status".into(), json!(s));
            }
            if w("importance") {
                o.insert(
                    "importance".into(),
                    json!(c.get("importance").as_str().unwrap_or("normal")),
                );
            }
        }
        Entity::Email => {
            if w("subject") {
                o.insert("subject".into(), str_or_empty(c.get("subject")));
            }
            if w("body") {
                o.insert("body".into(), text_body(c.get("body")));
            }
            if w("sent") {
                let v = value_instant(c.get("sent"))
                    .map(|i| json!(i.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
                    .unwrap_or(Value::Null);
                o.insert("receivedDateTime".into(), v);
            }
            if w("people") {
                let list: Vec<Value> = addresses_of(c.get("people"))
                    .into_iter()
                    .map(|a| json!({"emailAddress": {"address": a}}))
                    .collect();
                o.insert("toRecipients".into(), Value::Array(list));
            }
        }
    }
    Value::Object(o)
}
