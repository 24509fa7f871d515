//! Leaf renewal on every agent: at two thirds of the leaf's life, or at once (with a little
//! jitter) when the leaf no longer chains to the committed issuer (a CA rotation). The request
//! goes to the leader, fails over to the next one, and retries with backoff; the renewed leaf
//! is served from the next handshake on and kept in `<data_dir>/tls/`.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use plexus_protocol::{CommittedState, LeaderReply, LeaderRequest, TrustState};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
use tokio::sync::watch;

use super::{client, TrustSetup};
use crate::pki::{ca, files, CertInfo};
use crate::telemetry::names;
use crate::transport::Backoff;

/// The first retry after a failed renewal, and the longest wait between retries.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Renewals after a rotation are spread over this long, so agents do not all ask at once.
const ROTATION_SPREAD: Duration = Duration::from_secs(2);
/// Least time between two renewals of one agent.
const MIN_RENEWAL_GAP: Duration = Duration::from_secs(1);

pub(super) async fn run(setup: TrustSetup, mut shutdown: watch::Receiver<bool>) {
    let mut states = setup.consensus.watch_state();
    let mut backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
    let mut quiet_until = Instant::now();
    // When a rotation made the leaf stale: (the new issuer, when this agent renews for it).
    // Kept across state changes, so frequent commits do not keep pushing the renewal back.
    let mut rotation_due: Option<(String, Instant)> = None;
    loop {
        let state = states.borrow_and_update().clone();
        let now = Instant::now();
        let due = match due_in(&setup, &state) {
            None => None,
            Some(Due::Rotation(issuer, offset)) => match &rotation_due {
                Some((seen, at)) if *seen == issuer => Some(*at),
                _ => {
                    rotation_due = Some((issuer, now + offset));
                    Some(now + offset)
                }
            },
            Some(Due::In(wait)) => Some(now + wait),
        };
        // No mesh CA in the log: certificates are the operator's; look again on change.
        let due = due.unwrap_or(now + Duration::from_secs(3600));
        let at = due
            .max(now + backoff.ready(now).err().unwrap_or_default())
            .max(quiet_until);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            changed = states.changed() => {
                if changed.is_err() { return }
                continue;
            }
            _ = crate::agent::stopping(&mut shutdown) => return,
        }
        let state = setup.consensus.state();
        if due_in(&setup, &state).is_none() {
            continue;
        }
        match renew_once(&setup, &state).await {
            Ok(info) => {
                backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
                rotation_due = None;
                // Never more than one renewal a second, whatever the dates say.
                quiet_until = Instant::now() + MIN_RENEWAL_GAP;
                count(&setup, "ok");
                tracing::info!(serial = %info.serial, not_after = info.not_after, "certificate renewed");
            }
            Err(error) => {
                count(&setup, "failed");
                let retry = backoff.failed(Instant::now(), rand::random::<f64>());
                tracing::warn!(%error, ?retry, "certificate renewal failed; retrying");
            }
        }
    }
}

/// When the leaf is due for renewal.
enum Due {
    /// After this long (two thirds of its life).
    In(Duration),
    /// It does not chain to the committed issuer (this serial): after this agent's offset.
    Rotation(String, Duration),
}

fn count(setup: &TrustSetup, outcome: &'static str) {
    setup
        .telemetry
        .counter(names::CERT_RENEWALS, &[("outcome", outcome)])
        .increment(1);
}

/// When the leaf is due for renewal; `None` when the log holds no CA.
fn due_in(setup: &TrustSetup, state: &CommittedState) -> Option<Due> {
    let issuer = state.trust.issuer()?;
    let chain = setup.credentials.chain();
    if !chains_to(&chain[0], &issuer.der) {
        // A rotation: renew soon, each agent at its own moment within the spread.
        let spread = ROTATION_SPREAD.as_millis() as u64;
        let digest = ring::digest::digest(&ring::digest::SHA256, setup.node_id.as_str().as_bytes());
        let offset =
            u64::from_le_bytes(digest.as_ref()[..8].try_into().unwrap_or_default()) % spread.max(1);
        return Some(Due::Rotation(
            issuer.serial.clone(),
            Duration::from_millis(offset),
        ));
    }
    Some(Due::In(renew_at(&setup.credentials.info(), unix_secs())))
}

