//! Embedded durable queue: one redb file owned by one process.
//!
//! Disk (redb): `ready` (seq -> stored envelope; in-flight events stay here until settled),
//! `delayed` (seq -> stored envelope with its due time), `dead` (seq -> dead letter).
//! Memory (rebuilt on open): per-key FIFO of ready seqs, the "heads" (oldest ready seq of
//! every key with nothing in flight), the in-flight delivery per key and the delayed index.
//! Every operation holds one mutex across its redb write, so memory always mirrors disk.
//!
//! In flight is memory only: a delivery handed out by this process stays in flight until it
//! is acked, retried, deferred or dead-lettered, or its `Delivery` is dropped (the consumer
//! task died) — never because time passed, however long the processing takes. The file is
//! used by one process at a time, so an event in flight when the process dies (crash,
//! SIGKILL) is simply ready again, at once and at the front of its key, when the next process
//! opens the file; its attempt count and its delivery count (the poison safety net) are kept.

use std::collections::{BTreeSet, HashMap};

use super::fifo::KeyedFifo;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{
    DELIVERY_LIMIT, DeadLetter, Delivery, DeliveryHandle, Envelope, Queue, QueueDepth, QueueError,
    QueueOptions,
};

const READY: TableDefinition<u64, &[u8]> = TableDefinition::new("ready");
const DELAYED: TableDefinition<u64, &[u8]> = TableDefinition::new("delayed");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");

#[derive(Serialize, Deserialize)]
struct Stored {
    envelope: Envelope,
    /// Deliveries since the last publish/retry (safety net against poison events).
    #[serde(default)]
    deliveries: u32,
    /// Delayed only: due time, unix milliseconds.
    #[serde(default)]
    due_ms: i64,
}

struct InFlight {
    seq: u64,
    token: u64,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    next_token: u64,
    /// Ready (not in-flight) events.
    fifo: KeyedFifo,
    inflight: HashMap<String, InFlight>,
    /// (due unix ms, seq)
    delayed: BTreeSet<(i64, u64)>,
    dead_count: u64,
}

impl State {
    fn add_ready(&mut self, seq: u64, key: &str) {
        self.fifo.push(seq, key);
    }

    fn remove_ready(&mut self, seq: u64, key: &str) -> bool {
        self.fifo.remove(seq, key)
    }

    /// Take the oldest ready event whose key is free.
    fn start_flight(&mut self) -> Option<(u64, String, u64)> {
        let (seq, key) = self.fifo.pop_free()?;
        self.next_token += 1;
        let token = self.next_token;
        self.inflight.insert(key.clone(), InFlight { seq, token });
        Some((seq, key, token))
    }

    /// End a flight; with `requeue` the event is ready again (its old seq keeps it first).
    fn end_flight(&mut self, key: &str, requeue: bool) -> Option<u64> {
        let seq = self.inflight.remove(key).map(|f| f.seq)?;
        if requeue {
            self.fifo.push(seq, key);
        }
        self.fifo.set_busy(key, false);
        Some(seq)
    }

    fn owns(&self, key: &str, token: u64) -> bool {
        self.inflight.get(key).is_some_and(|f| f.token == token)
    }

    fn alloc(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }
}

struct Shared {
    db: Database,
    state: Mutex<State>,
    notify: Notify,
    opts: QueueOptions,
    /// Publishes waiting for the next commit (group commit: one transaction, one fsync, for all
    /// of them), each with the channel its caller waits on.
    pending: Mutex<Vec<PendingPublish>>,
    /// A committer is draining `pending` now.
    committing: std::sync::atomic::AtomicBool,
}

type PendingPublish = (
    Vec<Envelope>,
    tokio::sync::oneshot::Sender<Result<(), QueueError>>,
);

/// The embedded queue. Share it between consumers of one process with an `Arc`.
pub struct EmbeddedQueue {
    shared: Arc<Shared>,
}

pub(crate) struct Handle {
    /// Weak: an unsettled delivery must not keep the file open (a dropped queue is a
    /// "killed" consumer; its deliveries come back on reopen).
    shared: Weak<Shared>,
    seq: u64,
    key: String,
    token: u64,
    armed: bool,
}

