//! Recurring series (occurrences, exceptions, cancellations), calendar views and the
//! attendees' copies of a meeting.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

use super::shape;
use super::state::{ApiError, ApiResult, Item, Kind, Mailbox, Override, State, View};
use crate::tz::{format_graph_local, parse_naive};

/// Most occurrences expanded per series and query.
const MAX_OCCURRENCES: usize = 2000;

pub(crate) type Window = (DateTime<Utc>, DateTime<Utc>);

/// One occurrence of a series in a query window.
pub(crate) struct Occ {
    pub key: String,
    pub original_local: NaiveDateTime,
}

fn new_change_key() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!("CQAAABYAAA{}", &u[..20])
}

impl Item {
    pub fn is_series(&self) -> bool {
        self.kind == Kind::Event && self.data.get("recurrence").is_some_and(|r| r.is_object())
    }

    fn all_day(&self) -> bool {
        self.data.get("isAllDay") == Some(&Value::Bool(true))
    }

    fn local_start(&self) -> Option<NaiveDateTime> {
        parse_naive(self.data.get("start")?.get("dateTime")?.as_str()?)
    }

    /// Start and end instant of a single instance (or of a series' first occurrence).
    pub fn span(&self) -> Option<Window> {
        let all_day = self.all_day();
        let s = shape::instant(self.data.get("start")?, all_day)?;
        let e = shape::instant(self.data.get("end")?, all_day)?;
        Some((s, e))
    }

    fn duration(&self) -> chrono::Duration {
        self.span().map(|(s, e)| e - s).unwrap_or_default()
    }

    fn zone_name(&self) -> String {
        self.data
            .get("start")
            .and_then(|s| s["timeZone"].as_str())
            .unwrap_or("UTC")
            .to_string()
    }

    /// Occurrences whose original start lies before `until` (local wall clock in the series zone).
    pub fn occurrences_until(&self, until: NaiveDateTime) -> Vec<Occ> {
        let (Some(first), Some(rec)) = (self.local_start(), self.data.get("recurrence")) else {
            return Vec::new();
        };
        shape::expand(rec, first, until, MAX_OCCURRENCES)
            .into_iter()
            .map(|l| Occ {
                key: l.format("%Y%m%d").to_string(),
                original_local: l,
            })
            .collect()
    }

    /// Instant span of an occurrence (an exception may have moved it).
    fn occ_span(&self, occ: &Occ) -> Option<Window> {
        let all_day = self.all_day();
        let zone = self.zone_name();
        let start_v =
            json!({ "dateTime": format_graph_local(occ.original_local), "timeZone": zone });
        let mut s = shape::instant(&start_v, all_day)?;
        let mut e = s + self.duration();
        if let Some(ov) = self.overrides.get(&occ.key) {
            if let Some(v) = ov
                .data
                .get("start")
                .and_then(|v| shape::instant(v, all_day))
            {
                s = v;
            }
            if let Some(v) = ov.data.get("end").and_then(|v| shape::instant(v, all_day)) {
                e = v;
            }
        }
        Some((s, e))
    }

    /// Occurrences (cancelled ones included) overlapping `window`.
    pub fn occurrences_in(&self, window: Window) -> Vec<Occ> {
        let until = (window.1 + chrono::Duration::days(2)).naive_utc();
        self.occurrences_until(until)
            .into_iter()
            .filter(|o| {
                self.occ_span(o)
                    .is_some_and(|span| overlaps(span, Some(window)))
            })
            .collect()
    }

    fn find_occ(&self, key: &str) -> Option<Occ> {
        let date = NaiveDate::parse_from_str(key, "%Y%m%d").ok()?;
        let until = (date + chrono::Duration::days(1)).and_hms_opt(0, 0, 0)?;
        self.occurrences_until(until)
            .into_iter()
            .find(|o| o.key == key)
    }
}

