//! Outlook body conversion: a body written as text is stored and served as HTML the way
//! Exchange renders it (`<html><head>…</head><body><div>…</div></body></html>`, named
//! entities where HTML 4 has one, numeric entities for other non-ASCII characters, `<br>`
//! for line breaks), and [`html_to_text`] turns such HTML back into plain text.

/// HTML 4.01 named character entities (code point, name).
const ENTITIES: &[(u32, &str)] = &[
    (34, "quot"),
    (38, "amp"),
    (60, "lt"),
    (62, "gt"),
    (160, "nbsp"),
    (161, "iexcl"),
    (162, "cent"),
    (163, "pound"),
    (164, "curren"),
    (165, "yen"),
    (166, "brvbar"),
    (167, "sect"),
    (168, "uml"),
    (169, "copy"),
    (170, "ordf"),
    (171, "laquo"),
    (172, "not"),
    (173, "shy"),
    (174, "reg"),
    (175, "macr"),
    (176, "deg"),
    (177, "plusmn"),
    (178, "sup2"),
    (179, "sup3"),
    (180, "acute"),
    (181, "micro"),
    (182, "para"),
    (183, "middot"),
    (184, "cedil"),
    (185, "sup1"),
    (186, "ordm"),
    (187, "raquo"),
    (188, "frac14"),
    (189, "frac12"),
    (190, "frac34"),
    (191, "iquest"),
    (192, "Agrave"),
    (193, "Aacute"),
    (194, "Acirc"),
    (195, "Atilde"),
    (196, "Auml"),
    (197, "Aring"),
    (198, "AElig"),
    (199, "Ccedil"),
    (200, "Egrave"),
    (201, "Eacute"),
    (202, "Ecirc"),
    (203, "Euml"),
    (204, "Igrave"),
    (205, "Iacute"),
    (206, "Icirc"),
    (207, "Iuml"),
    (208, "ETH"),
    (209, "Ntilde"),
    (210, "Ograve"),
    (211, "Oacute"),
    (212, "Ocirc"),
    (213, "Otilde"),
    (214, "Ouml"),
    (215, "times"),
    (216, "Oslash"),
    (217, "Ugrave"),
    (218, "Uacute"),
    (219, "Ucirc"),
    (220, "Uuml"),
    (221, "Yacute"),
    (222, "THORN"),
    (223, "szlig"),
    (224, "agrave"),
    (225, "aacute"),
    (226, "acirc"),
    (227, "atilde"),
    (228, "auml"),
    (229, "aring"),
    (230, "aelig"),
    (231, "ccedil"),
    (232, "egrave"),
    (233, "eacute"),
    (234, "ecirc"),
    (235, "euml"),
    (236, "igrave"),
    (237, "iacute"),
    (238, "icirc"),
    (239, "iuml"),
    (240, "eth"),
    (241, "ntilde"),
    (242, "ograve"),
    (243, "oacute"),
    (244, "ocirc"),
    (245, "otilde"),
    (246, "ouml"),
    (247, "divide"),
    (248, "oslash"),
    (249, "ugrave"),
    (250, "uacute"),
    (251, "ucirc"),
    (252, "uuml"),
    (253, "yacute"),
    (254, "thorn"),
    (255, "yuml"),
    (338, "OElig"),
    (339, "oelig"),
    (352, "Scaron"),
    (353, "scaron"),
    (376, "Yuml"),
    (402, "fnof"),
    (710, "circ"),
    (732, "tilde"),
    (913, "Alpha"),
    (914, "Beta"),
    (915, "Gamma"),
    (916, "Delta"),
    (917, "Epsilon"),
    (918, "Zeta"),
    (919, "Eta"),
    (920, "Theta"),
    (921, "Iota"),
    (922, "Kappa"),
    (923, "Lambda"),
    (924, "Mu"),
    (925, "Nu"),
    (926, "Xi"),
    (927, "Omicron"),
    (928, "Pi"),
    (929, "Rho"),
    (931, "Sigma"),
    (932, "Tau"),
    (933, "Upsilon"),
    (934, "Phi"),
    (935, "Chi"),
    (936, "Psi"),
    (937, "Omega"),
    (945, "alpha"),
    (946, "beta"),
    (947, "gamma"),
    (948, "delta"),
    (949, "epsilon"),
    (950, "zeta"),
    (951, "eta"),
    (952, "theta"),
    (953, "iota"),
    (954, "kappa"),
    (955, "lambda"),
    (956, "mu"),
    (957, "nu"),
    (958, "xi"),
    (959, "omicron"),
    (960, "pi"),
    (961, "rho"),
    (962, "sigmaf"),
    (963, "sigma"),
    (964, "tau"),
    (965, "upsilon"),
    (966, "phi"),
    (967, "chi"),
    (968, "psi"),
    (969, "omega"),
    (977, "thetasym"),
    (978, "upsih"),
    (982, "piv"),
    (8194, "ensp"),
    (8195, "emsp"),
    (8201, "thinsp"),
    (8204, "zwnj"),
    (8205, "zwj"),
    (8206, "lrm"),
    (8207, "rlm"),
    (8211, "ndash"),
    (8212, "mdash"),
    (8216, "lsquo"),
    (8217, "rsquo"),
    (8218, "sbquo"),
    (8220, "ldquo"),
    (8221, "rdquo"),
    (8222, "bdquo"),
    (8224, "dagger"),
    (8225, "Dagger"),
    (8226, "bull"),
    (8230, "hellip"),
    (8240, "permil"),
    (8242, "prime"),
    (8243, "Prime"),
    (8249, "lsaquo"),
    (8250, "rsaquo"),
    (8254, "oline"),
    (8260, "frasl"),
    (8364, "euro"),
    (8465, "image"),
    (8472, "weierp"),
    (8476, "real"),
    (8482, "trade"),
    (8501, "alefsym"),
    (8592, "larr"),
    (8593, "uarr"),
    (8594, "rarr"),
    (8595, "darr"),
    (8596, "harr"),
    (8629, "crarr"),
    (8656, "lArr"),
    (8657, "uArr"),
    (8658, "rArr"),
    (8659, "dArr"),
    (8660, "hArr"),
    (8704, "forall"),
    (8706, "part"),
    (8707, "exist"),
    (8709, "empty"),
    (8711, "nabla"),
    (8712, "isin"),
    (8713, "notin"),
    (8715, "ni"),
    (8719, "prod"),
    (8721, "sum"),
    (8722, "minus"),
    (8727, "lowast"),
    (8730, "radic"),
    (8733, "prop"),
    (8734, "infin"),
    (8736, "ang"),
    (8743, "and"),
    (8744, "or"),
    (8745, "cap"),
    (8746, "cup"),
    (8747, "int"),
    (8756, "there4"),
    (8764, "sim"),
    (8773, "cong"),
    (8776, "asymp"),
    (8800, "ne"),
    (8801, "equiv"),
    (8804, "le"),
    (8805, "ge"),
    (8834, "sub"),
    (8835, "sup"),
    (8836, "nsub"),
    (8838, "sube"),
    (8839, "supe"),
    (8853, "oplus"),
    (8855, "otimes"),
    (8869, "perp"),
    (8901, "sdot"),
    (8968, "lceil"),
    (8969, "rceil"),
    (8970, "lfloor"),
    (8971, "rfloor"),
    (9001, "lang"),
    (9002, "rang"),
    (9674, "loz"),
    (9824, "spades"),
    (9827, "clubs"),
    (9829, "hearts"),
    (9830, "diams"),
];

