//! Which companies and persons a mailbox's contact scope reached at its last CRM poll: a key
//! new since then has its persons read whole once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// `(CoGrp, CoNo)` companies and `(PeGrp, PeNo)` persons a rep's appointments are with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactReach {
    #[serde(default)]
    pub companies: BTreeSet<(String, String)>,
    #[serde(default)]
    pub persons: BTreeSet<(String, String)>,
}
