//! Contract tests: the client against the in-process simulator, for every call and fault knob.

use std::collections::BTreeMap;
use std::time::Duration;

use cgc_crm::sim::{self, AfterCommit, CrmSim, CrmSimConfig, Seed};
use cgc_crm::{
    Command, CondOp, CrmClient, CrmConfig, CrmError, ErrorCode, ExtLink, ImportField, Outcome,
    Query, ReturnKind, record_id, seq_no, stat_no,
};

const REP1: &str = "rep1@contoso.com";

fn seed() -> Seed {
    let rep = |id: &str, mail: &str| {
        [
            ("RepID", id),
            ("Name", "Rep"),
            ("EMail", mail),
            ("ConnectorEnabled", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>()
    };
    let mut tables = BTreeMap::new();
    tables.insert(
        "Rep".to_string(),
        vec![rep("4", REP1), rep("5", "rep2@contoso.com")],
    );
    Seed {
        tables,
        ..Seed::default()
    }
}

async fn setup() -> (CrmSim, CrmClient) {
    setup_with(Duration::from_secs(10), "secret").await
}

async fn setup_with(timeout: Duration, password: &str) -> (CrmSim, CrmClient) {
    let cfg = CrmSimConfig {
        seed: seed(),
        ..CrmSimConfig::default()
    };
    let sim = sim::start("127.0.0.1:0".parse().expect("addr"), cfg)
        .await
        .expect("sim starts");
    let client = CrmClient::new(CrmConfig {
        url: sim.url(),
        user: "OCSU".into(),
        password: password.to_string().into(),
        timeout,
    })
    .expect("client");
    (sim, client)
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn link(key: &str) -> ExtLink {
    ExtLink {
        ext_key: key.into(),
        ext_uid: Some(format!("uid-{key}")),
        table_short: "MA".into(),
    }
}

fn remote_code(e: &CrmError) -> Option<ErrorCode> {
    match e {
        CrmError::Remote { code, .. } => Some(code.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn ids_are_stat_no_1_and_increasing_seq_no() {
    let (sim, _client) = setup().await;
    let a = sim.user_insert("Task", &[("Subject", "a")]);
    let b = sim.user_insert("Task", &[("Subject", "b")]);
    assert_eq!(stat_no(a), 1);
    assert!(seq_no(b) > seq_no(a));
    assert_eq!(record_id(1, seq_no(a)), a);
}

#[tokio::test]
async fn query_returns_records_with_system_fields_and_conditions_apply() {
    let (sim, client) = setup().await;
    let id = sim.user_insert(
        "Contact",
        &[("Subject", "Quarterly review"), ("RepID", "4")],
    );
    sim.user_insert("Contact", &[("Subject", "Other"), ("RepID", "5")]);
    let q = Query::new("Contact")
        .with_cond("RepID", CondOp::Eq, "4")
        .with_fields(&["Subject", "UpdDate", "UpdTime", "DelCd"]);
    let page = client.query(&q, None).await.expect("query");
    assert!(!page.more);
    assert_eq!(page.records.len(), 1);
    let rec = &page.records[0];
    assert_eq!(rec.id, id);
    assert_eq!(rec.table, "Contact");
    assert_eq!(rec.tableshort, "MA");
    assert_eq!(rec.field("Subject"), Some("Quarterly review"));
    assert_eq!(rec.field("DelCd"), Some("0"));
    let stored = sim.record("Contact", id).expect("stored");
    assert_eq!(rec.field("UpdDate"), stored.field("UpdDate"));
    assert_eq!(rec.field("UpdTime"), stored.field("UpdTime"));
    // Only the requested fields come back.
    assert_eq!(rec.fields.len(), 4);
}

#[tokio::test]
async fn watermark_condition_on_upd_date() {
    let (sim, client) = setup().await;
    let id = sim.user_insert("Task", &[("Subject", "t")]);
    let today = sim.record("Task", id).expect("rec").fields["UpdDate"].clone();
    let q = Query::new("Task").with_cond("UpdDate", CondOp::Ge, today.clone());
    assert_eq!(
        client.query(&q, None).await.expect("query").records.len(),
        1
    );
    let q = Query::new("Task").with_cond("UpdDate", CondOp::Gt, today);
    assert!(
        client
            .query(&q, None)
            .await
            .expect("query")
            .records
            .is_empty()
    );
}

#[tokio::test]
async fn get_by_id_and_missing_id() {
    let (sim, client) = setup().await;
    let id = sim.user_insert("Person", &[("FirstName", "Ada"), ("EMail", "ada@x.org")]);
    let rec = client
        .get("Person", id, &["FirstName", "EMail"], None)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(rec.field("FirstName"), Some("Ada"));
    assert_eq!(rec.tableshort, "KP");
    assert_eq!(
        client
            .get("Person", id + 1000, &[], None)
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn update_writes_fields_and_nochange_is_ok() {
    let (sim, client) = setup().await;
    let id = sim.user_insert("Task", &[("Subject", "old"), ("Status", "Open")]);
    let f = fields(&[("Subject", "new"), ("Status", "Completed")]);
    client
        .update("Task", id, &f, Some(REP1))
        .await
        .expect("update");
    let rec = sim.record("Task", id).expect("rec");
    assert_eq!(rec.field("Subject"), Some("new"));
    assert_eq!(rec.field("Status"), Some("Completed"));
    // Same values again: nochange, still Ok, and not a write.
    client
        .update("Task", id, &f, Some(REP1))
        .await
        .expect("update");
    let log = sim.write_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].command, "update");
    assert_eq!(log[0].id, id);
    assert_eq!(log[0].impersonate.as_deref(), Some(REP1));
    assert_eq!(log[0].fields, f);
}

#[tokio::test]
async fn execute_returns_outcomes_in_order() {
    let (sim, client) = setup().await;
    let existing = sim.user_insert("Task", &[("Subject", "x")]);
    let commands = vec![
        Command::Insert {
            table: "Task".into(),
            fields: fields(&[("Subject", "a")]),
        },
        Command::Update {
            table: "Task".into(),
            id: existing,
            fields: fields(&[("Subject", "x")]),
        },
        Command::Query(Query::new("Task").with_cond("Subject", CondOp::Eq, "A")),
        Command::Delete {
            table: "Task".into(),
            id: existing,
        },
    ];
    let out = client.execute(&commands, None).await.expect("execute");
    assert_eq!(out.len(), 4);
    let Outcome::Written {
        id: new_id,
        kind: ReturnKind::Insert,
        ..
    } = out[0]
    else {
        panic!("insert: {:?}", out[0]);
    };
    assert_eq!(
        out[1],
        Outcome::Written {
            table: "Task".into(),
            id: existing,
            kind: ReturnKind::NoChange
        }
    );
    let Outcome::Records(page) = &out[2] else {
        panic!("query: {:?}", out[2]);
    };
    assert_eq!(
        page.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![new_id]
    );
    assert!(matches!(
        out[3],
        Outcome::Written {
            kind: ReturnKind::Delete,
            ..
        }
    ));
}

#[tokio::test]
async fn create_linked_twice_makes_one_record() {
    let (sim, client) = setup().await;
    let f = fields(&[
        ("Subject", "Meeting"),
        ("Contact", "Meeting"),
        ("Date", "2026-11-20"),
    ]);
    let l = link("AAMkAbc=");
    let first = client
        .create_linked("Contact", &f, &l, Some(REP1))
        .await
        .expect("create");
    let second = client
        .create_linked("Contact", &f, &l, Some(REP1))
        .await
        .expect("create again");
    assert_eq!(first, second);
    assert_eq!(sim.records("Contact").len(), 1);
    let rec = sim.record("Contact", first).expect("record");
    assert_eq!(
        rec.field("RepID"),
        Some("4"),
        "insert belongs to the impersonated rep"
    );
    let links = sim.records("ExtKey");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].field("ExtSystem"), Some("GraphApi"));
    assert_eq!(links[0].field("ExtKey"), Some("AAMkAbc="));
    assert_eq!(links[0].field("ExtUid"), Some("uid-AAMkAbc="));
    assert_eq!(links[0].field("TableShort"), Some("MA"));
    assert_eq!(links[0].field("RecordId"), Some(first.to_string().as_str()));
    let commands: Vec<String> = sim.write_log().into_iter().map(|w| w.command).collect();
    assert_eq!(commands, vec!["insert", "import"]);
}

#[tokio::test]
async fn create_linked_failing_insert_writes_no_link() {
    let (sim, client) = setup().await;
    let f = fields(&[("Subject", "x"), ("ShowAs", "Sleeping")]);
    let err = client
        .create_linked("Contact", &f, &link("k1"), None)
        .await
        .expect_err("VALUE");
    assert_eq!(remote_code(&err), Some(ErrorCode::Value));
    assert!(sim.records("Contact").is_empty());
    assert!(sim.records("ExtKey").is_empty());
}

#[tokio::test]
async fn create_linked_sends_insert_then_link_import_with_the_literal_id() {
    let (sim, client) = setup().await;
    let id = client
        .create_linked(
            "Task",
            &fields(&[("Subject", "t")]),
            &link("AAMkT"),
            Some(REP1),
        )
        .await
        .expect("create");
    let log = sim.write_log();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].command.as_str(), log[0].table.as_str()),
        ("insert", "Task")
    );
    assert_eq!(log[0].id, id);
    assert_eq!(
        (log[1].command.as_str(), log[1].table.as_str()),
        ("import", "ExtKey")
    );
    assert_eq!(
        log[1].fields.get("RecordId").map(String::as_str),
        Some(id.to_string().as_str())
    );
    // Two requests besides the ExtKey look-up, none with a `ref` attribute.
    let requests = sim.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert!(
        requests.iter().all(|r| !r.contains("ref=")),
        "{requests:#?}"
    );
    assert!(requests[1].contains("<insert>") && !requests[1].contains("<import>"));
    assert!(requests[2].contains("<import>") && !requests[2].contains("<insert>"));
}

#[tokio::test]
async fn lost_link_answer_is_link_not_written_and_upsert_link_finishes_it() {
    let (sim, client) = setup().await;
    let f = fields(&[("Subject", "Lost answer")]);
    // The link import is committed, then answered with HTTP 500.
    sim.fail_after_commit(Some("ExtKey"), 1, AfterCommit::Status500);
    let err = client
        .create_linked("Contact", &f, &link("lost"), Some(REP1))
        .await
        .expect_err("link answer lost");
    let CrmError::LinkNotWritten { record_id, source } = &err else {
        panic!("expected LinkNotWritten, got {err:?}");
    };
    assert!(
        matches!(
            **source,
            CrmError::Transport {
                status: Some(500),
                ..
            }
        ),
        "{source:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.created_record(), Some(*record_id));
    let contacts = sim.records("Contact");
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].id, *record_id);
    // The caller finishes the link instead of creating again; the row is already there.
    client
        .upsert_link(*record_id, &link("lost"), Some(REP1))
        .await
        .expect("link");
    assert_eq!(sim.records("ExtKey").len(), 1);
    let again = client
        .create_linked("Contact", &f, &link("lost"), Some(REP1))
        .await
        .expect("retry");
    assert_eq!(again, *record_id);
    assert_eq!(sim.records("Contact").len(), 1);
}

