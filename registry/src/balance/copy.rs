//! Moves bytes both ways between the client and the backend socket until both directions have
//! ended: EOF on one side shuts down writing on the other (half-close) while the other
//! direction keeps flowing. Each direction holds at most one fixed buffer (allocated only while
//! data is flowing, so idle connections cost no buffer) and writes it out before reading more,
//! so a slow reader stalls its writer instead of growing memory.

use super::config::CopyMode;
use super::splice;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpStream;

/// Where one direction counts the bytes it forwarded, as it forwards them.
#[derive(Clone, Copy)]
pub(crate) struct Flow<'a> {
    pub connection: &'a AtomicU64,
    pub endpoint: &'a AtomicU64,
}

impl Flow<'_> {
    pub fn add(&self, n: usize) {
        self.connection.fetch_add(n as u64, Ordering::Relaxed);
        self.endpoint.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Forwards both directions; the first error ends both.
pub(crate) async fn transfer(
    mode: CopyMode,
    client: &TcpStream,
    backend: &TcpStream,
    buffer_size: usize,
    inbound: Flow<'_>,
    outbound: Flow<'_>,
) -> io::Result<()> {
    let buffer_size = buffer_size.max(1);
    match mode {
        CopyMode::Copy => {
            tokio::try_join!(
                pump(client, backend, buffer_size, inbound),
                pump(backend, client, buffer_size, outbound)
            )?;
        }
        CopyMode::Splice => {
            tokio::try_join!(
                splice::pump(client, backend, buffer_size, inbound),
                splice::pump(backend, client, buffer_size, outbound)
            )?;
        }
    }
    Ok(())
}

/// Shuts down writing towards `dst`: its reader sees EOF, the other direction goes on.
pub(crate) fn half_close(dst: &TcpStream) -> io::Result<()> {
    match rustix::net::shutdown(dst, rustix::net::Shutdown::Write) {
        Err(rustix::io::Errno::NOTCONN) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One direction through a user-space buffer.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    buffer_size: usize,
    flow: Flow<'_>,
) -> io::Result<()> {
    loop {
        src.readable().await?;
        let mut buf = Vec::with_capacity(buffer_size);
        loop {
            buf.clear();
            match src.try_read_buf(&mut buf) {
                Ok(0) => return half_close(dst),
                Ok(n) => {
                    write_all(dst, &buf[..n]).await?;
                    flow.add(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
