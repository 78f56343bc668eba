//! The watch side's errors: what went wrong while finding changes, and whether trying again later
//! can help.

use std::time::Duration;

use cgc_backends::{QueueError, StoreError};
use cgc_crm::CrmError;
use cgc_graph::GraphError;

/// Why finding a mailbox's changes (or keeping its subscriptions) failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("Graph: {0}")]
    Graph(#[from] GraphError),
    #[error("CRM.interface: {0}")]
    Crm(#[from] CrmError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Found events could not be put on the queue.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

impl WatchError {
    /// Whether trying again later can help (throttling, outages, a store or queue away).
    pub fn is_transient(&self) -> bool {
        match self {
            WatchError::Graph(e) => e.is_retryable() || matches!(e, GraphError::PreconditionFailed),
            WatchError::Crm(e) => e.is_retryable(),
            WatchError::Store(_) | WatchError::Queue(_) => true,
        }
    }

    /// How long to wait before trying again, when the remote said so (Graph's Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WatchError::Graph(e) => e.retry_after(),
            _ => None,
        }
    }
}

// MERGE: moves to sync/error.rs
impl From<WatchError> for crate::worker::Failure {
    fn from(e: WatchError) -> Self {
        if e.is_transient() {
            crate::worker::Failure::Retry {
                after: e.retry_after(),
                reason: e.to_string(),
            }
        } else {
            crate::worker::Failure::Dead {
                reason: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::Failure;

    #[test]
    fn outages_and_throttling_are_transient_the_rest_permanent() {
        let throttled = WatchError::from(GraphError::Throttled {
            retry_after: Duration::from_secs(7),
        });
        assert!(throttled.is_transient());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        assert!(WatchError::from(GraphError::PreconditionFailed).is_transient());
        assert!(WatchError::from(GraphError::Timeout).is_transient());
        assert!(!WatchError::from(GraphError::NotFound).is_transient());
        assert!(WatchError::from(CrmError::Timeout).is_transient());
        let parse = WatchError::from(CrmError::Parse {
            detail: "x".into(),
            excerpt: "<".into(),
        });
        assert!(!parse.is_transient());
        assert_eq!(parse.retry_after(), None);
        assert!(WatchError::from(StoreError::Unavailable("down".into())).is_transient());
        let queue = WatchError::from(QueueError::Unavailable("down".into()));
        assert!(queue.is_transient());
        assert_eq!(queue.to_string(), "queue: queue unavailable: down");
    }

    #[test]
    fn worker_failures_keep_the_class_the_retry_after_and_the_reason() {
        let e = WatchError::from(GraphError::Throttled {
            retry_after: Duration::from_secs(3),
        });
        let reason = format!(
            "Graph: {}",
            GraphError::Throttled {
                retry_after: Duration::from_secs(3),
            }
        );
        match Failure::from(e) {
            Failure::Retry { after, reason: r } => {
                assert_eq!(after, Some(Duration::from_secs(3)));
                assert_eq!(r, reason);
            }
            other => panic!("expected Retry, got {other:?}"),
        }
        match Failure::from(WatchError::from(StoreError::Other("x".into()))) {
            Failure::Retry {
                after: None,
                reason,
            } => {
                assert_eq!(reason, "store: store error: x")
            }
            other => panic!("expected Retry, got {other:?}"),
        }
        match Failure::from(WatchError::from(GraphError::NotFound)) {
            Failure::Dead { reason } => assert_eq!(reason, "Graph: Graph item not found"),
            other => panic!("expected Dead, got {other:?}"),
        }
    }
}
