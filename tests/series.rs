//! SCENARIOS.md A9 end to end: recurring series both ways (a master and its exceptions, a
//! cancelled occurrence, CRM edits of the master, a series made in CRM, an all-day yearly series
//! across a daylight-saving change), on both back ends.

use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use crm_graph_connector::demo::{Harness, HarnessOptions, MAILBOX, REP_ID, wait_for};
use serde_json::{Value, json};

mod support;
use support::{Backend, Writes, crm_records_with_subject, start, start_with};

const ZONE: &str = "W. Europe Standard Time";

fn day_in(days: i64) -> NaiveDate {
    (Utc::now() + chrono::Duration::days(days)).date_naive()
}

fn weekday_name(d: NaiveDate) -> &'static str {
    match d.weekday() {
        chrono::Weekday::Mon => "monday",
        chrono::Weekday::Tue => "tuesday",
        chrono::Weekday::Wed => "wednesday",
        chrono::Weekday::Thu => "thursday",
        chrono::Weekday::Fri => "friday",
        chrono::Weekday::Sat => "saturday",
        chrono::Weekday::Sun => "sunday",
    }
}

/// A weekly series of `n` meetings made in Outlook, 09:00–09:30 Berlin time, from `first`.
fn weekly_series(subject: &str, first: NaiveDate, n: u32) -> Value {
    let full = weekday_name(first);
    json!({
        "subject": subject,
        "body": {"contentType": "html", "content": "<p>Wöchentliche Abstimmung</p>"},
        "start": {"dateTime": format!("{first}T09:00:00"), "timeZone": ZONE},
        "end": {"dateTime": format!("{first}T09:30:00"), "timeZone": ZONE},
        "location": {"displayName": "Raum Süd"},
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [full]},
            "range": {"type": "numbered", "startDate": first.to_string(), "numberOfOccurrences": n}
        }
    })
}

fn field(r: &cgc_crm::Record, k: &str) -> String {
    r.fields.get(k).cloned().unwrap_or_default()
}

fn is_true(r: &cgc_crm::Record, k: &str) -> bool {
    field(r, k).eq_ignore_ascii_case("true")
}

/// The CRM records whose subject starts with `prefix`.
fn records_of(h: &Harness, prefix: &str) -> Vec<cgc_crm::Record> {
    h.crm
        .records("Contact")
        .into_iter()
        .filter(|r| field(r, "Subject").starts_with(prefix))
        .collect()
}

/// The member records of a CRM master (ContactStatNo/ContactSeqNo name it).
fn members_of(h: &Harness, master: u64) -> Vec<cgc_crm::Record> {
    let (stat, seq) = (
        (master >> 32).to_string(),
        (master & 0xFFFF_FFFF).to_string(),
    );
    h.crm
        .records("Contact")
        .into_iter()
        .filter(|r| field(r, "ContactStatNo") == stat && field(r, "ContactSeqNo") == seq)
        .collect()
}

