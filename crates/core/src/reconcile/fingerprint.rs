//! The per-field fingerprint of the last agreed state (the shadow), carried on the Graph item in
//! an extended property, so that a lost store is not a fresh start (expected-behaviour 38).
//!
//! Format `v1:` then, for each canonical field of the entity in [`Entity::fields`] order,
//! separated by `.`: 12 lowercase hex digits (the first 6 bytes of SHA-256) of the field's value
//! in the shadow *as Graph shows it* ([`project_graph`]), followed by `~` and 12 more hex digits
//! of the value *as CRM shows it* ([`project_crm`], tenant-independent context) when the two
//! readings differ (attendee types, a cancelled task). The hashed text is
//! `{entity}.{field}={canonical JSON of the value}` (`null` for an empty field). An appointment's
//! fingerprint is about 160–190 characters. The format is fixed for `v1`: a future field list
//! or hashing needs `v2`, and `v1` stays readable.
//!
//! These are exactly the values the comparison rule (MAPPING.md) compares each side with, so a
//! side's current value hashing to its entry means that side did not change the field since
//! the agreed state.

use crate::mapping::{MapContext, project_crm, project_graph};
use crate::model::{Canonical, Entity, canonical_value_json};
use serde_json::Value;
use sha2::{Digest, Sha256};

const PREFIX: &str = "v1:";
const HEX_LEN: usize = 12;

fn field_hash(entity: Entity, field: &str, v: &Value) -> String {
    let text = format!("{entity}.{field}={}", canonical_value_json(v));
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..HEX_LEN / 2])
}

/// The fingerprint of `shadow` (see the module doc): compact, deterministic across processes
/// and versions of the connector that read `v1`.
pub fn fingerprint(entity: Entity, shadow: &Canonical) -> String {
    let on_graph = project_graph(entity, shadow);
    let on_crm = project_crm(entity, shadow, &MapContext::default());
    let mut out = String::from(PREFIX);
    for (i, f) in entity.fields().iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let g = field_hash(entity, f, on_graph.get(f));
        let c = field_hash(entity, f, on_crm.get(f));
        out.push_str(&g);
        if c != g {
            out.push('~');
            out.push_str(&c);
        }
    }
    out
}

/// A parsed fingerprint: per field, the hash of the agreed value as each side shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    entity: Entity,
    /// (Graph's reading, CRM's reading), in `entity.fields()` order.
    hashes: Vec<(String, String)>,
}

impl Fingerprint {
    /// Reads a fingerprint of `entity`; None when it is not a well-formed `v1` fingerprint of
    /// that entity (another entity's has another number of fields).
    pub(crate) fn parse(entity: Entity, text: &str) -> Option<Fingerprint> {
        let body = text.trim().strip_prefix(PREFIX)?;
        let hex_ok = |h: &str| h.len() == HEX_LEN && h.bytes().all(|b| b.is_ascii_hexdigit());
        let mut hashes = Vec::new();
        for part in body.split('.') {
            let mut halves = part.split('~');
            let g = halves.next()?.to_ascii_lowercase();
            let c = halves.next().map(str::to_ascii_lowercase);
            if halves.next().is_some() || !hex_ok(&g) || c.as_deref().is_some_and(|c| !hex_ok(c)) {
                return None;
            }
            let c = c.unwrap_or_else(|| g.clone());
            hashes.push((g, c));
        }
        (hashes.len() == entity.fields().len()).then_some(Fingerprint { entity, hashes })
    }

    fn entry(&self, field: &str) -> Option<&(String, String)> {
        let i = self.entity.fields().iter().position(|f| *f == field)?;
        self.hashes.get(i)
    }

    /// Whether Graph's current reading `v` of `field` is the agreed value as Graph shows it.
    pub(crate) fn graph_unchanged(&self, field: &str, v: &Value) -> bool {
        self.entry(field)
            .is_some_and(|(g, _)| *g == field_hash(self.entity, field, v))
    }

