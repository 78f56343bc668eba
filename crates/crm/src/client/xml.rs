//! A small, safe XML layer over quick-xml: a capped element tree for reading and an escaping
//! writer. No DTD support at all: a `<!DOCTYPE` is rejected, so no entity is ever resolved except
//! the five predefined ones and character references.

use std::borrow::Cow;

use quick_xml::Writer;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use quick_xml::reader::Reader;

/// Largest document accepted (request or answer).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// An element with its attributes, child elements and text (text of leaf elements is kept
/// verbatim; whitespace-only text between child elements is dropped).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum XmlError {
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("document type declarations (DOCTYPE) are not accepted")]
    Doctype,
    #[error("unknown entity &{0};")]
    UnknownEntity(String),
    #[error("document ends before element <{0}> is closed (truncated?)")]
    Truncated(String),
    #[error("no root element")]
    Empty,
    #[error("content after the root element")]
    TrailingContent,
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("not well-formed XML: {0}")]
    Malformed(String),
}

/// Parses a whole document into its root element.
pub fn parse_document(xml: &str) -> Result<Element, XmlError> {
    if xml.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge);
    }
    let mut reader = Reader::from_str(xml);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match event {
            Event::Start(start) => {
                if root.is_some() {
                    return Err(XmlError::TrailingContent);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(element_from(&start)?);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return Err(XmlError::TrailingContent);
                }
                let el = element_from(&start)?;
                close(&mut stack, &mut root, el);
            }
            Event::End(_) => match stack.pop() {
                Some(mut el) => {
                    if !el.children.is_empty() && el.text.trim().is_empty() {
                        el.text.clear();
                    }
                    close(&mut stack, &mut root, el);
                }
                None => return Err(XmlError::Malformed("unexpected end tag".into())),
            },
            Event::Text(t) => {
                let content = t.xml10_content();
                push_text(&mut stack, &root, &content)?;
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                if stack.is_empty() {
                    return Err(XmlError::Malformed("CDATA outside the root element".into()));
                }
                push_text(&mut stack, &root, &content)?;
            }
            Event::GeneralRef(r) => {
                let resolved = resolve_ref(&r.xml10_content())?;
                if stack.is_empty() {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
                push_text(&mut stack, &root, &resolved)?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError::Truncated(open.name.clone()));
    }
    root.ok_or(XmlError::Empty)
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(stack: &mut [Element], root: &Option<Element>, text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None if root.is_some() => Err(XmlError::TrailingContent),
        None => Err(XmlError::Malformed("text before the root element".into())),
    }
}

fn resolve_ref(name: &str) -> Result<String, XmlError> {
    let s = match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => {
            let ch = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
            {
                u32::from_str_radix(hex, 16).ok()
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse::<u32>().ok()
            } else {
                None
            };
            return match ch.and_then(char::from_u32) {
                Some(c) if c != '\0' => Ok(c.to_string()),
                _ => Err(XmlError::UnknownEntity(short(name))),
            };
        }
    };
    Ok(s.to_string())
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn element_from(start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let name = start.name().as_ref().to_string();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = attr.key.as_ref().to_string();
        let value =
            attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| match e {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, n),
                    ) => XmlError::UnknownEntity(short(&n)),
                    other => XmlError::Malformed(other.to_string()),
                })?
                .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// `true` for characters XML 1.0 allows in a document (`Char` production, minus what Rust strings
/// cannot hold anyway): everything but U+0000–U+0008, U+000B, U+000C, U+000E–U+001F, U+FFFE and
/// U+FFFF.
pub fn is_xml10_char(c: char) -> bool {
    !matches!(
        c,
        '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}'
    )
}

/// Escapes text content: `& < >` and carriage returns (kept through end-of-line normalisation).
/// Characters XML 1.0 forbids ([`is_xml10_char`]) are dropped: no document this writer produces
/// can be refused for them.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// Escapes an attribute value: `& < > "` and tab, newline, carriage return (kept through
/// attribute-value normalisation). Characters XML 1.0 forbids are dropped.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

