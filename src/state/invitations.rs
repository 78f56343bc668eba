//! What the invitation guard keeps per mailbox: the invitation-sending writes sent within the
//! last minute, the writes it holds, and the ones an operator released.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a write that would mail attendees is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The event ended in the past.
    Past,
    /// Found by the mailbox's first sync.
    FirstSync,
    /// Over `max_invitations_per_minute` for the mailbox.
    Rate,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Past => "past",
            HoldReason::FirstSync => "first_sync",
            HoldReason::Rate => "rate",
        }
    }
}

/// One held write: which pair to process again on release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldInvitation {
    pub crm_id: u64,
    /// The Graph event, when there is one (a held create has none yet).
    #[serde(default)]
    pub graph_id: Option<String>,
    /// Seen from CRM (the CRM poll) rather than from Graph.
    pub from_crm: bool,
    pub reason: HoldReason,
    pub since: DateTime<Utc>,
}

/// A released pair: its next invitation-sending write goes through, until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedInvitation {
    pub crm_id: u64,
    pub until: DateTime<Utc>,
}

/// The invitation guard's record of one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InvitationRecord {
    pub tenant: String,
    pub mailbox: String,
    /// Times of the invitation-sending writes let through within the last minute.
    #[serde(default)]
    pub sent: Vec<DateTime<Utc>>,
    #[serde(default)]
    pub held: Vec<HeldInvitation>,
    #[serde(default)]
    pub released: Vec<ReleasedInvitation>,
}
