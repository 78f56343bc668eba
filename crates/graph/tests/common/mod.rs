#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cgc_graph::sim::{self, GraphSim, GraphSimConfig};
use cgc_graph::{GraphClient, GraphConfig, RetryPolicy};
use serde_json::Value;

pub const MBX: &str = "rep1@contoso.com";

pub async fn sim() -> GraphSim {
    let addr = "127.0.0.1:0".parse().expect("addr");
    sim::start(addr, GraphSimConfig::default())
        .await
        .expect("sim starts")
}

pub fn config(sim: &GraphSim, secret: &str) -> GraphConfig {
    let d = GraphSimConfig::default();
    GraphConfig {
        login_url: sim.login_url(),
        azure_tenant_id: d.tenant_id,
        client_id: d.client_id,
        client_secret: secret.to_string().into(),
        graph_url: sim.graph_url(),
        timeout: Duration::from_secs(15),
    }
}

pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    }
}

pub fn client(sim: &GraphSim) -> GraphClient {
    GraphClient::with_policy(config(sim, "secret"), fast_policy()).expect("client")
}

pub async fn setup() -> (GraphSim, GraphClient) {
    let s = sim().await;
    let c = client(&s);
    (s, c)
}

/// How a test receiver answers the validation handshake.
#[derive(Clone, Copy, PartialEq)]
pub enum Handshake {
    Echo,
    Wrong,
    Json,
    Status500,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    /// (raw query string, parsed JSON body) of every non-validation POST.
    pub got: Arc<Mutex<Vec<(String, Value)>>>,
    /// Decoded validation tokens seen.
    pub validations: Arc<Mutex<Vec<String>>>,
    pub mode: Handshake,
    /// The next n notification POSTs are answered 500.
    pub fail_next: Arc<std::sync::atomic::AtomicU32>,
}

impl Receiver {
    pub fn bodies(&self) -> Vec<(String, Value)> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
    /// All notification items received, flattened.
    pub fn items(&self) -> Vec<Value> {
        self.bodies()
            .into_iter()
            .flat_map(|(_, b)| b["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

async fn receive(
    State(r): State<Receiver>,
    Query(params): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    body: String,
) -> Response {
    if let Some(tok) = params.get("validationToken") {
        if let Ok(mut v) = r.validations.lock() {
            v.push(tok.clone());
        }
        return match r.mode {
            Handshake::Echo => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                tok.clone(),
            )
                .into_response(),
            Handshake::Wrong => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                "not-the-token",
            )
                .into_response(),
            Handshake::Json => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                format!("{{\"token\":{tok:?}}}"),
            )
                .into_response(),
            Handshake::Status500 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    use std::sync::atomic::Ordering;
    if r.fail_next.load(Ordering::SeqCst) > 0 {
        r.fail_next.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if let Ok(mut g) = r.got.lock() {
        g.push((raw.unwrap_or_default(), v));
    }
    StatusCode::ACCEPTED.into_response()
}

pub async fn receiver(mode: Handshake) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let r = Receiver {
        base: format!("http://{addr}"),
        got: Arc::default(),
        validations: Arc::default(),
        mode,
        fail_next: Arc::default(),
    };
    let app = Router::new().fallback(receive).with_state(r.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    r
}

pub fn schema() -> cgc_graph::schema::Schema {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/protocols/graph-v1.0-schema.json"
    );
    cgc_graph::schema::Schema::load(path).expect("schema file loads")
}