impl Handle {
    fn disarm(&mut self) -> (Weak<Shared>, (u64, String, u64)) {
        self.armed = false;
        (
            self.shared.clone(),
            (self.seq, std::mem::take(&mut self.key), self.token),
        )
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Not settled: give the event back at once (memory only; it never left `ready`).
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut st = shared.lock();
        if st.owns(&self.key, self.token) {
            st.end_flight(&self.key, true);
            drop(st);
            shared.notify.notify_waiters();
        }
    }
}

fn db_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("embedded queue storage: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(v).map_err(|e| QueueError::Other(format!("encode: {e}")))
}

fn decode<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, QueueError> {
    serde_json::from_slice(b)
        .map_err(|e| QueueError::Corrupt(format!("embedded queue record: {e}")))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Shared {
    /// The group committer: takes every waiting publish, writes them in one transaction, answers
    /// each, and goes on until nothing waits (then it stops; the next publish starts another).
    fn commit_pending(&self) {
        use std::sync::atomic::Ordering;
        // A panic while writing must not leave the flag up (no publish would start a committer
        // again): the callers of this round get an error, the next publish a new committer.
        struct LowerOnUnwind<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for LowerOnUnwind<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(false, std::sync::atomic::Ordering::Release);
                }
            }
        }
        let _guard = LowerOnUnwind(&self.committing);
        loop {
            let waiting =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if waiting.is_empty() {
                self.committing.store(false, Ordering::Release);
                // A publish may have queued itself after the take and before the flag fell.
                let more = !self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
                if more && !self.committing.swap(true, Ordering::AcqRel) {
                    continue;
                }
                return;
            }
            let result = self.write_ready(&waiting);
            for (_, answer) in waiting {
                let _ = answer.send(result.clone());
            }
        }
    }

    /// Writes the envelopes of several publishes as ready, in order, in one transaction.
    fn write_ready(&self, waiting: &[PendingPublish]) -> Result<(), QueueError> {
        let mut st = self.lock();
        let first = st.next_seq;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut ready = tx.open_table(READY).map_err(db_err)?;
            let mut i = 0u64;
            for (batch, _) in waiting {
                for envelope in batch {
                    let stored = Stored {
                        envelope: envelope.clone(),
                        deliveries: 0,
                        due_ms: 0,
                    };
                    ready
                        .insert(first + i, encode(&stored)?.as_slice())
                        .map_err(db_err)?;
                    i += 1;
                }
            }
        }
        tx.commit().map_err(db_err)?;
        for (batch, _) in waiting {
            for envelope in batch {
                let seq = st.alloc();
                st.add_ready(seq, &envelope.key);
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move due delayed events to ready (behind what is there).
    fn housekeeping(&self, st: &mut State) -> Result<(), QueueError> {
        let now = now_ms();
        let due: Vec<(i64, u64)> = st
            .delayed
            .iter()
            .take_while(|(d, _)| *d <= now)
            .copied()
            .collect();
        if !due.is_empty() {
            let mut moved = Vec::new();
            let tx = self.db.begin_write().map_err(db_err)?;
            {
                let mut delayed = tx.open_table(DELAYED).map_err(db_err)?;
                let mut ready = tx.open_table(READY).map_err(db_err)?;
                let mut next = st.next_seq;
                for (due_ms, seq) in &due {
                    let Some(bytes) = delayed.remove(*seq).map_err(db_err)? else {
                        moved.push((*due_ms, *seq, None));
                        continue;
                    };
                    let mut stored: Stored = decode(bytes.value())?;
                    drop(bytes);
                    stored.deliveries = 0;
                    stored.due_ms = 0;
                    let new_seq = next;
                    next += 1;
                    ready
                        .insert(new_seq, encode(&stored)?.as_slice())
                        .map_err(db_err)?;
                    moved.push((*due_ms, *seq, Some((new_seq, stored.envelope.key))));
                }
            }
            tx.commit().map_err(db_err)?;
            for (due_ms, seq, target) in moved {
                st.delayed.remove(&(due_ms, seq));
                if let Some((new_seq, key)) = target {
                    st.next_seq = st.next_seq.max(new_seq + 1);
                    st.add_ready(new_seq, &key);
                }
            }
        }
        Ok(())
    }

    /// When something may change without a publish/settle: the next due delayed event.
    fn next_wake(st: &State) -> Option<Instant> {
        st.delayed.first().map(|(due, _)| {
            let wait = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
            Instant::now() + Duration::from_millis(wait)
        })
    }

    fn try_receive(self: &Arc<Self>) -> Result<(Option<Delivery>, Option<Instant>), QueueError> {
        let mut st = self.lock();
        self.housekeeping(&mut st)?;
        loop {
            let Some((seq, key)) = st.fifo.peek_free() else {
                let wake = Self::next_wake(&st);
                return Ok((None, wake));
            };
            let tx = self.db.begin_write().map_err(db_err)?;
            let outcome;
            {
                let mut ready = tx.open_table(READY).map_err(db_err)?;
                let found = ready.get(seq).map_err(db_err)?.map(|b| b.value().to_vec());
                match found {
                    None => outcome = None,
                    Some(bytes) => {
                        let mut stored: Stored = decode(&bytes)?;
                        stored.deliveries += 1;
                        if stored.deliveries > DELIVERY_LIMIT {
                            ready.remove(seq).map_err(db_err)?;
                            let dead_seq = st.next_seq;
                            let reason = format!(
                                "delivery limit: delivered {DELIVERY_LIMIT} times without being settled"
                            );
                            let dl = DeadLetter {
                                envelope: stored.envelope,
                                reason,
                                at: Utc::now(),
                            };
                            tx.open_table(DEAD)
                                .map_err(db_err)?
                                .insert(dead_seq, encode(&dl)?.as_slice())
                                .map_err(db_err)?;
                            outcome = Some(None);
                        } else {
                            ready
                                .insert(seq, encode(&stored)?.as_slice())
                                .map_err(db_err)?;
                            outcome = Some(Some(stored.envelope));
                        }
                    }
                }
            }
            tx.commit().map_err(db_err)?;
            match outcome {
                None => {
                    // Memory listed an event the file does not have: drop it from memory.
                    st.remove_ready(seq, &key);
                }
                Some(None) => {
                    tracing::warn!(key = %key, "embedded queue: event dead-lettered by the delivery limit");
                    st.next_seq += 1;
                    st.dead_count += 1;
                    st.remove_ready(seq, &key);
                }
                Some(Some(envelope)) => {
                    let token = match st.start_flight() {
                        Some((s2, _, token)) if s2 == seq => token,
                        _ => {
                            return Err(QueueError::Other(
                                "embedded queue scheduling out of step".into(),
                            ));
                        }
                    };
                    drop(st);
                    let handle = Handle {
                        shared: Arc::downgrade(self),
                        seq,
                        key,
                        token,
                        armed: true,
                    };
                    return Ok((
                        Some(Delivery {
                            envelope,
                            handle: DeliveryHandle::Embedded(handle),
                        }),
                        None,
                    ));
                }
            }
        }
    }

    /// Whether (key, token) may still be settled: the caller holds the flight. (A flight
    /// only ends by being settled or dropped, so this fails only for a second settle.)
    fn check_owner(st: &State, key: &str, token: u64) -> Result<(), QueueError> {
        if st.owns(key, token) {
            Ok(())
        } else {
            Err(QueueError::Other(
                "delivery is no longer in flight (already settled)".into(),
            ))
        }
    }

    fn settle(
        &self,
        (seq, key, token): (u64, String, u64),
        then: Settle,
    ) -> Result<(), QueueError> {
        let mut st = self.lock();
        Self::check_owner(&st, &key, token)?;
        let new_seq = st.next_seq;
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(READY)
            .map_err(db_err)?
            .remove(seq)
            .map_err(db_err)?;
        let mut delayed_at = None;
        let mut dead = false;
        let mut ready_key = None;
        match &then {
            Settle::Ack => {}
            Settle::Ready(envelope) => {
                let stored = Stored {
                    envelope: envelope.clone(),
                    deliveries: 0,
                    due_ms: 0,
                };
                tx.open_table(READY)
                    .map_err(db_err)?
                    .insert(new_seq, encode(&stored)?.as_slice())
                    .map_err(db_err)?;
                ready_key = Some(envelope.key.clone());
            }
            Settle::Delay(envelope, delay) => {
                let due_ms = now_ms().saturating_add(to_ms(*delay));
                let stored = Stored {
                    envelope: envelope.clone(),
                    deliveries: 0,
                    due_ms,
                };
                tx.open_table(DELAYED)
                    .map_err(db_err)?
                    .insert(new_seq, encode(&stored)?.as_slice())
                    .map_err(db_err)?;
                delayed_at = Some(due_ms);
            }
            Settle::Dead(dl) => {
                tx.open_table(DEAD)
                    .map_err(db_err)?
                    .insert(new_seq, encode(dl)?.as_slice())
                    .map_err(db_err)?;
                dead = true;
            }
        }
        tx.commit().map_err(db_err)?;
        st.end_flight(&key, false);
        if !matches!(then, Settle::Ack) {
            st.next_seq += 1;
        }
        if let Some(due) = delayed_at {
            st.delayed.insert((due, new_seq));
        }
        if dead {
            st.dead_count += 1;
        }
        if let Some(k) = ready_key {
            st.add_ready(new_seq, &k);
        }
        Ok(())
    }
}

enum Settle {
    Ack,
    Ready(Envelope),
    Delay(Envelope, Duration),
    Dead(DeadLetter),
}

impl EmbeddedQueue {
    /// Open (or create) the queue file. Events that were in flight when the previous
    /// process stopped are ready again.
    pub fn open(path: &Path, opts: QueueOptions) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                QueueError::Unavailable(format!(
                    "cannot create queue directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let db = Database::create(path).map_err(|e| {
            QueueError::Unavailable(format!(
                "cannot open queue file {} ({e}); is another process using it?",
                path.display()
            ))
        })?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(READY).map_err(db_err)?;
        tx.open_table(DELAYED).map_err(db_err)?;
        tx.open_table(DEAD).map_err(db_err)?;
        tx.commit().map_err(db_err)?;

        let mut st = State::default();
        let mut max_seq = None::<u64>;
        {
            let rx = db.begin_read().map_err(db_err)?;
            let ready = rx.open_table(READY).map_err(db_err)?;
            for row in ready.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                let stored: Stored = decode(v.value())?;
                st.add_ready(k.value(), &stored.envelope.key);
                max_seq = max_seq.max(Some(k.value()));
            }
            let delayed = rx.open_table(DELAYED).map_err(db_err)?;
            for row in delayed.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                let stored: Stored = decode(v.value())?;
                st.delayed.insert((stored.due_ms, k.value()));
                max_seq = max_seq.max(Some(k.value()));
            }
            let dead = rx.open_table(DEAD).map_err(db_err)?;
            for row in dead.iter().map_err(db_err)? {
                let (k, _) = row.map_err(db_err)?;
                st.dead_count += 1;
                max_seq = max_seq.max(Some(k.value()));
            }
        }
        st.next_seq = max_seq.map_or(0, |m| m + 1);
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                state: Mutex::new(st),
                notify: Notify::new(),
                opts,
                pending: Mutex::new(Vec::new()),
                committing: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<Shared>) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| QueueError::Other(format!("embedded queue task failed: {e}")))?
    }

    fn handle(&self, d: Delivery) -> Result<(Envelope, (u64, String, u64)), QueueError> {
        let Delivery { envelope, handle } = d;
        match handle {
            DeliveryHandle::Embedded(mut h) => {
                let (owner, h) = h.disarm();
                if Weak::ptr_eq(&owner, &Arc::downgrade(&self.shared)) {
                    Ok((envelope, h))
                } else {
                    Err(QueueError::Other(
                        "delivery came from another (or an earlier) queue instance; it is redelivered there".into(),
                    ))
                }
            }
            DeliveryHandle::Rabbit(_) => Err(QueueError::Other(
                "delivery came from another queue back end".into(),
            )),
        }
    }

    async fn settle(
        &self,
        d: Delivery,
        then: impl FnOnce(Envelope) -> Settle,
    ) -> Result<(), QueueError> {
        let (envelope, h) = self.handle(d)?;
        let then = then(envelope);
        self.blocking(move |s| s.settle(h, then)).await?;
        self.shared.notify.notify_waiters();
        Ok(())
    }
}