#[tokio::test]
async fn refused_link_import_is_link_not_written_with_the_created_id() {
    let (sim, client) = setup().await;
    // Two unreadable GraphApi rows for the same key: find_link skips them (and counts them),
    // the link import's match-up finds two rows and is refused with VALUE.
    for _ in 0..2 {
        sim.user_insert(
            "ExtKey",
            &[
                ("ExtSystem", "GraphApi"),
                ("ExtKey", "dup"),
                ("TableShort", "MA"),
            ],
        );
    }
    let err = client
        .create_linked(
            "Contact",
            &fields(&[("Subject", "x")]),
            &link("dup"),
            Some(REP1),
        )
        .await
        .expect_err("link refused");
    let CrmError::LinkNotWritten { record_id, source } = &err else {
        panic!("expected LinkNotWritten, got {err:?}");
    };
    assert_eq!(remote_code(source), Some(ErrorCode::Value));
    assert!(sim.record("Contact", *record_id).is_some());
    assert_eq!(client.malformed_rows(), 2);
}

#[tokio::test]
async fn upsert_link_is_idempotent_and_find_link_finds_it() {
    let (sim, client) = setup().await;
    let rec = sim.user_insert("Person", &[("LastName", "Lovelace")]);
    let l = ExtLink {
        ext_key: "AAMkPerson".into(),
        ext_uid: None,
        table_short: "KP".into(),
    };
    client.upsert_link(rec, &l, None).await.expect("upsert");
    client
        .upsert_link(rec, &l, None)
        .await
        .expect("upsert again");
    assert_eq!(sim.records("ExtKey").len(), 1);
    assert_eq!(sim.write_log().len(), 1, "second import is nochange");
    let row = client
        .find_link("AAMkPerson")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(row.record_id, rec);
    assert_eq!(row.ext_key, "AAMkPerson");
    assert_eq!(row.ext_uid, None);
    assert_eq!(row.table_short, "KP");
    assert_eq!(row.id, sim.records("ExtKey")[0].id);
    // Relinking to another record updates the same row.
    let other = sim.user_insert("Person", &[("LastName", "Byron")]);
    client.upsert_link(other, &l, None).await.expect("relink");
    assert_eq!(sim.records("ExtKey").len(), 1);
    let row = client
        .find_link("AAMkPerson")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(row.record_id, other);
}

