//! Who a certificate names: the subject scheme of the cluster CA's certificates, and the
//! identity of the client that presented one on a gRPC request.
//!
//! Scheme: CN = the agent's node name or the operator's name; OU = `agent` for an agent,
//! `operator:ROLE` for an operator, ROLE being a [`Role`]. A certificate is only
//! believed after rustls verified that it chains to the cluster CA.

use crate::auth::Role;
use std::fmt;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The OU of an agent certificate.
const AGENT_UNIT: &str = "agent";
/// The OU prefix of an operator certificate; the role follows.
const OPERATOR_PREFIX: &str = "operator:";

/// What kind of party a certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertKind {
    /// Another agent of the cluster (forwarding, anti-entropy).
    Agent,
    /// A person or script, with what it may do.
    Operator {
        /// The role the certificate grants.
        role: Role,
    },
}

impl CertKind {
    /// The organizational unit that encodes this kind in a certificate subject.
    pub fn unit(&self) -> String {
        match self {
            CertKind::Agent => AGENT_UNIT.to_string(),
            CertKind::Operator { role } => format!("{OPERATOR_PREFIX}{role}"),
        }
    }

    /// The kind an organizational unit encodes; `None` for anything not of the scheme,
    /// including an unknown role.
    pub fn from_unit(unit: &str) -> Option<CertKind> {
        if unit == AGENT_UNIT {
            return Some(CertKind::Agent);
        }
        let role = unit.strip_prefix(OPERATOR_PREFIX)?.parse().ok()?;
        Some(CertKind::Operator { role })
    }
}

/// The identity in a certificate of the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSubject {
    /// The subject's CN: a node name or an operator's name.
    pub name: String,
    /// Agent or operator (with its role).
    pub kind: CertKind,
}

impl fmt::Display for CertSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.kind.unit())
    }
}

/// Reads the subject of a DER certificate; `None` when it does not parse or does not
/// follow the scheme (no CN, or no OU of the scheme).
pub fn subject_of_der(der: &[u8]) -> Option<CertSubject> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    if name.is_empty() {
        return None;
    }
    let kind = subject
        .iter_organizational_unit()
        .filter_map(|unit| unit.as_str().ok())
        .find_map(CertKind::from_unit)?;
    Some(CertSubject {
        name: name.to_string(),
        kind,
    })
}

/// The identity of the client that sent `request`: the subject of the certificate it
/// presented on the TLS connection. `None` without TLS, without a client certificate, or
/// with a certificate outside the scheme. The TLS layer only accepts client certificates
/// that chain to the cluster CA, so a `Some` is a verified identity.
pub fn peer_subject<T>(request: &tonic::Request<T>) -> Option<CertSubject> {
    let certs = request.peer_certs()?;
    subject_of_der(certs.first()?.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_and_unknown_ones_are_refused() {
        for kind in [
            CertKind::Agent,
            CertKind::Operator { role: Role::Read },
            CertKind::Operator { role: Role::Admin },
        ] {
            assert_eq!(CertKind::from_unit(&kind.unit()), Some(kind));
        }
        for bad in ["", "agents", "operator:", "operator:root", "Operator:read"] {
            assert_eq!(CertKind::from_unit(bad), None, "{bad}");
        }
    }

    #[test]
    fn garbage_is_no_subject() {
        assert_eq!(subject_of_der(b"not a certificate"), None);
    }

    #[test]
    fn a_request_without_tls_has_no_peer_subject() {
        assert_eq!(peer_subject(&tonic::Request::new(())), None);
    }
}
