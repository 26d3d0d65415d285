//! TLS for the agent's gRPC API and for agent-to-agent traffic.
//!
//! - [`issue`]: the cluster CA and the certificates it issues (rcgen, ECDSA P-256).
//! - [`files`]: writing them atomically, keys private, no silent overwrite.
//! - [`command`]: `strata-agent tls ca` and `strata-agent tls issue`.
//! - [`subject`]: the subject scheme (CN = name, OU = `agent` or `operator:ROLE`) and
//!   [`peer_subject`], the identity of the client of a gRPC request.
//! - [`load`]: the agent's certificate, key and CA read at start into the configs of the
//!   gRPC server, the peer channels and the gossip streams.
//! - [`verify`]: the rustls verifiers of the gossip streams (agents only).

pub mod command;
pub mod files;
pub mod issue;
pub mod load;
pub mod subject;
pub mod verify;

pub use load::{AgentTls, TlsFiles};
pub use subject::{CertKind, CertSubject, peer_subject};
