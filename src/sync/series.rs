//! Recurring series (SCENARIOS.md A9; expected-behaviour.md 11 and 16; MAPPING.md "recurrence").
//!
//! A Graph series master is one CRM record (`IsMasterContact`, `IsSerialContact`); an edited
//! occurrence (an exception) is a record of its own (`IsSerialContact`, `ContactStatNo` +
//! `ContactSeqNo` of the master); a plain occurrence makes nothing; a cancelled occurrence (gone
//! from `/instances`) is a member record with `Status` = `Cancelled`, never a delete. From CRM,
//! a master record with its member records becomes an Outlook series whose pattern is inferred
//! from their days, and each member is linked to its occurrence.

use std::collections::BTreeSet;

use cgc_core::CrmFields;
use cgc_core::mapping::records;
use cgc_core::series::{self, Member};
use cgc_crm::{Cond, CondOp, Query, Record};
use chrono::{Duration, NaiveDate, Utc};
use serde_json::Value;

use super::observe::Observation;
use super::{Pass, Processed, SyncError, noop};
use crate::event::Change;
use crate::state::{Link, lease_names};

pub(super) fn crm_date(f: &CrmFields, key: &str) -> Option<NaiveDate> {
    cgc_core::mapping::time::parse_crm_date(f.get(key)?)
}