/// Time left until two thirds of the leaf's life have passed.
pub fn renew_at(info: &CertInfo, now_secs: i64) -> Duration {
    let life = (info.not_after - info.not_before).max(0);
    let at = info.not_before + life * 2 / 3;
    Duration::from_secs(u64::try_from(at - now_secs).unwrap_or(0))
}

fn unix_secs() -> i64 {
    (super::unix_ms() / 1000) as i64
}

/// Whether `leaf` is signed by `root` (and valid now).
pub(super) fn chains_to(leaf: &CertificateDer<'_>, root: &[u8]) -> bool {
    let mut store = rustls::RootCertStore::empty();
    if store.add(CertificateDer::from(root.to_vec())).is_err() {
        return false;
    }
    let Ok(parsed) = ParsedCertificate::try_from(leaf) else {
        return false;
    };
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &store,
        &[],
        UnixTime::now(),
        crate::pki::crypto_provider()
            .signature_verification_algorithms
            .all,
    )
    .is_ok()
}

/// One renewal: a request for this node's key, signed by the leader (or here, when this agent
/// leads), installed and stored.
async fn renew_once(setup: &TrustSetup, state: &CommittedState) -> Result<CertInfo, String> {
    let csr = ca::make_request(setup.credentials.key(), &setup.node_id)?;
    let leaf = if setup.consensus.status().is_leader {
        ca::sign_request(
            &state.trust,
            &setup.trust_domain,
            &setup.node_id,
            &csr,
            setup.pki.leaf_lifetime,
            time::OffsetDateTime::now_utc(),
        )?
    } else {
        match client::ask_leader(setup, &LeaderRequest::Renew { csr }).await? {
            LeaderReply::Issued { leaf, .. } => leaf,
            LeaderReply::Refused { reason } => return Err(format!("leader refused: {reason}")),
            other => return Err(format!("unexpected answer: {other:?}")),
        }
    };
    install(setup, leaf, &state.trust)
}

/// Checks a leaf from the leader (ours, chains to a committed root, fits our key), serves it
/// and stores it.
fn install(setup: &TrustSetup, leaf: Vec<u8>, trust: &TrustState) -> Result<CertInfo, String> {
    let info = crate::pki::cert_info(&leaf)?;
    let ours = format!("spiffe://{}/node/{}", setup.trust_domain, setup.node_id);
    if info.spiffe_id != ours {
        return Err(format!("leaf is for {}, not {ours}", info.spiffe_id));
    }
    let leaf = CertificateDer::from(leaf);
    if !trust.roots.iter().any(|r| chains_to(&leaf, &r.der)) {
        return Err("leaf does not chain to a committed root".into());
    }
    let chain = chain_with_cross(leaf, trust);
    let info = setup.credentials.replace(chain.clone())?;
    if let Some(dir) = &setup.pki.stored {
        store_credentials(dir, &chain, setup.credentials.key())
            .and_then(|()| store_bundle(dir, trust))
            .map_err(|e| format!("renewed, but not stored: {e}"))?;
    }
    Ok(info)
}

/// The leaf, and during a rotation the new root cross-signed by the old one, so agents that
/// trust only the old root still accept the leaf.
pub(super) fn chain_with_cross(
    leaf: CertificateDer<'static>,
    trust: &TrustState,
) -> Vec<CertificateDer<'static>> {
    let mut chain = vec![leaf];
    if let (Some(cross), true) = (&trust.cross_signed, trust.roots.len() > 1) {
        chain.push(CertificateDer::from(cross.clone()));
    }
    chain
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes the chain and key into `dir` (`node.pem`, `node.key` 0600), atomically.
pub(super) fn store_credentials(
    dir: &Path,
    chain: &[CertificateDer<'_>],
    key: &rustls::pki_types::PrivateKeyDer<'_>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let certs: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    crate::pki::write_secret(
        &dir.join(files::NODE_KEY),
        &pem("PRIVATE KEY", key.secret_der()),
    )
    .map_err(|e| e.to_string())?;
    crate::pki::write_public(&dir.join(files::NODE_CERT), &certs).map_err(|e| e.to_string())
}

/// Writes the committed roots into `dir/ca.pem`.
pub(super) fn store_bundle(dir: &Path, trust: &TrustState) -> Result<(), String> {
    if trust.roots.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let roots: String = trust
        .roots
        .iter()
        .map(|r| pem("CERTIFICATE", &r.der))
        .collect();
    crate::pki::write_public(&dir.join(files::CA_CERT), &roots).map_err(|e| e.to_string())
}
