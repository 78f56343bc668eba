//! Finding the other half of an unlinked item: the CRM-id mark on the Graph item, the ExtKey row
//! in CRM, the iCalUId (one meeting seen by several reps, an older connector's row), the e-mail
//! address of a contact, and the record an earlier try made whose link was never written.

use cgc_core::mapping::records;
use cgc_core::{CrmFields, Entity};
use cgc_crm::{Cond, CondOp, Query, Record};
use cgc_graph::crm_id_on_item;
use serde_json::Value;

use super::{Pass, SyncError};

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
        if let Some(id) = crm_id_on_item(item) {
            if let Some(f) = self.crm_get(id).await? {
                // The CRM id on an item is a claim by whoever edits the item: an appointment is
                // linked on it only when the record belongs to this rep (RepID or participant).
                let foreign =
                    self.entity == Entity::Appointment && self.out_of_scope(&f).await?.is_some();
                if foreign {
                    tracing::warn!(tenant = %self.tid(), mailbox = %self.mailbox, crm_id = id,
                        "the item claims a CRM record of another rep; claim ignored");
                    self.app
                        .metrics
                        .inc("foreign_crm_id_claims_total", &[("tenant", self.tid())]);
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
