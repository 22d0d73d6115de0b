//! A call's exchange with the worker process holding its connection: the
//! call frame out, then the worker's frames in (a write's question whether
//! it may still commit, then the reply), until the reply settles the call.
//!
//! The protocol ([`Exchange`]) is written once and driven two ways:
//!
//! - [`on_thread`], on a statement thread: checks out a connection, waiting
//!   as r2d2 does, then sends and receives blocking;
//! - [`on_task`], on an async task, for a read that found a connection
//!   idle ([`Pool::try_get`]): no thread is woken and none wakes the
//!   runtime back, which was most of what a quick call cost beyond SQLite.
//!   Writes keep to threads: their commit gate may write and sync the audit
//!   log, which must not block the runtime.
//!
//! Either way the call is watched ([`Watch`]): at the deadline its
//! statement is interrupted, and its worker killed if SQLite does not
//! return, which ends the exchange with the socket closed.

use std::time::Instant;

use super::transfer::{self, Output};
use super::{interrupted, CommitGate, QueryError, Watch, TRACE};
use crate::pool::frames::{self, Frame};
use crate::pool::worker::WorkerProcess;
use crate::pool::{Pool, PooledConnection};
use crate::sqlite::copy_gate::Admission;

/// What to do after a frame from the worker.
enum Next {
    /// Send this and wait for the next frame.
    Send(Frame),
    /// The call is settled.
    Done(Result<Output, QueryError>),
}

/// One call's side of the protocol, between the frames.
struct Exchange<'a> {
    pool: &'a Pool,
    watch: &'a Watch,
    seq: u64,
    gate: &'a dyn CommitGate,
    /// A replica's admission, confirmed once the rows are read.
    admitted: Option<Admission>,
    /// Why the commit gate refused the write, which then rolled back.
    refused: Option<String>,
}

impl<'a> Exchange<'a> {
    /// Starts watching the call on `conn`; `None` if it was stopped first.
    fn begin(
        pool: &'a Pool,
        watch: &'a Watch,
        seq: u64,
        gate: &'a dyn CommitGate,
        admitted: Option<Admission>,
        conn: &mut PooledConnection,
    ) -> Option<Self> {
        let slot = conn.take_slot();
        if !watch.start(conn.control(), seq, slot) {
            return None;
        }
        Some(Self {
            pool,
            watch,
            seq,
            gate,
            admitted,
            refused: None,
        })
    }

    /// The error for a socket that failed: the worker was killed (by the
    /// watch) or exited.
    fn lost(&self, err: std::io::Error, worker: &WorkerProcess) -> QueryError {
        if worker.control().was_killed() {
            interrupted()
        } else {
            QueryError::Internal(format!(
                "the worker process holding the connection exited before it answered ({err}); {}",
                if self.watch.is_committing() {
                    "the write may or may not have been committed: check before sending it again"
                } else {
                    "nothing was committed"
                }
            ))
        }
    }

    /// Handles one frame from the worker.
    fn on_frame(&mut self, conn: &mut PooledConnection, kind: u8, payload: Vec<u8>) -> Next {
        match kind {
            frames::kind::MAY_COMMIT => {
                // The gate first: once the watch says committing, nothing
                // may stop the write.
                let granted = match self.gate.may_commit() {
                    Ok(()) => self.watch.begin_commit(),
                    Err(reason) => {
                        self.refused = Some(reason);
                        false
                    }
                };
                let mut verdict = Frame::new(frames::kind::VERDICT);
                verdict.payload().push(u8::from(granted));
                Next::Send(verdict)
            }
            frames::kind::REPLY => Next::Done(self.on_reply(conn, payload)),
            other => {
                conn.process().set_broken();
                Next::Done(Err(QueryError::Internal(format!(
                    "a worker sent a frame of unknown kind {other}"
                ))))
            }
        }
    }

