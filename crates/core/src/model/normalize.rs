//! Normalisation of single values into their canonical form.

use super::{ATTENDEE_TYPES, Entity, FieldKind};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

/// Whether XML 1.0 forbids `c` in a document (C0 controls other than tab, LF and CR, and the
/// non-characters U+FFFE and U+FFFF). CRM.interface speaks XML: such characters never reach it.
pub fn is_xml_forbidden(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// `s` without the characters XML 1.0 forbids (see [`is_xml_forbidden`]).
pub fn strip_xml_forbidden(s: &str) -> String {
    s.chars().filter(|c| !is_xml_forbidden(*c)).collect()
}

/// Canonical text: characters XML 1.0 forbids removed, CRLF/CR -> LF, non-breaking spaces ->
/// spaces, runs of spaces/tabs folded to one space, every line trimmed, more than one blank line
/// folded to one, whole text trimmed. None when nothing is left.
pub fn normalize_text(s: &str) -> Option<String> {
    let unified = strip_xml_forbidden(s)
        .replace("\r\n", "\n")
        .replace(['\r'], "\n");
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

/// How an element shapes the text around it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Inline: no break (`b`, `span`, `a`, `o:p`, unknown elements, ...).
    Inline,
    /// `<br>`: one line break, always (two in a row make a blank line).
    Break,
    /// A block (`div`, `li`, `tr`, `table`, ...): its content starts and ends on a line of its
    /// own; breaks of adjacent blocks do not add up (`<div>a</div><div>b</div>` is two lines).
    Block,
    /// A paragraph (`p`, `h1`-`h6`): like a block, set off by a blank line.
    Paragraph,
    /// A table cell: separated from the previous cell by a space.
    Cell,
    /// Not content (`head`, `title`, `script`, `style`, `template`, `noscript`): dropped with
    /// everything inside.
    Dropped,
}

fn shape(name: &str) -> Shape {
    match name {
        "br" => Shape::Break,
        "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => Shape::Paragraph,
        "td" | "th" => Shape::Cell,
        "head" | "title" | "script" | "style" | "template" | "noscript" | "iframe" | "object"
        | "xml" => Shape::Dropped,
        "address" | "article" | "aside" | "blockquote" | "caption" | "center" | "dd"
        | "details" | "dialog" | "dir" | "div" | "dl" | "dt" | "fieldset" | "figcaption"
        | "figure" | "footer" | "form" | "header" | "hgroup" | "hr" | "legend" | "li"
        | "listing" | "main" | "menu" | "nav" | "ol" | "pre" | "section" | "summary" | "table"
        | "tbody" | "tfoot" | "thead" | "tr" | "ul" | "xmp" | "plaintext" => Shape::Block,
        _ => Shape::Inline,
    }
}

/// Elements whose text keeps its line breaks and spaces.
fn preformatted(name: &str) -> bool {
    matches!(name, "pre" | "listing" | "xmp" | "plaintext" | "textarea")
}

/// HTML's white space (a run of it inside text is one space, outside `<pre>`). Form feed, also
/// HTML white space, is one of the characters XML forbids: it is removed, like the others.
fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Ends `out` with at least `n` line breaks (nothing at the very start of the text).
fn line_breaks(out: &mut String, n: usize) {
    let kept = out.trim_end_matches([' ', '\t']).len();
    out.truncate(kept);
    if out.is_empty() {
        return;
    }
    let have = out.len() - out.trim_end_matches('\n').len();
    for _ in have..n {
        out.push('\n');
    }
}

/// HTML reduced to canonical text, the way a browser shows it: the document is parsed by
/// html5ever (browser-grade HTML5 parsing: every named and numeric character reference decoded,
/// unclosed and misnested tags repaired), comments and `head`/`title`/`script`/`style` content
/// dropped, tags dropped; `<br>` is a line break, blocks (`div`, `li`, `tr`, ...) start and end
/// a line, paragraphs (`p`, `h1`-`h6`) are set off by a blank line, table cells by a space; runs
/// of white space inside text are one space (outside `<pre>`); then [`normalize_text`] (which
/// also removes the characters XML 1.0 forbids, e.g. from `&#1;`). None when no text is left.
///
/// The round trip is stable: a canonical text that Graph serves back as HTML (`<div>` per line
/// or `<br>` between lines, `<div><br></div>` for a blank line, entities) reads as that text.
pub fn html_to_text(html: &str) -> Option<String> {
    use ego_tree::iter::Edge;
    use scraper::Node;
    use scraper::node::Element;
    let doc = scraper::Html::parse_document(html);
    let mut out = String::with_capacity(html.len());
    let mut dropped = 0usize;
    let mut pre = 0usize;
    let element = |n: &Node| -> Option<(Shape, bool)> {
        match n {
            Node::Element(e) => {
                let e: &Element = e;
                Some((shape(e.name()), preformatted(e.name())))
            }
            _ => None,
        }
    };
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => {
                if let Some((sh, is_pre)) = element(node.value()) {
                    if sh == Shape::Dropped {
                        dropped += 1;
                        continue;
                    }
                    if dropped > 0 {
                        continue;
                    }
                    if is_pre {
                        pre += 1;
                    }
                    match sh {
                        Shape::Break => {
                            line_breaks(&mut out, 0);
                            out.push('\n');
                        }
                        Shape::Block => line_breaks(&mut out, 1),
                        Shape::Paragraph => line_breaks(&mut out, 2),
                        Shape::Cell => {
                            if !out.is_empty() && !out.ends_with(['\n', ' ']) {
                                out.push(' ');
                            }
                        }
                        Shape::Inline | Shape::Dropped => {}
                    }
                } else if let Node::Text(t) = node.value()
                    && dropped == 0
                {
                    if pre > 0 {
                        out.push_str(t);
                    } else {
                        let mut in_space = false;
                        for c in t.chars() {
                            if is_html_space(c) {
                                in_space = true;
                            } else {
                                if in_space {
                                    out.push(' ');
                                }
                                in_space = false;
                                out.push(c);
                            }
                        }
                        if in_space {
                            out.push(' ');
                        }
                    }
                }
            }
            Edge::Close(node) => {
                if let Some((sh, is_pre)) = element(node.value()) {
                    if sh == Shape::Dropped {
                        dropped = dropped.saturating_sub(1);
                        continue;
                    }
                    if dropped > 0 {
                        continue;
                    }
                    if is_pre {
                        pre = pre.saturating_sub(1);
                    }
                    match sh {
                        Shape::Block => line_breaks(&mut out, 1),
                        Shape::Paragraph => line_breaks(&mut out, 2),
                        _ => {}
                    }
                }
            }
        }
    }
    normalize_text(&out)
}

