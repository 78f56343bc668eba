//! The `plan` command (issue 16) against the simulators, on both store back ends: it finds the
//! pairs a first sync would link and the items it would create, and writes nothing anywhere.

#[allow(dead_code)]
mod support;

use cgc_graph::CRM_ID_PROPERTY;
use crm_graph_connector::config::Config;
use crm_graph_connector::demo::{Harness, MAILBOX, REP_ID, crm_slot};
use crm_graph_connector::plan::{PlanOptions, plan};
use serde_json::{Value, json};
use support::*;

fn appointment(crm: &cgc_crm::sim::CrmSim, subject: &str, i: usize) -> u64 {
    let (date, time) = crm_slot(2 + (i % 40) as i64, 8 + (i % 8) as u32);
    crm.user_insert(
        "Contact",
        &[
            ("Contact", "Visit"),
            ("Subject", subject),
            ("Date", &date),
            ("Time", &time),
            ("EndDate", &date),
            ("RepID", REP_ID),
        ],
    )
}

/// What the simulators and the store hold that a plan could have written.
fn writes(graph: &cgc_graph::GraphSim, crm: &cgc_crm::sim::CrmSim) -> (usize, u64, usize) {
    (
        crm.write_log().len(),
        graph.app_writes(MAILBOX),
        graph.subscriptions().len(),
    )
}

async fn redis_keys(prefix: &str) -> usize {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable (bash scripts/services.sh)");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut con)
        .await
        .unwrap();
    keys.len()
}

