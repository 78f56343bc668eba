//! The `<request>` document: builder (client side) and parser (simulator side, round-trip tests).
//! Every [profile] request shape lives here.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::error::CrmError;
use super::xml::{Element, XmlOut, parse_document};
use crate::model::{Command, Cond, CondOp, ImportField, Query, parse_record_id};

/// The only `<break if>` condition the connector sends (and the simulator evaluates).
pub const BREAK_ON_ERROR_IF: &str = "/root/response/*[last()]//return[@type='error']";

/// Attributes of `<request>` that CRM.interface itself interprets; all others are copied onto the
/// `<response>`.
pub const KNOWN_REQUEST_ATTRS: &[&str] = &["user", "pwd", "impersonate"];

/// Builds one `<request>` document. Table and field names must be valid XML names
/// ([`crate::is_valid_name`]); values are escaped, and characters XML 1.0 forbids (U+0000–U+0008,
/// U+000B, U+000C, U+000E–U+001F, U+FFFE, U+FFFF) are dropped from every value. Breaks are written as
/// `<break if="/root/response/*[last()]//return[@type='error']"/>`.
pub fn build_request(
    commands: &[Command],
    user: &str,
    pwd: &str,
    corr: &str,
    impersonate: Option<&str>,
) -> String {
    let mut out = XmlOut::new();
    let impersonate_attr = impersonate.map(|addr| format!("email={addr}"));
    let mut attrs: Vec<(&str, &str)> = vec![("user", user), ("pwd", pwd), ("corr", corr)];
    if let Some(imp) = impersonate_attr.as_deref() {
        attrs.push(("impersonate", imp));
    }
    out.start("request", &attrs);
    for command in commands {
        write_command(&mut out, command);
    }
    out.end("request");
    out.finish()
}

fn write_command(out: &mut XmlOut, command: &Command) {
    match command {
        Command::Query(q) => write_query(out, q),
        Command::Insert { table, fields } => {
            out.start("insert", &[]);
            out.start("fields", &[]);
            out.start(table, &[]);
            for (name, value) in fields {
                write_field(out, name, value, false);
            }
            out.end(table);
            out.end("fields");
            out.end("insert");
        }
        Command::Update { table, id, fields } => {
            let id = id.to_string();
            out.start("update", &[]);
            out.start("fields", &[]);
            out.start(table, &[("id", &id)]);
            for (name, value) in fields {
                write_field(out, name, value, false);
            }
            out.end(table);
            out.end("fields");
            out.end("update");
        }
        Command::Delete { table, id } => {
            let id = id.to_string();
            out.start("delete", &[]);
            out.start("fields", &[]);
            out.empty(table, &[("id", &id)]);
            out.end("fields");
            out.end("delete");
        }
        Command::Import { table, fields } => {
            out.start("import", &[]);
            out.start("fields", &[]);
            out.start(table, &[]);
            for f in fields {
                write_field(out, &f.name, &f.value, f.matchup);
            }
            out.end(table);
            out.end("fields");
            out.end("import");
        }
        Command::BreakOnError => out.empty("break", &[("if", BREAK_ON_ERROR_IF)]),
    }
}

fn write_field(out: &mut XmlOut, name: &str, value: &str, matchup: bool) {
    let mut attrs: Vec<(&str, &str)> = Vec::new();
    if matchup {
        attrs.push(("matchup", "true"));
    }
    out.text_element(name, &attrs, value);
}

fn write_query(out: &mut XmlOut, q: &Query) {
    let max = q.max_records.map(|m| m.to_string());
    match max.as_deref() {
        Some(m) => out.start("query", &[("maxrecords", m)]),
        None => out.start("query", &[]),
    }
    out.start("tables", &[]);
    out.empty("table", &[("tablename", &q.table)]);
    out.end("tables");
    if !q.conditions.is_empty() {
        out.start("condition", &[]);
        for c in &q.conditions {
            out.empty(
                "cond",
                &[
                    ("tablename", &q.table),
                    ("fieldname", &c.field),
                    ("op", c.op.as_str()),
                    ("value", &c.value),
                ],
            );
        }
        out.end("condition");
    }
    if !q.fields.is_empty() {
        let fields = q.fields.join(",");
        out.empty("fields", &[("tablename", &q.table), ("fields", &fields)]);
    }
    out.end("query");
}

