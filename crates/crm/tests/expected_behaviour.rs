//! One test per CRM.interface line (17–28) of `shared/protocols/expected-behaviour.md`, plus the
//! simulator's "empty answers" and "committed but failed" faults. Every test drives the simulator
//! with raw XML POSTs and reads the raw answer, so it checks the server, not the client's
//! assumptions.

use std::time::Duration;

use cgc_crm::client::xml::{Element, parse_document};
use cgc_crm::sim::{self, AfterCommit, CrmSim, CrmSimConfig, EmptyAnswers, Seed};
use cgc_crm::{CrmClient, CrmConfig, CrmError, ExtLink, Query, parse_record_id};

const AUTH: &str = r#"user="OCSU" pwd="secret" corr="t-1""#;

async fn start() -> CrmSim {
    let rep: std::collections::BTreeMap<String, String> =
        [("RepID", "4"), ("EMail", "rep1@contoso.com")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let seed = Seed {
        tables: [("Rep".to_string(), vec![rep])].into_iter().collect(),
        ..Seed::default()
    };
    sim::start(
        "127.0.0.1:0".parse().expect("addr"),
        CrmSimConfig {
            seed,
            ..CrmSimConfig::default()
        },
    )
    .await
    .expect("sim starts")
}

struct Raw {
    status: u16,
    content_type: Option<String>,
    retry_after: bool,
    body: String,
}

impl Raw {
    fn doc(&self) -> Element {
        assert_eq!(self.status, 200, "{}", self.body);
        parse_document(&self.body).expect("the answer is XML")
    }
}

async fn post_with(http: &reqwest::Client, sim: &CrmSim, commands: &str) -> reqwest::Result<Raw> {
    let body =
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><request {AUTH}>{commands}</request>"#);
    let resp = http
        .post(sim.url())
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let retry_after = resp.headers().contains_key("retry-after");
    let body = resp.text().await?;
    Ok(Raw {
        status,
        content_type,
        retry_after,
        body,
    })
}

async fn post(sim: &CrmSim, commands: &str) -> Raw {
    post_with(&reqwest::Client::new(), sim, commands)
        .await
        .expect("the simulator answers")
}

/// The records of the `n`-th answer of a response.
fn records(doc: &Element, n: usize) -> Vec<&Element> {
    doc.children[n].children.iter().collect()
}

fn field<'a>(rec: &'a Element, name: &str) -> Option<&'a str> {
    rec.child(name).map(|f| f.text.as_str())
}