fn escape_with(s: &str, attr: bool) -> Cow<'_, str> {
    let needs = |c: char| match c {
        '&' | '<' | '>' | '\r' => true,
        '"' | '\n' | '\t' => attr,
        c => !is_xml10_char(c),
    };
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if attr => out.push_str("&quot;"),
            '\n' if attr => out.push_str("&#10;"),
            '\t' if attr => out.push_str("&#9;"),
            c if !is_xml10_char(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes a compact document with quick-xml. Names must be valid XML names (checked by callers);
/// values are escaped here.
pub struct XmlOut {
    w: Writer<Vec<u8>>,
}

impl Default for XmlOut {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlOut {
    /// Starts a document with `<?xml version="1.0" encoding="UTF-8"?>`.
    pub fn new() -> Self {
        let mut out = XmlOut {
            w: Writer::new(Vec::new()),
        };
        out.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        out
    }

    fn event(&mut self, e: Event<'_>) {
        // Writing into a Vec<u8> cannot fail.
        let _ = self.w.write_event(e);
    }

    fn start_tag<'a>(name: &'a str, attrs: &[(&'a str, &str)]) -> BytesStart<'a> {
        let mut start = BytesStart::new(name);
        for (k, v) in attrs {
            start.push_attribute(Attribute {
                key: QName(k),
                value: Cow::Owned(escape_attr(v).into_owned()),
            });
        }
        start
    }

    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let tag = Self::start_tag(name, attrs);
        self.event(Event::Start(tag));
    }

    pub fn end(&mut self, name: &str) {
        self.event(Event::End(BytesEnd::new(name)));
    }

    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let tag = Self::start_tag(name, attrs);
        self.event(Event::Empty(tag));
    }

    /// `<name attrs…>text</name>`; an empty text gives `<name attrs…></name>`.
    pub fn text_element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(name, attrs);
        if !text.is_empty() {
            self.event(Event::Text(BytesText::from_escaped(escape_text(text))));
        }
        self.end(name);
    }

    pub fn finish(self) -> String {
        String::from_utf8(self.w.into_inner()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tree_with_text_and_attrs() {
        let el = parse_document(
            "<?xml version=\"1.0\"?>\n<a x=\"1 &amp; 2\">\n  <b>t &lt; u</b><c/><d><![CDATA[<x>]]></d>\n</a>\n",
        )
        .expect("parses");
        assert_eq!(el.name, "a");
        assert_eq!(el.attr("x"), Some("1 & 2"));
        assert_eq!(el.children.len(), 3);
        assert_eq!(el.children[0].text, "t < u");
        assert_eq!(el.children[1].text, "");
        assert_eq!(el.children[2].text, "<x>");
        assert_eq!(el.text, "");
    }

    #[test]
    fn escaping_round_trips_special_characters() {
        let tricky = "a&b<c>d\"e'f\r\ng\th  ";
        let mut out = XmlOut::new();
        out.text_element("v", &[("k", tricky)], tricky);
        let doc = out.finish();
        let el = parse_document(&doc).expect("parses");
        assert_eq!(el.attr("k"), Some(tricky));
        assert_eq!(el.text, tricky);
    }

    #[test]
    fn forbidden_characters_are_dropped_from_text_and_attributes() {
        let dirty = "a\u{1}b\u{8}\u{B}\u{C}c\u{1F}\u{FFFE}\u{FFFF}d\u{0}";
        let mut out = XmlOut::new();
        out.text_element("v", &[("k", dirty)], dirty);
        let doc = out.finish();
        assert!(!doc.chars().any(|c| !is_xml10_char(c)), "{doc:?}");
        let el = parse_document(&doc).expect("parses");
        assert_eq!(el.attr("k"), Some("abcd"));
        assert_eq!(el.text, "abcd");
    }

    #[test]
    fn rejects_doctype() {
        let doc = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>";
        assert_eq!(parse_document(doc), Err(XmlError::Doctype));
    }

    #[test]
    fn rejects_unknown_entity_in_text_and_attribute() {
        assert!(matches!(
            parse_document("<r>&x;</r>"),
            Err(XmlError::UnknownEntity(_))
        ));
        assert!(matches!(
            parse_document("<r a=\"&x;\"/>"),
            Err(XmlError::UnknownEntity(_)) | Err(XmlError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_truncated_and_empty_and_trailing() {
        assert!(matches!(parse_document("<a><b>x</b>"), Err(XmlError::Truncated(n)) if n == "a"));
        assert_eq!(parse_document("   "), Err(XmlError::Empty));
        assert_eq!(parse_document("<a/><b/>"), Err(XmlError::TrailingContent));
        assert!(parse_document("<a></b>").is_err());
        assert!(parse_document("hello").is_err());
    }

    #[test]
    fn rejects_too_deep() {
        let doc = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse_document(&doc), Err(XmlError::TooDeep));
    }
}
