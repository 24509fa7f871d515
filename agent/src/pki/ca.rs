//! The mesh CA as the decision log holds it: leaves signed from certificate requests, new roots
//! cross-signed by the current one, and join tokens.
//!
//! Everything here is a pure function of the committed [`TrustState`], its inputs and the time
//! passed in; the leader's request service and the rotation loop call them.

use std::path::Path;
use std::time::Duration;

use plexus_protocol::{CaKey, JoinToken, NodeId, SpiffeId, TrustDomain, TrustState, TrustedRoot};
use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::OffsetDateTime;

pub(crate) use super::credentials::root_facts;
use super::issue::{ca_params, leaf_params, Validity};
use super::PkiError;

/// The file `plexus pki init` writes the first join token to, beside `ca.key`.
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// A root and its key as the decision log records them, from `ca.pem` and `ca.key` (the key is
/// checked against the certificate).
pub fn root_from_files(cert: &Path, key: &Path) -> Result<(TrustedRoot, CaKey), PkiError> {
    let pem = std::fs::read(cert).map_err(PkiError::io(cert))?;
    let der = first_cert(&pem).map_err(|e| PkiError::bad(cert, e))?;
    let key_pem = std::fs::read_to_string(key).map_err(PkiError::io(key))?;
    let pair = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::bad(key, e))?;
    let (serial, not_after, spki) = root_facts(&der).map_err(|e| PkiError::bad(cert, e))?;
    if pair.subject_public_key_info() != spki {
        return Err(PkiError::bad(
            key,
            format!("does not match the CA certificate {}", cert.display()),
        ));
    }
    Ok((
        TrustedRoot {
            der: der.to_vec(),
            serial,
            not_after_ms: millis(not_after),
            retire_at_ms: None,
        },
        CaKey(pair.serialize_der()),
    ))
}

fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no certificate found")?
        .map_err(|e| format!("not a PEM certificate file: {e}"))
}

fn millis(unix_seconds: i64) -> u64 {
    u64::try_from(unix_seconds)
        .unwrap_or(0)
        .saturating_mul(1000)
}

fn issuer(trust: &TrustState) -> Result<(Issuer<'static, KeyPair>, &TrustedRoot), String> {
    let root = trust.issuer().ok_or("the decision log holds no mesh CA")?;
    let key = trust
        .keys
        .get(&root.serial)
        .ok_or("this agent does not hold the mesh CA key")?;
    let pair = KeyPair::try_from(key.0.as_slice()).map_err(|e| format!("CA key unusable: {e}"))?;
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(root.der.as_slice()), pair)
        .map_err(|e| format!("CA certificate unusable: {e}"))?;
    Ok((issuer, root))
}

/// Signs a leaf for `node` from a PKCS#10 request, valid from a little before `now` for
/// `lifetime` but never past the issuing root. Only the request's public key is used: the
/// identity, usages and dates are the mesh's. Returns the leaf (DER).
pub fn sign_request(
    trust: &TrustState,
    trust_domain: &TrustDomain,
    node: &NodeId,
    csr: &[u8],
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let (issuer, root) = issuer(trust)?;
    let mut request =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr))
            .map_err(|e| format!("unusable certificate request: {e}"))?;
    let root_end = OffsetDateTime::from_unix_timestamp((root.not_after_ms / 1000) as i64)
        .map_err(|e| e.to_string())?;
    let not_after = (now + lifetime).min(root_end);
    if not_after <= now {
        return Err("the mesh CA has expired".into());
    }
    // Backdated a little for clocks behind ours; a tenth of the lifetime at most, so the
    // renewal point (two thirds of the validity) stays ahead of now.
    let backdate = (lifetime / 10).min(Duration::from_secs(60));
    let validity = Validity {
        not_before: now - backdate,
        not_after,
    };
    let spiffe = SpiffeId::new(trust_domain.clone(), node.clone());
    request.params = leaf_params(&spiffe, validity).map_err(|e| e.to_string())?;
    let leaf = request
        .signed_by(&issuer)
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok(leaf.der().to_vec())
}

