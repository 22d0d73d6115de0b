//! The server's end of a worker's socket: whole frames in and out, either
//! from a statement thread (blocking) or from an async task (on the
//! runtime's reactor, with no thread in between).
//!
//! The socket is in non-blocking mode. A blocking caller waits in
//! `poll(2)`; an async one waits on the reactor of its runtime, with which
//! the socket stays registered between exchanges ([`Registered`]). Why
//! both: a call that finds an idle connection is served from its own task,
//! which saves the two thread hand-offs a call used to pay (the statement
//! thread woken, then the runtime woken back); a call that must wait for a
//! connection still waits on a statement thread, as r2d2's checkout blocks.
//!
//! A frame is read as far as the socket has it and finished on the next
//! readiness, so neither kind of caller ever blocks mid-frame on the
//! other's terms; a large payload is read straight into its own buffer.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::frames::{Frame, HEADER_BYTES, MAX_PAYLOAD};

/// Bytes read from the socket at a time when no frame is under way.
const INBOX_BYTES: usize = 64 * 1024;

/// A frame whose header has been read and whose payload is arriving.
struct Incoming {
    kind: u8,
    len: usize,
    payload: Vec<u8>,
}

/// One end of a worker's socket, framed.
pub struct WorkerSocket {
    framed: Framed,
    /// Registered with the reactor of the runtime that last waited on it.
    registered: Option<Registered>,
}

/// The socket registered for reading with one runtime's reactor, kept from
/// one async exchange to the next: registering for each one cost four
/// system calls a call (`dup`, two `epoll_ctl`, `close`) and, registered
/// for writing too, a turn of the runtime woken by the worker reading the
/// call. A descriptor of its own (a duplicate), so the registration never
/// outlives what it watches; keyed by the runtime, so a pool used from
/// several runtimes (tests make one per call) never waits on one that is
/// gone; dropped before a blocking exchange, whose replies would otherwise
/// wake the runtime for nothing.
struct Registered {
    runtime: tokio::runtime::Id,
    reactor: AsyncFd<OwnedFd>,
}

/// The socket and the bytes read from it.
struct Framed {
    stream: UnixStream,
    /// Bytes read but not yet taken: `inbox[start..end]`.
    inbox: Box<[u8]>,
    start: usize,
    end: usize,
    incoming: Option<Incoming>,
    /// The last read found the socket empty (it would block, or gave less
    /// than it was asked for). A frame's payload is read only to its end,
    /// so after one the socket may still hold more: then the next receive
    /// reads before it waits, as an edge-triggered wait would never wake
    /// for bytes already there.
    drained: bool,
}

impl std::fmt::Debug for WorkerSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSocket")
            .field("fd", &self.framed.stream.as_raw_fd())
            .finish()
    }
}

impl WorkerSocket {
    /// Wraps a connected socket, which is put in non-blocking mode.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            framed: Framed {
                stream,
                inbox: vec![0; INBOX_BYTES].into_boxed_slice(),
                start: 0,
                end: 0,
                incoming: None,
                drained: false,
            },
            registered: None,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.framed.stream
    }

    /// Sends `frame`, waiting in `poll(2)` while the socket is full.
    pub fn send(&mut self, frame: Frame) -> io::Result<()> {
        self.registered = None;
        let bytes = frame.into_bytes()?;
        let mut sent = 0;
        while !self.framed.try_write(&bytes, &mut sent)? {
            wait(self.framed.stream.as_raw_fd(), libc::POLLOUT)?;
        }
        Ok(())
    }

    /// The next frame, waiting in `poll(2)` until it is whole.
    pub fn recv(&mut self) -> io::Result<(u8, Vec<u8>)> {
        self.registered = None;
        let fd = self.framed.stream.as_raw_fd();
        // Nothing buffered and the socket found empty: the reply is rarely
        // there yet, and a read that finds nothing is a system call for
        // nothing.
        if !self.framed.may_hold_more() {
            wait(fd, libc::POLLIN)?;
        }
        loop {
            if let Some(frame) = self.framed.try_frame()? {
                return Ok(frame);
            }
            wait(fd, libc::POLLIN)?;
        }
    }

    /// The next frame if it is whole within `within` (`TimedOut` if not).
    pub fn recv_within(&mut self, within: std::time::Duration) -> io::Result<(u8, Vec<u8>)> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.framed.try_frame()? {
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let millis = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
            let fd = self.framed.stream.as_raw_fd();
            if left.is_zero() || !wait_at_most(fd, libc::POLLIN, millis)? {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }

    /// Sends `frame` from an async task (inside a Tokio runtime), waiting
    /// on the reactor while the socket is full.
    pub async fn send_async(&mut self, frame: Frame) -> io::Result<()> {
        let bytes = frame.into_bytes()?;
        let mut sent = 0;
        while !self.framed.try_write(&bytes, &mut sent)? {
            // Full, which only a call larger than the socket's buffer
            // makes: a registration for writing of its own, for this wait.
            let writable = register(self.framed.duplicate()?, Interest::WRITABLE)?;
            writable.writable().await?.clear_ready();
        }
        Ok(())
    }

    /// The next frame, from an async task (inside a Tokio runtime), waiting
    /// on the reactor until it is whole.
    pub async fn recv_async(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let reactor = registered(&mut self.registered, &self.framed)?;
        // As in `recv`: with nothing buffered and the socket found empty,
        // wait before the first read.
        if !self.framed.may_hold_more() {
            reactor.readable().await?.clear_ready();
        }
        loop {
            if let Some(frame) = self.framed.try_frame()? {
                return Ok(frame);
            }
            // Cleared only if no event came since the guard's: a frame that
            // arrived meanwhile is read on the next turn.
            reactor.readable().await?.clear_ready();
        }
    }
}

