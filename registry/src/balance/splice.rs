//! The zero-copy direction: `splice(2)` from the source socket into a pipe and from the pipe
//! into the destination socket, nonblocking, driven by tokio's readiness. The pipe is emptied
//! before the next read, so a would-block on read always means "socket empty" (never "pipe
//! full") and at most one pipe's worth of bytes is in flight per direction.

use super::copy::{Flow, half_close};
use rustix::fd::OwnedFd;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use std::io;
use tokio::io::Interest;
use tokio::net::TcpStream;

const FLAGS: SpliceFlags = SpliceFlags::NONBLOCK.union(SpliceFlags::MOVE);

/// A pipe of about `size` bytes (the kernel rounds to pages), created on first data.
fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
    let capacity = fcntl_setpipe_size(&write, size)?;
    Ok((read, write, capacity))
}

/// One direction through a pipe.
pub(crate) async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    size: usize,
    flow: Flow<'_>,
) -> io::Result<()> {
    let mut pipe_pair: Option<(OwnedFd, OwnedFd, usize)> = None;
    loop {
        src.readable().await?;
        let (read_end, write_end, capacity) = match &mut pipe_pair {
            Some(p) => p,
            None => pipe_pair.insert(pipe(size)?),
        };
        let filled = src.try_io(Interest::READABLE, || {
            splice(src, None, &*write_end, None, *capacity, FLAGS).map_err(io::Error::from)
        });
        let mut left = match filled {
            Ok(0) => return half_close(dst),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let filled = left;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&*read_end, None, dst, None, left, FLAGS).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        flow.add(filled);
    }
}
