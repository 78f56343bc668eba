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

/// Names Graph uses for UTC that are not Windows zone ids of CLDR (`tzone://Microsoft/Utc` is
/// what Exchange calls it in some answers).
const UTC_ALIASES: &[&str] = &[
    "utc",
    "z",
    "gmt",
    "etc/utc",
    "etc/gmt",
    "coordinated universal time",
    "tzone://microsoft/utc",
];

/// Every Windows time-zone id of CLDR's `windowsZones.xml` (as Graph's `timeZone`,
/// `originalStartTimeZone` and `recurrenceTimeZone` use them) with its zone: CLDR's default
/// (territory `001`) IANA zone. The table is the `windows-timezones` crate's (generated from
/// CLDR), not a hand-picked subset.
pub fn windows_zones() -> impl Iterator<Item = (&'static str, Tz)> {
    use strum::IntoEnumIterator;
    windows_timezones::WindowsTimezone::iter().map(|w| (w.name(), Tz::from(w)))
}

/// A zone by name: `UTC`, any IANA name (`Europe/Berlin`, `Asia/Calcutta`) or any Windows zone
/// id of CLDR (`W. Europe Standard Time`, `Central Brazilian Standard Time`,
/// `Mountain Standard Time (Mexico)`, `UTC-11`). Letter case and surrounding space are ignored.
/// An unknown name is None (never a panic).
pub fn resolve_zone(name: &str) -> Option<Tz> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if UTC_ALIASES.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        return Some(Tz::UTC);
    }
    if let Ok(w) = name.parse::<windows_timezones::WindowsTimezone>() {
        return Some(Tz::from(w));
    }
    if let Ok(tz) = name.parse::<Tz>() {
        return Some(tz);
    }
    windows_zones()
        .find(|(w, _)| w.eq_ignore_ascii_case(name))
        .map(|(_, tz)| tz)
        .or_else(|| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .find(|tz| tz.name().eq_ignore_ascii_case(name))
                .copied()
        })
}

