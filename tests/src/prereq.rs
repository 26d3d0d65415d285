//! What a test needs from the machine and cannot make itself: root, network namespaces, a
//! tmpfs mount, a cgroup controller, `/dev/kmsg`, a program such as `tmux` or `promtool`.
//!
//! One rule for all of them. Under CI (the `CI` variable set, as CI sets `CI=true`) a
//! missing prerequisite fails the test, naming what is missing and how to get it: CI runs as
//! root with every program `.ci/run` installs, so a skip there would hide a test that never
//! ran. Elsewhere the test prints `SKIP: ...` with the same words and passes.
//!
//! A test asks, and returns early when told no:
//!
//! ```no_run
//! use strata_tests::prereq;
//! if !prereq::TMUX.check() {
//!     return;
//! }
//! ```

use std::fmt::Display;

/// A program a test runs, and the Debian package it comes from (`.ci/run` installs each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The command's name on PATH.
    pub name: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
}

/// `promtool check metrics` checks the `/metrics` text.
pub const PROMTOOL: Program = Program::new("promtool", "prometheus");

/// `tmux` drives the console in a real terminal.
pub const TMUX: Program = Program::new("tmux", "tmux");

/// `dig` queries the DNS server as a resolver would.
pub const DIG: Program = Program::new("dig", "dnsutils");

/// `systemd-analyze verify` checks the installed unit file (no systemd as PID 1 needed).
pub const SYSTEMD_ANALYZE: Program = Program::new("systemd-analyze", "systemd");

/// `ip` makes the network namespaces, veth pairs and bridge of the fault tests.
pub const IP: Program = Program::new("ip", "iproute2");

/// `ansible-playbook` runs the Ansible role against hosts reached over ssh.
pub const ANSIBLE_PLAYBOOK: Program = Program::new("ansible-playbook", "ansible");

/// `sshd`, the OpenSSH server each namespace "host" of the Ansible test runs.
pub const SSHD: Program = Program::new("sshd", "openssh-server");

/// `ssh-keygen` makes the sshd host keys and the client key.
pub const SSH_KEYGEN: Program = Program::new("ssh-keygen", "openssh-client");

/// `ssh`, the client Ansible connects with.
pub const SSH: Program = Program::new("ssh", "openssh-client");

/// `strip` makes the copies of the debug binaries the Ansible test ships over ssh small.
pub const STRIP: Program = Program::new("strip", "binutils");

/// Debian's Python, which Debian's Python modules are for (not a pyenv `python3` on PATH).
pub const PYTHON: &str = "/usr/bin/python3";

/// `grpc`: gRPC's own Python client, a third-party client of the agent's API.
pub const PY_GRPC: PythonModule = PythonModule::new("grpc", "python3-grpcio");

/// `grpc_tools`: `protoc` for Python, making the health and reflection stubs at test time.
pub const PY_GRPC_TOOLS: PythonModule = PythonModule::new("grpc_tools", "python3-grpc-tools");

/// A module [`PYTHON`] imports, and the Debian package it comes from (`.ci/run` installs each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PythonModule {
    /// The name `import` takes.
    pub name: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
}

impl PythonModule {
    const fn new(name: &'static str, package: &'static str) -> PythonModule {
        PythonModule { name, package }
    }

    /// Whether [`PYTHON`] imports the module; when not, that is a missing prerequisite
    /// ([`missing`]), so the caller returns.
    #[track_caller]
    pub fn check(self) -> bool {
        let imports = std::process::Command::new(PYTHON)
            .args(["-c", &format!("import {}", self.name)])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !imports {
            missing(
                format_args!("{PYTHON} cannot import `{}`", self.name),
                &format!("apt-get install {}", self.package),
            );
        }
        imports
    }
}

/// `prometheus` scrapes an agent and node_exporter side by side (the compatibility test).
pub const PROMETHEUS: Program = Program::new("prometheus", "prometheus");

/// Debian's node_exporter, the reference for the agent's `node_*` metric names.
pub const NODE_EXPORTER: Program =
    Program::new("prometheus-node-exporter", "prometheus-node-exporter");

/// How to get the cgroup controllers the isolation tests write to.
pub const CGROUPS_HOW: &str = "run the tests as root on a host that mounts cgroups at \
     /sys/fs/cgroup (v2, or v1 controllers such as /sys/fs/cgroup/memory), as CI does";

impl Program {
    const fn new(name: &'static str, package: &'static str) -> Program {
        Program { name, package }
    }

    /// Whether the program is on PATH. When it is not, that is reported as a missing
    /// prerequisite ([`missing`]): the test fails under CI, and elsewhere prints why it
    /// skips, so the caller returns.
    #[track_caller]
    pub fn check(self) -> bool {
        if on_path(self.name) {
            return true;
        }
        missing(
            format_args!("`{}` is not on PATH", self.name),
            &format!("apt-get install {}", self.package),
        );
        false
    }
}

/// Whether the tests run as root; when not, reports `needed_for` as a missing prerequisite
/// ([`missing`]), so the caller skips what needs root.
#[track_caller]
pub fn root(needed_for: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    missing(
        format_args!("root, needed for {needed_for}"),
        "run the tests as root, as CI does",
    );
    false
}

/// Reports a missing prerequisite: `what` is missing, `how` says how to get it. Under CI
/// the test fails here; elsewhere this prints `SKIP: ...` and returns, and the caller
/// returns early.
#[track_caller]
pub fn missing(what: impl Display, how: &str) {
    match verdict(std::env::var("CI").ok().as_deref(), &what.to_string(), how) {
        Verdict::Fail(message) => panic!("{message}"),
        Verdict::Skip(message) => println!("{message}"),
    }
}

/// What becomes of a missing prerequisite.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Under CI: the test fails with this message.
    Fail(String),
    /// Elsewhere: the test prints this and skips.
    Skip(String),
}

/// The rule, given the value of `CI`: set to anything but "", "0" or "false" means CI.
fn verdict(ci: Option<&str>, what: &str, how: &str) -> Verdict {
    let under_ci = ci
        .map(str::trim)
        .is_some_and(|v| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")));
    if under_ci {
        Verdict::Fail(format!(
            "missing prerequisite: {what} (to get it: {how}). CI is set, so this is a \
             failure, not a skip"
        ))
    } else {
        Verdict::Skip(format!("SKIP: {what} (to get it: {how})"))
    }
}

/// Whether a program is on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_set_to_a_true_value_fails_and_anything_else_skips() {
        for ci in ["true", "1", "yes", "TRUE"] {
            assert!(
                matches!(verdict(Some(ci), "tmux", "apt-get install tmux"), Verdict::Fail(m)
                    if m.contains("tmux") && m.contains("apt-get install tmux")),
                "CI={ci}"
            );
        }
        for ci in [None, Some(""), Some("0"), Some("false"), Some("False")] {
            assert_eq!(
                verdict(ci, "tmux", "apt-get install tmux"),
                Verdict::Skip("SKIP: tmux (to get it: apt-get install tmux)".into()),
                "CI={ci:?}"
            );
        }
    }

    #[test]
    fn a_program_is_found_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("strata-no-such-program"));
    }
}
