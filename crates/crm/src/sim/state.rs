//! The simulator's data and the profile's command semantics.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::answer::{Answer, AnswerStyle, build_response_with};
use super::schema::{self, FieldType, IGNORED_ON_WRITE, SYSTEM_FIELDS, TableDef};
use super::{AfterCommit, WriteLogEntry};
use crate::client::request::{BREAK_ON_ERROR_IF, ParsedRequest, parse_request};
use crate::model::{
    Command, Cond, CondOp, DEL_CD, ErrorCode, ImportField, Outcome, Query, QueryPage, Record,
    RecordId, ReturnKind, UPD_DATE, UPD_TIME, parse_record_id, record_id, seq_no, stat_no,
};

/// Station number of the records the simulator creates (until [`super::CrmSim::set_next_id`]).
pub const SIM_STAT_NO: u32 = 1;

/// How many raw request bodies the simulator keeps ([`super::CrmSim::requests`]).
pub const KEPT_REQUESTS: usize = 64;

type Fields = BTreeMap<String, String>;
type Failure = (ErrorCode, String);

pub(crate) struct State {
    pub user: String,
    pub password: String,
    pub zone: Tz,
    /// table name → id → stored fields (including UpdDate, UpdTime, DelCd).
    tables: BTreeMap<&'static str, BTreeMap<RecordId, Fields>>,
    next_stat: u32,
    next_seq: u32,
    pub write_log: Vec<WriteLogEntry>,
    locks: HashMap<RecordId, u32>,
    pub delay: Duration,
    pub unavailable_until: Option<Instant>,
    pub request_count: u64,
    /// Answers print ids padded with spaces.
    pub pad_ids: bool,
    /// `UpdTime` is stored as HH:MM (seconds dropped).
    pub minute_upd_time: bool,
    /// A fixed "now" for UpdDate/UpdTime instead of the system clock.
    pub clock: Option<DateTime<Utc>>,
    /// `<query>` answers with no rows while a rule matches.
    pub empty_rules: Vec<EmptyRule>,
    /// The next `n` write requests (on this table, `None`: any) are carried out, then answered
    /// this way.
    pub commit_fail: Option<CommitFail>,
    /// The last [`KEPT_REQUESTS`] request bodies to the XML endpoint.
    pub recent_requests: VecDeque<String>,
}

/// "Empty answers" fault: queries on `table` (`None`: every table) answer no rows, no error.
#[derive(Clone, Debug)]
pub(crate) struct EmptyRule {
    pub table: Option<String>,
    pub until: Option<Instant>,
    pub remaining: Option<u32>,
}

/// "Committed but failed" fault.
#[derive(Clone, Debug)]
pub(crate) struct CommitFail {
    pub table: Option<String>,
    pub remaining: u32,
    pub how: AfterCommit,
}

/// What [`State::handle`] produced.
pub(crate) struct Handled {
    pub xml: String,
    /// Tables of the write commands the simulator ran (authenticated requests only).
    pub written_tables: Vec<String>,
}

impl State {
    /// Consumes one failure of the "committed but failed" fault if this answer is hit by it.
    pub fn take_commit_fail(&mut self, handled: &Handled) -> Option<AfterCommit> {
        let fault = self.commit_fail.as_mut()?;
        let hit = match &fault.table {
            None => !handled.written_tables.is_empty(),
            Some(t) => handled.written_tables.iter().any(|w| w == t),
        };
        if !hit {
            return None;
        }
        let how = fault.how;
        fault.remaining = fault.remaining.saturating_sub(1);
        if fault.remaining == 0 {
            self.commit_fail = None;
        }
        Some(how)
    }
}

/// Who is writing: an API request (impersonating a rep or not) or a CRM user.
struct Writer<'a> {
    api: bool,
    impersonate: Option<&'a str>,
    rep_id: Option<String>,
}

impl State {
    pub fn new(user: String, password: String, zone: Tz) -> Self {
        State {
            user,
            password,
            zone,
            tables: schema::TABLES
                .iter()
                .map(|t| (t.name, BTreeMap::new()))
                .collect(),
            next_stat: SIM_STAT_NO,
            next_seq: 1,
            write_log: Vec::new(),
            locks: HashMap::new(),
            delay: Duration::ZERO,
            unavailable_until: None,
            request_count: 0,
            pad_ids: false,
            minute_upd_time: false,
            clock: None,
            empty_rules: Vec::new(),
            commit_fail: None,
            recent_requests: VecDeque::new(),
        }
    }

