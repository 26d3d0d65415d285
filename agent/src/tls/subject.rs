//! Who a certificate names: the subject scheme of the cluster CA's certificates, and the
//! identity of the client that presented one on a gRPC request.
//!
//! Scheme: CN = the agent's node name or the operator's name; OU = `agent` for an agent,
//! `operator:ROLE` for an operator, ROLE being a [`Role`], followed for a scoped operator by
//! its scope in the on-behalf header's words (`operator:operate services=web-*,api
//! team=payments`, see [`Scope`]). A certificate is only believed after rustls verified
//! that it chains to the cluster CA; an OU that does not parse whole is not of the scheme, so
//! an agent that cannot read a scope refuses the certificate instead of ignoring the scope.

use crate::auth::{Role, Scope};
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
        /// The services it may change (unscoped: all its role allows).
        scope: Scope,
    },
}

impl CertKind {
    /// The organizational unit that encodes this kind in a certificate subject.
    pub fn unit(&self) -> String {
        match self {
            CertKind::Agent => AGENT_UNIT.to_string(),
            CertKind::Operator { role, scope } if scope.is_unscoped() => {
                format!("{OPERATOR_PREFIX}{role}")
            }
            CertKind::Operator { role, scope } => {
                format!("{OPERATOR_PREFIX}{role} {}", scope.to_header())
            }
        }
    }

    /// The kind an organizational unit encodes; `None` for anything not of the scheme,
    /// including an unknown role.
    pub fn from_unit(unit: &str) -> Option<CertKind> {
        if unit == AGENT_UNIT {
            return Some(CertKind::Agent);
        }
        let mut words = unit.strip_prefix(OPERATOR_PREFIX)?.split(' ');
        let role = words.next()?.parse().ok()?;
        let mut scope = Scope::default();
        for word in words {
            scope.read_header_word(word)?;
        }
        Some(CertKind::Operator { role, scope })
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
        let scoped = Scope {
            services: vec!["web-*".into(), "api".into()],
            team: Some("payments".into()),
        };
        for kind in [
            CertKind::Agent,
            CertKind::Operator {
                role: Role::Read,
                scope: Scope::default(),
            },
            CertKind::Operator {
                role: Role::Admin,
                scope: Scope::default(),
            },
            CertKind::Operator {
                role: Role::Operate,
                scope: scoped.clone(),
            },
        ] {
            assert_eq!(CertKind::from_unit(&kind.unit()), Some(kind));
        }
        assert_eq!(
            CertKind::Operator {
                role: Role::Operate,
                scope: scoped
            }
            .unit(),
            "operator:operate services=web-*,api team=payments"
        );
        for bad in [
            "",
            "agents",
            "operator:",
            "operator:root",
            "Operator:read",
            "operator:operate owner=x",
            "operator:operate services=web prod",
        ] {
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
