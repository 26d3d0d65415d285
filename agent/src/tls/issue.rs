//! The cluster CA and the certificates it issues, as PEM text (ECDSA P-256). No file I/O
//! here: `files` writes what these functions return.

use super::subject::CertKind;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use std::net::IpAddr;
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// Default validity of the cluster CA, in days (about ten years).
pub const CA_DAYS: u32 = 3650;
/// Default validity of an agent or operator certificate, in days.
pub const LEAF_DAYS: u32 = 365;
/// How far back a certificate's validity starts, so that a peer whose clock is a little
/// behind accepts it at once.
const BACKDATE: Duration = Duration::hours(1);

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert: String,
    /// Its private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key: String,
}

/// What to issue a certificate for.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The CN: a node name or an operator's name.
    pub name: String,
    /// Agent (server and client) or operator (client only, with a role).
    pub kind: CertKind,
    /// Extra subject alternative names (IP addresses or DNS names); agents only.
    pub sans: Vec<String>,
    /// Validity in days from now.
    pub days: u32,
}

/// Why a certificate could not be made.
#[derive(Debug, Error)]
pub enum IssueError {
    /// Zero days, or more than the dates can hold.
    #[error("--days {0}: must be from 1 to 36500")]
    Days(u32),
    /// The name cannot be a certificate name.
    #[error("{what} {value:?}: {problem}")]
    Name {
        /// Which input ("name", "--san").
        what: &'static str,
        /// The rejected text.
        value: String,
        /// Why.
        problem: String,
    },
    /// The CA files do not hold a usable CA certificate and key.
    #[error("the CA certificate or key cannot be used: {0}")]
    Ca(rcgen::Error),
    /// rcgen failed to make the key or the certificate.
    #[error("cannot make the certificate: {0}")]
    Generate(rcgen::Error),
}

/// Makes a new self-signed cluster CA named after `cluster`, valid for `days`.
pub fn create_ca(cluster: &str, days: u32) -> Result<Pem, IssueError> {
    check_name("--name", cluster)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::Generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("Strata CA {cluster}"), None, cluster);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, days)?;
    let cert = params.self_signed(&key).map_err(IssueError::Generate)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issues a certificate for `request`, signed by the CA in `ca`.
