//! The mass-change guard (expected-behaviour.md 35): deletes, deletion marks and unlinks of one
//! mailbox are counted over a window; when the next one would exceed the tenant's share of the
//! mailbox's pairs, it and every later one stop (their events wait, nothing is lost), and the
//! mailbox is *held* — listed by `GET /admin/mailboxes`, counted in `mass_change_held_total` and
//! shown by `mailbox_held` — until an operator releases it (`POST /admin/mailboxes/release`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::State;

/// Destructive changes always allowed within one window, whatever the mailbox's size (so a rep
/// with three appointments can still delete one).
pub const FREE_CHANGES: usize = 5;

/// What the guard remembers of one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardRecord {
    pub tenant: String,
    pub mailbox: String,
    /// Times of the destructive changes within the window.
    #[serde(default)]
    pub changes: Vec<DateTime<Utc>>,
    /// Set while the mailbox is held.
    #[serde(default)]
    pub held_since: Option<DateTime<Utc>>,
    /// How many changes were refused while held.
    #[serde(default)]
    pub refused: u64,
    /// After a release, the guard lets this mailbox's changes through until then.
    #[serde(default)]
    pub released_until: Option<DateTime<Utc>>,
    /// The changes refused while held, kept to be processed again on release (the items
    /// themselves are untouched on both sides; this only remembers which to look at).
    #[serde(default)]
    pub pending: Vec<Pending>,
}

/// One change the guard refused: which item to process again on release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub entity: cgc_core::Entity,
    /// Seen from CRM (the CRM poll) rather than from Graph.
    pub from_crm: bool,
    pub crm_id: Option<u64>,
    pub graph_id: Option<String>,
    pub list_id: Option<String>,
}

/// Most refused changes remembered per mailbox.
pub const MAX_PENDING: usize = 10_000;

/// The guard's answer for one destructive change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Go,
    Held,
}

/// How many destructive changes within a window a mailbox with `pairs` pairs may make.
pub fn limit(share: f64, pairs: usize) -> usize {
    let by_share = (share * pairs as f64).floor() as usize;
    by_share.max(FREE_CHANGES)
}

/// Pure decision: records the change (when admitted) or holds the mailbox.
pub fn decide(
    rec: &mut GuardRecord,
    now: DateTime<Utc>,
    window: chrono::Duration,
    share: f64,
    pairs: usize,
) -> Admit {
    rec.changes.retain(|t| *t > now - window);
    if rec.released_until.is_some_and(|u| u > now) {
        rec.changes.push(now);
        return Admit::Go;
    }
    rec.released_until = None;
    if rec.held_since.is_some() {
        rec.refused += 1;
        return Admit::Held;
    }
    if rec.changes.len() + 1 > limit(share, pairs) {
        rec.held_since = Some(now);
        rec.refused += 1;
        return Admit::Held;
    }
    rec.changes.push(now);
    Admit::Go
}

fn ns(tenant: &str) -> String {
    format!("{tenant}:guard")
}

/// Loads, decides and stores (events of one mailbox are handled one at a time: no race).
pub async fn admit(
    state: &State,
    tenant: &str,
    mailbox: &str,
    share: f64,
    window_seconds: u64,
    pairs: usize,
    change: Pending,
) -> Result<Admit, cgc_backends::StoreError> {
    let key = mailbox.to_ascii_lowercase();
    let mut rec: GuardRecord = state
        .store()
        .get(&ns(tenant), &key)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| GuardRecord {
            tenant: tenant.to_string(),
            mailbox: key.clone(),
            ..GuardRecord::default()
        });
    let window = chrono::Duration::seconds(window_seconds.min(i64::MAX as u64 / 1000) as i64);
    let a = decide(&mut rec, Utc::now(), window, share, pairs);
    if a == Admit::Held && !rec.pending.contains(&change) && rec.pending.len() < MAX_PENDING {
        rec.pending.push(change);
    }
    state
        .store()
        .put(
            &ns(tenant),
            &key,
            &serde_json::to_vec(&rec).unwrap_or_default(),
        )
        .await?;
    Ok(a)
}

