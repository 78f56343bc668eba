//! `cgc_core::model::normalize::html_to_text` on arbitrary UTF-8 (Outlook HTML bodies).
//! Its output goes into CRM.interface XML: it must never contain a character XML 1.0 forbids,
//! and it is canonical text (never empty, no CR, a fixed point of `normalize_text`).
#![no_main]

use cgc_core::model::normalize::{html_to_text, is_xml_forbidden, normalize_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(html) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(text) = html_to_text(html) {
        if let Some(c) = text.chars().find(|c| is_xml_forbidden(*c)) {
            panic!(
                "html_to_text left U+{:04X} (XML-forbidden) in {text:?}",
                c as u32
            );
        }
        assert!(!text.is_empty(), "Some(\"\") instead of None");
        assert!(!text.contains('\r'), "CR left in {text:?}");
        // The result is canonical text: normalising it again changes nothing.
        assert_eq!(
            normalize_text(&text).as_deref(),
            Some(text.as_str()),
            "not canonical"
        );
    }
});