#[tokio::test]
async fn find_link_compares_ext_key_exactly() {
    let (sim, client) = setup().await;
    let rec = sim.user_insert("Task", &[("Subject", "t")]);
    client
        .upsert_link(rec, &link("AbC"), None)
        .await
        .expect("upsert");
    assert!(client.find_link("abc").await.expect("find").is_none());
    assert!(client.find_link("AbC").await.expect("find").is_some());
    assert!(client.find_link("nothing").await.expect("find").is_none());
}

#[tokio::test]
async fn find_link_by_uid_finds_graph_and_older_rows() {
    let (sim, client) = setup().await;
    let rec = sim.user_insert("Contact", &[("Subject", "migrated")]);
    let rec_s = rec.to_string();
    sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "Exchange"),
            ("ExtKey", "ews-id"),
            ("ExtUid", "040000008200E00074C5B7101A82E008"),
            ("TableShort", "MA"),
            ("RecordId", &rec_s),
        ],
    );
    let row = client
        .find_link_by_uid("040000008200E00074C5B7101A82E008")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(row.record_id, rec);
    assert_eq!(row.ext_key, "ews-id");
    // Once a GraphApi row exists it is preferred.
    let l = ExtLink {
        ext_key: "AAMkNew".into(),
        ext_uid: Some("040000008200E00074C5B7101A82E008".into()),
        table_short: "MA".into(),
    };
    client.upsert_link(rec, &l, None).await.expect("upsert");
    let row = client
        .find_link_by_uid("040000008200E00074C5B7101A82E008")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(row.ext_key, "AAMkNew");
    assert!(
        client
            .find_link_by_uid("unknown")
            .await
            .expect("find")
            .is_none()
    );
}

