//! How the simulator shapes item bodies: HTML bodies, time zones, known and read-only
//! properties, recurrence expansion.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc, Weekday};
use serde_json::{Map, Value, json};

use super::state::{ApiError, Kind, View};
use crate::body::{html_to_text, text_to_html};
use crate::tz::{format_graph_local, local_to_utc, parse_naive, resolve_zone};

// ---------------------------------------------------------------------------- properties

const EVENT_PROPS: &[&str] = &[
    "allowNewTimeProposals",
    "attendees",
    "body",
    "bodyPreview",
    "cancelledOccurrences",
    "end",
    "hasAttachments",
    "hideAttendees",
    "iCalUId",
    "importance",
    "isAllDay",
    "isCancelled",
    "isDraft",
    "isOnlineMeeting",
    "isOrganizer",
    "isReminderOn",
    "location",
    "locations",
    "onlineMeeting",
    "onlineMeetingProvider",
    "onlineMeetingUrl",
    "organizer",
    "originalEndTimeZone",
    "originalStart",
    "originalStartTimeZone",
    "recurrence",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "responseStatus",
    "sensitivity",
    "seriesMasterId",
    "showAs",
    "start",
    "subject",
    "transactionId",
    "type",
    "webLink",
    "categories",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "id",
];
const CONTACT_PROPS: &[&str] = &[
    "assistantName",
    "birthday",
    "businessAddress",
    "businessHomePage",
    "businessPhones",
    "children",
    "companyName",
    "department",
    "displayName",
    "emailAddresses",
    "fileAs",
    "generation",
    "givenName",
    "homeAddress",
    "homePhones",
    "imAddresses",
    "initials",
    "jobTitle",
    "manager",
    "middleName",
    "mobilePhone",
    "nickName",
    "officeLocation",
    "otherAddress",
    "parentFolderId",
    "personalNotes",
    "primaryEmailAddress",
    "profession",
    "secondaryEmailAddress",
    "spouseName",
    "surname",
    "tertiaryEmailAddress",
    "title",
    "yomiCompanyName",
    "yomiGivenName",
    "yomiSurname",
    "categories",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "id",
];
const TASK_PROPS: &[&str] = &[
    "body",
    "bodyLastModifiedDateTime",
    "categories",
    "completedDateTime",
    "createdDateTime",
    "dueDateTime",
    "hasAttachments",
    "importance",
    "isReminderOn",
    "lastModifiedDateTime",
    "recurrence",
    "reminderDateTime",
    "startDateTime",
    "status",
    "title",
    "id",
];
const MESSAGE_PROPS: &[&str] = &[
    "bccRecipients",
    "body",
    "bodyPreview",
    "ccRecipients",
    "conversationId",
    "conversationIndex",
    "flag",
    "from",
    "hasAttachments",
    "importance",
    "inferenceClassification",
    "internetMessageHeaders",
    "internetMessageId",
    "isDeliveryReceiptRequested",
    "isDraft",
    "isRead",
    "isReadReceiptRequested",
    "parentFolderId",
    "receivedDateTime",
    "replyTo",
    "sender",
    "sentDateTime",
    "subject",
    "toRecipients",
    "uniqueBody",
    "webLink",
    "categories",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "id",
];
/// Navigation properties accepted inline (stored or ignored).
const NAVIGATION: &[&str] = &[
    "singleValueExtendedProperties",
    "multiValueExtendedProperties",
    "extensions",
    "attachments",
    "linkedResources",
    "checklistItems",
];
/// Properties the service computes: ignored in an app's POST or PATCH.
const READ_ONLY: &[&str] = &[
    "id",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "bodyPreview",
    "iCalUId",
    "type",
    "seriesMasterId",
    "originalStart",
    "webLink",
    "isOrganizer",
    "responseStatus",
    "hasAttachments",
    "parentFolderId",
    "cancelledOccurrences",
    "onlineMeeting",
    "onlineMeetingUrl",
    "bodyLastModifiedDateTime",
    "conversationId",
    "conversationIndex",
];

fn known(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Event => EVENT_PROPS,
        Kind::Contact => CONTACT_PROPS,
        Kind::Task => TASK_PROPS,
        Kind::Message => MESSAGE_PROPS,
    }
}

