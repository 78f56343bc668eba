//! Background delivery of notifications and the subscription validation handshake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Shared;
use super::state::{Delivery, Outgoing};
use crate::util::encode_component;

/// Most notifications in one POST.
const MAX_BATCH: usize = 50;

/// POSTs `?validationToken=` to `url` and checks the answer: 200, text/plain, the decoded token.
pub(crate) async fn validate_endpoint(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), String> {
    // Line 3: spaces, `+`, `/`, `=`, `&` and `:` inside, sent form-encoded (`+` for a space).
    let id = uuid::Uuid::new_v4().simple().to_string();
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {} sig=Ab+c/{}==&v=1",
        uuid::Uuid::new_v4(),
        &id[..8]
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    let encoded = encode_component(&token).replace("%20", "+");
    let target = format!("{url}{sep}validationToken={encoded}");
    let resp = http
        .post(&target)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(timeout)
        .body(Vec::<u8>::new())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "no answer within the timeout".to_string()
            } else {
                "endpoint unreachable".to_string()
            }
        })?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = resp
        .text()
        .await
        .map_err(|_| "unreadable answer".to_string())?;
    if status != 200 {
        return Err(format!("endpoint answered HTTP {status}"));
    }
    if !content_type.starts_with("text/plain") {
        return Err(format!(
            "endpoint answered Content-Type {content_type:?}, expected text/plain"
        ));
    }
    if body != token {
        return Err("endpoint did not echo the decoded validation token".into());
    }
    Ok(())
}

pub(crate) async fn delivery_loop(sh: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = sh.cancel.cancelled() => return,
            _ = sh.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
        }
        let batches = {
            let mut st = sh.lock();
            if st.faults.hold_deliveries {
                continue;
            }
            let now = Instant::now();
            let mut due: Vec<Outgoing> = Vec::new();
            let mut later = std::collections::VecDeque::new();
            while let Some(o) = st.queue.pop_front() {
                if o.due <= now {
                    due.push(o)
                } else {
                    later.push_back(o)
                }
            }
            st.queue = later;
            // Group by (url, lifecycle), keeping order; several subscriptions share one POST.
            let mut batches: Vec<(String, Vec<Outgoing>)> = Vec::new();
            for o in due {
                match batches.iter_mut().find(|(u, b)| {
                    *u == o.url && b.len() < MAX_BATCH && b[0].lifecycle == o.lifecycle
                }) {
                    Some((_, b)) => b.push(o),
                    None => batches.push((o.url.clone(), vec![o])),
                }
            }
            st.deliveries_in_flight += batches.len() as u32;
            batches
        };
        for (url, items) in batches {
            let sh2 = sh.clone();
            tokio::spawn(async move { deliver(sh2, url, items).await });
        }
    }
}

async fn deliver(sh: Arc<Shared>, url: String, items: Vec<Outgoing>) {
    let body = json!({ "value": items.iter().map(|o| o.item.clone()).collect::<Vec<Value>>() });
    let timeout = sh.lock().delivery_timeout;
    let res = sh.http.post(&url).timeout(timeout).json(&body).send().await;
    let status = res.as_ref().ok().map(|r| r.status().as_u16());
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let mut st = sh.lock();
    st.log_delivery(Delivery { url, body, status });
    if !ok {
        let base = st.delivery_retry_base;
        let max = st.delivery_max_attempts;
        for mut o in items {
            o.attempts += 1;
            if o.attempts < max {
                o.due = Instant::now() + base.saturating_mul(1u32 << (o.attempts - 1).min(16));
                st.queue.push_back(o);
            }
        }
    }
    st.deliveries_in_flight = st.deliveries_in_flight.saturating_sub(1);
}