#[tokio::test]
async fn locked_n_times_then_success_through_retry() {
    let (sim, client) = setup().await;
    let id = sim.user_insert("Task", &[("Subject", "locked")]);
    sim.lock_record(id, 2);
    let f = fields(&[("Subject", "unlocked")]);
    let mut attempts = 0;
    let mut errors = Vec::new();
    loop {
        attempts += 1;
        match client.update("Task", id, &f, None).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && attempts < 10 => errors.push(remote_code(&e)),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(attempts, 3);
    assert_eq!(
        errors,
        vec![Some(ErrorCode::Locked), Some(ErrorCode::Locked)]
    );
    assert_eq!(
        sim.record("Task", id).expect("rec").field("Subject"),
        Some("unlocked")
    );
}

#[tokio::test]
async fn delay_longer_than_timeout_is_timeout() {
    let (sim, client) = setup_with(Duration::from_millis(100), "secret").await;
    sim.set_delay(Duration::from_millis(500));
    let err = client
        .query(&Query::new("Rep"), None)
        .await
        .expect_err("timeout");
    assert!(matches!(err, CrmError::Timeout), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn unavailable_is_retryable_transport_503_with_html_excerpt() {
    let (sim, client) = setup().await;
    sim.set_unavailable(Duration::from_secs(3600));
    let err = client
        .query(&Query::new("Rep"), None)
        .await
        .expect_err("503");
    match &err {
        CrmError::Transport {
            status: Some(503),
            excerpt,
        } => assert!(excerpt.contains("Service Unavailable"), "{excerpt}"),
        other => panic!("expected 503, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().starts_with("CRM.interface answered 503: "));
    assert_eq!(sim.request_count(), 1);
    sim.set_unavailable(Duration::ZERO);
    assert_eq!(
        client
            .query(&Query::new("Rep"), None)
            .await
            .expect("back")
            .records
            .len(),
        2
    );
    assert_eq!(sim.request_count(), 2);
}

#[tokio::test]
async fn wrong_password_is_auth() {
    let (_sim, client) = setup_with(Duration::from_secs(10), "wrong").await;
    let err = client
        .query(&Query::new("Rep"), None)
        .await
        .expect_err("AUTH");
    assert_eq!(remote_code(&err), Some(ErrorCode::Auth));
    assert!(!err.is_retryable());
    assert!(
        !err.to_string().contains("wrong"),
        "password must not appear: {err}"
    );
}

#[tokio::test]
async fn unknown_mailbox_is_impersonate() {
    let (sim, client) = setup().await;
    let err = client
        .create_linked(
            "Task",
            &fields(&[("Subject", "x")]),
            &link("k"),
            Some("nobody@contoso.com"),
        )
        .await
        .expect_err("IMPERSONATE");
    assert_eq!(remote_code(&err), Some(ErrorCode::Impersonate));
    assert!(sim.records("Task").is_empty());
}

#[tokio::test]
async fn impersonation_matches_rep_email_ignoring_case() {
    let (sim, client) = setup().await;
    let id = client
        .create_linked(
            "Task",
            &fields(&[("Subject", "x")]),
            &link("k"),
            Some("REP2@Contoso.com"),
        )
        .await
        .expect("create");
    assert_eq!(
        sim.record("Task", id).expect("rec").field("RepID"),
        Some("5")
    );
}

#[tokio::test]
async fn update_of_missing_record_is_notfound() {
    let (_sim, client) = setup().await;
    let err = client
        .update(
            "Task",
            record_id(1, 999_999),
            &fields(&[("Subject", "x")]),
            None,
        )
        .await
        .expect_err("NOTFOUND");
    assert_eq!(remote_code(&err), Some(ErrorCode::NotFound));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn unknown_table_field_and_system_field_are_field_errors() {
    let (sim, client) = setup().await;
    let id = sim.user_insert("Task", &[("Subject", "x")]);
    let err = client
        .query(&Query::new("Nope"), None)
        .await
        .expect_err("FIELD");
    assert_eq!(remote_code(&err), Some(ErrorCode::Field));
    let err = client
        .query(&Query::new("Task").with_fields(&["Nope"]), None)
        .await
        .expect_err("FIELD");
    assert_eq!(remote_code(&err), Some(ErrorCode::Field));
    let err = client
        .update("Task", id, &fields(&[("Colour", "red")]), None)
        .await
        .expect_err("FIELD");
    assert_eq!(remote_code(&err), Some(ErrorCode::Field));
    for system in ["UpdDate", "UpdTime", "DelCd"] {
        let err = client
            .update("Task", id, &fields(&[(system, "1")]), None)
            .await
            .expect_err("read-only");
        assert_eq!(remote_code(&err), Some(ErrorCode::Field), "{system}");
    }
    // StatNo/SeqNo inside a write are ignored.
    client
        .update(
            "Contact",
            sim.user_insert("Contact", &[]),
            &fields(&[("StatNo", "7"), ("Subject", "s")]),
            None,
        )
        .await
        .expect("StatNo ignored");
    // A name that is not an XML name never reaches the server.
    let before = sim.request_count();
    let err = client
        .query(&Query::new("Ta sk"), None)
        .await
        .expect_err("invalid name");
    assert_eq!(remote_code(&err), Some(ErrorCode::Field));
    assert_eq!(sim.request_count(), before);
}

#[tokio::test]
async fn rejected_values_are_value_errors() {
    let (sim, client) = setup().await;
    let task = sim.user_insert("Task", &[("Subject", "x")]);
    let contact = sim.user_insert("Contact", &[("Subject", "x")]);
    for (table, id, field, value) in [
        ("Task", task, "Status", "Waiting"),
        ("Task", task, "Priority", "Urgent"),
        ("Task", task, "DueDate", "2026-02-30"),
        ("Contact", contact, "Private", "yes"),
        ("Contact", contact, "ReminderUnit", "weeks"),
        ("Contact", contact, "Time", "25:00"),
    ] {
        let err = client
            .update(table, id, &fields(&[(field, value)]), None)
            .await
            .expect_err("VALUE");
        assert_eq!(remote_code(&err), Some(ErrorCode::Value), "{field}={value}");
    }
    assert_eq!(sim.write_log().len(), 0);
}

#[tokio::test]
async fn import_matching_two_records_is_value_and_writes_nothing() {
    let (sim, client) = setup().await;
    sim.user_insert("Person", &[("EMail", "dup@x.org"), ("LastName", "A")]);
    sim.user_insert("Person", &[("EMail", "dup@x.org"), ("LastName", "B")]);
    let cmd = Command::Import {
        table: "Person".into(),
        fields: vec![
            ImportField::new("EMail", "dup@x.org", true),
            ImportField::new("LastName", "C", false),
        ],
    };
    let out = client.execute(&[cmd], None).await.expect("execute");
    assert!(
        matches!(
            &out[0],
            Outcome::Failed {
                code: ErrorCode::Value,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(
        sim.records("Person")
            .iter()
            .all(|r| r.field("LastName") != Some("C"))
    );
    assert!(sim.write_log().is_empty());
}

#[tokio::test]
async fn paging_with_maxrecords_and_query_all() {
    let (sim, client) = setup().await;
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(sim.user_insert("Task", &[("Subject", &format!("task {i}")), ("RepID", "4")]));
    }
    sim.user_insert("Task", &[("Subject", "someone else's"), ("RepID", "5")]);
    let q = Query::new("Task")
        .with_cond("RepID", CondOp::Eq, "4")
        .with_fields(&["Subject"])
        .with_max_records(5);
    let page = client.query(&q, None).await.expect("page");
    assert_eq!(page.records.len(), 5);
    assert!(page.more);
    let all = client.query_all(&q, None).await.expect("all");
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids,
        "all records, sorted by id"
    );
    // Exactly maxrecords matches: no more.
    let q6 = Query::new("Task")
        .with_cond("RepID", CondOp::Eq, "5")
        .with_max_records(1);
    let page = client.query(&q6, None).await.expect("page");
    assert_eq!(page.records.len(), 1);
    assert!(!page.more);
    // Page size 1 still terminates and finds everything.
    let q1 = Query::new("Task").with_max_records(1);
    assert_eq!(client.query_all(&q1, None).await.expect("all").len(), 24);
}

#[tokio::test]
async fn deleted_records_semantics() {
    let (sim, client) = setup().await;
    let id = sim.user_insert("Contact", &[("Subject", "gone")]);
    sim.user_delete("Contact", id);
    let rec = sim.record("Contact", id).expect("still readable");
    assert_eq!(rec.field("DelCd"), Some("1"));
    let err = client
        .update("Contact", id, &fields(&[("Subject", "x")]), None)
        .await
        .expect_err("NOTFOUND");
    assert_eq!(remote_code(&err), Some(ErrorCode::NotFound));
    let out = client
        .execute(
            &[Command::Delete {
                table: "Contact".into(),
                id,
            }],
            None,
        )
        .await
        .expect("delete");
    assert_eq!(
        out[0],
        Outcome::Written {
            table: "Contact".into(),
            id,
            kind: ReturnKind::NoChange
        }
    );
    client
        .delete("Contact", id, None)
        .await
        .expect("delete is ok");
    // Queries return deleted records unless a condition excludes them.
    let q = Query::new("Contact").with_fields(&["DelCd"]);
    assert_eq!(client.query(&q, None).await.expect("q").records.len(), 1);
    let q = q.with_cond("DelCd", CondOp::Ne, "1");
    assert!(client.query(&q, None).await.expect("q").records.is_empty());
    let got = client
        .get("Contact", id, &["DelCd"], None)
        .await
        .expect("get")
        .expect("found");
    assert!(got.is_deleted());
    assert!(sim.write_log().is_empty());
}

#[tokio::test]
async fn api_delete_sets_delcd_and_is_logged() {
    let (sim, client) = setup().await;
    let id = sim.user_insert("Task", &[("Subject", "x")]);
    client.delete("Task", id, Some(REP1)).await.expect("delete");
    assert!(sim.record("Task", id).expect("rec").is_deleted());
    let log = sim.write_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].command, "delete");
    sim.clear_write_log();
    assert!(sim.write_log().is_empty());
}

#[tokio::test]
async fn break_stops_the_request_after_a_failed_command() {
    let (sim, client) = setup().await;
    let commands = vec![
        Command::Insert {
            table: "Task".into(),
            fields: fields(&[("Status", "Bogus")]),
        },
        Command::BreakOnError,
        Command::Insert {
            table: "Task".into(),
            fields: fields(&[("Subject", "must not exist")]),
        },
    ];
    let out = client.execute(&commands, None).await.expect("execute");
    assert_eq!(out.len(), 1);
    assert!(matches!(
        &out[0],
        Outcome::Failed {
            code: ErrorCode::Value,
            ..
        }
    ));
    assert!(sim.records("Task").is_empty());
    // Without a failure the break lets the request go on.
    let ok = vec![
        Command::Insert {
            table: "Task".into(),
            fields: fields(&[("Subject", "a")]),
        },
        Command::BreakOnError,
        Command::Insert {
            table: "Task".into(),
            fields: fields(&[("Subject", "b")]),
        },
    ];
    assert_eq!(client.execute(&ok, None).await.expect("execute").len(), 2);
    // And without a break an error does not stop the next command.
    let no_break = vec![commands[0].clone(), ok[0].clone()];
    let out = client.execute(&no_break, None).await.expect("execute");
    assert_eq!(out.len(), 2);
    assert!(matches!(out[1], Outcome::Written { .. }));
}

#[tokio::test]
async fn unknown_request_attributes_are_copied_onto_the_response() {
    let (sim, _client) = setup().await;
    let body = r#"<?xml version="1.0"?><request user="OCSU" pwd="secret" corr="abc" trace="t-1"><query><tables><table tablename="Rep"/></tables></query></request>"#;
    let answer = reqwest::Client::new()
        .post(sim.url())
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    assert!(
        answer.contains(r#"<response corr="abc" trace="t-1">"#),
        "{answer}"
    );
    assert!(!answer.contains("secret"));
}

#[tokio::test]
async fn malformed_request_is_http_400_not_a_panic() {
    let (sim, client) = setup().await;
    for body in [
        "",
        "<request",
        "not xml",
        "<!DOCTYPE x><request/>",
        "<request><bogus/></request>",
    ] {
        let resp = reqwest::Client::new()
            .post(sim.url())
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 400, "{body}");
    }
    // The simulator still answers afterwards.
    client
        .query(&Query::new("Rep"), None)
        .await
        .expect("still up");
}

#[tokio::test]
async fn shutdown_stops_the_simulator() {
    let (sim, client) = setup_with(Duration::from_secs(2), "secret").await;
    client.query(&Query::new("Rep"), None).await.expect("up");
    sim.shutdown();
    let fresh = CrmClient::new(CrmConfig {
        url: sim.url(),
        user: "OCSU".into(),
        password: "secret".to_string().into(),
        timeout: Duration::from_secs(2),
    })
    .expect("client");
    let mut stopped = false;
    for _ in 0..50 {
        if let Err(CrmError::Transport { status: None, .. }) =
            fresh.query(&Query::new("Rep"), None).await
        {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopped,
        "simulator still accepts connections after shutdown"
    );
}

#[tokio::test]
async fn find_link_skips_unreadable_rows_and_counts_them() {
    let (sim, client) = setup().await;
    let rec = sim.user_insert("Contact", &[("Subject", "x")]);
    let rec_s = rec.to_string();
    // Lower ids, but unreadable: empty RecordId, no TableShort, no RecordId at all.
    sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "k"),
            ("ExtUid", "u"),
            ("TableShort", "MA"),
            ("RecordId", ""),
        ],
    );
    sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "k"),
            ("ExtUid", "u"),
            ("RecordId", &rec_s),
        ],
    );
    sim.user_insert(
        "ExtKey",
        &[("ExtSystem", "GraphApi"), ("ExtKey", "k"), ("ExtUid", "u")],
    );
    let good = sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "k"),
            ("ExtUid", "u"),
            ("TableShort", "MA"),
            ("RecordId", &rec_s),
        ],
    );
    let row = client
        .find_link("k")
        .await
        .expect("no error")
        .expect("found");
    assert_eq!((row.id, row.record_id), (good, rec));
    assert_eq!(client.malformed_rows(), 3);
    let row = client
        .find_link_by_uid("u")
        .await
        .expect("no error")
        .expect("found");
    assert_eq!(row.id, good);
    assert_eq!(client.malformed_rows(), 6);
    // Only unreadable rows: no link, still no error.
    sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "bad"),
            ("RecordId", ""),
        ],
    );
    assert_eq!(client.find_link("bad").await.expect("no error"), None);
    assert_eq!(client.malformed_rows(), 7);
}

