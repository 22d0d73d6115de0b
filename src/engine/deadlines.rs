//! One thread that keeps every call's deadline, instead of a Tokio timer
//! per call.
//!
//! Registering a Tokio timer that is due before anything else in the timer
//! wheel unparks the runtime's driver (an `eventfd` write and one more
//! `epoll_wait` return) and takes the wheel's lock twice; with one call in
//! flight that was every call. Here a call puts its deadline in a queue
//! ordered by time and awaits a [`Notify`] the watcher thread rings when the
//! deadline passes. The watcher sleeps until the earliest deadline and is
//! woken only when a call's deadline is earlier than the one it sleeps for
//! (never, with the engine's single `query_timeout`, while it sleeps for
//! one) or when it was idle with nothing queued; so a paced call costs a
//! lock and a queue push, no system call.
//!
//! A call that finishes marks its alarm done ([`Armed`]'s drop); done
//! alarms are taken off the front of the queue by the next call, and the
//! whole queue is swept when it grows, so a statement stuck past others
//! cannot make the queue grow with every call behind it.
//!
//! If the watcher thread cannot be started, each call falls back to a Tokio
//! timer: a deadline is never lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Queue length below which done alarms behind a live one are left for
/// the front sweep.
const SWEEP_FLOOR: usize = 32;

/// The deadline keeper one [`super::QueryEngine`] owns.
pub struct Deadlines {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Alarms by deadline, earliest first.
    queue: VecDeque<(Instant, Arc<Alarm>)>,
    /// The watcher thread is running; `None` before the first call,
    /// `Some(false)` if it could not be started.
    watcher: Option<bool>,
    /// When the sleeping watcher wakes next; `None` while it waits for work.
    sleeping_until: Option<Instant>,
    /// Queue length after the last full sweep.
    swept_len: usize,
    shutdown: bool,
}

/// One call's alarm.
#[derive(Default)]
struct Alarm {
    rang: Notify,
    /// The call no longer waits for it.
    done: AtomicBool,
}

impl Alarm {
    fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
}

/// A call's armed deadline; disarmed when dropped.
pub struct Armed {
    alarm: Arc<Alarm>,
    deadline: Instant,
    /// No watcher thread: a Tokio timer keeps this deadline.
    fallback: bool,
}

impl Armed {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Resolves when the deadline has passed.
    pub async fn passed(&self) {
        if self.fallback {
            tokio::time::sleep_until(self.deadline.into()).await;
        } else {
            self.alarm.rang.notified().await;
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.alarm.done.store(true, Ordering::Relaxed);
    }
}

impl Deadlines {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Arms an alarm for `timeout` from now.
    pub fn arm(&self, timeout: Duration) -> Armed {
        let alarm = Arc::new(Alarm::default());
        let mut state = self.shared.state.lock().unwrap();
        let deadline = Instant::now() + timeout;
        if state.watcher.is_none() {
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name("eros-deadlines".into())
                .stack_size(64 * 1024)
                .spawn(move || watch(&shared));
            if let Err(err) = &started {
                tracing::error!(error = %err, "cannot start the deadline thread; using timers");
            }
            state.watcher = Some(started.is_ok());
        }
        if state.watcher == Some(false) {
            return Armed {
                alarm,
                deadline,
                fallback: true,
            };
        }
        while state.queue.front().is_some_and(|(_, a)| a.is_done()) {
            state.queue.pop_front();
        }
        if state.queue.len() > SWEEP_FLOOR.max(2 * state.swept_len) {
            state.queue.retain(|(_, a)| !a.is_done());
            state.swept_len = state.queue.len();
        }
        // Deadlines come in time order (one timeout, a clock read under the
        // lock), so this is the back; the search keeps any other order right.
        let at = state.queue.partition_point(|(when, _)| *when <= deadline);
        state.queue.insert(at, (deadline, Arc::clone(&alarm)));
        let wake = match state.sleeping_until {
            None => true,
            Some(until) => deadline < until,
        };
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
        Armed {
            alarm,
            deadline,
            fallback: false,
        }
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().shutdown = true;
        self.shared.wake.notify_one();
    }
}

/// The watcher thread: rings each alarm at its deadline.
fn watch(shared: &Shared) {
    let mut state = shared.state.lock().unwrap();
    loop {
        if state.shutdown {
            return;
        }
        while state.queue.front().is_some_and(|(_, a)| a.is_done()) {
            state.queue.pop_front();
        }
        let Some(&(when, _)) = state.queue.front() else {
            state.sleeping_until = None;
            state = shared.wake.wait(state).unwrap();
            continue;
        };
        let now = Instant::now();
        if when <= now {
            let (_, alarm) = state.queue.pop_front().expect("a front entry");
            drop(state);
            alarm.rang.notify_one();
            state = shared.state.lock().unwrap();
            continue;
        }
        state.sleeping_until = Some(when);
        state = shared.wake.wait_timeout(state, when - now).unwrap().0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_alarm_rings_at_its_deadline() {
        let deadlines = Deadlines::new();
        let start = Instant::now();
        let armed = deadlines.arm(Duration::from_millis(30));
        armed.passed().await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[tokio::test]
    async fn an_earlier_deadline_wakes_a_watcher_sleeping_for_a_later_one() {
        let deadlines = Deadlines::new();
        let _late = deadlines.arm(Duration::from_secs(60));
        // Let the watcher go to sleep for the late one.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        deadlines.arm(Duration::from_millis(20)).passed().await;
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn alarms_ring_in_order_and_done_ones_are_skipped() {
        let deadlines = Deadlines::new();
        drop(deadlines.arm(Duration::from_millis(10)));
        let second = deadlines.arm(Duration::from_millis(20));
        let third = deadlines.arm(Duration::from_millis(40));
        second.passed().await;
        third.passed().await;
        assert!(Instant::now() >= third.deadline());
    }

    #[test]
    fn finished_calls_do_not_pile_up_behind_a_stuck_one() {
        let deadlines = Deadlines::new();
        let _stuck = deadlines.arm(Duration::from_secs(60));
        for _ in 0..10_000 {
            drop(deadlines.arm(Duration::from_secs(60)));
        }
        let len = deadlines.shared.state.lock().unwrap().queue.len();
        assert!(len <= 2 * SWEEP_FLOOR + 2, "{len}");
    }
}
