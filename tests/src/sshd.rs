//! An OpenSSH server per test "host": `sshd` started inside a node's network namespace
//! ([`crate::netns::TestNet`]) with a config, host key and authorized key of its own in a temp
//! dir, listening on the namespace's address only, so Ansible (or `ssh`) reaches the
//! namespace as it would reach a machine.
//!
//! sshd needs its privilege separation dir `/run/sshd`; rather than make it on the host, the
//! server runs in a private mount namespace with a tmpfs of its own on `/run`. It runs in the
//! foreground (`-D`), so the pid the test holds is the server's, and dropping an [`Sshd`]
//! stops it by that pid.

use anyhow::{Context, Result, bail};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long sshd may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sshd; dropped, it is stopped by its pid.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

/// Makes an ed25519 key pair without a passphrase at `path` (and `path`.pub).
pub fn keygen(path: &Path) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "strata-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssh-keygen")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen -f {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The sshd config: this address only, keys and pid file in `dir`, root by key only.
fn config(dir: &Path, ip: Ipv4Addr) -> String {
    let d = dir.display();
    format!(
        "ListenAddress {ip}:22\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\n\
         PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUseDNS no\nPrintMotd no\n\
         Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
}

/// The absolute path of a program on PATH (sshd refuses to start from a relative one).
fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Sshd {
    /// Starts sshd in network namespace `netns` on `ip`:22, with its files in `dir` (made if
    /// missing) and `client_pub` (a public key file) as root's only authorized key; waits
    /// until it accepts connections.
    pub fn start(netns: &str, ip: Ipv4Addr, dir: &Path, client_pub: &Path) -> Result<Sshd> {
        std::fs::create_dir_all(dir)?;
        let host_key = dir.join("host_key");
        if !host_key.exists() {
            keygen(&host_key)?;
        }
        std::fs::copy(client_pub, dir.join("authorized_keys"))
            .with_context(|| format!("cannot copy {}", client_pub.display()))?;
        let conf = dir.join("sshd_config");
        std::fs::write(&conf, config(dir, ip))?;
        let sshd = on_path("sshd").context("sshd is not on PATH")?;
        let log = dir.join("sshd.log");
        let stderr = std::fs::File::create(&log)?;
        // nsenter, unshare and sh each exec the next, so the child's pid is sshd's.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                "mount -t tmpfs -o mode=0755 strata-test-run /run && mkdir -m 0755 /run/sshd \
                 && exec \"$0\" -D -e -f \"$1\"",
            ])
            .arg(&sshd)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start sshd")?;
        let mut server = Sshd {
            child,
            addr: SocketAddr::from((ip, 22)),
            log,
        };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("sshd exited with {status}: {}", server.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "sshd did not listen on {} within {LISTEN_TIMEOUT:?}: {}",
                    server.addr,
                    server.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// What sshd logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
