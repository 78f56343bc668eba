//! CRM fields <-> canonical.

use super::time::{local_to_utc, parse_crm_date, parse_crm_time, utc_to_local};
use super::{MapContext, MapError, is_all_day, wants, wants_time_group};
use crate::model::normalize::{
    addresses_of, attendees_value, format_date, format_instant, people_value, text_value,
    value_date, value_instant,
};
use crate::model::{Canonical, CrmFields, Entity};
use chrono::{NaiveDate, NaiveTime};
use serde_json::{Value, json};

const SHOW_AS_CRM: &[(&str, &str)] = &[
    ("free", "Free"),
    ("tentative", "Tentative"),
    ("busy", "Busy"),
    ("oof", "Out of office"),
    ("workingElsewhere", "Working elsewhere"),
];
const PRIORITY_CRM: &[(&str, &str)] = &[("low", "Low"), ("normal", "Normal"), ("high", "High")];
const TASK_STATUS_CRM: &[(&str, &str)] = &[
    ("open", "Open"),
    ("in-progress", "In progress"),
    ("completed", "Completed"),
    ("on-hold", "On hold"),
    ("cancelled", "Cancelled"),
];

fn get<'a>(f: &'a CrmFields, key: &str) -> &'a str {
    f.get(key).map(|s| s.trim()).unwrap_or("")
}

fn catalog(
    f: &CrmFields,
    key: &str,
    table: &[(&str, &str)],
    default: &str,
) -> Result<Value, MapError> {
    let v = get(f, key);
    if v.is_empty() {
        return Ok(json!(default));
    }
    table
        .iter()
        .find(|(_, crm)| crm.eq_ignore_ascii_case(v))
        .map(|(canon, _)| json!(canon))
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(_, c)| *c).collect();
            MapError::bad(key, v, &format!("expected one of {}", names.join(", ")))
        })
}

fn to_catalog(v: &Value, table: &[(&str, &str)], default: &str) -> String {
    let s = v.as_str().unwrap_or(default);
    table
        .iter()
        .find(|(canon, _)| *canon == s)
        .or_else(|| table.iter().find(|(canon, _)| *canon == default))
        .map(|(_, crm)| (*crm).to_string())
        .unwrap_or_default()
}

fn boolean(f: &CrmFields, key: &str) -> Result<bool, MapError> {
    match get(f, key).to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" => Ok(false),
        "true" | "1" | "yes" => Ok(true),
        other => Err(MapError::bad(key, other, "expected true or false")),
    }
}

fn date(f: &CrmFields, key: &str) -> Result<Option<NaiveDate>, MapError> {
    let v = get(f, key);
    if v.is_empty() {
        return Ok(None);
    }
    parse_crm_date(v)
        .map(Some)
        .ok_or_else(|| MapError::bad(key, v, "expected a date YYYY-MM-DD"))
}

fn time(f: &CrmFields, key: &str) -> Result<Option<NaiveTime>, MapError> {
    let v = get(f, key);
    if v.is_empty() {
        return Ok(None);
    }
    parse_crm_time(v)
        .map(Some)
        .ok_or_else(|| MapError::bad(key, v, "expected a time HH:MM or HH:MM:SS"))
}

fn date_value(d: Option<NaiveDate>) -> Value {
    d.map(|d| json!(format_date(d))).unwrap_or(Value::Null)
}

fn split_addresses(s: &str) -> impl Iterator<Item = &str> {
    s.split([';', ',']).map(str::trim).filter(|a| !a.is_empty())
}

fn people_fields(out: &mut CrmFields, addresses: Vec<String>, ctx: &MapContext) {
    let (known, missing): (Vec<String>, Vec<String>) = addresses
        .into_iter()
        .partition(|a| ctx.known_person_emails.contains(&a.to_lowercase()));
    out.insert("Participants".into(), known.join(";"));
    out.insert(
        "ConnectorMissingparticipants".into(),
        (!missing.is_empty()).to_string(),
    );
    out.insert("MissingParticipants".into(), missing.join(";"));
}

fn minutes(f: &CrmFields) -> Result<Value, MapError> {
    let dur = get(f, "ReminderDur");
    if dur.is_empty() {
        return Ok(Value::Null);
    }
    let n: f64 = dur
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| MapError::bad("ReminderDur", dur, "expected a non-negative number"))?;
    let factor = match get(f, "ReminderUnit").to_ascii_lowercase().as_str() {
        "" | "min" | "m" => 1.0,
        "h" => 60.0,
        "d" => 1440.0,
        other => return Err(MapError::bad("ReminderUnit", other, "expected min, h or d")),
    };
    Ok(json!((n * factor).round() as u64))
}

