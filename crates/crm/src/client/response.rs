//! The `<response>` document: parser (client side) and builder (simulator side). Every [profile]
//! answer shape lives here.

use super::error::CrmError;
use super::xml::{Element, XmlOut, parse_document};
use crate::model::{
    Command, ErrorCode, Outcome, QueryPage, Record, ReturnKind, is_valid_name, parse_record_id,
};

/// A `<response>` as read by the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedResponse {
    /// All attributes of `<response>` (e.g. the echoed `corr`).
    pub attrs: Vec<(String, String)>,
    /// A request-level `<return type="error">` (AUTH, IMPERSONATE, …).
    pub error: Option<(ErrorCode, String)>,
    /// One outcome per answered command (breaks have no answer).
    pub outcomes: Vec<Outcome>,
}

impl ParsedResponse {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `<response>` to the given request's commands.
pub fn parse_response(xml: &str, commands: &[Command]) -> Result<ParsedResponse, CrmError> {
    let root = parse_document(xml).map_err(|e| CrmError::parse(e.to_string(), xml))?;
    let bad = |detail: String| CrmError::parse(detail, xml);
    if root.name != "response" {
        return Err(bad(format!(
            "root element is <{}>, expected <response>",
            root.name
        )));
    }
    let mut parsed = ParsedResponse {
        attrs: root.attrs.clone(),
        error: None,
        outcomes: Vec::new(),
    };
    if let Some(ret) = root.child("return") {
        let (code, message) = match parse_return(ret).map_err(bad)? {
            Ret::Error(code, message) => (code, message),
            Ret::Ok(kind) => {
                return Err(bad(format!(
                    "request-level <return type=\"{}\"> is not an error",
                    kind.as_str()
                )));
            }
        };
        parsed.error = Some((code, message));
        return Ok(parsed);
    }
    let mut answered = commands
        .iter()
        .filter(|c| !matches!(c, Command::BreakOnError));
    for answer in &root.children {
        let Some(command) = answered.next() else {
            return Err(bad(format!(
                "more answers than commands (extra <{}>)",
                answer.name
            )));
        };
        if answer.name != command.element() {
            return Err(bad(format!(
                "answer is <{}>, expected <{}>",
                answer.name,
                command.element()
            )));
        }
        let table = command.table().unwrap_or_default();
        let outcome = match command {
            Command::Query(_) => parse_query_answer(answer, table),
            _ => parse_write_answer(answer, table),
        }
        .map_err(bad)?;
        parsed.outcomes.push(outcome);
    }
    Ok(parsed)
}

enum Ret {
    Ok(ReturnKind),
    Error(ErrorCode, String),
}

fn parse_return(ret: &Element) -> Result<Ret, String> {
    let ty = ret.attr("type").ok_or("<return> without type")?;
    Ok(match ty.trim() {
        "insert" => Ret::Ok(ReturnKind::Insert),
        "update" => Ret::Ok(ReturnKind::Update),
        "delete" => Ret::Ok(ReturnKind::Delete),
        "nochange" => Ret::Ok(ReturnKind::NoChange),
        "error" => Ret::Error(
            ErrorCode::parse(ret.attr("code").unwrap_or("")),
            ret.text.trim().to_string(),
        ),
        other => {
            return Err(format!(
                "unknown return type {:?}",
                other.chars().take(40).collect::<String>()
            ));
        }
    })
}

fn direct_failure(ret: &Element, table: &str) -> Result<Outcome, String> {
    match parse_return(ret)? {
        Ret::Error(code, message) => Ok(Outcome::Failed {
            table: table.to_string(),
            id: None,
            code,
            message,
        }),
        Ret::Ok(kind) => Err(format!(
            "<return type=\"{}\"> without a record",
            kind.as_str()
        )),
    }
}

fn parse_query_answer(answer: &Element, table: &str) -> Result<Outcome, String> {
    if let Some(ret) = answer.child("return") {
        return direct_failure(ret, table);
    }
    let more = answer
        .attr("more")
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("true"));
    let mut records = Vec::with_capacity(answer.children.len());
    for rec in &answer.children {
        if let Some(ret) = rec.child("return") {
            // A record-level error inside a query answer: the query failed.
            if let Ret::Error(code, message) = parse_return(ret)? {
                return Ok(Outcome::Failed {
                    table: rec.name.clone(),
                    id: rec.attr("id").and_then(parse_record_id),
                    code,
                    message,
                });
            }
        }
        records.push(parse_record(rec)?);
    }
    Ok(Outcome::Records(QueryPage { records, more }))
}

