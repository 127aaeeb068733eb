//! The status server's connection table: which connections hold one of the slots, which of
//! them are serving a request, and which one to close when a new client needs a slot.
//!
//! A connection is *idle* while no request is in progress on it: before its first request
//! head is complete (a slow or silent client), during the TLS handshake, and between
//! keep-alive requests. When every slot is taken, the connection idle the longest is closed
//! to admit the new one; a connection serving a request is never closed for another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use vpcrouter_plugin_api::sync::lock;

/// One connection's entry.
#[derive(Debug)]
struct Entry<T> {
    /// Requests in progress.
    requests: usize,
    /// Since when no request is in progress (accept time at first).
    idle_since: Instant,
    /// What the caller needs to close it.
    handle: T,
}

/// The connections holding a slot, at most `capacity`; `T` is what closes one.
#[derive(Debug)]
pub struct ConnTable<T> {
    /// Connections served at once, at most: beyond it one idle connection is evicted.
    capacity: usize,
    /// The id of the next connection admitted (ids are never reused, so a freed slot's
    /// late release cannot free another's).
    next_id: u64,
    /// The connections holding a slot, by id.
    conns: HashMap<u64, Entry<T>>,
}

impl<T> ConnTable<T> {
    /// An empty table of `capacity` slots (at least 1).
    pub fn new(capacity: usize) -> ConnTable<T> {
        ConnTable { capacity: capacity.max(1), next_id: 0, conns: HashMap::new() }
    }

    /// Connections holding a slot.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection holds a slot.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Gives a new connection a slot: a free one, or that of the connection idle the
    /// longest, which is removed and whose handle is returned to be closed. `Err(handle)`
    /// when every slot serves a request.
    pub fn admit(&mut self, now: Instant, handle: T) -> Result<(u64, Option<T>), T> {
        let evicted = if self.conns.len() >= self.capacity {
            let Some(victim) = self.oldest_idle() else { return Err(handle) };
            self.conns.remove(&victim).map(|e| e.handle)
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(id, Entry { requests: 0, idle_since: now, handle });
        Ok((id, evicted))
    }

    /// A request started on `id`.
    pub fn begin_request(&mut self, id: u64) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.requests += 1;
        }
    }

    /// A request on `id` ended at `now`.
    pub fn end_request(&mut self, id: u64, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.requests = e.requests.saturating_sub(1);
            if e.requests == 0 {
                e.idle_since = now;
            }
        }
    }

    /// `id` closed: its slot is free. False if it was not in the table (evicted).
    pub fn remove(&mut self, id: u64) -> bool {
        self.conns.remove(&id).is_some()
    }

    /// The connection without a request in progress that has been idle the longest (the
    /// older id on a tie).
    fn oldest_idle(&self) -> Option<u64> {
        self.conns.iter().filter(|(_, e)| e.requests == 0).min_by_key(|(id, e)| (e.idle_since, **id)).map(|(id, _)| *id)
    }
}

/// The table shared by the accept loop and the connection tasks.
pub struct Slots {
    /// The table, with the notifier that closes each connection when it is evicted.
    table: Mutex<ConnTable<Arc<Notify>>>,
}

impl Slots {
    /// `capacity` slots.
    pub fn new(capacity: usize) -> Arc<Slots> {
        Arc::new(Slots { table: Mutex::new(ConnTable::new(capacity)) })
    }

    /// A slot for a connection accepted at `now`, closing the connection idle the longest
    /// if none is free; `None` when every slot serves a request.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Slot> {
        let close = Arc::new(Notify::new());
        let (id, evicted) = lock(&self.table).admit(now, close.clone()).ok()?;
        if let Some(other) = evicted {
            // Stored as a permit: the connection closes even if it is not waiting right now.
            other.notify_one();
        }
        Some(Slot { slots: self.clone(), id, close, started: AtomicBool::new(false) })
    }

    /// Connections holding a slot.
    pub fn len(&self) -> usize {
        lock(&self.table).len()
    }

    /// True when no connection holds a slot.
    pub fn is_empty(&self) -> bool {
        lock(&self.table).is_empty()
    }
}

