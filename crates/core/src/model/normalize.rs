//! Normalisation of single values into their canonical form.

use super::{ATTENDEE_TYPES, Entity, FieldKind};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

/// Canonical text: CRLF/CR -> LF, non-breaking spaces -> spaces, runs of spaces/tabs folded to
/// one space, every line trimmed, more than one blank line folded to one, whole text trimmed.
/// None when nothing is left.
pub fn normalize_text(s: &str) -> Option<String> {
    let unified = s.replace("\r\n", "\n").replace(['\r'], "\n");
    let mut lines: Vec<String> = Vec::new();
    for line in unified.split('\n') {
        let mut folded = String::with_capacity(line.len());
        let mut in_space = false;
        for ch in line.chars() {
            if ch == ' ' || ch == '\t' || ch == '\u{a0}' {
                in_space = true;
            } else {
                if in_space && !folded.is_empty() {
                    folded.push(' ');
                }
                in_space = false;
                folded.push(ch);
            }
        }
        lines.push(folded);
    }
    let mut out = String::new();
    let mut blank_run = 0usize;
    for line in lines {
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank_run > 0 {
                out.push('\n');
            }
        }
        blank_run = 0;
        out.push_str(&line);
    }
    if out.is_empty() { None } else { Some(out) }
}

/// `normalize_text` as a JSON value (Null when empty).
pub fn text_value(s: &str) -> Value {
    normalize_text(s).map(Value::String).unwrap_or(Value::Null)
}

const BLOCK_TAGS: &[&str] = &[
    "br",
    "p",
    "div",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "table",
    "blockquote",
    "pre",
    "hr",
];
const DROPPED_CONTENT: &[&str] = &["head", "style", "script", "title"];

/// HTML reduced to canonical text: comments and head/style/script content dropped, tags dropped,
/// `<br>`, `<p>` and other block tags become line breaks, entities decoded, then [`normalize_text`].
pub fn html_to_text(html: &str) -> Option<String> {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0usize;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        if bytes[i] != b'<' {
            // copy up to the next '<' (char boundaries: '<' is ASCII, so slicing is safe)
            let next = html[i..].find('<').map(|n| i + n).unwrap_or(bytes.len());
            out.push_str(&html[i..next]);
            i = next;
            continue;
        }
        if lower[i..].starts_with("<!--") {
            i = match lower[i + 4..].find("-->") {
                Some(n) => i + 4 + n + 3,
                None => bytes.len(),
            };
            continue;
        }
        let Some(close) = html[i..].find('>').map(|n| i + n) else {
            // a lone '<' is text
            out.push_str(&html[i..]);
            break;
        };
        let inner = &lower[i + 1..close];
        let is_end = inner.starts_with('/');
        let name: String = inner
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name.is_empty() && !inner.starts_with('!') && !inner.starts_with('?') && !is_end {
            // "a < b" style text, not a tag
            out.push('<');
            i += 1;
            continue;
        }
        i = close + 1;
        if !is_end && DROPPED_CONTENT.contains(&name.as_str()) {
            let end_tag = format!("</{name}");
            i = match lower[i..].find(&end_tag) {
                Some(n) => match lower[i + n..].find('>') {
                    Some(m) => i + n + m + 1,
                    None => bytes.len(),
                },
                None => bytes.len(),
            };
            continue;
        }
        if BLOCK_TAGS.contains(&name.as_str()) {
            out.push('\n');
        } else if name == "td" || name == "th" {
            out.push(' ');
        }
    }
    normalize_text(&decode_entities(&out))
}

