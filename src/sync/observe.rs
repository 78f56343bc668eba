//! The first step of a pass: read both sides once and say what was found, as one
//! [`Observation`] (the pair's link, the Graph item, the CRM record, the last agreed state, and
//! whether the pair was found by matching), plus the pure rules that turn it into the core's
//! `SideState`s.

use cgc_core::mapping::records;
use cgc_core::series::Member;
use cgc_core::{Canonical, Cause, CrmFields, CrmItem, Entity, GraphItem, SideState};
use cgc_crm::time::changed_at;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::matching::Matched;
use super::{Pass, SyncError};
use crate::state::Link;
use crate::telemetry::events::UnknownTimeZone;

/// Both sides of one pair as read at the start of a pass.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// The stored link, or the one matching found (then `matched`).
    pub link: Option<Link>,
    /// The Graph item (`None`: its GET answered 404, or there is none yet).
    pub graph: Option<Value>,
    /// The CRM record's fields (`None`: not readable, or there is none yet).
    pub crm: Option<CrmFields>,
    /// The CRM record's id, when the pass knows it.
    pub crm_id: Option<u64>,
    /// The Graph item's id (empty when there is none yet).
    pub graph_id: String,
    /// The To Do list of a task.
    pub list_id: Option<String>,
    /// The last agreed state of a linked pair.
    pub shadow: Option<Canonical>,
    /// The pair was found by matching (not from the store): its link marks are written on both
    /// systems when the pass settles.
    pub matched: bool,
}

