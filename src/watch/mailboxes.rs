//! The mailbox list: the reps switched on in CRM whose mailboxes are in the tenant's domains.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cgc_crm::{Cond, CondOp, Query};
use cgc_graph::GraphError;

use super::WatchError;
use super::subscriptions::ensure_subscriptions;
use crate::context::{App, Tenant};
use crate::state::MailboxRecord;
use crate::telemetry::events::RepAddressChanged;
use crate::telemetry::metric;

/// Reads the reps switched on in CRM, keeps mailboxes in the tenant's domains, subscribes new
/// ones and unsubscribes those switched off.
pub async fn refresh_mailboxes(
    app: &Arc<App>,
    t: &Arc<Tenant>,
    public_url: &str,
) -> Result<(), WatchError> {
    let wanted = enabled_mailboxes(t).await?;
    let known = app.state.mailboxes(&t.cfg.id).await?;
    for (rep_id, old, new) in address_changes(&known, &wanted) {
        RepAddressChanged {
            tenant: &t.cfg.id,
            rep_id: &rep_id,
            old: &old,
            new: &new,
        }
        .emit(&app.metrics);
    }
    let have: BTreeSet<String> = known.into_iter().map(|m| m.mailbox).collect();
    for m in have.iter().filter(|m| !wanted.contains_key(*m)) {
        switch_off(app, t, m).await?;
    }
    for (m, rep_id) in &wanted {
        app.state
            .put_mailbox(
                &t.cfg.id,
                &MailboxRecord {
                    mailbox: m.clone(),
                    rep_id: rep_id.clone(),
                },
            )
            .await?;
        // One mailbox that cannot be subscribed (e.g. 404: no such mailbox) never stops the others;
        // the subscription check retries it with a backoff.
        if let Err(e) = ensure_subscriptions(app, t, m, public_url).await {
            app.metrics.inc(
                metric::SCHEDULER_ERRORS,
                &[("tenant", &t.cfg.id), ("job", "subscriptions")],
            );
            app.metrics.note_error(
                &[("tenant", &t.cfg.id), ("mailbox", m)],
                &format!("subscriptions: {e}"),
            );
            tracing::warn!(tenant = %t.cfg.id, mailbox = %m, error = ?e, "mailbox could not be subscribed; other mailboxes go on");
        }
    }
    Ok(())
}

/// Reps whose CRM e-mail address changed since the last refresh: (rep id, old, new). The address
/// decides which mailbox is read, so every change is worth an operator's look.
fn address_changes(
    known: &[MailboxRecord],
    wanted: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (new, rep_id) in wanted {
        if rep_id.is_empty() || known.iter().any(|k| k.mailbox == *new) {
            continue;
        }
        if let Some(old) = known.iter().find(|k| k.rep_id == *rep_id) {
            out.push((rep_id.clone(), old.mailbox.clone(), new.clone()));
        }
    }
    out
}

/// The reps switched on in CRM (`ConnectorEnabled`, not deleted) with an address: (rep id,
/// lower-cased e-mail address), whatever their domain.
pub(crate) async fn switched_on_reps(
    t: &Tenant,
) -> Result<Vec<(String, String)>, cgc_crm::CrmError> {
    let reps = t
        .crm
        .query_all(
            &Query {
                table: "Rep".into(),
                conditions: vec![Cond {
                    field: "ConnectorEnabled".into(),
                    op: CondOp::Eq,
                    value: "true".into(),
                }],
                fields: vec![
                    "RepID".into(),
                    "EMail".into(),
                    "ConnectorEnabled".into(),
                    "DelCd".into(),
                ],
                max_records: Some(500),
            },
            None,
        )
        .await?;
    Ok(reps
        .into_iter()
        .filter(|r| !r.fields.get("DelCd").is_some_and(|v| v == "1"))
        .filter_map(|r| {
            let mail = r.fields.get("EMail")?.trim().to_ascii_lowercase();
            (!mail.is_empty()).then(|| (r.fields.get("RepID").cloned().unwrap_or_default(), mail))
        })
        .collect())
}

/// Mailbox (lower case) → rep id of the reps switched on, not deleted, in the tenant's domains.
async fn enabled_mailboxes(t: &Tenant) -> Result<BTreeMap<String, String>, WatchError> {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (rep_id, mail) in switched_on_reps(t).await? {
        if !t.cfg.owns_mailbox(&mail) {
            tracing::info!(tenant = %t.cfg.id, mailbox = %mail, "rep mailbox outside the tenant's domains: not synced");
            continue;
        }
        wanted.insert(mail, rep_id);
    }
    Ok(wanted)
}

