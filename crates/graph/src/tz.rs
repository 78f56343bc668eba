//! Time-zone names as Graph uses them: any Windows zone name of CLDR's `windowsZones.xml`
//! (mapped through the table the `localzone` crate ships) or an IANA name (`chrono-tz`).

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The zone a Graph `timeZone` / `originalStartTimeZone` / `Prefer: outlook.timezone` names:
/// a Windows name (`W. Europe Standard Time`, `UTC-11`, `Mountain Standard Time (Mexico)`),
/// an IANA name (`Europe/Berlin`) or `UTC`. `None` for an unknown name (log it and keep UTC).
pub fn resolve_zone(name: &str) -> Option<Tz> {
    let n = name.trim();
    if n.is_empty() {
        return None;
    }
    if n.eq_ignore_ascii_case("utc")
        || n.eq_ignore_ascii_case("tzone://Microsoft/Utc")
        || n.eq_ignore_ascii_case("Etc/UTC")
    {
        return Some(Tz::UTC);
    }
    if let Some(iana) = localzone::win_zone_to_iana(n, Some("001")) {
        return iana.parse().ok();
    }
    n.parse::<Tz>().ok()
}

/// Reads a wall-clock time in `zone` as an instant (a time skipped by a DST change is moved
/// forward by an hour, an ambiguous one takes the earlier instant).
pub fn local_to_utc(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        LocalResult::None => {
            let later = local + chrono::Duration::hours(1);
            match zone.from_local_datetime(&later) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
                LocalResult::None => local.and_utc(),
            }
        }
    }
}

/// Parses a `dateTimeTimeZone` (`{"dateTime": "2030-01-07T09:00:00.0000000", "timeZone": "..."}`)
/// as an instant; `None` when the date-time or the zone cannot be read.
pub fn date_time_time_zone_to_utc(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    let local = parse_naive(v.get("dateTime")?.as_str()?)?;
    let zone = match v.get("timeZone").and_then(|z| z.as_str()) {
        Some(z) => resolve_zone(z)?,
        None => Tz::UTC,
    };
    Some(local_to_utc(local, zone))
}

/// `2030-01-07T09:00:00`, with or without fractional seconds or a trailing `Z`.
pub fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim().trim_end_matches('Z');
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .ok()
}

/// Graph's wall-clock format: `2030-01-07T09:00:00.0000000`.
pub fn format_graph_local(t: NaiveDateTime) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = t.and_utc().timestamp_subsec_nanos() / 100;
    format!("{base}.{frac:07}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_iana_and_utc_names_resolve() {
        for n in [
            "W. Europe Standard Time",
            "Central Brazilian Standard Time",
            "Mountain Standard Time (Mexico)",
            "UTC-11",
            "Europe/Berlin",
            "UTC",
        ] {
            assert!(resolve_zone(n).is_some(), "{n}");
        }
        assert_eq!(resolve_zone("Mars Standard Time"), None);
        assert_eq!(
            resolve_zone("W. Europe Standard Time"),
            Some(Tz::Europe__Berlin)
        );
    }

    #[test]
    fn wall_clock_converts_with_dst() {
        let z = Tz::Europe__Berlin;
        let winter = parse_naive("2030-01-07T09:00:00").map(|l| local_to_utc(l, z));
        let summer = parse_naive("2030-07-07T09:00:00.0000000").map(|l| local_to_utc(l, z));
        assert_eq!(
            winter.map(|t| t.to_rfc3339()),
            Some("2030-01-07T08:00:00+00:00".into())
        );
        assert_eq!(
            summer.map(|t| t.to_rfc3339()),
            Some("2030-07-07T07:00:00+00:00".into())
        );
    }
}
