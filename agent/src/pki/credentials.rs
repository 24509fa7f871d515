//! Loading the trust bundle and a node's own certificate and key from PEM files.

use std::path::Path;

use plexus_protocol::{SpiffeId, TrustDomain};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PkiError;

/// What the agent reports about a certificate (admin API, logs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub spiffe_id: String,
    /// Serial number in lower-case hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

/// The CA certificates this node trusts, all of one trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: std::sync::Arc<RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// Loads a bundle from a PEM file holding one or more CA certificates.
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let pem = std::fs::read(path).map_err(PkiError::io(path))?;
        Self::from_pem(path, &pem)
    }

    /// Parses a bundle; `path` only names the source in errors.
    pub fn from_pem(path: &Path, pem: &[u8]) -> Result<Self, PkiError> {
        let certs = parse_certs(path, pem)?;
        let mut trust_domain: Option<TrustDomain> = None;
        let mut roots = RootCertStore::empty();
        for der in &certs {
            let domain = ca_trust_domain(der).map_err(|reason| PkiError::bad(path, reason))?;
            match &trust_domain {
                Some(seen) if *seen != domain => {
                    return Err(PkiError::bad(
                        path,
                        format!("CA certificates of two trust domains ({seen} and {domain})"),
                    ));
                }
                _ => trust_domain = Some(domain),
            }
            roots.add(der.clone()).map_err(|e| PkiError::bad(path, e))?;
        }
        let trust_domain =
            trust_domain.ok_or_else(|| PkiError::bad(path, "no CA certificate found"))?;
        Ok(Self {
            trust_domain,
            roots: std::sync::Arc::new(roots),
            certs,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn roots(&self) -> std::sync::Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The CA certificates, DER, in file order.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The live trust every verifier reads, starting from this bundle.
    pub fn live(&self) -> std::sync::Arc<super::LiveTrust> {
        super::LiveTrust::new(self.trust_domain.clone(), self.certs.clone())
            .expect("a loaded bundle's roots were accepted once already")
    }
}

/// This node's certificate chain and private key, and the identity they prove.
#[derive(Debug)]
pub struct NodeCredentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub spiffe_id: SpiffeId,
    pub info: CertInfo,
}

impl NodeCredentials {
    /// Loads `cert` (leaf first, then any intermediates) and `key`, and checks they match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let pem = std::fs::read(cert).map_err(PkiError::io(cert))?;
        let chain = parse_certs(cert, &pem)?;
        let key_pem = std::fs::read(key).map_err(PkiError::io(key))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| PkiError::bad(key, format!("no usable private key: {e}")))?;
        let info = cert_info(&chain[0]).map_err(|reason| PkiError::bad(cert, reason))?;
        let spiffe_id = info.spiffe_id.parse().map_err(|e| PkiError::bad(cert, e))?;
        let provider = super::crypto_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key_der.clone_key())
            .map_err(|e| PkiError::bad(key, format!("unusable private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing_key);
        certified.keys_match().map_err(|_| {
            PkiError::bad(
                key,
                format!("does not match certificate {}", cert.display()),
            )
        })?;
        Ok(Self {
            chain,
            key: key_der,
            spiffe_id,
            info,
        })
    }

    /// A copy of the credentials (the key type is not `Clone`).
    pub fn duplicate(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            spiffe_id: self.spiffe_id.clone(),
            info: self.info.clone(),
        }
    }
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::bad(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::bad(path, "no certificate found"));
    }
    Ok(certs)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unparsable certificate: {e}"))?;
    Ok(cert)
}

/// URI SANs of a certificate.
fn uri_sans(cert: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad SAN extension: {e}"))?;
    Ok(sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The node SPIFFE ID of a leaf: its one `spiffe://` URI SAN.
pub fn leaf_spiffe_id(der: &[u8]) -> Result<SpiffeId, String> {
    let cert = parse(der)?;
    let uris: Vec<String> = uri_sans(&cert)?
        .into_iter()
        .filter(|u| u.starts_with("spiffe://"))
        .collect();
    match uris.as_slice() {
        [one] => one
            .parse()
            .map_err(|e: plexus_protocol::IdentityError| e.to_string()),
        [] => Err("certificate has no spiffe:// URI SAN".into()),
        _ => Err("certificate has more than one spiffe:// URI SAN".into()),
    }
}

/// The trust domain a CA certificate speaks for: its `spiffe://<trust-domain>` URI SAN.
pub(super) fn ca_trust_domain(der: &[u8]) -> Result<TrustDomain, String> {
    let cert = parse(der)?;
    if !cert.is_ca() {
        return Err("certificate is not a CA (basic constraints CA:FALSE or missing)".into());
    }
    let uri = uri_sans(&cert)?
        .into_iter()
        .find_map(|u| {
            u.strip_prefix("spiffe://")
                .map(|d| d.trim_end_matches('/').to_owned())
        })
        .ok_or("CA certificate has no spiffe://<trust-domain> URI SAN")?;
    TrustDomain::new(uri).map_err(|e| e.to_string())
}

/// The SubjectPublicKeyInfo (DER) of the first certificate in a PEM text.
pub(crate) fn first_cert_spki(pem: &[u8]) -> Result<Vec<u8>, String> {
    let der = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no certificate found")?
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    Ok(parse(&der)?.tbs_certificate.subject_pki.raw.to_vec())
}

/// Serial (lowercase hex) and not-after (Unix seconds) of a CA certificate, and its SPKI.
pub(crate) fn root_facts(der: &[u8]) -> Result<(String, i64, Vec<u8>), String> {
    let cert = parse(der)?;
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((
        serial,
        cert.validity().not_after.timestamp(),
        cert.tbs_certificate.subject_pki.raw.to_vec(),
    ))
}

/// Serial, validity and SPIFFE ID of a leaf, for reports.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let spiffe_id = leaf_spiffe_id(der)?.to_string();
    let cert = parse(der)?;
    let validity = cert.validity();
    Ok(CertInfo {
        spiffe_id,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}
