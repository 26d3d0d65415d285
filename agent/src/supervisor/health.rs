//! Health checks: the checkers (HTTP, TCP, exec) and the state machine that turns their
//! outcomes into an instance's health.
//!
//! The vocabulary is HAProxy's and Consul's: `rise` consecutive good checks make an instance
//! healthy, `fall` consecutive failures make it critical, and failures in the `grace` period
//! after start are not counted.
//!
//! [`HealthTracker`] semantics, precisely:
//! - It starts [`Health::Unknown`].
//! - A failure (outside grace) adds to the failure streak and clears the good streaks;
//!   `fall` consecutive failures make the instance [`Health::Critical`]. Failures inside
//!   `grace` after start are ignored altogether (they neither count nor break a streak);
//!   only their message is kept.
//! - Leaving Unknown or Critical takes `rise` consecutive good outcomes (passes or warnings):
//!   the instance then becomes Passing, or Warning when the last of them was a warning.
//!   Warning instances still answer, so they are held to the same `rise` as Passing ones.
//! - A warning when Passing makes the instance Warning at once: degradation is reported the
//!   moment it is seen.
//! - Back from Warning to Passing takes `rise` consecutive passes.

use crate::supervisor::spec::{HealthCheck, HealthSpec};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// The longest check message kept, in bytes.
pub const MAX_OUTPUT: usize = 512;

/// How much of an exec check's stdout and stderr is kept, each.
const EXEC_CAPTURE: usize = 4096;

/// An instance's health, as reported to discovery and the console: the contract's enum
/// (Unknown: not yet decided; Passing: `rise` consecutive passes; Warning: answering but
/// degraded, exec exit 1 or HTTP 429; Critical: `fall` consecutive failures).
pub use strata_proto::v1::Health;

/// The result of one check, with what happened when it did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Healthy.
    Pass,
    /// Answering but degraded, and how.
    Warn(String),
    /// Not healthy, and what happened.
    Fail(String),
}

/// The health of one instance, fed check outcomes; pure, so it is tested without I/O.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    rise: u32,
    fall: u32,
    grace_until: Instant,
    status: Health,
    /// Consecutive passes.
    passes: u32,
    /// Consecutive passes or warnings.
    good: u32,
    /// Consecutive failures outside grace.
    failures: u32,
    last_output: String,
}

impl HealthTracker {
    /// A tracker for an instance started at `started` and checked per `spec`.
    pub fn new(spec: &HealthSpec, started: Instant) -> HealthTracker {
        HealthTracker {
            rise: spec.rise.max(1),
            fall: spec.fall.max(1),
            grace_until: started + spec.grace,
            status: Health::Unknown,
            passes: 0,
            good: 0,
            failures: 0,
            last_output: String::new(),
        }
    }

    /// Takes the thresholds of a changed `[health]` without forgetting what was seen: the
    /// health and the streaks stay, and so does the grace period the instance started with.
    pub fn reconfigure(&mut self, spec: &HealthSpec) {
        self.rise = spec.rise.max(1);
        self.fall = spec.fall.max(1);
    }

    /// The tracker of an instance that was already serving when its check was added, or
    /// that an agent re-attached after a restart: it starts passing, and `fall` failures
    /// make it critical as usual.
    pub fn assume_passing(mut self) -> HealthTracker {
        self.status = Health::Passing;
        self
    }

