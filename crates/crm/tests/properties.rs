//! Property tests: request round trip, and CRM local time ⇄ UTC across DST changes.

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::America::New_York;
use chrono_tz::Europe::Berlin;
use chrono_tz::Tz;
use proptest::prelude::*;

use cgc_crm::time::{from_utc, to_utc};
use cgc_crm::{Command, Cond, CondOp, ImportField, Query, build_request, parse_request};

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}"
}

/// Any text XML 1.0 can carry, including markup characters, quotes, line ends and tabs.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,20}",
        "[a-z<>&\"' \t\r\n\u{e4}\u{20ac}\u{1F600}]{0,20}",
        Just(String::new()),
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

fn op() -> impl Strategy<Value = CondOp> {
    prop_oneof![
        Just(CondOp::Eq),
        Just(CondOp::Ne),
        Just(CondOp::Lt),
        Just(CondOp::Le),
        Just(CondOp::Gt),
        Just(CondOp::Ge),
        Just(CondOp::Contains),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let fields = || proptest::collection::btree_map(name(), value(), 0..5);
    prop_oneof![
        (
            name(),
            proptest::collection::vec((name(), op(), value()), 0..4),
            proptest::collection::vec(name(), 0..5),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(table, conds, fields, max_records)| Command::Query(Query {
                table,
                conditions: conds
                    .into_iter()
                    .map(|(field, op, value)| Cond { field, op, value })
                    .collect(),
                fields,
                max_records,
            })),
        (name(), fields()).prop_map(|(table, fields)| Command::Insert { table, fields }),
        (name(), any::<u64>(), fields()).prop_map(|(table, id, fields)| Command::Update {
            table,
            id,
            fields
        }),
        (name(), any::<u64>()).prop_map(|(table, id)| Command::Delete { table, id }),
        (
            name(),
            proptest::collection::vec((name(), value(), any::<bool>()), 0..5)
        )
            .prop_map(|(table, fs)| Command::Import {
                table,
                fields: fs
                    .into_iter()
                    .map(|(name, value, matchup)| ImportField {
                        name,
                        value,
                        matchup
                    })
                    .collect(),
            }),
        Just(Command::BreakOnError),
    ]
}

proptest! {
    #[test]
    fn build_then_parse_request_gives_same_commands(
        commands in proptest::collection::vec(command(), 0..6),
        user in "[ -~]{0,10}",
        pwd in value(),
        corr in "[0-9a-f-]{1,36}",
        impersonate in proptest::option::of("[a-z0-9.]{1,10}@[a-z]{1,8}\\.com"),
    ) {
        let xml = build_request(&commands, &user, &pwd, &corr, impersonate.as_deref());
        let parsed = parse_request(&xml).expect("own request parses");
        prop_assert_eq!(&parsed.commands, &commands);
        prop_assert_eq!(parsed.user.as_deref(), Some(user.as_str()));
        prop_assert!(parsed.pwd_matches(&pwd));
        prop_assert_eq!(parsed.impersonate_email(), impersonate.as_deref());
        prop_assert_eq!(parsed.extra_attrs, vec![("corr".to_string(), corr)]);
    }
}

/// Text that may hold characters XML 1.0 forbids.
fn dirty_value() -> impl Strategy<Value = String> {
    "[a-z<&\u{0}-\u{1F}\u{FFFE}\u{FFFF}]{0,20}"
}

proptest! {
    /// Characters XML 1.0 forbids never reach a request: they are dropped, everything else is kept.
    #[test]
    fn forbidden_characters_are_dropped_from_every_value(
        field in dirty_value(),
        cond in dirty_value(),
        matchup in dirty_value(),
    ) {
        let keep = |s: &str| s.chars().filter(|c| cgc_crm::client::xml::is_xml10_char(*c)).collect::<String>();
        let commands = vec![
            Command::Insert {
                table: "Contact".into(),
                fields: [("Subject".to_string(), field.clone())].into_iter().collect(),
            },
            Command::Query(Query::new("Contact").with_cond("Subject", CondOp::Eq, cond.clone())),
            Command::Import {
                table: "ExtKey".into(),
                fields: vec![ImportField::new("ExtKey", matchup.clone(), true)],
            },
        ];
        let xml = build_request(&commands, "u", "p", "c", None);
        prop_assert!(xml.chars().all(cgc_crm::client::xml::is_xml10_char));
        let parsed = parse_request(&xml).expect("own request parses");
        let expected = vec![
            Command::Insert {
                table: "Contact".into(),
                fields: [("Subject".to_string(), keep(&field))].into_iter().collect(),
            },
            Command::Query(Query::new("Contact").with_cond("Subject", CondOp::Eq, keep(&cond))),
            Command::Import {
                table: "ExtKey".into(),
                fields: vec![ImportField::new("ExtKey", keep(&matchup), true)],
            },
        ];
        prop_assert_eq!(parsed.commands, expected);
    }
}

/// Instants near the DST changes of 2020–2035 (± 3 h) or anywhere in 1990–2060.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let near_change =
        (2020i32..2036, 0usize..4, -3 * 3600i64..3 * 3600).prop_map(|(year, which, offset)| {
            // Rough UTC times of the changes: EU last Sunday of March/October 01:00Z,
            // US second Sunday of March / first Sunday of November ~07:00Z/06:00Z.
            let anchor = match which {
                0 => last_sunday(year, 3).and_hms_opt(1, 0, 0),
                1 => last_sunday(year, 10).and_hms_opt(1, 0, 0),
                2 => nth_sunday(year, 3, 2).and_hms_opt(7, 0, 0),
                _ => nth_sunday(year, 11, 1).and_hms_opt(6, 0, 0),
            }
            .expect("valid time");
            Utc.from_utc_datetime(&anchor) + Duration::seconds(offset)
        });
    let anywhere = (631_152_000i64..2_871_763_200)
        .prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range"));
    prop_oneof![near_change, anywhere]
}

