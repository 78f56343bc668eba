//! Finding the other half of an unlinked item: the CRM-id mark on the Graph item, the ExtKey row
//! in CRM, the iCalUId (one meeting seen by several reps, an older connector's row), the e-mail
//! address of a contact, and the record an earlier try made whose link was never written.

use cgc_core::mapping::records;
use cgc_core::{CrmFields, Entity};
use cgc_crm::{Cond, CondOp, Query, Record};
use cgc_graph::crm_id_on_item;
use serde_json::Value;

use super::{Pass, SyncError};
use crate::telemetry::events::ForeignCrmIdClaim;

/// What matching found for an unlinked Graph item.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Matched {
    One(u64),
    /// Several CRM records fit (two persons share the e-mail address): create none, link none.
    Ambiguous(Vec<u64>),
    None,
}

/// The first e-mail address of a Graph contact, trimmed and lower-cased; `None` when empty.
pub(super) fn contact_email(item: &Value) -> Option<String> {
    item.get("emailAddresses")
        .and_then(|a| a.get(0))
        .and_then(|a| a.get("address"))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
}

/// The live ExtKey rows of one entity's table (`TableShort` empty counts as any table).
fn live_rows_of(rows: Vec<Record>, short: &str) -> Vec<Record> {
    rows.into_iter()
        .filter(|r| !records::is_deleted(&r.fields))
        .filter(|r| {
            r.fields
                .get("TableShort")
                .is_none_or(|t| t.is_empty() || t == short)
        })
        .collect()
}

/// Whether a CRM record is the appointment `fields` describe: same subject and kind, same start
/// time to the minute (CRM may answer `HH:MM:SS`).
fn same_appointment(fields: &CrmFields, have: &CrmFields) -> bool {
    let same = |k: &str| {
        let want = fields.get(k).map(|s| s.trim()).unwrap_or("");
        let got = have.get(k).map(|s| s.trim()).unwrap_or("");
        want == got || (k == "Time" && got.get(..5) == want.get(..5))
    };
    same("Subject") && same("Time") && same("Contact")
}

