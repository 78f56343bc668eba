//! The invitation guard: a Graph write that would mail meeting requests or updates to attendees
//! (expected-behaviour.md 39: the create of an organizer's event with attendees, or a change of
//! its subject, body, start, end, location, attendees or recurrence) is not sent
//!
//! * for an event that ended in the past (`past`),
//! * for a change found by the mailbox's first sync (`first_sync`: a rep just switched on, or a
//!   lost store — the first CRM poll, before it no watermark),
//! * beyond `max_invitations_per_minute` such writes of one mailbox (`rate`; 0 = no limit).
//!
//! A held write waits whole: nothing of the pair is written on either side, the CRM record keeps
//! its change and the agreed state stays as it was, so nothing is lost. It is remembered in the
//! store, listed by `GET /admin/invitations`, counted in `invitations_held_total{reason}` and
//! shown by the `invitations_held` gauge, and sent once an operator releases the mailbox
//! (`POST /admin/invitations/release`: the held pairs are queued again and go through once).
//! The shape mirrors the mass-change guard (`guard.rs`).

use std::collections::BTreeMap;

use cgc_backends::{Envelope, StoreError};
use cgc_core::{Entity, Op};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::event::{Change, EventKind, EventV1, Source};
use crate::state::{HeldInvitation, HoldReason, InvitationRecord, ReleasedInvitation, State};

/// Event properties whose change on an organizer's event makes Graph mail every attendee.
pub const ATTENDEE_VISIBLE: &[&str] = &[
    "subject",
    "body",
    "start",
    "end",
    "location",
    "attendees",
    "recurrence",
];

/// How long a release lets a pair's next invitation-sending write through.
pub const RELEASE_VALIDITY: Duration = Duration::minutes(10);

/// The guard's answer for one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Go,
    Held(HoldReason),
}

/// One invitation-sending write, as the guard sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub crm_id: u64,
    pub graph_id: Option<String>,
    pub from_crm: bool,
    /// When the event ends (after the write), if known.
    pub ends: Option<DateTime<Utc>>,
    pub first_sync: bool,
}

