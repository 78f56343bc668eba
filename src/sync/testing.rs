//! Unit-test support: an [`App`] over in-process simulators with no role started, so a test
//! drives one step of a pass and looks at both simulators.

use std::sync::Arc;

use cgc_core::{Cause, Entity};
use cgc_crm::sim::CrmSim;
use cgc_graph::sim::GraphSim;
use serde_json::{Value, json};

use super::Pass;
use crate::context::{App, Tenant};
use crate::demo::{Harness, HarnessOptions, MAILBOX, REP_ID, TENANT, crm_slot, fast_tuning};

pub(crate) struct TestApp {
    pub app: Arc<App>,
    pub graph: GraphSim,
    pub crm: CrmSim,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn start() -> TestApp {
        let opts = HarnessOptions::default();
        let (graph, crm) = Harness::simulators(&opts).await.expect("simulators start");
        let dir = tempfile::tempdir().expect("temporary directory");
        let text = Harness::config_text(&graph, &crm, dir.path(), &opts);
        let config = crate::config::Config::parse(&text, &|_| None).expect("test config parses");
        let app = App::build(config, fast_tuning(1), "unit")
            .await
            .expect("app builds");
        TestApp {
            app,
            graph,
            crm,
            _dir: dir,
        }
    }

    pub fn tenant(&self) -> &Arc<Tenant> {
        self.app.tenant(TENANT).expect("the test tenant")
    }

    /// A pass over the test mailbox, as a notification would start it.
    pub fn pass(&self, entity: Entity) -> Pass<'_> {
        Pass::new(
            &self.app,
            self.tenant(),
            MAILBOX,
            entity,
            Cause::Notification,
            "unit-event",
        )
    }

    /// The test mailbox known as a synced rep (what the scheduler's mailbox refresh writes).
    pub async fn sync_rep(&self) {
        self.app
            .state
            .put_mailbox(
                TENANT,
                &crate::state::MailboxRecord {
                    mailbox: MAILBOX.into(),
                    rep_id: REP_ID.into(),
                },
            )
            .await
            .expect("store write");
    }

    /// A CRM appointment of `rep` in four days at 10:00 (CRM zone).
    pub fn crm_appointment(&self, subject: &str, rep: &str) -> u64 {
        let (date, time) = crm_slot(4, 10);
        self.crm.user_insert(
            "Contact",
            &[
                ("Contact", "Visit"),
                ("Subject", subject),
                ("Date", &date),
                ("Time", &time),
                ("EndDate", &date),
                ("EndTime", "11:00"),
                ("RepID", rep),
            ],
        )
    }

    /// An Outlook event created by the user; `crm_id` is the CRM-id mark it carries, if any.
    pub fn outlook_event(&self, subject: &str, crm_id: Option<u64>) -> Value {
        let day = (chrono::Utc::now() + chrono::Duration::days(4)).date_naive();
        let mut ev = json!({
            "subject": subject,
            "start": {"dateTime": format!("{day}T09:00:00.0000000"), "timeZone": "UTC"},
            "end": {"dateTime": format!("{day}T10:00:00.0000000"), "timeZone": "UTC"},
        });
        if let Some(id) = crm_id {
            ev["singleValueExtendedProperties"] =
                json!([{"id": cgc_graph::CRM_ID_PROPERTY, "value": id.to_string()}]);
        }
        self.graph.user_create_event(MAILBOX, ev)
    }
}

/// The `id` of a Graph item.
pub(crate) fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("item has an id").to_string()
}