/// The zone names in a Graph item that [`resolve_zone`] does not know (the mapping reads those
/// times as UTC; the caller logs these names): the `timeZone` of every top-level
/// `dateTimeTimeZone` (`start`, `end`, `dueDateTime`, ...), `originalStartTimeZone`,
/// `originalEndTimeZone` and `recurrence.range.recurrenceTimeZone`. Empty names are not listed.
pub fn unknown_time_zones(item: &serde_json::Value) -> Vec<String> {
    let Some(o) = item.as_object() else {
        return Vec::new();
    };
    let mut names: Vec<&str> = Vec::new();
    for v in o.values() {
        if let Some(z) = v.get("timeZone").and_then(|z| z.as_str())
            && v.get("dateTime").is_some()
        {
            names.push(z);
        }
    }
    for key in ["originalStartTimeZone", "originalEndTimeZone"] {
        names.extend(o.get(key).and_then(|z| z.as_str()));
    }
    names.extend(
        item.pointer("/recurrence/range/recurrenceTimeZone")
            .and_then(|z| z.as_str()),
    );
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| !n.trim().is_empty() && resolve_zone(n).is_none())
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
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

    /// Two zones with the same offsets all through 2026 (CLDR may name a zone by an alias:
    /// Asia/Calcutta for Asia/Kolkata, Etc/UTC for UTC).
    fn same_zone(a: Tz, b: Tz) -> bool {
        (1..=12).all(|month| {
            let t = NaiveDate::from_ymd_opt(2026, month, 15)
                .and_then(|d| d.and_hms_opt(12, 0, 0))
                .unwrap_or_default();
            local_to_utc(t, a) == local_to_utc(t, b)
        })
    }

    #[test]
    fn every_windows_name_of_cldr_resolves() {
        let all: Vec<(&str, Tz)> = windows_zones().collect();
        // CLDR 46 lists about 140 Windows zones
        assert!(all.len() >= 135, "only {} Windows zones", all.len());
        for (w, tz) in &all {
            for name in [w.to_string(), w.to_lowercase(), format!("  {w} ")] {
                let got = resolve_zone(&name);
                assert!(
                    got.is_some_and(|g| same_zone(g, *tz)),
                    "{name:?} -> {got:?}, CLDR {tz}"
                );
            }
            // and the IANA zone CLDR gives resolves by its own name
            assert!(
                resolve_zone(tz.name()).is_some_and(|g| same_zone(g, *tz)),
                "{}",
                tz.name()
            );
        }
    }

    #[test]
    fn tricky_windows_names() {
        use chrono_tz::{America, Asia, Australia, Etc, Europe, Pacific};
        for (name, tz) in [
            ("Central Brazilian Standard Time", America::Cuiaba),
            ("E. South America Standard Time", America::Sao_Paulo),
            ("Mountain Standard Time (Mexico)", America::Mazatlan),
            ("Pacific Standard Time (Mexico)", America::Tijuana),
            ("Mountain Standard Time", America::Denver),
            ("US Mountain Standard Time", America::Phoenix),
            ("UTC-11", Etc::GMTPlus11),
            ("UTC-02", Etc::GMTPlus2),
            ("UTC+12", Etc::GMTMinus12),
            ("UTC+13", Etc::GMTMinus13),
            ("UTC", Etc::UTC),
            ("India Standard Time", Asia::Calcutta),
            ("Nepal Standard Time", Asia::Katmandu),
            ("W. Europe Standard Time", Europe::Berlin),
            ("Central Europe Standard Time", Europe::Budapest),
            ("Romance Standard Time", Europe::Paris),
            ("GMT Standard Time", Europe::London),
            ("Russia Time Zone 11", Asia::Kamchatka),
            ("Lord Howe Standard Time", Australia::Lord_Howe),
            ("Chatham Islands Standard Time", Pacific::Chatham),
            ("Line Islands Standard Time", Pacific::Kiritimati),
            ("Dateline Standard Time", Etc::GMTPlus12),
        ] {
            let got = resolve_zone(name);
            // CLDR may name the default zone by an alias (Asia/Calcutta for Asia/Kolkata): compare
            // offsets over a year rather than names
            assert!(
                got.is_some_and(|g| same_zone(g, tz)),
                "{name} -> {got:?}, expected {tz}"
            );
        }
        assert_eq!(
            resolve_zone("w. europe standard time"),
            Some(Europe::Berlin)
        );
        assert_eq!(resolve_zone("Europe/Berlin"), Some(Europe::Berlin));
        assert_eq!(resolve_zone("europe/vienna"), Some(Europe::Vienna));
        assert_eq!(resolve_zone("Asia/Kolkata"), Some(Asia::Kolkata));
        assert_eq!(
            resolve_zone("America/Argentina/Buenos_Aires"),
            Some(America::Argentina::Buenos_Aires)
        );
        assert_eq!(resolve_zone("UTC"), Some(Tz::UTC));
        assert_eq!(resolve_zone("tzone://Microsoft/Utc"), Some(Tz::UTC));
        assert_eq!(resolve_zone("Coordinated Universal Time"), Some(Tz::UTC));
    }

    #[test]
    fn unknown_zones_of_an_item_are_listed() {
        let item = serde_json::json!({
            "start": {"dateTime": "2026-01-01T09:00:00", "timeZone": "Mars Standard Time"},
            "end": {"dateTime": "2026-01-01T10:00:00", "timeZone": "W. Europe Standard Time"},
            "originalStartTimeZone": "Customized Time Zone",
            "originalEndTimeZone": "India Standard Time",
            "recurrence": {"range": {"recurrenceTimeZone": "Mars Standard Time"}},
            "subject": "x"
        });
        assert_eq!(
            unknown_time_zones(&item),
            vec![
                "Customized Time Zone".to_string(),
                "Mars Standard Time".to_string()
            ]
        );
        assert!(unknown_time_zones(&serde_json::json!("not an object")).is_empty());
    }

    #[test]
    fn unknown_zone_names_are_none() {
        for name in [
            "Mars/Olympus",
            "Mars Standard Time",
            "",
            "   ",
            "Customized Time Zone",
            "UTC+99",
            "\u{0}",
            "W. Europe Standard Time (Mexico)",
        ] {
            assert_eq!(resolve_zone(name), None, "{name:?}");
        }
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
