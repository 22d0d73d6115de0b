//! The worker process's side: it opens one connection as the pool told it
//! to, then runs the engine's calls on it one at a time until its socket
//! closes (see [`crate::pool::worker`] for why statements run in a process
//! of their own).
//!
//! A call is stopped by a realtime signal whose value is the call's number:
//! the handler interrupts SQLite and raises the flag the progress handler
//! reads, but only for the call running now, and never while a write
//! commits. A write asks the server before it commits ([`kind::MAY_COMMIT`]),
//! so a call the server has answered as timed out never commits.

use std::io::{BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::SeqCst};

use super::transfer::{self, Answer, Call, Op, Reply, WireRows, WriteEvent};
use super::{read, schema, write, QueryError, WireSize, PROGRESS_STEPS};
use crate::policy::{Restrictions, SchemaBound};
use crate::pool::frames::{self, kind, Frame};
use crate::pool::worker::{stop_signal, WORKER_FD};
use crate::pool::{local, Checkpointed, ManagedConnection, Ready, WorkerSetup};
use crate::sqlite::health::DatabaseHealth;

/// The call running now (0: none), for the stop signal's handler.
static CURRENT_CALL: AtomicU64 = AtomicU64::new(0);
/// The running call was told to stop.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// The running call is committing: nothing may stop it now.
static COMMITTING: AtomicBool = AtomicBool::new(false);
/// The connection, for `sqlite3_interrupt` from the handler.
static DB: AtomicPtr<rusqlite::ffi::sqlite3> = AtomicPtr::new(std::ptr::null_mut());

