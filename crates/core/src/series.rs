//! Recurring series as data (MAPPING.md "recurrence", SCENARIOS.md A9): what kind of series
//! member a Graph event is, which days a Graph `patternedRecurrence` falls on, which pattern a
//! CRM series' records follow, and the CRM fields that tie a member to its master.
//!
//! CRM.interface names no field for a pattern or a range: a CRM series is its master record
//! (`IsMasterContact`) and member records (`IsSerialContact`, `ContactStatNo` + `ContactSeqNo` of
//! the master). So the pattern travels from Graph to CRM only as the master's first occurrence and
//! its members, and from CRM to Graph it is inferred from the dates of the master and its members.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde_json::{Value, json};

use chrono_tz::Tz;

use crate::mapping::time;
use crate::model::CrmFields;

/// Most occurrences ever expanded for one series and question.
pub const MAX_OCCURRENCES: usize = 1000;

/// What a Graph event is within a series (Graph's read-only `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    Single,
    Master,
    /// A plain occurrence: the master carries it.
    Occurrence,
    /// An occurrence edited on its own.
    Exception,
}

impl Member {
    /// From a Graph event's `type` (missing or unknown: a single instance).
    pub fn of(item: &Value) -> Self {
        match item.get("type").and_then(Value::as_str) {
            Some("seriesMaster") => Self::Master,
            Some("occurrence") => Self::Occurrence,
            Some("exception") => Self::Exception,
            _ => Self::Single,
        }
    }

    /// An occurrence or an exception: one day of a series.
    pub fn is_instance(self) -> bool {
        matches!(self, Self::Occurrence | Self::Exception)
    }
}

/// The master's id of an occurrence or exception (`seriesMasterId`).
pub fn master_id(item: &Value) -> Option<&str> {
    item.get("seriesMasterId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn weekday(name: &str) -> Option<Weekday> {
    name.trim().to_ascii_lowercase().parse().ok()
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    }
}

fn date_of(v: &Value) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(v.as_str()?.get(..10)?, "%Y-%m-%d").ok()
}