fn has_attendees(v: Option<&Value>) -> bool {
    v.and_then(|v| v.get("attendees"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// Whether this plan operation on an event would make Graph mail attendees: a create with
/// attendees, or a change of an attendee-visible property of an event with attendees (before or
/// after the change) that the mailbox organises (`item`'s `isOrganizer`; an attendee's own copy
/// mails nobody).
pub fn sends_meeting_mail(op: &Op, item: Option<&Value>) -> bool {
    match op {
        Op::CreateGraph { body } => has_attendees(Some(body)),
        Op::UpdateGraph { patch } => {
            let organizer = item
                .and_then(|v| v.get("isOrganizer"))
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let visible = patch
                .as_object()
                .is_some_and(|m| m.keys().any(|k| ATTENDEE_VISIBLE.contains(&k.as_str())));
            organizer && visible && (has_attendees(item) || has_attendees(Some(patch)))
        }
        _ => false,
    }
}

/// When the event ends after `op`: the end the write sets, else the item's.
/// A series ends with its last occurrence (the day after it, to be safe across zones); one
/// without an end never ends.
pub fn event_end(op: &Op, item: Option<&Value>) -> Option<DateTime<Utc>> {
    let written = match op {
        Op::CreateGraph { body } => Some(body),
        Op::UpdateGraph { patch } => Some(patch),
        _ => None,
    };
    let pick = |key: &str| {
        written
            .and_then(|w| w.get(key))
            .or_else(|| item.and_then(|v| v.get(key)))
            .filter(|v| !v.is_null())
    };
    if let Some(rec) = pick("recurrence") {
        let first = pick("start")
            .and_then(cgc_graph::tz::date_time_time_zone_to_utc)?
            .date_naive();
        let last = match rec.pointer("/range/type").and_then(Value::as_str) {
            Some("endDate" | "numbered") => cgc_core::series::occurrence_days(
                rec,
                first,
                first + chrono::Duration::days(365 * 100),
                cgc_core::series::MAX_OCCURRENCES,
            )
            .last()
            .copied()
            .unwrap_or(first),
            _ => return None,
        };
        return (last + chrono::Duration::days(2))
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc());
    }
    pick("end").and_then(cgc_graph::tz::date_time_time_zone_to_utc)
}

/// Pure decision: lets the write through (and counts it) or holds it (and remembers it).
pub fn decide(
    rec: &mut InvitationRecord,
    w: &Write,
    now: DateTime<Utc>,
    max_per_minute: u32,
) -> Admit {
    rec.sent.retain(|t| *t > now - Duration::minutes(1));
    rec.released.retain(|r| r.until > now);
    let released = rec.released.iter().position(|r| r.crm_id == w.crm_id);
    let reason = if let Some(i) = released {
        rec.released.remove(i);
        None
    } else if w.ends.is_some_and(|e| e < now) {
        Some(HoldReason::Past)
    } else if w.first_sync {
        Some(HoldReason::FirstSync)
    } else if max_per_minute > 0 && rec.sent.len() >= max_per_minute as usize {
        Some(HoldReason::Rate)
    } else {
        None
    };
    match reason {
        None => {
            rec.held.retain(|h| h.crm_id != w.crm_id);
            rec.sent.push(now);
            Admit::Go
        }
        Some(reason) => {
            let since = rec
                .held
                .iter()
                .find(|h| h.crm_id == w.crm_id)
                .map_or(now, |h| h.since);
            rec.held.retain(|h| h.crm_id != w.crm_id);
            rec.held.push(HeldInvitation {
                crm_id: w.crm_id,
                graph_id: w.graph_id.clone(),
                from_crm: w.from_crm,
                reason,
                since,
            });
            Admit::Held(reason)
        }
    }
}

/// Loads, decides and stores (events of one mailbox are handled one at a time: no race). Also
/// returns how many writes the mailbox now holds.
pub async fn admit(
    state: &State,
    tenant: &str,
    mailbox: &str,
    w: &Write,
    max_per_minute: u32,
) -> Result<(Admit, usize), StoreError> {
    let mut rec = state.invitations(tenant, mailbox).await?;
    let before = rec.clone();
    let a = decide(&mut rec, w, Utc::now(), max_per_minute);
    if rec != before {
        state.put_invitations(&rec).await?;
    }
    Ok((a, rec.held.len()))
}

/// Every held write of a tenant, with its mailbox.
pub async fn held(
    state: &State,
    tenant: &str,
) -> Result<Vec<(String, HeldInvitation)>, StoreError> {
    Ok(state
        .all_invitations(tenant)
        .await?
        .into_iter()
        .flat_map(|r| {
            let mailbox = r.mailbox.clone();
            r.held.into_iter().map(move |h| (mailbox.clone(), h))
        })
        .collect())
}

/// Releases a mailbox's held writes: each pair's next invitation-sending write goes through
/// (within [`RELEASE_VALIDITY`]). Returns the released writes, to be queued again.
pub async fn release(
    state: &State,
    tenant: &str,
    mailbox: &str,
) -> Result<Vec<HeldInvitation>, StoreError> {
    let mut rec = state.invitations(tenant, mailbox).await?;
    let held = std::mem::take(&mut rec.held);
    let until = Utc::now() + RELEASE_VALIDITY;
    for h in &held {
        rec.released.retain(|r| r.crm_id != h.crm_id);
        rec.released.push(ReleasedInvitation {
            crm_id: h.crm_id,
            until,
        });
    }
    state.put_invitations(&rec).await?;
    Ok(held)
}

/// The events that process released writes again: a CRM poll's change (a create, or a change
/// seen from CRM) or a delta's.
pub fn release_events(tenant: &str, mailbox: &str, held: &[HeldInvitation]) -> Vec<Envelope> {
    let now = Utc::now();
    held.iter()
        .map(|h| {
            let (source, kind) = match (&h.graph_id, h.from_crm) {
                (Some(g), false) => (
                    Source::Delta,
                    EventKind::GraphItem {
                        entity: Entity::Appointment,
                        item_id: g.clone(),
                        change: Change::Updated,
                        etag: None,
                        list_id: None,
                    },
                ),
                _ => (
                    Source::CrmPoll,
                    EventKind::CrmRecord {
                        entity: Entity::Appointment,
                        crm_id: h.crm_id,
                        stamp: format!("invitation-release-{}", now.timestamp_millis()),
                        first_sync: false,
                    },
                ),
            };
            EventV1 {
                tenant: tenant.to_string(),
                mailbox: mailbox.to_ascii_lowercase(),
                source,
                kind,
                observed_at: now,
                subscription_id: None,
            }
            .into_envelope(BTreeMap::new())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn write(crm_id: u64) -> Write {
        Write {
            crm_id,
            graph_id: None,
            from_crm: true,
            ends: Some(at(86_400)),
            first_sync: false,
        }
    }

    fn with_attendees() -> Value {
        json!({"subject": "s", "isOrganizer": true,
               "attendees": [{"emailAddress": {"address": "a@customer.test"}, "type": "required"}]})
    }

    #[test]
    fn creates_with_attendees_and_visible_changes_of_an_organizers_meeting_send_mail() {
        let ev = with_attendees();
        assert!(sends_meeting_mail(
            &Op::CreateGraph { body: ev.clone() },
            None
        ));
        assert!(!sends_meeting_mail(
            &Op::CreateGraph {
                body: json!({"subject": "alone"})
            },
            None
        ));
        for k in ATTENDEE_VISIBLE {
            let patch = json!({ *k: "x" });
            assert!(
                sends_meeting_mail(&Op::UpdateGraph { patch }, Some(&ev)),
                "{k}"
            );
        }
        // Not attendee-visible: no mail.
        let quiet = json!({"showAs": "free", "isReminderOn": false, "importance": "high"});
        assert!(!sends_meeting_mail(
            &Op::UpdateGraph { patch: quiet },
            Some(&ev)
        ));
        // No attendees, or an attendee's own copy: no mail.
        let alone = json!({"subject": "s"});
        assert!(!sends_meeting_mail(
            &Op::UpdateGraph {
                patch: json!({"subject": "t"})
            },
            Some(&alone)
        ));
        let mut copy = ev.clone();
        copy["isOrganizer"] = json!(false);
        assert!(!sends_meeting_mail(
            &Op::UpdateGraph {
                patch: json!({"subject": "t"})
            },
            Some(&copy)
        ));
        // Adding the first attendee mails them.
        let add = json!({"attendees": ev["attendees"].clone()});
        assert!(sends_meeting_mail(
            &Op::UpdateGraph { patch: add },
            Some(&alone)
        ));
        assert!(!sends_meeting_mail(&Op::DeleteGraph, Some(&ev)));
    }

    #[test]
    fn a_series_ends_with_its_last_occurrence_or_never() {
        let start = json!({"dateTime": "2026-01-05T09:00:00", "timeZone": "UTC"});
        let weekly = |range: Value| {
            json!({"start": start, "end": start, "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]}, "range": range}})
        };
        let open = weekly(json!({"type": "noEnd", "startDate": "2026-01-05"}));
        let patch = json!({"subject": "x"});
        assert_eq!(
            event_end(
                &Op::UpdateGraph {
                    patch: patch.clone()
                },
                Some(&open)
            ),
            None,
            "a series without an end is never past"
        );
        let numbered = weekly(
            json!({"type": "numbered", "startDate": "2026-01-05", "numberOfOccurrences": 3}),
        );
        assert_eq!(
            event_end(&Op::UpdateGraph { patch }, Some(&numbered))
                .unwrap()
                .to_rfc3339(),
            "2026-01-21T00:00:00+00:00",
            "the third Monday, 19 January, and a day's margin"
        );
    }

    #[test]
    fn the_end_is_the_written_one_else_the_items() {
        let item = json!({"end": {"dateTime": "2026-01-01T10:00:00.0000000", "timeZone": "UTC"}});
        let patch = json!({"end": {"dateTime": "2027-01-01T10:00:00", "timeZone": "UTC"}});
        assert_eq!(
            event_end(&Op::UpdateGraph { patch }, Some(&item))
                .unwrap()
                .to_rfc3339(),
            "2027-01-01T10:00:00+00:00"
        );
        let patch = json!({"subject": "x"});
        assert_eq!(
            event_end(&Op::UpdateGraph { patch }, Some(&item))
                .unwrap()
                .to_rfc3339(),
            "2026-01-01T10:00:00+00:00"
        );
    }

    #[test]
    fn past_events_and_first_syncs_are_held() {
        let mut r = InvitationRecord::default();
        let past = Write {
            ends: Some(at(-1)),
            ..write(1)
        };
        assert_eq!(
            decide(&mut r, &past, at(0), 30),
            Admit::Held(HoldReason::Past)
        );
        let first = Write {
            first_sync: true,
            ..write(2)
        };
        assert_eq!(
            decide(&mut r, &first, at(0), 30),
            Admit::Held(HoldReason::FirstSync)
        );
        assert_eq!(r.held.len(), 2);
        assert!(r.sent.is_empty(), "nothing sent");
        // The same pair held again keeps one entry and its first time.
        assert_eq!(
            decide(&mut r, &past, at(5), 30),
            Admit::Held(HoldReason::Past)
        );
        assert_eq!(r.held.len(), 2);
        assert_eq!(r.held.iter().find(|h| h.crm_id == 1).unwrap().since, at(0));
    }

    #[test]
    fn more_than_n_per_minute_are_held_and_a_minute_later_they_pass() {
        let mut r = InvitationRecord::default();
        for i in 0..3 {
            assert_eq!(decide(&mut r, &write(i), at(i as i64), 3), Admit::Go);
        }
        assert_eq!(
            decide(&mut r, &write(9), at(10), 3),
            Admit::Held(HoldReason::Rate)
        );
        assert_eq!(decide(&mut r, &write(10), at(70), 3), Admit::Go);
        // 0 = no limit.
        let mut r = InvitationRecord::default();
        for i in 0..100 {
            assert_eq!(decide(&mut r, &write(i), at(0), 0), Admit::Go);
        }
    }

    #[test]
    fn a_released_pair_goes_through_once_whatever_the_reason() {
        let mut r = InvitationRecord::default();
        let past = Write {
            ends: Some(at(-1)),
            ..write(1)
        };
        assert_eq!(
            decide(&mut r, &past, at(0), 30),
            Admit::Held(HoldReason::Past)
        );
        r.held.clear();
        r.released.push(ReleasedInvitation {
            crm_id: 1,
            until: at(600),
        });
        assert_eq!(decide(&mut r, &past, at(1), 30), Admit::Go);
        assert!(r.released.is_empty());
        assert_eq!(
            decide(&mut r, &past, at(2), 30),
            Admit::Held(HoldReason::Past)
        );
        // An expired release lets nothing through.
        r.released.push(ReleasedInvitation {
            crm_id: 1,
            until: at(600),
        });
        assert_eq!(
            decide(&mut r, &past, at(601), 30),
            Admit::Held(HoldReason::Past)
        );
    }

    #[test]
    fn a_write_that_goes_clears_the_pairs_hold() {
        let mut r = InvitationRecord::default();
        for i in 0..2 {
            decide(&mut r, &write(i), at(0), 2);
        }
        assert_eq!(
            decide(&mut r, &write(7), at(1), 2),
            Admit::Held(HoldReason::Rate)
        );
        assert_eq!(decide(&mut r, &write(7), at(90), 2), Admit::Go);
        assert!(r.held.is_empty());
    }
}