/// Comparable content of a record (no change stamps).
fn content(r: &cgc_crm::Record) -> Vec<(String, String)> {
    r.fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "UpdDate" | "UpdTime"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A weekly 3-meeting series from Outlook, synced: (master event, its CRM record).
async fn outlook_series(h: &Harness, subject: &str) -> (Value, cgc_crm::Record) {
    let first = day_in(7);
    let master = h
        .graph
        .user_create_event(MAILBOX, weekly_series(subject, first, 3));
    assert_eq!(master["type"], "seriesMaster");
    wait_for(
        "the series' CRM record",
        Duration::from_secs(30),
        || async { !crm_records_with_subject(h, subject).is_empty() },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let rec = crm_records_with_subject(h, subject).remove(0);
    (master, rec)
}

async fn a9_weekly_series_from_outlook_becomes_one_master_record(b: Backend) {
    let h = start(b).await;
    let w = Writes::now(&h);
    let (master, rec) = outlook_series(&h, "A9 Jour fixe").await;
    let all = records_of(&h, "A9 Jour fixe");
    assert_eq!(all.len(), 1, "one record for the series: {all:?}");
    assert!(is_true(&rec, "IsMasterContact"), "{rec:?}");
    assert!(is_true(&rec, "IsSerialContact"), "{rec:?}");
    assert_eq!(field(&rec, "Date"), day_in(7).to_string());
    assert_eq!(field(&rec, "Time").get(..5), Some("09:00"), "Berlin time");
    assert_eq!(
        h.graph
            .instances(MAILBOX, master["id"].as_str().unwrap())
            .len(),
        3
    );
    w.assert(
        &h,
        2,
        1,
        "record + ExtKey row; the CRM id stamped on the master",
    );
    h.stop().await;
}

async fn a9_edited_occurrence_becomes_one_exception_record_master_unchanged(b: Backend) {
    let h = start(b).await;
    let (master, rec) = outlook_series(&h, "A9 Weekly").await;
    let before = content(&h.crm.record("Contact", rec.id).unwrap());
    let occ = h.graph.instances(MAILBOX, master["id"].as_str().unwrap())[1].clone();
    let second = day_in(14);
    h.graph.user_update_event(
        MAILBOX,
        occ["id"].as_str().unwrap(),
        json!({"subject": "A9 Weekly (Kundenbesuch)",
               "start": {"dateTime": format!("{second}T11:00:00"), "timeZone": ZONE},
               "end": {"dateTime": format!("{second}T12:00:00"), "timeZone": ZONE}}),
    );
    wait_for(
        "the exception's CRM record",
        Duration::from_secs(30),
        || async { !crm_records_with_subject(&h, "A9 Weekly (Kundenbesuch)").is_empty() },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let exc = crm_records_with_subject(&h, "A9 Weekly (Kundenbesuch)");
    assert_eq!(exc.len(), 1, "one exception record");
    let exc = &exc[0];
    assert!(is_true(exc, "IsSerialContact") && !is_true(exc, "IsMasterContact"));
    assert_eq!(field(exc, "ContactStatNo"), (rec.id >> 32).to_string());
    assert_eq!(
        field(exc, "ContactSeqNo"),
        (rec.id & 0xFFFF_FFFF).to_string()
    );
    assert_eq!(field(exc, "Date"), second.to_string());
    assert_eq!(field(exc, "Time").get(..5), Some("11:00"));
    assert_eq!(
        content(&h.crm.record("Contact", rec.id).unwrap()),
        before,
        "the master's record is unchanged by the exception"
    );
    assert_eq!(
        records_of(&h, "A9 Weekly").len(),
        2,
        "master + one exception"
    );
    // the exception's echo and a later round change nothing
    let w = Writes::now(&h);
    h.graph
        .user_touch_event(MAILBOX, master["id"].as_str().unwrap());
    h.settle().await.unwrap();
    w.assert(&h, 0, 0, "a touched master writes nothing");
    h.stop().await;
}

async fn a9_cancelled_occurrence_is_marked_not_deleted(b: Backend) {
    let h = start(b).await;
    let (master, rec) = outlook_series(&h, "A9 Standup").await;
    let occ = h.graph.instances(MAILBOX, master["id"].as_str().unwrap())[2].clone();
    h.graph
        .user_delete_event(MAILBOX, occ["id"].as_str().unwrap());
    assert_eq!(
        h.graph
            .instances(MAILBOX, master["id"].as_str().unwrap())
            .len(),
        2
    );
    let third = day_in(21).to_string();
    wait_for(
        "the cancelled day marked",
        Duration::from_secs(30),
        || async {
            members_of(&h, rec.id)
                .iter()
                .any(|r| field(r, "Status") == "Cancelled" && field(r, "Date") == third)
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let members = members_of(&h, rec.id);
    assert_eq!(
        members.len(),
        1,
        "one mark for the cancelled day: {members:?}"
    );
    assert_eq!(field(&members[0], "Subject"), "A9 Standup");
    let master_rec = h.crm.record("Contact", rec.id).unwrap();
    assert_ne!(
        field(&master_rec, "DelCd"),
        "1",
        "the master is not deleted"
    );
    assert_ne!(field(&master_rec, "Status"), "Cancelled");
    assert!(
        records_of(&h, "A9 Standup")
            .iter()
            .all(|r| field(r, "DelCd") != "1" && field(r, "ConnectorDeleted") != "true"),
        "nothing deleted"
    );
    // later passes of the master mark nothing again
    let w = Writes::now(&h);
    h.graph
        .user_touch_event(MAILBOX, master["id"].as_str().unwrap());
    h.settle().await.unwrap();
    w.assert(&h, 0, 0, "the day is marked once");
    h.stop().await;
}

async fn a9_crm_edit_of_the_master_changes_the_outlook_series(b: Backend) {
    let h = start(b).await;
    let (master, rec) = outlook_series(&h, "A9 Planning").await;
    let w = Writes::now(&h);
    h.crm
        .user_update("Contact", rec.id, &[("Subject", "A9 Planning Q3")]);
    let mid = master["id"].as_str().unwrap().to_string();
    wait_for("the series renamed", Duration::from_secs(30), || async {
        h.graph
            .event(MAILBOX, &mid)
            .is_some_and(|e| e["subject"] == "A9 Planning Q3")
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let inst = h.graph.instances(MAILBOX, &mid);
    assert_eq!(inst.len(), 3);
    assert!(
        inst.iter().all(|i| i["subject"] == "A9 Planning Q3"),
        "{inst:?}"
    );
    let ev = h.graph.event(MAILBOX, &mid).unwrap();
    assert_eq!(
        ev["recurrence"]["pattern"]["type"], "weekly",
        "still a series"
    );
    w.assert(&h, 0, 1, "one PATCH of the master");
    h.stop().await;
}

/// A series made in CRM: a master record and member records on its days.
fn crm_series(
    h: &Harness,
    subject: &str,
    days: &[NaiveDate],
    time: Option<(&str, &str)>,
) -> (u64, Vec<u64>) {
    let (t, et) = time.unwrap_or(("", ""));
    let first = days[0].to_string();
    let master = h.crm.user_insert(
        "Contact",
        &[
            ("Contact", "Meeting"),
            ("Subject", subject),
            ("Date", &first),
            ("EndDate", &first),
            ("Time", t),
            ("EndTime", et),
            ("RepID", REP_ID),
            ("IsMasterContact", "true"),
            ("IsSerialContact", "true"),
        ],
    );
    let (stat, seq) = (
        (master >> 32).to_string(),
        (master & 0xFFFF_FFFF).to_string(),
    );
    let members = days[1..]
        .iter()
        .map(|d| {
            let d = d.to_string();
            h.crm.user_insert(
                "Contact",
                &[
                    ("Contact", "Meeting"),
                    ("Subject", subject),
                    ("Date", &d),
                    ("EndDate", &d),
                    ("Time", t),
                    ("EndTime", et),
                    ("RepID", REP_ID),
                    ("IsMasterContact", "false"),
                    ("IsSerialContact", "true"),
                    ("ContactStatNo", &stat),
                    ("ContactSeqNo", &seq),
                ],
            )
        })
        .collect();
    (master, members)
}

async fn wait_series(h: &Harness, subject: &str) -> Value {
    wait_for("the Outlook series", Duration::from_secs(30), || async {
        h.graph
            .events(MAILBOX)
            .iter()
            .any(|e| e["subject"] == subject && e["type"] == "seriesMaster")
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    h.graph
        .events(MAILBOX)
        .into_iter()
        .find(|e| e["subject"] == subject && e["type"] == "seriesMaster")
        .unwrap()
}

async fn a9_crm_created_series_becomes_an_outlook_series(b: Backend) {
    let h = start(b).await;
    let days = [day_in(5), day_in(12), day_in(19)];
    let (master, members) = crm_series(&h, "A9 Vertriebsrunde", &days, Some(("10:00", "11:00")));
    let ev = wait_series(&h, "A9 Vertriebsrunde").await;
    let singles: Vec<Value> = h
        .graph
        .events(MAILBOX)
        .into_iter()
        .filter(|e| e["subject"] == "A9 Vertriebsrunde" && e["type"] != "seriesMaster")
        .collect();
    assert!(
        singles.is_empty(),
        "members made no single events: {singles:?}"
    );
    assert_eq!(ev["recurrence"]["pattern"]["type"], "weekly");
    assert_eq!(
        ev["recurrence"]["pattern"]["daysOfWeek"],
        json!([weekday_name(days[0])])
    );
    assert_eq!(ev["recurrence"]["range"]["numberOfOccurrences"], 3);
    let mid = ev["id"].as_str().unwrap().to_string();
    let inst = h.graph.instances(MAILBOX, &mid);
    let starts: Vec<String> = inst
        .iter()
        .map(|i| {
            cgc_graph::tz::date_time_time_zone_to_utc(&i["start"])
                .unwrap()
                .with_timezone(&chrono_tz::Europe::Berlin)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .collect();
    let want: Vec<String> = days.iter().map(|d| format!("{d} 10:00")).collect();
    assert_eq!(
        starts, want,
        "the occurrences fall on the records' days at 10:00 Berlin"
    );
    // a CRM edit of one member reaches that occurrence only
    h.crm.user_update(
        "Contact",
        members[0],
        &[("Subject", "A9 Vertriebsrunde (Messe)")],
    );
    wait_for(
        "the occurrence renamed",
        Duration::from_secs(30),
        || async {
            h.graph
                .instances(MAILBOX, &mid)
                .iter()
                .any(|i| i["subject"] == "A9 Vertriebsrunde (Messe)")
        },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let inst = h.graph.instances(MAILBOX, &mid);
    let subjects: Vec<&str> = inst
        .iter()
        .map(|i| i["subject"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        subjects,
        [
            "A9 Vertriebsrunde",
            "A9 Vertriebsrunde (Messe)",
            "A9 Vertriebsrunde"
        ]
    );
    assert_eq!(inst[1]["type"], "exception");
    assert_eq!(
        h.graph.event(MAILBOX, &mid).unwrap()["subject"],
        "A9 Vertriebsrunde",
        "the master is unchanged"
    );
    assert_eq!(
        h.crm
            .record("Contact", master)
            .map(|r| field(&r, "Subject")),
        Some("A9 Vertriebsrunde".to_string())
    );
    assert_event_bodies_match_the_schema(&h);
    h.stop().await;
}

/// Every event body the connector sent (the series create with its inferred recurrence, the
/// occurrence PATCH) uses only properties the Graph v1.0 schema declares, with their types.
fn assert_event_bodies_match_the_schema(h: &Harness) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/protocols/graph-v1.0-schema.json"
    );
    let schema = cgc_graph::schema::Schema::load(path).expect("schema file loads");
    let mut checked = 0;
    for req in h.graph.requests() {
        let (Some(body), true) = (&req.body, req.path.to_ascii_lowercase().contains("/events"))
        else {
            continue;
        };
        let problems = schema.strict_problems("event", body, &["singleValueExtendedProperties"]);
        assert!(
            problems.is_empty(),
            "{} {}: {problems:?}\n{body:#}",
            req.method,
            req.path
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "the series create and the occurrence PATCH were checked"
    );
}

async fn a9_series_begun_before_the_window_is_synced_and_its_end_leaving_unlinks_nothing(
    b: Backend,
) {
    let h = start(b).await;
    // past_days = 7: the series began three weeks ago and goes on every week
    let first = day_in(-21);
    let mut body = weekly_series("A9 Dauerbrenner", first, 3);
    body["recurrence"]["range"] = json!({"type": "noEnd", "startDate": first.to_string()});
    let master = h.graph.user_create_event(MAILBOX, body);
    wait_for(
        "the old series' record",
        Duration::from_secs(30),
        || async { !crm_records_with_subject(&h, "A9 Dauerbrenner").is_empty() },
    )
    .await
    .unwrap();
    h.settle().await.unwrap();
    let rec = crm_records_with_subject(&h, "A9 Dauerbrenner").remove(0);
    assert_eq!(
        field(&rec, "Date"),
        first.to_string(),
        "the series' first day"
    );
    assert!(is_true(&rec, "IsMasterContact"));
    let mid = master["id"].as_str().unwrap().to_string();
    let state = &h.app().state;
    let tenant = crm_graph_connector::demo::TENANT;
    let entity = cgc_core::Entity::Appointment;
    assert!(
        state
            .link_by_graph(tenant, entity, MAILBOX, &mid)
            .await
            .unwrap()
            .is_some()
    );
    // the series now ends before the window starts: still linked, nothing written
    let w = Writes::now(&h);
    h.graph.user_update_event(
        MAILBOX,
        &mid,
        json!({"recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [weekday_name(first)]},
                              "range": {"type": "endDate", "startDate": first.to_string(),
                                        "endDate": day_in(-14).to_string()}}}),
    );
    h.settle().await.unwrap();
    assert!(
        state
            .link_by_graph(tenant, entity, MAILBOX, &mid)
            .await
            .unwrap()
            .is_some(),
        "its end moving out of the window unlinks nothing"
    );
    w.assert(&h, 0, 0, "nothing written");
    let rec = h.crm.record("Contact", rec.id).unwrap();
    assert_ne!(field(&rec, "DelCd"), "1");
    assert_ne!(field(&rec, "ConnectorDeleted"), "true");
    h.stop().await;
}

/// The next day (from tomorrow, within a year) on which Berlin changes its UTC offset.
fn next_dst_change() -> NaiveDate {
    use chrono::{Offset, TimeZone};
    let zone = chrono_tz::Europe::Berlin;
    let offset = |d: NaiveDate| {
        zone.from_utc_datetime(&d.and_hms_opt(12, 0, 0).unwrap())
            .offset()
            .fix()
    };
    (1..400)
        .map(day_in)
        .find(|d| offset(*d) != offset(d.pred_opt().unwrap()))
        .expect("a daylight-saving change within a year")
}

async fn a9_all_day_yearly_series_across_a_dst_change_keeps_its_dates(b: Backend) {
    let h = start_with(HarnessOptions {
        future_days: 1200,
        ..b.options()
    })
    .await;
    let day = next_dst_change();
    let next = day + chrono::Duration::days(1);
    // Outlook → CRM: an all-day yearly series on the day the clocks change
    h.graph.user_create_event(
        MAILBOX,
        json!({"subject": "A9 Jahrestag", "isAllDay": true,
               "start": {"dateTime": format!("{day}T00:00:00"), "timeZone": ZONE},
               "end": {"dateTime": format!("{next}T00:00:00"), "timeZone": ZONE},
               "recurrence": {"pattern": {"type": "absoluteYearly", "interval": 1,
                                          "month": day.month(), "dayOfMonth": day.day()},
                              "range": {"type": "noEnd", "startDate": day.to_string()}}}),
    );
    wait_for("the yearly record", Duration::from_secs(30), || async {
        !crm_records_with_subject(&h, "A9 Jahrestag").is_empty()
    })
    .await
    .unwrap();
    h.settle().await.unwrap();
    let rec = crm_records_with_subject(&h, "A9 Jahrestag");
    assert_eq!(rec.len(), 1);
    assert_eq!(field(&rec[0], "Date"), day.to_string());
    assert_eq!(
        field(&rec[0], "EndDate"),
        day.to_string(),
        "EndDate inclusive"
    );
    assert_eq!(field(&rec[0], "Time"), "");
    assert!(is_true(&rec[0], "IsMasterContact"));
    // CRM → Outlook: an all-day yearly series of three years on that day
    let years: Vec<NaiveDate> = (0..3)
        .map(|y| day.with_year(day.year() + y).unwrap())
        .collect();
    crm_series(&h, "A9 Gründungstag", &years, None);
    let ev = wait_series(&h, "A9 Gründungstag").await;
    assert_eq!(ev["isAllDay"], true);
    assert_eq!(ev["recurrence"]["pattern"]["type"], "absoluteYearly");
    let inst = h.graph.instances(MAILBOX, ev["id"].as_str().unwrap());
    let dates: Vec<String> = inst
        .iter()
        .map(|i| i["start"]["dateTime"].as_str().unwrap_or("")[..10].to_string())
        .collect();
    let want: Vec<String> = years.iter().map(|d| d.to_string()).collect();
    assert_eq!(dates, want, "each occurrence keeps its date");
    assert!(
        inst.iter()
            .all(|i| i["start"]["dateTime"].as_str().unwrap_or("")[11..19] == *"00:00:00"),
        "all-day occurrences start at midnight: {inst:?}"
    );
    h.stop().await;
}

each_backend!(
    a9_weekly_series_from_outlook_becomes_one_master_record,
    a9_edited_occurrence_becomes_one_exception_record_master_unchanged,
    a9_cancelled_occurrence_is_marked_not_deleted,
    a9_crm_edit_of_the_master_changes_the_outlook_series,
    a9_crm_created_series_becomes_an_outlook_series,
    a9_all_day_yearly_series_across_a_dst_change_keeps_its_dates,
    a9_series_begun_before_the_window_is_synced_and_its_end_leaving_unlinks_nothing,
);