#[tokio::test]
async fn link_rows_for_record_lists_the_live_rows_of_that_record() {
    let (sim, client) = setup().await;
    let rec = sim.user_insert("Contact", &[("Subject", "x")]);
    let other = sim.user_insert("Contact", &[("Subject", "y")]);
    let (rec_s, other_s) = (rec.to_string(), other.to_string());
    let graph = sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "g"),
            ("TableShort", "MA"),
            ("RecordId", &rec_s),
        ],
    );
    let ews = sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "Exchange"),
            ("ExtKey", "e"),
            ("ExtUid", "uid"),
            ("TableShort", "MA"),
            ("RecordId", &rec_s),
        ],
    );
    let deleted = sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "d"),
            ("TableShort", "MA"),
            ("RecordId", &rec_s),
        ],
    );
    sim.user_delete("ExtKey", deleted);
    sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "o"),
            ("TableShort", "MA"),
            ("RecordId", &other_s),
        ],
    );
    let rows = client.link_rows_for_record(rec).await.expect("rows");
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![graph, ews]
    );
    assert_eq!(rows[0].ext_system, "GraphApi");
    assert_eq!(rows[0].ext_key, "g");
    assert_eq!(rows[1].ext_system, "Exchange");
    assert_eq!(rows[1].ext_uid.as_deref(), Some("uid"));
    assert!(
        rows.iter()
            .all(|r| r.record_id == rec && r.table_short == "MA")
    );
    assert!(
        client
            .link_rows_for_record(rec + 1000)
            .await
            .expect("rows")
            .is_empty()
    );
}