#[async_trait::async_trait]
impl Queue for EmbeddedQueue {
    /// Durable when Ok. Publishes that arrive while a commit is running wait for the next one,
    /// which carries all of them (group commit): one fsync for many POSTs, each still answered
    /// only after its own envelopes are on disk.
    async fn publish(&self, batch: Vec<Envelope>) -> Result<(), QueueError> {
        use std::sync::atomic::Ordering;
        if batch.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((batch, tx));
        if !self.shared.committing.swap(true, Ordering::AcqRel) {
            let shared = Arc::clone(&self.shared);
            tokio::task::spawn_blocking(move || shared.commit_pending());
        }
        let r = rx.await.map_err(|_| {
            QueueError::Other("embedded queue commit task ended without an answer".into())
        })?;
        r?;
        self.shared.notify.notify_waiters();
        Ok(())
    }

    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (found, wake) = self.blocking(|s| s.try_receive()).await?;
            if found.is_some() {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    async fn ack(&self, d: Delivery) -> Result<(), QueueError> {
        self.settle(d, |_| Settle::Ack).await
    }

    async fn retry(&self, d: Delivery, delay: Duration, reason: &str) -> Result<(), QueueError> {
        let max = self.shared.opts.max_attempts;
        let reason = reason.to_owned();
        self.settle(d, move |mut envelope| {
            envelope.attempt = envelope.attempt.saturating_add(1);
            if envelope.attempt > max {
                Settle::Dead(DeadLetter {
                    envelope,
                    reason,
                    at: Utc::now(),
                })
            } else if delay.is_zero() {
                Settle::Ready(envelope)
            } else {
                tracing::debug!(key = %envelope.key, attempt = envelope.attempt, reason = %reason, "event retried");
                Settle::Delay(envelope, delay)
            }
        })
        .await
    }

    async fn defer(&self, d: Delivery, delay: Duration, reason: &str) -> Result<(), QueueError> {
        let reason = reason.to_owned();
        self.settle(d, move |envelope| {
            tracing::debug!(key = %envelope.key, attempt = envelope.attempt, reason = %reason, "event deferred");
            if delay.is_zero() {
                Settle::Ready(envelope)
            } else {
                Settle::Delay(envelope, delay)
            }
        })
        .await
    }

    async fn dead_letter(&self, d: Delivery, reason: &str) -> Result<(), QueueError> {
        let reason = reason.to_owned();
        self.settle(d, move |envelope| {
            Settle::Dead(DeadLetter {
                envelope,
                reason,
                at: Utc::now(),
            })
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.blocking(|s| {
            let rx = s.db.begin_read().map_err(db_err)?;
            let dead = rx.open_table(DEAD).map_err(db_err)?;
            let mut out = Vec::new();
            for row in dead.iter().map_err(db_err)? {
                let (_, v) = row.map_err(db_err)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn replay(&self, id: Option<&str>) -> Result<usize, QueueError> {
        let id = id.map(str::to_owned);
        let n = self
            .blocking(move |s| {
                let mut st = s.lock();
                let tx = s.db.begin_write().map_err(db_err)?;
                let mut replayed = Vec::new();
                {
                    let mut dead = tx.open_table(DEAD).map_err(db_err)?;
                    let mut picked = Vec::new();
                    for row in dead.iter().map_err(db_err)? {
                        let (k, v) = row.map_err(db_err)?;
                        let dl: DeadLetter = decode(v.value())?;
                        if id.as_deref().is_none_or(|id| dl.envelope.id == id) {
                            picked.push((k.value(), dl.envelope));
                        }
                    }
                    let mut ready = tx.open_table(READY).map_err(db_err)?;
                    for (next, (seq, mut envelope)) in (st.next_seq..).zip(picked) {
                        dead.remove(seq).map_err(db_err)?;
                        envelope.attempt = 0;
                        let stored = Stored {
                            envelope,
                            deliveries: 0,
                            due_ms: 0,
                        };
                        ready
                            .insert(next, encode(&stored)?.as_slice())
                            .map_err(db_err)?;
                        replayed.push((next, stored.envelope.key));
                    }
                }
                tx.commit().map_err(db_err)?;
                for (seq, key) in &replayed {
                    st.next_seq = st.next_seq.max(seq + 1);
                    st.dead_count = st.dead_count.saturating_sub(1);
                    st.add_ready(*seq, key);
                }
                Ok(replayed.len())
            })
            .await?;
        if n > 0 {
            self.shared.notify.notify_waiters();
        }
        Ok(n)
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let st = self.shared.lock();
        Ok(QueueDepth {
            ready: st.fifo.len() as u64,
            in_flight: st.inflight.len() as u64,
            delayed: st.delayed.len() as u64,
            dead: st.dead_count,
        })
    }
}