/// `<query>` on `table` with `conds` (`(field, op, value)`), raw XML.
fn query(table: &str, conds: &[(&str, &str, &str)]) -> String {
    let conds: String = conds
        .iter()
        .map(|(f, op, v)| {
            let op = op.replace('<', "&lt;").replace('>', "&gt;");
            format!(r#"<cond tablename="{table}" fieldname="{f}" op="{op}" value="{v}"/>"#)
        })
        .collect();
    format!(
        r#"<query><tables><table tablename="{table}"/></tables><condition>{conds}</condition></query>"#
    )
}

async fn count(sim: &CrmSim, table: &str, conds: &[(&str, &str, &str)]) -> usize {
    records(&post(sim, &query(table, conds)).await.doc(), 0).len()
}

/// `(return type, return code)` of the `n`-th write answer.
fn ret(doc: &Element, n: usize) -> (String, Option<String>) {
    let answer = &doc.children[n];
    let ret = answer
        .children
        .iter()
        .find_map(|rec| rec.child("return"))
        .or_else(|| answer.child("return"))
        .expect("a <return>");
    (
        ret.attr("type").unwrap_or_default().to_string(),
        ret.attr("code").map(str::to_string),
    )
}

fn written_id(doc: &Element, n: usize) -> u64 {
    let raw = doc.children[n].children[0].attr("id").expect("id");
    parse_record_id(raw).expect("a record id")
}

fn client(sim: &CrmSim) -> CrmClient {
    CrmClient::new(CrmConfig {
        url: sim.url(),
        user: "OCSU".into(),
        password: "secret".to_string().into(),
        timeout: Duration::from_secs(10),
    })
    .expect("client")
}

#[tokio::test]
async fn line_17_text_ignores_case_integers_compare_as_numbers_times_as_hh_mm_ss() {
    let sim = start().await;
    sim.user_insert("Task", &[("Subject", "Call ACME"), ("RepID", "10")]);
    sim.user_insert("Task", &[("Subject", "other"), ("RepID", "9")]);
    sim.user_insert("Contact", &[("Subject", "late"), ("Time", "10:15")]);
    sim.user_insert("Contact", &[("Subject", "early"), ("Time", "09:05")]);
    assert_eq!(
        count(&sim, "Task", &[("Subject", "=", "call acme")]).await,
        1
    );
    assert_eq!(
        count(&sim, "Task", &[("Subject", "!=", "CALL acme")]).await,
        1
    );
    assert_eq!(count(&sim, "Task", &[("Subject", "*=", "acm")]).await, 1);
    // "10" > "9" as integers although not as text; "010" equals "10".
    assert_eq!(count(&sim, "Task", &[("RepID", ">", "9")]).await, 1);
    assert_eq!(count(&sim, "Task", &[("RepID", "=", "010")]).await, 1);
    // A stored "10:15" is 10:15:00.
    assert_eq!(
        count(&sim, "Contact", &[("Time", "=", "10:15:00")]).await,
        1
    );
    assert_eq!(
        count(&sim, "Contact", &[("Time", ">=", "10:15:30")]).await,
        0
    );
    assert_eq!(
        count(&sim, "Contact", &[("Time", "<", "10:00:00")]).await,
        1
    );
}

#[tokio::test]
async fn line_18_no_order_is_promised_and_no_maxrecords_means_no_cap() {
    let sim = start().await;
    let mut ids: Vec<u64> = (0..600)
        .map(|i| sim.user_insert("Task", &[("Subject", &format!("t{i}"))]))
        .collect();
    let answer = post(&sim, &query("Task", &[])).await.doc();
    let query_el = &answer.children[0];
    assert_eq!(
        query_el.attr("more"),
        None,
        "an uncapped answer is complete"
    );
    let got: Vec<u64> = query_el
        .children
        .iter()
        .map(|r| parse_record_id(r.attr("id").expect("id")).expect("id"))
        .collect();
    assert_eq!(got.len(), 600, "more records than any default page");
    assert!(
        !got.is_sorted(),
        "the simulator does not answer in ascending id order"
    );
    let mut sorted = got.clone();
    sorted.sort_unstable();
    ids.sort_unstable();
    assert_eq!(sorted, ids);
}

#[tokio::test]
async fn line_19_ids_may_be_padded_and_exceed_2_pow_63() {
    let sim = start().await;
    sim.set_next_id(u32::MAX, 7);
    sim.set_pad_ids(true);
    let doc = post(
        &sim,
        "<insert><fields><Contact><Subject>big</Subject></Contact></fields></insert>",
    )
    .await
    .doc();
    let raw_id = doc.children[0].children[0]
        .attr("id")
        .expect("id")
        .to_string();
    assert_ne!(raw_id.trim(), raw_id, "the id is padded with spaces");
    let id = parse_record_id(&raw_id).expect("a record id once trimmed");
    assert!(id > 1u64 << 63, "{id}");
    assert_eq!(id, cgc_crm::record_id(u32::MAX, 7));
    // The id selects the record; RecordId values are padded too.
    let found = post(&sim, &query("Contact", &[("id", "=", &id.to_string())]))
        .await
        .doc();
    let recs = records(&found, 0);
    assert_eq!(recs.len(), 1);
    assert_eq!(parse_record_id(recs[0].attr("id").expect("id")), Some(id));
    let link = format!(
        "<import><fields><ExtKey><ExtSystem matchup=\"true\">GraphApi</ExtSystem><ExtKey matchup=\"true\">k</ExtKey><RecordId>{id}</RecordId><TableShort>MA</TableShort></ExtKey></fields></import>"
    );
    assert_eq!(ret(&post(&sim, &link).await.doc(), 0).0, "insert");
    let rows = post(&sim, &query("ExtKey", &[])).await.doc();
    let record_id = field(records(&rows, 0)[0], "RecordId").expect("RecordId");
    assert_ne!(record_id.trim(), record_id);
    assert_eq!(parse_record_id(record_id), Some(id));
    // The client trims both.
    let crm = client(&sim);
    let row = crm.find_link("k").await.expect("find").expect("found");
    assert_eq!(row.record_id, id);
    let rec = crm
        .get("Contact", id, &["Subject"], None)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(rec.id, id);
}

#[tokio::test]
async fn line_20_delcd_is_0_then_1_and_queries_return_deleted_records() {
    let sim = start().await;
    let doc = post(
        &sim,
        "<insert><fields><Task><Subject>x</Subject></Task></fields></insert>",
    )
    .await
    .doc();
    let id = written_id(&doc, 0);
    let q = query("Task", &[("id", "=", &id.to_string())]);
    let live = post(&sim, &q).await.doc();
    assert_eq!(field(records(&live, 0)[0], "DelCd"), Some("0"));
    let del = format!(r#"<delete><fields><Task id="{id}"/></fields></delete>"#);
    assert_eq!(ret(&post(&sim, &del).await.doc(), 0).0, "delete");
    let gone = post(&sim, &q).await.doc();
    assert_eq!(field(records(&gone, 0)[0], "DelCd"), Some("1"));
    assert_eq!(count(&sim, "Task", &[]).await, 1);
    assert_eq!(count(&sim, "Task", &[("DelCd", "!=", "1")]).await, 0);
    // Profile: update of a deleted record is NOTFOUND, delete again is nochange.
    let upd =
        format!(r#"<update><fields><Task id="{id}"><Subject>y</Subject></Task></fields></update>"#);
    assert_eq!(
        ret(&post(&sim, &upd).await.doc(), 0).1.as_deref(),
        Some("NOTFOUND")
    );
    assert_eq!(ret(&post(&sim, &del).await.doc(), 0).0, "nochange");
}

#[tokio::test]
async fn line_21_times_hold_hh_mm_and_upd_time_may_repeat_across_versions() {
    let sim = start().await;
    let doc = post(
        &sim,
        "<insert><fields><Contact><Time>10:15:42</Time><EndTime>11:00:59</EndTime></Contact></fields></insert>",
    )
    .await
    .doc();
    let id = written_id(&doc, 0);
    let q = query("Contact", &[("id", "=", &id.to_string())]);
    let read = |doc: &Element, f: &str| field(records(doc, 0)[0], f).map(str::to_string);
    let rec = post(&sim, &q).await.doc();
    assert_eq!(read(&rec, "Time").as_deref(), Some("10:15"));
    assert_eq!(read(&rec, "EndTime").as_deref(), Some("11:00"));

    // UpdTime in HH:MM: two versions in one minute share UpdDate/UpdTime (Berlin = UTC+1).
    sim.set_upd_time_minutes(true);
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .to_utc()
    };
    let update = |subject: &str| {
        format!(
            r#"<update><fields><Contact id="{id}"><Subject>{subject}</Subject></Contact></fields></update>"#
        )
    };
    sim.set_clock(Some(at("2026-11-20T09:00:10Z")));
    assert_eq!(ret(&post(&sim, &update("v1")).await.doc(), 0).0, "update");
    let v1 = post(&sim, &q).await.doc();
    sim.set_clock(Some(at("2026-11-20T09:00:50Z")));
    assert_eq!(ret(&post(&sim, &update("v2")).await.doc(), 0).0, "update");
    let v2 = post(&sim, &q).await.doc();
    assert_eq!(read(&v1, "Subject").as_deref(), Some("v1"));
    assert_eq!(read(&v2, "Subject").as_deref(), Some("v2"));
    assert_eq!(read(&v1, "UpdDate").as_deref(), Some("2026-11-20"));
    assert_eq!(read(&v1, "UpdTime").as_deref(), Some("10:00"));
    assert_eq!(read(&v1, "UpdDate"), read(&v2, "UpdDate"));
    assert_eq!(read(&v1, "UpdTime"), read(&v2, "UpdTime"));
    // UpdTime may as well be HH:MM:SS.
    sim.set_upd_time_minutes(false);
    sim.set_clock(Some(at("2026-11-20T09:00:55Z")));
    post(&sim, &update("v3")).await.doc();
    assert_eq!(
        read(&post(&sim, &q).await.doc(), "UpdTime").as_deref(),
        Some("10:00:55")
    );
}

#[tokio::test]
async fn line_22_closed_catalogs_reject_other_values_contact_type_and_status_take_any_text() {
    let sim = start().await;
    for (table, field, value) in [
        ("Task", "Status", "Waiting"),
        ("Task", "Priority", "Urgent"),
        ("Contact", "Priority", "Urgent"),
        ("Contact", "ShowAs", "Sleeping"),
        ("Contact", "ReminderUnit", "weeks"),
    ] {
        let cmd = format!(
            "<insert><fields><{table}><{field}>{value}</{field}></{table}></fields></insert>"
        );
        let doc = post(&sim, &cmd).await.doc();
        assert_eq!(
            ret(&doc, 0),
            ("error".into(), Some("VALUE".into())),
            "{table}.{field}"
        );
    }
    assert!(sim.records("Task").is_empty() && sim.records("Contact").is_empty());
    for (table, field, value) in [
        ("Task", "Status", "On hold"),
        ("Contact", "ShowAs", "Out of office"),
        ("Contact", "ReminderUnit", "min"),
        ("Contact", "Contact", "Something new"),
        ("Contact", "Status", "whatever text"),
    ] {
        let cmd = format!(
            "<insert><fields><{table}><{field}>{value}</{field}></{table}></fields></insert>"
        );
        let doc = post(&sim, &cmd).await.doc();
        assert_eq!(ret(&doc, 0).0, "insert", "{table}.{field}={value}");
        let stored = sim.record(table, written_id(&doc, 0)).expect("stored");
        assert_eq!(stored.field(field), Some(value));
    }
}

#[tokio::test]
async fn line_23_booleans_are_true_false_or_empty_and_system_fields_are_field() {
    let sim = start().await;
    for value in ["true", "false", ""] {
        let cmd = format!(
            "<insert><fields><Contact><Private>{value}</Private></Contact></fields></insert>"
        );
        assert_eq!(
            ret(&post(&sim, &cmd).await.doc(), 0).0,
            "insert",
            "{value:?}"
        );
    }
    for value in ["yes", "TRUE", "1"] {
        let cmd = format!(
            "<insert><fields><Contact><Private>{value}</Private></Contact></fields></insert>"
        );
        let doc = post(&sim, &cmd).await.doc();
        assert_eq!(ret(&doc, 0).1.as_deref(), Some("VALUE"), "{value:?}");
    }
    for system in ["UpdDate", "UpdTime", "DelCd"] {
        let cmd = format!(
            "<insert><fields><Task><Subject>s</Subject><{system}>1</{system}></Task></fields></insert>"
        );
        let doc = post(&sim, &cmd).await.doc();
        assert_eq!(ret(&doc, 0).1.as_deref(), Some("FIELD"), "{system}");
    }
    assert!(sim.records("Task").is_empty());
}

#[tokio::test]
async fn line_24_unknown_attributes_are_ignored_and_no_id_of_the_same_request_can_be_used() {
    let sim = start().await;
    let doc = post(
        &sim,
        r#"<insert><fields><Contact><Subject lang="de" ref="1">Hello</Subject><Text foo="bar"/></Contact></fields></insert>
<break if="/root/response/*[last()]//return[@type='error']"/>
<import><fields><ExtKey><ExtSystem matchup="true">GraphApi</ExtSystem><ExtKey matchup="true">AAMk</ExtKey><RecordId ref="0"/><TableShort>MA</TableShort></ExtKey></fields></import>"#,
    )
    .await
    .doc();
    let contact = written_id(&doc, 0);
    let stored = sim.record("Contact", contact).expect("contact");
    assert_eq!(
        stored.field("Subject"),
        Some("Hello"),
        "attributes are ignored"
    );
    assert_eq!(
        stored.field("Text"),
        Some(""),
        "attributes and no text: empty value"
    );
    assert_eq!(ret(&doc, 1).0, "insert");
    let row = sim
        .record("ExtKey", written_id(&doc, 1))
        .expect("ExtKey row");
    assert_eq!(
        row.field("RecordId"),
        Some(""),
        "<RecordId ref=\"0\"/> stores an empty RecordId, never the id of command 0"
    );
}

#[tokio::test]
async fn line_25_import_match_up_is_exact_and_two_matches_are_value_writing_nothing() {
    let sim = start().await;
    let first = sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "AbC"),
            ("RecordId", "1"),
        ],
    );
    let import = |key: &str, record: &str| {
        format!(
            r#"<import><fields><ExtKey><ExtSystem matchup="true">GraphApi</ExtSystem><ExtKey matchup="true">{key}</ExtKey><RecordId>{record}</RecordId></ExtKey></fields></import>"#
        )
    };
    // Other letter case, a trailing space: no match, a new row.
    for key in ["abc", "AbC "] {
        let doc = post(&sim, &import(key, "2")).await.doc();
        assert_eq!(ret(&doc, 0).0, "insert", "{key:?}");
        assert_ne!(written_id(&doc, 0), first);
    }
    // The exact key updates the row it finds.
    let doc = post(&sim, &import("AbC", "3")).await.doc();
    assert_eq!(ret(&doc, 0).0, "update");
    assert_eq!(written_id(&doc, 0), first);
    // Two matches: VALUE, nothing written.
    sim.user_insert(
        "ExtKey",
        &[
            ("ExtSystem", "GraphApi"),
            ("ExtKey", "AbC"),
            ("RecordId", "4"),
        ],
    );
    let before = sim.records("ExtKey");
    sim.clear_write_log();
    let doc = post(&sim, &import("AbC", "5")).await.doc();
    assert_eq!(ret(&doc, 0), ("error".into(), Some("VALUE".into())));
    assert_eq!(sim.records("ExtKey"), before);
    assert!(sim.write_log().is_empty());
}

