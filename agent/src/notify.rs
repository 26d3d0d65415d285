//! systemd readiness notification (`sd_notify`), without libsystemd: under `Type=notify` the
//! service manager passes a unix datagram socket in `$NOTIFY_SOCKET`, and the agent sends
//! `READY=1` on it once it serves. A path starting with `@` names an abstract socket.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells the service manager the agent is ready, when one asked (`$NOTIFY_SOCKET` is set).
/// A failure is logged and otherwise ignored: the agent serves either way.
pub fn ready() {
    notify("READY=1");
}

/// Tells the service manager that this process is now the service's main process, and
/// ready: an agent that took over from its predecessor (`strata-agent upgrade`), which then
/// exits. The unit needs `NotifyAccess=all`, since the message comes from a process that is
/// not (yet) the main one.
pub fn ready_as_main() {
    notify(&main_pid_message(std::process::id()));
}

/// The notification that makes `pid` the main process and says it is ready.
fn main_pid_message(pid: u32) -> String {
    format!("MAINPID={pid}\nREADY=1")
}

fn notify(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return;
    };
    match send(&socket, message) {
        Ok(()) => {
            tracing::debug!(socket = %socket.to_string_lossy(), message, "notified the service manager")
        }
        Err(e) => tracing::warn!(
            socket = %socket.to_string_lossy(),
            error = %e,
            "cannot notify the service manager that the agent is ready"
        ),
    }
}

/// Sends one notification `message` to the socket named by `socket` (a path, or `@name` for
/// an abstract socket).
pub fn send(socket: &OsStr, message: &str) -> io::Result<()> {
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sent = UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    whole(sent, message)
}

/// Sends `message` with a copy of `fd` attached (`SCM_RIGHTS`), as `FDSTORE=1` needs.
pub fn send_with_fd(socket: &OsStr, message: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::net::{
        AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
        SocketFlags, SocketType,
    };
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddrUnix::new_abstract_name(name)?,
        None => SocketAddrUnix::new(socket)?,
    };
    let sender = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let sent = rustix::net::sendmsg_addr(
        &sender,
        &addr,
        &[io::IoSlice::new(message.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    whole(sent, message)
}

fn whole(sent: usize, message: &str) -> io::Result<()> {
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            message.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("strata-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_successor_names_itself_main_pid_before_ready() {
        assert_eq!(main_pid_message(42), "MAINPID=42\nREADY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(send(dir.path().join("none").as_os_str(), "READY=1").is_err());
    }
}
