//! Retry policy: Retry-After honoured exactly, bounded tries, jittered exponential backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Retry and concurrency settings of a [`super::GraphClient`].
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// How many 429 answers are waited out (Retry-After) before giving up with `Throttled`.
    pub max_throttle_retries: u32,
    /// How many 5xx / timeout retries an idempotent call gets before `Unavailable` / `Timeout`.
    pub max_retries: u32,
    /// First backoff step (doubled per retry, with jitter in [step/2, step]).
    pub base_backoff: Duration,
    /// Upper bound of one backoff step.
    pub max_backoff: Duration,
    /// A Retry-After longer than this is not waited out in-line: the error goes to the caller.
    pub max_retry_after: Duration,
    /// Requests in flight per mailbox (Outlook allows 4).
    pub max_in_flight_per_mailbox: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_throttle_retries: 4,
            max_retries: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            max_in_flight_per_mailbox: 4,
        }
    }
}

impl RetryPolicy {
    /// Jittered exponential backoff for retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        let step = self
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let ms = step.as_millis() as u64;
        if ms < 2 {
            return step;
        }
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }
}

/// Where throttling windows are shared between clients and processes (e.g. Redis).
/// Mailbox keys are the mailbox as the caller names it, lower case.
#[async_trait::async_trait]
pub trait ThrottleShare: Send + Sync {
    /// The end of the mailbox's current throttling window, if one is known.
    async fn throttled_until(&self, mailbox: &str) -> Option<SystemTime>;
    /// Publishes a window: no request to `mailbox` should start before `until`.
    async fn set_throttled_until(&self, mailbox: &str, until: SystemTime);
}

/// Told of each Graph HTTP request and each wait for a throttling window (the connector counts
/// them as metrics). Called inline: keep it cheap and never blocking.
pub trait RequestObserver: Send + Sync {
    /// One HTTP attempt to Graph (token requests aside): its status (`None` when no answer
    /// came: connect error, timeout) and how long it took.
    fn request(&self, status: Option<u16>, elapsed: Duration);
    /// A request waited this long for a mailbox's throttling window before it was sent.
    fn throttle_wait(&self, waited: Duration);
}

/// A [`ThrottleShare`] in memory, for several clients of one process (and tests).
#[derive(Default)]
pub struct InMemoryThrottleShare {
    windows: Mutex<HashMap<String, SystemTime>>,
}

#[async_trait::async_trait]
impl ThrottleShare for InMemoryThrottleShare {
    async fn throttled_until(&self, mailbox: &str) -> Option<SystemTime> {
        let w = match self.windows.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        w.get(mailbox).copied().filter(|t| *t > SystemTime::now())
    }
    async fn set_throttled_until(&self, mailbox: &str, until: SystemTime) {
        let mut w = match self.windows.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let slot = w.entry(mailbox.to_string()).or_insert(until);
        if *slot < until {
            *slot = until;
        }
    }
}

/// `Retry-After: <seconds>` (integer or decimal). HTTP-date values are ignored.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RetryPolicy {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        for _ in 0..20 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(175) && b3 <= Duration::from_millis(350));
            assert!(p.backoff(30) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, "-3".parse().expect("header"));
        assert_eq!(parse_retry_after(&h), None);
    }
}
