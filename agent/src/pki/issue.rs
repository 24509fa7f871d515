//! Making the mesh CA and node certificates with rcgen (`plexus pki init|issue`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use plexus_protocol::{NodeId, SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use time::OffsetDateTime;

use super::{files, PkiError};

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from a minute ago (absorbing small clock differences) for `lifetime`.
    pub fn starting_now(lifetime: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - time::Duration::minutes(1),
            not_after: now + lifetime,
        }
    }
}

/// How to write what is issued.
#[derive(Debug, Clone, Copy)]
pub struct IssueOptions {
    pub validity: Validity,
    /// Replace existing key files instead of refusing.
    pub force: bool,
}

/// Creates a mesh CA in `out`: `ca.pem` and `ca.key` (mode 0600). Returns the CA's SPIFFE root.
pub fn init_ca(
    trust_domain: &TrustDomain,
    out: &Path,
    options: IssueOptions,
) -> Result<String, PkiError> {
    let key_path = out.join(files::CA_KEY);
    refuse_overwrite(&key_path, options.force)?;
    let params = ca_params(trust_domain, options.validity)?;
    let root = format!("spiffe://{trust_domain}");
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    fs::create_dir_all(out).map_err(PkiError::io(out))?;
    write_secret(&key_path, &key.serialize_pem())?;
    write_public(&out.join(files::CA_CERT), &cert.pem())?;
    Ok(root)
}

/// The parameters of a mesh CA certificate.
pub(crate) fn ca_params(
    trust_domain: &TrustDomain,
    validity: Validity,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    // The creation time makes the subject unique: two CAs of one trust domain (a re-init, a
    // rotation) must not share a name, or verifiers take one for the other.
    let created = validity.not_before.unix_timestamp_nanos();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Plexus mesh CA {trust_domain} {created:x}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Plexus");
    // Path length 1: a later root, cross-signed by this one, may sit between it and a leaf.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = format!("spiffe://{trust_domain}");
    params.subject_alt_names = vec![SanType::URI(root.try_into()?)];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Issues a node certificate from the CA in `ca_dir` into `out`: `node.pem`, `node.key` (0600)
/// and a copy of the CA certificate as `ca.pem`, so `out` is all a node needs.
pub fn issue_node(
    ca_dir: &Path,
    node_id: &NodeId,
    out: &Path,
    options: IssueOptions,
) -> Result<SpiffeId, PkiError> {
    let ca_cert_path = ca_dir.join(files::CA_CERT);
    let ca_key_path = ca_dir.join(files::CA_KEY);
    let ca_pem = fs::read_to_string(&ca_cert_path).map_err(|e| PkiError::bad(&ca_cert_path, e))?;
    let ca_key_pem =
        fs::read_to_string(&ca_key_path).map_err(|e| PkiError::bad(&ca_key_path, e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::bad(&ca_key_path, e))?;
    let bundle = super::TrustBundle::from_pem(&ca_cert_path, ca_pem.as_bytes())?;
    let ca_spki = super::credentials::first_cert_spki(ca_pem.as_bytes())
        .map_err(|reason| PkiError::bad(&ca_cert_path, reason))?;
    if ca_key.subject_public_key_info() != ca_spki {
        return Err(PkiError::bad(
            &ca_key_path,
            format!(
                "does not match the CA certificate {}",
                ca_cert_path.display()
            ),
        ));
    }
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::bad(&ca_cert_path, e))?;
    let spiffe = SpiffeId::new(bundle.trust_domain().clone(), node_id.clone());

    let key_path = out.join(files::NODE_KEY);
    refuse_overwrite(&key_path, options.force)?;
    let out_ca = out.join(files::CA_CERT);
    let copy_ca = fs::canonicalize(ca_dir).ok() != fs::canonicalize(out).ok();
    if copy_ca && !options.force {
        if let Ok(existing) = fs::read_to_string(&out_ca) {
            if existing != ca_pem {
                return Err(PkiError::bad(
                    &out_ca,
                    "holds a different CA certificate (pass --force to replace it)",
                ));
            }
        }
    }
    let (cert_pem, key_pem) = node_certificate(&issuer, &spiffe, options.validity)?;
    fs::create_dir_all(out).map_err(PkiError::io(out))?;
    write_secret(&key_path, &key_pem)?;
    write_public(&out.join(files::NODE_CERT), &cert_pem)?;
    if copy_ca {
        write_public(&out_ca, &ca_pem)?;
    }
    Ok(spiffe)
}

/// A leaf for `spiffe` signed by `issuer`: (certificate PEM, private key PEM).
pub fn node_certificate(
    issuer: &Issuer<'_, KeyPair>,
    spiffe: &SpiffeId,
    validity: Validity,
) -> Result<(String, String), PkiError> {
    let params = leaf_params(spiffe, validity)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The parameters of a node's leaf: its SPIFFE ID as the only URI SAN, client and server use.
pub(crate) fn leaf_params(
    spiffe: &SpiffeId,
    validity: Validity,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, spiffe.node_id().as_str());
    params.subject_alt_names = vec![SanType::URI(spiffe.to_string().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn refuse_overwrite(path: &Path, force: bool) -> Result<(), PkiError> {
    if !force && path.exists() {
        return Err(PkiError::WouldOverwrite {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Writes a private key readable by its owner only (0600, from creation, never widened).
pub fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_atomically(path, contents, 0o600)
}

pub fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_atomically(path, contents, 0o644)
}

/// Writes to a temporary file beside `path` (created with `mode`), then renames it over
/// `path`: an interrupted write never leaves a truncated file or loses the one replaced.
fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(PkiError::io(&tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(PkiError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(PkiError::io(path))
}

/// A random positive 128-bit serial number: unique per certificate even when a key is reused
/// (rcgen's default derives it from the public key), so a serial can name one certificate.
fn random_serial() -> Result<rcgen::SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::BadFile {
            path: "/dev/urandom".into(),
            reason: "no randomness".into(),
        })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // positive and never shorter than 16 bytes
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