/// 400 for a property the type does not have (line 7); annotations (`@...`) are skipped.
pub(crate) fn check_known(kind: Kind, input: &Map<String, Value>) -> Result<(), ApiError> {
    for k in input.keys() {
        if k.contains('@') || known(kind).contains(&k.as_str()) || NAVIGATION.contains(&k.as_str())
        {
            continue;
        }
        let ty = match kind {
            Kind::Event => "event",
            Kind::Contact => "contact",
            Kind::Task => "todoTask",
            Kind::Message => "message",
        };
        return Err(ApiError::new(
            400,
            "RequestBodyRead",
            format!(
                "The property '{k}' does not exist on type 'microsoft.graph.{ty}'. Make sure to only use property names that are defined by the type or mark the type as open type."
            ),
        ));
    }
    Ok(())
}

/// Whether an app write ignores this key (read-only, line 7).
pub(crate) fn read_only(key: &str) -> bool {
    READ_ONLY.contains(&key)
}

// ---------------------------------------------------------------------------- bodies

/// A body as written -> (stored body, the text it was written as). Text becomes Exchange HTML.
pub(crate) fn normalize_body(v: &Value) -> Result<(Value, Option<String>), ApiError> {
    let Value::Object(b) = v else {
        if v.is_null() {
            return Ok((
                json!({ "contentType": "html", "content": text_to_html("") }),
                Some(String::new()),
            ));
        }
        return Err(ApiError::bad("body must be an itemBody object."));
    };
    let content = match b.get("content") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ApiError::bad("body.content must be a string.")),
    };
    let ty = b
        .get("contentType")
        .and_then(Value::as_str)
        .unwrap_or("text");
    if ty.eq_ignore_ascii_case("html") {
        Ok((json!({ "contentType": "html", "content": content }), None))
    } else if ty.eq_ignore_ascii_case("text") {
        Ok((
            json!({ "contentType": "html", "content": text_to_html(content) }),
            Some(content.to_string()),
        ))
    } else {
        Err(ApiError::bad("body.contentType must be text or html."))
    }
}

/// Plain-text preview (255 characters) of a stored body.
pub(crate) fn preview(body: Option<&Value>) -> String {
    let content = body.and_then(|b| b["content"].as_str()).unwrap_or("");
    let text = html_to_text(content);
    let folded: Vec<&str> = text.split_whitespace().collect();
    folded.join(" ").chars().take(255).collect()
}

pub(crate) fn render_body(m: &mut Map<String, Value>, text: Option<&str>, view: &View) {
    if !view.text_body {
        return;
    }
    let Some(Value::Object(b)) = m.get("body") else {
        return;
    };
    let content = match text {
        Some(t) => t.to_string(),
        None => html_to_text(b.get("content").and_then(Value::as_str).unwrap_or("")),
    };
    m.insert(
        "body".into(),
        json!({ "contentType": "text", "content": content }),
    );
}

// ---------------------------------------------------------------------------- times

/// The zone responses use: the `Prefer: outlook.timezone` one when it names a zone, else UTC.
fn out_zone(view: &View) -> (chrono_tz::Tz, String) {
    match view.tz.as_deref().map(str::trim).filter(|z| !z.is_empty()) {
        Some(z) => match resolve_zone(z) {
            Some(tz) => (tz, z.to_string()),
            None => (chrono_tz::Tz::UTC, "UTC".into()),
        },
        None => (chrono_tz::Tz::UTC, "UTC".into()),
    }
}

/// A stored `dateTimeTimeZone` in the response zone (all-day values are floating dates).
pub(crate) fn render_dt(v: &Value, all_day: bool, view: &View) -> Value {
    let (zone, label) = out_zone(view);
    let Some(local) = v
        .get("dateTime")
        .and_then(Value::as_str)
        .and_then(parse_naive)
    else {
        return v.clone();
    };
    if all_day {
        return json!({ "dateTime": format_graph_local(local), "timeZone": label });
    }
    let src = v
        .get("timeZone")
        .and_then(Value::as_str)
        .and_then(resolve_zone)
        .unwrap_or(chrono_tz::Tz::UTC);
    let utc = local_to_utc(local, src);
    json!({ "dateTime": format_graph_local(utc.with_timezone(&zone).naive_local()), "timeZone": label })
}