    /// Records one outcome seen at `now`; returns the new health when it changed.
    pub fn record(&mut self, outcome: CheckOutcome, now: Instant) -> Option<Health> {
        let before = self.status;
        match outcome {
            CheckOutcome::Pass => {
                self.last_output.clear();
                self.passes = self.passes.saturating_add(1);
                self.good = self.good.saturating_add(1);
                self.failures = 0;
                let enough = match self.status {
                    Health::Passing => false,
                    Health::Warning => self.passes >= self.rise,
                    Health::Unknown | Health::Critical => self.good >= self.rise,
                };
                if enough {
                    self.status = Health::Passing;
                }
            }
            CheckOutcome::Warn(message) => {
                self.last_output = bounded(message);
                self.passes = 0;
                self.good = self.good.saturating_add(1);
                self.failures = 0;
                let enough = match self.status {
                    Health::Passing | Health::Warning => true,
                    Health::Unknown | Health::Critical => self.good >= self.rise,
                };
                if enough {
                    self.status = Health::Warning;
                }
            }
            CheckOutcome::Fail(message) => {
                self.last_output = bounded(message);
                if now >= self.grace_until {
                    self.passes = 0;
                    self.good = 0;
                    self.failures = self.failures.saturating_add(1);
                    if self.failures >= self.fall {
                        self.status = Health::Critical;
                    }
                }
            }
        }
        (self.status != before).then_some(self.status)
    }

    /// The current health.
    pub fn status(&self) -> Health {
        self.status
    }

    /// The last check's message (empty after a pass), at most [`MAX_OUTPUT`] bytes.
    pub fn last_output(&self) -> &str {
        &self.last_output
    }

    /// Failures in a row, not counting those in grace.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

/// Cuts a message to [`MAX_OUTPUT`] bytes at a character boundary.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// Runs one check against an instance at `target`, giving up after `timeout`.
/// `env` is added to the agent's environment for exec checks.
pub async fn run_check(
    check: &HealthCheck,
    target: SocketAddr,
    timeout: Duration,
    env: &[(String, String)],
) -> CheckOutcome {
    let timed_out = || CheckOutcome::Fail(format!("timed out after {}", human(timeout)));
    match check {
        HealthCheck::Http(http) => {
            tokio::time::timeout(timeout, super::http_check::check(http, target))
                .await
                .unwrap_or_else(|_| timed_out())
        }
        HealthCheck::Tcp => match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
            Ok(Ok(_)) => CheckOutcome::Pass,
            Ok(Err(e)) => CheckOutcome::Fail(connect_error(&e, target)),
            Err(_) => timed_out(),
        },
        HealthCheck::Exec { command } => exec_check(command, timeout, env).await,
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A failed connect in words, naming the address.
pub(super) fn connect_error(e: &std::io::Error, target: SocketAddr) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("connection refused to {target}"),
        _ => format!("connect to {target}: {e}"),
    }
}

/// Runs the command: exit 0 passes, 1 warns, anything else fails; killed at the timeout.
async fn exec_check(
    command: &[String],
    timeout: Duration,
    env: &[(String, String)],
) -> CheckOutcome {
    let Some((program, args)) = command.split_first() else {
        return CheckOutcome::Fail("empty check command".to_string());
    };
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return CheckOutcome::Fail(format!("cannot run {program:?}: {e}")),
    };
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_bounded(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_bounded(s)));

    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => return CheckOutcome::Fail(format!("waiting for {program:?}: {e}")),
        Err(_) => None,
    };
    if status.is_none() {
        kill_group(&child);
    }
    let mut output = String::new();
    for reader in [stdout, stderr].into_iter().flatten() {
        let abort = reader.abort_handle();
        // Output already written sits in the pipe; a grandchild keeping it open is not waited for.
        match tokio::time::timeout(Duration::from_millis(100), reader).await {
            Ok(Ok(bytes)) => output.push_str(String::from_utf8_lossy(&bytes).trim()),
            _ => abort.abort(),
        }
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
    }
    let output = output.trim();
    let Some(status) = status else {
        return CheckOutcome::Fail(format!("timed out after {}", human(timeout)));
    };
    let with_output = |what: String| {
        if output.is_empty() {
            what
        } else {
            format!("{what}: {output}")
        }
    };
    match status.code() {
        Some(0) => CheckOutcome::Pass,
        Some(1) => CheckOutcome::Warn(with_output("exit 1".to_string())),
        Some(code) => CheckOutcome::Fail(with_output(format!("exit {code}"))),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().unwrap_or_default();
            CheckOutcome::Fail(with_output(format!("killed by signal {signal}")))
        }
    }
}