fn last_sunday(year: i32, month: u32) -> chrono::NaiveDate {
    use chrono::Datelike;
    let next = if month == 12 {
        chrono::NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .expect("valid date");
    let mut d = next.pred_opt().expect("valid date");
    while d.weekday() != chrono::Weekday::Sun {
        d = d.pred_opt().expect("valid date");
    }
    d
}

fn nth_sunday(year: i32, month: u32, n: u32) -> chrono::NaiveDate {
    use chrono::Datelike;
    let mut d = chrono::NaiveDate::from_ymd_opt(year, month, 1).expect("valid date");
    while d.weekday() != chrono::Weekday::Sun {
        d = d.succ_opt().expect("valid date");
    }
    d + Duration::weeks(i64::from(n - 1))
}

fn zone() -> impl Strategy<Value = Tz> {
    prop_oneof![Just(Berlin), Just(New_York)]
}

proptest! {
    /// UTC → local → UTC gives the same instant, except in the repeated hour of a fall-back, where
    /// the local time is read as its first occurrence (one hour earlier).
    #[test]
    fn utc_to_local_and_back(t in instant(), tz in zone()) {
        let (date, time) = from_utc(t, tz);
        let back = to_utc(&date, &time, tz).expect("own output parses");
        let first_occurrence = back == t - Duration::hours(1)
            && from_utc(back, tz) == (date.clone(), time.clone());
        prop_assert!(back == t || first_occurrence, "{t} -> {date} {time} -> {back}");
    }

    /// Local → UTC → local gives the same local time for every local time that exists.
    #[test]
    fn local_to_utc_and_back(t in instant(), tz in zone()) {
        let (date, time) = from_utc(t, tz);
        let utc = to_utc(&date, &time, tz).expect("parses");
        prop_assert_eq!(from_utc(utc, tz), (date, time));
    }
}
