//! Rules about CRM records as data: which fields are read per entity, when a record counts as
//! deleted, and which appointment records the connector syncs for a mailbox.

use crate::model::{CrmFields, Entity};

/// The CRM fields read for each entity.
pub fn read_fields(e: Entity) -> &'static [&'static str] {
    match e {
        Entity::Appointment | Entity::Email => &[
            "Contact",
            "Status",
            "Date",
            "Time",
            "EndDate",
            "EndTime",
            "Subject",
            "Text",
            "Priority",
            "RepID",
            "Private",
            "Participants",
            "MissingParticipants",
            "ConnectorMissingparticipants",
            "IsMasterContact",
            "IsSerialContact",
            "ContactStatNo",
            "ContactSeqNo",
            "ReminderDur",
            "ReminderUnit",
            "ShowAs",
            "ConnectorPublished",
            "ConnectorDeleted",
            "A031Location",
            "F5021",
            "UpdDate",
            "UpdTime",
            "DelCd",
        ],
        Entity::Contact => &[
            "FirstName",
            "LastName",
            "EMail",
            "PhoneBusiness",
            "PhoneMobile",
            "JobTitle",
            "Company",
            "UpdDate",
            "UpdTime",
            "DelCd",
        ],
        Entity::Task => &[
            "Subject",
            "Text",
            "RepID",
            "StartDate",
            "DueDate",
            "Status",
            "Priority",
            "CompletedDate",
            "UpdDate",
            "UpdTime",
            "DelCd",
        ],
    }
}

/// A record read back with `DelCd = 1` is deleted; one that cannot be read is only absent.
pub fn is_deleted(fields: &CrmFields) -> bool {
    fields.get("DelCd").is_some_and(|v| v.trim() == "1")
}

fn is_true(fields: &CrmFields, key: &str) -> bool {
    fields
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn is_email_record(fields: &CrmFields) -> bool {
    fields
        .get("Contact")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("E-mail"))
}

/// Why an appointment record that is not linked yet is not mirrored to Outlook, if it is not:
/// e-mail records, records published or deleted by another connector, and (when the Outlook side
/// is not seen in this pass) records this connector made from an Outlook event whose link is not
/// written yet (`F5021`; the Outlook side finishes that link).
pub fn unlinked_appointment_skipped(fields: &CrmFields, graph_seen: bool) -> Option<&'static str> {
    if is_email_record(fields)
        || is_true(fields, "ConnectorPublished")
        || is_true(fields, "ConnectorDeleted")
    {
        return Some("CRM record is not an appointment the connector syncs");
    }
    if !graph_seen && is_true(fields, "F5021") {
        return Some(
            "CRM record was made from an Outlook event and is not linked yet; not mirrored back",
        );
    }
    None
}

/// Why a linked appointment record has left the scope of the mailbox of `mailbox` (rep
/// `rep_id`), if it has: it became an e-mail record, another connector publishes it, or it now
/// belongs to another rep and neither lists this mailbox nor this rep among its participants.
/// `rep_id` is `None` when the mailbox is not (or no longer) known as a synced rep.
pub fn left_scope(fields: &CrmFields, mailbox: &str, rep_id: Option<&str>) -> Option<&'static str> {
    if is_email_record(fields) {
        return Some("the CRM record became an e-mail record");
    }
    if fields
        .get("ConnectorPublished")
        .is_some_and(|v| v.trim() == "true")
    {
        return Some("the CRM record is published by another connector");
    }
    let rep = rep_id?;
    let owner = fields.get("RepID").map(|s| s.trim()).unwrap_or("");
    if owner.is_empty() || owner == rep {
        return None;
    }
    let listed = |k: &str| {
        fields.get(k).is_some_and(|v| {
            v.split(';')
                .any(|p| p.trim().eq_ignore_ascii_case(mailbox) || p.trim() == rep)
        })
    };
    if listed("Participants") || listed("ParticipantID") {
        return None;
    }
    Some("the CRM record now belongs to a rep this mailbox does not sync")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> CrmFields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_entity_reads_its_change_time_and_deletion_mark() {
        for e in [
            Entity::Appointment,
            Entity::Contact,
            Entity::Task,
            Entity::Email,
        ] {
            let f = read_fields(e);
            for k in ["UpdDate", "UpdTime", "DelCd"] {
                assert!(f.contains(&k), "{e:?} reads {k}");
            }
        }
        assert!(read_fields(Entity::Appointment).contains(&"F5021"));
        assert!(read_fields(Entity::Contact).contains(&"EMail"));
    }

    #[test]
    fn only_delcd_one_is_deleted() {
        assert!(is_deleted(&rec(&[("DelCd", "1")])));
        assert!(is_deleted(&rec(&[("DelCd", " 1 ")])));
        assert!(!is_deleted(&rec(&[("DelCd", "0")])));
        assert!(!is_deleted(&rec(&[("DelCd", "")])));
        assert!(!is_deleted(&rec(&[])), "a record without DelCd is live");
    }

    #[test]
    fn unlinked_records_of_other_kinds_or_connectors_are_skipped() {
        let plain = rec(&[("Contact", "Visit")]);
        assert_eq!(unlinked_appointment_skipped(&plain, false), None);
        for f in [
            rec(&[("Contact", "e-mail")]),
            rec(&[("ConnectorPublished", "true")]),
            rec(&[("ConnectorDeleted", "TRUE")]),
        ] {
            assert!(unlinked_appointment_skipped(&f, true).is_some(), "{f:?}");
        }
        let made_here = rec(&[("F5021", "true")]);
        assert!(unlinked_appointment_skipped(&made_here, false).is_some());
        assert_eq!(
            unlinked_appointment_skipped(&made_here, true),
            None,
            "the Outlook side is here: the pass links it"
        );
    }

    #[test]
    fn a_record_of_another_rep_leaves_scope_unless_this_mailbox_takes_part() {
        let mine = rec(&[("RepID", "4")]);
        assert_eq!(left_scope(&mine, "rep1@contoso.com", Some("4")), None);
        let other = rec(&[("RepID", "7")]);
        assert!(left_scope(&other, "rep1@contoso.com", Some("4")).is_some());
        assert_eq!(
            left_scope(&other, "rep1@contoso.com", None),
            None,
            "unknown rep: nothing to compare with"
        );
        let listed = rec(&[("RepID", "7"), ("Participants", "x@y.de; REP1@contoso.com")]);
        assert_eq!(left_scope(&listed, "rep1@contoso.com", Some("4")), None);
        let by_id = rec(&[("RepID", "7"), ("ParticipantID", "9;4")]);
        assert_eq!(left_scope(&by_id, "rep1@contoso.com", Some("4")), None);
        assert!(left_scope(&rec(&[("Contact", "E-mail")]), "a@b", Some("4")).is_some());
        assert!(left_scope(&rec(&[("ConnectorPublished", "true")]), "a@b", Some("4")).is_some());
    }
}
