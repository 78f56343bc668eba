//! P12 inputs: a seeded PRNG, German/Austrian/Indian-looking values, and appointment times
//! around the next daylight-saving change in Europe/Berlin (the CRM zone of the harness).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

pub const CRM_ZONE: Tz = chrono_tz::Europe::Berlin;

/// xorshift64*: small, seedable, good enough to pick edits.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// 0..n
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}

/// The seeds to run: `CGC_P12_SEED` (comma-separated, decimal or 0x-hex) or two fixed ones.
pub fn seeds() -> Vec<u64> {
    match std::env::var("CGC_P12_SEED") {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|t| {
                let t = t.trim();
                t.strip_prefix("0x")
                    .map(|h| u64::from_str_radix(h, 16))
                    .unwrap_or_else(|| t.parse())
                    .unwrap_or_else(|_| panic!("CGC_P12_SEED: {t:?} is not a number"))
            })
            .collect(),
        _ => vec![0x00C0_FFEE_2026, 0x0B0E_5EED_0012],
    }
}

const SUBJECTS: &[&str] = &[
    "Jahresgespräch Müller & Söhne",
    "Angebot Größe XL – Straßenbau",
    "Kundentermin Graz/Linz",
    "Budget Q1 Wien",
    "बैठक – Pune Vertrieb",
    "Übergabe Schlüssel Weißenbach",
    "Review: Öl & Gas GmbH",
    "Rückruf Frau Jäger",
    "समीक्षा बैठक Bengaluru",
    "Schulung \"Fußgängerzone\"",
];

const LOCATIONS: &[&str] = &[
    "Wien, Stephansplatz 1",
    "München – Marienplatz",
    "Bengaluru, MG Road",
    "कार्यालय, नई दिल्ली",
    "Salzburg & Umgebung",
    "Köln Hbf, Gleis 5",
    "Innsbruck, Maria-Theresien-Straße 18",
    "Raum Ödön <2. OG>",
];

const BODIES: &[&str] = &[
    "Agenda: Preise & Rabatte besprechen",
    "Grüße aus Köln – bitte Unterlagen mitbringen",
    "नमस्ते, कृपया रिपोर्ट लाएँ",
    "Straßenbahn ab Hbf; Treffpunkt Foyer",
    "Ärger mit Lieferung: a < b > c",
    "Servus! Jause um 10, Kaffee & Kipferl",
    "Bitte Maße prüfen (Länge ≥ 3 m)",
    "धन्यवाद – Angebot folgt",
];

pub fn subject(rng: &mut Rng, tag: &str) -> String {
    format!("{tag} {}", rng.pick(SUBJECTS))
}
pub fn location(rng: &mut Rng) -> String {
    rng.pick(LOCATIONS).to_string()
}
pub fn body(rng: &mut Rng) -> String {
    rng.pick(BODIES).to_string()
}

/// The next daylight-saving change in Europe/Berlin at least 3 days from now (the last Sunday
/// of March or October).
pub fn next_dst_day() -> NaiveDate {
    let today = Utc::now().with_timezone(&CRM_ZONE).date_naive();
    let last_sunday = |y: i32, m: u32| {
        let mut d = NaiveDate::from_ymd_opt(y, m, 31).unwrap();
        while d.weekday() != chrono::Weekday::Sun {
            d -= Duration::days(1);
        }
        d
    };
    let mut cands: Vec<NaiveDate> = (0..3)
        .flat_map(|k| {
            [
                last_sunday(today.year() + k, 3),
                last_sunday(today.year() + k, 10),
            ]
        })
        .filter(|d| *d >= today + Duration::days(3))
        .collect();
    cands.sort();
    cands[0]
}

/// Days from today to the DST day plus a margin: the harness's `future_days`.
pub fn future_days_for(dst: NaiveDate) -> u32 {
    let today = Utc::now().with_timezone(&CRM_ZONE).date_naive();
    ((dst - today).num_days() + 10) as u32
}

/// A time slot near the DST change: a day within ±3 days, a local start on the quarter hour
/// (never inside the 02:00–03:00 hour of the change day, which does not exist or exists twice),
/// and a length of 30 to 120 minutes.
pub fn slot(rng: &mut Rng, dst: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    loop {
        let day = dst + Duration::days(rng.below(7) as i64 - 3);
        let minutes = 30 * rng.below(36) as u32 + 15 * rng.below(2) as u32; // 00:00..17:45
        let local = NaiveDateTime::new(
            day,
            NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap(),
        );
        let len = Duration::minutes(30 * (1 + rng.below(4) as i64));
        let (Some(start), Some(end)) = (local_utc(local), local_utc(local + len)) else {
            continue;
        };
        if end - start == len {
            return (start, end);
        }
    }
}

/// A local CRM time as UTC; `None` when it does not exist or exists twice.
pub fn local_utc(local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match CRM_ZONE.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        _ => None,
    }
}

/// CRM `Date` and `Time` of an instant (HH:MM, CRM zone).
pub fn crm_date_time(t: DateTime<Utc>) -> (String, String) {
    let l = t.with_timezone(&CRM_ZONE);
    (
        l.format("%Y-%m-%d").to_string(),
        l.format("%H:%M").to_string(),
    )
}

/// The zones an Outlook user may write a start in (Windows and IANA names; India is +05:30).
const GRAPH_ZONES: &[&str] = &[
    "UTC",
    "W. Europe Standard Time",
    "India Standard Time",
    "Europe/Vienna",
];

/// A Graph `dateTimeTimeZone` for an instant, in a random zone.
pub fn graph_time(rng: &mut Rng, t: DateTime<Utc>) -> serde_json::Value {
    let zone = *rng.pick(GRAPH_ZONES);
    let tz: Tz = match zone {
        "W. Europe Standard Time" => chrono_tz::Europe::Berlin,
        "India Standard Time" => chrono_tz::Asia::Kolkata,
        "Europe/Vienna" => chrono_tz::Europe::Vienna,
        _ => chrono_tz::UTC,
    };
    serde_json::json!({
        "dateTime": t.with_timezone(&tz).naive_local().format("%Y-%m-%dT%H:%M:%S.0000000").to_string(),
        "timeZone": zone,
    })
}

/// HTML for an Outlook body whose text is `text`.
pub fn html_body(rng: &mut Rng, text: &str) -> serde_json::Value {
    let esc = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let esc = if rng.chance(50) {
        esc.replace('ü', "&uuml;").replace('ß', "&szlig;")
    } else {
        esc
    };
    serde_json::json!({
        "contentType": "html",
        "content": format!("<html><body><div><p>{esc}</p></div></body></html>"),
    })
}
