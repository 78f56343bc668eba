//! Pins the exact XML the client sends (fixed corr).

use std::collections::BTreeMap;

use cgc_crm::{Command, CondOp, ImportField, Query, build_request, id_ref};

const CORR: &str = "7f3c0000-0000-4000-8000-000000000001";

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn query_request() {
    let q = Query::new("Contact")
        .with_cond("RepID", CondOp::Eq, "4")
        .with_cond("UpdDate", CondOp::Ge, "2026-11-20")
        .with_fields(&[
            "Subject", "Text", "Date", "Time", "EndDate", "EndTime", "UpdDate", "UpdTime", "DelCd",
        ])
        .with_max_records(500);
    insta::assert_snapshot!(build_request(
        &[Command::Query(q)],
        "OCSU",
        "secret",
        CORR,
        None
    ));
}

#[test]
fn insert_request() {
    let cmd = Command::Insert {
        table: "Contact".into(),
        fields: fields(&[
            ("Subject", "Review <Q4> & plan"),
            ("Date", "2026-11-20"),
            ("Time", "10:00"),
            ("Text", ""),
        ]),
    };
    insta::assert_snapshot!(build_request(&[cmd], "OCSU", "secret", CORR, None));
}

#[test]
fn update_request() {
    let cmd = Command::Update {
        table: "Contact".into(),
        id: 4_294_967_394,
        fields: fields(&[("Text", "line 1\nline 2"), ("ConnectorDeleted", "true")]),
    };
    insta::assert_snapshot!(build_request(&[cmd], "OCSU", "secret", CORR, None));
}

#[test]
fn delete_request() {
    let cmd = Command::Delete {
        table: "Task".into(),
        id: 4_294_967_400,
    };
    insta::assert_snapshot!(build_request(&[cmd], "OCSU", "secret", CORR, None));
}

#[test]
fn import_request() {
    let cmd = Command::Import {
        table: "ExtKey".into(),
        fields: vec![
            ImportField::new("ExtSystem", "GraphApi", true),
            ImportField::new("ExtKey", "AAMkAGI2=", true),
            ImportField::new("RecordId", "4294967394", false),
            ImportField::new("TableShort", "MA", false),
            ImportField::new("ExtUid", "040000008200E00074C5B7101A82E008", false),
        ],
    };
    insta::assert_snapshot!(build_request(&[cmd], "OCSU", "secret", CORR, None));
}

#[test]
fn create_linked_request_with_break() {
    // What CrmClient::create_linked sends after finding no link.
    let commands = vec![
        Command::Insert {
            table: "Contact".into(),
            fields: fields(&[("Subject", "Quarterly review"), ("Contact", "Meeting")]),
        },
        Command::BreakOnError,
        Command::Import {
            table: "ExtKey".into(),
            fields: vec![
                ImportField::new("ExtSystem", "GraphApi", true),
                ImportField::new("ExtKey", "AAMkAGI2=", true),
                ImportField::new("RecordId", id_ref(0), false),
                ImportField::new("TableShort", "MA", false),
                ImportField::new("ExtUid", "040000008200E00074C5B7101A82E008", false),
            ],
        },
    ];
    insta::assert_snapshot!(build_request(
        &commands,
        "OCSU",
        "secret",
        CORR,
        Some("rep1@contoso.com")
    ));
}

#[test]
fn impersonated_request() {
    let q = Query::new("Rep").with_cond("EMail", CondOp::Contains, "@contoso.com");
    insta::assert_snapshot!(build_request(
        &[Command::Query(q)],
        "OCSU",
        "p\"w&d",
        CORR,
        Some("rep1@contoso.com")
    ));
}