/// Decodes every HTML5 character reference (named: `&amp;`, `&ndash;`, `&uuml;`, `&szlig;`, ...;
/// numeric: `&#8364;`, `&#x20B9;`) the way a browser does, through html5ever; `&nbsp;` becomes a
/// plain space; text that is not a known reference (`&unknown;`, a lone `&`) stays as it is.
/// Tags are not interpreted (`<b>` stays `<b>`).
pub fn decode_entities(s: &str) -> String {
    use scraper::Node;
    if !s.contains('&') {
        return s.to_string();
    }
    let frag = scraper::Html::parse_fragment(&s.replace('<', "&lt;"));
    let mut out = String::with_capacity(s.len());
    for node in frag.tree.root().descendants() {
        if let Node::Text(t) = node.value() {
            out.push_str(t);
        }
    }
    out.replace('\u{a0}', " ")
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
    let t = strip_xml_forbidden(t.trim()).trim().to_lowercase();
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
        // paragraphs are set off by a blank line, <br> is one line break
        assert_eq!(
            html_to_text(html),
            Some("Agenda for&with\n\nLine<2> \"q\" 's' €A\n\nfirst\nsecond\nthird".into())
        );
        assert_eq!(
            html_to_text("a < b &unknown; c"),
            Some("a < b &unknown; c".into())
        );
        assert_eq!(html_to_text("<div>  </div>"), None);
        assert_eq!(html_to_text(""), None);
    }

    #[test]
    fn every_html5_entity_is_decoded() {
        assert_eq!(
            html_to_text("Bitte &amp; danke &ndash; Gr&uuml;&szlig;e"),
            Some("Bitte & danke – Grüße".into())
        );
        assert_eq!(
            html_to_text(
                "&Auml;rger&nbsp;&Ouml;l &Uuml;bung &euro;&nbsp;12,50 &mdash; &hellip; &laquo;x&raquo; &sect;3 &copy;"
            ),
            Some("Ärger Öl Übung € 12,50 — … «x» §3 ©".into())
        );
        // numeric references, decimal and hex, including Indian rupee and Devanagari
        assert_eq!(
            html_to_text("&#8377;&#x20B9; &#2344;&#2350;&#2360;&#2381;&#2340;&#2375; &#x1F600;"),
            Some("₹₹ नमस्ते 😀".into())
        );
        // legacy references without the semicolon, as browsers read them
        assert_eq!(
            html_to_text("a &amp b &copy 2026"),
            Some("a & b © 2026".into())
        );
        assert_eq!(
            decode_entities("Bitte &amp; danke &ndash; Gr&uuml;&szlig;e &lt;b&gt; <i>"),
            "Bitte & danke – Grüße <b> <i>"
        );
        assert_eq!(decode_entities("x&nbsp;y &bogus; &"), "x y &bogus; &");
    }

    #[test]
    fn blocks_become_lines_and_hidden_content_is_dropped() {
        let html = "<h1>Titel</h1><ul><li>eins</li><li>zwei</li></ul>\
                    <table><tr><td>Preis</td><td>100 €</td></tr><tr><th>Summe</th><td>₹ 8.300</td></tr></table>\
                    <script>alert('x')</script><noscript>no</noscript><div>ende</div>";
        assert_eq!(
            html_to_text(html),
            Some("Titel\n\neins\nzwei\nPreis 100 €\nSumme ₹ 8.300\nende".into())
        );
        // source line breaks and indentation are white space, not lines; <pre> keeps its lines
        assert_eq!(
            html_to_text("<div>\n   Sehr geehrte\n   Frau Müller,\n</div>\n<pre>a  b\nc</pre>"),
            Some("Sehr geehrte Frau Müller,\na b\nc".into())
        );
        // comments (Outlook's conditional comments too) are dropped
        assert_eq!(
            html_to_text(
                "<!--[if gte mso 9]><xml><o:OfficeDocumentSettings/></xml><![endif]-->Hallo<!-- x -->"
            ),
            Some("Hallo".into())
        );
        // unclosed and misnested markup is repaired the way a browser does
        assert_eq!(
            html_to_text("<div><b>fett <i>kursiv</b> weiter<div>neu"),
            Some("fett kursiv weiter\nneu".into())
        );
    }

    /// A body as Outlook / Graph serves it (desktop Outlook's Word HTML and OWA's div HTML).
    #[test]
    fn outlook_bodies() {
        let owa = "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n\
                   <style type=\"text/css\" style=\"display:none;\"> P {margin-top:0;margin-bottom:0;} </style>\r\n\
                   </head>\r\n<body dir=\"ltr\">\r\n\
                   <div class=\"elementToProof\" style=\"font-family: Aptos, Calibri, Helvetica, sans-serif; font-size: 12pt\">\
                   Gr&uuml;&szlig; Gott Herr Gruber,</div>\r\n\
                   <div class=\"elementToProof\"><br></div>\r\n\
                   <div class=\"elementToProof\">die Besprechung in Wien &ndash; Stra&szlig;e 7 &ndash; kostet 1.200&nbsp;&euro;.</div>\r\n\
                   <div class=\"elementToProof\">Namaste &#2344;&#2350;&#2360;&#2381;&#2340;&#2375;, &#8377;&nbsp;5.000</div>\r\n\
                   </body>\r\n</html>\r\n";
        assert_eq!(
            html_to_text(owa),
            Some(
                "Grüß Gott Herr Gruber,\n\ndie Besprechung in Wien – Straße 7 – kostet 1.200 €.\nNamaste नमस्ते, ₹ 5.000"
                    .into()
            )
        );
        let word = "<html xmlns:o=\"urn:schemas-microsoft-com:office:office\"><head>\
                    <meta name=\"Generator\" content=\"Microsoft Word 15 (filtered medium)\">\
                    <style><!-- p.MsoNormal {margin:0cm;} --></style></head>\
                    <body lang=\"DE-AT\"><div class=\"WordSection1\">\
                    <p class=\"MsoNormal\">Termin&nbsp;best&auml;tigt<o:p></o:p></p>\
                    </div></body></html>";
        assert_eq!(html_to_text(word), Some("Termin bestätigt".into()));
    }

    #[test]
    fn hostile_html_never_panics() {
        let deep = "<div><b><i>".repeat(3_000) + "tief" + &"</i></b></div>".repeat(3_000);
        assert_eq!(html_to_text(&deep), Some("tief".into()));
        for junk in [
            "<",
            "<<>>",
            "</p></div>",
            "<!--",
            "<![CDATA[x]]>",
            "&#xFFFFFFFF;&#0;",
            "<script>",
            "<p <p <p",
        ] {
            let _ = html_to_text(junk);
            let _ = decode_entities(junk);
        }
    }

    #[test]
    fn forbidden_xml_characters_never_survive() {
        assert_eq!(
            html_to_text("a&#1;b&#x0B;c&#12;d\u{1}e"),
            Some("abcde".into())
        );
        assert_eq!(
            normalize_text("x\u{0}y\u{8}\u{b}\u{c}\u{1f}z\u{fffe}\u{ffff}"),
            Some("xyz".into())
        );
        // tab, LF and CR are allowed (and folded as usual)
        assert_eq!(normalize_text("a\tb\r\nc"), Some("a b\nc".into()));
        assert_eq!(normalize_text("\u{1}\u{2}"), None);
        assert_eq!(normalize_email(" a\u{1}@b.test "), Some("a@b.test".into()));
    }

    /// Escapes text the way Exchange renders a text body as HTML: named entities for markup
    /// characters and many Latin-1 letters, numeric references for some others.
    fn escape(line: &str, numeric_non_ascii: bool) -> String {
        let mut out = String::new();
        for c in line.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                'ä' => out.push_str("&auml;"),
                'ö' => out.push_str("&ouml;"),
                'ü' => out.push_str("&uuml;"),
                'Ä' => out.push_str("&Auml;"),
                'Ü' => out.push_str("&Uuml;"),
                'ß' => out.push_str("&szlig;"),
                '€' => out.push_str("&euro;"),
                '–' => out.push_str("&ndash;"),
                c if numeric_non_ascii && !c.is_ascii() => {
                    out.push_str(&format!("&#{};", c as u32))
                }
                c => out.push(c),
            }
        }
        out
    }

    const HEAD: &str = "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n<style type=\"text/css\" style=\"display:none;\"> P {margin-top:0;margin-bottom:0;} </style>\r\n</head>\r\n<body dir=\"ltr\">\r\n";
    const TAIL: &str = "\r\n</body>\r\n</html>\r\n";

    /// Text as one `<div>`, lines separated by `<br>` (blank line: two `<br>`).
    fn render_br(text: &str, numeric: bool) -> String {
        let lines: Vec<String> = text.split('\n').map(|l| escape(l, numeric)).collect();
        format!(
            "{HEAD}<div class=\"PlainText\">{}</div>{TAIL}",
            lines.join("<br>\r\n")
        )
    }

    /// One `<div>` per line, `<div><br></div>` for a blank line (how OWA writes it).
    fn render_divs(text: &str, numeric: bool) -> String {
        let body: String = text
            .split('\n')
            .map(|l| {
                if l.is_empty() {
                    "<div><br></div>\r\n".to_string()
                } else {
                    format!(
                        "<div style=\"font-size: 12pt\">{}</div>\r\n",
                        escape(l, numeric)
                    )
                }
            })
            .collect();
        format!("{HEAD}{body}{TAIL}")
    }

    #[test]
    fn text_graph_html_text_round_trip() {
        for text in [
            "Bitte & danke – Grüße",
            "Sehr geehrte Frau Müller,\n\nanbei das Angebot über 1.200 €.\nMit freundlichen Grüßen\nÖAMTC <Wien>",
            "Namaste नमस्ते\n₹ 5.000 \"inkl.\" Steuer",
            "a\nb\n\nc",
        ] {
            for numeric in [false, true] {
                assert_eq!(
                    html_to_text(&render_br(text, numeric)).as_deref(),
                    Some(text),
                    "br {text:?}"
                );
                assert_eq!(
                    html_to_text(&render_divs(text, numeric)).as_deref(),
                    Some(text),
                    "divs {text:?}"
                );
            }
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// No text the core produces contains a character XML 1.0 forbids.
        #[test]
        fn output_never_contains_forbidden_chars(s in "(?s).{0,60}", n in 0u32..0x11_0000) {
            let html = format!("<div>{s}&#{n};&#x{n:X};</div>{s}");
            let outputs = [html_to_text(&html), html_to_text(&s), normalize_text(&s), normalize_text(&html)];
            for t in outputs.into_iter().flatten() {
                prop_assert!(!t.chars().any(is_xml_forbidden), "{:?}", t);
            }
            prop_assert!(!decode_entities(&html).is_empty() || html.is_empty());
        }

        /// text -> Graph HTML -> text is the identity on canonical text (no ping-pong).
        #[test]
        fn canonical_text_survives_graph_html(
            raw in "[a-zA-Z0-9 äöüÄÜß€₹–नमस्ते&<>\"'.,;:!?()\\-\t\n]{0,80}",
            numeric in any::<bool>(),
        ) {
            if let Some(text) = normalize_text(&raw) {
                prop_assert_eq!(html_to_text(&render_br(&text, numeric)), Some(text.clone()));
                prop_assert_eq!(html_to_text(&render_divs(&text, numeric)), Some(text.clone()));
                // and canonical text is a fixed point of normalisation
                prop_assert_eq!(normalize_text(&text), Some(text));
            }
        }
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
