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

#[cfg(test)]
mod tests {
    use super::*;

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
}
