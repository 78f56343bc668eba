//! What identifies one version of a CRM record (its content), and the query condition "changed
//! since the watermark": shared by the CRM poll and its contact scope.

use std::collections::BTreeMap;

use cgc_crm::{Cond, CondOp};
use chrono::{DateTime, Utc};

/// What identifies one version of a CRM record: its content, not `UpdDate`/`UpdTime` (which can
/// have minute precision, so two edits in one minute share them: expected-behaviour.md 21).
pub(super) fn stamp(f: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in f {
        if k == "UpdDate" || k == "UpdTime" {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

/// The condition "changed on or after the watermark's day" (in the CRM's zone); the exact
/// time is compared after reading, as `UpdTime` may lack seconds.
pub(super) fn changed_since(since: Option<DateTime<Utc>>, zone: chrono_tz::Tz) -> Option<Cond> {
    let since = since?;
    let (d, _) = cgc_crm::time::from_utc(since, zone);
    Some(Cond {
        field: "UpdDate".into(),
        op: CondOp::Ge,
        value: d,
    })
}