/// What the first step found.
#[derive(Debug)]
pub(super) enum Observed {
    /// A pair (or one side of one) to reconcile.
    Pair(Observation),
    /// Nothing to reconcile, and why.
    Nothing(&'static str),
    /// An unlinked Graph item several CRM records fit.
    Ambiguous { item: Value, candidates: Vec<u64> },
    /// The pass belongs to the series master with this Graph id (calendarView delta reports
    /// occurrences, never the master: expected-behaviour.md 11).
    Master(String),
    /// A notification names an event Graph does not have and no link knows: perhaps a cancelled
    /// occurrence (whose id no link holds), so the mailbox's series masters are looked at.
    Gone,
}

/// The Graph side for the core: present with the time its change was observed (for a CRM-side
/// event, Graph's own `lastModifiedDateTime`; either matters only when the content really differs
/// from the agreed state, so a mere touch never wins a conflict); deleted when a linked item's GET
/// answered 404; absent when there never was one.
pub(super) fn graph_side(
    item: Option<&Value>,
    linked: bool,
    observed_at: Option<DateTime<Utc>>,
) -> SideState<GraphItem> {
    match item {
        Some(v) => SideState::Present(GraphItem {
            item: v.clone(),
            changed_at: observed_at.or_else(|| {
                v.get("lastModifiedDateTime")
                    .and_then(Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|d| d.with_timezone(&Utc))
            }),
        }),
        None if linked => SideState::Deleted,
        None => SideState::Absent,
    }
}

/// The CRM side for the core. A record is deleted only when it is read back with `DelCd = 1`;
/// one missing from an answer (a restore, a lag, a permission change) is absent, and absence
/// deletes nothing (expected-behaviour.md 35).
pub(super) fn crm_side(fields: Option<&CrmFields>, zone: chrono_tz::Tz) -> SideState<CrmItem> {
    match fields {
        Some(f) if records::is_deleted(f) => SideState::Deleted,
        Some(f) => SideState::Present(CrmItem {
            fields: f.clone(),
            changed_at: changed_at(f, zone),
        }),
        None => SideState::Absent,
    }
}

/// Whether the mailbox owner organises the event: from the item, else from the link.
pub(super) fn organizer(item: Option<&Value>, link: Option<&Link>) -> bool {
    match item {
        Some(v) => v
            .get("isOrganizer")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        None => link.map(|l| l.organizer).unwrap_or(true),
    }
}

/// Entities whose Graph items carry the fingerprint of the last agreed state.
pub(super) fn carries_sync_state(e: Entity) -> bool {
    matches!(e, Entity::Appointment | Entity::Contact)
}

/// An occurrence or exception: it shows its master's extended properties (the CRM id and the
/// fingerprint of the master's pair), so neither says anything about the occurrence itself.
pub(super) fn is_instance(item: Option<&Value>) -> bool {
    item.is_some_and(|v| Member::of(v).is_instance())
}

/// Without a shadow (lost store, re-linked pair), the item's fingerprint of the last agreed state
/// lets the core tell an edit from a stale copy (expected-behaviour.md 38).
pub(super) fn stored_fingerprint(
    entity: Entity,
    shadow: Option<&Canonical>,
    item: Option<&Value>,
) -> Option<String> {
    match (shadow, item) {
        (None, Some(v)) if carries_sync_state(entity) && !is_instance(Some(v)) => {
            cgc_graph::extended_property(v, cgc_graph::SYNC_STATE_PROPERTY)
        }
        _ => None,
    }
}

impl Pass<'_> {
    /// A Graph item changed: read it, its link (or match one), the CRM record and the shadow.
    pub(super) async fn observe_graph(
        &self,
        graph_id: &str,
        list_id: Option<&str>,
    ) -> Result<Observed, SyncError> {
        let item = self.graph_get(graph_id, list_id).await?;
        let link = self
            .state()
            .link_by_graph(self.tid(), self.entity, self.mailbox, graph_id)
            .await?;
        if self.entity == Entity::Appointment
            && let Some(master) = self.master_route(item.as_ref(), link.as_ref()).await?
        {
            return Ok(Observed::Master(master));
        }
        if let (Entity::Appointment, Some(v)) = (self.entity, &item) {
            self.note_unknown_zones(graph_id, v);
        }
        let mut obs = Observation {
            link,
            graph_id: graph_id.to_string(),
            list_id: list_id.map(str::to_string),
            ..Observation::default()
        };
        if obs.link.is_none() {
            let Some(v) = &item else {
                if self.entity == Entity::Appointment && self.cause == Cause::Notification {
                    return Ok(Observed::Gone);
                }
                return Ok(Observed::Nothing(
                    "item gone and never linked: nothing to do",
                ));
            };
            match self.match_crm(graph_id, v).await? {
                Matched::One(crm_id) => {
                    obs.link = Some(self.new_link(crm_id, graph_id, v, list_id));
                    obs.matched = true;
                }
                Matched::Ambiguous(candidates) => {
                    return Ok(Observed::Ambiguous {
                        item: v.clone(),
                        candidates,
                    });
                }
                Matched::None => {}
            }
        }
        obs.graph = item;
        obs.crm_id = obs.link.as_ref().map(|l| l.crm_id);
        if let Some(id) = obs.crm_id {
            obs.crm = self.crm_get(id).await?;
        }
        obs.shadow = self.shadow_of(obs.link.as_ref()).await?;
        Ok(Observed::Pair(obs))
    }

    /// A CRM record changed: read it, its link (or match a Graph item), the item and the shadow.
    pub(super) async fn observe_crm(&self, crm_id: u64) -> Result<Observed, SyncError> {
        let mut obs = Observation {
            crm: self.crm_get(crm_id).await?,
            crm_id: Some(crm_id),
            link: self
                .state()
                .link_by_crm(self.tid(), self.entity, self.mailbox, crm_id)
                .await?,
            ..Observation::default()
        };
        if let Some(l) = &obs.link {
            obs.graph = self.graph_get(&l.graph_id, l.list_id.as_deref()).await?;
            if let (None, Some(slot)) = (&obs.graph, &l.slot) {
                // an occurrence gone from Graph: a cancelled day, its master's pass marks it
                return Ok(Observed::Master(slot.master.clone()));
            }
        } else {
            match &obs.crm {
                None => {
                    return Ok(Observed::Nothing(
                        "record gone and never linked: nothing to do",
                    ));
                }
                Some(f) if records::is_deleted(f) => {
                    return Ok(Observed::Nothing(
                        "record deleted and never linked: nothing to do",
                    ));
                }
                Some(_) => {}
            }
            if let Some((gid, found)) = self.match_graph(crm_id).await? {
                obs.link = Some(self.new_link(crm_id, &gid, &found, None));
                obs.graph = Some(found);
                obs.matched = true;
            }
        }
        if let Some(l) = &obs.link {
            obs.graph_id = l.graph_id.clone();
            obs.list_id = l.list_id.clone();
        }
        obs.shadow = self.shadow_of(obs.link.as_ref()).await?;
        Ok(Observed::Pair(obs))
    }

