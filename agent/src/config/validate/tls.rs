//! `[tls]`: the trust bundle, this node's certificate (from files, from the data directory
//! after a join or a renewal, or still to be obtained with a join token), and the mesh CA key
//! a voter brings into the decision log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Checker;
use crate::config::raw::RawTls;
use crate::config::{PkiSettings, TlsFiles};
use crate::pki::{files, NodeCredentials, TrustBundle};

/// The longest a leaf may live; the default is 24 hours.
const MAX_LEAF_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
const MIN_LEAF_LIFETIME: Duration = Duration::from_secs(10);

/// What `[tls]` yields once valid.
pub(crate) struct TlsParts {
    pub trust: TrustBundle,
    pub credentials: NodeCredentials,
    pub files: TlsFiles,
    pub pki: PkiSettings,
}

/// Where an agent keeps the certificate it obtained or renewed: `<state dir>/tls/`.
pub fn stored_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

pub(super) fn tls(
    c: &mut Checker<'_>,
    raw: Option<&RawTls>,
    state_dir: Option<&Path>,
    voter: bool,
) -> Option<TlsParts> {
    let default = RawTls::default();
    let raw = raw.unwrap_or(&default);
    let ca = c.readable_file("tls.ca", raw.ca.as_ref());
    let leaf_lifetime = lifetime(c, "tls.leaf_lifetime", raw.leaf_lifetime.as_deref());
    let ca_key = raw
        .ca_key
        .as_ref()
        .and_then(|k| c.readable_file("tls.ca_key", Some(k)));
    if ca_key.is_some() && !voter {
        c.error(
            "tls.ca_key",
            "only agents that may vote ([consensus]) hold the mesh CA key",
        );
    }
    let join_token_file = raw
        .join_token_file
        .as_ref()
        .and_then(|t| c.readable_file("tls.join_token_file", Some(t)));
    if join_token_file.is_some() && state_dir.is_none() {
        c.error(
            "tls.join_token_file",
            "a joining agent keeps the certificate it obtains in data_dir: set data_dir",
        );
    }
    // A certificate obtained by a join or renewed in place wins over the configured files.
    let stored = state_dir
        .map(stored_dir)
        .filter(|dir| stored_leaf_usable(dir));
    let (cert, key, cert_key) = match (&stored, &raw.cert, &raw.key) {
        (Some(dir), _, _) => (
            Some(dir.join(files::NODE_CERT)),
            Some(dir.join(files::NODE_KEY)),
            "tls.cert",
        ),
        (None, None, None) if join_token_file.is_some() => {
            c.error(
                "tls.join_token_file",
                "no certificate obtained yet: the join has not completed (see the log)",
            );
            (None, None, "tls.cert")
        }
        (None, cert, key) => (
            c.readable_file("tls.cert", cert.as_ref()),
            c.readable_file("tls.key", key.as_ref()),
            "tls.cert",
        ),
    };
    let mut trust = ca
        .as_ref()
        .and_then(|ca| c.check("tls.ca", TrustBundle::load(ca)));
    // The bundle committed by the decision log, as last stored, is trusted as well.
    if let (Some(dir), Some(configured)) = (&stored, &trust) {
        let bundle = dir.join(files::CA_CERT);
        if let Ok(pem) = std::fs::read(&bundle) {
            let mut both = std::fs::read(ca.as_ref()?).unwrap_or_default();
            both.extend_from_slice(&pem);
            match TrustBundle::from_pem(&bundle, &both) {
                Ok(merged) if merged.trust_domain() == configured.trust_domain() => {
                    trust = Some(merged)
                }
                Ok(_) | Err(_) => c.error(
                    "tls.ca",
                    format!(
                        "the stored trust bundle {} does not fit tls.ca; remove it",
                        bundle.display()
                    ),
                ),
            }
        }
    }
    let credentials = match (&cert, &key) {
        (Some(cert), Some(key)) => {
            let loaded = NodeCredentials::load(cert, key);
            let key_name = match &loaded {
                Err(crate::pki::PkiError::BadFile { path, .. }) if path == key => "tls.key",
                _ => cert_key,
            };
            c.check(key_name, loaded)
        }
        _ => None,
    };
    if let (Some(trust), Some(creds)) = (&trust, &credentials) {
        if creds.spiffe_id.trust_domain() != trust.trust_domain() {
            c.error(
                "tls.cert",
                format!(
                    "certificate is for {} but tls.ca is the CA of trust domain {}",
                    creds.spiffe_id,
                    trust.trust_domain()
                ),
            );
        } else if let Err(reason) = crate::pki::check_own_certificate(trust, creds) {
            // Peers would refuse every handshake: better said now than after start.
            c.error("tls.cert", reason);
        }
    }
    if let (Some(ca), Some(key)) = (&ca, &ca_key) {
        c.check("tls.ca_key", crate::pki::ca::root_from_files(ca, key));
    }
    match (trust, credentials, ca, cert, key) {
        (Some(trust), Some(credentials), Some(ca), Some(cert), Some(key)) => Some(TlsParts {
            trust,
            credentials,
            files: TlsFiles { ca, cert, key },
            pki: PkiSettings {
                ca_key,
                join_token_file,
                leaf_lifetime,
                stored: state_dir.map(stored_dir),
            },
        }),
        _ => None,
    }
}

