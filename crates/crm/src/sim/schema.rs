//! The tables and fields of the profile, with the value rules the simulator enforces.

use crate::model::{DEL_CD, UPD_DATE, UPD_TIME};

/// How a field's values are checked on write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldType {
    Text,
    /// `YYYY-MM-DD`
    Date,
    /// `HH:MM` or `HH:MM:SS`
    Time,
    /// `true` / `false`
    Bool,
    /// Unsigned decimal integer.
    UInt,
    /// Closed catalog: only these texts.
    Catalog(&'static [&'static str]),
}

/// One table of the profile.
#[derive(Debug)]
pub struct TableDef {
    pub name: &'static str,
    pub short: &'static str,
    pub fields: &'static [(&'static str, FieldType)],
}

impl TableDef {
    pub fn field(&self, name: &str) -> Option<FieldType> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
    }
}

/// Read-only system fields of every table.
pub const SYSTEM_FIELDS: &[&str] = &[UPD_DATE, UPD_TIME, DEL_CD];
/// Fields ignored inside writes (the id says them already).
pub const IGNORED_ON_WRITE: &[&str] = &["StatNo", "SeqNo"];

pub const TASK_STATUS: &[&str] = &["Open", "In progress", "Completed", "Cancelled", "On hold"];
pub const PRIORITY: &[&str] = &["Low", "Normal", "High"];
pub const SHOW_AS: &[&str] = &[
    "Free",
    "Tentative",
    "Busy",
    "Out of office",
    "Working elsewhere",
];
pub const REMINDER_UNIT: &[&str] = &["min", "h", "d"];

use FieldType::{Bool, Catalog, Date, Text, Time, UInt};

pub static TABLES: &[TableDef] = &[
    TableDef {
        name: "Rep",
        short: "ID",
        fields: &[
            ("RepID", Text),
            ("Name", Text),
            ("EMail", Text),
            ("ConnectorEnabled", Bool),
            ("SyncAppointments", Bool),
            ("SyncContacts", Bool),
            ("SyncTasks", Bool),
            ("SyncEmails", Bool),
        ],
    },
    TableDef {
        name: "Company",
        short: "FI",
        fields: &[
            ("CoGrp", Text),
            ("CoNo", Text),
            ("Company", Text),
            ("EMail", Text),
        ],
    },
    TableDef {
        name: "Person",
        short: "KP",
        fields: &[
            ("CoGrp", Text),
            ("CoNo", Text),
            ("PeGrp", Text),
            ("PeNo", Text),
            ("FirstName", Text),
            ("LastName", Text),
            ("EMail", Text),
            ("PhoneBusiness", Text),
            ("PhoneMobile", Text),
            ("JobTitle", Text),
            ("Company", Text),
        ],
    },
    TableDef {
        name: "Contact",
        short: "MA",
        fields: &[
            ("StatNo", UInt),
            ("SeqNo", UInt),
            ("CoGrp", Text),
            ("CoNo", Text),
            ("PeGrp", Text),
            ("PeNo", Text),
            ("Company", Text),
            ("Person", Text),
            ("Contact", Text),
            ("Status", Text),
            ("Date", Date),
            ("Time", Time),
            ("Duration", Text),
            ("Unit", Text),
            ("EndDate", Date),
            ("EndTime", Time),
            ("Subject", Text),
            ("Text", Text),
            ("Priority", Catalog(PRIORITY)),
            ("RepID", Text),
            ("Rep", Text),
            ("Private", Bool),
            ("ParticipantID", Text),
            ("Participants", Text),
            ("IsMasterContact", Bool),
            ("IsSerialContact", Bool),
            ("ContactStatNo", Text),
            ("ContactSeqNo", Text),
            ("ReminderDur", Text),
            ("ReminderUnit", Catalog(REMINDER_UNIT)),
            ("ShowAs", Catalog(SHOW_AS)),
            ("ConnectorMissingparticipants", Bool),
            ("ConnectorPublished", Bool),
            ("ConnectorDeleted", Bool),
            ("A031Location", Text),
            ("MissingParticipants", Text),
            ("F5021", Text),
            ("F5044", Text),
        ],
    },
    TableDef {
        name: "Task",
        short: "A1",
        fields: &[
            ("Subject", Text),
            ("Text", Text),
            ("RepID", Text),
            ("StartDate", Date),
            ("DueDate", Date),
            ("Status", Catalog(TASK_STATUS)),
            ("Priority", Catalog(PRIORITY)),
            ("CompletedDate", Date),
        ],
    },
    TableDef {
        name: "ExtKey",
        short: "XK",
        fields: &[
            ("ExtSystem", Text),
            ("ExtKey", Text),
            ("ExtUid", Text),
            ("TableShort", Text),
            ("RecordId", UInt),
        ],
    },
];

/// The table with this XML name.
pub fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

/// The two-letter info area of a table.
pub fn table_short(name: &str) -> Option<&'static str> {
    table(name).map(|t| t.short)
}

/// Tables whose inserts belong to the impersonated rep when they name no `RepID`.
pub fn owned_by_rep(table: &str) -> bool {
    matches!(table, "Contact" | "Task")
}

/// Checks a value against a field type; an empty value is always accepted.
pub fn check_value(ty: FieldType, value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    match ty {
        Text => true,
        Date => crate::time::parse_date(value).is_ok(),
        Time => crate::time::parse_time(value).is_ok(),
        Bool => matches!(value, "true" | "false"),
        UInt => crate::model::parse_record_id(value).is_some(),
        Catalog(values) => values.contains(&value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_profile_shorts() {
        assert_eq!(table_short("Contact"), Some("MA"));
        assert_eq!(table_short("ExtKey"), Some("XK"));
        assert_eq!(table_short("Task"), Some("A1"));
        assert_eq!(table_short("contact"), None);
    }

    #[test]
    fn value_checks() {
        assert!(check_value(Date, "2026-11-20"));
        assert!(!check_value(Date, "2026-13-01"));
        assert!(check_value(Time, "09:30"));
        assert!(!check_value(Time, "9:30"));
        assert!(check_value(Bool, "false"));
        assert!(!check_value(Bool, "yes"));
        assert!(check_value(Catalog(TASK_STATUS), "On hold"));
        assert!(!check_value(Catalog(TASK_STATUS), "Waiting"));
        assert!(check_value(Catalog(REMINDER_UNIT), ""));
    }
}
