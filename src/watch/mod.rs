//! How changes are found: the scheduler's jobs (and the worker's lifecycle events) call in here.
//!
//! - `mailboxes`: the mailbox list, read from the reps switched on in CRM.
//! - `subscriptions`: Graph subscriptions per mailbox: create the missing, renew the due.
//! - `lifecycle`: lifecycle notifications (renew, re-create, catch up).
//! - `delta`: Graph → CRM changes by delta query (safety catch-up, To Do poll) onto the queue.
//! - `crm_poll`: CRM → Graph changes by polling from a watermark onto the queue.
//! - `error`: [`WatchError`], whether trying again later can help.

pub mod crm_poll;
pub mod delta;
pub mod error;
pub mod lifecycle;
pub mod mailboxes;
pub mod subscriptions;

pub use error::WatchError;

use crate::config::Direction;

/// Whether changes made in Graph are read for an entity with this direction.
fn graph_reads(dir: Direction) -> bool {
    matches!(dir, Direction::Both | Direction::GraphToCrm)
}

/// An App over both simulators with no role started, for the watch side's own tests.
#[cfg(test)]
pub(crate) mod test_app {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::Query;
    use axum::response::{IntoResponse, Response};
    use cgc_crm::sim::CrmSim;
    use cgc_graph::sim::GraphSim;

    use crate::context::{App, Tenant};
    use crate::demo::{Harness, HarnessOptions};
    use crate::event::EventV1;

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
            let (graph, crm) = Harness::simulators(&opts).await.unwrap();
            let dir = tempfile::tempdir().unwrap();
            let text = Harness::config_text(&graph, &crm, dir.path(), &opts);
            let config = crate::config::Config::parse(&text, &|_| None).unwrap();
            let app = App::build(config, crate::demo::fast_tuning(1), "unit")
                .await
                .unwrap();
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
            self.app.tenant(crate::demo::TENANT).unwrap().clone()
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
    }
}
