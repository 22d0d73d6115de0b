//! Frames on a worker's socket: a little-endian `u32` length, a one-byte
//! kind, then the payload. Both sides of [`super::worker`] speak it; what a
//! payload holds is the query engine's business (`engine::transfer`).

use std::io::{self, Read, Write};

/// The kinds of frame.
pub mod kind {
    /// Server to worker, once: how to open the connection (JSON).
    pub const SETUP: u8 = 1;
    /// Worker to server, once: the connection is open, or why not (JSON).
    pub const READY: u8 = 2;
    /// Server to worker: one call.
    pub const CALL: u8 = 3;
    /// Worker to server: the call's answer.
    pub const REPLY: u8 = 4;
    /// Worker to server: a write asks whether it may still commit.
    pub const MAY_COMMIT: u8 = 5;
    /// Server to worker: the answer to [`MAY_COMMIT`], one byte (1: yes).
    pub const VERDICT: u8 = 6;
    /// Server to worker, at shutdown: checkpoint the WAL into the database
    /// file and truncate it, waiting at most the given milliseconds (`u32`).
    pub const CHECKPOINT: u8 = 7;
    /// Worker to server: the checkpoint's outcome (JSON).
    pub const CHECKPOINTED: u8 = 8;
}

/// Bytes before a frame's payload: its length and its kind.
pub const HEADER_BYTES: usize = 5;

/// The largest payload either side accepts. A result is capped far below
/// this by `EROS_DB_MAX_BYTES`; a length past it means the stream is out of
/// step, and the worker is dropped rather than read on.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// A frame being written: start it with its kind, append the payload, then
/// [`Frame::send`] it in one write.
pub struct Frame {
    bytes: Vec<u8>,
}

impl Frame {
    pub fn new(kind: u8) -> Self {
        Self::with_capacity(kind, 0)
    }

    pub fn with_capacity(kind: u8, payload: usize) -> Self {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload);
        bytes.extend_from_slice(&[0, 0, 0, 0, kind]);
        Self { bytes }
    }

    /// A frame written into `buffer` (its contents dropped, its capacity
    /// kept): see [`Frame::send_reusing`].
    pub fn reusing(kind: u8, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        buffer.extend_from_slice(&[0, 0, 0, 0, kind]);
        Self { bytes: buffer }
    }

    /// The payload so far, to append to.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Writes the frame whole and gives its buffer back for the next one.
    pub fn send_reusing(mut self, to: &mut impl Write) -> io::Result<Vec<u8>> {
        self.finish()?;
        to.write_all(&self.bytes)?;
        to.flush()?;
        Ok(self.bytes)
    }

    /// The frame's bytes, header written, to be sent by the caller.
    pub fn into_bytes(mut self) -> io::Result<Vec<u8>> {
        self.finish()?;
        Ok(self.bytes)
    }

    /// Writes the frame whole.
    pub fn send(mut self, to: &mut impl Write) -> io::Result<()> {
        self.finish()?;
        to.write_all(&self.bytes)?;
        to.flush()
    }

    /// Writes the payload's length into the header.
    fn finish(&mut self) -> io::Result<()> {
        let len = self.bytes.len() - HEADER_BYTES;
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame of {len} bytes is larger than {MAX_PAYLOAD}"),
            ));
        }
        self.bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

/// Reads one frame: its kind and payload.
pub fn read(from: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; HEADER_BYTES];
    from.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame announced {len} bytes, more than {MAX_PAYLOAD}"),
        ));
    }
    // Read into fresh capacity, not a zeroed buffer: a page of rows is
    // hundreds of KB, and zeroing it first was a pass over it for nothing.
    let mut payload = Vec::with_capacity(len);
    from.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok((header[4], payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_as_written() {
        let mut wire = Vec::new();
        let mut frame = Frame::new(7);
        frame.payload().extend_from_slice(b"hello");
        frame.send(&mut wire).unwrap();
        Frame::new(2).send(&mut wire).unwrap();
        let mut reader = &wire[..];
        assert_eq!(read(&mut reader).unwrap(), (7, b"hello".to_vec()));
        assert_eq!(read(&mut reader).unwrap(), (2, Vec::new()));
        assert_eq!(
            read(&mut reader).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let wire = [0xff, 0xff, 0xff, 0xff, 1];
        let err = read(&mut &wire[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