/// A `<request>` as read by the simulator.
pub struct ParsedRequest {
    pub user: Option<String>,
    pub pwd: Option<SecretString>,
    /// The raw `impersonate` attribute, e.g. `email=rep1@contoso.com`.
    pub impersonate: Option<String>,
    /// Attributes CRM.interface does not know (e.g. `corr`), to copy onto the `<response>`.
    pub extra_attrs: Vec<(String, String)>,
    pub commands: Vec<Command>,
    /// The raw `if` condition of every break, keyed by its index in `commands` (a break without
    /// `if` has an empty condition).
    pub break_conditions: BTreeMap<usize, String>,
}

impl ParsedRequest {
    /// The mailbox address of `impersonate="email=<addr>"`, if the attribute has that form.
    pub fn impersonate_email(&self) -> Option<&str> {
        let raw = self.impersonate.as_deref()?.trim();
        let (key, value) = raw.split_once('=')?;
        (key.trim().eq_ignore_ascii_case("email") && !value.trim().is_empty()).then(|| value.trim())
    }

    pub fn pwd_matches(&self, expected: &str) -> bool {
        self.pwd
            .as_ref()
            .is_some_and(|p| p.expose_secret() == expected)
    }
}

impl fmt::Debug for ParsedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedRequest")
            .field("user", &self.user)
            .field("pwd", &self.pwd.as_ref().map(|_| "[redacted]"))
            .field("impersonate", &self.impersonate)
            .field("extra_attrs", &self.extra_attrs)
            .field("commands", &self.commands)
            .field("break_conditions", &self.break_conditions)
            .finish()
    }
}

/// Parses a `<request>` document (the inverse of [`build_request`]).
pub fn parse_request(xml: &str) -> Result<ParsedRequest, CrmError> {
    let root = parse_document(xml).map_err(|e| CrmError::parse(e.to_string(), xml))?;
    let bad = |detail: String| CrmError::parse(detail, xml);
    if root.name != "request" {
        return Err(bad(format!(
            "root element is <{}>, expected <request>",
            root.name
        )));
    }
    let mut req = ParsedRequest {
        user: None,
        pwd: None,
        impersonate: None,
        extra_attrs: Vec::new(),
        commands: Vec::new(),
        break_conditions: BTreeMap::new(),
    };
    for (k, v) in &root.attrs {
        match k.as_str() {
            "user" => req.user = Some(v.clone()),
            "pwd" => req.pwd = Some(SecretString::from(v.clone())),
            "impersonate" => req.impersonate = Some(v.clone()),
            _ => req.extra_attrs.push((k.clone(), v.clone())),
        }
    }
    for (index, el) in root.children.iter().enumerate() {
        let command = match el.name.as_str() {
            "query" => Command::Query(parse_query(el).map_err(bad)?),
            "insert" => {
                let rec = single_record(el).map_err(bad)?;
                Command::Insert {
                    table: rec.name.clone(),
                    fields: field_map(rec).map_err(bad)?,
                }
            }
            "update" => {
                let rec = single_record(el).map_err(bad)?;
                Command::Update {
                    table: rec.name.clone(),
                    id: record_id_attr(rec).map_err(bad)?,
                    fields: field_map(rec).map_err(bad)?,
                }
            }
            "delete" => {
                let rec = single_record(el).map_err(bad)?;
                Command::Delete {
                    table: rec.name.clone(),
                    id: record_id_attr(rec).map_err(bad)?,
                }
            }
            "import" => {
                let rec = single_record(el).map_err(bad)?;
                let fields = rec
                    .children
                    .iter()
                    .map(|f| ImportField {
                        name: f.name.clone(),
                        value: field_value(f),
                        matchup: f
                            .attr("matchup")
                            .is_some_and(|m| m.trim().eq_ignore_ascii_case("true")),
                    })
                    .collect();
                Command::Import {
                    table: rec.name.clone(),
                    fields,
                }
            }
            "break" => {
                req.break_conditions
                    .insert(index, el.attr("if").unwrap_or_default().to_string());
                Command::BreakOnError
            }
            other => return Err(bad(format!("unknown command <{other}>"))),
        };
        req.commands.push(command);
    }
    Ok(req)
}

/// A field element's value is its text. Attributes the profile does not name (anything but
/// `matchup` on an `<import>` field) are ignored, so `<RecordId ref="0"/>` is an empty value:
/// CRM.interface has no way to refer to an id written earlier in the same request.
fn field_value(f: &Element) -> String {
    f.text.clone()
}

fn single_record(command: &Element) -> Result<&Element, String> {
    let fields = command
        .child("fields")
        .ok_or_else(|| format!("<{}> without <fields>", command.name))?;
    match fields.children.as_slice() {
        [rec] => Ok(rec),
        [] => Err(format!("<{}> names no record", command.name)),
        _ => Err(format!("<{}> names more than one record", command.name)),
    }
}