pub(crate) fn overlaps((s, e): Window, window: Option<Window>) -> bool {
    let Some((ws, we)) = window else { return true };
    (s < we && e > ws) || (s == e && s >= ws && s < we)
}

fn occ_id(master_id: &str, key: &str) -> String {
    format!("{master_id}_{key}")
}

impl Mailbox {
    /// `(master index, occurrence key)` of an occurrence id `{masterId}_{YYYYMMDD}`.
    pub fn find_occurrence(&self, id: &str) -> Option<(usize, String)> {
        let (master, key) = id.rsplit_once('_')?;
        if key.len() != 8 || !key.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let idx = self.find(Kind::Event, master)?;
        let item = &self.items[idx];
        if !item.is_series() {
            return None;
        }
        let occ = item.find_occ(key)?;
        if item.overrides.get(&occ.key).is_some_and(|o| o.cancelled) {
            return None;
        }
        Some((idx, occ.key))
    }

    /// An occurrence or exception; `skeletal` as calendarView delta serves them (id, type,
    /// seriesMasterId, start, end, etag).
    pub fn render_occurrence(
        &self,
        master: &Item,
        occ: &Occ,
        view: &View,
        skeletal: bool,
    ) -> Value {
        let master_id = master.id(view.immutable).to_string();
        let id = occ_id(&master_id, &occ.key);
        let ov = master.overrides.get(&occ.key);
        let is_exception = ov.is_some_and(|o| !o.data.is_empty());
        let zone = master.zone_name();
        let start_local = occ.original_local;
        let end_local = start_local + master.duration();
        let mut start = json!({ "dateTime": format_graph_local(start_local), "timeZone": zone });
        let end_zone = master
            .data
            .get("end")
            .and_then(|s| s["timeZone"].as_str())
            .unwrap_or(&zone)
            .to_string();
        let mut end = json!({ "dateTime": format_graph_local(end_local), "timeZone": end_zone });
        if let Some(o) = ov {
            if let Some(v) = o.data.get("start") {
                start = v.clone();
            }
            if let Some(v) = o.data.get("end") {
                end = v.clone();
            }
        }
        let ty = if is_exception {
            "exception"
        } else {
            "occurrence"
        };
        let change_key = match ov {
            Some(o) => format!(
                "{}{:X}",
                &master.change_key[..master.change_key.len().min(20)],
                o.seq
            ),
            None => master.change_key.clone(),
        };
        let etag = format!("W/\"{change_key}\"");
        if skeletal {
            let mut m = Map::new();
            m.insert("@odata.type".into(), json!("#microsoft.graph.event"));
            m.insert("@odata.etag".into(), json!(etag));
            m.insert("id".into(), json!(id));
            m.insert("type".into(), json!(ty));
            m.insert("seriesMasterId".into(), json!(master_id));
            m.insert("start".into(), start);
            m.insert("end".into(), end);
            m.insert("isAllDay".into(), json!(master.all_day()));
            shape::render_times(&mut m, view);
            m.remove("isAllDay");
            return Value::Object(m);
        }
        let mut v = self.render(master, view);
        let Value::Object(m) = &mut v else { return v };
        if let Some(o) = ov {
            for (k, val) in &o.data {
                m.insert(k.clone(), val.clone());
            }
            if o.data.contains_key("body")
                && let Some(b) = o.data.get("body")
            {
                m.insert("bodyPreview".into(), json!(shape::preview(Some(b))));
            }
        }
        let uid = master
            .data
            .get("iCalUId")
            .and_then(Value::as_str)
            .unwrap_or("");
        let date = occ.original_local.date();
        let original_utc = shape::instant(
            &json!({ "dateTime": format_graph_local(occ.original_local), "timeZone": zone }),
            master.all_day(),
        )
        .unwrap_or_else(|| occ.original_local.and_utc());
        m.insert("id".into(), json!(id));
        m.insert("@odata.etag".into(), json!(etag));
        m.insert("changeKey".into(), json!(change_key));
        m.insert("type".into(), json!(ty));
        m.insert("seriesMasterId".into(), json!(master_id));
        m.insert("iCalUId".into(), json!(shape::occurrence_uid(uid, date)));
        m.insert(
            "originalStart".into(),
            json!(crate::util::rfc3339(original_utc)),
        );
        m.insert("recurrence".into(), Value::Null);
        m.insert("start".into(), start);
        m.insert("end".into(), end);
        if let Some(b) = ov.and_then(|o| o.data.get("body")).cloned() {
            m.insert("body".into(), b);
            shape::render_body(m, None, view);
        }
        shape::render_times(m, view);
        v
    }

