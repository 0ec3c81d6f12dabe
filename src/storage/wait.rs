//! Tiny single-threaded wake-up primitives (no locks: everything lives on one shard).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};

/// A set of tasks waiting for a condition; the waiter re-checks its condition when woken.
#[derive(Default)]
pub(crate) struct WaitList {
    wakers: RefCell<Vec<Waker>>,
}

impl WaitList {
    /// Registers the current task (deduplicated).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut v = self.wakers.borrow_mut();
        if !v.iter().any(|w| w.will_wake(waker)) {
            v.push(waker.clone());
        }
    }

    /// Wakes every registered task and forgets them.
    pub(crate) fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }
}

/// A single-consumer wake-up flag for the flusher task.
#[derive(Default)]
pub(crate) struct Notify {
    flag: Cell<bool>,
    closed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Sets the flag and wakes the consumer.
    pub(crate) fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Marks closed and wakes the consumer for good.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.notify();
    }

    /// Whether [`Notify::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Resolves once the flag is set (and clears it).
    pub(crate) fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}
