//! Peer certificate verification for both TLS roles.
//!
//! Every agent is a TLS server to the peers that dial it and a client to the peers it dials, and
//! both sides check the same three things: the chain ends at a root of the trust bundle, the
//! certificate is within its validity dates, and its SPIFFE ID is
//! `spiffe://<our trust domain>/node/<id>`; and the certificate is not on the committed deny
//! list (a quarantined node). Chain and date checks are webpki's (through rustls); the SPIFFE and
//! deny-list checks are ours. Roots and denials are read from [`LiveTrust`] per handshake, so
//! they change without rebuilding a config. Each refusal is counted with a reason label.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::credentials::{cert_info, leaf_spiffe_id};
use super::live::LiveTrust;
use super::TrustBundle;
use crate::telemetry::Telemetry;

/// Checks peer certificates against the mesh's live trust bundle, trust domain and deny list.
#[derive(Debug)]
pub struct MeshVerifier {
    trust: Arc<LiveTrust>,
    algorithms: WebPkiSupportedAlgorithms,
    telemetry: Telemetry,
    direction: &'static str,
}

/// Builds the verifier for inbound connections (client certificates) and for outbound ones
/// (server certificates).
pub fn peer_verifiers(
    trust: &Arc<LiveTrust>,
    telemetry: &Telemetry,
) -> (Arc<MeshVerifier>, Arc<MeshVerifier>) {
    let provider = super::crypto_provider();
    let make = |direction| {
        Arc::new(MeshVerifier {
            trust: trust.clone(),
            algorithms: provider.signature_verification_algorithms,
            telemetry: telemetry.clone(),
            direction,
        })
    };
    (make("inbound"), make("outbound"))
}

/// Checks this node's own certificate the way peers will: chain to `trust`, validity dates
/// now. Returns a one-line reason when peers would refuse it.
pub fn check_own_certificate(
    trust: &TrustBundle,
    credentials: &super::NodeCredentials,
) -> Result<(), String> {
    let provider = super::crypto_provider();
    let leaf = &credentials.chain[0];
    let parsed =
        ParsedCertificate::try_from(leaf).map_err(|e| format!("unusable certificate: {e}"))?;
    let now = UnixTime::now();
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &trust.roots(),
        &credentials.chain[1..],
        now,
        provider.signature_verification_algorithms.all,
    )
    .map_err(|error| {
        let reason = rejection_reason(&error);
        let info = &credentials.info;
        match reason {
            "expired" => format!(
                "certificate expired (not after unix {}); issue a new one",
                info.not_after
            ),
            "not_yet_valid" => format!(
                "certificate is not valid yet (not before unix {}); check this host's clock",
                info.not_before
            ),
            "unknown_ca" | "bad_signature" => {
                "certificate is not signed by a CA in tls.ca; peers would refuse it".to_owned()
            }
            _ => format!("peers would refuse this certificate: {error}"),
        }
    })
}

/// A stable reason label for a refused handshake, for metrics and logs.
pub fn rejection_reason(error: &Error) -> &'static str {
    match error {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "wrong_key_usage"
            }
            CertificateError::Other(other) => {
                if let Some(spiffe) = other.0.downcast_ref::<SpiffeRejection>() {
                    spiffe.reason()
                } else {
                    "invalid_certificate"
                }
            }
            _ => "invalid_certificate",
        },
        Error::NoCertificatesPresented => "no_certificate",
        Error::PeerIncompatible(_) => "incompatible_peer",
        _ => "tls_error",
    }
}

/// A certificate whose chain is fine but whose identity is not a node of our mesh.
#[derive(Debug, thiserror::Error)]
enum SpiffeRejection {
    #[error("peer certificate has no usable SPIFFE ID: {0}")]
    Missing(String),
    #[error("peer SPIFFE ID {found} is not in trust domain {expected}")]
    WrongTrustDomain { found: String, expected: String },
    #[error("peer {0} is quarantined: its certificate is on the committed deny list")]
    Quarantined(String),
}

impl SpiffeRejection {
    fn reason(&self) -> &'static str {
        match self {
            Self::Missing(_) => "no_spiffe_id",
            Self::WrongTrustDomain { .. } => "wrong_trust_domain",
            Self::Quarantined(_) => "quarantined",
        }
    }
}

impl MeshVerifier {
    fn check_identity(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let reject = |r: SpiffeRejection| {
            Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(r))))
        };
        let id = leaf_spiffe_id(end_entity).map_err(|e| reject(SpiffeRejection::Missing(e)))?;
        if id.trust_domain() != self.trust.trust_domain() {
            return Err(reject(SpiffeRejection::WrongTrustDomain {
                found: id.to_string(),
                expected: self.trust.trust_domain().to_string(),
            }));
        }
        let serial = cert_info(end_entity).map(|i| i.serial).unwrap_or_default();
        if self.trust.view().denies(id.node_id(), &serial) {
            return Err(reject(SpiffeRejection::Quarantined(id.to_string())));
        }
        Ok(())
    }

    fn counted<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &result {
            let reason = rejection_reason(error);
            tracing::warn!(direction = self.direction, reason, %error, "peer certificate refused");
            self.telemetry.handshake_failed(self.direction, reason);
        }
        result
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ClientCertVerifier for MeshVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A peer without a certificate completes the handshake but may only ask to join with a
        // token (see `agent/peers.rs`); every other use is refused and counted there.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The roots change while running; agents present their one certificate regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.counted(
            self.trust
                .view()
                .webpki_client
                .verify_client_cert(end_entity, intermediates, now)
                .and_then(|ok| self.check_identity(end_entity).map(|()| ok)),
        )
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for MeshVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // Peers are dialled by address; who they are is read from the certificate, so the
        // TLS server name is not checked. The chain, dates and SPIFFE trust domain are.
        let result = ParsedCertificate::try_from(end_entity)
            .and_then(|parsed| {
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &parsed,
                    &self.trust.view().roots,
                    intermediates,
                    now,
                    self.algorithms.all,
                )
            })
            .and_then(|()| self.check_identity(end_entity))
            .map(|()| ServerCertVerified::assertion());
        self.counted(result)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
