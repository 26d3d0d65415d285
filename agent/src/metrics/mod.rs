//! Host monitoring: collectors read /proc and /sys into `HostMetrics` samples; history keeps
//! them in bounded rings; alert rules turn them into events; the Prometheus module renders
//! them for scrapers.

pub mod alerts;
pub mod collect;
pub mod hardware;
pub mod history;
pub mod node;
pub mod own_process;
pub mod processes;
pub mod procs;
pub mod prometheus;