impl Pass<'_> {
    fn window_days(&self) -> (NaiveDate, NaiveDate) {
        let (from, to) = self.tenant.window(Utc::now());
        (from.date_naive(), to.date_naive())
    }

    /// Whether the core's window rule is waived for this pair: a series master is in the window
    /// while any of its occurrences is (it may have begun long before), and a linked master
    /// stays linked when its end moves out of the window.
    pub(super) fn window_waived(&self, obs: &Observation) -> bool {
        let (from, to) = self.window_days();
        let graph_master = obs
            .graph
            .as_ref()
            .filter(|v| Member::of(v) == Member::Master);
        match graph_master {
            Some(m) => obs.link.is_some() || series::reaches_into(m, from, to),
            None => obs.link.is_some() && obs.crm.as_ref().is_some_and(series::is_master_record),
        }
    }

    /// Where the pass of an instance belongs: to its master when it is a plain occurrence nobody
    /// linked (the master carries it), an exception whose master is not linked yet (the master's
    /// pass makes the master's record first, then the exception's), or a linked occurrence that
    /// Graph no longer has (a cancelled day is its master's to mark).
    pub(super) async fn master_route(
        &self,
        item: Option<&Value>,
        link: Option<&Link>,
    ) -> Result<Option<String>, SyncError> {
        let Some(v) = item else {
            return Ok(link.and_then(|l| l.slot.as_ref()).map(|s| s.master.clone()));
        };
        let Some(master) = series::master_id(v) else {
            return Ok(None);
        };
        let to_master = match Member::of(v) {
            Member::Occurrence => link.is_none(),
            Member::Exception => self
                .state()
                .link_by_graph(self.tid(), self.entity, self.mailbox, master)
                .await?
                .is_none(),
            _ => false,
        };
        Ok(to_master.then(|| master.to_string()))
    }

    /// The series fields of a new CRM record made from `item` (none for a single instance).
    pub(super) async fn series_fields(&self, item: &Value) -> Result<CrmFields, SyncError> {
        let member = Member::of(item);
        let master = match (member.is_instance(), series::master_id(item)) {
            (true, Some(m)) => Some(
                self.state()
                    .link_by_graph(self.tid(), self.entity, self.mailbox, m)
                    .await?
                    .ok_or(SyncError::Invariant(
                        "an exception's record is made after its master's",
                    ))?
                    .crm_id,
            ),
            _ => None,
        };
        Ok(series::member_fields(member, master))
    }

    /// After a master's pass from Graph: each exception (and each occurrence a CRM member is
    /// linked to) gets its own pass, and each day the pattern names that `/instances` lacks is
    /// marked cancelled in CRM. Returns the writes made.
    pub(super) async fn sync_members(
        &self,
        master_id: &str,
        master: &Value,
    ) -> Result<usize, SyncError> {
        let Some(master_link) = self
            .state()
            .link_by_graph(self.tid(), self.entity, self.mailbox, master_id)
            .await?
        else {
            return Ok(0);
        };
        let (from, to) = self.tenant.window(Utc::now());
        let instances = self
            .tenant
            .graph
            .instances(self.mailbox, master_id, from, to)
            .await?;
        let mut writes = 0;
        let mut present = BTreeSet::new();
        for inst in &instances {
            let Some(id) = inst.get("id").and_then(Value::as_str) else {
                continue;
            };
            // an attendee's copy keeps a cancelled occurrence, marked isCancelled
            if inst.get("isCancelled").and_then(Value::as_bool) != Some(true) {
                present.extend(series::original_day(inst, master));
            }
            let linked = self
                .state()
                .link_by_graph(self.tid(), self.entity, self.mailbox, id)
                .await?
                .is_some();
            if Member::of(inst) == Member::Exception || linked {
                writes += Box::pin(self.from_graph(id, Change::Updated, None))
                    .await?
                    .writes;
            }
        }
        let (first, last) = self.window_days();
        for day in series::master_days(master, first, last) {
            if !present.contains(&day) {
                writes += self
                    .mark_cancelled_day(&master_link, master_id, master, day)
                    .await?;
            }
        }
        Ok(writes)
    }

    /// A notification of an event nobody knows (a cancelled occurrence's id is in no link): each
    /// linked series master of the mailbox gets a pass, which marks any cancelled day.
    pub(super) async fn look_at_series_masters(&self) -> Result<Processed, SyncError> {
        let mailbox = self.mailbox.to_ascii_lowercase();
        let masters: Vec<String> = self
            .state()
            .links(self.tid())
            .await?
            .into_iter()
            .filter(|l| l.series && l.entity == self.entity && l.mailbox == mailbox)
            .map(|l| l.graph_id)
            .collect();
        let mut writes = 0;
        for m in &masters {
            writes += Box::pin(self.from_graph(m, Change::Updated, None))
                .await?
                .writes;
        }
        Ok(Processed {
            writes,
            ..noop(
                "item gone and never linked: the mailbox's series were looked at for a cancelled occurrence",
            )
        })
    }

    /// The member records of a CRM master (deleted ones left out).
    pub(super) async fn crm_members(&self, master_crm: u64) -> Result<Vec<Record>, SyncError> {
        let (stat, seq) = series::stat_seq(master_crm);
        let found = self
            .tenant
            .crm
            .query_all(
                &Query {
                    table: self.entity.crm_table().into(),
                    conditions: vec![
                        Cond {
                            field: "ContactStatNo".into(),
                            op: CondOp::Eq,
                            value: stat.to_string(),
                        },
                        Cond {
                            field: "ContactSeqNo".into(),
                            op: CondOp::Eq,
                            value: seq.to_string(),
                        },
                    ],
                    fields: records::read_fields(self.entity)
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                    max_records: Some(series::MAX_OCCURRENCES as u32),
                },
                Some(self.mailbox),
            )
            .await?;
        Ok(found
            .into_iter()
            .filter(|r| !records::is_deleted(&r.fields) && r.id != master_crm)
            .filter(|r| series::master_of(&r.fields) == Some(master_crm))
            .collect())
    }

    /// Marks one cancelled day of a series in CRM: the record linked to that day (an exception
    /// that was cancelled) gets `Status` = `Cancelled`; else a member record of that day is
    /// marked, or made already marked. Never a delete. Returns the writes made.
    async fn mark_cancelled_day(
        &self,
        master_link: &Link,
        master_id: &str,
        master: &Value,
        day: NaiveDate,
    ) -> Result<usize, SyncError> {
        let day_text = day.format("%Y-%m-%d").to_string();
        let mailbox = self.mailbox.to_ascii_lowercase();
        let linked = self.state().links(self.tid()).await?.into_iter().find(|l| {
            l.entity == self.entity
                && l.mailbox == mailbox
                && l.slot
                    .as_ref()
                    .is_some_and(|s| s.master == master_id && s.day == day_text)
        });
        let cancelled: CrmFields = [("Status".to_string(), "Cancelled".to_string())].into();
        if let Some(l) = linked {
            let f = self.crm_get(l.crm_id).await?;
            if f.as_ref()
                .is_some_and(|f| !series::is_cancelled_record(f) && !records::is_deleted(f))
            {
                self.crm_update(l.crm_id, &cancelled).await?;
                return Ok(1);
            }
            return Ok(0);
        }
        let name = lease_names::cancelled_day(self.tid(), master_link.crm_id, &day_text);
        let held = self
            .create_lease(&name, "the cancelled day is being marked by another worker")
            .await?;
        let result = async {
            let members = self.crm_members(master_link.crm_id).await?;
            if let Some(r) = members
                .iter()
                .find(|r| crm_date(&r.fields, "Date") == Some(day))
            {
                if series::is_cancelled_record(&r.fields) {
                    return Ok(0);
                }
                self.crm_update(r.id, &cancelled).await?;
                return Ok(1);
            }
            let Some(record) = self.crm_get(master_link.crm_id).await? else {
                return Ok(0);
            };
            let Some(first) = series::first_day(master) else {
                return Ok(0);
            };
            let fields = cancelled_member(&record, master_link.crm_id, day - first);
            self.tenant
                .crm
                .create(self.entity.crm_table(), &fields, Some(self.mailbox))
                .await?;
            tracing::info!(tenant = %self.tid(), mailbox = %self.mailbox, item = %master_id,
                day = %day_text, "cancelled occurrence marked in CRM (Status = Cancelled)");
            Ok(1)
        }
        .await;
        held.release().await;
        result
    }
}

