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
    state: Mutex<State>,
    returned: Condvar,
}

#[derive(Debug)]
struct State {
    free: u32,
    /// Callers waiting in [`Slots::acquire`]: a slot given back wakes one
    /// only if there is one (`notify_one` is a system call even for none,
    /// and a slot comes back with every call).
    waiting: u32,
}

/// One place under the cap; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.free += 1;
        if state.waiting > 0 {
            self.0.returned.notify_one();
        }
    }
}

impl Slots {
    pub fn new(capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: capacity,
                waiting: 0,
            }),
            returned: Condvar::new(),
        })
    }

    /// Takes a slot, waiting at most `timeout` for one to come free.
    pub fn acquire(self: &Arc<Self>, timeout: Duration) -> Option<Slot> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        while state.free == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state.waiting += 1;
            state = self.returned.wait_timeout(state, left).unwrap().0;
            state.waiting -= 1;
        }
        state.free -= 1;
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

    #[test]
    fn every_waiter_is_woken_in_turn_as_slots_come_back() {
        let slots = Slots::new(1);
        let held = slots.try_acquire().unwrap();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let slots = Arc::clone(&slots);
                std::thread::spawn(move || {
                    let slot = slots.acquire(Duration::from_secs(10));
                    std::thread::sleep(Duration::from_millis(5));
                    slot.is_some()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        for waiter in waiters {
            assert!(waiter.join().unwrap(), "a waiter was never woken");
        }
        assert_eq!(slots.state.lock().unwrap().waiting, 0);
    }
}
