//! The CRM poll's person events: which CRM persons belong in a rep's Outlook contacts
//! (`[tenants.contacts] scope`). Linked persons always do (their changes are polled as before);
//! the scope adds the persons of the companies (`"companies"`), or the persons themselves
//! (`"appointments"`), that the rep's appointments in the window are with — the CRM profile
//! names no rep on a Company and no creator on a Person, so the rep's own appointments are what
//! ties a person to a rep. A person reaches Outlook when it changes, and once when its company
//! (or it) first comes into the rep's reach, so persons unchanged for months still arrive.
//! Leaving the reach unlinks nothing: a linked person stays linked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cgc_core::Entity;
use cgc_core::mapping::records;
use cgc_crm::{Cond, CondOp, Query, Record};
use chrono::{DateTime, Utc};

use super::WatchError;
use super::crm_records::{changed_since, stamp};
use crate::config::ContactScope;
use crate::context::{App, Tenant};
use crate::event::{EventKind, EventV1, Source};
use crate::state::{ContactReach, MailboxRecord};

/// Companies or persons newly in a mailbox's reach whose persons one poll reads (the rest
/// follow on the next polls).
pub const NEW_REACH_PER_POLL: usize = 50;

/// Fields read of a person: the mapped ones and the keys the scope compares.
fn person_fields() -> Vec<String> {
    records::read_fields(Entity::Contact)
        .iter()
        .copied()
        .chain(["CoGrp", "CoNo", "PeGrp", "PeNo"])
        .map(str::to_string)
        .collect()
}

fn key(f: &BTreeMap<String, String>, a: &str, b: &str) -> Option<(String, String)> {
    let x = f.get(a).map(|v| v.trim()).unwrap_or("");
    let y = f.get(b).map(|v| v.trim()).unwrap_or("");
    (!x.is_empty() && !y.is_empty()).then(|| (x.to_string(), y.to_string()))
}

/// Pure: the companies and persons the rep's appointment records reach under `scope`
/// (e-mail records and deleted records reach nobody).
pub fn reach_of(appointments: &[Record], scope: ContactScope) -> ContactReach {
    let mut r = ContactReach::default();
    for a in appointments {
        let f = &a.fields;
        if records::is_deleted(f)
            || f.get("Contact")
                .is_some_and(|c| c.eq_ignore_ascii_case("E-mail"))
        {
            continue;
        }
        if scope.companies {
            r.companies.extend(key(f, "CoGrp", "CoNo"));
        }
        if scope.appointments {
            r.persons.extend(key(f, "PeGrp", "PeNo"));
        }
    }
    r
}

/// Pure: whether a person is in the reach.
pub fn in_reach(person: &BTreeMap<String, String>, reach: &ContactReach) -> bool {
    key(person, "CoGrp", "CoNo").is_some_and(|k| reach.companies.contains(&k))
        || key(person, "PeGrp", "PeNo").is_some_and(|k| reach.persons.contains(&k))
}

fn eq(field: &str, value: &str) -> Cond {
    Cond {
        field: field.into(),
        op: CondOp::Eq,
        value: value.into(),
    }
}

async fn query(
    t: &Tenant,
    table: &str,
    conditions: Vec<Cond>,
    fields: Vec<String>,
) -> Result<Vec<Record>, WatchError> {
    Ok(t.crm
        .query_all(
            &Query {
                table: table.into(),
                conditions,
                fields,
                max_records: Some(500),
            },
            None,
        )
        .await?)
}

/// The rep's appointment records whose date lies in the window.
async fn appointments_in_window(t: &Tenant, rep_id: &str) -> Result<Vec<Record>, WatchError> {
    let zone = t.cfg.crm_time_zone;
    let (start, end) = t.window(Utc::now());
    let (from, _) = cgc_crm::time::from_utc(start, zone);
    let (to, _) = cgc_crm::time::from_utc(end, zone);
    let conditions = vec![
        eq("RepID", rep_id),
        Cond {
            field: "Date".into(),
            op: CondOp::Ge,
            value: from,
        },
        Cond {
            field: "Date".into(),
            op: CondOp::Le,
            value: to,
        },
    ];
    let fields = ["Contact", "CoGrp", "CoNo", "PeGrp", "PeNo", "DelCd"]
        .map(str::to_string)
        .to_vec();
    query(t, Entity::Appointment.crm_table(), conditions, fields).await
}

/// What one poll found of a mailbox's persons.
pub(super) struct PersonEvents {
    pub events: Vec<EventV1>,
    /// The reach to remember once the events are on the queue (`None`: unchanged).
    reach: Option<ContactReach>,
}

impl PersonEvents {
    /// Remembers the reach read whole: called after the events were published, so a failed
    /// publish reads the new companies' persons again next time.
    pub async fn remember(
        &self,
        app: &App,
        t: &Tenant,
        m: &MailboxRecord,
    ) -> Result<(), WatchError> {
        if let Some(r) = &self.reach {
            app.state
                .put_contact_reach(&t.cfg.id, &m.mailbox, r)
                .await?;
        }
        Ok(())
    }
}