fn entity_name(c: char) -> Option<&'static str> {
    let cp = c as u32;
    ENTITIES
        .binary_search_by_key(&cp, |(p, _)| *p)
        .ok()
        .map(|i| ENTITIES[i].1)
}

fn entity_char(name: &str) -> Option<char> {
    ENTITIES
        .iter()
        .find(|(_, n)| *n == name)
        .and_then(|(p, _)| char::from_u32(*p))
}

/// Escapes one line of text the way Exchange does: `&`, `<`, `>`, `"` and every non-ASCII
/// character as an entity (named where HTML 4 has a name, else `&#N;`), and every space of a
/// run of spaces but the last (and a leading one) as `&nbsp;`.
fn escape_line(line: &str, out: &mut String) {
    let chars: Vec<char> = line.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let next_is_space = chars.get(i + 1) == Some(&' ');
            if i == 0 || next_is_space {
                out.push_str("&nbsp;");
            } else {
                out.push(' ');
            }
            continue;
        }
        let special = matches!(c, '&' | '<' | '>' | '"');
        if special || !c.is_ascii() {
            match entity_name(c) {
                Some(n) => {
                    out.push('&');
                    out.push_str(n);
                    out.push(';');
                }
                None => out.push_str(&format!("&#{};", c as u32)),
            }
        } else if c.is_ascii_control() && c != '\t' {
            // Dropped, as Exchange does.
        } else {
            out.push(c);
        }
    }
}