    /// What a calendar view shows in `window`: single instances, occurrences and exceptions,
    /// never series masters; full items, or skeletal occurrences for calendarView delta.
    pub fn calendar_view(&self, window: Window, view: &View, skeletal: bool) -> Vec<Value> {
        let mut out = Vec::new();
        for it in self
            .items
            .iter()
            .filter(|i| i.kind == Kind::Event && !i.deleted)
        {
            if it.is_series() {
                for occ in it.occurrences_in(window) {
                    if it.overrides.get(&occ.key).is_some_and(|o| o.cancelled) {
                        continue;
                    }
                    out.push(self.render_occurrence(it, &occ, view, skeletal));
                }
            } else if it.span().is_some_and(|s| overlaps(s, Some(window))) {
                out.push(self.render(it, view));
            }
        }
        out
    }

    /// calendarView delta changes after `since`: (seq, entry) in change order.
    pub fn calendar_changes(&self, window: Window, since: u64, view: &View) -> Vec<(u64, Value)> {
        let removed = |id: &str| json!({ "@odata.type": "#microsoft.graph.event", "id": id, "@removed": { "reason": "deleted" } });
        let mut out = Vec::new();
        for it in self.items.iter().filter(|i| i.kind == Kind::Event) {
            let master_id = it.id(view.immutable);
            if it.is_series() {
                for occ in it.occurrences_in(window) {
                    let ov = it.overrides.get(&occ.key);
                    let seq = it.seq.max(ov.map(|o| o.seq).unwrap_or(0));
                    if seq <= since {
                        continue;
                    }
                    if it.deleted || ov.is_some_and(|o| o.cancelled) {
                        out.push((seq, removed(&occ_id(master_id, &occ.key))));
                    } else {
                        out.push((seq, self.render_occurrence(it, &occ, view, true)));
                    }
                }
            } else if it.seq > since {
                let inside = it.span().is_some_and(|s| overlaps(s, Some(window)));
                if it.deleted || !inside {
                    // The calendarView quirk: changes outside the window come as @removed.
                    out.push((it.seq, removed(master_id)));
                } else {
                    out.push((it.seq, self.render(it, view)));
                }
            }
        }
        out.sort_by_key(|(s, _)| *s);
        out
    }
}

impl State {
    /// GET of an occurrence id.
    pub fn get_occurrence(&self, mbx: usize, id: &str, view: &View) -> Option<Value> {
        let mb = &self.mailboxes[mbx];
        let (idx, key) = mb.find_occurrence(id)?;
        let master = &mb.items[idx];
        let occ = master.find_occ(&key)?;
        Some(mb.render_occurrence(master, &occ, view, false))
    }

    /// `/events/{id}/instances?startDateTime&endDateTime`.
    pub fn instances(&self, mbx: usize, id: &str, window: Window, view: &View) -> ApiResult {
        let mb = &self.mailboxes[mbx];
        let idx = mb
            .find(Kind::Event, id)
            .ok_or_else(|| ApiError::not_found(id))?;
        let master = &mb.items[idx];
        let list: Vec<Value> = if master.is_series() {
            master
                .occurrences_in(window)
                .iter()
                .filter(|o| !master.overrides.get(&o.key).is_some_and(|ov| ov.cancelled))
                .map(|o| mb.render_occurrence(master, o, view, false))
                .collect()
        } else {
            Vec::new()
        };
        Ok((200, json!({ "value": list })))
    }