///
/// Agent certificates can serve and dial (serverAuth and clientAuth) and carry the name,
/// `localhost`, 127.0.0.1 and `request.sans` as subject alternative names; operator
/// certificates only authenticate clients (clientAuth) and carry no alternative names.
pub fn issue(ca: &Pem, request: &IssueRequest) -> Result<Pem, IssueError> {
    check_name("name", &request.name)?;
    let ca_key = KeyPair::from_pem(&ca.key).map_err(IssueError::Ca)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(IssueError::Ca)?;
    let cluster = issuer_cluster(&ca.cert).unwrap_or_default();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::Generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name =
        distinguished_name(&request.name, Some(&request.kind.unit()), cluster.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    match request.kind {
        CertKind::Agent => {
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.subject_alt_names = agent_sans(&request.name, &request.sans)?;
        }
        CertKind::Operator { .. } => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    set_validity(&mut params, request.days)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(IssueError::Generate)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The alternative names of an agent certificate, without duplicates: its name (so peers
/// can verify it by node name), `localhost`, 127.0.0.1, then the extra ones.
fn agent_sans(name: &str, extra: &[String]) -> Result<Vec<SanType>, IssueError> {
    let mut texts: Vec<&str> = vec![name, "localhost", "127.0.0.1"];
    texts.extend(extra.iter().map(String::as_str));
    let mut sans = Vec::new();
    for text in texts {
        let san = match text.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                check_name("--san", text)?;
                let ia5 = text
                    .try_into()
                    .map_err(|e: rcgen::Error| IssueError::Name {
                        what: "--san",
                        value: text.to_string(),
                        problem: e.to_string(),
                    })?;
                SanType::DnsName(ia5)
            }
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn distinguished_name(common: &str, unit: Option<&str>, cluster: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(unit) = unit {
        dn.push(DnType::OrganizationalUnitName, unit);
    }
    if !cluster.is_empty() {
        dn.push(DnType::OrganizationName, cluster);
    }
    dn
}

/// The cluster name (O) of a CA certificate, carried into the certificates it issues.
fn issuer_cluster(ca_pem: &str) -> Option<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let org = cert.subject().iter_organization().next()?;
    org.as_str().ok().map(str::to_string)
}

fn set_validity(params: &mut CertificateParams, days: u32) -> Result<(), IssueError> {
    if days == 0 || days > 36_500 {
        return Err(IssueError::Days(days));
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    Ok(())
}

/// Names are 1 to 63 letters, digits, '-', '_' or '.', like node names.
fn check_name(what: &'static str, value: &str) -> Result<(), IssueError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(IssueError::Name {
            what,
            value: value.to_string(),
            problem: "must be 1 to 63 characters of letters, digits, '-', '_' or '.'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::tls::subject::{CertSubject, subject_of_der};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn request(name: &str, kind: CertKind) -> IssueRequest {
        IssueRequest {
            name: name.into(),
            kind,
            sans: vec!["10.0.0.7".into(), "n1.example".into(), "n1".into()],
            days: 30,
        }
    }

    #[test]
    fn agent_certificates_chain_to_the_ca_and_carry_their_subject() {
        let ca = create_ca("prod", CA_DAYS).unwrap();
        let leaf = issue(&ca, &request("n1", CertKind::Agent)).unwrap();
        let ca_der = der(&ca.cert);
        let leaf_der = der(&leaf.cert);
        let (_, ca_x509) = X509Certificate::from_der(ca_der.as_ref()).unwrap();
        let (_, x509) = X509Certificate::from_der(leaf_der.as_ref()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone()).unwrap();
        let parsed = rustls::server::ParsedCertificate::try_from(&leaf_der).unwrap();
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &[],
            rustls::pki_types::UnixTime::now(),
            algs.all,
        )
        .unwrap();
        assert!(ca_x509.is_ca());
        assert_eq!(x509.issuer(), ca_x509.subject());
        assert_eq!(
            subject_of_der(leaf_der.as_ref()),
            Some(CertSubject {
                name: "n1".into(),
                kind: CertKind::Agent
            })
        );
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let sans = x509.subject_alternative_name().unwrap().unwrap();
        let text: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(text.len(), 5, "{text:?}");
        assert!(text.iter().any(|t| t.contains("n1.example")), "{text:?}");
        let days = (x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 30);
    }

    #[test]
    fn operator_certificates_are_client_only_and_carry_the_role() {
        let ca = create_ca("prod", CA_DAYS).unwrap();
        let kind = CertKind::Operator {
            role: Role::Operate,
            scope: crate::auth::Scope {
                services: vec!["web-*".into()],
                team: None,
            },
        };
        let leaf = issue(&ca, &request("alice", kind.clone())).unwrap();
        let leaf_der = der(&leaf.cert);
        let (_, x509) = X509Certificate::from_der(leaf_der.as_ref()).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(x509.subject_alternative_name().unwrap().is_none());
        let subject = subject_of_der(leaf_der.as_ref()).unwrap();
        assert_eq!(subject.name, "alice");
        assert_eq!(subject.kind, kind);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(create_ca("prod", 0), Err(IssueError::Days(0))));
        assert!(matches!(create_ca("a b", 10), Err(IssueError::Name { .. })));
        let ca = create_ca("prod", 10).unwrap();
        let mut bad = request("n1", CertKind::Agent);
        bad.sans = vec!["bad name".into()];
        assert!(matches!(issue(&ca, &bad), Err(IssueError::Name { .. })));
        let swapped = Pem {
            cert: ca.key.clone(),
            key: ca.cert.clone(),
        };
        assert!(matches!(
            issue(&swapped, &request("n1", CertKind::Agent)),
            Err(IssueError::Ca(_))
        ));
    }
}
