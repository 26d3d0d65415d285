//! `systemctl restart` under a unit with `FileDescriptorStoreMax=`: the test plays systemd's
//! part (a notify socket that receives `FDSTORE=1` messages with their descriptors, then the
//! next start with those descriptors as `LISTEN_FDS`), and a client loop through the agent's
//! own frontend sees no failed request while the agent is stopped and started again.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_tests::load::Load;
use strata_tests::{AgentOptions, AgentProcess, closed_port, http_get, wait_until, web_spec};

/// What the stand-in service manager holds: stored descriptors by name, and the messages
/// it got.
#[derive(Default)]
struct ServiceManager {
    store: BTreeMap<String, Vec<Arc<OwnedFd>>>,
    messages: Vec<String>,
}

impl ServiceManager {
    /// Reads every notification waiting on `socket` (it has a short read timeout).
    fn receive(&mut self, socket: &UnixDatagram) {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        loop {
            let mut buf = [0u8; 4096];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let Ok(msg) = rustix::net::recvmsg(
                socket,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) else {
                return;
            };
            let text = String::from_utf8_lossy(&buf[..msg.bytes]).to_string();
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("FDNAME="))
                .unwrap_or("stored")
                .to_string();
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received.map(Arc::new));
                }
            }
            if text.lines().any(|l| l == "FDSTORE=1") {
                self.store.entry(name.clone()).or_default().extend(fds);
            }
            if text.lines().any(|l| l == "FDSTOREREMOVE=1") {
                self.store.remove(&name);
            }
            self.messages.push(text);
        }
    }

    /// The store as systemd passes it to the next start (one descriptor per socket: the
    /// stand-in keeps the first copy of each name and address).
    fn descriptors(&self) -> Vec<(String, Arc<OwnedFd>)> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for (name, fds) in &self.store {
            for fd in fds {
                let key = (
                    name.clone(),
                    rustix::net::getsockname(&**fd)
                        .ok()
                        .map(|a| format!("{a:?}")),
                    rustix::net::sockopt::socket_type(&**fd).ok(),
                );
                if !seen.contains(&key) {
                    seen.push(key);
                    out.push((name.clone(), fd.clone()));
                }
            }
        }
        out
    }
}

fn options(notify: &Path, inherited_fds: Vec<(String, Arc<OwnedFd>)>) -> AgentOptions {
    AgentOptions {
        node_name: Some("fdstore".into()),
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.display().to_string()),
            ("FDSTORE".into(), "64".into()),
        ],
        inherited_fds,
        ..Default::default()
    }
}

#[test]
fn a_restart_with_the_fd_store_refuses_no_connection_and_a_closed_frontend_is_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let data = dir.path().join("agent");
    let agent = AgentProcess::start(&data, &options(&notify, Vec::new())).expect("agent starts");

    let frontend = closed_port();
    let spec = dir.path().join("web.toml");
    std::fs::write(&spec, web_spec("web", frontend, "")).expect("spec");
    let out = agent.strata(&["apply", spec.to_str().expect("path"), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let front = SocketAddr::new(agent.balancer, frontend);
    wait_until("the frontend serves", Duration::from_secs(30), || {
        matches!(http_get(front, "/"), Ok((200, _)))
    });

    let mut manager = ServiceManager::default();
    let frontend_name = format!("frontend-{frontend}");
    wait_until(
        "the agent stores its sockets and the frontend",
        Duration::from_secs(30),
        || {
            manager.receive(&socket);
            ["grpc", "http", "gossip", "dns", frontend_name.as_str()]
                .iter()
                .all(|n| manager.store.contains_key(*n))
        },
    );

    let load = Load::start(front, 2, Duration::from_millis(2), Duration::from_secs(120));
    let warmup = Instant::now();
    while load.ok() < 20 && warmup.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let grpc_before = agent.grpc;
    agent
        .terminate_keeping_services(Duration::from_secs(30))
        .expect("the agent stops on SIGTERM");
    manager.receive(&socket);
    // systemd starts the unit again with the stored descriptors.
    std::thread::sleep(Duration::from_secs(1));
    let again = AgentProcess::start(&data, &options(&notify, manager.descriptors()))
        .expect("the agent starts again");
    wait_until("the new agent serves web", Duration::from_secs(60), || {
        let ok_before = load.ok();
        std::thread::sleep(Duration::from_millis(200));
        load.ok() > ok_before
    });
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    eprintln!(
        "systemctl restart with the fd store: {} ok, {} failed",
        report.ok, report.failed
    );
    assert_eq!(
        report.failed, 0,
        "requests failed across the restart: {:?}",
        report.first_failures
    );
    assert_eq!(
        again.grpc, grpc_before,
        "the gRPC socket came from the store"
    );

    let out = again.strata(&["remove", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "the closed frontend leaves the store",
        Duration::from_secs(30),
        || {
            manager.receive(&socket);
            manager
                .messages
                .iter()
                .any(|m| m.contains("FDSTOREREMOVE=1") && m.contains(&frontend_name))
        },
    );
    assert!(!manager.store.contains_key(&frontend_name));
    assert!(
        manager.store.contains_key("grpc"),
        "the agent's own sockets stay stored"
    );
}