/// Canonical form of a CRM record's fields. Appointment dates and times are read in
/// `ctx.crm_zone`; an appointment with a `Date` but empty `Time` and `EndTime` is all-day.
pub fn from_crm(
    entity: Entity,
    fields: &CrmFields,
    ctx: &MapContext,
) -> Result<Canonical, MapError> {
    let f = fields;
    let mut c = Canonical::new();
    match entity {
        Entity::Appointment => {
            c.set("subject", text_value(get(f, "Subject")));
            c.set("body", text_value(get(f, "Text")));
            let start_date = date(f, "Date")?;
            let start_time = time(f, "Time")?;
            let end_date = date(f, "EndDate")?;
            let end_time = time(f, "EndTime")?;
            let all_day = start_date.is_some() && start_time.is_none() && end_time.is_none();
            c.set("all_day", json!(all_day));
            if let Some(sd) = start_date {
                if all_day {
                    let ed = end_date.filter(|e| *e >= sd).unwrap_or(sd);
                    c.set("start", date_value(Some(sd)));
                    c.set("end", date_value(Some(ed)));
                } else {
                    let st = start_time.unwrap_or(NaiveTime::MIN);
                    let start = local_to_utc(sd.and_time(st), ctx.crm_zone);
                    c.set("start", json!(format_instant(start)));
                    let ed = end_date.unwrap_or(sd);
                    let et = end_time.unwrap_or(st);
                    let end = local_to_utc(ed.and_time(et), ctx.crm_zone);
                    c.set("end", json!(format_instant(end.max(start))));
                }
            }
            c.set("location", text_value(get(f, "A031Location")));
            c.set("show_as", catalog(f, "ShowAs", SHOW_AS_CRM, "busy")?);
            c.set("private", json!(boolean(f, "Private")?));
            c.set(
                "importance",
                catalog(f, "Priority", PRIORITY_CRM, "normal")?,
            );
            c.set("reminder", minutes(f)?);
            let addresses = split_addresses(get(f, "Participants"))
                .chain(split_addresses(get(f, "MissingParticipants")));
            c.set(
                "attendees",
                attendees_value(addresses.map(|a| (a, None::<&str>))),
            );
            c.set(
                "cancelled",
                json!(get(f, "Status").eq_ignore_ascii_case("cancelled")),
            );
        }
        Entity::Contact => {
            c.set("given_name", text_value(get(f, "FirstName")));
            c.set("surname", text_value(get(f, "LastName")));
            let email = crate::model::normalize::normalize_email(get(f, "EMail"));
            c.set("email", email.map(Value::String).unwrap_or(Value::Null));
            c.set("business_phone", text_value(get(f, "PhoneBusiness")));
            c.set("mobile_phone", text_value(get(f, "PhoneMobile")));
            c.set("job_title", text_value(get(f, "JobTitle")));
            c.set("company", text_value(get(f, "Company")));
        }
        Entity::Task => {
            c.set("title", text_value(get(f, "Subject")));
            c.set("body", text_value(get(f, "Text")));
            c.set("start", date_value(date(f, "StartDate")?));
            c.set("due", date_value(date(f, "DueDate")?));
            c.set("status", catalog(f, "Status", TASK_STATUS_CRM, "open")?);
            c.set("completed", date_value(date(f, "CompletedDate")?));
            c.set(
                "importance",
                catalog(f, "Priority", PRIORITY_CRM, "normal")?,
            );
        }
        Entity::Email => {
            c.set("subject", text_value(get(f, "Subject")));
            c.set("body", text_value(get(f, "Text")));
            if let Some(d) = date(f, "Date")? {
                let t = time(f, "Time")?.unwrap_or(NaiveTime::MIN);
                c.set(
                    "sent",
                    json!(format_instant(local_to_utc(d.and_time(t), ctx.crm_zone))),
                );
            }
            let addresses = split_addresses(get(f, "Participants"))
                .chain(split_addresses(get(f, "MissingParticipants")));
            c.set("people", people_value(addresses));
        }
    }
    Ok(c)
}

