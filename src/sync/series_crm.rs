//! A series made in CRM (SCENARIOS.md A9): a master record and its member records become an
//! Outlook series whose pattern their days follow, made in the tenant's CRM zone; each member is
//! then linked to the occurrence of its day, and a member record nobody linked yet is reconciled
//! with that occurrence as the agreed state, so its own values reach that occurrence only.

use cgc_core::CrmFields;
use cgc_core::series;
use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};

use super::observe::Observation;
use super::series::crm_date;
use super::{Pass, Processed, SyncError, noop};

/// The Windows zone name Graph users meet for a CRM zone (CLDR's default mapping), else its IANA
/// name (Graph accepts both).
fn graph_zone_name(zone: chrono_tz::Tz) -> String {
    cgc_core::mapping::time::windows_zones()
        .find(|(_, tz)| *tz == zone)
        .map(|(w, _)| w.to_string())
        .unwrap_or_else(|| zone.name().to_string())
}

/// A create body's `start`/`end` (UTC) as wall-clock times in `zone`: a series keeps its local
/// time across daylight-saving changes only when it is made in its own zone.
fn in_zone(body: &mut Value, zone: chrono_tz::Tz, name: &str) {
    if body.get("isAllDay").and_then(Value::as_bool) == Some(true) {
        return;
    }
    for key in ["start", "end"] {
        let Some(text) = body
            .pointer(&format!("/{key}/dateTime"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some(cgc_core::mapping::time::GraphDateTime::Local(utc)) =
            cgc_core::mapping::time::parse_graph_datetime(text)
        else {
            continue;
        };
        let local = cgc_core::mapping::time::utc_to_local(utc.and_utc(), zone);
        body[key] =
            json!({"dateTime": local.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": name});
    }
}

impl Pass<'_> {
    /// A CRM member record nobody linked yet: linked to its master's occurrence of the same day
    /// (the master's series is made first when it is not), then reconciled with the occurrence as
    /// the agreed state, so the member's own values reach that occurrence only. A cancelled
    /// member cancels its occurrence.
    pub(super) async fn member_from_crm(
        &self,
        mut obs: Observation,
        fields: &CrmFields,
    ) -> Result<Processed, SyncError> {
        let Some(master_crm) = series::master_of(fields) else {
            return Ok(noop("not a series member"));
        };
        let crm_id = obs.crm_id.unwrap_or_default();
        let Some(master_link) = self
            .state()
            .link_by_crm(self.tid(), self.entity, self.mailbox, master_crm)
            .await?
        else {
            if series::is_cancelled_record(fields) {
                return Ok(noop(
                    "a cancelled member of a series not in Outlook: nothing to do",
                ));
            }
            // The master's pass makes the series and links every member, this one included.
            return Box::pin(self.from_crm(master_crm)).await;
        };
        let Some(master) = self.graph_get(&master_link.graph_id, None).await? else {
            return Ok(noop("the series is gone from Outlook; member left alone"));
        };
        let Some(day) = crm_date(fields, "Date") else {
            return Ok(noop("a series member without a date"));
        };
        let (from, to) = self.tenant.window(Utc::now());
        let instances = self
            .tenant
            .graph
            .instances(self.mailbox, &master_link.graph_id, from, to)
            .await?;
        let Some(inst) = instances
            .into_iter()
            .find(|i| series::original_day(i, &master) == Some(day))
        else {
            return Ok(noop(
                "no occurrence of the series on the member's day (cancelled or outside the window)",
            ));
        };
        let inst_id = inst
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if series::is_cancelled_record(fields) {
            self.tenant
                .graph
                .delete_event(self.mailbox, &inst_id)
                .await?;
            return Ok(Processed {
                kind: cgc_core::PlanKind::Delete,
                reason: "a cancelled series member: its occurrence is cancelled".into(),
                writes: 1,
            });
        }
        let ctx = self.context(&[&inst], None).await?;
        obs.shadow = Some(cgc_core::from_graph(self.entity, &inst, &ctx)?);
        obs.link = Some(self.new_link(crm_id, &inst_id, &inst, None));
        obs.graph_id = inst_id;
        obs.graph = Some(inst);
        obs.matched = true;
        self.settle(obs).await
    }

    /// After a CRM master's pass: each member record not linked yet is linked to its occurrence.
    pub(super) async fn link_crm_members(&self, master_crm: u64) -> Result<usize, SyncError> {
        if self
            .state()
            .link_by_crm(self.tid(), self.entity, self.mailbox, master_crm)
            .await?
            .is_none()
        {
            return Ok(0);
        }
        let mut writes = 0;
        for r in self.crm_members(master_crm).await? {
            let linked = self
                .state()
                .link_by_crm(self.tid(), self.entity, self.mailbox, r.id)
                .await?
                .is_some();
            if !linked {
                writes += Box::pin(self.from_crm(r.id)).await?.writes;
            }
        }
        Ok(writes)
    }

    /// The create body of a CRM master's series: the mapped fields in the tenant's CRM zone and
    /// the pattern its own and its members' days follow; plus the days of that pattern no
    /// record stands for (to cancel once the series exists).
    pub(super) async fn series_body(
        &self,
        crm_id: u64,
        fields: &CrmFields,
        body: &Value,
    ) -> Result<(Value, Vec<NaiveDate>), SyncError> {
        let mut days: Vec<NaiveDate> = self
            .crm_members(crm_id)
            .await?
            .iter()
            .filter_map(|r| crm_date(&r.fields, "Date"))
            .chain(crm_date(fields, "Date"))
            .collect();
        days.sort();
        days.dedup();
        let zone = self.tenant.cfg.crm_time_zone;
        let name = graph_zone_name(zone);
        let Some((recurrence, extra)) = series::infer_recurrence(&days, &name) else {
            return Ok((body.clone(), Vec::new()));
        };
        let mut body = body.clone();
        in_zone(&mut body, zone, &name);
        body["recurrence"] = recurrence;
        Ok((body, extra))
    }

    /// Cancels the occurrences of a just-made series on `days` (an irregular CRM series).
    pub(super) async fn trim_series(
        &self,
        created: &Value,
        days: &[NaiveDate],
    ) -> Result<usize, SyncError> {
        let (Some(id), false) = (created.get("id").and_then(Value::as_str), days.is_empty()) else {
            return Ok(0);
        };
        let (from, to) = self.tenant.window(Utc::now());
        let mut writes = 0;
        for inst in self
            .tenant
            .graph
            .instances(self.mailbox, id, from, to)
            .await?
        {
            let day = series::original_day(&inst, created);
            if day.is_some_and(|d| days.contains(&d))
                && let Some(occ) = inst.get("id").and_then(Value::as_str)
            {
                self.tenant.graph.delete_event(self.mailbox, occ).await?;
                writes += 1;
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_made_in_the_crm_zone() {
        let mut body = json!({"isAllDay": false,
            "start": {"dateTime": "2030-07-01T07:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2030-07-01T07:30:00.0000000", "timeZone": "UTC"}});
        let zone = chrono_tz::Europe::Berlin;
        let name = graph_zone_name(zone);
        assert_eq!(name, "W. Europe Standard Time");
        in_zone(&mut body, zone, &name);
        assert_eq!(body["start"]["dateTime"], "2030-07-01T09:00:00");
        assert_eq!(body["end"]["timeZone"], "W. Europe Standard Time");
        let mut all_day = json!({"isAllDay": true, "start": {"dateTime": "2030-07-01T00:00:00", "timeZone": "UTC"}});
        in_zone(&mut all_day, zone, &name);
        assert_eq!(all_day["start"]["dateTime"], "2030-07-01T00:00:00");
        assert_eq!(graph_zone_name(chrono_tz::Europe::Vienna), "Europe/Vienna");
    }
}
