//! CRM local date and time (`YYYY-MM-DD` + `HH:MM[:SS]` in the tenant's CRM zone) ⇄ UTC.
//!
//! DST rules: a local time that occurs twice (autumn fall-back) is read as its first occurrence;
//! a local time that does not exist (spring gap) is read with the offset in force before the gap,
//! i.e. it lands after the gap (02:30 on a Berlin spring-forward day is 01:30 UTC = 03:30 CEST).

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// A date or time CRM sent that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    #[error("invalid CRM date {0:?}: expected YYYY-MM-DD")]
    Date(String),
    #[error("invalid CRM time {0:?}: expected HH:MM or HH:MM:SS")]
    Time(String),
    #[error("local time {0} cannot be placed in the CRM time zone")]
    Unmappable(String),
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses a CRM date `YYYY-MM-DD` (surrounding whitespace allowed).
pub fn parse_date(date: &str) -> Result<NaiveDate, TimeError> {
    let d = date.trim();
    if d.len() != 10 {
        return Err(TimeError::Date(short(date)));
    }
    NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| TimeError::Date(short(date)))
}

/// Parses a CRM time `HH:MM` or `HH:MM:SS` (surrounding whitespace allowed).
pub fn parse_time(time: &str) -> Result<NaiveTime, TimeError> {
    let t = time.trim();
    let parsed = match t.len() {
        5 => NaiveTime::parse_from_str(t, "%H:%M"),
        8 => NaiveTime::parse_from_str(t, "%H:%M:%S"),
        _ => return Err(TimeError::Time(short(time))),
    };
    parsed.map_err(|_| TimeError::Time(short(time)))
}

/// CRM local date and time in `tz` → UTC instant.
pub fn to_utc(date: &str, time: &str, tz: Tz) -> Result<DateTime<Utc>, TimeError> {
    let local = NaiveDateTime::new(parse_date(date)?, parse_time(time)?);
    local_to_utc(local, tz)
}

/// A naive local date-time in `tz` → UTC, with the DST rules of this module.
pub fn local_to_utc(local: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, TimeError> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Ok(first.min(second).with_timezone(&Utc)),
        LocalResult::None => {
            // In a gap: use the offset in force just before the gap.
            let before = local - chrono::Duration::hours(3);
            let offset = match tz.from_local_datetime(&before) {
                LocalResult::Single(t) => *t.offset(),
                LocalResult::Ambiguous(a, _) => *a.offset(),
                LocalResult::None => return Err(TimeError::Unmappable(local.to_string())),
            };
            let fixed = offset.fix();
            Ok(Utc.from_utc_datetime(
                &(local - chrono::Duration::seconds(i64::from(fixed.local_minus_utc()))),
            ))
        }
    }
}

/// UTC instant → CRM local (`YYYY-MM-DD`, `HH:MM:SS`) in `tz`.
pub fn from_utc(t: DateTime<Utc>, tz: Tz) -> (String, String) {
    let local = t.with_timezone(&tz);
    (
        local.format("%Y-%m-%d").to_string(),
        local.format("%H:%M:%S").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_at_reads_upd_date_and_time_in_the_crm_zone() {
        let mut f = std::collections::BTreeMap::new();
        assert_eq!(changed_at(&f, chrono_tz::Europe::Berlin), None);
        f.insert("UpdDate".to_string(), "2026-07-01".to_string());
        let midnight = changed_at(&f, chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(midnight.to_rfc3339(), "2026-06-30T22:00:00+00:00");
        f.insert("UpdTime".to_string(), "10:30".to_string());
        let t = changed_at(&f, chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-07-01T08:30:00+00:00");
    }
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid rfc3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn summer_and_winter_offsets() {
        assert_eq!(
            to_utc("2026-07-01", "12:00", Berlin).expect("valid"),
            utc("2026-07-01T10:00:00Z")
        );
        assert_eq!(
            to_utc("2026-01-15", "12:00:30", Berlin).expect("valid"),
            utc("2026-01-15T11:00:30Z")
        );
        assert_eq!(
            from_utc(utc("2026-11-20T23:30:00Z"), Berlin),
            ("2026-11-21".to_string(), "00:30:00".to_string())
        );
    }

    #[test]
    fn ambiguous_fall_back_time_is_first_occurrence() {
        // 2026-10-25 02:30 happens twice in Berlin: first at 00:30Z (CEST), then 01:30Z (CET).
        assert_eq!(
            to_utc("2026-10-25", "02:30", Berlin).expect("valid"),
            utc("2026-10-25T00:30:00Z")
        );
        // 2026-11-01 01:30 happens twice in New York: first at 05:30Z (EDT).
        assert_eq!(
            to_utc("2026-11-01", "01:30", New_York).expect("valid"),
            utc("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn time_in_spring_gap_moves_past_the_gap() {
        // 2026-03-29 02:30 does not exist in Berlin; read with CET (+01:00) it is 01:30Z = 03:30 CEST.
        let t = to_utc("2026-03-29", "02:30", Berlin).expect("valid");
        assert_eq!(t, utc("2026-03-29T01:30:00Z"));
        assert_eq!(from_utc(t, Berlin).1, "03:30:00");
        // 2026-03-08 02:30 does not exist in New York; with EST (-05:00) it is 07:30Z = 03:30 EDT.
        assert_eq!(
            to_utc("2026-03-08", "02:30", New_York).expect("valid"),
            utc("2026-03-08T07:30:00Z")
        );
    }

    #[test]
    fn invalid_inputs_are_typed_errors() {
        assert!(matches!(
            to_utc("2026-02-30", "10:00", Berlin),
            Err(TimeError::Date(_))
        ));
        assert!(matches!(
            to_utc("26-1-1", "10:00", Berlin),
            Err(TimeError::Date(_))
        ));
        assert!(matches!(
            to_utc("2026-01-01", "25:00", Berlin),
            Err(TimeError::Time(_))
        ));
        assert!(matches!(
            to_utc("2026-01-01", "", Berlin),
            Err(TimeError::Time(_))
        ));
        assert!(matches!(
            to_utc("2026-01-01", "10:00:00.5", Berlin),
            Err(TimeError::Time(_))
        ));
    }
}

/// A record's own change time: `UpdDate` + `UpdTime` (midnight when absent) in the CRM zone.
pub fn changed_at(
    fields: &std::collections::BTreeMap<String, String>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    let d = fields.get("UpdDate")?;
    let t = fields.get("UpdTime").map(|s| s.as_str()).unwrap_or("00:00");
    to_utc(d, t, tz).ok()
}