fn text_out(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// CRM fields for the given canonical fields (all when None). Appointments: `Date`/`Time`/
/// `EndDate`/`EndTime` in `ctx.crm_zone` (any time-group field writes all four; all-day leaves the
/// times empty and `EndDate` is the last day); attendees split into `Participants` (known persons)
/// and `MissingParticipants` (+ `ConnectorMissingparticipants` = true|false). E-mails always carry
/// `Contact` = `E-mail`.
pub fn to_crm(
    entity: Entity,
    c: &Canonical,
    only: Option<&[String]>,
    ctx: &MapContext,
) -> CrmFields {
    let mut out = CrmFields::new();
    let w = |f: &str| wants(only, f);
    let put = |out: &mut CrmFields, k: &str, v: String| {
        out.insert(k.to_string(), v);
    };
    match entity {
        Entity::Appointment => {
            if w("subject") {
                put(&mut out, "Subject", text_out(c.get("subject")));
            }
            if w("body") {
                put(&mut out, "Text", text_out(c.get("body")));
            }
            if wants_time_group(only) {
                let all_day = is_all_day(c);
                for (field, dkey, tkey) in
                    [("start", "Date", "Time"), ("end", "EndDate", "EndTime")]
                {
                    let v = c.get(field);
                    if v.is_null() && !w(field) {
                        continue;
                    }
                    let (d, t) = if all_day {
                        (
                            value_date(v).map(format_date).unwrap_or_default(),
                            String::new(),
                        )
                    } else {
                        match value_instant(v) {
                            Some(i) => {
                                let l = utc_to_local(i, ctx.crm_zone);
                                (
                                    l.format("%Y-%m-%d").to_string(),
                                    l.format("%H:%M").to_string(),
                                )
                            }
                            None => (String::new(), String::new()),
                        }
                    };
                    put(&mut out, dkey, d);
                    put(&mut out, tkey, t);
                }
            }
            if w("location") {
                put(&mut out, "A031Location", text_out(c.get("location")));
            }
            if w("show_as") {
                put(
                    &mut out,
                    "ShowAs",
                    to_catalog(c.get("show_as"), SHOW_AS_CRM, "busy"),
                );
            }
            if w("private") {
                put(
                    &mut out,
                    "Private",
                    c.get("private").as_bool().unwrap_or(false).to_string(),
                );
            }
            if w("importance") {
                put(
                    &mut out,
                    "Priority",
                    to_catalog(c.get("importance"), PRIORITY_CRM, "normal"),
                );
            }
            if w("reminder") {
                match c.get("reminder").as_u64() {
                    Some(n) => {
                        put(&mut out, "ReminderDur", n.to_string());
                        put(&mut out, "ReminderUnit", "min".into());
                    }
                    None => {
                        put(&mut out, "ReminderDur", String::new());
                        put(&mut out, "ReminderUnit", String::new());
                    }
                }
            }
            if w("attendees") {
                people_fields(&mut out, addresses_of(c.get("attendees")), ctx);
            }
            if w("cancelled") {
                let cancelled = c.get("cancelled").as_bool().unwrap_or(false);
                put(
                    &mut out,
                    "Status",
                    if cancelled {
                        "Cancelled".into()
                    } else {
                        String::new()
                    },
                );
            }
        }
        Entity::Contact => {
            for (field, key) in [
                ("given_name", "FirstName"),
                ("surname", "LastName"),
                ("email", "EMail"),
                ("business_phone", "PhoneBusiness"),
                ("mobile_phone", "PhoneMobile"),
                ("job_title", "JobTitle"),
                ("company", "Company"),
            ] {
                if w(field) {
                    put(&mut out, key, text_out(c.get(field)));
                }
            }
        }
        Entity::Task => {
            if w("title") {
                put(&mut out, "Subject", text_out(c.get("title")));
            }
            if w("body") {
                put(&mut out, "Text", text_out(c.get("body")));
            }
            for (field, key) in [
                ("start", "StartDate"),
                ("due", "DueDate"),
                ("completed", "CompletedDate"),
            ] {
                if w(field) {
                    put(
                        &mut out,
                        key,
                        value_date(c.get(field))
                            .map(format_date)
                            .unwrap_or_default(),
                    );
                }
            }
            if w("status") {
                put(
                    &mut out,
                    "Status",
                    to_catalog(c.get("status"), TASK_STATUS_CRM, "open"),
                );
            }
            if w("importance") {
                put(
                    &mut out,
                    "Priority",
                    to_catalog(c.get("importance"), PRIORITY_CRM, "normal"),
                );
            }
        }
        Entity::Email => {
            if w("subject") {
                put(&mut out, "Subject", text_out(c.get("subject")));
            }
            if w("body") {
                put(&mut out, "Text", text_out(c.get("body")));
            }
            if w("sent") {
                let (d, t) = match value_instant(c.get("sent")) {
                    Some(i) => {
                        let l = utc_to_local(i, ctx.crm_zone);
                        (
                            l.format("%Y-%m-%d").to_string(),
                            l.format("%H:%M").to_string(),
                        )
                    }
                    None => (String::new(), String::new()),
                };
                put(&mut out, "Date", d);
                put(&mut out, "Time", t);
            }
            if w("people") {
                people_fields(&mut out, addresses_of(c.get("people")), ctx);
            }
            put(&mut out, "Contact", "E-mail".into());
        }
    }
    out
}
