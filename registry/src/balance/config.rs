//! Balancer settings and their defaults (HAProxy's vocabulary where it has a word for it).

use crate::table::{Algorithm, BalanceConfig};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;
use strata_proto::v1::BalanceSettings;

/// How bytes move between the client socket and the backend socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMode {
    /// A read/write loop through one fixed user-space buffer per direction.
    #[default]
    Copy,
    /// Linux `splice(2)` through one pipe per direction: no copy into user space.
    Splice,
}

/// Passive outlier detection ("observe layer4" in HAProxy, Envoy's consecutive local-origin
/// failures): failed connects eject an endpoint, within the limits in `outlier.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive connect failures (refused, reset, unreachable, or a timeout while the
    /// endpoint completed no other connect) that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection in a row lasts n times as long.
    pub base_ejection: Duration,
    /// Upper bound of one ejection.
    pub max_ejection: Duration,
    /// Never eject more than this share (percent) of a service's available endpoints.
    pub max_ejected_percent: u8,
}

impl Default for OutlierConfig {
    /// Five in a row as in Envoy: fewer ejects an instance for a brief hiccup.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

impl Default for BalanceConfig {
    /// What a spec that says nothing gets:
    /// - connect_timeout 1s: Linux retransmits a dropped SYN (full accept queue) after 1 s, so
    ///   an attempt that has not connected by then is better sent to another instance;
    /// - retries 2: three instances tried before the client waits in the queue;
    /// - slow_start 10s: a joining or returning instance warms up before taking its share;
    /// - max_conns 0 (HAProxy's `maxconn` per server is unlimited by default too);
    /// - max_queue 1024 and queue_timeout 10s: a momentary shortage holds clients, a lasting
    ///   one fails them within seconds;
    /// - idle_timeout 1h (Envoy's tcp_proxy default: HAProxy's usual 30 s–1 min would cut idle
    ///   database and websocket connections);
    /// - response_timeout 60s (nginx's `proxy_read_timeout`): a backend that accepts and never
    ///   answers does not hold a client for long.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::P2cEwma,
            prefer_local: false,
            connect_timeout: Duration::from_secs(1),
            retries: 2,
            slow_start: Duration::from_secs(10),
            max_conns: 0,
            max_queue: 1024,
            queue_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            response_timeout: Duration::from_secs(60),
        }
    }
}

impl BalanceConfig {
    /// Most retries a service may ask for.
    pub const MAX_RETRIES: u32 = 10;
    /// Largest per-instance connection limit.
    pub const MAX_CONNS: u32 = 1_000_000;
    /// Largest queue.
    pub const MAX_QUEUE: u32 = 100_000;
    /// Longest connect timeout.
    pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
    /// Longest of the other durations (a year, as the spec allows).
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

    /// The settings as a catalog record carries them.
    pub fn to_catalog(&self) -> BalanceSettings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        BalanceSettings {
            connect_timeout_ms: ms(self.connect_timeout),
            retries: self.retries,
            slow_start_ms: ms(self.slow_start),
            max_conns: self.max_conns,
            max_queue: self.max_queue,
            queue_timeout_ms: ms(self.queue_timeout),
            idle_timeout_ms: ms(self.idle_timeout),
            response_timeout_ms: ms(self.response_timeout),
        }
    }

    /// The settings of a catalog record. A record without them (an older agent) gets the
    /// defaults; values no spec could give (a zero connect timeout, more retries or longer
    /// durations than allowed) are brought into range rather than trusted.
    pub fn from_catalog(
        algorithm: i32,
        prefer_local: bool,
        settings: Option<&BalanceSettings>,
    ) -> Self {
        let default = Self {
            algorithm: Algorithm::from_wire(algorithm).effective(),
            prefer_local,
            ..Self::default()
        };
        let Some(s) = settings else {
            return default;
        };
        let ms = |v: u64| Duration::from_millis(v).min(Self::MAX_DURATION);
        Self {
            connect_timeout: match s.connect_timeout_ms {
                0 => default.connect_timeout,
                v => ms(v).min(Self::MAX_CONNECT_TIMEOUT),
            },
            retries: s.retries.min(Self::MAX_RETRIES),
            slow_start: ms(s.slow_start_ms),
            max_conns: s.max_conns.min(Self::MAX_CONNS),
            max_queue: s.max_queue.min(Self::MAX_QUEUE),
            queue_timeout: ms(s.queue_timeout_ms),
            idle_timeout: ms(s.idle_timeout_ms),
            response_timeout: ms(s.response_timeout_ms),
            ..default
        }
    }
}

/// Where the per-connection access log goes and how it rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Directory holding `access.log`, `access.log.1`, ….
    pub dir: PathBuf,
    /// Rotate once `access.log` would grow beyond this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides `access.log`.
    pub keep: usize,
}

impl AccessLogConfig {
    /// A log in `dir` with the default size (16 MiB) and 5 rotated files.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: 16 << 20,
            keep: 5,
        }
    }
}

/// Everything a [`super::Balancer`] needs besides the service table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerConfig {
    /// Address the frontends listen on; agents sharing a machine use 127.0.0.2, 127.0.0.3, ….
    pub bind_ip: IpAddr,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Connections to a draining or vanished endpoint are closed after this long.
    pub drain_deadline: Duration,
    /// Per-connection access log; `None` keeps only the live subscription.
    pub access_log: Option<AccessLogConfig>,
    /// Copy loop or splice(2).
    pub copy_mode: CopyMode,
    /// Bytes buffered per direction of one connection (user-space buffer or pipe size).
    pub buffer_size: usize,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            outlier: OutlierConfig::default(),
            drain_deadline: Duration::from_secs(30),
            access_log: None,
            copy_mode: CopyMode::default(),
            buffer_size: 64 << 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_round_trip_keeps_every_setting() {
        let config = BalanceConfig {
            algorithm: Algorithm::LeastConn,
            prefer_local: true,
            connect_timeout: Duration::from_millis(250),
            retries: 4,
            slow_start: Duration::ZERO,
            max_conns: 7,
            max_queue: 0,
            queue_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(60),
            response_timeout: Duration::ZERO,
        };
        let wire = config.to_catalog();
        assert_eq!(
            BalanceConfig::from_catalog(Algorithm::LeastConn as i32, true, Some(&wire)),
            config
        );
    }

    #[test]
    fn an_older_record_gets_the_defaults_and_nonsense_is_brought_into_range() {
        let old = BalanceConfig::from_catalog(Algorithm::Unspecified as i32, false, None);
        assert_eq!(old, BalanceConfig::default());
        let wild = BalanceSettings {
            connect_timeout_ms: 0,
            retries: u32::MAX,
            max_conns: u32::MAX,
            max_queue: u32::MAX,
            idle_timeout_ms: u64::MAX,
            ..Default::default()
        };
        let c = BalanceConfig::from_catalog(99, false, Some(&wild));
        assert_eq!(c.algorithm, Algorithm::P2cEwma);
        assert_eq!(c.connect_timeout, BalanceConfig::default().connect_timeout);
        assert_eq!(c.retries, BalanceConfig::MAX_RETRIES);
        assert_eq!(c.max_conns, BalanceConfig::MAX_CONNS);
        assert_eq!(c.max_queue, BalanceConfig::MAX_QUEUE);
        assert_eq!(c.idle_timeout, BalanceConfig::MAX_DURATION);
    }
}