    /// Whether CRM's current reading `v` of `field` is the agreed value as CRM shows it.
    pub(crate) fn crm_unchanged(&self, field: &str, v: &Value) -> bool {
        self.entry(field)
            .is_some_and(|(_, c)| *c == field_hash(self.entity, field, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn appointment() -> Canonical {
        Canonical::new()
            .with("subject", "Jahresgespräch – Wien")
            .with("body", "Grüße\n\nनमस्ते ₹")
            .with("start", "2026-11-23T09:00Z")
            .with("end", "2026-11-23T10:00Z")
            .with("all_day", false)
            .with("location", "Raum 4.12")
            .with("show_as", "busy")
            .with("private", false)
            .with("importance", "high")
            .with("reminder", 15)
            .with(
                "attendees",
                json!([{"address": "ana@customer.test", "type": "optional"}, {"address": "bob@x.test", "type": "required"}]),
            )
            .with("cancelled", false)
    }

    #[test]
    fn fingerprint_is_compact_deterministic_and_parses() {
        let s = appointment();
        let fp = fingerprint(Entity::Appointment, &s);
        assert_eq!(fp, fingerprint(Entity::Appointment, &s.clone()));
        assert!(fp.starts_with("v1:"), "{fp}");
        assert!(fp.len() < 250, "{} chars: {fp}", fp.len());
        // attendee types are lost in CRM: that field carries both readings
        assert_eq!(fp.matches('~').count(), 1, "{fp}");
        let parsed = Fingerprint::parse(Entity::Appointment, &fp).expect("parses");
        for f in Entity::Appointment.fields() {
            assert!(
                parsed.graph_unchanged(f, project_graph(Entity::Appointment, &s).get(f)),
                "{f}"
            );
        }
        assert!(!parsed.graph_unchanged("subject", &json!("Other")));
        assert!(parsed.crm_unchanged(
            "attendees",
            &json!([{"address": "ana@customer.test", "type": "required"}, {"address": "bob@x.test", "type": "required"}])
        ));
        assert!(!parsed.graph_unchanged(
            "attendees",
            &json!([{"address": "ana@customer.test", "type": "required"}, {"address": "bob@x.test", "type": "required"}])
        ));
        // a known value: the format is fixed across versions
        assert_eq!(
            field_hash(Entity::Contact, "surname", &json!("Gruber")),
            hex::encode(&Sha256::digest(b"contact.surname=\"Gruber\"")[..6])
        );
    }

    #[test]
    fn every_entity_fits_and_empty_fields_hash_as_null() {
        for e in Entity::ALL {
            let fp = fingerprint(e, &Canonical::new());
            let parsed = Fingerprint::parse(e, &fp).expect("parses");
            for f in e.fields() {
                let on_graph = project_graph(e, &Canonical::new());
                assert!(parsed.graph_unchanged(f, on_graph.get(f)), "{e} {f}");
            }
            assert!(fp.len() < 250);
        }
    }

    #[test]
    fn malformed_fingerprints_do_not_parse() {
        let fp = fingerprint(Entity::Contact, &Canonical::new().with("surname", "Gruber"));
        assert!(Fingerprint::parse(Entity::Contact, &fp).is_some());
        assert!(Fingerprint::parse(Entity::Contact, &format!("  {fp}\n")).is_some());
        assert!(
            Fingerprint::parse(Entity::Contact, &fp.to_uppercase().replace("V1:", "v1:")).is_some()
        );
        for bad in [
            "",
            "v1:",
            "v2:abc",
            &fp.replace("v1:", "v0:"),
            &fp[..fp.len() - 1],
            &format!("{fp}.000000000000"),
            &fp.replacen('.', "~", 1),
            &format!("{fp}~zzzzzzzzzzzz"),
            "v1:ääääääääääää",
        ] {
            assert!(
                Fingerprint::parse(Entity::Contact, bad).is_none(),
                "{bad:?}"
            );
        }
        // another entity's fingerprint has another number of fields
        assert!(Fingerprint::parse(Entity::Appointment, &fp).is_none());
    }
}