    /// The call's result from the worker's reply, and what the reply says
    /// about the connection and the file.
    fn on_reply(
        &mut self,
        conn: &mut PooledConnection,
        payload: Vec<u8>,
    ) -> Result<Output, QueryError> {
        let reply = match transfer::read_reply(payload) {
            Ok(reply) if reply.seq == self.seq => reply,
            Ok(reply) => {
                conn.process().set_broken();
                return Err(QueryError::Internal(format!(
                    "a worker answered call {} while call {} was waiting",
                    reply.seq, self.seq
                )));
            }
            Err(why) => {
                conn.process().set_broken();
                return Err(QueryError::Internal(format!(
                    "a worker's answer made no sense: {why}"
                )));
            }
        };
        if reply.unsettled {
            conn.process().set_broken();
        }
        if reply.rolled_back {
            conn.record_rollback();
        }
        for _ in 0..reply.retries {
            self.pool.record_retry();
        }
        match reply.write {
            Some(transfer::WriteEvent::Succeeded) => self.pool.health().write_succeeded(),
            Some(transfer::WriteEvent::Failed(fault)) => self.pool.health().write_failed(fault),
            None => {}
        }
        if let Err(QueryError::FileChanged(_)) = &reply.result {
            // Records the fault here too, for readiness.
            let _ = self.pool.health().verify_file();
        }
        if let (Some(reason), Err(_)) = (self.refused.take(), &reply.result) {
            return Err(QueryError::NotRecorded(reason));
        }
        if let Some(admitted) = self.admitted.take() {
            admitted.confirm()?;
        }
        reply.result
    }
}

/// The call on a statement thread: checks out a worker within what is
/// left of the deadline (a replica's follower must be running), sends it
/// the call and waits for its reply, blocking.
pub(super) fn on_thread(
    pool: &Pool,
    watch: &Watch,
    deadline: Instant,
    seq: u64,
    frame: Frame,
    gate: &dyn CommitGate,
    span: &tracing::Span,
) -> Result<Output, QueryError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || watch.is_stopped() {
        return Err(interrupted());
    }
    // A replica whose follower stopped serves nothing from its copy: the
    // call is refused here, and its answer again if the follower stopped
    // while it read.
    let admitted = pool.health().admit()?;
    let checkout = tracing::info_span!(target: TRACE, parent: span, "pool.checkout").entered();
    let mut conn = pool.get_timeout(pool.checkout_timeout().min(left))?;
    drop(checkout);
    // Prepare and step, in the worker process, and the rows' way back.
    let _execute = tracing::info_span!(target: TRACE, parent: span, "sqlite.execute").entered();
    let Some(mut exchange) = Exchange::begin(pool, watch, seq, gate, admitted, &mut conn) else {
        return Err(interrupted());
    };
    let mut outgoing = Some(frame);
    loop {
        let worker = conn.process();
        if let Some(frame) = outgoing.take() {
            worker
                .send(frame)
                .map_err(|err| exchange.lost(err, worker))?;
        }
        let (kind, payload) = worker.recv().map_err(|err| exchange.lost(err, worker))?;
        match exchange.on_frame(&mut conn, kind, payload) {
            Next::Send(frame) => outgoing = Some(frame),
            Next::Done(result) => return result,
        }
    }
}

/// The call on an async task, on `conn`, a connection that was idle,
/// admitted (on a replica) before it was checked out.
pub(super) async fn on_task(
    pool: &Pool,
    watch: &Watch,
    seq: u64,
    frame: Frame,
    gate: &dyn CommitGate,
    admitted: Option<Admission>,
    conn: PooledConnection,
) -> Result<Output, QueryError> {
    if watch.is_stopped() {
        return Err(interrupted());
    }
    let mut in_flight = InFlight(Some(conn));
    let conn = in_flight.0.as_mut().expect("just set");
    let Some(mut exchange) = Exchange::begin(pool, watch, seq, gate, admitted, conn) else {
        in_flight.settle();
        return Err(interrupted());
    };
    let mut outgoing = Some(frame);
    loop {
        let worker = conn.process();
        if let Some(frame) = outgoing.take() {
            if let Err(err) = worker.send_async(frame).await {
                return Err(exchange.lost(err, worker));
            }
        }
        let (kind, payload) = match worker.recv_async().await {
            Ok(frame) => frame,
            Err(err) => return Err(exchange.lost(err, worker)),
        };
        match exchange.on_frame(conn, kind, payload) {
            Next::Send(frame) => outgoing = Some(frame),
            Next::Done(result) => {
                in_flight.settle();
                return result;
            }
        }
    }
}

/// A connection whose exchange is under way: if the task is dropped before
/// the reply settles it (the runtime shutting down), its worker is out of
/// step with the protocol and is never used again.
struct InFlight(Option<PooledConnection>);

impl InFlight {
    /// The exchange ended in step: the connection goes back as it is.
    fn settle(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.process().set_broken();
        }
    }
}
