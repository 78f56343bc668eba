//! `query_all`: reading every record of a query through capped (`more="true"`) answers.
//!
//! CRM.interface promises no order of records, so a capped answer is an arbitrary subset. The
//! query is narrowed by id ranges: a capped answer for `[lo, hi]` is split at the median id `p` of
//! the records it returned into `[lo, p-1]` and `[p+1, hi]` (record `p` is already known). Every
//! split range is strictly smaller and excludes a known record, so paging always ends, and for
//! answers in any order it needs about two queries per page of results.

use std::collections::BTreeMap;

use super::{CrmClient, CrmError};
use crate::model::{Cond, CondOp, Query, Record, RecordId};

/// Page size used when the query sets no `maxrecords`.
pub const DEFAULT_PAGE: u32 = 500;
/// Upper bound of queries one `query_all` may run.
pub const MAX_PAGE_QUERIES: usize = 100_000;

/// What to do with one page of a range query.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// The range is complete.
    Done,
    /// Query these ranges (inclusive) next.
    Split(Vec<(RecordId, RecordId)>),
}

/// Decides the next ranges after a page for `[lo, hi]` returned `ids` with `more`.
pub(crate) fn next_step(
    lo: RecordId,
    hi: RecordId,
    ids: &[RecordId],
    more: bool,
) -> Result<Step, String> {
    if !more {
        return Ok(Step::Done);
    }
    let mut in_range: Vec<RecordId> = ids
        .iter()
        .copied()
        .filter(|i| (lo..=hi).contains(i))
        .collect();
    if in_range.is_empty() {
        return Err(
            "a capped answer (more=\"true\") returned no record in the queried id range".into(),
        );
    }
    in_range.sort_unstable();
    in_range.dedup();
    let p = in_range[in_range.len() / 2];
    let mut ranges = Vec::with_capacity(2);
    if p > lo {
        ranges.push((lo, p - 1));
    }
    if p < hi {
        ranges.push((p + 1, hi));
    }
    Ok(Step::Split(ranges))
}

fn range_query(base: &Query, lo: RecordId, hi: RecordId, page: u32) -> Query {
    let mut q = base.clone();
    q.max_records = Some(page);
    if lo > 0 {
        q.conditions.push(Cond {
            field: "id".into(),
            op: CondOp::Ge,
            value: lo.to_string(),
        });
    }
    if hi < RecordId::MAX {
        q.conditions.push(Cond {
            field: "id".into(),
            op: CondOp::Le,
            value: hi.to_string(),
        });
    }
    q
}

impl CrmClient {
    /// Reads every record matching `q`, following `more="true"` by narrowing the condition on
    /// id ranges (see the module docs), and returns them sorted by id.
    pub async fn query_all(
        &self,
        q: &Query,
        impersonate: Option<&str>,
    ) -> Result<Vec<Record>, CrmError> {
        let page = q.max_records.filter(|m| *m > 0).unwrap_or(DEFAULT_PAGE);
        let mut found: BTreeMap<RecordId, Record> = BTreeMap::new();
        let mut pending: Vec<(RecordId, RecordId)> = vec![(0, RecordId::MAX)];
        let mut queries = 0usize;
        while let Some((lo, hi)) = pending.pop() {
            queries += 1;
            if queries > MAX_PAGE_QUERIES {
                return Err(CrmError::Parse {
                    detail: format!("paging did not finish within {MAX_PAGE_QUERIES} queries"),
                    excerpt: String::new(),
                });
            }
            let result = self
                .query(&range_query(q, lo, hi, page), impersonate)
                .await?;
            let ids: Vec<RecordId> = result.records.iter().map(|r| r.id).collect();
            let step = next_step(lo, hi, &ids, result.more).map_err(|detail| CrmError::Parse {
                detail,
                excerpt: String::new(),
            })?;
            for record in result.records {
                found.insert(record.id, record);
            }
            if let Step::Split(ranges) = step {
                tracing::trace!(lo, hi, ?ranges, "query_all: splitting a capped page");
                pending.extend(ranges);
            }
        }
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncapped_page_is_done() {
        assert_eq!(next_step(0, 100, &[5, 6], false), Ok(Step::Done));
    }

    #[test]
    fn capped_page_splits_at_median_excluding_it() {
        assert_eq!(
            next_step(0, 100, &[90, 10, 50], true),
            Ok(Step::Split(vec![(0, 49), (51, 100)]))
        );
    }

    #[test]
    fn split_at_range_edges_drops_empty_sides() {
        assert_eq!(next_step(5, 5, &[5], true), Ok(Step::Split(vec![])));
        assert_eq!(next_step(5, 9, &[5], true), Ok(Step::Split(vec![(6, 9)])));
        assert_eq!(
            next_step(0, RecordId::MAX, &[RecordId::MAX], true),
            Ok(Step::Split(vec![(0, RecordId::MAX - 1)]))
        );
    }

    #[test]
    fn capped_page_without_records_is_an_error() {
        assert!(next_step(0, 10, &[], true).is_err());
        assert!(next_step(0, 10, &[11], true).is_err());
    }

    #[test]
    fn range_query_adds_id_bounds_only_when_narrowed() {
        let base = Query::new("Contact");
        assert!(
            range_query(&base, 0, RecordId::MAX, 10)
                .conditions
                .is_empty()
        );
        let q = range_query(&base, 3, 7, 10);
        assert_eq!(q.max_records, Some(10));
        assert_eq!(q.conditions.len(), 2);
        assert_eq!(q.conditions[0].op, CondOp::Ge);
        assert_eq!(q.conditions[1].value, "7");
    }
}
