//! crm-graph-connector: near-real-time, content-based synchronisation between Aurea CRM
//! (CRM.interface) and Microsoft 365 (Microsoft Graph).
//!
//! The pure core (canonical model, mapping, reconciliation) lives in `cgc-core`; the protocol
//! clients and simulators in `cgc-crm` and `cgc-graph`; queue and store back ends in
//! `cgc-backends`. This crate wires them into the receiver, workers, scheduler and admin API.

pub use cgc_backends as backends;
pub use cgc_core as core;
pub use cgc_crm as crm;
pub use cgc_graph as graph;

pub mod admin;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod deploy_check;
pub mod doctor;
pub mod event;
pub mod guard;
pub mod invitations;
pub mod lease;
pub mod plan;
pub mod receiver;
pub mod run;
pub mod scheduler;
pub mod state;
pub mod sync;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod throttle;
pub mod undo;
pub mod watch;
pub mod worker;