    /// UpdDate/UpdTime for a change made now.
    fn now(&self) -> (String, String) {
        let (date, time) =
            crate::time::from_utc(self.clock.unwrap_or_else(chrono::Utc::now), self.zone);
        if self.minute_upd_time {
            (date, time.chars().take(5).collect())
        } else {
            (date, time)
        }
    }

    /// The next record gets `StatNo × 2^32 + SeqNo` = `record_id(stat, seq)` (ids in use are
    /// skipped).
    pub fn set_next_id(&mut self, stat: u32, seq: u32) {
        self.next_stat = stat;
        self.next_seq = seq;
    }

    fn id_in_use(&self, id: RecordId) -> bool {
        self.tables.values().any(|rows| rows.contains_key(&id))
    }

    fn new_id(&mut self) -> RecordId {
        loop {
            let id = record_id(self.next_stat, self.next_seq);
            match self.next_seq.checked_add(1) {
                Some(n) => self.next_seq = n,
                None => {
                    self.next_stat = self.next_stat.wrapping_add(1);
                    self.next_seq = 1;
                }
            }
            if !self.id_in_use(id) && id != 0 {
                return id;
            }
        }
    }

    pub fn remember_request(&mut self, body: &str) {
        if self.recent_requests.len() >= KEPT_REQUESTS {
            self.recent_requests.pop_front();
        }
        self.recent_requests.push_back(body.to_string());
    }

    /// Replaces the empty-answers rule for `table` (`None`: all tables); `None` rule clears it.
    pub fn set_empty_rule(&mut self, table: Option<String>, rule: Option<EmptyRule>) {
        self.empty_rules.retain(|r| r.table != table);
        if let Some(rule) = rule {
            self.empty_rules.push(rule);
        }
    }

    /// Whether a query on `table` must answer no rows now (consumes one query of a counted rule).
    fn take_empty(&mut self, table: &str) -> bool {
        let now = Instant::now();
        self.empty_rules
            .retain(|r| r.until.is_none_or(|u| now < u) && r.remaining.is_none_or(|n| n > 0));
        let Some(rule) = self
            .empty_rules
            .iter_mut()
            .find(|r| r.table.as_deref().is_none_or(|t| t == table))
        else {
            return false;
        };
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        true
    }

    /// Adds a seed row: any known field, system fields included (UpdDate/UpdTime default to now).
    pub fn seed_row(&mut self, table: &str, row: &Fields) -> Result<RecordId, String> {
        let def = schema::table(table).ok_or_else(|| format!("unknown table {table}"))?;
        let mut stored = Fields::new();
        for (name, value) in row {
            if IGNORED_ON_WRITE.contains(&name.as_str()) {
                continue;
            }
            if SYSTEM_FIELDS.contains(&name.as_str()) {
                stored.insert(name.clone(), value.clone());
                continue;
            }
            let ty = def
                .field(name)
                .ok_or_else(|| format!("unknown field {table}.{name}"))?;
            if !schema::check_value(ty, value) {
                return Err(format!("invalid value {value:?} for {table}.{name}"));
            }
            stored.insert(name.clone(), stored_value(ty, value));
        }
        let (date, time) = self.now();
        stored.entry(UPD_DATE.into()).or_insert(date);
        stored.entry(UPD_TIME.into()).or_insert(time);
        stored.entry(DEL_CD.into()).or_insert_with(|| "0".into());
        let id = self.new_id();
        self.tables.entry(def.name).or_default().insert(id, stored);
        Ok(id)
    }

    pub fn record(&self, table: &str, id: RecordId) -> Option<Record> {
        let def = schema::table(table)?;
        let fields = self.tables.get(def.name)?.get(&id)?;
        Some(to_record(def, id, fields, &[]))
    }

