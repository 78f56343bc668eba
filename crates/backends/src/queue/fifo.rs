//! Per-key FIFO scheduling shared by both queue back ends: hand out the oldest event whose
//! key has nothing in flight.

use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Default)]
pub(crate) struct KeyedFifo {
    /// Waiting seqs per key.
    keys: HashMap<String, BTreeSet<u64>>,
    /// (oldest waiting seq, key) for every key with waiting events and nothing in flight.
    heads: BTreeSet<(u64, String)>,
    /// Keys with an event in flight.
    busy: HashSet<String>,
    len: usize,
}

impl KeyedFifo {
    fn head_of(&self, key: &str) -> Option<u64> {
        if self.busy.contains(key) {
            return None;
        }
        self.keys.get(key).and_then(|s| s.first().copied())
    }

    /// Run `f` and keep `heads` consistent for `key`.
    fn with_key<R>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        if let Some(h) = self.head_of(key) {
            self.heads.remove(&(h, key.to_owned()));
        }
        let r = f(self);
        if let Some(h) = self.head_of(key) {
            self.heads.insert((h, key.to_owned()));
        }
        r
    }

    /// Add a waiting event (any seq; a smaller seq goes first).
    pub(crate) fn push(&mut self, seq: u64, key: &str) {
        self.with_key(key, |s| {
            if s.keys.entry(key.to_owned()).or_default().insert(seq) {
                s.len += 1;
            }
        });
    }

    /// Remove a waiting event; false when it was not waiting.
    pub(crate) fn remove(&mut self, seq: u64, key: &str) -> bool {
        self.with_key(key, |s| {
            let mut removed = false;
            if let Some(set) = s.keys.get_mut(key) {
                removed = set.remove(&seq);
                if set.is_empty() {
                    s.keys.remove(key);
                }
            }
            if removed {
                s.len -= 1;
            }
            removed
        })
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, seq: u64, key: &str) -> bool {
        self.keys.get(key).is_some_and(|s| s.contains(&seq))
    }

    /// The oldest waiting event whose key is free, without taking it.
    pub(crate) fn peek_free(&self) -> Option<(u64, String)> {
        self.heads.first().cloned()
    }

    /// Take the oldest waiting event whose key is free and mark its key busy.
    pub(crate) fn pop_free(&mut self) -> Option<(u64, String)> {
        let (seq, key) = self.heads.first().cloned()?;
        self.remove(seq, &key);
        self.set_busy(&key, true);
        Some((seq, key))
    }

    pub(crate) fn set_busy(&mut self, key: &str, busy: bool) {
        self.with_key(key, |s| {
            if busy {
                s.busy.insert(key.to_owned());
            } else {
                s.busy.remove(key);
            }
        });
    }

    /// Number of waiting events.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forget every waiting event (busy keys stay busy).
    pub(crate) fn clear_waiting(&mut self) {
        self.keys.clear();
        self.heads.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_free_key_first_and_busy_keys_skipped() {
        let mut f = KeyedFifo::default();
        f.push(1, "a");
        f.push(2, "a");
        f.push(3, "b");
        assert_eq!(f.pop_free(), Some((1, "a".into())));
        // "a" is busy: next is b even though a@2 is older.
        assert_eq!(f.pop_free(), Some((3, "b".into())));
        assert_eq!(f.pop_free(), None);
        f.set_busy("a", false);
        assert_eq!(f.pop_free(), Some((2, "a".into())));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn requeued_old_seq_goes_first_and_remove_works() {
        let mut f = KeyedFifo::default();
        f.push(5, "a");
        f.push(6, "a");
        let (seq, key) = f.pop_free().expect("event");
        assert_eq!(seq, 5);
        f.push(7, "a");
        f.set_busy(&key, false);
        f.push(seq, &key); // given back
        assert!(f.remove(6, "a"));
        assert!(!f.remove(6, "a"));
        assert!(f.contains(7, "a"));
        assert_eq!(f.len(), 2);
        assert_eq!(f.peek_free(), Some((5, "a".into())));
        f.clear_waiting();
        assert_eq!(f.len(), 0);
        assert_eq!(f.pop_free(), None);
    }
}
