//! The simulator's `<response>` writer: the [profile] answer shapes, written independently of the
//! client's parser (`client::response`).

use crate::client::xml::XmlOut;
use crate::model::{ErrorCode, Outcome, RecordId, is_valid_name};

/// One command's answer for [`build_response`]: the command element name and what it did.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// `query`, `insert`, `update`, `delete` or `import`.
    pub command: &'static str,
    pub outcome: Outcome,
}

/// How the simulator prints its answers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AnswerStyle {
    /// Write every record id (the `id` attribute and `RecordId` values) padded with spaces, as
    /// CRM.interface may (expected-behaviour line 19).
    pub pad_ids: bool,
}

impl AnswerStyle {
    fn id(&self, id: RecordId) -> String {
        if self.pad_ids {
            format!("  {id} ")
        } else {
            id.to_string()
        }
    }

    fn value<'a>(&self, field: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
        if self.pad_ids && field == "RecordId" && !value.is_empty() {
            std::borrow::Cow::Owned(format!(" {value}  "))
        } else {
            std::borrow::Cow::Borrowed(value)
        }
    }
}

/// Builds a `<response>` document with the default [`AnswerStyle`]. `attrs` are copied onto
/// `<response>`; `error` is a request-level error, in which case no answer is written.
pub fn build_response(
    attrs: &[(String, String)],
    error: Option<(&ErrorCode, &str)>,
    answers: &[Answer],
) -> String {
    build_response_with(attrs, error, answers, AnswerStyle::default())
}

/// [`build_response`] with an explicit [`AnswerStyle`].
pub fn build_response_with(
    attrs: &[(String, String)],
    error: Option<(&ErrorCode, &str)>,
    answers: &[Answer],
    style: AnswerStyle,
) -> String {
    let mut out = XmlOut::new();
    let attr_refs: Vec<(&str, &str)> = attrs
        .iter()
        .filter(|(k, _)| is_valid_name(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    out.start("response", &attr_refs);
    if let Some((code, message)) = error {
        write_error(&mut out, code, message);
    } else {
        for answer in answers {
            write_answer(&mut out, answer, style);
        }
    }
    out.end("response");
    out.finish()
}

fn write_error(out: &mut XmlOut, code: &ErrorCode, message: &str) {
    out.text_element(
        "return",
        &[("type", "error"), ("code", code.as_str())],
        message,
    );
}

fn write_answer(out: &mut XmlOut, answer: &Answer, style: AnswerStyle) {
    match &answer.outcome {
        Outcome::Records(page) => {
            if page.more {
                out.start(answer.command, &[("more", "true")]);
            } else {
                out.start(answer.command, &[]);
            }
            for rec in &page.records {
                let id = style.id(rec.id);
                out.start(&rec.table, &[("tableshort", &rec.tableshort), ("id", &id)]);
                for (name, value) in &rec.fields {
                    out.text_element(name, &[], &style.value(name, value));
                }
                out.end(&rec.table);
            }
            out.end(answer.command);
        }
        Outcome::Written { table, id, kind } => {
            let id = style.id(*id);
            let short = super::schema::table_short(table).unwrap_or_default();
            out.start(answer.command, &[]);
            out.start(table, &[("tableshort", short), ("id", &id)]);
            out.empty("return", &[("type", kind.as_str())]);
            out.end(table);
            out.end(answer.command);
        }
        Outcome::Failed {
            table,
            id,
            code,
            message,
        } => {
            out.start(answer.command, &[]);
            if answer.command != "query" && is_valid_name(table) {
                let id = id.map(|i| style.id(i));
                let short = super::schema::table_short(table);
                let mut attrs: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = short {
                    attrs.push(("tableshort", s));
                }
                if let Some(i) = id.as_deref() {
                    attrs.push(("id", i));
                }
                out.start(table, &attrs);
                write_error(out, code, message);
                out.end(table);
            } else {
                write_error(out, code, message);
            }
            out.end(answer.command);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::response::parse_response;
    use crate::model::{Command, Query, QueryPage, Record, ReturnKind};
    use std::collections::BTreeMap;

    fn insert() -> Command {
        Command::Insert {
            table: "Contact".into(),
            fields: BTreeMap::new(),
        }
    }

    #[test]
    fn build_then_parse_gives_same_outcomes() {
        let mut fields = BTreeMap::new();
        fields.insert("Subject".to_string(), "a <b> & \"c\"".to_string());
        let answers = vec![
            Answer {
                command: "query",
                outcome: Outcome::Records(QueryPage {
                    records: vec![Record {
                        table: "Contact".into(),
                        tableshort: "MA".into(),
                        id: 5,
                        fields,
                    }],
                    more: true,
                }),
            },
            Answer {
                command: "query",
                outcome: Outcome::Failed {
                    table: "No such".into(),
                    id: None,
                    code: ErrorCode::Field,
                    message: "unknown table".into(),
                },
            },
            Answer {
                command: "insert",
                outcome: Outcome::Written {
                    table: "Contact".into(),
                    id: 7,
                    kind: ReturnKind::Insert,
                },
            },
        ];
        let commands = vec![
            Command::Query(Query::new("Contact")),
            Command::Query(Query::new("No such")),
            insert(),
        ];
        let xml = build_response(&[("corr".into(), "c".into())], None, &answers);
        let parsed = parse_response(&xml, &commands).expect("parses");
        let expected: Vec<Outcome> = answers.into_iter().map(|a| a.outcome).collect();
        assert_eq!(parsed.outcomes, expected);
        assert_eq!(parsed.attr("corr"), Some("c"));
    }

    #[test]
    fn padded_ids_are_written_with_spaces() {
        let mut fields = BTreeMap::new();
        fields.insert("RecordId".to_string(), "42".to_string());
        let answers = vec![Answer {
            command: "query",
            outcome: Outcome::Records(QueryPage {
                records: vec![Record {
                    table: "ExtKey".into(),
                    tableshort: "XK".into(),
                    id: 5,
                    fields,
                }],
                more: false,
            }),
        }];
        let xml = build_response_with(&[], None, &answers, AnswerStyle { pad_ids: true });
        assert!(xml.contains(r#"id="  5 ""#), "{xml}");
        assert!(xml.contains("<RecordId> 42  </RecordId>"), "{xml}");
    }
}
