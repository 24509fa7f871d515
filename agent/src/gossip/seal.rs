//! Signing the values this node publishes, and checking the values other nodes published.
//!
//! A node publishes its certificate (DER, under [`CERT_KEY`]) next to its values. The
//! certificate proves itself: it must chain to the trust bundle, be within its dates, and carry
//! the SPIFFE ID of the node whose state it sits in. Every other value is a
//! [`SealedValue`] signed with that certificate's key over
//! [`plexus_protocol::gossip::sealed_message`]. A relay that forges or moves a value cannot make
//! the signature verify.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use base64::Engine;
use plexus_protocol::gossip::sealed_message;
use plexus_protocol::SealedValue;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::{leaf_spiffe_id, LiveTrust};

/// The key under which a node publishes its certificate.
pub const CERT_KEY: &str = "plexus:cert";

/// Signs values with this node's key.
pub struct Sealer {
    key: Arc<dyn SigningKey>,
    scheme: SignatureScheme,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Sealer {
    pub fn new(node_key: &rustls::pki_types::PrivateKeyDer<'_>) -> Result<Self, String> {
        let key = crate::pki::crypto_provider()
            .key_provider
            .load_private_key(node_key.clone_key())
            .map_err(|e| format!("unusable node key: {e}"))?;
        let signer = key
            .choose_scheme(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureScheme::ED25519,
                SignatureScheme::RSA_PSS_SHA256,
            ])
            .ok_or("the node key supports no TLS 1.3 signature scheme")?;
        Ok(Self {
            scheme: signer.scheme(),
            key,
        })
    }

    /// The chitchat value for `payload` under `key`, to be stored at `version`.
    pub fn seal(
        &self,
        node_id: &str,
        generation: u64,
        key: &str,
        version: u64,
        payload: Vec<u8>,
    ) -> Result<String, String> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or("signing scheme no longer offered")?;
        let message = sealed_message(node_id, generation, key, version, &payload);
        let signature = signer.sign(&message).map_err(|e| e.to_string())?;
        let sealed = SealedValue {
            scheme: u16::from(self.scheme),
            signature,
            payload,
        };
        Ok(BASE64.encode(sealed.encode()))
    }
}

/// The certificate value a node publishes.
pub fn cert_value(leaf: &CertificateDer<'_>) -> String {
    BASE64.encode(leaf.as_ref())
}

/// Why a published value was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no certificate published")]
    NoCertificate,
    #[error("published certificate refused: {0}")]
    BadCertificate(String),
    #[error("certificate is for node {found}, not {expected}")]
    WrongNode { found: String, expected: String },
    #[error("value is not a sealed value: {0}")]
    Malformed(String),
    #[error("signature does not verify")]
    BadSignature,
}

impl SealError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::BadCertificate(_) => "bad_certificate",
            Self::WrongNode { .. } => "node_id_mismatch",
            Self::Malformed(_) => "malformed_value",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// A value checked once: (value, version, payload or refusal).
type OpenedValue = (String, u64, Result<Vec<u8>, SealError>);