/// Runs the worker on file descriptor 3 until the server closes it;
/// `formats` are the row formats a call may name.
pub fn serve(formats: &[&'static dyn WireSize]) -> ExitCode {
    // SAFETY: the server hands a worker its socket as this descriptor, and
    // nothing else in this process owns it.
    let stream = unsafe { UnixStream::from_raw_fd(WORKER_FD) };
    match run(stream, formats) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("eros-mcp worker {}: {why}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

/// The socket, read and written.
struct Link {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn run(stream: UnixStream, formats: &[&'static dyn WireSize]) -> Result<(), String> {
    let mut link = Link {
        reader: BufReader::with_capacity(64 * 1024, stream.try_clone().map_err(|e| e.to_string())?),
        writer: stream,
    };
    let (first, payload) =
        frames::read(&mut link.reader).map_err(|err| format!("no setup: {err}"))?;
    if first != kind::SETUP {
        return Err(format!("expected the setup, got a frame of kind {first}"));
    }
    let setup: WorkerSetup =
        serde_json::from_slice(&payload).map_err(|err| format!("unreadable setup: {err}"))?;
    // Before SQLite starts: its allocator counts in the shared ceiling.
    if let Some(share) = setup.heap {
        crate::pool::heap::install(share.slot, share.slots)?;
    }
    // Also before SQLite starts: pages cached apart from sorter runs.
    crate::sqlite::page_cache::install(setup.options.cache_kib)?;
    crate::sqlite::connection::limit_sqlite_heap(
        setup.options.soft_heap_limit_bytes,
        setup.options.hard_heap_limit_bytes,
    );
    let soft_limit = setup.heap.map(|_| setup.options.soft_heap_limit_bytes);
    let health = DatabaseHealth::from_setup(&setup.health);
    let opened = local::open(&setup.options, &health);
    let ready = match &opened {
        Ok((_, file)) => Ready::Opened {
            file: *file,
            write_fault: health.write_fault(),
        },
        Err(err) => Ready::Failed {
            message: err.to_string(),
            transient: err.is_transient(),
        },
    };
    let mut frame = Frame::new(kind::READY);
    serde_json::to_writer(frame.payload(), &ready).expect("ready serializes");
    frame
        .send(&mut link.writer)
        .map_err(|err| format!("cannot answer the setup: {err}"))?;
    let Ok((conn, _)) = opened else {
        return Ok(());
    };
    health.write_succeeded();
    // SAFETY: the handle is only ever passed to sqlite3_interrupt, which
    // any thread (or handler) may call while the connection is open.
    DB.store(unsafe { conn.handle() }, SeqCst);
    install_stop_handler()?;
    conn.progress_handler(
        PROGRESS_STEPS,
        Some(|| STOPPED.load(SeqCst) && !COMMITTING.load(SeqCst)),
    )
    .map_err(|err| format!("cannot install the progress handler: {err}"))?;
    // The answer's buffer, kept from call to call: a page of rows is a few
    // hundred KB, which glibc would otherwise map and fault in every time.
    let mut out = Vec::new();
    // Each principal's restrictions, bound to the schema as it is.
    let mut bound = SchemaBound::default();
    loop {
        let (kind, payload) = match frames::read(&mut link.reader) {
            Ok(frame) => frame,
            // The server closed the socket: the pool let this worker go.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(err) => return Err(format!("cannot read a call: {err}")),
        };
        if kind == kind::CHECKPOINT {
            let wait = payload
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let outcome = final_checkpoint(&conn, std::time::Duration::from_millis(wait.into()));
            let mut frame = Frame::new(kind::CHECKPOINTED);
            serde_json::to_writer(frame.payload(), &outcome).expect("serializes");
            frame
                .send(&mut link.writer)
                .map_err(|err| format!("cannot answer the checkpoint: {err}"))?;
            continue;
        }
        if kind != kind::CALL {
            return Err(format!("expected a call, got a frame of kind {kind}"));
        }
        let call =
            transfer::read_call(&payload).map_err(|err| format!("unreadable call: {err}"))?;
        if let Some(soft) = soft_limit {
            share_soft_limit(soft);
        }
        let reply = handle(
            &conn, &health, formats, call, &mut link, &mut bound, &mut out,
        );
        let settled = !reply.unsettled;
        let frame = transfer::reply_frame(reply, std::mem::take(&mut out));
        out = frame
            .send_reusing(&mut link.writer)
            .map_err(|err| format!("cannot answer a call: {err}"))?;
        if !settled {
            return Err("the connection could not be put back at rest".into());
        }
    }
}

/// The least a worker's page cache may keep, whatever the others hold.
const LEAST_SOFT_LIMIT: u64 = 1024 * 1024;

/// Sets this worker's soft heap limit to what the other workers leave of
/// the server's `soft` limit: caches shrink when they together hold more,
/// as they did when every connection was in one process.
fn share_soft_limit(soft: u64) {
    let others = crate::pool::heap::others_bytes().unwrap_or(0);
    let mine = soft.saturating_sub(others).max(LEAST_SOFT_LIMIT);
    // SAFETY: thread-safe, any value.
    unsafe { rusqlite::ffi::sqlite3_soft_heap_limit64(i64::try_from(mine).unwrap_or(i64::MAX)) };
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`, waiting at most `wait` for readers.
fn final_checkpoint(conn: &ManagedConnection, wait: std::time::Duration) -> Checkpointed {
    let done = conn.with_access(crate::sqlite::access::Access::Trusted, |c| {
        c.busy_timeout(wait)?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    });
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) | Err(err) => Err((
            err.sqlite_error_code()
                .map_or(rusqlite::ffi::SQLITE_ERROR, |_| match &err {
                    rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
                    _ => rusqlite::ffi::SQLITE_ERROR,
                }),
            err.to_string(),
        )),
    }
}

/// Runs one call and puts the connection back at rest; rows are encoded
/// into the reply's frame as they are read, in `buffer` (taken from it).
fn handle(
    conn: &ManagedConnection,
    health: &DatabaseHealth,
    formats: &[&'static dyn WireSize],
    call: Call,
    link: &mut Link,
    bound: &mut SchemaBound,
    buffer: &mut Vec<u8>,
) -> Reply<Answer> {
    STOPPED.store(false, SeqCst);
    COMMITTING.store(false, SeqCst);
    CURRENT_CALL.store(call.seq, SeqCst);
    let restrictions = match call.restrictions {
        None => Restrictions::none(),
        Some(given) => match bound.bind(conn, given) {
            Ok(restrictions) => restrictions,
            // Restrictions that cannot be bound are not enforced partly.
            Err(err) => {
                return Reply {
                    seq: call.seq,
                    result: Err(err.into()),
                    write: None,
                    retries: 0,
                    rolled_back: false,
                    unsettled: false,
                }
            }
        },
    };
    let format = |name: &str| {
        formats
            .iter()
            .copied()
            .find(|format| format.name() == name)
            .ok_or_else(|| QueryError::Internal(format!("no row format named {name}")))
    };
    let mut retries = 0;
    let mut wrote = false;
    let mut rows = |width| WireRows::new(std::mem::take(buffer), width);
    let result = match call.op {
        Op::Query {
            request,
            format: name,
        } => format(&name).and_then(|wire| {
            read::run(
                conn,
                &restrictions,
                &request,
                call.limits,
                call.read_retry,
                wire,
                || retries += 1,
                &mut rows,
            )
            .map(Answer::Query)
        }),
        Op::Execute {
            request,
            format: name,
        } => {
            wrote = true;
            format(&name).and_then(|wire| {
                let mut may_commit = || ask_to_commit(link);
                write::run(
                    conn,
                    &restrictions,
                    health,
                    &request,
                    call.limits,
                    wire,
                    &mut may_commit,
                    &mut rows,
                )
                .map(Answer::Execute)
            })
        }
        Op::ListTables {
            pattern,
            column,
            detail,
        } => schema::list_tables(
            conn,
            &restrictions,
            pattern.as_deref(),
            column.as_deref(),
            detail,
        )
        .map(Answer::Tables),
        Op::DescribeTable { table } => {
            schema::describe_table(conn, &restrictions, &table).map(Answer::Description)
        }
        Op::SchemaDdl => schema::schema_ddl(conn, &restrictions).map(Answer::Ddl),
        Op::Explain { sql, params } => conn
            .with_restrictions(&restrictions, |conn| {
                schema::explain(conn, &sql, params.as_ref())
            })
            .map(Answer::Explain),
    };
    CURRENT_CALL.store(0, SeqCst);
    let write = match (&result, health.write_fault()) {
        (Ok(_), _) if wrote => Some(WriteEvent::Succeeded),
        (Err(_), Some(fault)) => Some(WriteEvent::Failed(fault)),
        _ => None,
    };
    // The server keeps the file's write health; this copy starts clean.
    health.write_succeeded();
    let (rolled_back, settled) = conn.settle();
    Reply {
        seq: call.seq,
        result,
        write,
        retries,
        rolled_back,
        unsettled: !settled,
    }
}

/// Asks the server whether the running write may commit; anything but a
/// yes (a stop, a closed socket) means roll back.
fn ask_to_commit(link: &mut Link) -> bool {
    if STOPPED.load(SeqCst) {
        return false;
    }
    if Frame::new(kind::MAY_COMMIT).send(&mut link.writer).is_err() {
        return false;
    }
    let _ = link.writer.flush();
    let yes = matches!(
        frames::read(&mut link.reader),
        Ok((kind::VERDICT, verdict)) if verdict == [1]
    );
    if yes {
        COMMITTING.store(true, SeqCst);
    }
    yes
}

extern "C" fn on_stop(_signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler;
    // the value is what `sigqueue` sent.
    let seq = unsafe { (*info).si_value().sival_ptr } as usize as u64;
    // Only atomics and sqlite3_interrupt (one atomic store): both are safe
    // in a signal handler.
    if seq != 0 && seq == CURRENT_CALL.load(SeqCst) && !COMMITTING.load(SeqCst) {
        STOPPED.store(true, SeqCst);
        let db = DB.load(SeqCst);
        if !db.is_null() {
            // SAFETY: the connection stays open for the process's life.
            unsafe { rusqlite::ffi::sqlite3_interrupt(db) };
        }
    }
}

fn install_stop_handler() -> Result<(), String> {
    // SAFETY: a plain sigaction with a handler that only touches atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(stop_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "cannot install the stop signal's handler: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