    pub fn records(&self, table: &str) -> Vec<Record> {
        let Some(def) = schema::table(table) else {
            return Vec::new();
        };
        self.tables
            .get(def.name)
            .map(|rows| {
                rows.iter()
                    .map(|(id, f)| to_record(def, *id, f, &[]))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn lock(&mut self, id: RecordId, times: u32) {
        if times == 0 {
            self.locks.remove(&id);
        } else {
            self.locks.insert(id, times);
        }
    }

    fn take_lock(&mut self, id: RecordId) -> bool {
        match self.locks.get_mut(&id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    self.locks.remove(&id);
                }
                true
            }
            _ => false,
        }
    }

    // ----- CRM user writes (not logged) -----

    pub fn user_insert(&mut self, table: &str, fields: Fields) -> Result<RecordId, Failure> {
        let def = table_def(table)?;
        let writer = Writer {
            api: false,
            impersonate: None,
            rep_id: None,
        };
        self.insert(def, fields, &writer, "insert")
    }

    pub fn user_update(
        &mut self,
        table: &str,
        id: RecordId,
        fields: Fields,
    ) -> Result<ReturnKind, Failure> {
        let def = table_def(table)?;
        let writer = Writer {
            api: false,
            impersonate: None,
            rep_id: None,
        };
        self.update(def, id, fields, &writer, "update")
    }

    pub fn user_delete(&mut self, table: &str, id: RecordId) -> Result<ReturnKind, Failure> {
        let def = table_def(table)?;
        let writer = Writer {
            api: false,
            impersonate: None,
            rep_id: None,
        };
        self.delete(def, id, &writer)
    }

    // ----- the XML API -----

    /// Answers one request document; `Err` is a request that is not a CRM.interface request at all.
    pub fn handle(&mut self, xml: &str) -> Result<Handled, String> {
        let req = parse_request(xml).map_err(|e| e.to_string())?;
        let attrs = req.extra_attrs.clone();
        let style = AnswerStyle {
            pad_ids: self.pad_ids,
        };
        let refused = |code: ErrorCode, message: &str| Handled {
            xml: build_response_with(&attrs, Some((&code, message)), &[], style),
            written_tables: Vec::new(),
        };
        if req.user.as_deref() != Some(self.user.as_str()) || !req.pwd_matches(&self.password) {
            return Ok(refused(ErrorCode::Auth, "invalid user or password"));
        }
        let mut writer = Writer {
            api: true,
            impersonate: None,
            rep_id: None,
        };
        if req.impersonate.is_some() {
            match req.impersonate_email().and_then(|e| self.rep_by_email(e)) {
                Some(rep_id) => {
                    writer.impersonate = req.impersonate_email();
                    writer.rep_id = Some(rep_id);
                }
                None => {
                    return Ok(refused(
                        ErrorCode::Impersonate,
                        "no rep with this e-mail address",
                    ));
                }
            }
        }
        let answers = self.run_commands(&req, &writer);
        let written_tables = req
            .commands
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Insert { .. }
                        | Command::Update { .. }
                        | Command::Delete { .. }
                        | Command::Import { .. }
                )
            })
            .filter_map(|c| c.table().map(str::to_string))
            .collect();
        Ok(Handled {
            xml: build_response_with(&attrs, None, &answers, style),
            written_tables,
        })
    }

    fn rep_by_email(&self, email: &str) -> Option<String> {
        self.tables.get("Rep")?.values().find_map(|f| {
            let live = f.get(DEL_CD).map(String::as_str) != Some("1");
            let matches = f
                .get("EMail")
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(email.trim()));
            (live && matches).then(|| f.get("RepID").cloned().unwrap_or_default())
        })
    }

    fn run_commands(&mut self, req: &ParsedRequest, writer: &Writer<'_>) -> Vec<Answer> {
        let mut answers: Vec<Answer> = Vec::new();
        for (index, command) in req.commands.iter().enumerate() {
            let outcome = match command {
                Command::BreakOnError => {
                    let cond = req
                        .break_conditions
                        .get(&index)
                        .map(String::as_str)
                        .unwrap_or_default();
                    if !is_break_on_error(cond) {
                        // A condition the server cannot evaluate stops the request.
                        break;
                    }
                    if matches!(
                        answers.last(),
                        Some(Answer {
                            outcome: Outcome::Failed { .. },
                            ..
                        })
                    ) {
                        break;
                    }
                    continue;
                }
                Command::Query(q) => {
                    if self.take_empty(&q.table) {
                        // "Empty answers" fault: no rows, no error, as during a restore.
                        Outcome::Records(QueryPage {
                            records: Vec::new(),
                            more: false,
                        })
                    } else {
                        self.query(q)
                    }
                }
                Command::Insert { table, fields } => self.api_write(table, |s, def| {
                    let id = s.insert(def, fields.clone(), writer, "insert")?;
                    Ok((id, ReturnKind::Insert))
                }),
                Command::Update { table, id, fields } => self.api_write(table, |s, def| {
                    let kind = s.update(def, *id, fields.clone(), writer, "update")?;
                    Ok((*id, kind))
                }),
                Command::Delete { table, id } => self.api_write(table, |s, def| {
                    let kind = s.delete(def, *id, writer)?;
                    Ok((*id, kind))
                }),
                Command::Import { table, fields } => {
                    self.api_write(table, |s, def| s.import(def, fields, writer))
                }
            };
            answers.push(Answer {
                command: command.element(),
                outcome,
            });
        }
        answers
    }

    fn api_write(
        &mut self,
        table: &str,
        f: impl FnOnce(&mut Self, &'static TableDef) -> Result<(RecordId, ReturnKind), Failure>,
    ) -> Outcome {
        let result = table_def(table).and_then(|def| f(self, def));
        match result {
            Ok((id, kind)) => Outcome::Written {
                table: table.to_string(),
                id,
                kind,
            },
            Err((code, message)) => Outcome::Failed {
                table: table.to_string(),
                id: None,
                code,
                message,
            },
        }
    }

    fn query(&self, q: &Query) -> Outcome {
        match self.try_query(q) {
            Ok(page) => Outcome::Records(page),
            Err((code, message)) => Outcome::Failed {
                table: q.table.clone(),
                id: None,
                code,
                message,
            },
        }
    }

    fn try_query(&self, q: &Query) -> Result<QueryPage, Failure> {
        let def = table_def(&q.table)?;
        for f in &q.fields {
            readable(def, f)?;
        }
        for c in &q.conditions {
            if c.field != "id" {
                readable(def, &c.field)?;
            }
        }
        let mut matches: Vec<(RecordId, &Fields)> = Vec::new();
        for (id, fields) in self.tables.get(def.name).into_iter().flatten() {
            let mut all = true;
            for c in &q.conditions {
                if !cond_matches(*id, fields, c)? {
                    all = false;
                    break;
                }
            }
            if all {
                matches.push((*id, fields));
            }
        }
        // No order is promised: answer newest id first, so clients cannot rely on ascending ids.
        matches.reverse();
        let more = q.max_records.is_some_and(|m| matches.len() > m as usize);
        if let Some(m) = q.max_records {
            matches.truncate(m as usize);
        }
        let fields: Vec<&str> = q.fields.iter().map(String::as_str).collect();
        let records = matches
            .into_iter()
            .map(|(id, f)| to_record(def, id, f, &fields))
            .collect();
        Ok(QueryPage { records, more })
    }

    fn live(&self, def: &TableDef, id: RecordId) -> Result<&Fields, Failure> {
        match self.tables.get(def.name).and_then(|rows| rows.get(&id)) {
            Some(f) if f.get(DEL_CD).map(String::as_str) != Some("1") => Ok(f),
            _ => Err((
                ErrorCode::NotFound,
                format!("record {id} not found in {}", def.name),
            )),
        }
    }

    fn insert(
        &mut self,
        def: &'static TableDef,
        fields: Fields,
        writer: &Writer<'_>,
        command: &str,
    ) -> Result<RecordId, Failure> {
        let mut fields = checked(def, fields)?;
        if schema::owned_by_rep(def.name)
            && fields.get("RepID").is_none_or(|r| r.is_empty())
            && let Some(rep) = &writer.rep_id
        {
            fields.insert("RepID".into(), rep.clone());
        }
        let id = self.new_id();
        let (date, time) = self.now();
        let mut stored = fields.clone();
        stored.insert(UPD_DATE.into(), date);
        stored.insert(UPD_TIME.into(), time);
        stored.insert(DEL_CD.into(), "0".into());
        self.tables.entry(def.name).or_default().insert(id, stored);
        self.log(writer, command, def, id, fields);
        Ok(id)
    }

    fn update(
        &mut self,
        def: &'static TableDef,
        id: RecordId,
        fields: Fields,
        writer: &Writer<'_>,
        command: &str,
    ) -> Result<ReturnKind, Failure> {
        self.live(def, id)?;
        if self.take_lock(id) {
            return Err(locked(id));
        }
        let fields = checked(def, fields)?;
        let (date, time) = self.now();
        let Some(stored) = self
            .tables
            .get_mut(def.name)
            .and_then(|rows| rows.get_mut(&id))
        else {
            return Err((ErrorCode::NotFound, format!("record {id} not found")));
        };
        let changed = fields
            .iter()
            .any(|(k, v)| stored.get(k).map(String::as_str).unwrap_or_default() != v);
        if !changed {
            return Ok(ReturnKind::NoChange);
        }
        for (k, v) in &fields {
            stored.insert(k.clone(), v.clone());
        }
        stored.insert(UPD_DATE.into(), date);
        stored.insert(UPD_TIME.into(), time);
        self.log(writer, command, def, id, fields);
        Ok(ReturnKind::Update)
    }

    fn delete(
        &mut self,
        def: &'static TableDef,
        id: RecordId,
        writer: &Writer<'_>,
    ) -> Result<ReturnKind, Failure> {
        let Some(stored) = self.tables.get(def.name).and_then(|rows| rows.get(&id)) else {
            return Err((
                ErrorCode::NotFound,
                format!("record {id} not found in {}", def.name),
            ));
        };
        if stored.get(DEL_CD).map(String::as_str) == Some("1") {
            return Ok(ReturnKind::NoChange);
        }
        if self.take_lock(id) {
            return Err(locked(id));
        }
        let (date, time) = self.now();
        if let Some(stored) = self
            .tables
            .get_mut(def.name)
            .and_then(|rows| rows.get_mut(&id))
        {
            stored.insert(DEL_CD.into(), "1".into());
            stored.insert(UPD_DATE.into(), date);
            stored.insert(UPD_TIME.into(), time);
        }
        self.log(writer, "delete", def, id, Fields::new());
        Ok(ReturnKind::Delete)
    }

    fn import(
        &mut self,
        def: &'static TableDef,
        fields: &[ImportField],
        writer: &Writer<'_>,
    ) -> Result<(RecordId, ReturnKind), Failure> {
        let mut all = Fields::new();
        let mut matchup = Fields::new();
        for f in fields {
            if f.matchup {
                matchup.insert(f.name.clone(), f.value.clone());
            }
            all.insert(f.name.clone(), f.value.clone());
        }
        // Validate everything (and the match-up fields) before looking anything up.
        let all = checked(def, all)?;
        let matchup = checked(def, matchup)?;
        if matchup.is_empty() {
            let id = self.insert(def, all, writer, "import")?;
            return Ok((id, ReturnKind::Insert));
        }
        let found: Vec<RecordId> = self
            .tables
            .get(def.name)
            .map(|rows| {
                rows.iter()
                    .filter(|(_, f)| f.get(DEL_CD).map(String::as_str) != Some("1"))
                    .filter(|(_, f)| {
                        matchup
                            .iter()
                            .all(|(k, v)| f.get(k).map(String::as_str).unwrap_or_default() == v)
                    })
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        match found.as_slice() {
            [] => {
                let id = self.insert(def, all, writer, "import")?;
                Ok((id, ReturnKind::Insert))
            }
            [id] => {
                let id = *id;
                let kind = self.update(def, id, all, writer, "import")?;
                Ok((id, kind))
            }
            many => Err((
                ErrorCode::Value,
                format!("match-up finds {} records in {}", many.len(), def.name),
            )),
        }
    }

    fn log(
        &mut self,
        writer: &Writer<'_>,
        command: &str,
        def: &TableDef,
        id: RecordId,
        fields: Fields,
    ) {
        if !writer.api {
            return;
        }
        self.write_log.push(WriteLogEntry {
            command: command.to_string(),
            table: def.name.to_string(),
            id,
            fields,
            impersonate: writer.impersonate.map(str::to_string),
        });
    }
}

fn locked(id: RecordId) -> Failure {
    (
        ErrorCode::Locked,
        format!("record {id} is locked by another user"),
    )
}

fn table_def(table: &str) -> Result<&'static TableDef, Failure> {
    schema::table(table).ok_or_else(|| {
        (
            ErrorCode::Field,
            format!(
                "unknown table {}",
                table.chars().take(60).collect::<String>()
            ),
        )
    })
}

fn readable(def: &TableDef, field: &str) -> Result<(), Failure> {
    if SYSTEM_FIELDS.contains(&field) || def.field(field).is_some() {
        Ok(())
    } else {
        Err(unknown_field(def, field))
    }
}

fn unknown_field(def: &TableDef, field: &str) -> Failure {
    (
        ErrorCode::Field,
        format!(
            "unknown field {}.{}",
            def.name,
            field.chars().take(60).collect::<String>()
        ),
    )
}

/// Validates write fields: drops StatNo/SeqNo, rejects system and unknown fields (FIELD) and
/// values the field does not accept (VALUE).
fn checked(def: &TableDef, fields: Fields) -> Result<Fields, Failure> {
    let mut out = Fields::new();
    for (name, value) in fields {
        if IGNORED_ON_WRITE.contains(&name.as_str()) {
            continue;
        }
        if SYSTEM_FIELDS.contains(&name.as_str()) {
            return Err((
                ErrorCode::Field,
                format!("field {}.{name} is read-only", def.name),
            ));
        }
        let ty = def.field(&name).ok_or_else(|| unknown_field(def, &name))?;
        if !schema::check_value(ty, &value) {
            return Err((
                ErrorCode::Value,
                format!(
                    "{}.{name} does not accept {:?}{}",
                    def.name,
                    value.chars().take(60).collect::<String>(),
                    match ty {
                        FieldType::Catalog(values) => format!(" (catalog: {})", values.join(", ")),
                        FieldType::Date => " (expected YYYY-MM-DD)".into(),
                        FieldType::Time => " (expected HH:MM or HH:MM:SS)".into(),
                        FieldType::Bool => " (expected true or false)".into(),
                        FieldType::UInt => " (expected an unsigned integer)".into(),
                        FieldType::Text => String::new(),
                    }
                ),
            ));
        }
        let value = stored_value(ty, &value);
        out.insert(name, value);
    }
    Ok(out)
}

/// The value as CRM stores it: `Time`/`EndTime` hold HH:MM (seconds dropped).
fn stored_value(ty: FieldType, value: &str) -> String {
    match ty {
        FieldType::Time if !value.is_empty() => crate::time::parse_time(value)
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_else(|_| value.to_string()),
        _ => value.to_string(),
    }
}

fn is_break_on_error(cond: &str) -> bool {
    let normalized: String = cond
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect();
    normalized == BREAK_ON_ERROR_IF
}

/// The value of a field for reading (StatNo/SeqNo come from the id).
fn read_value(id: RecordId, fields: &Fields, name: &str) -> String {
    match name {
        "StatNo" => stat_no(id).to_string(),
        "SeqNo" => seq_no(id).to_string(),
        _ => fields.get(name).cloned().unwrap_or_default(),
    }
}

fn to_record(def: &TableDef, id: RecordId, stored: &Fields, only: &[&str]) -> Record {
    let fields = if only.is_empty() {
        let mut all = stored.clone();
        if def.field("StatNo").is_some() {
            all.insert("StatNo".into(), stat_no(id).to_string());
            all.insert("SeqNo".into(), seq_no(id).to_string());
        }
        all
    } else {
        only.iter()
            .map(|f| ((*f).to_string(), read_value(id, stored, f)))
            .collect()
    };
    Record {
        table: def.name.to_string(),
        tableshort: def.short.to_string(),
        id,
        fields,
    }
}

fn as_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn cond_matches(id: RecordId, fields: &Fields, c: &Cond) -> Result<bool, Failure> {
    if c.field == "id" {
        let want = parse_record_id(&c.value).ok_or_else(|| {
            (
                ErrorCode::Value,
                format!(
                    "id condition needs a record id, not {:?}",
                    c.value.chars().take(40).collect::<String>()
                ),
            )
        })?;
        return Ok(compare(c.op, id.cmp(&want), || false));
    }
    let have = read_value(id, fields, &c.field);
    if let (Some(a), Some(b)) = (as_int(&have), as_int(&c.value)) {
        return Ok(compare(c.op, a.cmp(&b), || false));
    }
    // Times compare as HH:MM:SS: a stored "10:15" equals "10:15:00".
    if let (Ok(a), Ok(b)) = (
        crate::time::parse_time(&have),
        crate::time::parse_time(&c.value),
    ) {
        return Ok(compare(c.op, a.cmp(&b), || false));
    }
    let a = have.to_lowercase();
    let b = c.value.to_lowercase();
    Ok(compare(c.op, a.cmp(&b), || a.contains(&b)))
}

fn compare(op: CondOp, ord: std::cmp::Ordering, contains: impl FnOnce() -> bool) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        CondOp::Eq => ord == Equal,
        CondOp::Ne => ord != Equal,
        CondOp::Lt => ord == Less,
        CondOp::Le => ord != Greater,
        CondOp::Gt => ord == Greater,
        CondOp::Ge => ord != Less,
        CondOp::Contains => ord == Equal || contains(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::request::build_request;
    use crate::client::response::parse_response;

    fn state() -> State {
        let mut s = State::new("OCSU".into(), "secret".into(), chrono_tz::Europe::Berlin);
        let rep: Fields = [("RepID", "4"), ("EMail", "Rep1@Contoso.com")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.seed_row("Rep", &rep).expect("seed");
        s
    }

    fn run(s: &mut State, commands: &[Command], imp: Option<&str>) -> Vec<Outcome> {
        let xml = build_request(commands, "OCSU", "secret", "c", imp);
        let answer = s.handle(&xml).expect("answered").xml;
        parse_response(&answer, commands).expect("parses").outcomes
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conditions_compare_case_insensitively_and_numerically() {
        let mut s = state();
        s.user_insert("Task", fields(&[("Subject", "Call ACME"), ("RepID", "10")]))
            .expect("insert");
        s.user_insert("Task", fields(&[("Subject", "other"), ("RepID", "9")]))
            .expect("insert");
        let q = |field: &str, op, value: &str| {
            Command::Query(Query::new("Task").with_cond(field, op, value))
        };
        let count = |s: &mut State, c: Command| match &run(s, &[c], None)[0] {
            Outcome::Records(p) => p.records.len(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(count(&mut s, q("Subject", CondOp::Eq, "call acme")), 1);
        assert_eq!(count(&mut s, q("Subject", CondOp::Contains, "ACM")), 1);
        assert_eq!(count(&mut s, q("Subject", CondOp::Ne, "CALL acme")), 1);
        // Numeric: "10" > "9" although "10" < "9" as text.
        assert_eq!(count(&mut s, q("RepID", CondOp::Gt, "9")), 1);
        assert_eq!(count(&mut s, q("RepID", CondOp::Ge, "09")), 2);
    }

    #[test]
    fn unknown_break_condition_stops_the_request() {
        let mut s = state();
        let xml = r#"<request user="OCSU" pwd="secret"><break if="count(//x) &gt; 0"/><insert><fields><Task><Subject>x</Subject></Task></fields></insert></request>"#;
        let answer = s.handle(xml).expect("answered").xml;
        assert!(!answer.contains("<insert>"), "{answer}");
        assert!(s.records("Task").is_empty());
    }

    #[test]
    fn impersonated_insert_gets_rep_id_and_is_logged() {
        let mut s = state();
        let cmds = vec![Command::Insert {
            table: "Contact".into(),
            fields: fields(&[("Subject", "x")]),
        }];
        let out = run(&mut s, &cmds, Some("rep1@contoso.com"));
        let Outcome::Written { id, .. } = out[0] else {
            panic!("{out:?}")
        };
        let rec = s.record("Contact", id).expect("stored");
        assert_eq!(rec.field("RepID"), Some("4"));
        assert_eq!(rec.field("DelCd"), Some("0"));
        assert_eq!(s.write_log.len(), 1);
        assert_eq!(
            s.write_log[0].impersonate.as_deref(),
            Some("rep1@contoso.com")
        );
    }
}
