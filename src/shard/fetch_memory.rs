//! The per-shard budget of memory held by Fetch responses (`shard.fetch.memory.bytes`, split
//! evenly over the shards).
//!
//! A Fetch response is zero-copy: it holds the batch buffers themselves until the connection's
//! writer has sent them. A read from disk allocates those buffers for the response alone, so a
//! client that asks for gigabytes and never reads its responses would make the broker hold
//! whatever it asked for. Each Fetch therefore reserves its bytes here before it reads, on the
//! shard that serves its connection (where the response is held, whichever shard read it), and
//! gives them back when the response has been written or dropped (the connection died).
//!
//! What counts: bytes allocated for the response, that is the disk read buffers its batches
//! are slices of (whole buffers, the unused tail of the last one included). A batch still in
//! the batch cache costs nothing here: the cache already holds it and counts it against
//! `shard.batch.cache.bytes`, and many responses share it. (A cached batch evicted while a
//! response still holds it outlives the cache's count; that is bounded per connection by
//! `connection.response.buffer.bytes` plus one response.)
//!
//! When the budget is exhausted a Fetch gets fewer bytes, never a wait: its reservation is what
//! is left (possibly zero), and with zero it still returns its first batch (KIP-74: a consumer
//! must make progress even with a batch larger than its limits), charged as an overdraft that
//! later fetches see as less room. Waiting was rejected: memory is freed only when clients read
//! their responses, so clients that never read would make every other consumer wait behind
//! them, indefinitely. Never waiting means a Fetch cannot deadlock on this budget and a
//! well-behaved client's latency does not depend on other clients' reading. The overdraft is
//! bounded: one Fetch per connection reads at a time (see `server::connection`), and each
//! overdraws by at most one batch per owner shard.
//!
//! Single-threaded (`Rc`, `Cell`): lives on its shard's executor, no locks.

use std::cell::Cell;
use std::rc::Rc;

/// The bytes of one shard's in-flight Fetch responses, against a capacity.
#[derive(Debug)]
pub struct FetchMemory {
    capacity: usize,
    used: Cell<usize>,
    peak: Cell<usize>,
}

impl FetchMemory {
    /// A budget of `capacity` bytes, none used.
    pub fn new(capacity: usize) -> Rc<FetchMemory> {
        Rc::new(FetchMemory {
            capacity,
            used: Cell::new(0),
            peak: Cell::new(0),
        })
    }

    /// The configured capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes currently reserved (may exceed the capacity by the overdrafts of first batches).
    pub fn in_use(&self) -> usize {
        self.used.get()
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> usize {
        self.peak.get()
    }

    /// Reserves up to `want` bytes: all of it if free, else what is free (possibly zero). Never
    /// waits. The bytes come back when the reservation is dropped.
    pub fn reserve(self: &Rc<Self>, want: usize) -> FetchReservation {
        let free = self.capacity.saturating_sub(self.used.get());
        let bytes = want.min(free);
        self.add(bytes);
        FetchReservation {
            pool: self.clone(),
            bytes,
        }
    }

    fn add(&self, n: usize) {
        let used = self.used.get().saturating_add(n);
        self.used.set(used);
        if used > self.peak.get() {
            self.peak.set(used);
        }
    }

    fn sub(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }
}

/// Bytes of a [`FetchMemory`] held by one Fetch; returned to it when dropped.
#[derive(Debug)]
pub struct FetchReservation {
    pool: Rc<FetchMemory>,
    bytes: usize,
}

impl FetchReservation {
    /// The bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the reservation exactly `held` bytes, what the response really holds after its
    /// read: the unused rest goes back to the budget; more than reserved (an obligatory first
    /// batch) is charged even past the capacity.
    pub fn settle(&mut self, held: usize) {
        if held > self.bytes {
            self.pool.add(held - self.bytes);
        } else {
            self.pool.sub(self.bytes - held);
        }
        self.bytes = held;
    }
}

impl Drop for FetchReservation {
    fn drop(&mut self) {
        self.pool.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_what_is_free_and_never_more() {
        let m = FetchMemory::new(100);
        let a = m.reserve(60);
        assert_eq!(a.bytes(), 60);
        let b = m.reserve(60);
        assert_eq!(b.bytes(), 40, "only what is left");
        let c = m.reserve(10);
        assert_eq!(c.bytes(), 0, "exhausted: zero, not a wait");
        assert_eq!(m.in_use(), 100);
        drop(a);
        assert_eq!(m.in_use(), 40);
        drop((b, c));
        assert_eq!(m.in_use(), 0);
    }

    #[test]
    fn settle_returns_the_rest_or_charges_an_overdraft() {
        let m = FetchMemory::new(100);
        let mut a = m.reserve(100);
        a.settle(30);
        assert_eq!(m.in_use(), 30);
        let mut b = m.reserve(500);
        assert_eq!(b.bytes(), 70);
        b.settle(150); // a first batch larger than the grant
        assert_eq!(m.in_use(), 180);
        assert_eq!(
            m.reserve(1).bytes(),
            0,
            "overdrawn: later fetches get nothing"
        );
        drop(b);
        assert_eq!(m.in_use(), 30);
        drop(a);
        assert_eq!(m.in_use(), 0);
        assert_eq!(m.peak(), 180);
    }
}
