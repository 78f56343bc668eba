//! The `<response>` parser (client side). Every [profile] answer shape the client reads lives
//! here; the simulator writes its answers with its own builder (`sim::build_response`).
//!
//! Tolerance: a record element of a query answer that cannot be read (no id, an id that is not
//! a record id, an unknown `return` type inside it) is skipped, logged and counted in
//! [`ParsedResponse::malformed`]; it never fails the whole answer. Ids are trimmed.

use super::error::CrmError;
use super::xml::{Element, parse_document};
use crate::model::{Command, ErrorCode, Outcome, QueryPage, Record, ReturnKind, parse_record_id};

/// A `<response>` as read by the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedResponse {
    /// All attributes of `<response>` (e.g. the echoed `corr`).
    pub attrs: Vec<(String, String)>,
    /// A request-level `<return type="error">` (AUTH, IMPERSONATE, …).
    pub error: Option<(ErrorCode, String)>,
    /// One outcome per answered command (breaks have no answer).
    pub outcomes: Vec<Outcome>,
    /// Record elements of query answers that were skipped because they could not be read.
    pub malformed: u64,
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
        malformed: 0,
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
            Command::Query(_) => parse_query_answer(answer, table, &mut parsed.malformed),
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

fn parse_query_answer(
    answer: &Element,
    table: &str,
    malformed: &mut u64,
) -> Result<Outcome, String> {
    if let Some(ret) = answer.child("return") {
        return direct_failure(ret, table);
    }
    let more = answer
        .attr("more")
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("true"));
    let mut records = Vec::with_capacity(answer.children.len());
    for rec in &answer.children {
        if let Some(ret) = rec.child("return") {
            match parse_return(ret) {
                // A record-level error inside a query answer: the query failed.
                Ok(Ret::Error(code, message)) => {
                    return Ok(Outcome::Failed {
                        table: rec.name.clone(),
                        id: rec.attr("id").and_then(parse_record_id),
                        code,
                        message,
                    });
                }
                Ok(Ret::Ok(_)) => {}
                Err(reason) => {
                    skip_malformed(rec, &reason, malformed);
                    continue;
                }
            }
        }
        match parse_record(rec) {
            Ok(record) => records.push(record),
            Err(reason) => skip_malformed(rec, &reason, malformed),
        }
    }
    Ok(Outcome::Records(QueryPage { records, more }))
}

fn skip_malformed(rec: &Element, reason: &str, malformed: &mut u64) {
    *malformed += 1;
    tracing::warn!(
        element = %rec.name.chars().take(40).collect::<String>(),
        reason,
        "CRM.interface answer: skipping a record that cannot be read"
    );
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
        .filter(|f| f.children.is_empty() && f.name != "return")
        .map(|f| (f.name.clone(), f.text.clone()))
        .collect();
    Ok(Record {
        table: rec.name.clone(),
        tableshort: rec
            .attr("tableshort")
            .unwrap_or_default()
            .trim()
            .to_string(),
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
    fn malformed_query_records_are_skipped_and_counted() {
        let xml = r#"<response><query>
  <Contact tableshort="MA" id="  4294967394  "><Subject>ok</Subject></Contact>
  <Contact tableshort="MA"><Subject>no id</Subject></Contact>
  <Contact tableshort="MA" id="abc"><Subject>bad id</Subject></Contact>
  <Contact tableshort="MA" id=""><Subject>empty id</Subject></Contact>
  <Contact tableshort="MA" id="5"><return type="perhaps"/></Contact>
  <Contact tableshort=" MA " id="7"><Subject>ok too</Subject></Contact>
</query></response>"#;
        let parsed = parse_response(xml, &[Command::Query(Query::new("Contact"))]).expect("parses");
        assert_eq!(parsed.malformed, 4);
        let Outcome::Records(page) = &parsed.outcomes[0] else {
            panic!("{:?}", parsed.outcomes);
        };
        let ids: Vec<u64> = page.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![4_294_967_394, 7]);
        assert_eq!(page.records[1].tableshort, "MA");
    }
}