/// A certificate checked: (published value, result, when).
type CheckedCert = (String, Result<CertificateDer<'static>, SealError>, Instant);

/// How long a refused certificate stays refused without another check. A refusal can depend
/// on the clock (not yet valid), so it is looked at again after this; an accepted one stays
/// accepted until the trust changes (expiry ends the node's connections, and it renews).
const REFUSAL_RECHECK: Duration = Duration::from_secs(10);

/// Checks published certificates and seals, caching results per node incarnation (node ID and
/// generation) and key, so that a value is verified once, not on every read, even while a
/// restarted node's old generation is still gossiped beside its new one.
#[derive(Debug)]
pub struct SealVerifier {
    trust: Arc<LiveTrust>,
    /// The trust version the cached certificate checks were made under.
    trust_version: u64,
    algorithms: WebPkiSupportedAlgorithms,
    certs: HashMap<(String, u64), CheckedCert>,
    values: HashMap<(String, u64, String), OpenedValue>,
}

impl SealVerifier {
    pub fn new(trust: Arc<LiveTrust>) -> Self {
        Self {
            trust_version: trust.view().version,
            trust,
            algorithms: crate::pki::crypto_provider().signature_verification_algorithms,
            certs: HashMap::new(),
            values: HashMap::new(),
        }
    }

    /// Forgets cached results of incarnations (node ID, generation) for which `known` is false:
    /// bounded memory as members and their generations come and go.
    pub fn retain(&mut self, known: &dyn Fn(&str, u64) -> bool) {
        self.certs
            .retain(|(node, generation), _| known(node, *generation));
        self.values
            .retain(|(node, generation, _), _| known(node, *generation));
    }

    /// The certificate `node_id` (incarnation `generation`) published, if it proves that
    /// node's identity.
    pub fn certificate(
        &mut self,
        node_id: &str,
        generation: u64,
        published: Option<&str>,
    ) -> Result<CertificateDer<'static>, SealError> {
        let published = published.ok_or(SealError::NoCertificate)?;
        let version = self.trust.view().version;
        if version != self.trust_version {
            // New roots or denials: every certificate is checked again.
            self.certs.clear();
            self.values.clear();
            self.trust_version = version;
        }
        let incarnation = (node_id.to_owned(), generation);
        if let Some((value, result, at)) = self.certs.get(&incarnation) {
            if value == published && (result.is_ok() || at.elapsed() < REFUSAL_RECHECK) {
                return result.clone();
            }
        }
        let result = self.check_certificate(node_id, published);
        self.certs.insert(
            incarnation,
            (published.to_owned(), result.clone(), Instant::now()),
        );
        result
    }

    fn check_certificate(
        &self,
        node_id: &str,
        published: &str,
    ) -> Result<CertificateDer<'static>, SealError> {
        if published.len() > 8192 {
            return Err(SealError::BadCertificate("larger than 6 KiB".into()));
        }
        let der = BASE64
            .decode(published)
            .map_err(|e| SealError::BadCertificate(e.to_string()))?;
        let der = CertificateDer::from(der);
        let parsed = ParsedCertificate::try_from(&der)
            .map_err(|e| SealError::BadCertificate(e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.trust.view().roots,
            &[],
            UnixTime::now(),
            self.algorithms.all,
        )
        .map_err(|e| SealError::BadCertificate(crate::pki::rejection_reason(&e).to_owned()))?;
        let id = leaf_spiffe_id(&der).map_err(SealError::BadCertificate)?;
        if id.trust_domain() != self.trust.trust_domain() {
            return Err(SealError::BadCertificate(format!(
                "trust domain {} is not ours",
                id.trust_domain()
            )));
        }
        if id.node_id().as_str() != node_id {
            return Err(SealError::WrongNode {
                found: id.node_id().to_string(),
                expected: node_id.to_owned(),
            });
        }
        Ok(der)
    }

    /// Whether [`Self::certificate`] would refuse `published` without checking anything: no
    /// certificate, or one refused under the same trust less than [`REFUSAL_RECHECK`] ago.
    /// Such a node's values are never opened, so they are nothing new to check.
    pub fn is_refused(&self, node_id: &str, generation: u64, published: Option<&str>) -> bool {
        let Some(published) = published else {
            return true;
        };
        self.trust.view().version == self.trust_version
            && self
                .certs
                .get(&(node_id.to_owned(), generation))
                .is_some_and(|(value, result, at)| {
                    value == published && result.is_err() && at.elapsed() < REFUSAL_RECHECK
                })
    }

    /// Whether [`Self::open`] would answer `value` from what it checked before, without
    /// checking a signature.
    pub fn is_cached(
        &self,
        node_id: &str,
        generation: u64,
        key: &str,
        version: u64,
        value: &str,
    ) -> bool {
        self.trust.view().version == self.trust_version
            && self
                .values
                .get(&(node_id.to_owned(), generation, key.to_owned()))
                .is_some_and(|(cached, cached_version, _)| {
                    *cached_version == version && cached == value
                })
    }

    /// The payload of `value`, published by `node_id` (incarnation `generation`) under `key`
    /// at `version`, if its seal verifies against the certificate the node published.
    pub fn open(
        &mut self,
        node_id: &str,
        generation: u64,
        published_cert: Option<&str>,
        key: &str,
        version: u64,
        value: &str,
    ) -> Result<Vec<u8>, SealError> {
        let cache_key = (node_id.to_owned(), generation, key.to_owned());
        if let Some((cached_value, cached_version, result)) = self.values.get(&cache_key) {
            if *cached_version == version && cached_value == value {
                return result.clone();
            }
        }
        let result = self
            .certificate(node_id, generation, published_cert)
            .and_then(|cert| self.check_seal(&cert, node_id, generation, key, version, value));
        self.values
            .insert(cache_key, (value.to_owned(), version, result.clone()));
        result
    }

    fn check_seal(
        &self,
        cert: &CertificateDer<'static>,
        node_id: &str,
        generation: u64,
        key: &str,
        version: u64,
        value: &str,
    ) -> Result<Vec<u8>, SealError> {
        if value.len() > SealedValue::MAX_LEN * 4 / 3 + 4 {
            return Err(SealError::Malformed("too long".into()));
        }
        let bytes = BASE64
            .decode(value)
            .map_err(|e| SealError::Malformed(e.to_string()))?;
        let sealed = SealedValue::decode(&bytes).map_err(SealError::Malformed)?;
        let message = sealed_message(node_id, generation, key, version, &sealed.payload);
        let scheme = SignatureScheme::from(sealed.scheme);
        let public_key = subject_public_key(cert).ok_or(SealError::BadSignature)?;
        // The same schemes TLS 1.3 accepts for a handshake signature.
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .map(|(_, algorithms)| *algorithms)
            .unwrap_or(&[]);
        let verified = candidates.iter().any(|algorithm| {
            algorithm
                .verify_signature(&public_key, &message, &sealed.signature)
                .is_ok()
        });
        if !verified {
            return Err(SealError::BadSignature);
        }
        Ok(sealed.payload)
    }
}