fn lifetime(c: &mut Checker<'_>, key: &str, value: Option<&str>) -> Duration {
    let default = PkiSettings::DEFAULT_LEAF_LIFETIME;
    let Some(value) = value else { return default };
    match humantime::parse_duration(value) {
        Ok(d) if (MIN_LEAF_LIFETIME..=MAX_LEAF_LIFETIME).contains(&d) => d,
        Ok(_) => {
            c.error(key, "must be between 10s and 30 days (24h is the default)");
            default
        }
        Err(e) => {
            c.error(
                key,
                format!("invalid duration {value:?} ({e}); write e.g. \"24h\""),
            );
            default
        }
    }
}

/// What a first start with `tls.join_token_file` needs, when the agent has no certificate yet.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    pub node_id: plexus_protocol::NodeId,
    pub seeds: Vec<std::net::SocketAddr>,
    /// `tls.ca`: the mesh CA certificate the leader's certificate must chain to.
    pub ca: PathBuf,
    pub token_file: PathBuf,
    /// Where the obtained certificate and key are written (`<data_dir>/tls`).
    pub stored: PathBuf,
}

/// Whether `dir` holds a leaf and key this agent obtained or renewed, with the leaf still
/// valid. An expired one (the agent was down longer than its leaf lived) is passed over: the
/// configured certificate is used, or the join token obtains a new leaf.
fn stored_leaf_usable(dir: &Path) -> bool {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    if !dir.join(files::NODE_KEY).is_file() {
        return false;
    }
    let Some(Ok(leaf)) = CertificateDer::pem_file_iter(dir.join(files::NODE_CERT))
        .ok()
        .and_then(|mut certs| certs.next())
    else {
        return false;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let usable = crate::pki::cert_info(&leaf).is_ok_and(|info| info.not_after > now);
    if !usable {
        tracing::warn!(dir = %dir.display(), "the stored certificate has expired; not using it");
    }
    usable
}

/// The join to do before the agent can start, if any: `tls.join_token_file` is set, no
/// certificate is configured, and none was obtained before (or the one obtained expired). Mistakes are left to validation.
pub(crate) fn join_plan(file: &Path, raw: &crate::config::raw::RawConfig) -> Option<JoinPlan> {
    let tls = raw.tls.as_ref()?;
    if tls.cert.is_some() || tls.key.is_some() {
        return None;
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let token_file = base.join(tls.join_token_file.as_ref()?);
    let state_dir = raw.data_dir.as_ref().map(|d| base.join(d)).or_else(|| {
        raw.consensus
            .bootstrap_expect
            .map(|_| PathBuf::from(super::DEFAULT_DATA_DIR))
    })?;
    let stored = stored_dir(&state_dir);
    if stored_leaf_usable(&stored) {
        return None;
    }
    let node_id = match &raw.node_id {
        Some(id) => id.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()?
            .trim()
            .to_owned(),
    };
    Some(JoinPlan {
        node_id: plexus_protocol::NodeId::new(node_id).ok()?,
        seeds: raw
            .seeds
            .iter()
            .filter_map(|s| super::resolve(s).ok())
            .collect(),
        ca: base.join(tls.ca.as_ref()?),
        token_file,
        stored,
    })
}
