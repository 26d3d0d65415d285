//! Balancer settings and their defaults (HAProxy's vocabulary where it has a word for it).

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

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

/// Passive outlier detection ("observe layer4" in HAProxy): failed connects eject an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive connect failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection in a row lasts n times as long.
    pub base_ejection: Duration,
    /// Upper bound of one ejection.
    pub max_ejection: Duration,
    /// Never eject more than this share (percent) of a service's available endpoints.
    pub max_ejected_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
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
    /// Give up on one backend connect after this long and try another instance.
    pub connect_timeout: Duration,
    /// Other instances tried after a failed connect (the client has sent nothing yet).
    pub retries: u32,
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
            connect_timeout: Duration::from_secs(1),
            retries: 2,
            outlier: OutlierConfig::default(),
            drain_deadline: Duration::from_secs(30),
            access_log: None,
            copy_mode: CopyMode::default(),
            buffer_size: 64 << 10,
        }
    }
}
