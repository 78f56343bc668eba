//! The clients' requests as metrics: each Graph and CRM.interface HTTP request by status with its
//! latency, and each wait for a Graph throttling window.

use std::sync::Arc;
use std::time::Duration;

use super::{Metrics, metric};

/// Counts one tenant's Graph requests and throttling waits.
pub struct GraphRequests {
    pub metrics: Arc<Metrics>,
    pub tenant: String,
}

/// Counts one tenant's CRM.interface requests.
pub struct CrmRequests {
    pub metrics: Arc<Metrics>,
    pub tenant: String,
}

fn status_label(status: Option<u16>) -> String {
    status.map_or_else(|| "error".to_string(), |s| s.to_string())
}

impl cgc_graph::RequestObserver for GraphRequests {
    fn request(&self, status: Option<u16>, elapsed: Duration) {
        let status = status_label(status);
        self.metrics.observe(
            metric::GRAPH_REQUESTS,
            &[("tenant", &self.tenant), ("status", &status)],
            elapsed.as_secs_f64(),
        );
    }

    fn throttle_wait(&self, waited: Duration) {
        self.metrics.observe(
            metric::THROTTLE_WAITS,
            &[("tenant", &self.tenant)],
            waited.as_secs_f64(),
        );
    }
}

impl cgc_crm::RequestObserver for CrmRequests {
    fn request(&self, status: Option<u16>, elapsed: Duration) {
        let status = status_label(status);
        self.metrics.observe(
            metric::CRM_REQUESTS,
            &[("tenant", &self.tenant), ("status", &status)],
            elapsed.as_secs_f64(),
        );
    }
}
