//! How changes are found: the scheduler's jobs (and the worker's lifecycle events) call in here.
//!
//! - `mailboxes`: the mailbox list, read from the reps switched on in CRM.
//! - `subscriptions`: Graph subscriptions per mailbox: create the missing, renew the due.
//! - `lifecycle`: lifecycle notifications (renew, re-create, catch up).
//! - `delta`: Graph → CRM changes by delta query (safety catch-up, To Do poll) onto the queue.
//! - `crm_poll`: CRM → Graph changes by polling from a watermark onto the queue.
//! - `crm_records`: a CRM record version's stamp, the changed-since condition.
//! - `contact_scope`: the CRM persons that belong in a rep's Outlook (`[tenants.contacts] scope`).
//! - `error`: [`WatchError`], whether trying again later can help.

mod contact_scope;
pub mod crm_poll;
mod crm_records;
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
