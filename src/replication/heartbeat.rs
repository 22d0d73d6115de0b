//! The primary's heartbeat: a replicated primary (`EROS_DB_REPLICATION=
//! litestream`) writes the one row of [`HEARTBEAT_TABLE`] every
//! `heartbeat_interval`, so a replica can tell "nothing was written" from
//! "my follower is dead" by how old the newest row it has is.
//!
//! The writer runs on its own thread and its own connection, opened with
//! [`connection::open`]: the PRAGMAs only, no pool checkout (agents' counters
//! never see it) and no agent authorizer (which refuses agent writes to the
//! heartbeat table). A failed write is logged once per streak of failures
//! and never stops the server; the connection is reopened after a failure.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};

use super::HEARTBEAT_TABLE;
use crate::sqlite::connection::{self, ConnectError, ConnectionOptions};

/// Why one heartbeat could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("cannot open the heartbeat connection: {0}")]
    Open(#[from] ConnectError),
    #[error("cannot write the heartbeat row to {HEARTBEAT_TABLE}: {0}")]
    Write(#[from] rusqlite::Error),
}

/// Now, in Unix seconds with fractions, as the heartbeat stores it.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Creates the heartbeat table when missing (the contract's shape: one row,
/// `id = 1`, `written_at` in Unix seconds).
pub fn create_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {HEARTBEAT_TABLE} (\
             id INTEGER PRIMARY KEY CHECK (id = 1), \
             written_at REAL NOT NULL)"
    ))
}

/// Writes the heartbeat row with `written_at` = `at`.
pub fn write(conn: &Connection, at: f64) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO {HEARTBEAT_TABLE} (id, written_at) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at"
        ),
        [at],
    )
    .map(drop)
}

/// The newest heartbeat in the database `conn` reads, `None` when the table
/// or its row does not exist yet.
pub fn read(conn: &Connection) -> rusqlite::Result<Option<f64>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
        [HEARTBEAT_TABLE],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    conn.query_row(
        &format!("SELECT written_at FROM {HEARTBEAT_TABLE} WHERE id = 1"),
        [],
        |row| row.get(0),
    )
    .optional()
}

/// The running heartbeat writer; [`HeartbeatWriter::stop`] ends it.
pub struct HeartbeatWriter {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl HeartbeatWriter {
    /// Writes a heartbeat now and then every `interval`, on a connection
    /// opened with `options` (the pool's: the same file, its identity
    /// checked, never created).
    pub fn start(options: ConnectionOptions, interval: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("eros-heartbeat".into())
            .spawn(move || {
                let mut beat = Beat::new(options);
                loop {
                    beat.once();
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        tracing::info!(
            ?interval,
            table = HEARTBEAT_TABLE,
            "writing the replication heartbeat"
        );
        Ok(Self { stop, thread })
    }

    /// Stops the writer, waiting for a write in progress.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// One writer's connection and failure streak.
struct Beat {
    options: ConnectionOptions,
    conn: Option<Connection>,
    failing: bool,
}

impl Beat {
    fn new(options: ConnectionOptions) -> Self {
        Self {
            options,
            conn: None,
            failing: false,
        }
    }

    fn once(&mut self) {
        match self.try_once() {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the replication heartbeat is written again");
                }
            }
            Err(err) => {
                // A connection that failed may be what fails: open anew.
                self.conn = None;
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        "{err}; replicas will report growing lag until it succeeds (the server \
                         keeps serving)"
                    );
                }
            }
        }
    }

    fn try_once(&mut self) -> Result<(), HeartbeatError> {
        if self.conn.is_none() {
            let conn = connection::open(&self.options)?;
            create_table(&conn)?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_ref().expect("opened above");
        write(conn, unix_now())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_is_written_once_and_then_updated() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(read(&conn).unwrap(), None);
        create_table(&conn).unwrap();
        assert_eq!(read(&conn).unwrap(), None);
        write(&conn, 100.5).unwrap();
        write(&conn, 200.25).unwrap();
        assert_eq!(read(&conn).unwrap(), Some(200.25));
        let rows: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {HEARTBEAT_TABLE}"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 1);
        let refused = conn.execute(
            &format!("INSERT INTO {HEARTBEAT_TABLE} VALUES (2, 1.0)"),
            [],
        );
        assert!(refused.is_err(), "the table holds one row only");
    }
}