/// Decodes `&amp; &lt; &gt; &quot; &#39; &apos; &nbsp;`, `&#NNN;` and `&#xHH;`; unknown entities stay.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let end = tail[1..].find(';').map(|n| n + 1).filter(|&n| n <= 12);
        let decoded = end.and_then(|end| {
            let name = &tail[1..end];
            let ch = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ if name.starts_with("#x") || name.starts_with("#X") => {
                    u32::from_str_radix(&name[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                }
                _ if name.starts_with('#') => {
                    name[1..].parse::<u32>().ok().and_then(char::from_u32)
                }
                _ => None,
            };
            ch.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(if c == '\u{a0}' { ' ' } else { c });
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Canonical e-mail address: trimmed, surrounding `<>` and a `mailto:` prefix removed, lower-cased.
pub fn normalize_email(s: &str) -> Option<String> {
    let t = s
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let t = t
        .strip_prefix("mailto:")
        .or_else(|| t.strip_prefix("MAILTO:"))
        .unwrap_or(t);
    let t = t.trim().to_lowercase();
    if t.is_empty() { None } else { Some(t) }
}

fn type_rank(t: &str) -> usize {
    ATTENDEE_TYPES.iter().position(|x| *x == t).unwrap_or(0)
}

/// Canonical attendee list from (address, type) pairs: addresses normalised, unknown or missing
/// types read as `required`, sorted by address, one entry per address (the most important type
/// wins: required, then optional, then resource). Null when empty.
pub fn attendees_value<I, A, T>(pairs: I) -> Value
where
    I: IntoIterator<Item = (A, Option<T>)>,
    A: AsRef<str>,
    T: AsRef<str>,
{
    let mut list: Vec<(String, &'static str)> = pairs
        .into_iter()
        .filter_map(|(a, t)| {
            let address = normalize_email(a.as_ref())?;
            let t = t.map(|t| t.as_ref().trim().to_ascii_lowercase());
            let ty = ATTENDEE_TYPES
                .iter()
                .find(|x| Some(**x) == t.as_deref())
                .copied()
                .unwrap_or("required");
            Some((address, ty))
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0).then(type_rank(a.1).cmp(&type_rank(b.1))));
    list.dedup_by(|b, a| a.0 == b.0);
    if list.is_empty() {
        return Value::Null;
    }
    Value::Array(
        list.into_iter()
            .map(|(address, ty)| json!({"address": address, "type": ty}))
            .collect(),
    )
}

/// The (address, type) pairs of a canonical attendee value.
pub fn attendee_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|a| {
                    let address = a.get("address")?.as_str()?.to_string();
                    let ty = a
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("required")
                        .to_string();
                    Some((address, ty))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Canonical people list (archived e-mail): sorted, de-duplicated lower-cased addresses. Null when empty.
pub fn people_value<I, A>(addresses: I) -> Value
where
    I: IntoIterator<Item = A>,
    A: AsRef<str>,
{
    let mut list: Vec<String> = addresses
        .into_iter()
        .filter_map(|a| normalize_email(a.as_ref()))
        .collect();
    list.sort();
    list.dedup();
    if list.is_empty() {
        Value::Null
    } else {
        Value::Array(list.into_iter().map(Value::String).collect())
    }
}

/// Addresses held by a canonical attendee or people value.
pub fn addresses_of(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|a| match a {
                Value::String(s) => Some(s.clone()),
                other => other
                    .get("address")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Canonical instant text, UTC to the minute.
pub fn format_instant(dt: DateTime<Utc>) -> String {
    dt.format("%Y-%m-%dT%H:%MZ").to_string()
}

/// Canonical date text.
pub fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Reads a canonical instant (`YYYY-MM-DDTHH:MMZ`).
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ")
        .ok()
        .map(|n| n.and_utc())
}

/// Reads a canonical date (`YYYY-MM-DD`).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A canonical start/end value as an instant (a date reads as midnight UTC).
pub fn value_instant(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    parse_instant(s).or_else(|| {
        parse_date(s)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|n| n.and_utc())
    })
}

/// A canonical start/end value as a date (an instant gives its UTC date).
pub fn value_date(v: &Value) -> Option<NaiveDate> {
    let s = v.as_str()?;
    parse_date(s).or_else(|| parse_instant(s).map(|dt| dt.date_naive()))
}

/// Why a loose value is not acceptable for a canonical field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{field}` is not a canonical field of {entity}")]
    UnknownField { entity: Entity, field: String },
    #[error("`{field}`: {reason}")]
    Bad { field: String, reason: String },
}

/// Normalises a loosely written value (for example one typed by an operator resolving a conflict)
/// into the canonical form of `entity`'s `field`, or says what is wrong with it.
pub fn normalize_value(entity: Entity, field: &str, v: &Value) -> Result<Value, ValueError> {
    let kind = entity
        .field_kind(field)
        .ok_or_else(|| ValueError::UnknownField {
            entity,
            field: field.to_string(),
        })?;
    let bad = |reason: &str| ValueError::Bad {
        field: field.to_string(),
        reason: reason.to_string(),
    };
    if v.is_null() {
        return match kind {
            FieldKind::Bool => Ok(Value::Bool(false)),
            FieldKind::Enum(list) => Err(bad(&format!("must be one of {}", list.join(", ")))),
            _ => Ok(Value::Null),
        };
    }
    match kind {
        FieldKind::Text => v
            .as_str()
            .map(text_value)
            .ok_or_else(|| bad("must be text")),
        FieldKind::Email => v
            .as_str()
            .map(|s| normalize_email(s).map(Value::String).unwrap_or(Value::Null))
            .ok_or_else(|| bad("must be an e-mail address")),
        FieldKind::Bool => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| bad("must be true or false")),
        FieldKind::Minutes => v
            .as_u64()
            .map(|n| json!(n))
            .ok_or_else(|| bad("must be a whole number of minutes")),
        FieldKind::Date => {
            let s = v.as_str().ok_or_else(|| bad("must be a date YYYY-MM-DD"))?;
            parse_date(s.trim())
                .map(|d| Value::String(format_date(d)))
                .ok_or_else(|| bad("must be a date YYYY-MM-DD"))
        }
        FieldKind::Instant => {
            let s = v.as_str().ok_or_else(|| bad("must be an instant"))?;
            parse_loose_instant(s.trim())
                .map(|d| Value::String(format_instant(d)))
                .ok_or_else(|| bad("must be an instant such as 2026-11-23T09:00Z"))
        }
        FieldKind::DateOrInstant => {
            let s = v
                .as_str()
                .ok_or_else(|| bad("must be a date or an instant"))?
                .trim();
            if let Some(d) = parse_date(s) {
                Ok(Value::String(format_date(d)))
            } else {
                parse_loose_instant(s)
                    .map(|d| Value::String(format_instant(d)))
                    .ok_or_else(|| {
                        bad("must be a date YYYY-MM-DD or an instant such as 2026-11-23T09:00Z")
                    })
            }
        }
        FieldKind::Enum(list) => {
            let s = v.as_str().ok_or_else(|| bad("must be text"))?.trim();
            list.iter()
                .find(|x| x.eq_ignore_ascii_case(s))
                .map(|x| Value::String((*x).to_string()))
                .ok_or_else(|| bad(&format!("must be one of {}", list.join(", "))))
        }
        FieldKind::Attendees => {
            let items = v
                .as_array()
                .ok_or_else(|| bad("must be a list of attendees"))?;
            let mut pairs = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => pairs.push((s.clone(), None)),
                    Value::Object(o) => {
                        let address = o
                            .get("address")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad("every attendee needs an address"))?;
                        let ty = o.get("type").and_then(Value::as_str).map(str::to_string);
                        if let Some(t) = &ty
                            && !ATTENDEE_TYPES.contains(&t.as_str())
                        {
                            return Err(bad(
                                "attendee type must be required, optional or resource",
                            ));
                        }
                        pairs.push((address.to_string(), ty));
                    }
                    _ => return Err(bad("every attendee must be an object with an address")),
                }
            }
            Ok(attendees_value(pairs))
        }
        FieldKind::People => {
            let items = v
                .as_array()
                .ok_or_else(|| bad("must be a list of addresses"))?;
            let mut list = Vec::new();
            for item in items {
                list.push(
                    item.as_str()
                        .ok_or_else(|| bad("every entry must be an address"))?
                        .to_string(),
                );
            }
            Ok(people_value(list))
        }
    }
}