/// A connection's slot; dropping it frees the slot.
pub struct Slot {
    /// The table the slot is freed in when dropped.
    slots: Arc<Slots>,
    /// The connection's entry in the table.
    id: u64,
    /// Notified when the connection must close to admit a new client.
    close: Arc<Notify>,
    /// Set by the first request: until then the head deadline applies.
    started: AtomicBool,
}

impl Slot {
    /// Resolves when the connection must close to admit another.
    pub async fn evicted(&self) {
        self.close.notified().await
    }

    /// Marks a request in progress until the returned guard drops.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.started.store(true, Ordering::Relaxed);
        lock(&self.slots.table).begin_request(self.id);
        RequestGuard(self.clone())
    }

    /// True once a request head was received on this connection.
    pub fn has_started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots.table).remove(self.id);
    }
}

/// A request in progress (see [`Slot::request`]).
pub struct RequestGuard(Arc<Slot>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        lock(&self.0.slots.table).end_request(self.0.id, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn free_slots_first_then_the_oldest_idle_connection_is_closed() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut table = ConnTable::new(3);
        let (a, none) = table.admit(at(0), "a").unwrap();
        assert!(none.is_none());
        let (b, _) = table.admit(at(1), "b").unwrap();
        let (c, _) = table.admit(at(2), "c").unwrap();
        assert_eq!(table.len(), 3);
        // Full: "a" is idle the longest.
        let (d, evicted) = table.admit(at(3), "d").unwrap();
        assert_eq!(evicted, Some("a"));
        assert!(!table.remove(a), "a left the table when evicted");
        // "b" served a request that ended at 10 s: now "c" (idle since 2 s) is the oldest idle.
        table.begin_request(b);
        table.end_request(b, at(10));
        assert_eq!(table.admit(at(11), "e").unwrap().1, Some("c"));
        assert_eq!(table.admit(at(12), "f").unwrap().1, Some("d"));
        assert_eq!(table.admit(at(13), "g").unwrap().1, Some("b"));
        let _ = (c, d);
    }

    #[test]
    fn a_connection_serving_a_request_is_never_closed() {
        let t0 = Instant::now();
        let mut table = ConnTable::new(2);
        let (a, _) = table.admit(t0, "a").unwrap();
        table.admit(t0 + Duration::from_secs(1), "b").unwrap();
        table.begin_request(a);
        // "a" is older but busy: "b" goes.
        let (c, evicted) = table.admit(t0 + Duration::from_secs(2), "c").unwrap();
        assert_eq!(evicted, Some("b"));
        table.begin_request(c);
        // Every slot busy: the new one is refused, nothing closed.
        assert_eq!(table.admit(t0 + Duration::from_secs(3), "d"), Err("d"));
        assert_eq!(table.len(), 2);
        // Two requests on "a" (pipelining): idle only after both.
        table.begin_request(a);
        table.end_request(a, t0 + Duration::from_secs(4));
        assert_eq!(table.admit(t0 + Duration::from_secs(5), "e"), Err("e"));
        table.end_request(a, t0 + Duration::from_secs(6));
        assert_eq!(table.admit(t0 + Duration::from_secs(7), "f").unwrap().1, Some("a"));
        // A freed slot is reused without closing anyone.
        assert!(table.remove(c));
        assert_eq!(table.admit(t0 + Duration::from_secs(8), "g").unwrap().1, None);
    }

    #[tokio::test]
    async fn shared_slots_signal_the_evicted_connection_and_free_on_drop() {
        let slots = Slots::new(1);
        let first = Arc::new(slots.admit(Instant::now()).unwrap());
        {
            let _busy = first.request();
            assert!(first.has_started());
            assert!(slots.admit(Instant::now()).is_none(), "the only slot serves a request");
        }
        let second = slots.admit(Instant::now()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), first.evicted()).await.expect("first is told to close");
        assert_eq!(slots.len(), 1);
        drop(first);
        assert_eq!(slots.len(), 1, "dropping the evicted one does not free the new one's slot");
        drop(second);
        assert!(slots.is_empty());
    }
}