/// Switched off: delete the mailbox's subscriptions, forget the mailbox.
async fn switch_off(app: &Arc<App>, t: &Tenant, m: &str) -> Result<(), WatchError> {
    for s in app.state.subscriptions().await? {
        if s.tenant == t.cfg.id && s.mailbox == *m {
            match t.graph.delete_subscription(&s.id).await {
                Ok(()) | Err(GraphError::NotFound) => {}
                Err(e) => {
                    // It expires by itself; its notifications are dropped as unknown meanwhile.
                    tracing::warn!(tenant = %t.cfg.id, mailbox = %m, subscription = %s.id, error = %e,
                        "subscription of a switched-off mailbox could not be deleted; it expires by itself");
                }
            }
            app.state.remove_subscription(&s.id).await?;
        }
    }
    app.state.remove_mailbox(&t.cfg.id, m).await?;
    tracing::info!(tenant = %t.cfg.id, mailbox = %m, "mailbox switched off: subscriptions deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{MAILBOX, REP_ID};
    use crate::testing::TestApp;

    #[tokio::test]
    async fn refresh_finds_the_seeded_rep_and_subscribes_it() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        assert!(app.state.mailboxes(&t.cfg.id).await.unwrap().is_empty());
        refresh_mailboxes(app, &t, &app.public_url()).await.unwrap();
        let boxes = app.state.mailboxes(&t.cfg.id).await.unwrap();
        assert_eq!(boxes.len(), 1);
        assert_eq!(boxes[0].mailbox, MAILBOX);
        assert_eq!(boxes[0].rep_id, REP_ID);
        assert!(
            ta.graph
                .subscriptions()
                .iter()
                .any(|s| s["resource"].as_str().is_some_and(|r| r.contains(MAILBOX))),
            "the rep's mailbox is subscribed"
        );
    }

    #[tokio::test]
    async fn refresh_skips_reps_outside_the_domains_and_switched_off_ones() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        ta.crm.user_insert(
            "Rep",
            &[
                ("RepID", "6"),
                ("EMail", "rep3@elsewhere.test"),
                ("ConnectorEnabled", "true"),
            ],
        );
        refresh_mailboxes(app, &t, &app.public_url()).await.unwrap();
        let names = |b: Vec<MailboxRecord>| b.into_iter().map(|m| m.mailbox).collect::<Vec<_>>();
        assert_eq!(
            names(app.state.mailboxes(&t.cfg.id).await.unwrap()),
            vec![MAILBOX.to_string()]
        );
        let rep = ta
            .crm
            .records("Rep")
            .into_iter()
            .find(|r| r.fields.get("EMail").map(String::as_str) == Some(MAILBOX))
            .unwrap();
        ta.crm
            .user_update("Rep", rep.id, &[("ConnectorEnabled", "false")]);
        refresh_mailboxes(app, &t, &app.public_url()).await.unwrap();
        assert!(app.state.mailboxes(&t.cfg.id).await.unwrap().is_empty());
        assert!(app.state.subscriptions().await.unwrap().is_empty());
        assert!(ta.graph.subscriptions().is_empty(), "subscriptions deleted");
    }

    #[tokio::test]
    async fn a_reps_address_change_is_logged_and_counted_once() {
        let ta = TestApp::start().await;
        let (app, t) = (&ta.app, ta.tenant());
        let old = MailboxRecord {
            mailbox: "rep1.old@contoso.com".into(),
            rep_id: REP_ID.into(),
        };
        app.state.put_mailbox(&t.cfg.id, &old).await.unwrap();
        refresh_mailboxes(app, &t, &app.public_url()).await.unwrap();
        let count = || {
            app.metrics
                .get(metric::REP_ADDRESS_CHANGES, &[("tenant", "contoso")])
        };
        assert_eq!(count(), 1, "rep 4 moved from the old address to {MAILBOX}");
        let boxes = app.state.mailboxes(&t.cfg.id).await.unwrap();
        assert_eq!(boxes.len(), 1, "the old mailbox is switched off: {boxes:?}");
        assert_eq!(boxes[0].mailbox, MAILBOX);
        refresh_mailboxes(app, &t, &app.public_url()).await.unwrap();
        assert_eq!(count(), 1, "nothing changed since");
    }

    #[test]
    fn address_changes_are_found_by_rep_id() {
        let known = vec![
            MailboxRecord {
                mailbox: "a@x".into(),
                rep_id: "1".into(),
            },
            MailboxRecord {
                mailbox: "b@x".into(),
                rep_id: "2".into(),
            },
        ];
        let wanted: BTreeMap<String, String> = [("a@x", "1"), ("b.new@x", "2"), ("c@x", "3")]
            .into_iter()
            .map(|(m, r)| (m.to_string(), r.to_string()))
            .collect();
        assert_eq!(
            address_changes(&known, &wanted),
            vec![("2".to_string(), "b@x".to_string(), "b.new@x".to_string())]
        );
    }
}