impl Pass<'_> {
    /// Looks for the CRM record an unlinked Graph item belongs to: the CRM id it carries, the ExtKey
    /// row written on CRM, the iCalUId (one meeting for several reps, EWS migration), or the e-mail
    /// address for contacts. Returns the CRM id.
    pub(super) async fn match_crm(
        &self,
        graph_id: &str,
        item: &Value,
    ) -> Result<Matched, SyncError> {
        let crm = &self.tenant.crm;
        // An occurrence shows its master's CRM id: it is matched by its own ExtKey row and iCalUId.
        if let Some(id) =
            crm_id_on_item(item).filter(|_| !cgc_core::series::Member::of(item).is_instance())
        {
            if let Some(f) = self.crm_get(id).await? {
                // The CRM id on an item is a claim by whoever edits the item: an appointment is
                // linked on it only when the record belongs to this rep (RepID or participant).
                let foreign =
                    self.entity == Entity::Appointment && self.out_of_scope(&f).await?.is_some();
                if foreign {
                    ForeignCrmIdClaim {
                        tenant: self.tid(),
                        mailbox: self.mailbox,
                        crm_id: id,
                    }
                    .emit(&self.app.metrics);
                } else if !records::is_deleted(&f) {
                    return Ok(Matched::One(id));
                }
            }
        }
        if let Some(row) = crm.find_link(graph_id).await? {
            if row.table_short == self.entity.crm_short() {
                return Ok(Matched::One(row.record_id));
            }
        }
        if self.entity == Entity::Appointment {
            if let Some(uid) = item.get("iCalUId").and_then(Value::as_str) {
                if let Some(row) = crm.find_link_by_uid(uid).await? {
                    if row.table_short == "MA" {
                        return Ok(Matched::One(row.record_id));
                    }
                }
            }
        }
        if self.entity == Entity::Contact {
            if let Some(addr) = contact_email(item) {
                let found = crm
                    .query_all(
                        &Query {
                            table: "Person".into(),
                            conditions: vec![Cond {
                                field: "EMail".into(),
                                op: CondOp::Eq,
                                value: addr,
                            }],
                            fields: vec!["EMail".into(), "DelCd".into()],
                            max_records: Some(10),
                        },
                        None,
                    )
                    .await?;
                let live: Vec<u64> = found
                    .iter()
                    .filter(|r| !records::is_deleted(&r.fields))
                    .map(|r| r.id)
                    .collect();
                match live.len() {
                    0 => {}
                    1 => return Ok(Matched::One(live[0])),
                    _ => return Ok(Matched::Ambiguous(live)),
                }
            }
        }
        Ok(Matched::None)
    }

    /// Looks for the Graph item an unlinked CRM record belongs to: its ExtKey rows on CRM (our own
    /// GraphApi row by Graph id; an older connector's row, e.g. EWS, by its iCalUId), then the
    /// CRM-id property on Graph. Returns the Graph id and item.
    pub(super) async fn match_graph(
        &self,
        crm_id: u64,
    ) -> Result<Option<(String, Value)>, SyncError> {
        let rows = self
            .tenant
            .crm
            .query_all(
                &Query {
                    table: "ExtKey".into(),
                    conditions: vec![Cond {
                        field: "RecordId".into(),
                        op: CondOp::Eq,
                        value: crm_id.to_string(),
                    }],
                    fields: vec![
                        "ExtSystem".into(),
                        "ExtKey".into(),
                        "ExtUid".into(),
                        "TableShort".into(),
                        "DelCd".into(),
                    ],
                    max_records: Some(50),
                },
                None,
            )
            .await?;
        let g = &self.tenant.graph;
        let short = self.entity.crm_short();
        let rows = live_rows_of(rows, short);
        for r in &rows {
            let system = r.fields.get("ExtSystem").map(String::as_str).unwrap_or("");
            if system.eq_ignore_ascii_case("GraphApi") {
                if let Some(gid) = r.fields.get("ExtKey").filter(|s| !s.is_empty()) {
                    if let Some(item) = self.graph_get(gid, None).await? {
                        return Ok(Some((gid.clone(), item)));
                    }
                }
            }
        }
        if self.entity == Entity::Appointment {
            // Migration (P9): a row of an older connector carries the iCalUId.
            for r in &rows {
                let Some(uid) = r.fields.get("ExtUid").filter(|s| !s.is_empty()) else {
                    continue;
                };
                if let Some(item) = g
                    .find_events_by_ical_uid(self.mailbox, uid)
                    .await?
                    .into_iter()
                    .next()
                {
                    if let Some(id) = item.get("id").and_then(Value::as_str) {
                        return Ok(Some((id.to_string(), item.clone())));
                    }
                }
            }
        }
        let found = match self.entity {
            Entity::Appointment => {
                g.find_event_by_crm_id(self.mailbox, &crm_id.to_string())
                    .await?
            }
            Entity::Contact => {
                g.find_contact_by_crm_id(self.mailbox, &crm_id.to_string())
                    .await?
            }
            _ => None,
        };
        Ok(found.and_then(|item| {
            let id = item.get("id").and_then(Value::as_str)?.to_string();
            Some((id, item))
        }))
    }

    /// A record this connector made from Outlook whose link is missing: `F5021` (new from
    /// connector) set, the same day and subject, no live GraphApi ExtKey row. Only appointments
    /// carry the mark; exactly one such record is adopted, several are left alone.
    pub(super) async fn find_orphan(
        &self,
        table: &str,
        fields: &CrmFields,
    ) -> Result<Option<u64>, SyncError> {
        if table != "Contact" {
            return Ok(None);
        }
        let Some(date) = fields.get("Date").filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let crm = &self.tenant.crm;
        let found = crm
            .query_all(
                &Query {
                    table: table.into(),
                    conditions: vec![
                        Cond {
                            field: "F5021".into(),
                            op: CondOp::Eq,
                            value: "true".into(),
                        },
                        Cond {
                            field: "Date".into(),
                            op: CondOp::Eq,
                            value: date.clone(),
                        },
                    ],
                    fields: vec![
                        "Subject".into(),
                        "Time".into(),
                        "Contact".into(),
                        "DelCd".into(),
                    ],
                    max_records: Some(200),
                },
                Some(self.mailbox),
            )
            .await?;
        let mut hits = Vec::new();
        for r in found.iter().filter(|r| !records::is_deleted(&r.fields)) {
            if !same_appointment(fields, &r.fields) {
                continue;
            }
            let rows = crm.link_rows_for_record(r.id).await?;
            if rows.is_empty() {
                hits.push(r.id);
            }
        }
        Ok((hits.len() == 1).then(|| hits[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::MAILBOX;
    use crate::testing::{TestApp, id_of};
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> CrmFields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_contacts_first_address_is_trimmed_and_lower_cased() {
        let item =
            json!({"emailAddresses": [{"address": "  Ana@Customer.TEST "}, {"address": "b@x"}]});
        assert_eq!(contact_email(&item).as_deref(), Some("ana@customer.test"));
        assert_eq!(
            contact_email(&json!({"emailAddresses": [{"address": " "}]})),
            None
        );
        assert_eq!(contact_email(&json!({})), None);
    }

    #[test]
    fn an_orphan_is_the_same_appointment_to_the_minute() {
        let want = fields(&[
            ("Subject", "Kickoff"),
            ("Time", "10:00"),
            ("Contact", "Meeting"),
        ]);
        let have = fields(&[
            ("Subject", " Kickoff"),
            ("Time", "10:00:00"),
            ("Contact", "Meeting"),
        ]);
        assert!(
            same_appointment(&want, &have),
            "seconds in the answer do not matter"
        );
        let other = fields(&[
            ("Subject", "Kickoff"),
            ("Time", "10:30"),
            ("Contact", "Meeting"),
        ]);
        assert!(!same_appointment(&want, &other));
        let renamed = fields(&[
            ("Subject", "Other"),
            ("Time", "10:00"),
            ("Contact", "Meeting"),
        ]);
        assert!(!same_appointment(&want, &renamed));
    }

    #[test]
    fn deleted_rows_and_rows_of_other_tables_are_not_used() {
        let row = |id: u64, pairs: &[(&str, &str)]| Record {
            table: "ExtKey".into(),
            tableshort: "EK".into(),
            id,
            fields: fields(pairs),
        };
        let rows = vec![
            row(1, &[("TableShort", "MA")]),
            row(2, &[("TableShort", "KP")]),
            row(3, &[("TableShort", "MA"), ("DelCd", "1")]),
            row(4, &[("TableShort", "")]),
            row(5, &[]),
        ];
        let ids: Vec<u64> = live_rows_of(rows, "MA").iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 4, 5]);
    }

    #[tokio::test]
    async fn an_item_is_matched_by_the_crm_id_it_carries() {
        let t = TestApp::start().await;
        let id = t.crm_appointment("Marked", crate::demo::REP_ID);
        let ev = t.outlook_event("Marked", Some(id));
        let item = t.graph.event(MAILBOX, &id_of(&ev)).unwrap();
        let pass = t.pass(Entity::Appointment);
        assert_eq!(
            pass.match_crm(&id_of(&ev), &item).await.unwrap(),
            Matched::One(id)
        );
    }

    #[tokio::test]
    async fn a_claim_on_another_reps_record_is_ignored() {
        let t = TestApp::start().await;
        t.sync_rep().await;
        let foreign = t.crm_appointment("Board", "77");
        let ev = t.outlook_event("Board", Some(foreign));
        let item = t.graph.event(MAILBOX, &id_of(&ev)).unwrap();
        let pass = t.pass(Entity::Appointment);
        assert_eq!(
            pass.match_crm(&id_of(&ev), &item).await.unwrap(),
            Matched::None
        );
        assert_eq!(
            t.app.metrics.get(
                crate::telemetry::metric::FOREIGN_CRM_ID_CLAIMS,
                &[("tenant", "contoso")]
            ),
            1
        );
    }

    #[tokio::test]
    async fn an_item_is_matched_by_its_extkey_row_then_by_its_icaluid() {
        let t = TestApp::start().await;
        let pass = t.pass(Entity::Appointment);
        // Our own row, by Graph id.
        let id = t.crm_appointment("Linked", crate::demo::REP_ID);
        let ev = t.outlook_event("Linked", None);
        let gid = id_of(&ev);
        t.tenant()
            .crm
            .upsert_link(
                id,
                &cgc_crm::ExtLink {
                    ext_key: gid.clone(),
                    ext_uid: None,
                    table_short: "MA".into(),
                },
                None,
            )
            .await
            .unwrap();
        let item = t.graph.event(MAILBOX, &gid).unwrap();
        assert_eq!(pass.match_crm(&gid, &item).await.unwrap(), Matched::One(id));
        // An older connector's row, by iCalUId only.
        let old = t.crm_appointment("Migrated", crate::demo::REP_ID);
        let ev = t.outlook_event("Migrated", None);
        let uid = ev["iCalUId"].as_str().unwrap().to_string();
        t.crm.user_insert(
            "ExtKey",
            &[
                ("ExtSystem", "EWS"),
                ("ExtKey", "ews-item-1"),
                ("ExtUid", &uid),
                ("TableShort", "MA"),
                ("RecordId", &old.to_string()),
            ],
        );
        let item = t.graph.event(MAILBOX, &id_of(&ev)).unwrap();
        assert_eq!(
            pass.match_crm(&id_of(&ev), &item).await.unwrap(),
            Matched::One(old)
        );
        // Nothing at all.
        let ev = t.outlook_event("New", None);
        let item = t.graph.event(MAILBOX, &id_of(&ev)).unwrap();
        assert_eq!(
            pass.match_crm(&id_of(&ev), &item).await.unwrap(),
            Matched::None
        );
    }

    #[tokio::test]
    async fn a_contact_is_matched_by_address_and_two_persons_are_ambiguous() {
        let t = TestApp::start().await;
        let pass = t.pass(Entity::Contact);
        let c = t.graph.user_create_contact(
            MAILBOX,
            json!({"givenName": "Ana", "surname": "Lopez",
                   "emailAddresses": [{"address": "ANA@customer.test", "name": "Ana"}]}),
        );
        let one = match pass.match_crm(&id_of(&c), &c).await.unwrap() {
            Matched::One(id) => id,
            other => panic!("the seeded person matches: {other:?}"),
        };
        let two = t.crm.user_insert(
            "Person",
            &[
                ("FirstName", "Ana"),
                ("LastName", "López"),
                ("EMail", "ana@customer.test"),
            ],
        );
        match pass.match_crm(&id_of(&c), &c).await.unwrap() {
            Matched::Ambiguous(mut ids) => {
                ids.sort();
                assert_eq!(ids, vec![one.min(two), one.max(two)]);
            }
            other => panic!("two persons share the address: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_record_finds_its_item_by_extkey_row_or_by_the_mark_on_the_item() {
        let t = TestApp::start().await;
        let pass = t.pass(Entity::Appointment);
        let id = t.crm_appointment("By row", crate::demo::REP_ID);
        let ev = t.outlook_event("By row", None);
        t.tenant()
            .crm
            .upsert_link(
                id,
                &cgc_crm::ExtLink {
                    ext_key: id_of(&ev),
                    ext_uid: None,
                    table_short: "MA".into(),
                },
                None,
            )
            .await
            .unwrap();
        let (gid, _) = pass.match_graph(id).await.unwrap().expect("found by row");
        assert_eq!(gid, id_of(&ev));
        let marked = t.crm_appointment("By mark", crate::demo::REP_ID);
        let ev = t.outlook_event("By mark", Some(marked));
        let (gid, item) = pass
            .match_graph(marked)
            .await
            .unwrap()
            .expect("found by mark");
        assert_eq!(gid, id_of(&ev));
        assert_eq!(item["subject"], "By mark");
        let alone = t.crm_appointment("Alone", crate::demo::REP_ID);
        assert!(pass.match_graph(alone).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn exactly_one_unlinked_record_made_from_outlook_is_the_orphan() {
        let t = TestApp::start().await;
        let pass = t.pass(Entity::Appointment);
        let (date, time) = crate::demo::crm_slot(4, 10);
        let want = fields(&[
            ("Subject", "Lost answer"),
            ("Date", &date),
            ("Time", &time),
            ("Contact", "Meeting"),
        ]);
        let insert = || {
            t.crm.user_insert(
                "Contact",
                &[
                    ("Subject", "Lost answer"),
                    ("Date", &date),
                    ("Time", &time),
                    ("Contact", "Meeting"),
                    ("F5021", "true"),
                ],
            )
        };
        assert_eq!(pass.find_orphan("Contact", &want).await.unwrap(), None);
        let first = insert();
        assert_eq!(
            pass.find_orphan("Contact", &want).await.unwrap(),
            Some(first)
        );
        assert_eq!(
            pass.find_orphan("Task", &want).await.unwrap(),
            None,
            "only appointments carry the mark"
        );
        insert();
        assert_eq!(
            pass.find_orphan("Contact", &want).await.unwrap(),
            None,
            "two candidates: neither is adopted"
        );
    }
}
