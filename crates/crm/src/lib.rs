//! `cgc-crm`: the CRM.interface XML client, CRM time conversion, and a CRM.interface simulator.
//!
//! The wire format follows `shared/protocols/crm-interface.md`; every shape the profile fixes
//! itself ([profile]) lives in [`client::request`] (what we send) and [`client::response`] (what
//! we read), so adapting to a real server is a change in those two modules.

pub mod client;
mod model;
pub mod sim;
pub mod time;

pub use client::request::ParsedRequest;
pub use client::{CrmClient, CrmConfig, CrmError, RequestObserver, build_request, parse_request};
pub use model::*;
pub use time::TimeError;
