//! Delta rounds: follow `@odata.nextLink` until `@odata.deltaLink`.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;

use super::{Call, GraphClient, GraphError};

/// Where a delta round starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaStart {
    /// calendarView window (required for `calendar_view_delta`; ignored by contacts and tasks,
    /// which have no window and start an initial round instead).
    Window {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// A fresh round without a window (contacts, tasks).
    Initial,
    /// The `@odata.deltaLink` stored after the previous round, used as-is (one outside
    /// `graph_url`'s scheme, host and port is not requested: the round fails with
    /// [`GraphError::SyncReset`]).
    Link(String),
}

/// The outcome of one complete round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaRound {
    /// New or changed items (merged by id: the last version seen in the round wins).
    pub changed: Vec<Value>,
    /// Ids reported with `@removed` (for calendarView this includes items that moved
    /// out of the window, or were created outside it: filter by your window).
    pub removed: Vec<String>,
    /// Store it and pass it as [`DeltaStart::Link`] next time.
    pub delta_link: String,
}

/// How far a delta round has got: told after each page (a long first sync shows its progress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaProgress {
    /// Pages read so far in this round.
    pub pages: u32,
    /// Distinct items (changed or removed) seen so far in this round.
    pub items: usize,
}

/// Maximum pages in one round before we call it a loop.
const MAX_PAGES: u32 = 100_000;

/// A delta link outside `graph_url` is never requested (the token would go with it): the round
/// is treated like an expired delta state, a [`GraphError::SyncReset`] (start over from scratch).
fn foreign_delta_link(what: &str, url: &str) -> GraphError {
    tracing::warn!(
        host = %super::host_of(url),
        "{what} points outside graph_url; not followed, treating it as a delta reset"
    );
    GraphError::SyncReset { location: None }
}

impl GraphClient {
    /// A clone whose delta rounds call `progress` after each page (other clones are unchanged).
    pub fn with_delta_progress(
        &self,
        progress: impl Fn(DeltaProgress) + Send + Sync + 'static,
    ) -> GraphClient {
        GraphClient {
            inner: self.inner.clone(),
            progress: Some(std::sync::Arc::new(progress)),
        }
    }

    /// One complete round from `first`. Every link followed (and the final deltaLink) must have
    /// `graph_url`'s scheme, host and port; otherwise the round ends with
    /// [`GraphError::SyncReset`] and nothing is requested there.
    pub(crate) async fn delta_round(
        &self,
        first: String,
        mailbox: &str,
        outlook: bool,
    ) -> Result<DeltaRound, GraphError> {
        // id -> (order of first appearance, Some(item) | None for removed)
        let mut order: Vec<String> = Vec::new();
        let mut state: std::collections::HashMap<String, Option<Value>> =
            std::collections::HashMap::new();
        if !self.is_graph_url(&first) {
            return Err(foreign_delta_link("the stored delta link", &first));
        }
        let mut next = first;
        let mut pages = 0u32;
        loop {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(GraphError::parse(
                    "delta round exceeded the page limit",
                    &next,
                ));
            }
            let mut call = Call::new(Method::GET, next.clone()).mailbox(mailbox);
            call.outlook = outlook;
            let page = self.execute(call).await?.json()?;
            let Some(items) = page["value"].as_array() else {
                return Err(GraphError::parse(
                    "delta page without `value`",
                    &page.to_string(),
                ));
            };
            for item in items {
                if !self.well_formed(item, "delta item") {
                    continue;
                }
                let Some(id) = item["id"].as_str() else {
                    continue;
                };
                if !state.contains_key(id) {
                    order.push(id.to_string());
                }
                let entry = if item.get("@removed").is_some() {
                    None
                } else {
                    Some(item.clone())
                };
                state.insert(id.to_string(), entry);
            }
            if let Some(p) = &self.progress {
                p(DeltaProgress {
                    pages,
                    items: order.len(),
                });
            }
            if let Some(n) = page["@odata.nextLink"].as_str() {
                if !self.is_graph_url(n) {
                    return Err(foreign_delta_link("@odata.nextLink", n));
                }
                next = n.to_string();
                continue;
            }
            if let Some(d) = page["@odata.deltaLink"].as_str() {
                if !self.is_graph_url(d) {
                    return Err(foreign_delta_link("@odata.deltaLink", d));
                }
                let mut round = DeltaRound {
                    delta_link: d.to_string(),
                    ..DeltaRound::default()
                };
                for id in order {
                    match state.remove(&id) {
                        Some(Some(item)) => round.changed.push(item),
                        Some(None) => round.removed.push(id),
                        None => {}
                    }
                }
                return Ok(round);
            }
            return Err(GraphError::parse(
                "delta page with neither nextLink nor deltaLink",
                &page.to_string(),
            ));
        }
    }

    /// calendarView delta of the primary calendar. `DeltaStart::Initial` is refused (a window is required).
    pub async fn calendar_view_delta(
        &self,
        mailbox: &str,
        start: DeltaStart,
    ) -> Result<DeltaRound, GraphError> {
        let url = match start {
            DeltaStart::Link(l) => l,
            DeltaStart::Window { start, end } => {
                let (s, e) = (crate::util::rfc3339(start), crate::util::rfc3339(end));
                self.api(
                    &["users", mailbox, "calendarView", "delta"],
                    &[("startDateTime", &s), ("endDateTime", &e)],
                )
            }
            DeltaStart::Initial => {
                return Err(GraphError::Http {
                    status: 400,
                    code: "WindowRequired".into(),
                    message: "calendarView delta needs DeltaStart::Window for its first round"
                        .into(),
                });
            }
        };
        self.delta_round(url, mailbox, true).await
    }

    /// Contacts delta of the default contacts folder.
    pub async fn contacts_delta(
        &self,
        mailbox: &str,
        start: DeltaStart,
    ) -> Result<DeltaRound, GraphError> {
        let url = match start {
            DeltaStart::Link(l) => l,
            DeltaStart::Window { .. } | DeltaStart::Initial => {
                self.api(&["users", mailbox, "contacts", "delta"], &[])
            }
        };
        self.delta_round(url, mailbox, true).await
    }

    /// To Do tasks delta of one list.
    pub async fn tasks_delta(
        &self,
        mailbox: &str,
        list: &str,
        start: DeltaStart,
    ) -> Result<DeltaRound, GraphError> {
        let url = match start {
            DeltaStart::Link(l) => l,
            DeltaStart::Window { .. } | DeltaStart::Initial => self.api(
                &["users", mailbox, "todo", "lists", list, "tasks", "delta"],
                &[],
            ),
        };
        self.delta_round(url, mailbox, false).await
    }
}