fn parse_record(rec: &Element) -> Result<Record, String> {
    let id_raw = rec
        .attr("id")
        .ok_or_else(|| format!("record <{}> without id", rec.name))?;
    let id = parse_record_id(id_raw).ok_or_else(|| {
        format!(
            "record <{}> has an invalid id {:?}",
            rec.name,
            id_raw.chars().take(30).collect::<String>()
        )
    })?;
    let fields = rec
        .children
        .iter()
        .filter(|f| f.children.is_empty())
        .map(|f| (f.name.clone(), f.text.clone()))
        .collect();
    Ok(Record {
        table: rec.name.clone(),
        tableshort: rec.attr("tableshort").unwrap_or_default().to_string(),
        id,
        fields,
    })
}

fn parse_write_answer(answer: &Element, table: &str) -> Result<Outcome, String> {
    if let Some(ret) = answer.child("return") {
        return direct_failure(ret, table);
    }
    let rec = match answer.children.as_slice() {
        [rec] => rec,
        [] => return Err(format!("empty <{}> answer", answer.name)),
        _ => {
            return Err(format!(
                "<{}> answer names more than one record",
                answer.name
            ));
        }
    };
    let ret = rec
        .child("return")
        .ok_or_else(|| format!("<{}> answer without <return>", answer.name))?;
    let id = match rec.attr("id") {
        Some(raw) => Some(
            parse_record_id(raw)
                .ok_or_else(|| format!("record <{}> has an invalid id", rec.name))?,
        ),
        None => None,
    };
    match parse_return(ret)? {
        Ret::Ok(kind) => Ok(Outcome::Written {
            table: rec.name.clone(),
            id: id.ok_or_else(|| format!("<{}> answer without record id", answer.name))?,
            kind,
        }),
        Ret::Error(code, message) => Ok(Outcome::Failed {
            table: rec.name.clone(),
            id,
            code,
            message,
        }),
    }
}

/// One command's answer for [`build_response`]: the command element name and what it did.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// `query`, `insert`, `update`, `delete` or `import`.
    pub command: &'static str,
    pub outcome: Outcome,
}

