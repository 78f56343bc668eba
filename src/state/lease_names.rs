//! Names of the store leases that guard a create or an archive; their key formats live here.

use cgc_core::Entity;

/// Creating the CRM record of a meeting, by its iCalUId (one meeting seen by several synced
/// reps has one iCalUId but different mailboxes, so different partitions).
pub fn create_by_ical_uid(tenant: &str, uid: &str) -> String {
    format!("{tenant}:create:ical:{uid}")
}

/// Creating the CRM record of any other Graph item, by its Graph id.
pub fn create_from_graph(tenant: &str, entity: Entity, graph_id: &str) -> String {
    format!("{tenant}:create:{}:g:{graph_id}", entity.as_str())
}

/// Creating the Graph item of a CRM record in one mailbox.
pub fn create_from_crm(tenant: &str, entity: Entity, crm_id: u64, mailbox: &str) -> String {
    format!(
        "{tenant}:create:{}:c:{crm_id}:{}",
        entity.as_str(),
        mailbox.to_ascii_lowercase()
    )
}

/// Marking one cancelled day of a CRM series (by the master record and the day).
pub fn cancelled_day(tenant: &str, master_crm_id: u64, day: &str) -> String {
    format!("{tenant}:create:cancelled:{master_crm_id}:{day}")
}

/// Archiving one message (by its internetMessageId), from whichever mailbox.
pub fn archive(tenant: &str, internet_message_id: &str) -> String {
    format!("{tenant}:archive:{internet_message_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgc_core::Entity;

    #[test]
    fn lease_names_keep_their_formats_and_tell_kinds_and_mailboxes_apart() {
        assert_eq!(create_by_ical_uid("t", "U1"), "t:create:ical:U1");
        assert_eq!(
            create_from_graph("t", Entity::Contact, "G1"),
            format!("t:create:{}:g:G1", Entity::Contact.as_str())
        );
        assert_eq!(
            create_from_crm("t", Entity::Appointment, 7, "Rep1@Contoso.com"),
            create_from_crm("t", Entity::Appointment, 7, "rep1@contoso.com"),
            "one mailbox however it is spelt"
        );
        assert_ne!(
            create_from_crm("t", Entity::Appointment, 7, "a@x"),
            create_from_crm("t", Entity::Appointment, 7, "b@x")
        );
        assert_eq!(archive("t", "<m@x>"), "t:archive:<m@x>");
    }
}
