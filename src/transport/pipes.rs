//! Standard input and output as the stdio transport reads and writes them.
//!
//! Tokio's `stdin()` and `stdout()` do every read and every write on a
//! blocking-pool thread: for a paced client that is two thread hand-offs per
//! call (a parked thread woken, then the runtime woken back), more CPU than
//! the lookup itself. When a descriptor is a pipe, as it is for every MCP
//! client that spawns the server, it is put in non-blocking mode and driven
//! by the runtime's own reactor instead: a read or write is one system call
//! on the runtime's thread. Anything else (a terminal, a file, a socket)
//! keeps Tokio's blocking-pool handles.
//!
//! Non-blocking mode belongs to the open file, which the client's end of
//! the pipe does not share, so it changes nothing for the client.

use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// Standard input: the reactor's pipe or Tokio's blocking handle.
pub enum Input {
    Pipe(pipe::Receiver),
    Other(tokio::io::Stdin),
}

/// Standard output: the reactor's pipe or Tokio's blocking handle.
pub enum Output {
    Pipe(pipe::Sender),
    Other(tokio::io::Stdout),
}

/// Opens standard input and output (call inside a Tokio runtime).
pub fn stdio() -> (Input, Output) {
    let input = match duplicate(std::io::stdin().as_fd()).and_then(pipe::Receiver::from_owned_fd) {
        Ok(pipe) => Input::Pipe(pipe),
        Err(_) => Input::Other(tokio::io::stdin()),
    };
    let output = match duplicate(std::io::stdout().as_fd()).and_then(pipe::Sender::from_owned_fd) {
        Ok(pipe) => Output::Pipe(pipe),
        Err(_) => Output::Other(tokio::io::stdout()),
    };
    (input, output)
}

/// A descriptor of our own for the same open file, so the standard library's
/// handles keep theirs.
fn duplicate(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

impl AsyncRead for Input {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Input::Pipe(pipe) => Pin::new(pipe).poll_read(cx, buf),
            Input::Other(stdin) => Pin::new(stdin).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Output::Pipe(pipe) => Pin::new(pipe).poll_write(cx, buf),
            Output::Other(stdout) => Pin::new(stdout).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Output::Pipe(pipe) => Pin::new(pipe).poll_flush(cx),
            Output::Other(stdout) => Pin::new(stdout).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Output::Pipe(pipe) => Pin::new(pipe).poll_shutdown(cx),
            Output::Other(stdout) => Pin::new(stdout).poll_shutdown(cx),
        }
    }
}
