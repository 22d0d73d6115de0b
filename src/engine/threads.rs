//! The threads that wait on workers: each call's blocking half (checkout,
//! then the exchange with its worker process) runs on one, never on an
//! async worker.
//!
//! A small pool of our own rather than Tokio's blocking pool, for two
//! reasons. It is bounded: past `max_threads` a call is refused at once
//! ([`Saturated`]) instead of queued behind calls that may each wait out
//! the checkout timeout. And a job never waits in the queue while a thread
//! could take it: a new thread starts unless enough idle threads are
//! already coming for every queued job (counting idle threads alone, a
//! burst could queue jobs behind one idle thread that several spawns had
//! each counted on, and a paced client then found its every call stuck).
//!
//! No thread can stay stuck: a worker whose statement overruns is killed
//! (see [`super::watch`]), which ends its thread's wait. A thread idle for
//! [`KEEP_ALIVE`] exits.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long an idle thread waits for work before it exits.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    max_threads: usize,
}

/// A cloneable handle to the statement threads.
#[derive(Clone)]
pub struct SqlThreads {
    shared: Arc<Shared>,
}

/// Every thread is busy and no more may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturated {
    pub threads: usize,
}

impl SqlThreads {
    /// Threads that start as needed, at most `max_threads` at once.
    pub fn new(max_threads: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                work: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
        }
    }

    /// Runs `work` on a statement thread; its result arrives on the
    /// returned channel (closed without a value if `work` panicked).
    pub fn spawn<T, F>(&self, work: F) -> Result<tokio::sync::oneshot::Receiver<T>, Saturated>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        let mut queue = self.shared.queue.lock().unwrap();
        if queue.idle > queue.jobs.len() {
            queue.jobs.push_back(job);
            // Woken after the lock is released: a thread woken while it is
            // held would wake only to block on it, two more system calls
            // and context switches on every call.
            drop(queue);
            self.shared.work.notify_one();
            return Ok(rx);
        }
        if queue.threads >= self.shared.max_threads {
            return Err(Saturated {
                threads: queue.threads,
            });
        }
        queue.jobs.push_back(job);
        queue.threads += 1;
        drop(queue);
        let shared = Arc::clone(&self.shared);
        let started = std::thread::Builder::new()
            .name("eros-sql".into())
            .spawn(move || run_jobs(&shared));
        if let Err(err) = started {
            let mut queue = self.shared.queue.lock().unwrap();
            queue.threads -= 1;
            // The job stays queued for a thread that frees up, if any.
            let stranded = queue.threads == 0;
            drop(queue);
            tracing::error!(error = %err, "cannot start a statement thread");
            if stranded {
                return Err(Saturated { threads: 0 });
            }
        }
        Ok(rx)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn a_job_runs_and_its_result_arrives() {
        let threads = SqlThreads::new(4);
        assert_eq!(threads.spawn(|| 6 * 7).unwrap().await.unwrap(), 42);
    }

    #[tokio::test]
    async fn an_idle_thread_is_reused() {
        let threads = SqlThreads::new(4);
        let first = threads
            .spawn(|| std::thread::current().id())
            .unwrap()
            .await
            .unwrap();
        // As a paced client does: the next call comes after the thread has
        // gone back to waiting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = threads
            .spawn(|| std::thread::current().id())
            .unwrap()
            .await
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(threads.threads(), 1);
    }

    #[tokio::test]
    async fn a_panicking_job_closes_its_channel_and_the_thread_lives_on() {
        let threads = SqlThreads::new(4);
        assert!(threads.spawn(|| panic!("boom")).unwrap().await.is_err());
        assert_eq!(threads.spawn(|| 1).unwrap().await.unwrap(), 1);
    }

    #[test]
    fn jobs_sent_at_once_to_one_idle_thread_each_get_a_thread() {
        // The wedge: one idle thread, then a burst. Each job of the burst
        // must run at once, not wait behind a job that blocks.
        let threads = SqlThreads::new(8);
        let (done_tx, done_rx) = mpsc::channel();
        drop(threads.spawn(|| ()).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(threads.threads(), 1);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        for _ in 0..3 {
            let release_rx = Arc::clone(&release_rx);
            drop(threads.spawn(move || {
                let _ = release_rx.lock().unwrap().recv();
            }));
        }
        // A fourth job must not queue behind the three blocked ones.
        drop(threads.spawn(move || done_tx.send(()).unwrap()));
        let ran = done_rx.recv_timeout(Duration::from_secs(5));
        drop(release_tx);
        assert!(ran.is_ok(), "a job waited behind blocked jobs");
    }

    #[test]
    fn past_its_bound_a_job_is_refused_at_once() {
        let threads = SqlThreads::new(2);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        for _ in 0..2 {
            let release_rx = Arc::clone(&release_rx);
            threads
                .spawn(move || {
                    let _ = release_rx.lock().unwrap().recv();
                })
                .unwrap();
        }
        assert_eq!(threads.spawn(|| ()).unwrap_err(), Saturated { threads: 2 });
        drop(release_tx);
    }
}