/// Kills the check's process group (the check runs in its own, led by the child we spawned).
fn kill_group(child: &tokio::process::Child) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid
        && let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
    {
        tracing::debug!(pid = pid.as_raw_nonzero().get(), error = %e, "killing a timed-out health check");
    }
}

/// Reads a pipe to its end, keeping the first [`EXEC_CAPTURE`] bytes.
async fn read_bounded(mut pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = EXEC_CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::HttpCheck;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn spec(rise: u32, fall: u32, grace: Duration) -> HealthSpec {
        HealthSpec {
            check: HealthCheck::Tcp,
            port: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise,
            fall,
            grace,
            address: None,
        }
    }

    fn fail() -> CheckOutcome {
        CheckOutcome::Fail("HTTP 503 Service Unavailable".into())
    }

    fn warn() -> CheckOutcome {
        CheckOutcome::Warn("HTTP 429 Too Many Requests".into())
    }

    /// Feeds outcomes one second apart, starting at `start + offset`; returns the changes.
    fn feed(
        t: &mut HealthTracker,
        start: Instant,
        offset: u64,
        outcomes: Vec<CheckOutcome>,
    ) -> Vec<Option<Health>> {
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| t.record(o, start + Duration::from_secs(offset + i as u64)))
            .collect()
    }

    #[test]
    fn rise_passes_make_passing_and_fall_failures_make_critical() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&spec(2, 3, Duration::ZERO), start);
        assert_eq!(t.status(), Health::Unknown);
        use CheckOutcome::Pass;
        assert_eq!(
            feed(&mut t, start, 0, vec![Pass, Pass, Pass]),
            vec![None, Some(Health::Passing), None]
        );
        assert_eq!(
            feed(&mut t, start, 3, vec![fail(), fail(), fail(), fail()]),
            vec![None, None, Some(Health::Critical), None]
        );
        assert_eq!(t.consecutive_failures(), 4);
        assert_eq!(t.last_output(), "HTTP 503 Service Unavailable");
        assert_eq!(
            feed(&mut t, start, 7, vec![Pass, fail(), Pass, Pass]),
            vec![None, None, None, Some(Health::Passing)]
        );
        assert_eq!(t.last_output(), "");
    }

    #[test]
    fn failures_in_grace_are_not_counted_but_passes_are() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&spec(2, 2, Duration::from_secs(5)), start);
        use CheckOutcome::Pass;
        // Seconds 0..4 are in grace.
        assert_eq!(
            feed(&mut t, start, 0, vec![fail(), fail(), fail(), Pass]),
            vec![None, None, None, None]
        );
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.last_output(), "");
        assert_eq!(
            feed(&mut t, start, 4, vec![Pass]),
            vec![Some(Health::Passing)]
        );
        // After grace, failures count.
        let mut t = HealthTracker::new(&spec(2, 2, Duration::from_secs(5)), start);
        assert_eq!(
            feed(&mut t, start, 3, vec![fail(), fail(), fail(), fail()]),
            vec![None, None, None, Some(Health::Critical)]
        );
    }

    #[test]
    fn warn_is_immediate_from_passing_and_back_takes_rise_passes() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&spec(3, 3, Duration::ZERO), start);
        use CheckOutcome::Pass;
        feed(&mut t, start, 0, vec![Pass, Pass, Pass]);
        assert_eq!(t.status(), Health::Passing);
        assert_eq!(t.record(warn(), start), Some(Health::Warning));
        assert_eq!(t.last_output(), "HTTP 429 Too Many Requests");
        assert_eq!(
            feed(&mut t, start, 4, vec![Pass, Pass, warn(), Pass, Pass, Pass]),
            vec![None, None, None, None, None, Some(Health::Passing)]
        );
        // Warnings do not add up to critical; failures after them do.
        assert_eq!(t.record(warn(), start), Some(Health::Warning));
        assert_eq!(
            feed(
                &mut t,
                start,
                20,
                vec![fail(), fail(), warn(), fail(), fail(), fail()]
            ),
            vec![None, None, None, None, None, Some(Health::Critical)]
        );
    }

    #[test]
    fn leaving_unknown_or_critical_takes_rise_good_outcomes() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&spec(2, 1, Duration::ZERO), start);
        assert_eq!(
            feed(&mut t, start, 0, vec![warn(), warn()]),
            vec![None, Some(Health::Warning)]
        );
        assert_eq!(t.record(fail(), start), Some(Health::Critical));
        assert_eq!(
            feed(
                &mut t,
                start,
                5,
                vec![CheckOutcome::Pass, warn(), CheckOutcome::Pass]
            ),
            vec![None, Some(Health::Warning), None]
        );
    }

    #[test]
    fn new_thresholds_keep_the_health_and_the_streaks() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&spec(2, 3, Duration::ZERO), start);
        assert_eq!(t.record(CheckOutcome::Pass, start), None);
        assert_eq!(t.record(CheckOutcome::Pass, start), Some(Health::Passing));
        assert_eq!(t.record(fail(), start), None);
        t.reconfigure(&spec(1, 2, Duration::ZERO));
        assert_eq!(
            t.status(),
            Health::Passing,
            "a new threshold is no new verdict"
        );
        assert_eq!(
            t.record(fail(), start),
            Some(Health::Critical),
            "the streak counted"
        );
        assert_eq!(t.record(CheckOutcome::Pass, start), Some(Health::Passing));
    }

    #[test]
    fn an_added_check_can_start_from_passing_and_still_fall() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&spec(2, 2, Duration::ZERO), start).assume_passing();
        assert_eq!(t.status(), Health::Passing);
        assert_eq!(t.record(fail(), start), None);
        assert_eq!(t.record(fail(), start), Some(Health::Critical));
    }

    #[test]
    fn long_messages_are_bounded_at_a_char_boundary() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&spec(1, 1, Duration::ZERO), start);
        t.record(CheckOutcome::Fail("é".repeat(400)), start);
        assert!(t.last_output().len() <= MAX_OUTPUT);
        assert!(t.last_output().len() >= MAX_OUTPUT - 1);
        assert!(t.last_output().chars().all(|c| c == 'é'));
    }

    /// Serves one canned response per connection; returns the address and the requests seen.
    async fn canned(
        response: impl Into<String>,
    ) -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
        let response: String = response.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                // A test that does not read the requests does not hold up the server.
                let _ = tx.try_send(String::from_utf8_lossy(&request).into_owned());
                let _ = sock.write_all(response.as_bytes()).await;
            }
        });
        (addr, rx)
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn http_checks_judge_real_responses() {
        let check = HealthCheck::Http(HttpCheck::plain("/healthz"));
        let (ok, mut requests) =
            canned("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
        assert_eq!(
            run_check(&check, ok, TIMEOUT, &[]).await,
            CheckOutcome::Pass
        );
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("Host: {ok}\r\n")), "{request}");
        assert!(request.contains("Connection: close\r\n"), "{request}");

        let (down, _r) =
            canned("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            run_check(&check, down, TIMEOUT, &[]).await,
            CheckOutcome::Fail("HTTP 503 Service Unavailable".into())
        );
        let (busy, _r) = canned("HTTP/1.1 429 Too Many Requests\r\n\r\n").await;
        assert_eq!(
            run_check(&check, busy, TIMEOUT, &[]).await,
            CheckOutcome::Warn("HTTP 429 Too Many Requests".into())
        );
    }

    #[tokio::test]
    async fn http_checks_read_chunked_and_sized_bodies_into_the_message() {
        let check = HealthCheck::Http(HttpCheck::plain("/"));
        let (ok, _r) =
            canned("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                .await;
        assert_eq!(
            run_check(&check, ok, TIMEOUT, &[]).await,
            CheckOutcome::Pass
        );
        let (down, _r) = canned(
            "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ndb \r\n4\r\ndown\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(
            run_check(&check, down, TIMEOUT, &[]).await,
            CheckOutcome::Fail("HTTP 503 Service Unavailable: db down".into())
        );
        let (slow, _r) =
            canned("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 10\r\n\r\nslow down\n").await;
        assert_eq!(
            run_check(&check, slow, TIMEOUT, &[]).await,
            CheckOutcome::Warn("HTTP 429 Too Many Requests: slow down".into())
        );
        let big = "x".repeat(100_000);
        let (huge, _r) = canned(format!(
            "HTTP/1.1 500 Oops\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        ))
        .await;
        let outcome = run_check(&check, huge, TIMEOUT, &[]).await;
        assert!(
            matches!(&outcome, CheckOutcome::Fail(m) if m.starts_with("HTTP 500 Oops: xxx") && m.len() <= super::super::http_check::MAX_BODY + 20),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn http_checks_follow_redirects_as_consul_does_unless_disabled() {
        let (ok, mut seen) = canned("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let (moved, _r) = canned(format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{ok}/ready?x=1\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
        let follow = HealthCheck::Http(HttpCheck::plain("/"));
        assert_eq!(
            run_check(&follow, moved, TIMEOUT, &[]).await,
            CheckOutcome::Pass
        );
        let request = seen.recv().await.unwrap();
        assert!(
            request.starts_with("GET /ready?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("Host: {ok}\r\n")), "{request}");

        let stay = HealthCheck::Http(HttpCheck {
            follow_redirects: false,
            ..HttpCheck::plain("/")
        });
        assert_eq!(
            run_check(&stay, moved, TIMEOUT, &[]).await,
            CheckOutcome::Fail("HTTP 302 Found".into())
        );
        let (around, _r) = canned(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(matches!(
            run_check(&follow, around, TIMEOUT, &[]).await,
            CheckOutcome::Fail(m) if m.starts_with("stopped after 10 redirects")
        ));
    }

    /// Serves `200 OK` over TLS with a self-signed certificate for `localhost`.
    async fn self_signed_https() -> SocketAddr {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = key.cert.der().clone();
        let private =
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        https_server(vec![cert], private).await
    }

    /// Serves `200 OK` over TLS with the certificate chain `chain` and its key.
    async fn https_server(
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        private: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> SocketAddr {
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn https_checks_verify_the_certificate_unless_told_to_skip() {
        let addr = self_signed_https().await;
        let https = |skip_verify| {
            HealthCheck::Http(HttpCheck {
                tls: Some(crate::supervisor::spec::CheckTls {
                    server_name: Some("localhost".into()),
                    skip_verify,
                }),
                ..HttpCheck::plain("/healthz")
            })
        };
        let refused = run_check(&https(false), addr, TIMEOUT, &[]).await;
        assert!(
            matches!(&refused, CheckOutcome::Fail(m) if m.contains("TLS handshake") && m.contains("certificate")),
            "{refused:?}"
        );
        assert_eq!(
            run_check(&https(true), addr, TIMEOUT, &[]).await,
            CheckOutcome::Pass
        );
        let plain = run_check(
            &HealthCheck::Http(HttpCheck::plain("/")),
            addr,
            TIMEOUT,
            &[],
        )
        .await;
        assert!(matches!(plain, CheckOutcome::Fail(_)), "{plain:?}");
    }

    #[tokio::test]
    async fn https_checks_trust_the_cluster_ca_once_the_agent_runs_with_tls() {
        use crate::tls::issue::{IssueRequest, create_ca, issue};
        use crate::tls::subject::CertKind;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ca = create_ca("checks", 1).unwrap();
        let leaf = issue(
            &ca,
            &IssueRequest {
                name: "websvc".into(),
                kind: CertKind::Agent,
                sans: Vec::new(),
                days: 1,
            },
        )
        .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
        let addr = https_server(chain, key).await;
        let check = HealthCheck::Http(HttpCheck {
            tls: Some(crate::supervisor::spec::CheckTls {
                server_name: Some("websvc".into()),
                skip_verify: false,
            }),
            ..HttpCheck::plain("/healthz")
        });
        let unknown = run_check(&check, addr, TIMEOUT, &[]).await;
        assert!(
            matches!(&unknown, CheckOutcome::Fail(m) if m.contains("certificate")),
            "{unknown:?}"
        );
        super::super::http_check::trust_cluster_ca(vec![
            CertificateDer::from_pem_slice(ca.cert.as_bytes()).unwrap(),
        ]);
        assert_eq!(
            run_check(&check, addr, TIMEOUT, &[]).await,
            CheckOutcome::Pass
        );
    }

    #[tokio::test]
    async fn http_check_times_out_on_a_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepted by the kernel backlog, never answered.
        let outcome = run_check(
            &HealthCheck::Http(HttpCheck::plain("/")),
            addr,
            Duration::from_millis(200),
            &[],
        )
        .await;
        assert_eq!(outcome, CheckOutcome::Fail("timed out after 200ms".into()));
        drop(listener);
    }

    #[tokio::test]
    async fn tcp_checks_pass_on_a_listener_and_fail_on_a_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert_eq!(
            run_check(&HealthCheck::Tcp, open, TIMEOUT, &[]).await,
            CheckOutcome::Pass
        );
        drop(listener);
        // The port was just released; nothing listens on it now.
        assert_eq!(
            run_check(&HealthCheck::Tcp, open, TIMEOUT, &[]).await,
            CheckOutcome::Fail(format!("connection refused to {open}"))
        );
        let http = HealthCheck::Http(HttpCheck::plain("/"));
        assert_eq!(
            run_check(&http, open, TIMEOUT, &[]).await,
            CheckOutcome::Fail(format!("connection refused to {open}"))
        );
    }

    fn sh(script: &str) -> HealthCheck {
        HealthCheck::Exec {
            command: vec!["sh".into(), "-c".into(), script.into()],
        }
    }

    const NOWHERE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        9,
    ));

    #[tokio::test]
    async fn exec_checks_map_exit_codes_and_keep_output() {
        assert_eq!(
            run_check(&sh("exit 0"), NOWHERE, TIMEOUT, &[]).await,
            CheckOutcome::Pass
        );
        assert_eq!(
            run_check(&sh("echo slow; exit 1"), NOWHERE, TIMEOUT, &[]).await,
            CheckOutcome::Warn("exit 1: slow".into())
        );
        assert_eq!(
            run_check(
                &sh("echo \"db $DB\" >&2; exit 2"),
                NOWHERE,
                TIMEOUT,
                &[("DB".to_string(), "down".to_string())]
            )
            .await,
            CheckOutcome::Fail("exit 2: db down".into())
        );
        let noisy = run_check(
            &sh("head -c 100000 /dev/zero | tr '\\0' x; exit 2"),
            NOWHERE,
            TIMEOUT,
            &[],
        )
        .await;
        assert!(
            matches!(&noisy, CheckOutcome::Fail(m) if m.starts_with("exit 2: xxx") && m.len() <= EXEC_CAPTURE + 16),
            "{noisy:?}"
        );
        assert!(matches!(
            run_check(&HealthCheck::Exec { command: vec!["/nonexistent/check".into()] }, NOWHERE, TIMEOUT, &[]).await,
            CheckOutcome::Fail(m) if m.contains("cannot run \"/nonexistent/check\"")
        ));
    }

    #[tokio::test]
    async fn exec_check_is_killed_at_the_timeout() {
        let begun = Instant::now();
        let outcome = run_check(
            &sh("sleep 5; exit 0"),
            NOWHERE,
            Duration::from_millis(300),
            &[],
        )
        .await;
        assert_eq!(outcome, CheckOutcome::Fail("timed out after 300ms".into()));
        assert!(
            begun.elapsed() < Duration::from_secs(4),
            "waited for the sleep"
        );
    }
}