/// The fields of a member record marking a cancelled day: the master's own values moved by
/// `offset` days, `Status` = `Cancelled`, tied to the master.
fn cancelled_member(master: &CrmFields, master_crm: u64, offset: Duration) -> CrmFields {
    let mut f: CrmFields = [
        "Contact",
        "Time",
        "EndTime",
        "Subject",
        "Text",
        "Priority",
        "Private",
        "ShowAs",
        "A031Location",
        "RepID",
    ]
    .iter()
    .filter_map(|k| master.get(*k).map(|v| (k.to_string(), v.clone())))
    .collect();
    for key in ["Date", "EndDate"] {
        if let Some(d) = crm_date(master, key) {
            f.insert(key.into(), (d + offset).format("%Y-%m-%d").to_string());
        }
    }
    f.extend(series::member_fields(Member::Exception, Some(master_crm)));
    f.insert("Status".into(), "Cancelled".into());
    f.insert("F5021".into(), "true".into());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SeriesSlot;
    use serde_json::json;

    #[test]
    fn an_instance_has_a_slot_and_a_single_or_master_none() {
        let slot_of = SeriesSlot::of;
        let exc = json!({"type": "exception", "seriesMasterId": "M",
            "originalStart": "2030-01-14T08:00:00Z", "originalStartTimeZone": "W. Europe Standard Time"});
        assert_eq!(
            slot_of(&exc),
            Some(SeriesSlot {
                master: "M".into(),
                day: "2030-01-14".into()
            })
        );
        assert_eq!(slot_of(&json!({"type": "seriesMaster"})), None);
        assert_eq!(slot_of(&json!({"type": "singleInstance"})), None);
        assert_eq!(
            slot_of(&json!({"type": "occurrence"})),
            None,
            "no master id"
        );
    }

    #[tokio::test]
    async fn a_notified_unknown_id_looks_at_the_series_and_marks_a_cancelled_day() {
        use crate::demo::MAILBOX;
        use crate::testing::{TestApp, id_of};
        let t = TestApp::start().await;
        t.sync_rep().await;
        let day = (Utc::now() + Duration::days(3)).date_naive();
        let master = t.graph.user_create_event(
            MAILBOX,
            json!({"subject": "Sprint review",
                   "start": {"dateTime": format!("{day}T09:00:00"), "timeZone": "UTC"},
                   "end": {"dateTime": format!("{day}T10:00:00"), "timeZone": "UTC"},
                   "recurrence": {"pattern": {"type": "daily", "interval": 1},
                                  "range": {"type": "numbered", "startDate": day.to_string(), "numberOfOccurrences": 3}}}),
        );
        let pass = t.pass(cgc_core::Entity::Appointment);
        let done = pass
            .from_graph(&id_of(&master), Change::Created, None)
            .await
            .unwrap();
        assert_eq!(done.kind, cgc_core::PlanKind::Create, "{}", done.reason);
        let occ = t.graph.instances(MAILBOX, &id_of(&master))[1].clone();
        t.graph.user_delete_event(MAILBOX, &id_of(&occ));
        // the notification names only the gone occurrence, which no link knows
        let done = pass
            .from_graph(&id_of(&occ), Change::Deleted, None)
            .await
            .unwrap();
        assert_eq!(done.writes, 1, "{}", done.reason);
        let marked: Vec<_> = t
            .crm
            .records("Contact")
            .into_iter()
            .filter(|r| r.fields.get("Status").map(String::as_str) == Some("Cancelled"))
            .collect();
        assert_eq!(marked.len(), 1);
        assert_eq!(
            marked[0].fields.get("Date").cloned(),
            Some((day + Duration::days(1)).to_string())
        );
        let again = pass
            .from_graph(&id_of(&occ), Change::Deleted, None)
            .await
            .unwrap();
        assert_eq!(again.writes, 0, "marked once");
    }

    #[test]
    fn a_cancelled_day_is_the_masters_values_moved_and_marked() {
        let master: CrmFields = [
            ("Subject", "Jour fixe"),
            ("Date", "2030-01-07"),
            ("EndDate", "2030-01-07"),
            ("Time", "09:00"),
            ("EndTime", "09:30"),
            ("RepID", "R1"),
            ("IsMasterContact", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = cancelled_member(&master, (3 << 32) | 9, Duration::days(14));
        assert_eq!(f["Date"], "2030-01-21");
        assert_eq!(f["EndDate"], "2030-01-21");
        assert_eq!(f["Time"], "09:00");
        assert_eq!(f["Status"], "Cancelled");
        assert_eq!(f["ContactStatNo"], "3");
        assert_eq!(f["ContactSeqNo"], "9");
        assert_eq!(f["IsMasterContact"], "false");
        assert!(series::is_member_record(&f));
    }
}
