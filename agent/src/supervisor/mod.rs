//! The service supervisor: runs each service's instances from its spec, keeps them running
//! under a restart policy, checks their health, isolates them with cgroups and rlimits, and
//! re-attaches to them after the agent's own restart.

pub mod cgroup;
pub mod detached;
pub mod frontends;
pub mod health;
pub mod http_check;
pub mod instance;
pub mod log_retention;
pub mod log_tail;
pub mod logs;
pub mod manager;
pub mod plan;
pub mod policy;
pub mod ports;
pub mod rediscover;
pub mod rollout;
pub mod sealed;
pub mod service;
pub mod spec;
pub mod stop_services;
pub mod store;
