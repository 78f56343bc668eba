//! Unit-test support: an [`App`] over both in-process simulators with no role started (and a
//! public URL that passes Graph's subscription handshake), so a test drives one step of a pass or
//! of a watch job and looks at both simulators and the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use cgc_core::{Cause, Entity};
use cgc_crm::sim::CrmSim;
use cgc_graph::sim::GraphSim;
use serde_json::{Value, json};

use crate::context::{App, Tenant};
use crate::demo::{Harness, HarnessOptions, MAILBOX, REP_ID, TENANT, crm_slot, fast_tuning};
use crate::event::EventV1;
use crate::sync::Pass;

pub(crate) struct TestApp {
    pub graph: GraphSim,
    pub crm: CrmSim,
    pub app: Arc<App>,
    _dir: tempfile::TempDir,
}

/// Answers Graph's validation handshake (echoes `validationToken`); takes notifications.
async fn endpoint(Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("validationToken") {
        Some(token) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            token.clone(),
        )
            .into_response(),
        None => axum::http::StatusCode::ACCEPTED.into_response(),
    }
}

impl TestApp {
    /// Simulators seeded with the demo rep, an App on a temporary directory and a public URL
    /// that passes the subscription handshake.
    pub(crate) async fn start() -> TestApp {
        let opts = HarnessOptions::default();
        let (graph, crm) = Harness::simulators(&opts).await.expect("simulators start");
        let dir = tempfile::tempdir().expect("temporary directory");
        let text = Harness::config_text(&graph, &crm, dir.path(), &opts);
        let config = crate::config::Config::parse(&text, &|_| None).expect("test config parses");
        let app = App::build(config, fast_tuning(1), "unit")
            .await
            .expect("app builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, axum::Router::new().fallback(endpoint)).await;
        });
        app.public_url.set(url).unwrap();
        TestApp {
            graph,
            crm,
            app,
            _dir: dir,
        }
    }

    pub(crate) fn tenant(&self) -> Arc<Tenant> {
        self.app.tenant(TENANT).expect("the test tenant").clone()
    }

    /// Every event on the queue now, taken off it.
    pub(crate) async fn drain_queue(&self) -> Vec<EventV1> {
        let mut out = Vec::new();
        while let Some(d) = self
            .app
            .queue
            .receive(Duration::from_millis(200))
            .await
            .unwrap()
        {
            out.push(crate::event::decode(&d.envelope.payload).unwrap());
            self.app.queue.ack(d).await.unwrap();
        }
        out
    }

    /// A pass over the test mailbox, as a notification would start it.
    pub fn pass(&self, entity: Entity) -> Pass<'_> {
        Pass::new(
            &self.app,
            self.app.tenant(TENANT).expect("the test tenant"),
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
