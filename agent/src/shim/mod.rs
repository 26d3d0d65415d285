//! The per-instance shim: `strata-agent shim DIR`.
//!
//! The agent starts one shim per service instance, in its own session, so the instance
//! outlives the agent: when the agent is killed or restarted, the shim keeps the service's
//! stdout/stderr flowing into its log files, reaps it and records how it ended. The agent
//! re-attaches by pid (verified by start time) after its own restart.
//!
//! Protocol, all files in the instance directory DIR:
//! - `launch.json` ([`launch::Launch`]), written by the agent before the shim starts;
//! - one line on the shim's stdout once the service runs: `started PID START_TICKS`, or
//!   `failed REASON` when it could not be started (then the shim exits with status 1);
//! - `exit.json` ([`launch::ExitRecord`]), written atomically by the shim when the service
//!   has ended, just before the shim exits;
//! - `log-status` ([`logstatus::LogStatus`]), kept current by the shim and polled by the
//!   agent: whether log lines are being dropped (a full log disk), and how many.

pub mod launch;
pub mod logfile;
pub mod logstatus;
pub mod run;