/// `2026-11-23T09:00Z`, `2026-11-23T09:00:00Z` or any RFC 3339 instant with an offset.
pub fn parse_loose_instant(s: &str) -> Option<DateTime<Utc>> {
    parse_instant(s).or_else(|| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| truncate_minute(d.with_timezone(&Utc)))
    })
}

/// Drops seconds and fractions.
pub fn truncate_minute(dt: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    dt.with_second(0)
        .and_then(|d| d.with_nanosecond(0))
        .unwrap_or(dt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_folded() {
        assert_eq!(
            normalize_text("  Hello \t  world \r\nsecond\rthird  "),
            Some("Hello world\nsecond\nthird".into())
        );
        assert_eq!(normalize_text("a\n\n\n\nb"), Some("a\n\nb".into()));
        assert_eq!(normalize_text(" \r\n\t "), None);
    }

    #[test]
    fn html_body_reduces_to_text() {
        let html = "<html><head><style>p{color:red}</style><title>x</title></head><body>\
                    <p>Agenda&nbsp;for&amp;with</p><p>Line&lt;2&gt; &quot;q&quot; &#39;s&#39; &#8364;&#x41;</p>\
                    first<br>second<br/>third<!-- hidden --></body></html>";
        assert_eq!(
            html_to_text(html),
            Some("Agenda for&with\n\nLine<2> \"q\" 's' €A\nfirst\nsecond\nthird".into())
        );
        assert_eq!(
            html_to_text("a < b &unknown; c"),
            Some("a < b &unknown; c".into())
        );
        assert_eq!(html_to_text("<div>  </div>"), None);
    }

    #[test]
    fn attendees_sorted_deduplicated_typed() {
        let v = attendees_value(vec![
            ("B@x.test", Some("optional")),
            ("a@x.test", None),
            ("b@x.test", Some("required")),
            ("", Some("required")),
            ("c@x.test", Some("bogus")),
        ]);
        assert_eq!(
            v,
            json!([
                {"address": "a@x.test", "type": "required"},
                {"address": "b@x.test", "type": "required"},
                {"address": "c@x.test", "type": "required"}
            ])
        );
        assert_eq!(
            attendees_value(Vec::<(String, Option<String>)>::new()),
            Value::Null
        );
    }

    #[test]
    fn normalize_value_checks_shape() {
        let e = Entity::Appointment;
        assert_eq!(
            normalize_value(e, "subject", &json!("  x  y ")),
            Ok(json!("x y"))
        );
        assert_eq!(
            normalize_value(e, "show_as", &json!("OOF")),
            Ok(json!("oof"))
        );
        assert!(normalize_value(e, "show_as", &json!("away")).is_err());
        assert_eq!(
            normalize_value(e, "start", &json!("2026-11-23T10:00:00+01:00")),
            Ok(json!("2026-11-23T09:00Z"))
        );
        assert_eq!(
            normalize_value(e, "start", &json!("2026-11-23")),
            Ok(json!("2026-11-23"))
        );
        assert!(normalize_value(e, "start", &json!(5)).is_err());
        assert!(matches!(
            normalize_value(e, "colour", &json!("red")),
            Err(ValueError::UnknownField { .. })
        ));
        assert_eq!(
            normalize_value(Entity::Contact, "email", &json!(" A@B.test ")),
            Ok(json!("a@b.test"))
        );
    }
}