/// The person events of one mailbox's CRM poll: linked persons changed since `since`, persons
/// in the scope's reach changed since `since`, and every person of a company or person newly
/// in reach.
pub(super) async fn person_events(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    m: &MailboxRecord,
    since: Option<DateTime<Utc>>,
) -> Result<PersonEvents, WatchError> {
    let scope = t.cfg.contact_scope;
    let zone = t.cfg.crm_time_zone;
    let linked: BTreeSet<u64> = app
        .state
        .links(&t.cfg.id)
        .await?
        .into_iter()
        .filter(|l| l.entity == Entity::Contact && l.mailbox == m.mailbox)
        .map(|l| l.crm_id)
        .collect();
    let reach = if scope.adds_persons() {
        reach_of(&appointments_in_window(t, &m.rep_id).await?, scope)
    } else {
        ContactReach::default()
    };
    if linked.is_empty() && reach == ContactReach::default() {
        return Ok(PersonEvents {
            events: vec![],
            reach: None,
        });
    }
    let table = Entity::Contact.crm_table();
    let mut found: BTreeMap<u64, Record> = BTreeMap::new();
    // Without a watermark every person "changed": read the linked ones that way (as before), but
    // never every person of the CRM for the scope alone; the reach's persons are read below.
    let changed = if since.is_some() || !linked.is_empty() {
        query(
            t,
            table,
            changed_since(since, zone).into_iter().collect(),
            person_fields(),
        )
        .await?
    } else {
        Vec::new()
    };
    for r in changed {
        let recent = match (since, cgc_crm::time::changed_at(&r.fields, zone)) {
            (Some(s), Some(c)) => c >= s,
            _ => true,
        };
        if recent && (linked.contains(&r.id) || in_reach(&r.fields, &reach)) {
            found.insert(r.id, r);
        }
    }
    // Newly in reach: read their persons whole, a few keys per poll.
    let before = app.state.contact_reach(&t.cfg.id, &m.mailbox).await?;
    let mut seen = ContactReach {
        companies: reach
            .companies
            .intersection(&before.companies)
            .cloned()
            .collect(),
        persons: reach
            .persons
            .intersection(&before.persons)
            .cloned()
            .collect(),
    };
    let new_companies = reach.companies.difference(&before.companies);
    let new_persons = reach.persons.difference(&before.persons);
    let fresh: Vec<(bool, &(String, String))> = new_companies
        .map(|k| (true, k))
        .chain(new_persons.map(|k| (false, k)))
        .take(NEW_REACH_PER_POLL)
        .collect();
    for (company, (a, b)) in fresh {
        let conditions = if company {
            vec![eq("CoGrp", a), eq("CoNo", b)]
        } else {
            vec![eq("PeGrp", a), eq("PeNo", b)]
        };
        for r in query(t, table, conditions, person_fields()).await? {
            found.insert(r.id, r);
        }
        let set = if company {
            &mut seen.companies
        } else {
            &mut seen.persons
        };
        set.insert((a.clone(), b.clone()));
    }
    let events = found
        .into_values()
        .filter(|r| !records::is_deleted(&r.fields) || linked.contains(&r.id))
        .map(|r| EventV1 {
            tenant: t.cfg.id.clone(),
            mailbox: m.mailbox.clone(),
            source: Source::CrmPoll,
            kind: EventKind::CrmRecord {
                entity: Entity::Contact,
                crm_id: r.id,
                stamp: stamp(&r.fields),
                first_sync: false,
            },
            observed_at: Utc::now(),
            subscription_id: None,
        })
        .collect();
    Ok(PersonEvents {
        events,
        reach: (seen != before).then_some(seen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, f: &[(&str, &str)]) -> Record {
        Record {
            id,
            table: "Contact".into(),
            tableshort: "MA".into(),
            fields: f
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_reps_appointments_reach_their_companies_or_persons_by_scope() {
        let appts = [
            rec(
                1,
                &[
                    ("Contact", "Visit"),
                    ("CoGrp", "1"),
                    ("CoNo", "7"),
                    ("PeGrp", "1"),
                    ("PeNo", "70"),
                ],
            ),
            rec(2, &[("Contact", "E-mail"), ("CoGrp", "1"), ("CoNo", "8")]),
            rec(
                3,
                &[
                    ("Contact", "Visit"),
                    ("CoGrp", "1"),
                    ("CoNo", "9"),
                    ("DelCd", "1"),
                ],
            ),
            rec(4, &[("Contact", "Visit"), ("CoGrp", " "), ("CoNo", "")]),
        ];
        let companies = reach_of(&appts, ContactScope::default());
        assert_eq!(
            companies.companies,
            BTreeSet::from([("1".to_string(), "7".to_string())]),
            "e-mail records, deleted records and empty keys reach nobody"
        );
        assert!(companies.persons.is_empty());
        let persons = reach_of(
            &appts,
            ContactScope {
                companies: false,
                appointments: true,
            },
        );
        assert!(persons.companies.is_empty());
        assert_eq!(persons.persons.len(), 1);
        assert_eq!(
            reach_of(&appts, ContactScope::LINKED),
            ContactReach::default()
        );
    }

    #[test]
    fn a_person_is_in_reach_by_its_company_or_itself() {
        let reach = ContactReach {
            companies: BTreeSet::from([("1".to_string(), "7".to_string())]),
            persons: BTreeSet::from([("2".to_string(), "5".to_string())]),
        };
        let p = |f: &[(&str, &str)]| rec(9, f).fields;
        assert!(in_reach(&p(&[("CoGrp", "1"), ("CoNo", "7")]), &reach));
        assert!(in_reach(
            &p(&[("CoGrp", "1"), ("CoNo", "8"), ("PeGrp", "2"), ("PeNo", "5")]),
            &reach
        ));
        assert!(!in_reach(&p(&[("CoGrp", "1"), ("CoNo", "8")]), &reach));
        assert!(!in_reach(&p(&[]), &reach));
    }
}