    fn bump(&mut self, mbx: usize, idx: usize) {
        let seq = self.next_seq();
        let item = &mut self.mailboxes[mbx].items[idx];
        item.change_key = new_change_key();
        item.modified = Utc::now();
        item.seq = seq;
    }

    /// PATCH of an occurrence: it becomes an exception.
    pub fn patch_occurrence(
        &mut self,
        mbx: usize,
        id: &str,
        input: &Map<String, Value>,
        if_match: Option<&str>,
        by_app: bool,
        view: &View,
    ) -> ApiResult {
        let (idx, key) = self.mailboxes[mbx]
            .find_occurrence(id)
            .ok_or_else(|| ApiError::not_found(id))?;
        if let Some(m) = if_match.map(str::trim).filter(|m| *m != "*") {
            let current = self.get_occurrence(mbx, id, view).unwrap_or(Value::Null);
            if current["@odata.etag"].as_str() != Some(m)
                && current["changeKey"].as_str()
                    != Some(m.trim_start_matches("W/").trim_matches('"'))
            {
                return Err(ApiError::new(
                    412,
                    "ErrorIrresolvableConflict",
                    "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
                ));
            }
        }
        if input.contains_key("recurrence") {
            return Err(ApiError::bad(
                "An occurrence's recurrence can't be changed.",
            ));
        }
        let mut ov_data = self.mailboxes[mbx].items[idx]
            .overrides
            .get(&key)
            .map(|o| o.data.clone())
            .unwrap_or_default();
        for (k, v) in input {
            if (by_app && shape::read_only(k))
                || k.contains('@')
                || matches!(
                    k.as_str(),
                    "singleValueExtendedProperties"
                        | "multiValueExtendedProperties"
                        | "extensions"
                        | "attachments"
                        | "transactionId"
                )
            {
                continue;
            }
            let v = if k == "body" {
                shape::normalize_body(v)?.0
            } else {
                v.clone()
            };
            ov_data.insert(k.clone(), v);
        }
        shape::check_event_times(&ov_data)?;
        let seq = self.next_seq();
        let item = &mut self.mailboxes[mbx].items[idx];
        item.overrides.insert(
            key.clone(),
            Override {
                data: ov_data,
                cancelled: false,
                seq,
            },
        );
        // Exchange keeps exceptions inside the master item: the master's change key moves too
        // (calendarView delta still reports only the changed occurrence).
        item.change_key = new_change_key();
        item.modified = Utc::now();
        self.count_write(mbx, by_app);
        self.emit(mbx, idx, "updated", None);
        self.sync_copies(mbx, idx);
        self.get_occurrence(mbx, id, view)
            .map(|v| (200, v))
            .ok_or_else(|| ApiError::not_found(id))
    }

    /// DELETE of an occurrence: cancelled (it leaves instances and calendarView).
    pub fn cancel_occurrence(&mut self, mbx: usize, id: &str, by_app: bool) -> ApiResult {
        let (idx, key) = self.mailboxes[mbx]
            .find_occurrence(id)
            .ok_or_else(|| ApiError::not_found(id))?;
        let seq = self.next_seq();
        let item = &mut self.mailboxes[mbx].items[idx];
        let ov = item.overrides.entry(key).or_default();
        ov.cancelled = true;
        ov.seq = seq;
        item.change_key = new_change_key();
        item.modified = Utc::now();
        self.count_write(mbx, by_app);
        self.emit(mbx, idx, "updated", None);
        self.sync_copies(mbx, idx);
        Ok((204, Value::Null))
    }