pub(crate) fn render_times(m: &mut Map<String, Value>, view: &View) {
    let all_day = m.get("isAllDay") == Some(&Value::Bool(true));
    for k in ["start", "end"] {
        if let Some(v) = m.get(k).filter(|v| v.is_object()) {
            let r = render_dt(v, all_day, view);
            m.insert(k.into(), r);
        }
    }
}

/// The instant of a stored `dateTimeTimeZone` (all-day: the floating midnight read as UTC).
pub(crate) fn instant(v: &Value, all_day: bool) -> Option<DateTime<Utc>> {
    let local = parse_naive(v.get("dateTime")?.as_str()?)?;
    if all_day {
        return Some(local.and_utc());
    }
    let zone = match v.get("timeZone").and_then(Value::as_str) {
        Some(z) => resolve_zone(z)?,
        None => chrono_tz::Tz::UTC,
    };
    Some(local_to_utc(local, zone))
}

/// Checks an event's start/end after a write: readable, known zones (Windows or IANA),
/// all-day values at midnight, end not before start.
pub(crate) fn check_event_times(data: &Map<String, Value>) -> Result<(), ApiError> {
    let all_day = data.get("isAllDay") == Some(&Value::Bool(true));
    let mut span = Vec::new();
    for k in ["start", "end"] {
        let Some(v) = data.get(k) else { continue };
        let Some(dt) = v.get("dateTime").and_then(Value::as_str) else {
            return Err(ApiError::bad(format!("{k}.dateTime is required.")));
        };
        let Some(local) = parse_naive(dt) else {
            return Err(ApiError::bad(format!(
                "{k}.dateTime '{dt}' is not a valid date-time."
            )));
        };
        if let Some(z) = v.get("timeZone").and_then(Value::as_str)
            && resolve_zone(z).is_none()
        {
            return Err(ApiError::new(
                400,
                "TimeZoneNotSupportedException",
                format!(
                    "A valid TimeZone value must be specified. The following TimeZone value is not supported: '{z}'."
                ),
            ));
        }
        if all_day && local.time() != chrono::NaiveTime::MIN {
            return Err(ApiError::new(
                400,
                "ErrorPropertyValidationFailure",
                "For an all-day event, start and end must be at midnight.",
            ));
        }
        span.extend(instant(v, all_day));
    }
    if let [s, e] = span.as_slice()
        && e < s
    {
        return Err(ApiError::new(
            400,
            "ErrorPropertyValidationFailure",
            "The end of the event is before its start.",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------- recurrence

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "monday" => Weekday::Mon,
        "tuesday" => Weekday::Tue,
        "wednesday" => Weekday::Wed,
        "thursday" => Weekday::Thu,
        "friday" => Weekday::Fri,
        "saturday" => Weekday::Sat,
        "sunday" => Weekday::Sun,
        _ => return None,
    })
}

fn months_between(a: NaiveDate, b: NaiveDate) -> i64 {
    (b.year() as i64 - a.year() as i64) * 12 + b.month() as i64 - a.month() as i64
}

fn relative_match(d: NaiveDate, index: &str) -> bool {
    let nth = (d.day() - 1) / 7; // 0-based
    match index {
        "first" => nth == 0,
        "second" => nth == 1,
        "third" => nth == 2,
        "fourth" => nth == 3,
        "last" => (d + Duration::days(7)).month() != d.month(),
        _ => false,
    }
}

/// Original start (local wall clock in the series' zone) of every occurrence of `recurrence`
/// whose series starts at `first` and that begins before `until`, at most `cap` of them.
pub(crate) fn expand(
    recurrence: &Value,
    first: NaiveDateTime,
    until: NaiveDateTime,
    cap: usize,
) -> Vec<NaiveDateTime> {
    let p = &recurrence["pattern"];
    let r = &recurrence["range"];
    let interval = p["interval"].as_i64().unwrap_or(1).max(1);
    let ty = p["type"].as_str().unwrap_or("daily");
    let days: Vec<Weekday> = p["daysOfWeek"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().and_then(weekday))
                .collect()
        })
        .unwrap_or_default();
    let first_dow = p["firstDayOfWeek"]
        .as_str()
        .and_then(weekday)
        .unwrap_or(Weekday::Sun);
    let index = p["index"].as_str().unwrap_or("first").to_ascii_lowercase();
    let dom = p["dayOfMonth"].as_u64().unwrap_or(first.day() as u64) as u32;
    let month = p["month"].as_u64().unwrap_or(first.month() as u64) as u32;
    let range_start = r["startDate"]
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .unwrap_or(first.date());
    let start = range_start.max(first.date());
    let end_date = match r["type"].as_str() {
        Some("endDate") => r["endDate"]
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()),
        _ => None,
    };
    let numbered = (r["type"].as_str() == Some("numbered"))
        .then(|| r["numberOfOccurrences"].as_u64().unwrap_or(1) as usize);
    let week_start = |d: NaiveDate| d - Duration::days(d.weekday().days_since(first_dow) as i64);
    let time = first.time();
    let mut out = Vec::new();
    let mut count = 0usize;
    let mut d = start;
    let hard_stop = until.date() + Duration::days(1);
    while d < hard_stop && out.len() < cap {
        if end_date.is_some_and(|e| d > e) || numbered.is_some_and(|n| count >= n) {
            break;
        }
        let hit = match ty {
            "daily" => (d - range_start).num_days() % interval == 0,
            "weekly" => {
                let wd = if days.is_empty() {
                    vec![first.weekday()]
                } else {
                    days.clone()
                };
                wd.contains(&d.weekday())
                    && ((week_start(d) - week_start(range_start)).num_days() / 7) % interval == 0
            }
            "absoluteMonthly" => d.day() == dom && months_between(range_start, d) % interval == 0,
            "relativeMonthly" => {
                days.contains(&d.weekday())
                    && months_between(range_start, d) % interval == 0
                    && relative_match(d, &index)
            }
            "absoluteYearly" => {
                d.month() == month
                    && d.day() == dom
                    && (d.year() - range_start.year()) as i64 % interval == 0
            }
            "relativeYearly" => {
                d.month() == month
                    && days.contains(&d.weekday())
                    && (d.year() - range_start.year()) as i64 % interval == 0
                    && relative_match(d, &index)
            }
            _ => false,
        };
        if hit {
            count += 1;
            let at = d.and_time(time);
            if at < until {
                out.push(at);
            }
        }
        d += Duration::days(1);
    }
    out
}

