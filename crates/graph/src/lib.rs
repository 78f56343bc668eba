//! Microsoft Graph client and Graph simulator for `crm-graph-connector`.
//!
//! * [`client`]: app-only Graph client (token cache, per-mailbox concurrency limit,
//!   Retry-After handling, delta rounds, subscriptions).
//! * [`sim`]: an in-process / standalone Graph simulator reproducing the behaviour
//!   documented in `shared/protocols/graph.md` (sections 1-8).
//! * [`schema`]: a checker for JSON bodies against `graph-v1.0-schema.json`.

pub mod body;
pub mod client;
mod notification;
pub mod schema;
pub mod sim;
pub mod tz;
mod util;

pub use client::{
    DeltaRound, DeltaStart, GraphClient, GraphConfig, GraphError, NewSubscription, RetryPolicy,
    Subscription,
};
pub use notification::{ChangeNotification, NotificationCollection, parse_resource};
pub use sim::{GraphSim, GraphSimConfig};

/// The single-value extended property holding the CRM record id on Graph events and contacts.
pub const CRM_ID_PROPERTY: &str = "String {6f0b8b1e-3c1d-4f7a-9a55-4b1c2d3e4f50} Name CrmRecordId";

/// `applicationName` of the linkedResource that carries the CRM id on a To Do task.
pub const LINKED_RESOURCE_APP: &str = "crm-graph-connector";