/// Registers `fd` with the current runtime's reactor.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the registration owns its descriptor, which therefore stays
    // open and the same for as long as the registration lives.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}

/// The socket's registration with the current runtime's reactor, made now
/// if it has none there.
fn registered<'a>(
    slot: &'a mut Option<Registered>,
    framed: &Framed,
) -> io::Result<&'a AsyncFd<OwnedFd>> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(io::Error::other)?
        .id();
    if slot.as_ref().is_none_or(|kept| kept.runtime != runtime) {
        // Off the old reactor before onto the new one.
        *slot = None;
        let reactor = register(framed.duplicate()?, Interest::READABLE)?;
        *slot = Some(Registered { runtime, reactor });
    }
    Ok(&slot.as_ref().expect("registered just now").reactor)
}

impl Framed {
    /// A descriptor of its own for the socket, to register with a reactor.
    fn duplicate(&self) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(self.stream.try_clone()?))
    }

    /// Writes what the socket takes of `bytes[*sent..]`; true once all of
    /// `bytes` is sent, false when the socket is full.
    fn try_write(&self, bytes: &[u8], sent: &mut usize) -> io::Result<bool> {
        while *sent < bytes.len() {
            match (&self.stream).write(&bytes[*sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// Whether a frame's bytes may be waiting: read and not yet handed out,
    /// or not known to be absent from the socket.
    fn may_hold_more(&self) -> bool {
        self.incoming.is_some() || self.end > self.start || !self.drained
    }

    /// Reads what the socket has; a whole frame if that completes one.
    fn try_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some(incoming) = &mut self.incoming {
                if incoming.payload.len() == incoming.len {
                    let Incoming { kind, payload, .. } = self.incoming.take().expect("checked");
                    return Ok(Some((kind, payload)));
                }
                // Straight into the payload's own (unzeroed) capacity; only
                // as much as the frame still lacks.
                let lacking = (incoming.len - incoming.payload.len()) as u64;
                match (&self.stream)
                    .take(lacking)
                    .read_to_end(&mut incoming.payload)
                {
                    Ok(_) if incoming.payload.len() < incoming.len => {
                        return Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    // Read to the frame's end: the socket may hold more.
                    Ok(_) => self.drained = false,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        self.drained = true;
                        return Ok(None);
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
                continue;
            }
            if self.end - self.start >= HEADER_BYTES {
                let header = &self.inbox[self.start..self.start + HEADER_BYTES];
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
                if len > MAX_PAYLOAD {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a frame announced {len} bytes, more than {MAX_PAYLOAD}"),
                    ));
                }
                let kind = header[4];
                self.start += HEADER_BYTES;
                let here = len.min(self.end - self.start);
                let mut payload = Vec::with_capacity(len);
                payload.extend_from_slice(&self.inbox[self.start..self.start + here]);
                self.start += here;
                self.incoming = Some(Incoming { kind, len, payload });
                continue;
            }
            // Keep the partial header at the front, then read on after it.
            self.inbox.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            let room = self.inbox.len() - self.end;
            match (&self.stream).read(&mut self.inbox[self.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    // A stream socket gives what it has, up to the room.
                    self.drained = n < room;
                    self.end += n;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(None);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
}

/// Waits in `poll(2)` until `fd` has `events` (or an error or hang-up,
/// which the next read or write reports). No timeout: the watch kills a
/// worker that overruns, which closes its end.
fn wait(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    wait_at_most(fd, events, -1).map(|_| ())
}

/// As [`wait`], for at most `millis` (-1: no limit); false if it passed.
fn wait_at_most(fd: RawFd, events: libc::c_short, millis: libc::c_int) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            n if n > 0 => return Ok(true),
            0 => return Ok(false),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::frames::read;

    fn pair() -> (WorkerSocket, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (WorkerSocket::new(ours).unwrap(), theirs)
    }

    fn frame(kind: u8, payload: &[u8]) -> Frame {
        let mut frame = Frame::new(kind);
        frame.payload().extend_from_slice(payload);
        frame
    }

    #[test]
    fn frames_sent_back_to_back_are_read_one_at_a_time() {
        let (mut socket, mut theirs) = pair();
        frame(4, b"first").send(&mut theirs).unwrap();
        frame(5, b"").send(&mut theirs).unwrap();
        assert_eq!(socket.recv().unwrap(), (4, b"first".to_vec()));
        assert_eq!(socket.recv().unwrap(), (5, Vec::new()));
        assert!(socket.framed.try_frame().unwrap().is_none(), "nothing more");
    }

    #[test]
    fn a_frame_larger_than_the_socket_buffer_arrives_whole_while_it_is_written() {
        let (mut socket, mut theirs) = pair();
        let big: Vec<u8> = (0..3_000_000).map(|i| (i % 253) as u8).collect();
        let sent = big.clone();
        let writer = std::thread::spawn(move || frame(4, &sent).send(&mut theirs).unwrap());
        assert_eq!(socket.recv().unwrap(), (4, big));
        writer.join().unwrap();
    }

    #[test]
    fn a_frame_cut_short_by_the_peer_is_an_error_not_a_frame() {
        let (mut socket, mut theirs) = pair();
        theirs.write_all(&10u32.to_le_bytes()).unwrap();
        theirs.write_all(&[4, b'a', b'b']).unwrap();
        drop(theirs);
        let err = socket.recv().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_large_frame_is_sent_whole_to_a_slow_reader() {
        let (mut socket, mut theirs) = pair();
        let big = vec![7u8; 3_000_000];
        let reader = std::thread::spawn(move || read(&mut theirs).unwrap());
        socket.send(frame(3, &big)).unwrap();
        assert_eq!(reader.join().unwrap(), (3, big));
    }

    /// A peer answering every frame with its kind plus one, until it ends.
    fn echo(mut theirs: UnixStream) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            while let Ok((kind, payload)) = read(&mut theirs) {
                frame(kind + 1, &payload).send(&mut theirs).unwrap();
            }
        })
    }

    async fn exchange_async(socket: &mut WorkerSocket, kind: u8) -> (u8, Vec<u8>) {
        socket.send_async(frame(kind, b"ping")).await.unwrap();
        let reply = socket.recv_async();
        tokio::time::timeout(std::time::Duration::from_secs(5), reply)
            .await
            .expect("the reply within 5 s")
            .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_frame_already_waiting_behind_a_large_one_is_read_without_a_new_wake() {
        let (mut socket, mut theirs) = pair();
        // Both in the socket before the first read: the large one's payload
        // is read only to its end, so nothing signals the small one again.
        let large = vec![5u8; 100_000];
        frame(1, &large).send(&mut theirs).unwrap();
        frame(2, b"next").send(&mut theirs).unwrap();
        runtime().block_on(async {
            let within = std::time::Duration::from_secs(5);
            let first = tokio::time::timeout(within, socket.recv_async()).await;
            assert_eq!(first.expect("the first within 5 s").unwrap(), (1, large));
            let second = tokio::time::timeout(within, socket.recv_async()).await;
            let second = second.expect("the second, already there, within 5 s");
            assert_eq!(second.unwrap(), (2, b"next".to_vec()));
        });
    }

    #[test]
    fn one_registration_serves_every_exchange_of_a_runtime_and_another_runtime_gets_its_own() {
        let (mut socket, theirs) = pair();
        let peer = echo(theirs);
        let first = runtime();
        first.block_on(async {
            assert_eq!(exchange_async(&mut socket, 1).await.0, 2);
            let kept = socket.registered.as_ref().unwrap().runtime;
            assert_eq!(exchange_async(&mut socket, 3).await.0, 4);
            assert_eq!(socket.registered.as_ref().unwrap().runtime, kept);
        });
        // The first runtime's reactor is gone with it: waiting there would
        // never end (the timeout above fails the test).
        drop(first);
        runtime().block_on(async {
            assert_eq!(exchange_async(&mut socket, 5).await.0, 6);
        });
        drop(socket);
        peer.join().unwrap();
    }

    #[test]
    fn a_blocking_exchange_between_async_ones_drops_the_registration_and_all_are_answered() {
        let (mut socket, theirs) = pair();
        let peer = echo(theirs);
        let rt = runtime();
        rt.block_on(async { assert_eq!(exchange_async(&mut socket, 1).await.0, 2) });
        socket.send(frame(7, b"ping")).unwrap();
        assert!(
            socket.registered.is_none(),
            "off the reactor while blocking"
        );
        assert_eq!(socket.recv().unwrap().0, 8);
        rt.block_on(async { assert_eq!(exchange_async(&mut socket, 9).await.0, 10) });
        drop(socket);
        peer.join().unwrap();
    }

    #[tokio::test]
    async fn the_async_half_reads_and_writes_the_same_frames() {
        let (mut socket, theirs) = pair();
        let echo = std::thread::spawn(move || {
            let mut theirs = theirs;
            let (kind, payload) = read(&mut theirs).unwrap();
            frame(kind + 1, &payload).send(&mut theirs).unwrap();
        });
        let big = vec![9u8; 2_000_000];
        socket.send_async(frame(3, &big)).await.unwrap();
        assert_eq!(socket.recv_async().await.unwrap(), (4, big));
        echo.join().unwrap();
    }
}
