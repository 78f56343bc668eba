//! The simulator's JSON control API under `/_sim/` and its seed handling.

use std::time::Duration;

use cgc_crm::sim::{self, CrmSim, CrmSimConfig, Seed};
use cgc_crm::{CrmClient, CrmConfig, CrmError, ErrorCode, Query};
use serde_json::{Value, json};

async fn start(seed: Seed) -> CrmSim {
    sim::start(
        "127.0.0.1:0".parse().expect("addr"),
        CrmSimConfig {
            seed,
            ..CrmSimConfig::default()
        },
    )
    .await
    .expect("starts")
}

fn base(sim: &CrmSim) -> String {
    format!("http://{}/_sim", sim.addr())
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
async fn seed_json_is_loaded() {
    let seed: Seed = serde_json::from_value(json!({
        "time_zone": "America/New_York",
        "tables": {
            "Rep": [{"RepID": "4", "EMail": "rep1@contoso.com", "ConnectorEnabled": "true"}],
            "Task": [{"Subject": "seeded", "UpdDate": "2020-01-01", "UpdTime": "08:00:00"}]
        }
    }))
    .expect("seed parses");
    assert_eq!(seed.time_zone.as_deref(), Some("America/New_York"));
    let sim = start(seed).await;
    assert_eq!(sim.records("Rep").len(), 1);
    let task = &sim.records("Task")[0];
    assert_eq!(task.field("UpdDate"), Some("2020-01-01"));
    assert_eq!(task.field("DelCd"), Some("0"));
    assert_eq!(sim.url(), format!("http://{}/crm.interface", sim.addr()));
}

#[tokio::test]
async fn invalid_seed_is_an_error_not_a_panic() {
    let seed: Seed =
        serde_json::from_value(json!({"tables": {"Nope": [{"a": "b"}]}})).expect("parses");
    let err = sim::start(
        "127.0.0.1:0".parse().expect("addr"),
        CrmSimConfig {
            seed,
            ..CrmSimConfig::default()
        },
    )
    .await
    .expect_err("unknown table");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let seed: Seed =
        serde_json::from_value(json!({"tables": {"Task": [{"Status": "Bogus"}]}})).expect("parses");
    assert!(
        sim::start(
            "127.0.0.1:0".parse().expect("addr"),
            CrmSimConfig {
                seed,
                ..CrmSimConfig::default()
            }
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn records_crud_through_json() {
    let sim = start(Seed::default()).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/records/Task", base(&sim)))
        .json(&json!({"Subject": "from curl", "Status": "Open"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_u64().expect("id");
    assert_eq!(
        sim.record("Task", id).expect("rec").field("Subject"),
        Some("from curl")
    );

    let resp = http
        .patch(format!("{}/records/Task/{id}", base(&sim)))
        .json(&json!({"Status": "Completed"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        sim.record("Task", id).expect("rec").field("Status"),
        Some("Completed")
    );

    let list: Value = http
        .get(format!("{}/records/Task", base(&sim)))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["fields"]["Status"], "Completed");
    assert_eq!(list[0]["tableshort"], "A1");

    let resp = http
        .delete(format!("{}/records/Task/{id}", base(&sim)))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(sim.record("Task", id).expect("rec").is_deleted());
    // User writes are not API writes.
    let writes: Value = http
        .get(format!("{}/writes", base(&sim)))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(writes, json!([]));
}

#[tokio::test]
async fn json_api_rejects_bad_input_with_4xx() {
    let sim = start(Seed::default()).await;
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    let r = http
        .get(format!("{}/records/Nope", base(&sim)))
        .send()
        .await
        .expect("get");
    assert_eq!(status(r), 404);
    let r = http
        .post(format!("{}/records/Task", base(&sim)))
        .json(&json!({"Colour": "red"}))
        .send()
        .await
        .expect("post");
    assert_eq!(status(r), 400);
    let r = http
        .post(format!("{}/records/Task", base(&sim)))
        .json(&json!({"Subject": {"nested": true}}))
        .send()
        .await
        .expect("post");
    assert_eq!(status(r), 400);
    let r = http
        .post(format!("{}/records/Task", base(&sim)))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert!((400..500).contains(&status(r)));
    let r = http
        .patch(format!("{}/records/Task/123", base(&sim)))
        .json(&json!({"Subject": "x"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(status(r), 404);
    let r = http
        .delete(format!("{}/records/Task/not-a-number", base(&sim)))
        .send()
        .await
        .expect("delete");
    assert_eq!(status(r), 400);
    let r = http
        .post(format!("{}/faults", base(&sim)))
        .json(&json!({"explode": true}))
        .send()
        .await
        .expect("faults");
    assert!((400..500).contains(&status(r)));
}

#[tokio::test]
async fn faults_and_writes_through_json() {
    let sim = start(Seed::default()).await;
    let http = reqwest::Client::new();
    let crm = client(&sim);
    let id = sim.user_insert("Task", &[("Subject", "x")]);
    let fields: std::collections::BTreeMap<String, String> =
        [("Subject".to_string(), "y".to_string())]
            .into_iter()
            .collect();

    http.post(format!("{}/faults", base(&sim)))
        .json(&json!({"lock": {"id": id, "times": 1}}))
        .send()
        .await
        .expect("faults");
    let err = crm
        .update("Task", id, &fields, None)
        .await
        .expect_err("locked");
    assert!(matches!(
        err,
        CrmError::Remote {
            code: ErrorCode::Locked,
            ..
        }
    ));
    crm.update("Task", id, &fields, None)
        .await
        .expect("unlocked");

    let writes: Value = http
        .get(format!("{}/writes", base(&sim)))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(writes[0]["command"], "update");
    assert_eq!(writes[0]["id"], id);
    assert_eq!(writes[0]["fields"]["Subject"], "y");
    http.delete(format!("{}/writes", base(&sim)))
        .send()
        .await
        .expect("clear");
    assert!(sim.write_log().is_empty());

    http.post(format!("{}/faults", base(&sim)))
        .json(&json!({"unavailable_ms": 600_000}))
        .send()
        .await
        .expect("faults");
    let err = crm.query(&Query::new("Task"), None).await.expect_err("503");
    assert!(matches!(
        err,
        CrmError::Transport {
            status: Some(503),
            ..
        }
    ));
    http.post(format!("{}/faults", base(&sim)))
        .json(&json!({"unavailable_ms": 0}))
        .send()
        .await
        .expect("faults");
    crm.query(&Query::new("Task"), None)
        .await
        .expect("available");

    let stats: Value = http
        .get(format!("{}/stats", base(&sim)))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["requests"], 4);
}

#[tokio::test]
async fn user_helpers_refuse_bad_input_without_panicking() {
    let sim = start(Seed::default()).await;
    assert_eq!(sim.user_insert("Nope", &[("a", "b")]), 0);
    assert!(sim.try_user_insert("Task", &[("Status", "Bogus")]).is_err());
    assert!(
        sim.try_user_insert("Task", &[("UpdDate", "2020-01-01")])
            .is_err()
    );
    sim.user_update("Task", 42, &[("Subject", "x")]);
    sim.user_delete("Nope", 42);
    assert!(sim.records("Task").is_empty());
    assert!(sim.records("Nope").is_empty());
    assert_eq!(sim.record("Task", 42), None);
}

#[tokio::test]
async fn answer_style_and_clock_knobs_through_json() {
    let sim = start(Seed::default()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/faults", base(&sim)))
        .json(&json!({
            "pad_ids": true,
            "upd_time_minutes": true,
            "next_id": {"stat_no": 4_294_967_295u64, "seq_no": 9},
            "clock": "2026-07-01T08:30:45Z"
        }))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status().as_u16(), 200);
    let id = sim.user_insert("Task", &[("Subject", "x")]);
    assert_eq!(id, cgc_crm::record_id(u32::MAX, 9));
    let task = sim.record("Task", id).expect("task");
    // Berlin is UTC+2 in July; minutes only.
    assert_eq!(task.field("UpdDate"), Some("2026-07-01"));
    assert_eq!(task.field("UpdTime"), Some("10:30"));
    let body = r#"<request user="OCSU" pwd="secret"><query><tables><table tablename="Task"/></tables></query></request>"#;
    let answer = http
        .post(sim.url())
        .body(body)
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("text");
    assert!(answer.contains(&format!(r#"id="  {id} ""#)), "{answer}");
    // Back to the system clock; an invalid clock is refused.
    let r = http
        .post(format!("{}/faults", base(&sim)))
        .json(&json!({"clock": ""}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .post(format!("{}/faults", base(&sim)))
        .json(&json!({"clock": "yesterday"}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status().as_u16(), 400);
}
