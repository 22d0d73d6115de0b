//! The background maintenance thread: at its first wake it opens the
//! pre-warmed connections the pool was started without ([`Pool::open`] opens
//! one before serving), every interval it runs [`Pool::run_maintenance`],
//! and in between lets go of spare worker processes past their linger
//! ([`super::spares`]). It holds only a weak
//! reference, so it never keeps the pool alive, and it stops when told to
//! or when the pool is gone.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Pool;

pub(crate) struct Maintenance {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Maintenance {
    pub fn start(pool: Weak<Pool>, interval: Duration) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("eros-pool-maintenance".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                let mut warmed = false;
                loop {
                    let wait = next
                        .saturating_duration_since(Instant::now())
                        .min(super::spares::LINGER);
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => match pool.upgrade() {
                            // A pass restores the pre-warmed minimum too.
                            Some(pool) if Instant::now() >= next => {
                                pool.run_maintenance();
                                next = Instant::now() + interval;
                                warmed = true;
                            }
                            Some(pool) if !warmed => {
                                warmed = true;
                                pool.prune_spares();
                                if let Err(err) = pool.prewarm() {
                                    tracing::warn!(
                                        error = %err,
                                        "could not open the pre-warmed connections"
                                    );
                                }
                            }
                            Some(pool) => pool.prune_spares(),
                            None => return,
                        },
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawn the pool maintenance thread");
        Self { stop, thread }
    }

    /// Stops the thread and waits for a pass in progress to finish.
    pub fn stop(self) {
        let _ = self.stop.send(());
        // The last strong reference may be dropped by the thread itself, in
        // which case this runs on that thread and must not join itself.
        if self.thread.thread().id() != std::thread::current().id() {
            let _ = self.thread.join();
        }
    }
}
