//! Values exchanged with CRM.interface: records, queries, commands and their outcomes.

use std::collections::BTreeMap;
use std::fmt;

/// A CRM record id: `StatNo × 2^32 + SeqNo`.
pub type RecordId = u64;

/// Builds a record id from its station number and sequence number.
pub fn record_id(stat_no: u32, seq_no: u32) -> RecordId {
    (u64::from(stat_no) << 32) | u64::from(seq_no)
}

/// The station number (`StatNo`) part of a record id.
pub fn stat_no(id: RecordId) -> u32 {
    (id >> 32) as u32
}

/// The sequence number (`SeqNo`) part of a record id.
pub fn seq_no(id: RecordId) -> u32 {
    (id & 0xFFFF_FFFF) as u32
}

/// Parses a record id as printed by CRM.interface (decimal, surrounding whitespace allowed).
pub fn parse_record_id(text: &str) -> Option<RecordId> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// One record as CRM.interface returns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Record {
    /// XML table name, e.g. `Contact`.
    pub table: String,
    /// Two-letter info area, e.g. `MA`.
    pub tableshort: String,
    pub id: RecordId,
    pub fields: BTreeMap<String, String>,
}

impl Record {
    /// The value of a field, if the answer carried it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// `true` when the record carries `DelCd=1` (deleted in CRM).
    pub fn is_deleted(&self) -> bool {
        self.field(DEL_CD).map(str::trim) == Some("1")
    }
}

/// System field: date of the last change (CRM time zone).
pub const UPD_DATE: &str = "UpdDate";
/// System field: time of the last change (CRM time zone).
pub const UPD_TIME: &str = "UpdTime";
/// System field: `1` once the record is deleted.
pub const DEL_CD: &str = "DelCd";
/// The `ExtSystem` value of every link row the connector writes.
pub const EXT_SYSTEM_GRAPH: &str = "GraphApi";
/// The XML table name of link rows.
pub const EXT_KEY_TABLE: &str = "ExtKey";

/// The external key a CRM record is linked to.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtLink {
    /// The Graph immutable id.
    pub ext_key: String,
    /// The iCalUId (events) or internetMessageId (archived e-mails), where there is one.
    pub ext_uid: Option<String>,
    /// Two-letter info area of the linked record, e.g. `MA`.
    pub table_short: String,
}

/// One `ExtKey` row read back from CRM.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtKeyRow {
    /// Id of the `ExtKey` row itself.
    pub id: RecordId,
    /// `GraphApi` for the connector's own rows; other values are older connectors' rows.
    pub ext_system: String,
    pub ext_key: String,
    pub ext_uid: Option<String>,
    pub table_short: String,
    /// Id of the linked record.
    pub record_id: RecordId,
}

/// A `<query>` on one table.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub table: String,
    /// ANDed conditions.
    pub conditions: Vec<Cond>,
    /// Fields to return; empty means all fields.
    pub fields: Vec<String>,
    pub max_records: Option<u32>,
}

impl Query {
    /// A query on `table` with no condition, all fields and no cap.
    pub fn new(table: impl Into<String>) -> Self {
        Query {
            table: table.into(),
            conditions: Vec::new(),
            fields: Vec::new(),
            max_records: None,
        }
    }

    /// Adds a condition (builder style).
    pub fn with_cond(
        mut self,
        field: impl Into<String>,
        op: CondOp,
        value: impl Into<String>,
    ) -> Self {
        self.conditions.push(Cond {
            field: field.into(),
            op,
            value: value.into(),
        });
        self
    }

    /// Sets the fields to return (builder style).
    pub fn with_fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| (*f).to_string()).collect();
        self
    }

    /// Sets `maxrecords` (builder style).
    pub fn with_max_records(mut self, max: u32) -> Self {
        self.max_records = Some(max);
        self
    }
}

/// One `<cond>`; the pseudo field `id` selects by record id.
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    pub field: String,
    pub op: CondOp,
    pub value: String,
}

/// Condition operators of the profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CondOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `*=`: the field contains the value.
    Contains,
}

impl CondOp {
    /// The operator as written in `op="…"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CondOp::Eq => "=",
            CondOp::Ne => "!=",
            CondOp::Lt => "<",
            CondOp::Le => "<=",
            CondOp::Gt => ">",
            CondOp::Ge => ">=",
            CondOp::Contains => "*=",
        }
    }

    /// Parses `op="…"`.
    pub fn parse(op: &str) -> Option<CondOp> {
        Some(match op.trim() {
            "=" => CondOp::Eq,
            "!=" => CondOp::Ne,
            "<" => CondOp::Lt,
            "<=" => CondOp::Le,
            ">" => CondOp::Gt,
            ">=" => CondOp::Ge,
            "*=" => CondOp::Contains,
            _ => return None,
        })
    }
}

/// The records of one `<query>` answer.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryPage {
    pub records: Vec<Record>,
    /// The answer was capped by `maxrecords`: more records match.
    pub more: bool,
}

