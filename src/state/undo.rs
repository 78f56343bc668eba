//! What an undo keeps in the store: each audited write's note (what the written side held before
//! it), audit ids, and the seal an undo leaves on a pair so that its echo changes nothing (read
//! and written by `State` in `mod.rs`).

use cgc_core::Entity;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What kind of write an audited field was part of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOp {
    Create,
    Update,
    Delete,
}

/// Kept with each audit record of a sync write: enough to take the write back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UndoNote {
    /// The write's id: every field record of one write on one side shares it.
    pub write: String,
    pub op: WriteOp,
    /// What the written side held before the write, in that side's own terms: for an update the
    /// Graph properties or CRM fields written (only those); for a delete the whole Graph item or
    /// the CRM fields the delete set; for a create nothing (`null`).
    #[serde(default)]
    pub prior: Value,
    /// On an undo's own records: the write it took back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<String>,
}

/// Left on a pair by an undo: while both sides still show what the undo left, a pass of the pair
/// changes nothing (the undo's echo, and any later touch); the first real change on either side
/// ends the seal and the pair syncs as usual again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UndoSeal {
    /// The audit id of the undo's own record.
    pub audit_id: String,
    pub entity: Entity,
    pub mailbox: String,
    pub crm_id: Option<u64>,
    pub graph_id: Option<String>,
    /// The content hash of each side as the undo left it (`none`: no item on that side).
    pub graph: String,
    pub crm: String,
    pub at: DateTime<Utc>,
    /// Written before the restoring write: passes of the pair wait until the undo has finished
    /// (or [`PENDING_SEAL`] has passed, when the undo died on the way).
    #[serde(default)]
    pub pending: bool,
}

/// How long a pending seal makes a pair's passes wait at most.
pub const PENDING_SEAL: std::time::Duration = std::time::Duration::from_secs(60);

fn short_hash(text: &[u8]) -> String {
    hex::encode(Sha256::digest(text))[..20].to_string()
}

/// The id of an audit record written before records had ids: derived from its stored bytes.
pub fn derived_audit_id(bytes: &[u8]) -> String {
    format!("au-{}", short_hash(bytes))
}

/// A new audit record's id (stable: from the event, the time, the side and the field).
pub fn audit_id(event_id: &str, at: DateTime<Utc>, side: &str, field: &str) -> String {
    format!(
        "au-{}",
        short_hash(format!("{event_id}|{}|{side}|{field}", at.to_rfc3339()).as_bytes())
    )
}

/// A write's id (every field record of one write on one side shares it).
pub fn write_id(event_id: &str, at: DateTime<Utc>, side: &str) -> String {
    format!(
        "wr-{}",
        short_hash(format!("{event_id}|{}|{side}", at.to_rfc3339()).as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_old_records_get_one_from_their_bytes() {
        let at = Utc::now();
        assert_eq!(
            audit_id("e", at, "graph", "subject"),
            audit_id("e", at, "graph", "subject")
        );
        assert_ne!(
            audit_id("e", at, "graph", "subject"),
            audit_id("e", at, "crm", "subject")
        );
        assert_eq!(derived_audit_id(b"{}"), derived_audit_id(b"{}"));
        assert!(derived_audit_id(b"{}").starts_with("au-"));
    }

    #[test]
    fn an_old_audit_record_without_id_or_note_still_reads() {
        let old = r#"{"at":"2026-01-01T00:00:00Z","tenant":"t","mailbox":"m","crm_id":1,
            "graph_id":"g","event_id":"e","entity":"appointment","side":"graph",
            "field":"subject","before":"a","after":"b","cause":"crm-poll"}"#;
        let rec: super::super::AuditRecord = serde_json::from_str(old).unwrap();
        assert_eq!(rec.id, "");
        assert!(rec.undo.is_none());
    }
}
