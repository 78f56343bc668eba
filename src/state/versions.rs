//! The last version of an item this process handled, per item, in memory only:
//! - CRM record versions the poll queued. The CRM poll reads each window with an overlap, so it
//!   sees one version of a record several times; a version already queued for that mailbox is
//!   not queued again. A record changed back to an earlier content (A → B → A) is a new version
//!   here, because what counts is the last version queued, not every one ever seen.
//! - Graph change keys this process's own writes produced. The notification of that write names
//!   the same change key: the item holds exactly what we wrote, so it is done without a GET.
//!
//! After a restart (or on another worker process) a version may be handled once more: the worker
//! then finds it a no-op by content.

use std::collections::HashMap;
use std::sync::Mutex;

/// Beyond this many records the memory starts over (a version is then queued once more).
const CAP: usize = 200_000;

#[derive(Default)]
pub struct LastVersions {
    last: Mutex<HashMap<String, String>>,
}

impl LastVersions {
    /// Whether `stamp` differs from the last version remembered for `record`.
    pub fn is_new(&self, record: &str, stamp: &str) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(record).is_none_or(|s| s != stamp)
    }

    /// Remembers the versions just handled.
    pub fn remember<'a>(&self, queued: impl IntoIterator<Item = (String, &'a str)>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for (record, stamp) in queued {
            if last.len() >= CAP && !last.contains_key(&record) {
                last.clear();
            }
            last.insert(record, stamp.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_seen_again_is_not_new_but_a_change_back_is() {
        let v = LastVersions::default();
        assert!(v.is_new("t|m|appointment|7", "A"));
        v.remember([("t|m|appointment|7".to_string(), "A")]);
        assert!(
            !v.is_new("t|m|appointment|7", "A"),
            "the overlap sees A again"
        );
        assert!(v.is_new("t|m|appointment|7", "B"));
        v.remember([("t|m|appointment|7".to_string(), "B")]);
        assert!(
            v.is_new("t|m|appointment|7", "A"),
            "A → B → A: the revert is new"
        );
        assert!(v.is_new("t|other|appointment|7", "B"), "per mailbox");
    }

    #[test]
    fn the_memory_is_bounded() {
        let v = LastVersions::default();
        v.remember((0..CAP + 10).map(|i| (i.to_string(), "s")));
        assert!(v.last.lock().unwrap().len() <= CAP);
    }
}