fn month_index(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

/// The week (a number that grows by one each week) a day lies in, weeks starting on `first`.
fn week_index(d: NaiveDate, first: Weekday) -> i64 {
    let start = d - Duration::days(i64::from(d.weekday().days_since(first)));
    i64::from(start.num_days_from_ce()).div_euclid(7)
}

/// Whether `d` is the `index`-th (`first`…`fourth`, `last`) of its weekday in its month.
fn nth_of_month(d: NaiveDate, index: &str) -> bool {
    let nth = (d.day() - 1) / 7;
    match index {
        "first" => nth == 0,
        "second" => nth == 1,
        "third" => nth == 2,
        "fourth" => nth == 3,
        "last" => (d + Duration::days(7)).month() != d.month(),
        _ => false,
    }
}

/// The days, in the series' own zone, on which the occurrences of `recurrence` fall for a series
/// whose first occurrence is on `first`, up to `until` (inclusive), at most `cap` of them. The
/// range's `startDate` (default `first`), `endDate` and `numberOfOccurrences` are honoured; an
/// unknown pattern type gives no day.
pub fn occurrence_days(
    recurrence: &Value,
    first: NaiveDate,
    until: NaiveDate,
    cap: usize,
) -> Vec<NaiveDate> {
    let pattern = &recurrence["pattern"];
    let range = &recurrence["range"];
    let interval = pattern["interval"].as_i64().unwrap_or(1).max(1);
    let kind = pattern["type"].as_str().unwrap_or("");
    let mut days: Vec<Weekday> = pattern["daysOfWeek"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().and_then(weekday))
        .collect();
    let from = date_of(&range["startDate"]).unwrap_or(first);
    if days.is_empty() {
        days.push(from.weekday());
    }
    let week_start = pattern["firstDayOfWeek"]
        .as_str()
        .and_then(weekday)
        .unwrap_or(Weekday::Sun);
    let index = pattern["index"]
        .as_str()
        .unwrap_or("first")
        .to_ascii_lowercase();
    let day_of_month = pattern["dayOfMonth"]
        .as_u64()
        .map_or(from.day(), |d| d as u32);
    let month = pattern["month"].as_u64().map_or(from.month(), |m| m as u32);
    let end = match range["type"].as_str() {
        Some("endDate") => date_of(&range["endDate"]),
        _ => None,
    };
    let count = match range["type"].as_str() {
        Some("numbered") => Some(range["numberOfOccurrences"].as_u64().unwrap_or(1) as usize),
        _ => None,
    };
    let last = end.map_or(until, |e| e.min(until));
    let falls_on = |d: NaiveDate| -> bool {
        let months = month_index(d) - month_index(from);
        let years = i64::from(d.year() - from.year());
        match kind {
            "daily" => (d - from).num_days() % interval == 0,
            "weekly" => {
                days.contains(&d.weekday())
                    && (week_index(d, week_start) - week_index(from, week_start)) % interval == 0
            }
            "absoluteMonthly" => d.day() == day_of_month && months % interval == 0,
            "relativeMonthly" => {
                days.contains(&d.weekday()) && months % interval == 0 && nth_of_month(d, &index)
            }
            "absoluteYearly" => {
                d.month() == month && d.day() == day_of_month && years % interval == 0
            }
            "relativeYearly" => {
                d.month() == month
                    && days.contains(&d.weekday())
                    && years % interval == 0
                    && nth_of_month(d, &index)
            }
            _ => false,
        }
    };
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut d = from;
    while d <= last && out.len() < cap && count.is_none_or(|n| seen < n) {
        if falls_on(d) {
            seen += 1;
            if d >= first {
                out.push(d);
            }
        }
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    out
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// A `patternedRecurrence` whose occurrences fall exactly on `days` (sorted, distinct, first
/// day first), and the days its occurrences fall on that are not among `days` (to be cancelled
/// after the series is made; empty when a pattern fits exactly). Tried in order: yearly,
/// monthly, weekly, daily, weekly on several days — each numbered; else daily at the largest
/// common step with an end date. `zone` becomes the range's `recurrenceTimeZone`.
pub fn infer_recurrence(days: &[NaiveDate], zone: &str) -> Option<(Value, Vec<NaiveDate>)> {
    let first = *days.first()?;
    let last = *days.last()?;
    let n = days.len();
    let numbered = json!({"type": "numbered", "startDate": first.format("%Y-%m-%d").to_string(),
        "numberOfOccurrences": n, "recurrenceTimeZone": zone});
    let step = days
        .windows(2)
        .fold(0, |g, w| gcd(g, (w[1] - w[0]).num_days()))
        .max(1);
    let months = days
        .windows(2)
        .fold(0, |g, w| gcd(g, month_index(w[1]) - month_index(w[0])))
        .max(1);
    let same_day = days.iter().all(|d| d.day() == first.day());
    let same_month = days.iter().all(|d| d.month() == first.month());
    let mut candidates = Vec::new();
    if same_day && same_month {
        candidates.push(
            json!({"type": "absoluteYearly", "interval": (months / 12).max(1),
            "month": first.month(), "dayOfMonth": first.day()}),
        );
    }
    if same_day {
        candidates.push(
            json!({"type": "absoluteMonthly", "interval": months, "dayOfMonth": first.day()}),
        );
    }
    let on_first_day = json!([weekday_name(first.weekday())]);
    if step % 7 == 0 {
        candidates.push(
            json!({"type": "weekly", "interval": step / 7, "daysOfWeek": on_first_day,
            "firstDayOfWeek": "sunday"}),
        );
    }
    candidates.push(json!({"type": "daily", "interval": step}));
    let mut weekdays: Vec<Weekday> = days.iter().map(|d| d.weekday()).collect();
    weekdays.sort_by_key(|d| d.num_days_from_sunday());
    weekdays.dedup();
    let names: Vec<&str> = weekdays.iter().map(|d| weekday_name(*d)).collect();
    candidates.push(
        json!({"type": "weekly", "interval": 1, "daysOfWeek": names, "firstDayOfWeek": "sunday"}),
    );
    for pattern in candidates {
        let r = json!({"pattern": pattern, "range": numbered});
        if occurrence_days(&r, first, last, n + 1) == days {
            return Some((r, Vec::new()));
        }
    }
    let r = json!({"pattern": {"type": "daily", "interval": step},
        "range": {"type": "endDate", "startDate": first.format("%Y-%m-%d").to_string(),
                  "endDate": last.format("%Y-%m-%d").to_string(), "recurrenceTimeZone": zone}});
    let extra = occurrence_days(&r, first, last, MAX_OCCURRENCES)
        .into_iter()
        .filter(|d| days.binary_search(d).is_err())
        .collect();
    Some((r, extra))
}

/// The zone a series' days are counted in: its `recurrenceTimeZone`, else the master's
/// `originalStartTimeZone`, else UTC (an unknown name is UTC, like every unknown zone).
pub fn series_zone(master: &Value) -> Tz {
    [
        master.pointer("/recurrence/range/recurrenceTimeZone"),
        master.get("originalStartTimeZone"),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .find_map(time::resolve_zone)
    .unwrap_or(Tz::UTC)
}

fn all_day(item: &Value) -> bool {
    item.get("isAllDay").and_then(Value::as_bool) == Some(true)
}

/// The day (in `zone`) an instant given as Graph `dateTimeTimeZone` or RFC 3339 text falls
/// on; an all-day item's days are floating (the date as written).
fn day_in(v: &Value, floating: bool, zone: Tz) -> Option<NaiveDate> {
    let (text, given) = match v {
        Value::String(s) => (s.as_str(), "UTC"),
        Value::Object(o) => (
            o.get("dateTime")?.as_str()?,
            o.get("timeZone").and_then(Value::as_str).unwrap_or("UTC"),
        ),
        _ => return None,
    };
    let instant = match time::parse_graph_datetime(text)? {
        time::GraphDateTime::Local(l) if floating => return Some(l.date()),
        time::GraphDateTime::Local(l) => {
            time::local_to_utc(l, time::resolve_zone(given).unwrap_or(Tz::UTC))
        }
        time::GraphDateTime::Absolute(a) if floating => return Some(a.date_naive()),
        time::GraphDateTime::Absolute(a) => a,
    };
    Some(time::utc_to_local(instant, zone).date())
}

/// The day a series master's first occurrence falls on, in the series' zone.
pub fn first_day(master: &Value) -> Option<NaiveDate> {
    day_in(master.get("start")?, all_day(master), series_zone(master))
}

/// The day an occurrence or exception was planned for (its `originalStart`), in its master's
/// zone: the key of its slot in the series, whatever an edit did to its start.
pub fn original_day(instance: &Value, master: &Value) -> Option<NaiveDate> {
    day_in(
        instance.get("originalStart")?,
        all_day(master),
        series_zone(master),
    )
}

/// The days of a master's occurrences from `from` to `to` (inclusive), cancelled ones included.
pub fn master_days(master: &Value, from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    let (Some(first), Some(rec)) = (first_day(master), master.get("recurrence")) else {
        return Vec::new();
    };
    occurrence_days(rec, first, to, MAX_OCCURRENCES)
        .into_iter()
        .filter(|d| *d >= from)
        .collect()
}

/// Whether a series master has an occurrence between `from` and `to` (inclusive): a series that
/// began before the window but reaches into it is synced.
pub fn reaches_into(master: &Value, from: NaiveDate, to: NaiveDate) -> bool {
    !master_days(master, from, to).is_empty()
}

/// A CRM record id as its `(StatNo, SeqNo)`: `id = StatNo × 2^32 + SeqNo` (crm-interface.md).
pub fn stat_seq(id: u64) -> (u64, u64) {
    (id >> 32, id & 0xFFFF_FFFF)
}

/// The CRM record id a member's `ContactStatNo` + `ContactSeqNo` name, if both are numbers.
pub fn master_of(fields: &CrmFields) -> Option<u64> {
    let stat: u64 = fields.get("ContactStatNo")?.trim().parse().ok()?;
    let seq: u64 = fields.get("ContactSeqNo")?.trim().parse().ok()?;
    (seq <= 0xFFFF_FFFF && stat <= 0xFFFF_FFFF).then_some((stat << 32) | seq)
}

fn is_true(fields: &CrmFields, key: &str) -> bool {
    fields
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
}

/// A CRM series master record.
pub fn is_master_record(fields: &CrmFields) -> bool {
    is_true(fields, "IsMasterContact")
}

/// A CRM series member that is not the master (an occurrence or exception record).
pub fn is_member_record(fields: &CrmFields) -> bool {
    !is_master_record(fields) && master_of(fields).is_some()
}

/// A CRM record marked cancelled (`Status` = `Cancelled`).
pub fn is_cancelled_record(fields: &CrmFields) -> bool {
    fields
        .get("Status")
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("cancelled"))
}

/// The fields a new CRM record made from a series member carries besides its mapped fields:
/// the master `IsMasterContact` and `IsSerialContact`; an exception `IsSerialContact` and its
/// master's `ContactStatNo`/`ContactSeqNo`.
pub fn member_fields(member: Member, master: Option<u64>) -> CrmFields {
    let mut f = CrmFields::new();
    match (member, master) {
        (Member::Master, _) => {
            f.insert("IsMasterContact".into(), "true".into());
            f.insert("IsSerialContact".into(), "true".into());
        }
        (Member::Exception | Member::Occurrence, Some(m)) => {
            let (stat, seq) = stat_seq(m);
            f.insert("IsSerialContact".into(), "true".into());
            f.insert("IsMasterContact".into(), "false".into());
            f.insert("ContactStatNo".into(), stat.to_string());
            f.insert("ContactSeqNo".into(), seq.to_string());
        }
        _ => {}
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn days(list: &[&str]) -> Vec<NaiveDate> {
        list.iter().map(|s| d(s)).collect()
    }

    #[test]
    fn members_are_told_by_graphs_type() {
        assert_eq!(Member::of(&json!({"type": "seriesMaster"})), Member::Master);
        assert_eq!(
            Member::of(&json!({"type": "occurrence"})),
            Member::Occurrence
        );
        assert_eq!(Member::of(&json!({"type": "exception"})), Member::Exception);
        assert_eq!(
            Member::of(&json!({"type": "singleInstance"})),
            Member::Single
        );
        assert_eq!(Member::of(&json!({})), Member::Single);
        assert!(Member::Exception.is_instance() && !Member::Master.is_instance());
        assert_eq!(master_id(&json!({"seriesMasterId": "M1"})), Some("M1"));
        assert_eq!(master_id(&json!({"seriesMasterId": null})), None);
    }

    #[test]
    fn weekly_numbered_gives_exactly_its_count() {
        let r = json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["Monday", "wednesday"]},
                       "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 3}});
        assert_eq!(
            occurrence_days(&r, d("2030-01-07"), d("2031-01-01"), 100),
            days(&["2030-01-07", "2030-01-09", "2030-01-14"])
        );
    }

    #[test]
    fn every_other_week_counts_weeks_from_the_first_day_of_week() {
        let r = json!({"pattern": {"type": "weekly", "interval": 2, "daysOfWeek": ["friday"], "firstDayOfWeek": "monday"},
                       "range": {"type": "endDate", "startDate": "2030-01-04", "endDate": "2030-02-15"}});
        assert_eq!(
            occurrence_days(&r, d("2030-01-04"), d("2031-01-01"), 100),
            days(&["2030-01-04", "2030-01-18", "2030-02-01", "2030-02-15"])
        );
    }

    #[test]
    fn monthly_and_yearly_patterns_expand() {
        let last_friday = json!({"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
                       "range": {"type": "endDate", "startDate": "2030-01-01", "endDate": "2030-03-31"}});
        assert_eq!(
            occurrence_days(&last_friday, d("2030-01-25"), d("2031-01-01"), 100),
            days(&["2030-01-25", "2030-02-22", "2030-03-29"])
        );
        let the_15th = json!({"pattern": {"type": "absoluteMonthly", "interval": 2, "dayOfMonth": 15},
                       "range": {"type": "numbered", "startDate": "2030-01-15", "numberOfOccurrences": 3}});
        assert_eq!(
            occurrence_days(&the_15th, d("2030-01-15"), d("2031-01-01"), 100),
            days(&["2030-01-15", "2030-03-15", "2030-05-15"])
        );
        let yearly = json!({"pattern": {"type": "absoluteYearly", "interval": 1, "month": 3, "dayOfMonth": 30},
                       "range": {"type": "noEnd", "startDate": "2030-03-30"}});
        assert_eq!(
            occurrence_days(&yearly, d("2030-03-30"), d("2033-01-01"), 100),
            days(&["2030-03-30", "2031-03-30", "2032-03-30"])
        );
        let second_tuesday_of_june = json!({"pattern": {"type": "relativeYearly", "interval": 1, "month": 6, "daysOfWeek": ["tuesday"], "index": "second"},
                       "range": {"type": "numbered", "startDate": "2030-01-01", "numberOfOccurrences": 2}});
        assert_eq!(
            occurrence_days(
                &second_tuesday_of_june,
                d("2030-01-01"),
                d("2035-01-01"),
                100
            ),
            days(&["2030-06-11", "2031-06-10"])
        );
    }

    #[test]
    fn daily_stops_at_until_cap_and_unknown_types() {
        let daily = json!({"pattern": {"type": "daily", "interval": 3}, "range": {"type": "noEnd", "startDate": "2030-01-01"}});
        assert_eq!(
            occurrence_days(&daily, d("2030-01-01"), d("2030-01-10"), 100),
            days(&["2030-01-01", "2030-01-04", "2030-01-07", "2030-01-10"])
        );
        assert_eq!(
            occurrence_days(&daily, d("2030-01-01"), d("2030-12-31"), 2).len(),
            2
        );
        let odd = json!({"pattern": {"type": "fortnightly"}, "range": {"type": "noEnd"}});
        assert!(occurrence_days(&odd, d("2030-01-01"), d("2030-12-31"), 10).is_empty());
        assert!(occurrence_days(&Value::Null, d("2030-01-01"), d("2030-12-31"), 10).is_empty());
    }

    #[test]
    fn a_numbered_series_counts_occurrences_before_its_first_day_too() {
        // a range starting before the first occurrence asked for (a series seen from the window)
        let r = json!({"pattern": {"type": "daily", "interval": 1},
                       "range": {"type": "numbered", "startDate": "2030-01-01", "numberOfOccurrences": 5}});
        assert_eq!(
            occurrence_days(&r, d("2030-01-04"), d("2030-12-31"), 100),
            days(&["2030-01-04", "2030-01-05"])
        );
    }

    #[test]
    fn the_pattern_of_a_crm_series_is_inferred_from_its_days() {
        let zone = "W. Europe Standard Time";
        let cases: [(&[&str], &str, i64); 5] = [
            (&["2030-01-07", "2030-01-14", "2030-01-21"], "weekly", 1),
            (&["2030-01-07", "2030-01-21"], "weekly", 2),
            (&["2030-01-01", "2030-01-02", "2030-01-03"], "daily", 1),
            (
                &["2030-01-31", "2030-03-31", "2030-05-31"],
                "absoluteMonthly",
                2,
            ),
            (
                &["2030-03-30", "2031-03-30", "2032-03-30"],
                "absoluteYearly",
                1,
            ),
        ];
        for (list, kind, interval) in cases {
            let (r, extra) = infer_recurrence(&days(list), zone).unwrap();
            assert_eq!(r["pattern"]["type"], kind, "{list:?}");
            assert_eq!(r["pattern"]["interval"], interval, "{list:?}");
            assert_eq!(r["range"]["type"], "numbered");
            assert_eq!(r["range"]["numberOfOccurrences"], list.len());
            assert_eq!(r["range"]["recurrenceTimeZone"], zone);
            assert!(extra.is_empty());
            let first = d(list[0]);
            assert_eq!(
                occurrence_days(&r, first, d("2040-01-01"), 100),
                days(list),
                "the inferred pattern gives back exactly the days"
            );
        }
        let (r, _) =
            infer_recurrence(&days(&["2030-01-07", "2030-01-09", "2030-01-14"]), zone).unwrap();
        assert_eq!(r["pattern"]["daysOfWeek"], json!(["monday", "wednesday"]));
    }

    #[test]
    fn irregular_days_give_a_daily_series_and_the_days_to_cancel() {
        let list = days(&["2030-01-01", "2030-01-03", "2030-01-09"]);
        let (r, extra) = infer_recurrence(&list, "UTC").unwrap();
        assert_eq!(r["pattern"]["type"], "daily");
        assert_eq!(r["pattern"]["interval"], 2);
        assert_eq!(r["range"]["endDate"], "2030-01-09");
        assert_eq!(extra, days(&["2030-01-05", "2030-01-07"]));
        assert_eq!(infer_recurrence(&[], "UTC"), None);
        let (one, extra) = infer_recurrence(&days(&["2030-05-05"]), "UTC").unwrap();
        assert_eq!(one["range"]["numberOfOccurrences"], 1);
        assert!(extra.is_empty());
    }

    #[test]
    fn days_are_counted_in_the_series_zone_and_all_day_days_float() {
        let master = json!({
            "type": "seriesMaster", "isAllDay": false,
            "start": {"dateTime": "2030-01-06T23:30:00.0000000", "timeZone": "UTC"},
            "originalStartTimeZone": "W. Europe Standard Time",
            "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                           "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 3,
                                     "recurrenceTimeZone": "W. Europe Standard Time"}}});
        assert_eq!(series_zone(&master), chrono_tz::Europe::Berlin);
        assert_eq!(first_day(&master), Some(d("2030-01-07")), "00:30 in Berlin");
        let occ = json!({"originalStart": "2030-01-13T23:30:00Z"});
        assert_eq!(original_day(&occ, &master), Some(d("2030-01-14")));
        assert_eq!(
            master_days(&master, d("2030-01-10"), d("2030-12-31")),
            days(&["2030-01-14", "2030-01-21"])
        );
        assert!(reaches_into(&master, d("2030-01-20"), d("2030-02-01")));
        assert!(!reaches_into(&master, d("2030-01-22"), d("2030-02-01")));
        let yearly = json!({
            "type": "seriesMaster", "isAllDay": true,
            "start": {"dateTime": "2030-03-31T00:00:00.0000000", "timeZone": "UTC"},
            "recurrence": {"pattern": {"type": "absoluteYearly", "interval": 1, "month": 3, "dayOfMonth": 31},
                           "range": {"type": "noEnd", "startDate": "2030-03-31", "recurrenceTimeZone": "Pacific Standard Time"}}});
        assert_eq!(
            first_day(&yearly),
            Some(d("2030-03-31")),
            "floating, not shifted"
        );
        assert_eq!(
            original_day(&json!({"originalStart": "2031-03-31T00:00:00Z"}), &yearly),
            Some(d("2031-03-31"))
        );
        assert_eq!(series_zone(&json!({})), Tz::UTC);
    }

    #[test]
    fn members_name_their_master_by_stat_and_seq_numbers() {
        let master = (7u64 << 32) | 42;
        assert_eq!(stat_seq(master), (7, 42));
        let f = member_fields(Member::Exception, Some(master));
        assert_eq!(f["ContactStatNo"], "7");
        assert_eq!(f["ContactSeqNo"], "42");
        assert_eq!(f["IsSerialContact"], "true");
        assert_eq!(master_of(&f), Some(master));
        assert!(is_member_record(&f) && !is_master_record(&f));
        let m = member_fields(Member::Master, None);
        assert!(is_master_record(&m) && !is_member_record(&m));
        assert_eq!(m["IsSerialContact"], "true");
        assert!(member_fields(Member::Single, None).is_empty());
        let mut padded = CrmFields::new();
        padded.insert("ContactStatNo".into(), " 7 ".into());
        padded.insert("ContactSeqNo".into(), "x".into());
        assert_eq!(master_of(&padded), None, "a non-number names no master");
        let mut c = CrmFields::new();
        c.insert("Status".into(), "cancelled".into());
        assert!(is_cancelled_record(&c));
    }
}
