//! A replica's replication lag: how old the newest heartbeat in its copy
//! is. A thread of its own polls the copy on its own read-only connection
//! (never a pool checkout, so agents' counters do not see it, and never on
//! a probe's clock), and readiness and `/metrics` read the last result, so
//! both answer at once.
//!
//! The lag is now minus the newest `written_at` the copy holds. The primary
//! writes every `heartbeat_interval`, so the figure reads up to one interval
//! (plus one poll) high: a replica that is fully current shows between 0 and
//! that much.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::heartbeat;
use crate::sqlite::connection::{self, ConnectionOptions};
use crate::sqlite::health::{DatabaseHealth, FileIdentity};

/// Longest pause between two reads of the heartbeat.
const MAX_POLL: Duration = Duration::from_secs(1);
/// Shortest pause between two reads.
const MIN_POLL: Duration = Duration::from_millis(50);

/// What the last poll found.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    /// The newest heartbeat read, Unix seconds.
    newest: Option<f64>,
    /// Why the last poll could not read one.
    error: Option<String>,
}

/// The replica's lag as last measured. Cheap to read; shared by readiness
/// and the metrics.
#[derive(Debug)]
pub struct ReplicaLag {
    seen: Mutex<Seen>,
    max_lag: Duration,
}

impl ReplicaLag {
    pub fn new(max_lag: Duration) -> Self {
        Self {
            seen: Mutex::new(Seen::default()),
            max_lag,
        }
    }

    /// Now minus the newest heartbeat seen, once one has been seen.
    pub fn lag(&self) -> Option<Duration> {
        let newest = self.seen.lock().unwrap().newest?;
        Some(Duration::from_secs_f64(
            (heartbeat::unix_now() - newest).max(0.0),
        ))
    }

    /// `Ok(lag)` while within `EROS_DB_REPLICA_MAX_LAG`, else why not ready.
    pub fn verdict(&self) -> Result<Duration, String> {
        let seen = self.seen.lock().unwrap().clone();
        let Some(lag) = self.lag() else {
            return Err(match seen.error {
                Some(error) => format!("no heartbeat read yet: {error}"),
                None => "no heartbeat yet: the primary's first heartbeat has not reached this \
                         replica"
                    .to_string(),
            });
        };
        if lag > self.max_lag {
            return Err(format!(
                "replication lag {:.1}s exceeds EROS_DB_REPLICA_MAX_LAG={}s (newest heartbeat \
                 this replica holds)",
                lag.as_secs_f64(),
                self.max_lag.as_secs_f64()
            ));
        }
        Ok(lag)
    }

    fn record(&self, read: Result<Option<f64>, String>) {
        let mut seen = self.seen.lock().unwrap();
        match read {
            // A copy without the row keeps the last one seen: the lag grows.
            Ok(None) => seen.error = None,
            Ok(Some(newest)) => {
                seen.newest = Some(newest);
                seen.error = None;
            }
            Err(error) => seen.error = Some(error),
        }
    }
}

/// The polling thread; [`LagMonitor::stop`] ends it.
pub struct LagMonitor {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl LagMonitor {
    /// Polls the replica's file (as `health` names it, on connections opened
    /// with `options`) every `heartbeat_interval / 4` (50 ms to 1 s) into
    /// `lag`.
    pub fn start(
        lag: Arc<ReplicaLag>,
        options: ConnectionOptions,
        health: DatabaseHealth,
        heartbeat_interval: Duration,
    ) -> std::io::Result<Self> {
        let every = (heartbeat_interval / 4).clamp(MIN_POLL, MAX_POLL);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("eros-replica-lag".into())
            .spawn(move || {
                let mut reader = Reader {
                    options,
                    health,
                    conn: None,
                };
                loop {
                    lag.record(reader.read());
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The poller's connection, reopened when the follower puts a new file at
/// the path.
struct Reader {
    options: ConnectionOptions,
    health: DatabaseHealth,
    conn: Option<(Connection, Option<FileIdentity>)>,
}

impl Reader {
    fn read(&mut self) -> Result<Option<f64>, String> {
        if let Err(fault) = self.health.verify_file() {
            self.conn = None;
            return Err(fault.to_string());
        }
        let identity = self.health.identity();
        if self.conn.as_ref().is_none_or(|(_, on)| *on != identity) {
            let mut options = self.options.clone();
            options.create = false;
            options.identity = identity;
            let conn = connection::open_probe(&options).map_err(|err| err.to_string())?;
            self.conn = Some((conn, identity));
        }
        let (conn, _) = self.conn.as_ref().expect("opened above");
        heartbeat::read(conn).map_err(|err| {
            self.conn = None;
            format!("cannot read the heartbeat: {err}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_heartbeat_is_not_ready_and_an_old_one_is_too_much_lag() {
        let lag = ReplicaLag::new(Duration::from_secs(30));
        assert!(lag.verdict().unwrap_err().contains("no heartbeat yet"));
        lag.record(Ok(Some(heartbeat::unix_now() - 120.0)));
        let err = lag.verdict().unwrap_err();
        assert!(err.contains("exceeds EROS_DB_REPLICA_MAX_LAG=30s"), "{err}");
        lag.record(Ok(Some(heartbeat::unix_now())));
        assert!(lag.verdict().unwrap() < Duration::from_secs(30));
    }

    #[test]
    fn a_failed_read_keeps_the_last_heartbeat_seen() {
        let lag = ReplicaLag::new(Duration::from_secs(30));
        lag.record(Ok(Some(heartbeat::unix_now() - 5.0)));
        lag.record(Err("gone".into()));
        let measured = lag.lag().unwrap();
        assert!(measured >= Duration::from_secs(5), "{measured:?}");
    }
}