/// A certificate request for this node's key (the leader ignores everything but the key).
pub fn make_request(key: &PrivateKeyDer<'_>, node: &NodeId) -> Result<Vec<u8>, String> {
    let pair = KeyPair::try_from(key).map_err(|e| format!("node key unusable: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node.as_str());
    let csr = params
        .serialize_request(&pair)
        .map_err(|e| format!("cannot make a certificate request: {e}"))?;
    Ok(csr.der().to_vec())
}

/// A new root valid for `lifetime` from `now`, and the same root cross-signed by the current
/// issuer (for agents that still trust only the old root).
pub fn next_root(
    trust: &TrustState,
    trust_domain: &TrustDomain,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<(TrustedRoot, CaKey, Vec<u8>), String> {
    let (current, _) = issuer(trust)?;
    let validity = Validity {
        not_before: now - time::Duration::minutes(1),
        not_after: now + lifetime,
    };
    let params = ca_params(trust_domain, validity).map_err(|e| e.to_string())?;
    let pair = KeyPair::generate().map_err(|e| e.to_string())?;
    let root = params.self_signed(&pair).map_err(|e| e.to_string())?;
    let cross = params
        .signed_by(&pair, &current)
        .map_err(|e| e.to_string())?;
    let (serial, not_after, _) = root_facts(root.der())?;
    Ok((
        TrustedRoot {
            der: root.der().to_vec(),
            serial,
            not_after_ms: millis(not_after),
            retire_at_ms: None,
        },
        CaKey(pair.serialize_der()),
        cross.der().to_vec(),
    ))
}

/// A join token made now: the text the operator hands to a new node (`ID.SECRET`) and what the
/// log keeps of it (the secret's SHA-256).
pub struct NewToken {
    pub id: String,
    pub text: String,
    pub record: JoinToken,
}

/// Makes a join token: a random 8-hex-digit ID and a 256-bit secret.
pub fn new_token(created_by: &str, now_ms: u64, ttl: Option<Duration>) -> Result<NewToken, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 36];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness")?;
    let id = hex(&bytes[..4]);
    let secret = hex(&bytes[4..]);
    Ok(NewToken {
        text: format!("{id}.{secret}"),
        record: JoinToken {
            secret_sha256: sha256(secret.as_bytes()),
            created_ms: now_ms,
            expires_ms: ttl.map(|t| now_ms.saturating_add(t.as_millis() as u64)),
            revoked: false,
            created_by: created_by.to_owned(),
            uses: 0,
        },
        id,
    })
}

/// Checks a token's text against the log: returns its ID, or why it is refused.
pub fn check_token(trust: &TrustState, text: &str, now_ms: u64) -> Result<String, String> {
    let (id, secret) = text
        .trim()
        .split_once('.')
        .ok_or("not a join token (ID.SECRET)")?;
    let token = trust
        .tokens
        .get(id)
        .ok_or_else(|| format!("join token {id} is unknown"))?;
    let given = sha256(secret.as_bytes());
    // Comparing digests of a 256-bit secret: timing reveals nothing usable about the secret.
    if given != token.secret_sha256 {
        return Err(format!("join token {id} does not match"));
    }
    token
        .usable(now_ms)
        .map_err(|why| format!("join token {id} is {why}"))?;
    Ok(id.to_owned())
}

/// Reads a join token file (`ID.SECRET`, surrounding whitespace ignored) as what the log keeps.
pub fn token_from_file(path: &Path, created_ms: u64) -> Result<(String, JoinToken), PkiError> {
    let text = std::fs::read_to_string(path).map_err(PkiError::io(path))?;
    let (id, secret) = text
        .trim()
        .split_once('.')
        .ok_or_else(|| PkiError::bad(path, "not a join token (ID.SECRET)"))?;
    if id.is_empty() || id.len() > plexus_protocol::trust::MAX_TOKEN_ID {
        return Err(PkiError::bad(path, "token ID must be 1 to 32 characters"));
    }
    Ok((
        id.to_owned(),
        JoinToken {
            secret_sha256: sha256(secret.as_bytes()),
            created_ms,
            expires_ms: None,
            revoked: false,
            created_by: "pki init".into(),
            uses: 0,
        },
    ))
}

/// Writes a new join token file (0600) into `dir`: what `plexus pki init` hands the operator.
pub fn write_token_file(dir: &Path, force: bool) -> Result<std::path::PathBuf, PkiError> {
    let path = dir.join(JOIN_TOKEN_FILE);
    if !force && path.exists() {
        return Err(PkiError::WouldOverwrite { path });
    }
    let token = new_token("pki init", 0, None).map_err(|e| PkiError::bad(&path, e))?;
    super::issue::write_secret(&path, &format!("{}\n", token.text))?;
    Ok(path)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