/// The iCalUId of an occurrence: the series' Global Object Id with the instance date
/// (year, month, day) in bytes 16-19, as Exchange does.
pub(crate) fn occurrence_uid(master_uid: &str, date: NaiveDate) -> String {
    let stamp = format!("{:04X}{:02X}{:02X}", date.year(), date.month(), date.day());
    if master_uid.len() >= 40 && master_uid.is_char_boundary(32) && master_uid.is_char_boundary(40)
    {
        format!("{}{}{}", &master_uid[..32], stamp, &master_uid[40..])
    } else {
        format!("{master_uid}{stamp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        parse_naive(s).unwrap_or_default()
    }

    #[test]
    fn weekly_and_numbered_expand() {
        let r = json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"]},
                       "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 3}});
        let got = expand(
            &r,
            at("2030-01-07T09:00:00"),
            at("2031-01-01T00:00:00"),
            100,
        );
        assert_eq!(
            got,
            vec![
                at("2030-01-07T09:00:00"),
                at("2030-01-09T09:00:00"),
                at("2030-01-14T09:00:00")
            ]
        );
    }

    #[test]
    fn relative_monthly_last_friday() {
        let r = json!({"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
                       "range": {"type": "endDate", "startDate": "2030-01-01", "endDate": "2030-03-31"}});
        let got = expand(
            &r,
            at("2030-01-01T10:00:00"),
            at("2031-01-01T00:00:00"),
            100,
        );
        assert_eq!(
            got,
            vec![
                at("2030-01-25T10:00:00"),
                at("2030-02-22T10:00:00"),
                at("2030-03-29T10:00:00")
            ]
        );
    }

    #[test]
    fn occurrence_uid_differs_from_the_master() {
        let m = "040000008200E00074C5B7101A82E00800000000ABCDEF";
        let o = occurrence_uid(m, NaiveDate::from_ymd_opt(2030, 1, 7).unwrap_or_default());
        assert_eq!(o, "040000008200E00074C5B7101A82E00807EE0107ABCDEF");
    }
}