#[tokio::test]
async fn line_26_unknown_break_stops_the_request_and_503_is_html_without_retry_after() {
    let sim = start().await;
    for brk in [r#"<break if="count(//x) &gt; 0"/>"#, "<break/>"] {
        let doc = post(
            &sim,
            &format!(
                "<insert><fields><Task><Subject>before</Subject></Task></fields></insert>{brk}<insert><fields><Task><Subject>after</Subject></Task></fields></insert>"
            ),
        )
        .await
        .doc();
        assert_eq!(
            doc.children.len(),
            1,
            "{brk}: the request stopped at the break"
        );
    }
    assert!(
        sim.records("Task")
            .iter()
            .all(|r| r.field("Subject") == Some("before"))
    );
    assert_eq!(sim.records("Task").len(), 2);

    sim.set_unavailable(Duration::from_secs(3600));
    let raw = post(
        &sim,
        "<insert><fields><Task><Subject>while down</Subject></Task></fields></insert>",
    )
    .await;
    assert_eq!(raw.status, 503);
    assert!(!raw.retry_after, "no Retry-After");
    assert!(
        raw.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(raw.body.contains("<html>"), "{}", raw.body);
    assert_eq!(
        sim.records("Task").len(),
        2,
        "nothing is carried out while unavailable"
    );
}

#[tokio::test]
async fn line_27_an_answer_may_come_after_the_client_gave_up_with_the_write_committed() {
    let sim = start().await;
    sim.set_delay(Duration::from_secs(2));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let err = post_with(
        &impatient,
        &sim,
        "<insert><fields><Task><Subject>committed</Subject></Task></fields></insert>",
    )
    .await
    .err()
    .expect("the client gives up");
    assert!(err.is_timeout(), "{err}");
    let mut stored = sim.records("Task");
    for _ in 0..250 {
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = sim.records("Task");
    }
    assert_eq!(
        stored.len(),
        1,
        "the write is committed although no answer arrived"
    );
    assert_eq!(stored[0].field("Subject"), Some("committed"));
    // A patient client does get the late answer.
    let raw = post(&sim, &query("Task", &[])).await;
    assert_eq!(records(&raw.doc(), 0).len(), 1);
}

#[tokio::test]
async fn line_28_a_value_error_is_permanent_for_that_input() {
    let sim = start().await;
    let id = sim.user_insert("Task", &[("Subject", "x")]);
    let bad = format!(
        r#"<update><fields><Task id="{id}"><Status>Waiting</Status></Task></fields></update>"#
    );
    for attempt in 0..3 {
        let doc = post(&sim, &bad).await.doc();
        assert_eq!(
            ret(&doc, 0).1.as_deref(),
            Some("VALUE"),
            "attempt {attempt}"
        );
        // Other writes in between change nothing about it.
        post(
            &sim,
            &format!(r#"<update><fields><Task id="{id}"><Subject>s{attempt}</Subject></Task></fields></update>"#),
        )
        .await
        .doc();
    }
    assert_ne!(
        sim.record("Task", id).expect("task").field("Status"),
        Some("Waiting")
    );
    let bad_insert =
        "<insert><fields><Contact><ShowAs>Sleeping</ShowAs></Contact></fields></insert>";
    for _ in 0..3 {
        assert_eq!(
            ret(&post(&sim, bad_insert).await.doc(), 0).1.as_deref(),
            Some("VALUE")
        );
    }
    assert!(sim.records("Contact").is_empty());
}

// ----- faults -----

#[tokio::test]
async fn fault_empty_answers_for_a_number_of_queries_on_one_table() {
    let sim = start().await;
    sim.user_insert("Contact", &[("Subject", "c")]);
    sim.user_insert("Task", &[("Subject", "t")]);
    sim.set_empty_answers(Some("Contact"), EmptyAnswers::Queries(2));
    for _ in 0..2 {
        let doc = post(&sim, &query("Contact", &[])).await.doc();
        assert!(
            doc.children[0].children.is_empty(),
            "no rows and no <return> error"
        );
        assert_eq!(
            count(&sim, "Task", &[]).await,
            1,
            "other tables answer normally"
        );
    }
    assert_eq!(
        count(&sim, "Contact", &[]).await,
        1,
        "after two queries rows are back"
    );
    // Writes still work during the fault.
    sim.set_empty_answers(Some("Contact"), EmptyAnswers::Queries(1));
    let doc = post(
        &sim,
        "<insert><fields><Contact><Subject>d</Subject></Contact></fields></insert>",
    )
    .await
    .doc();
    assert_eq!(ret(&doc, 0).0, "insert");
    assert_eq!(count(&sim, "Contact", &[]).await, 0);
    assert_eq!(count(&sim, "Contact", &[]).await, 2);
}

#[tokio::test]
async fn fault_empty_answers_for_a_duration_on_every_table() {
    let sim = start().await;
    sim.user_insert("Contact", &[("Subject", "c")]);
    sim.user_insert("Task", &[("Subject", "t")]);
    sim.set_empty_answers(None, EmptyAnswers::For(Duration::from_secs(3600)));
    for _ in 0..3 {
        assert_eq!(count(&sim, "Contact", &[]).await, 0);
        assert_eq!(count(&sim, "Task", &[]).await, 0);
    }
    // Through the client: an empty page, not an error.
    let page = client(&sim)
        .query(&Query::new("Task"), None)
        .await
        .expect("no error");
    assert!(page.records.is_empty() && !page.more);
    sim.set_empty_answers(None, EmptyAnswers::For(Duration::ZERO));
    assert_eq!(count(&sim, "Contact", &[]).await, 1);
    sim.set_empty_answers(None, EmptyAnswers::For(Duration::from_secs(3600)));
    sim.clear_empty_answers();
    assert_eq!(count(&sim, "Task", &[]).await, 1);
}

#[tokio::test]
async fn fault_empty_answers_through_json() {
    let sim = start().await;
    sim.user_insert("Task", &[("Subject", "t")]);
    let r = reqwest::Client::new()
        .post(format!("http://{}/_sim/faults", sim.addr()))
        .json(&serde_json::json!({"empty_answers": {"table": "Task", "queries": 1}}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(count(&sim, "Task", &[]).await, 0);
    assert_eq!(count(&sim, "Task", &[]).await, 1);
    let r = reqwest::Client::new()
        .post(format!("http://{}/_sim/faults", sim.addr()))
        .json(&serde_json::json!({"empty_answers": {"ms": 1000, "queries": 1}}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status().as_u16(), 400, "exactly one of ms and queries");
}

#[tokio::test]
async fn fault_committed_then_http_500() {
    let sim = start().await;
    sim.fail_after_commit(None, 1, AfterCommit::Status500);
    // Queries do not consume the fault.
    assert_eq!(post(&sim, &query("Task", &[])).await.status, 200);
    let raw = post(
        &sim,
        "<insert><fields><Task><Subject>done</Subject></Task></fields></insert>",
    )
    .await;
    assert_eq!(raw.status, 500);
    assert_eq!(sim.records("Task").len(), 1, "committed before the 500");
    let raw = post(
        &sim,
        "<insert><fields><Task><Subject>next</Subject></Task></fields></insert>",
    )
    .await;
    assert_eq!(raw.status, 200, "only the next write request failed");
    // Through the client: a retryable transport error.
    sim.fail_after_commit(None, 1, AfterCommit::Status500);
    let err = client(&sim)
        .delete("Task", sim.records("Task")[0].id, None)
        .await
        .expect_err("500");
    assert!(
        matches!(
            err,
            CrmError::Transport {
                status: Some(500),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(sim.records("Task")[0].is_deleted());
}

#[tokio::test]
async fn fault_committed_then_connection_closed_without_answer() {
    let sim = start().await;
    sim.fail_after_commit(Some("Task"), 2, AfterCommit::Close);
    // A write on another table is not hit.
    let raw = post(
        &sim,
        "<insert><fields><Contact><Subject>c</Subject></Contact></fields></insert>",
    )
    .await;
    assert_eq!(raw.status, 200);
    let err = post_with(
        &reqwest::Client::new(),
        &sim,
        "<insert><fields><Task><Subject>done</Subject></Task></fields></insert>",
    )
    .await
    .err()
    .expect("no answer");
    assert!(
        !err.is_timeout(),
        "the connection closes, it does not hang: {err}"
    );
    assert!(err.status().is_none());
    assert_eq!(
        sim.records("Task").len(),
        1,
        "committed although no answer came"
    );
    let err = client(&sim)
        .update(
            "Task",
            sim.records("Task")[0].id,
            &[("Subject".to_string(), "edited".to_string())]
                .into_iter()
                .collect(),
            None,
        )
        .await
        .expect_err("closed");
    assert!(
        matches!(err, CrmError::Transport { status: None, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(sim.records("Task")[0].field("Subject"), Some("edited"));
    let raw = post(
        &sim,
        "<insert><fields><Task><Subject>next</Subject></Task></fields></insert>",
    )
    .await;
    assert_eq!(raw.status, 200, "the fault is used up");
}

#[tokio::test]
async fn fault_committed_then_fail_through_json() {
    let sim = start().await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/_sim/faults", sim.addr()))
        .json(&serde_json::json!({"commit_then_fail": {"table": "Task", "times": 1, "mode": "status_500"}}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status().as_u16(), 200);
    let raw = post(
        &sim,
        "<insert><fields><Task><Subject>x</Subject></Task></fields></insert>",
    )
    .await;
    assert_eq!(raw.status, 500);
    assert_eq!(sim.records("Task").len(), 1);
}

// ----- the client against these answers -----

#[tokio::test]
async fn a_value_with_a_control_character_is_written_without_it_and_accepted() {
    let sim = start().await;
    let id = sim.user_insert("Task", &[("Subject", "x")]);
    client(&sim)
        .update(
            "Task",
            id,
            &[("Subject".to_string(), "a\u{1}b\u{FFFF}c".to_string())]
                .into_iter()
                .collect(),
            None,
        )
        .await
        .expect("accepted");
    assert_eq!(
        sim.record("Task", id).expect("task").field("Subject"),
        Some("abc")
    );
    let sent = sim.requests();
    let last = sent.last().expect("a request");
    assert!(
        !last.contains('\u{1}') && !last.contains("&#1;"),
        "{last:?}"
    );
}

#[tokio::test]
async fn client_create_linked_and_find_link_with_padded_ids_above_2_pow_63() {
    let sim = start().await;
    sim.set_next_id(u32::MAX - 1, 1);
    sim.set_pad_ids(true);
    let crm = client(&sim);
    let link = ExtLink {
        ext_key: "AAMkBig".into(),
        ext_uid: None,
        table_short: "MA".into(),
    };
    let id = crm
        .create_linked(
            "Contact",
            &[("Subject".to_string(), "s".to_string())]
                .into_iter()
                .collect(),
            &link,
            Some("rep1@contoso.com"),
        )
        .await
        .expect("created");
    assert!(id > 1u64 << 63);
    assert_eq!(
        sim.records("ExtKey")[0].field("RecordId"),
        Some(id.to_string().as_str())
    );
    assert_eq!(
        crm.find_link("AAMkBig")
            .await
            .expect("find")
            .map(|r| r.record_id),
        Some(id)
    );
    let rows = crm.link_rows_for_record(id).await.expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].ext_system, "GraphApi");
    assert_eq!(crm.malformed_rows(), 0);
}