    async fn shadow_of(&self, link: Option<&Link>) -> Result<Option<Canonical>, SyncError> {
        Ok(match link {
            Some(l) => self.state().shadow(self.tid(), l).await?,
            None => None,
        })
    }

    /// Unknown zone names are kept in UTC, never dropped (expected-behaviour.md 40): logged and
    /// counted.
    fn note_unknown_zones(&self, graph_id: &str, item: &Value) {
        for zone in cgc_core::mapping::time::unknown_time_zones(item) {
            UnknownTimeZone {
                tenant: self.tid(),
                mailbox: self.mailbox,
                item: graph_id,
                zone: &zone,
            }
            .emit(&self.app.metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{MAILBOX, REP_ID, TENANT};
    use crate::testing::{TestApp, id_of};
    use serde_json::json;

    fn link(crm_id: u64, graph_id: &str, organizer: bool) -> Link {
        Link {
            entity: Entity::Appointment,
            mailbox: MAILBOX.into(),
            crm_id,
            graph_id: graph_id.into(),
            ical_uid: None,
            organizer,
            list_id: None,
            slot: None,
            series: false,
        }
    }

    #[test]
    fn a_missing_graph_item_is_deleted_only_when_it_was_linked() {
        assert!(matches!(graph_side(None, true, None), SideState::Deleted));
        assert!(matches!(graph_side(None, false, None), SideState::Absent));
        let seen: DateTime<Utc> = "2026-12-01T08:00:00Z".parse().unwrap();
        let item = json!({"lastModifiedDateTime": "2026-11-30T10:00:00Z"});
        match graph_side(Some(&item), true, Some(seen)) {
            SideState::Present(g) => assert_eq!(g.changed_at, Some(seen), "observation time wins"),
            other => panic!("{other:?}"),
        }
        match graph_side(Some(&item), true, None) {
            SideState::Present(g) => assert_eq!(
                g.changed_at,
                Some("2026-11-30T10:00:00Z".parse().unwrap()),
                "else Graph's own modification time"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_crm_record_is_deleted_only_with_delcd_and_absent_when_unread() {
        let zone = chrono_tz::Europe::Berlin;
        assert!(matches!(crm_side(None, zone), SideState::Absent));
        let mut f = CrmFields::new();
        f.insert("DelCd".into(), "1".into());
        assert!(matches!(crm_side(Some(&f), zone), SideState::Deleted));
        let mut f = CrmFields::new();
        f.insert("UpdDate".into(), "2026-07-01".into());
        f.insert("UpdTime".into(), "10:30".into());
        match crm_side(Some(&f), zone) {
            SideState::Present(c) => assert_eq!(
                c.changed_at,
                Some("2026-07-01T08:30:00Z".parse().unwrap()),
                "UpdDate/UpdTime read in the CRM zone"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_organizer_comes_from_the_item_else_from_the_link() {
        let attendee = json!({"isOrganizer": false});
        assert!(!organizer(Some(&attendee), Some(&link(1, "g", true))));
        assert!(organizer(Some(&json!({})), None), "unknown: organizer");
        assert!(!organizer(None, Some(&link(1, "g", false))));
        assert!(organizer(None, None));
    }

    #[test]
    fn the_items_fingerprint_counts_only_without_a_shadow_and_for_carrying_entities() {
        let item = json!({"singleValueExtendedProperties": [
            {"id": cgc_graph::SYNC_STATE_PROPERTY, "value": "v1:abc"}]});
        assert_eq!(
            stored_fingerprint(Entity::Appointment, None, Some(&item)).as_deref(),
            Some("v1:abc")
        );
        let shadow = Canonical::new();
        assert_eq!(
            stored_fingerprint(Entity::Appointment, Some(&shadow), Some(&item)),
            None
        );
        assert_eq!(stored_fingerprint(Entity::Task, None, Some(&item)), None);
        assert_eq!(stored_fingerprint(Entity::Contact, None, None), None);
    }

    #[tokio::test]
    async fn a_gone_item_never_linked_is_nothing_to_do() {
        let t = TestApp::start().await;
        let ev = t.outlook_event("Gone", None);
        t.graph.user_delete_event(MAILBOX, &id_of(&ev));
        let pass = t.pass(Entity::Appointment);
        assert!(
            matches!(
                pass.observe_graph(&id_of(&ev), None).await.unwrap(),
                Observed::Gone
            ),
            "a notified event nobody knows may be a cancelled occurrence: the series are looked at"
        );
        let pass = t.pass(Entity::Contact);
        match pass.observe_graph(&id_of(&ev), None).await.unwrap() {
            Observed::Nothing(reason) => assert!(reason.contains("never linked"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_new_item_is_observed_alone_and_a_marked_one_with_its_record() {
        let t = TestApp::start().await;
        let pass = t.pass(Entity::Appointment);
        let ev = t.outlook_event("Fresh", None);
        let Observed::Pair(obs) = pass.observe_graph(&id_of(&ev), None).await.unwrap() else {
            panic!("a pair");
        };
        assert!(obs.link.is_none() && obs.crm.is_none() && obs.shadow.is_none());
        assert!(!obs.matched);
        assert_eq!(obs.graph.as_ref().unwrap()["subject"], "Fresh");
        let id = t.crm_appointment("Marked", REP_ID);
        let ev = t.outlook_event("Marked", Some(id));
        let Observed::Pair(obs) = pass.observe_graph(&id_of(&ev), None).await.unwrap() else {
            panic!("a pair");
        };
        assert!(obs.matched, "found by matching, not from the store");
        assert_eq!(obs.crm_id, Some(id));
        assert_eq!(obs.link.as_ref().map(|l| l.crm_id), Some(id));
        assert_eq!(
            obs.crm
                .as_ref()
                .and_then(|f| f.get("Subject"))
                .map(String::as_str),
            Some("Marked")
        );
    }

    #[tokio::test]
    async fn a_stored_pair_is_observed_with_its_shadow_from_either_side() {
        let t = TestApp::start().await;
        let id = t.crm_appointment("Stored", REP_ID);
        let ev = t.outlook_event("Stored", None);
        let l = link(id, &id_of(&ev), true);
        let mut shadow = Canonical::new();
        shadow.set("subject", json!("Stored"));
        t.app.state.put_link(TENANT, &l).await.unwrap();
        t.app.state.put_shadow(TENANT, &l, &shadow).await.unwrap();
        let pass = t.pass(Entity::Appointment);
        for observed in [
            pass.observe_graph(&id_of(&ev), None).await.unwrap(),
            pass.observe_crm(id).await.unwrap(),
        ] {
            let Observed::Pair(obs) = observed else {
                panic!("a pair");
            };
            assert!(!obs.matched, "from the store");
            assert_eq!(obs.graph_id, id_of(&ev));
            assert_eq!(obs.crm_id, Some(id));
            assert!(obs.graph.is_some() && obs.crm.is_some());
            assert_eq!(obs.shadow.as_ref(), Some(&shadow));
        }
    }

    #[tokio::test]
    async fn a_record_deleted_or_gone_and_never_linked_is_nothing_to_do() {
        let t = TestApp::start().await;
        let pass = t.pass(Entity::Appointment);
        let id = t.crm_appointment("Short-lived", REP_ID);
        t.crm.user_delete("Contact", id);
        assert!(matches!(
            pass.observe_crm(id).await.unwrap(),
            Observed::Nothing(_)
        ));
        assert!(matches!(
            pass.observe_crm(999_999).await.unwrap(),
            Observed::Nothing(_)
        ));
        let alone = t.crm_appointment("Unmatched", REP_ID);
        let Observed::Pair(obs) = pass.observe_crm(alone).await.unwrap() else {
            panic!("a pair");
        };
        assert!(obs.link.is_none() && obs.graph.is_none() && obs.graph_id.is_empty());
    }
}
