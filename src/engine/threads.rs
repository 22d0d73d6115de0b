//! The threads statements run on: a small pool of our own instead of
//! Tokio's blocking pool, for one reason. A statement abandoned at its
//! deadline (see [`super::watch`]) may stay inside one SQLite step for
//! minutes; its thread is demoted to the lowest CPU priority (nice 19) so
//! it cannot starve the calls still being served, and once SQLite returns
//! the thread exits rather than serve later calls at that priority (an
//! unprivileged process cannot raise a thread's priority back).
//!
//! Otherwise it behaves like Tokio's blocking pool: a job goes to an idle
//! thread or a new one, and a thread idle for [`KEEP_ALIVE`] exits.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long an idle thread waits for work before it exits.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// Set by a job whose statement was abandoned and demoted: the thread
    /// exits after it.
    static RETIRE: Cell<bool> = const { Cell::new(false) };
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
}

/// A cloneable handle to the statement threads.
#[derive(Clone, Default)]
pub struct SqlThreads {
    shared: Arc<Shared>,
}

/// A thread's identity for [`demote`].
#[derive(Debug, Clone, Copy)]
pub struct ThreadId(libc::pid_t);

thread_local! {
    /// The calling thread's id, asked of the kernel once per thread rather
    /// than once per statement.
    static CURRENT: libc::pid_t = {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    };
}

impl ThreadId {
    /// The calling thread.
    pub fn current() -> Self {
        Self(CURRENT.with(|id| *id))
    }
}

/// Lowers a thread's CPU priority to the least (nice 19): under contention
/// it gets about 1.5% of a core against a thread at the default priority.
pub fn demote(thread: ThreadId) {
    // SAFETY: setpriority on a thread id of this process; a failure (the
    // thread already gone) changes nothing.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, thread.0 as libc::id_t, 19) };
}

/// Makes the calling thread exit once its current job is done.
pub fn retire_current_thread() {
    RETIRE.with(|retire| retire.set(true));
}

impl SqlThreads {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` on a statement thread; its result arrives on the
    /// returned channel (closed without a value if `work` panicked).
    pub fn spawn<T, F>(&self, work: F) -> tokio::sync::oneshot::Receiver<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        let mut queue = self.shared.queue.lock().unwrap();
        queue.jobs.push_back(job);
        if queue.idle > 0 {
            // Woken after the lock is released: a thread woken while it is
            // held would wake only to block on it, two more system calls
            // and context switches on every call.
            drop(queue);
            self.shared.work.notify_one();
        } else {
            queue.threads += 1;
            drop(queue);
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name("eros-sql".into())
                .spawn(move || run_jobs(&shared));
            if let Err(err) = started {
                // The job stays queued for a thread that frees up.
                self.shared.queue.lock().unwrap().threads -= 1;
                tracing::error!(error = %err, "cannot start a statement thread");
            }
        }
        rx
    }

    /// Threads alive now (busy or idle).
    pub fn threads(&self) -> usize {
        self.shared.queue.lock().unwrap().threads
    }
}

fn run_jobs(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.queue.lock().unwrap();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                queue.idle += 1;
                let (next, waited) = shared.work.wait_timeout(queue, KEEP_ALIVE).unwrap();
                queue = next;
                queue.idle -= 1;
                if waited.timed_out() && queue.jobs.is_empty() {
                    queue.threads -= 1;
                    return;
                }
            }
        };
        // A panicking job drops its result sender: the caller sees that.
        let _ = catch_unwind(AssertUnwindSafe(job));
        if RETIRE.with(Cell::get) {
            shared.queue.lock().unwrap().threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of(thread: ThreadId) -> i64 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", thread.0)).unwrap();
        // Field 19 (nice), counted after the command name's closing paren.
        let after = stat.rsplit_once(')').unwrap().1;
        after.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn a_job_runs_and_its_result_arrives() {
        let threads = SqlThreads::new();
        assert_eq!(threads.spawn(|| 6 * 7).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn an_idle_thread_is_reused() {
        let threads = SqlThreads::new();
        let first = threads.spawn(ThreadId::current).await.unwrap();
        // As a paced client does: the next call comes after the thread has
        // gone back to waiting (one sent at once may find it still busy and
        // start another, as with Tokio's blocking pool).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = threads.spawn(ThreadId::current).await.unwrap();
        assert_eq!(first.0, second.0);
        assert_eq!(threads.threads(), 1);
    }

    #[tokio::test]
    async fn a_panicking_job_closes_its_channel_and_the_thread_lives_on() {
        let threads = SqlThreads::new();
        assert!(threads.spawn(|| panic!("boom")).await.is_err());
        assert_eq!(threads.spawn(|| 1).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_demoted_thread_retires_after_its_job() {
        let threads = SqlThreads::new();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let done = threads.spawn(move || {
            let me = ThreadId::current();
            demote(me);
            seen_tx.send(nice_of(me)).unwrap();
            retire_current_thread();
            me
        });
        let demoted = done.await.unwrap();
        assert_eq!(seen_rx.recv().unwrap(), 19);
        let next = threads.spawn(ThreadId::current).await.unwrap();
        assert_ne!(next.0, demoted.0, "the demoted thread served no more jobs");
        assert_eq!(nice_of(next), 0);
    }
}