/// The raw public key (the SubjectPublicKey bit string) of a certificate.
fn subject_public_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use plexus_protocol::{NodeId, TrustDomain};

    use super::*;
    use crate::pki::{self, IssueOptions, NodeCredentials, TrustBundle, Validity};

    #[test]
    fn a_checked_seal_is_cached_until_its_value_or_version_changes() {
        let dir = tempfile::tempdir().unwrap();
        let options = IssueOptions {
            validity: Validity::starting_now(Duration::from_secs(3600)),
            force: false,
        };
        let domain = TrustDomain::new("seal.test").unwrap();
        pki::init_ca(&domain, &dir.path().join("ca"), options).unwrap();
        let node = NodeId::new("node-1").unwrap();
        let out = dir.path().join("node-1");
        pki::issue_node(&dir.path().join("ca"), &node, &out, options).unwrap();
        let credentials =
            NodeCredentials::load(&out.join("node.pem"), &out.join("node.key")).unwrap();
        let trust = TrustBundle::load(&out.join("ca.pem")).unwrap().live();
        let sealer = Sealer::new(&credentials.key).unwrap();
        let cert = cert_value(&credentials.chain[0]);

        let mut verifier = SealVerifier::new(trust);
        let value = sealer
            .seal("node-1", 7, "summary", 3, b"load".to_vec())
            .unwrap();
        assert!(!verifier.is_cached("node-1", 7, "summary", 3, &value));
        let opened = verifier.open("node-1", 7, Some(&cert), "summary", 3, &value);
        assert_eq!(opened.unwrap(), b"load");
        assert!(verifier.is_cached("node-1", 7, "summary", 3, &value));
        // A new version, or another value, needs its signature checked.
        assert!(!verifier.is_cached("node-1", 7, "summary", 4, &value));
        let newer = sealer
            .seal("node-1", 7, "summary", 4, b"more".to_vec())
            .unwrap();
        assert!(!verifier.is_cached("node-1", 7, "summary", 4, &newer));
        // A seal for another version does not open as this one (and is cached as refused).
        assert!(verifier
            .open("node-1", 7, Some(&cert), "summary", 5, &newer)
            .is_err());
        assert!(verifier.is_cached("node-1", 7, "summary", 5, &newer));
        // The same node restarted (generation 8) while generation 7 is still gossiped: each
        // incarnation's value stays cached, so neither is checked again every round.
        let restarted = sealer
            .seal("node-1", 8, "summary", 1, b"fresh".to_vec())
            .unwrap();
        assert!(verifier
            .open("node-1", 8, Some(&cert), "summary", 1, &restarted)
            .is_ok());
        assert!(verifier.is_cached("node-1", 7, "summary", 5, &newer));
        assert!(verifier.is_cached("node-1", 8, "summary", 1, &restarted));
        // A refused certificate is remembered as such: nothing of that node is new to check.
        assert!(verifier.is_refused("node-1", 9, None));
        assert!(!verifier.is_refused("node-1", 9, Some("bm90IGEgY2VydA")));
        assert!(verifier
            .certificate("node-1", 9, Some("bm90IGEgY2VydA"))
            .is_err());
        assert!(verifier.is_refused("node-1", 9, Some("bm90IGEgY2VydA")));
        assert!(!verifier.is_refused("node-1", 8, Some(&cert)));
        // Once generation 7 is gone from gossip, its results are forgotten.
        verifier.retain(&|node, generation| node == "node-1" && generation == 8);
        assert!(!verifier.is_cached("node-1", 7, "summary", 5, &newer));
        assert!(verifier.is_cached("node-1", 8, "summary", 1, &restarted));
    }
}