fn record_id_attr(rec: &Element) -> Result<u64, String> {
    let raw = rec
        .attr("id")
        .ok_or_else(|| format!("<{}> without id", rec.name))?;
    parse_record_id(raw).ok_or_else(|| format!("<{}> has an invalid id", rec.name))
}

fn field_map(rec: &Element) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for f in &rec.children {
        if map.insert(f.name.clone(), field_value(f)).is_some() {
            return Err(format!("field {} given twice", f.name));
        }
    }
    Ok(map)
}

fn parse_query(el: &Element) -> Result<Query, String> {
    let max_records = match el.attr("maxrecords") {
        Some(m) => Some(
            m.trim()
                .parse::<u32>()
                .map_err(|_| "invalid maxrecords".to_string())?,
        ),
        None => None,
    };
    let tables: Vec<&Element> = el
        .child("tables")
        .map(|t| t.children_named("table").collect())
        .unwrap_or_default();
    let table = match tables.as_slice() {
        [t] => t
            .attr("tablename")
            .ok_or("<table> without tablename")?
            .to_string(),
        [] => return Err("<query> names no table".into()),
        _ => return Err("<query> on more than one table is not supported".into()),
    };
    let mut conditions = Vec::new();
    if let Some(cond_el) = el.child("condition") {
        for c in &cond_el.children {
            if c.name != "cond" {
                return Err(format!("unknown condition element <{}>", c.name));
            }
            let op_raw = c.attr("op").unwrap_or("=");
            conditions.push(Cond {
                field: c
                    .attr("fieldname")
                    .ok_or("<cond> without fieldname")?
                    .to_string(),
                op: CondOp::parse(op_raw).ok_or_else(|| format!("unknown operator {op_raw:?}"))?,
                value: c.attr("value").unwrap_or_default().to_string(),
            });
        }
    }
    let fields = el
        .child("fields")
        .and_then(|f| f.attr("fields"))
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Query {
        table,
        conditions,
        fields,
        max_records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_attributes_are_split() {
        let xml = build_request(&[], "OCSU", "s3cret", "c-1", Some("rep1@contoso.com"));
        let req = parse_request(&xml).expect("parses");
        assert_eq!(req.user.as_deref(), Some("OCSU"));
        assert!(req.pwd_matches("s3cret"));
        assert!(!req.pwd_matches("other"));
        assert_eq!(req.impersonate_email(), Some("rep1@contoso.com"));
        assert_eq!(
            req.extra_attrs,
            vec![("corr".to_string(), "c-1".to_string())]
        );
        assert!(!format!("{req:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_field_attributes_are_ignored_and_ref_is_an_empty_value() {
        let req = parse_request(
            r#"<request><import><fields><ExtKey><ExtKey matchup="true" lang="de">k</ExtKey><RecordId ref="0"/></ExtKey></fields></import></request>"#,
        )
        .expect("parses");
        assert_eq!(
            req.commands,
            vec![Command::Import {
                table: "ExtKey".into(),
                fields: vec![
                    ImportField::new("ExtKey", "k", true),
                    ImportField::new("RecordId", "", false),
                ],
            }]
        );
    }

    #[test]
    fn forbidden_characters_never_reach_the_request() {
        let mut fields = BTreeMap::new();
        fields.insert("Subject".to_string(), "a\u{1}b\u{FFFF}".to_string());
        let xml = build_request(
            &[Command::Insert {
                table: "Contact".into(),
                fields,
            }],
            "u",
            "p",
            "c",
            None,
        );
        assert!(!xml.contains('\u{1}') && !xml.contains('\u{FFFF}'));
        let req = parse_request(&xml).expect("parses");
        let Command::Insert { fields, .. } = &req.commands[0] else {
            panic!("{:?}", req.commands);
        };
        assert_eq!(fields.get("Subject").map(String::as_str), Some("ab"));
    }

    #[test]
    fn unknown_command_is_an_error() {
        let err = parse_request("<request><frobnicate/></request>").expect_err("rejected");
        assert!(matches!(err, CrmError::Parse { ref detail, .. } if detail.contains("frobnicate")));
    }

    #[test]
    fn break_condition_is_kept() {
        let req = parse_request("<request><break if=\"1=1\"/><break/></request>").expect("parses");
        assert_eq!(
            req.commands,
            vec![Command::BreakOnError, Command::BreakOnError]
        );
        assert_eq!(
            req.break_conditions.get(&0).map(String::as_str),
            Some("1=1")
        );
        assert_eq!(req.break_conditions.get(&1).map(String::as_str), Some(""));
    }
}