/// One command inside a `<request>`.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Query(Query),
    Insert {
        table: String,
        fields: BTreeMap<String, String>,
    },
    Update {
        table: String,
        id: RecordId,
        fields: BTreeMap<String, String>,
    },
    Delete {
        table: String,
        id: RecordId,
    },
    Import {
        table: String,
        fields: Vec<ImportField>,
    },
    /// `<break if="/root/response/*[last()]//return[@type='error']"/>`: stop the request when the
    /// previous command failed. Has no answer of its own.
    BreakOnError,
}

impl Command {
    /// The element name of the command (`query`, `insert`, …, `break`).
    pub fn element(&self) -> &'static str {
        match self {
            Command::Query(_) => "query",
            Command::Insert { .. } => "insert",
            Command::Update { .. } => "update",
            Command::Delete { .. } => "delete",
            Command::Import { .. } => "import",
            Command::BreakOnError => "break",
        }
    }

    /// The table the command works on (`None` for a break).
    pub fn table(&self) -> Option<&str> {
        match self {
            Command::Query(q) => Some(&q.table),
            Command::Insert { table, .. }
            | Command::Update { table, .. }
            | Command::Delete { table, .. }
            | Command::Import { table, .. } => Some(table),
            Command::BreakOnError => None,
        }
    }
}

/// One field of an `<import>`; `matchup` fields find the record to update.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportField {
    pub name: String,
    pub value: String,
    pub matchup: bool,
}

impl ImportField {
    pub fn new(name: impl Into<String>, value: impl Into<String>, matchup: bool) -> Self {
        ImportField {
            name: name.into(),
            value: value.into(),
            matchup,
        }
    }
}

/// What one command did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Records(QueryPage),
    Written {
        table: String,
        id: RecordId,
        kind: ReturnKind,
    },
    Failed {
        table: String,
        id: Option<RecordId>,
        code: ErrorCode,
        message: String,
    },
}

/// `return/@type` of a successful write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReturnKind {
    Insert,
    Update,
    Delete,
    NoChange,
}

impl ReturnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnKind::Insert => "insert",
            ReturnKind::Update => "update",
            ReturnKind::Delete => "delete",
            ReturnKind::NoChange => "nochange",
        }
    }
}

/// `return/@code` of a failed command (or request).
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorCode {
    Auth,
    Impersonate,
    NotFound,
    Field,
    Value,
    Locked,
    Rights,
    Other(String),
}

impl ErrorCode {
    /// The code as written in `code="…"`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Auth => "AUTH",
            ErrorCode::Impersonate => "IMPERSONATE",
            ErrorCode::NotFound => "NOTFOUND",
            ErrorCode::Field => "FIELD",
            ErrorCode::Value => "VALUE",
            ErrorCode::Locked => "LOCKED",
            ErrorCode::Rights => "RIGHTS",
            ErrorCode::Other(s) => s,
        }
    }

    /// Parses `code="…"` (letter case ignored; unknown codes are kept as `Other`).
    pub fn parse(code: &str) -> ErrorCode {
        match code.trim().to_ascii_uppercase().as_str() {
            "AUTH" => ErrorCode::Auth,
            "IMPERSONATE" => ErrorCode::Impersonate,
            "NOTFOUND" => ErrorCode::NotFound,
            "FIELD" => ErrorCode::Field,
            "VALUE" => ErrorCode::Value,
            "LOCKED" => ErrorCode::Locked,
            "RIGHTS" => ErrorCode::Rights,
            _ => ErrorCode::Other(code.trim().to_string()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `true` for names usable as XML table or field names (ASCII letter or `_` first, then letters,
/// digits, `_`, `-`, `.`).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_id_splits_into_stat_and_seq_no() {
        let id = record_id(1, 98);
        assert_eq!(id, 4_294_967_394);
        assert_eq!(stat_no(id), 1);
        assert_eq!(seq_no(id), 98);
        assert_eq!(record_id(u32::MAX, u32::MAX), u64::MAX);
    }

    #[test]
    fn parse_record_id_trims_and_rejects_garbage() {
        assert_eq!(parse_record_id(" 4294967394\n"), Some(4_294_967_394));
        assert_eq!(parse_record_id("-1"), None);
        assert_eq!(parse_record_id("12a"), None);
        assert_eq!(parse_record_id(""), None);
        assert_eq!(parse_record_id("18446744073709551616"), None);
    }

    #[test]
    fn error_code_parse_knows_profile_codes() {
        assert_eq!(ErrorCode::parse("locked"), ErrorCode::Locked);
        assert_eq!(ErrorCode::parse("NOTFOUND"), ErrorCode::NotFound);
        assert_eq!(ErrorCode::parse("XYZ"), ErrorCode::Other("XYZ".into()));
    }

    #[test]
    fn valid_names() {
        assert!(is_valid_name("Contact"));
        assert!(is_valid_name("A031Location"));
        assert!(!is_valid_name("1abc"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a<b"));
        assert!(!is_valid_name(""));
    }
}
