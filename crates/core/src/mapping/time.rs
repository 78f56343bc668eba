//! Time zones and local <-> UTC conversion.
//!
//! Nonexistent local times (the hour skipped when clocks go forward) are read with the offset in
//! force just before the gap, so 02:30 on a Europe/Berlin spring-forward day is 01:30Z (shown as
//! 03:30 CEST). Ambiguous local times (the hour repeated when clocks go back) take the earlier
//! instant, the one still in summer time. Both choices are deterministic.

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

/// Windows time-zone names (as Graph's `timeZone` and `originalStartTimeZone` use them) -> IANA.
pub const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("Dateline Standard Time", "Etc/GMT+12"),
    ("UTC-11", "Etc/GMT+11"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Pacific Standard Time (Mexico)", "America/Tijuana"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time", "America/Denver"),
    ("Mountain Standard Time (Mexico)", "America/Mazatlan"),
    ("Central Standard Time", "America/Chicago"),
    ("Central America Standard Time", "America/Guatemala"),
    ("Central Standard Time (Mexico)", "America/Mexico_City"),
    ("Canada Central Standard Time", "America/Regina"),
    ("Eastern Standard Time", "America/New_York"),
    ("US Eastern Standard Time", "America/Indiana/Indianapolis"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Argentina/Buenos_Aires"),
    ("Azores Standard Time", "Atlantic/Azores"),
    ("Cape Verde Standard Time", "Atlantic/Cape_Verde"),
    ("UTC", "Etc/UTC"),
    ("Coordinated Universal Time", "Etc/UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("Morocco Standard Time", "Africa/Casablanca"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("Romance Standard Time", "Europe/Paris"),
    ("W. Central Africa Standard Time", "Africa/Lagos"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("Egypt Standard Time", "Africa/Cairo"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Arab Standard Time", "Asia/Riyadh"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Iran Standard Time", "Asia/Tehran"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("India Standard Time", "Asia/Kolkata"),
    ("Sri Lanka Standard Time", "Asia/Colombo"),
    ("Nepal Standard Time", "Asia/Kathmandu"),
    ("Central Asia Standard Time", "Asia/Almaty"),
    ("Bangladesh Standard Time", "Asia/Dhaka"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("North Asia East Standard Time", "Asia/Irkutsk"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("W. Australia Standard Time", "Australia/Perth"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("Cen. Australia Standard Time", "Australia/Adelaide"),
    ("E. Australia Standard Time", "Australia/Brisbane"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
];

/// A zone by name: `UTC`, an IANA name (`Europe/Berlin`) or a common Windows name
/// (`W. Europe Standard Time`). Letter case is ignored for Windows names.
pub fn resolve_zone(name: &str) -> Option<Tz> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("utc")
        || name.eq_ignore_ascii_case("z")
        || name.eq_ignore_ascii_case("etc/utc")
    {
        return Some(Tz::UTC);
    }
    if let Ok(tz) = name.parse::<Tz>() {
        return Some(tz);
    }
    WINDOWS_ZONES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(name))
        .and_then(|(_, iana)| iana.parse::<Tz>().ok())
}

/// A local wall-clock time in `tz` as a UTC instant (see the module doc for gaps and overlaps).
pub fn local_to_utc(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(dt) => dt.with_timezone(&Utc),
        LocalResult::Ambiguous(earliest, _) => earliest.with_timezone(&Utc),
        LocalResult::None => {
            // the offset in force a day before (gaps are hours long and rare, so this is the
            // offset just before the gap)
            let before = local - Duration::days(1);
            let offset = tz.offset_from_utc_datetime(&before).fix();
            (local - Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc()
        }
    }
}

/// A UTC instant as wall-clock time in `tz`.
pub fn utc_to_local(dt: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    dt.with_timezone(&tz).naive_local()
}

/// Graph's `dateTimeTimeZone.dateTime`: `2025-03-04T09:00:00.0000000`, `…T09:00:00`, `…T09:00`;
/// a value with an offset or `Z` is read as that instant (the zone is then ignored).
pub enum GraphDateTime {
    Local(NaiveDateTime),
    Absolute(DateTime<Utc>),
}

/// Reads Graph's `dateTimeTimeZone.dateTime` text.
pub fn parse_graph_datetime(s: &str) -> Option<GraphDateTime> {
    let s = s.trim();
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Some(GraphDateTime::Local(n));
        }
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(GraphDateTime::Absolute(d.with_timezone(&Utc)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(GraphDateTime::Local);
    }
    None
}

/// CRM time text: `HH:MM` or `HH:MM:SS`.
pub fn parse_crm_time(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

/// CRM date text: `YYYY-MM-DD`.
pub fn parse_crm_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_windows_name_resolves() {
        for (w, iana) in WINDOWS_ZONES {
            assert!(resolve_zone(w).is_some(), "{w} -> {iana} does not resolve");
        }
        assert_eq!(
            resolve_zone("w. europe standard time"),
            Some(chrono_tz::Europe::Berlin)
        );
        assert_eq!(
            resolve_zone("Europe/Berlin"),
            Some(chrono_tz::Europe::Berlin)
        );
        assert_eq!(resolve_zone("UTC"), Some(Tz::UTC));
        assert_eq!(resolve_zone("Mars/Olympus"), None);
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn gap_and_overlap_are_deterministic() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2026-03-29 02:30 does not exist in Berlin: read with CET (+1)
        assert_eq!(
            local_to_utc(local("2026-03-29 02:30"), berlin).to_rfc3339(),
            "2026-03-29T01:30:00+00:00"
        );
        // 2026-10-25 02:30 exists twice: the earlier (CEST, +2) wins
        assert_eq!(
            local_to_utc(local("2026-10-25 02:30"), berlin).to_rfc3339(),
            "2026-10-25T00:30:00+00:00"
        );
        assert_eq!(
            local_to_utc(local("2026-07-01 09:00"), berlin).to_rfc3339(),
            "2026-07-01T07:00:00+00:00"
        );
    }
}