async fn plan_of_a_fresh_tenant_lists_ten_links_and_eighty_creates_and_writes_nothing(b: Backend) {
    crm_graph_connector::telemetry::init("error");
    let opts = b.options();
    let (graph, crm) = Harness::simulators(&opts).await.unwrap();
    let dir = std::env::temp_dir().join(format!("cgc-plan-{}", uuid::Uuid::now_v7()));
    let prefix = format!("cgc-plan-{}", uuid::Uuid::now_v7().simple());
    // 50 CRM appointments of the rep; 10 of them have their Outlook event already.
    let ids: Vec<u64> = (0..50)
        .map(|i| appointment(&crm, &format!("Plan CRM {i}"), i))
        .collect();
    for (i, id) in ids.iter().take(10).enumerate() {
        let subject = format!("Plan CRM {i}");
        let mut ev = outlook_event(2 + (i % 40) as i64, &subject);
        match i {
            // the CRM id on the event
            0..=3 => {
                ev["singleValueExtendedProperties"] =
                    json!([{"id": CRM_ID_PROPERTY, "value": id.to_string()}]);
                graph.user_create_event(MAILBOX, ev);
            }
            // our ExtKey row in CRM
            4..=6 => {
                let made = graph.user_create_event(MAILBOX, ev);
                crm.user_insert(
                    "ExtKey",
                    &[
                        ("ExtSystem", "GraphApi"),
                        ("ExtKey", made["id"].as_str().unwrap()),
                        ("TableShort", "MA"),
                        ("RecordId", &id.to_string()),
                    ],
                );
            }
            // an older connector's row with the iCalUId
            _ => {
                let uid = format!("040000008200E00074C5B7101A82E0080000000{i}E5E5E5E5");
                ev["iCalUId"] = json!(uid);
                graph.user_create_event(MAILBOX, ev);
                crm.user_insert(
                    "ExtKey",
                    &[
                        ("ExtSystem", "EWS"),
                        ("ExtKey", &format!("ews-{i}")),
                        ("ExtUid", &uid),
                        ("TableShort", "MA"),
                        ("RecordId", &id.to_string()),
                    ],
                );
            }
        }
    }
    // 40 Outlook events of their own.
    for i in 0..40 {
        graph.user_create_event(
            MAILBOX,
            outlook_event(3 + (i % 30), &format!("Plan Outlook {i}")),
        );
    }
    let config =
        Config::parse(&Harness::config_text(&graph, &crm, &dir, &opts), &|_| None).unwrap();
    let before = writes(&graph, &crm);
    let report = plan(
        config,
        &PlanOptions {
            entity: Some(cgc_core::Entity::Appointment),
            ..PlanOptions::default()
        },
        &prefix,
    )
    .await
    .expect("plan runs");
    assert_eq!(
        writes(&graph, &crm),
        before,
        "nothing written to Graph or CRM"
    );
    assert!(
        graph
            .requests()
            .iter()
            .all(|r| r.method == "GET" || r.path.contains("/token")),
        "only reads: {:?}",
        graph
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert!(!dir.join("state").exists(), "no embedded store created");
    assert!(!dir.join("queue").exists(), "no embedded queue created");
    if let Backend::RabbitRedis = b {
        assert_eq!(redis_keys(&prefix).await, 0, "no Redis key written");
    }

    let s = &report.summary;
    assert_eq!(s.links, 10, "{}", report.to_text());
    assert_eq!(
        s.links_by.get("crm-id").copied().unwrap_or(0),
        4,
        "{:?}",
        s.links_by
    );
    assert_eq!(s.links_by.get("extkey").copied().unwrap_or(0), 3);
    assert_eq!(s.links_by.get("ical-uid").copied().unwrap_or(0), 3);
    assert_eq!(s.creates_in_graph, 40, "{}", report.to_text());
    assert_eq!(s.creates_in_crm, 40, "{}", report.to_text());
    assert_eq!(s.deletes_in_graph + s.deletes_in_crm + s.unlinks, 0);
    assert!(!report.guard_tripped);
    // Each linked pair names its records; each create its source.
    let m = &report.tenants[0].mailboxes[0];
    assert_eq!(m.mailbox, MAILBOX);
    for i in m.items.iter().filter(|i| i.link.is_some()) {
        assert!(ids[..10].contains(&i.crm_id.unwrap()), "{i:?}");
        assert!(i.graph_id.is_some());
    }
    // Meeting messages: creating in CRM sends none, and the CRM appointments have no attendees,
    // so their new events invite nobody; each linked pair's event gets the CRM times (crm-wins),
    // an update Graph sends to its two attendees.
    assert_eq!(s.updates_graph, 10, "{}", report.to_text());
    assert_eq!(s.meeting_messages, 20, "{}", report.to_text());

    // The JSON is stable: the same state gives the same document, with its version.
    let json: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["summary"]["links"], 10);
    assert_eq!(
        json["tenants"][0]["mailboxes"][0]["summary"]["creates_in_crm"],
        40
    );
    let config =
        Config::parse(&Harness::config_text(&graph, &crm, &dir, &opts), &|_| None).unwrap();
    let again = plan(
        config,
        &PlanOptions {
            entity: Some(cgc_core::Entity::Appointment),
            ..PlanOptions::default()
        },
        &prefix,
    )
    .await
    .unwrap();
    assert_eq!(again.to_json(), report.to_json(), "same state, same JSON");
    let text = report.to_text();
    assert!(text.contains("link      appointment"), "{text}");
    assert!(text.contains("create    in Graph:"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn plan_against_a_shorter_window_lists_its_unlinks_and_trips_the_guard(b: Backend) {
    let mut h = start(b).await;
    let near = linked_appointments(&h, "Plan near", 3).await;
    let mut far = Vec::new();
    for i in 0..6 {
        far.push(
            crm_appointment(&h, &format!("Plan far {i}"), 40 + i)
                .await
                .0,
        );
    }
    // The service stops (the embedded store is one process's); the pairs stay in the store.
    h.stop_connector().await;
    let old_text = h.config_text.clone();
    let new_text = old_text.replacen("future_days = 90", "future_days = 20", 1);
    assert_ne!(old_text, new_text);
    let parse = |t: &str| Config::parse(t, &|_| None).unwrap();
    let before = writes(&h.graph, &h.crm);
    let compared = crm_graph_connector::plan::plan_against(
        parse(&new_text),
        parse(&old_text),
        &PlanOptions::default(),
        &h.prefix,
    )
    .await
    .expect("plan runs");
    assert_eq!(writes(&h.graph, &h.crm), before, "nothing written");
    let (report, a) = (&compared.report, &compared.against);
    assert_eq!(a.unlinks, 6, "{}", compared.to_text());
    assert_eq!(a.changed.len(), 6, "{}", compared.to_text());
    for c in &a.changed {
        assert!(c.linked, "{c:?}");
        assert!(far.contains(&c.crm_id.unwrap()), "{c:?}");
        assert_eq!(c.new_ops, vec!["unlink"], "{c:?}");
        assert!(c.old_ops.is_empty(), "{c:?}");
        assert!(c.reason.contains("window"), "{c:?}");
    }
    assert!(
        near.iter()
            .all(|(id, _)| !a.changed.iter().any(|c| c.crm_id == Some(*id)))
    );
    // 6 unlinks of 9 pairs exceed the guard's 5 (a share of 0.25): the sync would hold the
    // mailbox, and the command says so with a non-zero exit.
    let m = &report.tenants[0].mailboxes[0];
    assert_eq!((m.pairs, m.guard_limit), (9, 5));
    assert!(report.guard_tripped);
    let dir = std::env::temp_dir().join(format!("cgc-plan-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("new.toml"), &new_text).unwrap();
    std::fs::write(dir.join("old.toml"), &old_text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-graph-connector"))
        .args(["plan", "--json", "--config"])
        .arg(dir.join("new.toml"))
        .arg("--against")
        .arg(dir.join("old.toml"))
        .env("CGC_PREFIX", &h.prefix)
        .output()
        .expect("the binary runs");
    assert!(!out.status.success(), "guard tripped: non-zero exit");
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["guard_tripped"], true);
    assert_eq!(json["against"]["unlinks"], 6);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mass-change guard"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        writes(&h.graph, &h.crm),
        before,
        "the command wrote nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
    h.restart(2, crm_graph_connector::run::Roles::ALL)
        .await
        .unwrap();
    h.stop().await;
}

each_backend!(
    plan_of_a_fresh_tenant_lists_ten_links_and_eighty_creates_and_writes_nothing,
    plan_against_a_shorter_window_lists_its_unlinks_and_trips_the_guard,
);
