//! Trust on the decision log, the agent's side: the leader's certificate service, renewal,
//! joining with a token, CA rotation and retirement, and following the committed trust bundle
//! and deny list.
//!
//! ```text
//!  agent ── LeaderRequest (Renew | Join | Operator) ══ QUIC/mTLS ══▶ leader: service.rs
//!                                                                    sign from the CSR, or
//!                                                                    propose + wait for commit
//!  committed TrustState ─▶ follow: LiveTrust (roots, deny list) + <data_dir>/tls/ca.pem
//!  leader, every second ─▶ duties.rs: bring tls.ca_key into the log, rotate before expiry,
//!                          retire superseded roots
//!  every agent ─▶ renew.rs: at 2/3 of the leaf's life, or when the issuer changed
//! ```
//!
//! The CA key never leaves the Raft group: only the leader signs, and what it returns is a leaf.

pub mod admin;
pub mod client;
mod duties;
pub mod join;
mod renew;
mod service;

use std::sync::Arc;
use std::time::Duration;

use plexus_protocol::{CommittedState, Decision, NodeId, TrustDomain};
use tokio::sync::watch;

use crate::config::PkiSettings;
use crate::consensus::Consensus;
use crate::gossip::MeshView;
use crate::pki::{LiveCredentials, LiveTrust};
use crate::telemetry::Telemetry;
use crate::transport::PeerPool;

pub use service::TrustService;

/// How long a request to the leader may take (dial, answer, and a commit when it proposes).
pub const LEADER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the trust tasks need from the agent.
#[derive(Clone)]
pub struct TrustSetup {
    pub node_id: NodeId,
    pub trust_domain: TrustDomain,
    pub consensus: Consensus,
    pub view: watch::Receiver<Arc<MeshView>>,
    pub pool: Arc<PeerPool>,
    pub trust: Arc<LiveTrust>,
    pub credentials: Arc<LiveCredentials>,
    pub pki: PkiSettings,
    /// `tls.ca`: the CA certificate that `tls.ca_key` belongs to.
    pub ca_file: std::path::PathBuf,
    pub telemetry: Telemetry,
}

/// Starts the trust tasks into `tasks` and returns the leader-side service for peers' requests.
pub fn start(
    setup: TrustSetup,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: watch::Receiver<bool>,
) -> TrustService {
    tasks.spawn(follow(setup.clone(), shutdown.clone()));
    tasks.spawn(duties::run(setup.clone(), shutdown.clone()));
    tasks.spawn(renew::run(setup.clone(), shutdown));
    TrustService::new(setup)
}

/// Applies every committed trust state to the verifiers and keeps the committed bundle on disk
/// (so a restart trusts what the log trusted).
async fn follow(setup: TrustSetup, mut shutdown: watch::Receiver<bool>) {
    let mut states = setup.consensus.watch_state();
    loop {
        let state = states.borrow_and_update().clone();
        if setup.trust.follow(&state.trust) {
            if let Some(dir) = &setup.pki.stored {
                if let Err(error) = renew::store_bundle(dir, &state.trust) {
                    tracing::warn!(%error, "cannot keep the committed trust bundle on disk");
                }
            }
        }
        export(&setup, &state);
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return },
            _ = crate::agent::stopping(&mut shutdown) => return,
        }
    }
}

fn export(setup: &TrustSetup, state: &CommittedState) {
    use crate::telemetry::names;
    let telemetry = &setup.telemetry;
    for root in &state.trust.roots {
        telemetry
            .gauge(
                names::CERT_EXPIRY,
                &[("kind", "root"), ("serial", &root.serial)],
            )
            .set(root.not_after_ms as f64 / 1000.0);
    }
    let info = setup.credentials.info();
    telemetry
        .gauge(
            names::CERT_EXPIRY,
            &[("kind", "leaf"), ("serial", "current")],
        )
        .set(info.not_after as f64);
    telemetry
        .gauge(names::TRUSTED_ROOTS, &[])
        .set(state.trust.roots.len() as f64);
}

/// Proposes `decision` on this (leading) agent and waits until the committed state satisfies
/// `done`, or `limit` passes.
pub(crate) async fn commit(
    consensus: &Consensus,
    decision: Decision,
    done: impl Fn(&CommittedState) -> bool,
    limit: Duration,
) -> Result<(), String> {
    let mut states = consensus.watch_state();
    consensus.propose(decision).map_err(|e| e.to_string())?;
    let waited = tokio::time::timeout(limit, async {
        loop {
            if done(&states.borrow_and_update()) {
                return Ok(());
            }
            if states.changed().await.is_err() {
                return Err("the decision log stopped".to_owned());
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| Err(format!("not committed within {limit:?}")))
}

/// Unix time now, milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A decision proposed by this node now.
pub(crate) fn decision(
    node: &NodeId,
    kind: plexus_protocol::DecisionKind,
    reason: impl Into<String>,
) -> Decision {
    Decision {
        kind,
        reason: reason.into(),
        evidence: Vec::new(),
        proposer: node.clone(),
        proposed_at_ms: unix_ms(),
    }
}
