//! The meeting messages Graph would send (expected-behaviour.md 39): Exchange mails every
//! attendee when the organizer creates an event with attendees, or changes the subject, body,
//! start, end, location, attendees or recurrence of one; an attendee removed by the change gets
//! a cancellation. The simulator sends no mail; it counts these messages per organizer mailbox
//! (`GraphSim::meeting_messages`, `GET /_sim/stats`) so tests can assert what a write would
//! have sent.

use serde_json::{Map, Value};

/// The properties whose change on an organizer's event mails the attendees.
pub(crate) const ATTENDEE_VISIBLE: &[&str] = &[
    "subject",
    "body",
    "start",
    "end",
    "location",
    "attendees",
    "recurrence",
];

fn addresses(data: &Map<String, Value>) -> Vec<String> {
    data.get("attendees")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.pointer("/emailAddress/address").and_then(Value::as_str))
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

fn organizes(data: &Map<String, Value>) -> bool {
    data.get("isOrganizer").and_then(Value::as_bool) != Some(false)
}

/// Messages a write of an event sends: `before` is `None` for a create. Only the organizer's
/// event mails anyone (`copy`: an attendee's copy of someone else's meeting).
pub(crate) fn messages(
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
    copy: bool,
) -> u64 {
    if copy || !organizes(after) {
        return 0;
    }
    let now = addresses(after);
    let Some(before) = before else {
        return now.len() as u64;
    };
    let changed = ATTENDEE_VISIBLE
        .iter()
        .any(|k| before.get(*k) != after.get(*k));
    if !changed {
        return 0;
    }
    let removed = addresses(before)
        .into_iter()
        .filter(|a| !now.contains(a))
        .count();
    (now.len() + removed) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn creates_and_visible_changes_of_an_organizers_meeting_mail_its_attendees() {
        let one = obj(json!({"subject": "a", "isOrganizer": true,
            "attendees": [{"emailAddress": {"address": "X@customer.test"}}]}));
        assert_eq!(messages(None, &one, false), 1);
        assert_eq!(messages(None, &obj(json!({"subject": "a"})), false), 0);
        assert_eq!(messages(None, &one, true), 0, "an attendee's copy");
        let mut renamed = one.clone();
        renamed.insert("subject".into(), json!("b"));
        assert_eq!(messages(Some(&one), &renamed, false), 1);
        let mut quiet = one.clone();
        quiet.insert("showAs".into(), json!("free"));
        assert_eq!(messages(Some(&one), &quiet, false), 0);
        assert_eq!(messages(Some(&one), &one, false), 0, "nothing changed");
        let mut nobody = one.clone();
        nobody.insert("attendees".into(), json!([]));
        assert_eq!(messages(Some(&one), &nobody, false), 1, "a cancellation");
        let mut attendee = renamed.clone();
        attendee.insert("isOrganizer".into(), json!(false));
        assert_eq!(messages(Some(&one), &attendee, false), 0);
    }
}