/// Every guard record of a tenant (held or not).
pub async fn records(
    state: &State,
    tenant: &str,
) -> Result<Vec<GuardRecord>, cgc_backends::StoreError> {
    Ok(state
        .store()
        .list(&ns(tenant))
        .await?
        .into_iter()
        .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
        .collect())
}

/// Releases a held mailbox: its refused changes go through within the next window. Returns
/// None when the mailbox was not held, else the changes to process again.
pub async fn release(
    state: &State,
    tenant: &str,
    mailbox: &str,
    window_seconds: u64,
) -> Result<Option<Vec<Pending>>, cgc_backends::StoreError> {
    let key = mailbox.to_ascii_lowercase();
    let Some(mut rec) = state
        .store()
        .get(&ns(tenant), &key)
        .await?
        .and_then(|b| serde_json::from_slice::<GuardRecord>(&b).ok())
    else {
        return Ok(None);
    };
    let was_held = rec.held_since.is_some();
    let pending = std::mem::take(&mut rec.pending);
    rec.held_since = None;
    rec.refused = 0;
    rec.changes.clear();
    rec.released_until = Some(
        Utc::now() + chrono::Duration::seconds(window_seconds.min(i64::MAX as u64 / 1000) as i64),
    );
    state
        .store()
        .put(
            &ns(tenant),
            &key,
            &serde_json::to_vec(&rec).unwrap_or_default(),
        )
        .await?;
    Ok(was_held.then_some(pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn small_mailboxes_may_always_make_a_few_changes() {
        let mut r = GuardRecord::default();
        for i in 0..FREE_CHANGES {
            assert_eq!(
                decide(&mut r, at(i as i64), chrono::Duration::hours(1), 0.25, 2),
                Admit::Go
            );
        }
        assert_eq!(
            decide(&mut r, at(10), chrono::Duration::hours(1), 0.25, 2),
            Admit::Held
        );
    }

    #[test]
    fn share_of_pairs_holds_the_mailbox_and_every_later_change() {
        let mut r = GuardRecord::default();
        let w = chrono::Duration::hours(1);
        // 40 pairs at 0.25: 10 changes pass, the 11th holds.
        for i in 0..10 {
            assert_eq!(decide(&mut r, at(i), w, 0.25, 40), Admit::Go);
        }
        assert_eq!(decide(&mut r, at(11), w, 0.25, 40), Admit::Held);
        assert!(r.held_since.is_some());
        // Held stays held, even after the window: an operator must look.
        assert_eq!(decide(&mut r, at(7200), w, 0.25, 40), Admit::Held);
        assert_eq!(r.refused, 2);
    }

    #[test]
    fn changes_outside_the_window_do_not_count() {
        let mut r = GuardRecord::default();
        let w = chrono::Duration::seconds(100);
        for i in 0..5 {
            assert_eq!(decide(&mut r, at(i), w, 0.1, 10), Admit::Go);
        }
        assert_eq!(decide(&mut r, at(200), w, 0.1, 10), Admit::Go);
        assert_eq!(r.changes.len(), 1);
    }

    #[test]
    fn a_release_lets_the_waiting_changes_through_for_one_window() {
        let mut r = GuardRecord {
            held_since: Some(at(0)),
            released_until: Some(at(100)),
            ..GuardRecord::default()
        };
        r.held_since = None;
        let w = chrono::Duration::seconds(100);
        for i in 1..50 {
            assert_eq!(decide(&mut r, at(i), w, 0.25, 10), Admit::Go);
        }
        // After the release window, the guard counts again (and the burst is still in the window).
        assert_eq!(decide(&mut r, at(101), w, 0.25, 10), Admit::Held);
    }
}