/// Builds a `<response>` document (used by the simulator). `attrs` are copied onto `<response>`;
/// `error` is a request-level error, in which case no answer is written.
pub fn build_response(
    attrs: &[(String, String)],
    error: Option<(&ErrorCode, &str)>,
    answers: &[Answer],
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
            write_answer(&mut out, answer);
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

fn write_answer(out: &mut XmlOut, answer: &Answer) {
    match &answer.outcome {
        Outcome::Records(page) => {
            if page.more {
                out.start(answer.command, &[("more", "true")]);
            } else {
                out.start(answer.command, &[]);
            }
            for rec in &page.records {
                let id = rec.id.to_string();
                out.start(&rec.table, &[("tableshort", &rec.tableshort), ("id", &id)]);
                for (name, value) in &rec.fields {
                    out.text_element(name, &[], value);
                }
                out.end(&rec.table);
            }
            out.end(answer.command);
        }
        Outcome::Written { table, id, kind } => {
            let id = id.to_string();
            let short = crate::sim::schema::table_short(table).unwrap_or_default();
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
                let id = id.map(|i| i.to_string());
                let short = crate::sim::schema::table_short(table);
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
    use crate::model::Query;
    use std::collections::BTreeMap;

    fn insert() -> Command {
        Command::Insert {
            table: "Contact".into(),
            fields: BTreeMap::new(),
        }
    }

    #[test]
    fn parses_profile_examples() {
        let xml = r#"<response corr="7f3c">
  <query more="true">
    <Contact tableshort="MA" id=" 4294967394 ">
      <Subject>Quarterly review</Subject><Text></Text>
    </Contact>
  </query>
  <update><Contact tableshort="MA" id="4294967999"><return type="error" code="NOTFOUND">record not found</return></Contact></update>
  <import><ExtKey tableshort="XK" id="4294967500"><return type="nochange"/></ExtKey></import>
</response>"#;
        let commands = vec![
            Command::Query(Query::new("Contact")),
            Command::Update {
                table: "Contact".into(),
                id: 4_294_967_999,
                fields: BTreeMap::new(),
            },
            Command::BreakOnError,
            Command::Import {
                table: "ExtKey".into(),
                fields: vec![],
            },
        ];
        let parsed = parse_response(xml, &commands).expect("parses");
        assert_eq!(parsed.attr("corr"), Some("7f3c"));
        assert_eq!(parsed.outcomes.len(), 3);
        let Outcome::Records(page) = &parsed.outcomes[0] else {
            panic!("expected records, got {:?}", parsed.outcomes[0]);
        };
        assert!(page.more);
        assert_eq!(page.records[0].id, 4_294_967_394);
        assert_eq!(page.records[0].tableshort, "MA");
        assert_eq!(page.records[0].field("Subject"), Some("Quarterly review"));
        assert_eq!(page.records[0].field("Text"), Some(""));
        assert_eq!(
            parsed.outcomes[1],
            Outcome::Failed {
                table: "Contact".into(),
                id: Some(4_294_967_999),
                code: ErrorCode::NotFound,
                message: "record not found".into()
            }
        );
        assert_eq!(
            parsed.outcomes[2],
            Outcome::Written {
                table: "ExtKey".into(),
                id: 4_294_967_500,
                kind: ReturnKind::NoChange
            }
        );
    }

    #[test]
    fn request_level_error_is_reported() {
        let xml =
            r#"<response corr="x"><return type="error" code="AUTH">bad login</return></response>"#;
        let parsed = parse_response(xml, &[insert()]).expect("parses");
        assert_eq!(parsed.error, Some((ErrorCode::Auth, "bad login".into())));
    }

    #[test]
    fn unknown_return_type_is_a_parse_error() {
        let xml = r#"<response><insert><Contact id="1"><return type="maybe"/></Contact></insert></response>"#;
        let err = parse_response(xml, &[insert()]).expect_err("rejected");
        assert!(
            matches!(err, CrmError::Parse { ref detail, .. } if detail.contains("unknown return type")),
            "{err:?}"
        );
    }

    #[test]
    fn mismatched_or_extra_answers_are_parse_errors() {
        let wrong = r#"<response><update><Contact id="1"><return type="update"/></Contact></update></response>"#;
        assert!(matches!(
            parse_response(wrong, &[insert()]),
            Err(CrmError::Parse { .. })
        ));
        let extra = r#"<response><insert><Contact id="1"><return type="insert"/></Contact></insert><insert/></response>"#;
        assert!(matches!(
            parse_response(extra, &[insert()]),
            Err(CrmError::Parse { .. })
        ));
    }

    #[test]
    fn fewer_answers_than_commands_is_a_stopped_request() {
        let xml = r#"<response><insert><Contact><return type="error" code="FIELD">unknown field X</return></Contact></insert></response>"#;
        let parsed =
            parse_response(xml, &[insert(), Command::BreakOnError, insert()]).expect("parses");
        assert_eq!(parsed.outcomes.len(), 1);
        assert!(matches!(
            &parsed.outcomes[0],
            Outcome::Failed {
                code: ErrorCode::Field,
                id: None,
                ..
            }
        ));
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
}
