//! Small helpers shared by the client and the simulator.

use chrono::{DateTime, SecondsFormat, Utc};

/// Percent-encodes everything except RFC 3986 unreserved characters and `'()$,`
/// (kept readable in OData query options). Spaces become `%20`, never `+`.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'_' | b'~' | b'\'' | b'(' | b')' | b'$' | b','
            );
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a path segment (like [`encode_component`] but also encodes `'()$,`).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` sequences; with `plus_is_space`, `+` becomes a space (query strings).
/// Invalid sequences are kept verbatim; invalid UTF-8 is replaced lossily.
pub(crate) fn decode_component(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        if b == b'+' && plus_is_space {
            out.push(b' ');
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a query string into decoded (key, value) pairs, in order.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode_component(k, true), decode_component(v, true)),
            None => (decode_component(p, true), String::new()),
        })
        .collect()
}

/// Quotes a string as an OData literal: `'` doubled, wrapped in `'`.
pub(crate) fn odata_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Extracts all OData string literals (`'...'`, with `''` escapes) from a filter expression.
pub(crate) fn odata_literals(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut lit = String::new();
        loop {
            match chars.next() {
                None => break,
                Some('\'') => {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        lit.push('\'');
                    } else {
                        break;
                    }
                }
                Some(ch) => lit.push(ch),
            }
        }
        out.push(lit);
    }
    out
}

/// Graph-style timestamp: `2025-03-04T09:00:00.1234567Z` (7 fractional digits).
pub(crate) fn graph_timestamp(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = t.timestamp_subsec_nanos() / 100;
    format!("{base}.{frac:07}Z")
}

/// RFC 3339 with `Z`, used in request bodies.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The first `n` characters of `s`, for error excerpts.
pub(crate) fn excerpt(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_round_trips() {
        let s = "singleValueExtendedProperties/Any(ep: ep/id eq 'a b' and ep/value eq 'x+y%')";
        assert_eq!(decode_component(&encode_component(s), true), s);
        assert!(!encode_component(s).contains(' '));
        assert!(!encode_component(s).contains('+'));
    }

    #[test]
    fn decode_keeps_broken_escapes() {
        assert_eq!(decode_component("a%2", true), "a%2");
        assert_eq!(decode_component("%é1", true), "%é1");
        assert_eq!(decode_component("a%zz+b", true), "a%zz b");
        assert_eq!(decode_component("a+b", false), "a+b");
    }

    #[test]
    fn odata_literals_handle_doubled_quotes() {
        let f = format!(
            "x eq {} and y eq {}",
            odata_literal("O'Brien"),
            odata_literal("")
        );
        assert_eq!(
            odata_literals(&f),
            vec!["O'Brien".to_string(), String::new()]
        );
    }

    #[test]
    fn graph_timestamp_has_seven_fraction_digits() {
        let t = DateTime::parse_from_rfc3339("2025-03-04T09:00:00.5Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(
            t.map(graph_timestamp).as_deref(),
            Some("2025-03-04T09:00:00.5000000Z")
        );
    }
}