/// A text body as Exchange serves it back in HTML.
pub fn text_to_html(text: &str) -> String {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut inner = String::with_capacity(normalized.len() + 64);
    for (i, line) in normalized.split('\n').enumerate() {
        if i > 0 {
            inner.push_str("<br>\r\n");
        }
        escape_line(line, &mut inner);
    }
    format!(
        "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n</head>\r\n<body>\r\n<div>{inner}</div>\r\n</body>\r\n</html>\r\n"
    )
}

/// Decodes `&name;`, `&#N;` and `&#xH;`; unknown or broken references are kept verbatim.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let end = after.find(';').filter(|e| *e <= 12);
        let decoded = end.and_then(|e| {
            let name = &after[..e];
            let c = if let Some(num) = name.strip_prefix('#') {
                let n = match num.strip_prefix(['x', 'X']) {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => num.parse::<u32>().ok(),
                };
                n.and_then(char::from_u32)
            } else {
                entity_char(name)
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Plain text of an HTML body: head, style and script dropped, `<br>` and block ends as line
/// breaks (`\r\n`), tags removed, entities decoded, trailing blanks trimmed.
pub fn html_to_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut text = String::with_capacity(html.len());
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let Some(close) = html[i..].find('>').map(|c| i + c) else {
                break;
            };
            let tag = lower[i + 1..close].trim();
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let closing = tag.starts_with('/');
            if !closing && matches!(name.as_str(), "head" | "style" | "script" | "title") {
                let end_tag = format!("</{name}");
                match lower[close..].find(&end_tag) {
                    Some(e) => {
                        let e = close + e;
                        i = html[e..]
                            .find('>')
                            .map(|c| e + c + 1)
                            .unwrap_or(bytes.len());
                    }
                    None => i = close + 1,
                }
                continue;
            }
            let breaks = name == "br"
                || (closing
                    && matches!(
                        name.as_str(),
                        "div" | "p" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
                    ));
            if breaks {
                text.push('\n');
            }
            i = close + 1;
            continue;
        }
        let next = html[i..].find('<').map(|n| i + n).unwrap_or(bytes.len());
        let chunk = &html[i..next];
        // Source line breaks are not content in HTML.
        text.push_str(&chunk.replace(['\r', '\n'], ""));
        i = next;
    }
    let decoded = decode_entities(&text);
    let lines: Vec<String> = decoded
        .split('\n')
        .map(|l| l.trim_end().replace('\u{a0}', " "))
        .collect();
    let mut joined = lines.join("\r\n");
    while joined.ends_with("\r\n") {
        joined.truncate(joined.len() - 2);
    }
    joined.trim_start_matches("\r\n").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_table_is_sorted_for_binary_search() {
        assert!(ENTITIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn text_becomes_exchange_html_and_back() {
        let t = "Grüße – Straße & Co\n2  spaces 😀 <x>";
        let h = text_to_html(t);
        assert!(h.starts_with("<html><head>"));
        assert!(h.contains("<body>\r\n<div>Gr&uuml;&szlig;e &ndash; Stra&szlig;e &amp; Co<br>\r\n2&nbsp; spaces &#128512; &lt;x&gt;</div>"), "{h}");
        assert_eq!(html_to_text(&h), t.replace('\n', "\r\n"));
    }

    #[test]
    fn broken_references_are_kept() {
        assert_eq!(
            decode_entities("a & b &bogus; &#xZZ; &#65;"),
            "a & b &bogus; &#xZZ; A"
        );
    }
}
