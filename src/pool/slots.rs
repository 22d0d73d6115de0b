//! Checkout slots: the QueuePool cap (`pool_size + max_overflow`
//! connections handed out at once), kept apart from r2d2's own maximum.
//!
//! A statement abandoned at its deadline (stuck inside one long SQLite
//! step, see `engine::watch`) keeps its connection until SQLite returns,
//! which may be minutes. If it also kept its place under the cap, a few such
//! calls would exhaust the pool for everyone. So every checkout holds a
//! [`Slot`]; an abandoned statement gives its slot back at once, and r2d2 is
//! allowed that many extra connections (the abandoned reserve) to replace
//! it. The cap on what callers hold stays exact.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The free slots, shared by the pool and every [`Slot`].
#[derive(Debug)]
pub struct Slots {
    free: Mutex<u32>,
    returned: Condvar,
}

/// One place under the cap; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += 1;
        self.0.returned.notify_one();
    }
}

impl Slots {
    pub fn new(capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(capacity),
            returned: Condvar::new(),
        })
    }

    /// Takes a slot, waiting at most `timeout` for one to come free.
    pub fn acquire(self: &Arc<Self>, timeout: Duration) -> Option<Slot> {
        let deadline = Instant::now() + timeout;
        let mut free = self.free.lock().unwrap();
        while *free == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            free = self.returned.wait_timeout(free, left).unwrap().0;
        }
        *free -= 1;
        Some(Slot(Arc::clone(self)))
    }

    /// Takes a slot if one is free, without waiting.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.acquire(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back_when_dropped() {
        let slots = Slots::new(2);
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert!(slots.try_acquire().is_some());
    }

    #[test]
    fn a_waiter_gets_the_slot_another_thread_returns() {
        let slots = Slots::new(1);
        let held = slots.try_acquire().unwrap();
        let giver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        assert!(slots.acquire(Duration::from_secs(10)).is_some());
        giver.join().unwrap();
    }
}
