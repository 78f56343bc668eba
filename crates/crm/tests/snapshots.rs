//! Pins the exact XML the client sends (fixed corr).

use std::collections::BTreeMap;

use std::time::Duration;

use cgc_crm::sim::{self, CrmSimConfig, Seed};
use cgc_crm::{Command, CondOp, CrmClient, CrmConfig, ExtLink, ImportField, Query, build_request};

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

/// Replaces the random `corr="…"` of a request with a fixed one.
fn fixed_corr(xml: &str) -> String {
    match xml.split_once("corr=\"") {
        Some((head, rest)) => {
            let tail = rest.split_once('"').map(|(_, t)| t).unwrap_or_default();
            format!("{head}corr=\"{CORR}\"{tail}")
        }
        None => xml.to_string(),
    }
}

#[tokio::test]
async fn create_linked_requests() {
    // What CrmClient::create_linked really sends: the ExtKey look-up, the insert, then the link
    // import with the new id as a literal (no `ref` attribute, no id chaining in one request).
    let rep: std::collections::BTreeMap<String, String> =
        [("RepID", "4"), ("EMail", "rep1@contoso.com")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let seed = Seed {
        tables: [("Rep".to_string(), vec![rep])].into_iter().collect(),
        ..Seed::default()
    };
    let sim = sim::start(
        "127.0.0.1:0".parse().expect("addr"),
        CrmSimConfig {
            seed,
            ..CrmSimConfig::default()
        },
    )
    .await
    .expect("sim");
    let client = CrmClient::new(CrmConfig {
        url: sim.url(),
        user: "OCSU".into(),
        password: "secret".to_string().into(),
        timeout: Duration::from_secs(10),
    })
    .expect("client");
    let id = client
        .create_linked(
            "Contact",
            &fields(&[("Subject", "Quarterly review"), ("Contact", "Meeting")]),
            &ExtLink {
                ext_key: "AAMkAGI2=".into(),
                ext_uid: Some("040000008200E00074C5B7101A82E008".into()),
                table_short: "MA".into(),
            },
            Some("rep1@contoso.com"),
        )
        .await
        .expect("created");
    assert_eq!(
        id,
        cgc_crm::record_id(1, 2),
        "ids are predictable for the snapshot"
    );
    let requests: Vec<String> = sim.requests().iter().map(|r| fixed_corr(r)).collect();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    insta::assert_snapshot!(requests.join("\n\n"));
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