    /// Mailboxes (other than the organizer's) of a meeting's attendees.
    fn internal_attendees(&self, org: usize, data: &Map<String, Value>) -> Vec<usize> {
        let mut out = Vec::new();
        for a in data
            .get("attendees")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(addr) = a["emailAddress"]["address"].as_str() else {
                continue;
            };
            if let Some(m) = self.mailbox(addr.trim())
                && m != org
                && !out.contains(&m)
            {
                out.push(m);
            }
        }
        out
    }

    /// Line 12: every internal attendee has a copy of the organizer's meeting (same iCalUId,
    /// own id, `isOrganizer = false`, no extended properties); organizer edits reach the copies;
    /// an organizer delete, or an attendee removed, marks the copy `isCancelled`.
    pub fn sync_copies(&mut self, org_mbx: usize, org_idx: usize) {
        let org = &self.mailboxes[org_mbx].items[org_idx];
        if org.kind != Kind::Event
            || org.organizer_ref.is_some()
            || org.data.get("isOrganizer") == Some(&Value::Bool(false))
        {
            return;
        }
        let key = (
            self.mailboxes[org_mbx].upn.to_ascii_lowercase(),
            org.imm_id.clone(),
        );
        let deleted = org.deleted;
        let data = org.data.clone();
        let text_body = org.text_body.clone();
        let overrides = org.overrides.clone();
        let attendees = self.internal_attendees(org_mbx, &data);
        for m in 0..self.mailboxes.len() {
            if m == org_mbx {
                continue;
            }
            let existing = self.mailboxes[m]
                .items
                .iter()
                .position(|i| !i.deleted && i.organizer_ref.as_ref() == Some(&key));
            let invited = attendees.contains(&m);
            match existing {
                None if invited && !deleted => {
                    let mut d = data.clone();
                    d.insert("isOrganizer".into(), json!(false));
                    d.insert("isCancelled".into(), json!(false));
                    d.insert(
                        "responseStatus".into(),
                        json!({ "response": "notResponded", "time": "0001-01-01T00:00:00Z" }),
                    );
                    let seq = self.next_seq();
                    let now = Utc::now();
                    let imm = super::state::new_item_id("E");
                    let rest = super::state::new_item_id("ER");
                    self.mailboxes[m].items.push(Item {
                        kind: Kind::Event,
                        imm_id: imm,
                        rest_id: rest,
                        container: String::new(),
                        data: d,
                        ext: Vec::new(),
                        links: Vec::new(),
                        change_key: new_change_key(),
                        seq,
                        deleted: false,
                        created: now,
                        modified: now,
                        transaction_id: None,
                        text_body: text_body.clone(),
                        organizer_ref: Some(key.clone()),
                        overrides: overrides.clone(),
                    });
                    let idx = self.mailboxes[m].items.len() - 1;
                    self.emit(m, idx, "created", None);
                }
                None => {}
                Some(idx) => {
                    let copy = &mut self.mailboxes[m].items[idx];
                    let mut d = data.clone();
                    for personal in [
                        "isOrganizer",
                        "responseStatus",
                        "showAs",
                        "isReminderOn",
                        "reminderMinutesBeforeStart",
                        "categories",
                        "isCancelled",
                    ] {
                        match copy.data.get(personal) {
                            Some(v) => d.insert(personal.into(), v.clone()),
                            None => d.remove(personal),
                        };
                    }
                    let cancel =
                        deleted || !invited || data.get("isCancelled") == Some(&Value::Bool(true));
                    if cancel {
                        d.insert("isCancelled".into(), json!(true));
                    }
                    if copy.data == d && copy.overrides.len() == overrides.len() && !cancel {
                        continue;
                    }
                    if cancel && copy.data.get("isCancelled") == Some(&Value::Bool(true)) {
                        continue;
                    }
                    copy.data = d;
                    copy.text_body = text_body.clone();
                    copy.overrides = overrides.clone();
                    self.bump(m, idx);
                    self.emit(m, idx, "updated", None);
                }
            }
        }
    }
}
