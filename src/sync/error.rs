//! The one error type of an item's sync pass, and the one place that decides what becomes of a
//! failed event: retried (after Retry-After or the ladder's delay), deferred without counting an
//! attempt (waiting for a lease another worker holds), or parked in the dead letters.

use std::time::Duration;

use cgc_backends::StoreError;
use cgc_core::MapError;
use cgc_crm::CrmError;
use cgc_graph::GraphError;

use crate::watch::WatchError;

/// Why a sync pass (or a lifecycle, archive or resolution step) did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Graph: {0}")]
    Graph(#[from] GraphError),
    #[error("CRM.interface: {0}")]
    Crm(#[from] CrmError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("mapping: {0}")]
    Mapping(#[from] MapError),
    /// Another CRM.interface user holds the record (`Locked`): try again later.
    #[error("CRM record {id} is locked: {message}")]
    Locked { id: u64, message: String },
    /// A lifecycle step (renewal, recreation, catch-up) failed.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// A transient condition outside the protocol clients (queue publish, renewal): retry.
    #[error("{reason}")]
    Transient {
        after: Option<Duration>,
        reason: String,
    },
    /// Waiting for something another worker holds (a create lease), or for what it made to
    /// become visible: try again after `after` without counting an attempt.
    #[error("{reason}")]
    Busy { after: Duration, reason: String },
    /// The event cannot be carried out as it stands (unknown tenant, invalid resolution, an
    /// item without an `internetMessageId`, …): park it for an operator.
    #[error("{0}")]
    Refused(String),
    /// A plan broke one of the pass's invariants (a bug, never input): park it for an operator.
    #[error("{0}")]
    Invariant(&'static str),
}

/// What becomes of a failed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: try again after the given delay (or the retry ladder's own).
    Retry { after: Option<Duration> },
    /// Try again after the delay without counting an attempt (the ladder never gives up on it).
    Wait { after: Duration },
    /// Permanent: park it in the dead letters, with the error as the reason.
    DeadLetter,
}

impl SyncError {
    /// The one decision: retry, wait or dead-letter.
    pub fn disposition(&self) -> Disposition {
        match self {
            SyncError::Graph(e)
                if e.is_retryable() || matches!(e, GraphError::PreconditionFailed) =>
            {
                Disposition::Retry {
                    after: e.retry_after(),
                }
            }
            SyncError::Graph(_) => Disposition::DeadLetter,
            SyncError::Crm(e) if e.is_retryable() => Disposition::Retry { after: None },
            SyncError::Crm(_) => Disposition::DeadLetter,
            SyncError::Store(_) | SyncError::Locked { .. } => Disposition::Retry { after: None },
            SyncError::Transient { after, .. } => Disposition::Retry { after: *after },
            SyncError::Watch(e) if e.is_transient() => Disposition::Retry {
                after: e.retry_after(),
            },
            SyncError::Watch(_) => Disposition::DeadLetter,
            SyncError::Busy { after, .. } => Disposition::Wait { after: *after },
            SyncError::Mapping(_) | SyncError::Refused(_) | SyncError::Invariant(_) => {
                Disposition::DeadLetter
            }
        }
    }

    /// Whether the event is parked for an operator rather than tried again.
    pub fn is_permanent(&self) -> bool {
        self.disposition() == Disposition::DeadLetter
    }

    pub(crate) fn busy(after: Duration, reason: &str) -> Self {
        SyncError::Busy {
            after,
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retried_after_retry_after_and_not_found_is_parked() {
        let e = SyncError::from(GraphError::Throttled {
            retry_after: Duration::from_secs(7),
        });
        assert_eq!(
            e.disposition(),
            Disposition::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert!(e.to_string().starts_with("Graph: "), "{e}");
        let e = SyncError::from(GraphError::PreconditionFailed);
        assert!(matches!(e.disposition(), Disposition::Retry { .. }));
        let e = SyncError::from(GraphError::NotFound);
        assert_eq!(e.disposition(), Disposition::DeadLetter);
        let e = SyncError::Refused("unknown tenant".into());
        assert_eq!(e.disposition(), Disposition::DeadLetter);
        assert!(e.is_permanent());
    }

    #[test]
    fn lifecycle_failures_keep_their_class_retry_after_and_reason() {
        let e = SyncError::from(WatchError::from(GraphError::Throttled {
            retry_after: Duration::from_secs(3),
        }));
        assert_eq!(
            e.disposition(),
            Disposition::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(e.to_string().starts_with("Graph: "), "{e}");
        let e = SyncError::from(WatchError::from(StoreError::Other("x".into())));
        assert_eq!(e.disposition(), Disposition::Retry { after: None });
        assert_eq!(e.to_string(), "store: store error: x");
        let e = SyncError::from(WatchError::from(GraphError::NotFound));
        assert_eq!(e.disposition(), Disposition::DeadLetter);
        assert_eq!(e.to_string(), "Graph: Graph item not found");
    }

    #[test]
    fn a_lease_wait_is_deferred_and_a_lock_is_retried() {
        let e = SyncError::busy(Duration::from_millis(500), "held elsewhere");
        assert_eq!(
            e.disposition(),
            Disposition::Wait {
                after: Duration::from_millis(500)
            }
        );
        assert_eq!(e.to_string(), "held elsewhere");
        let e = SyncError::Locked {
            id: 7,
            message: "in use".into(),
        };
        assert_eq!(e.disposition(), Disposition::Retry { after: None });
        assert_eq!(e.to_string(), "CRM record 7 is locked: in use");
        let e = SyncError::Invariant("plan updates CRM without a link");
        assert!(e.is_permanent());
    }
}
