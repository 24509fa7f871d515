//! The leader's trust duties, every second: bring the mesh CA from `tls.ca_key` into the log
//! when it holds none, rotate the CA before it expires, and retire superseded roots once every
//! leaf they signed has expired.

use std::time::{Duration, Instant};

use plexus_protocol::{DecisionKind, TrustState};
use tokio::sync::watch;

use super::{decision, unix_ms, TrustSetup};
use crate::pki::ca;

/// How often the leader looks at the trust state.
const EVERY: Duration = Duration::from_secs(1);
/// How long a proposal of the same kind is not repeated while it may still commit.
const PROPOSAL_PATIENCE: Duration = Duration::from_secs(5);
/// How long a root made by a rotation lives.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Most margin added to the longest leaf lifetime before a superseded root is retired (leaves
/// are backdated a little; clocks differ a little). Half the leaf lifetime when that is less.
const RETIRE_MARGIN: Duration = Duration::from_secs(120);

pub(super) async fn run(setup: TrustSetup, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(&'static str, Instant)> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::agent::stopping(&mut shutdown) => return,
        }
        if !setup.consensus.status().is_leader {
            continue;
        }
        let state = setup.consensus.state();
        let Some((kind, reason)) = plan(&setup, &state.trust, unix_ms()) else {
            continue;
        };
        let label = kind.label();
        if last.is_some_and(|(l, at)| l == label && at.elapsed() < PROPOSAL_PATIENCE) {
            continue;
        }
        last = Some((label, Instant::now()));
        tracing::info!(kind = label, %reason, "trust decision proposed");
        if let Err(error) = setup
            .consensus
            .propose(decision(&setup.node_id, kind, reason))
        {
            tracing::warn!(%error, kind = label, "trust decision not proposed");
        }
    }
}

/// What the leader should propose about trust now, if anything.
fn plan(setup: &TrustSetup, trust: &TrustState, now_ms: u64) -> Option<(DecisionKind, String)> {
    if trust.roots.is_empty() {
        let key = setup.pki.ca_key.as_ref()?;
        return match init(setup, key) {
            Ok(kind) => Some((
                kind,
                format!(
                    "the mesh CA enters the decision log from {}'s tls.ca_key",
                    setup.node_id
                ),
            )),
            Err(error) => {
                tracing::error!(%error, "cannot bring the mesh CA into the decision log");
                None
            }
        };
    }
    let issuer = trust.issuer()?;
    if let Some(old) = trust.roots[..trust.roots.len() - 1]
        .iter()
        .find(|r| r.retire_at_ms.is_some_and(|at| at <= now_ms))
    {
        return Some((
            DecisionKind::CaRetire {
                serial: old.serial.clone(),
            },
            format!(
                "root {} retired: every leaf it signed has expired",
                old.serial
            ),
        ));
    }
    let margin = (setup.pki.leaf_lifetime * 3).as_millis() as u64;
    if trust.has_ca()
        && trust.roots.len() == 1
        && issuer.not_after_ms.saturating_sub(now_ms) < margin
    {
        return match rotation(setup, trust) {
            Ok(kind) => Some((
                kind,
                format!(
                    "root {} expires within three leaf lifetimes: rotated",
                    issuer.serial
                ),
            )),
            Err(error) => {
                tracing::error!(%error, "cannot rotate the mesh CA");
                None
            }
        };
    }
    None
}

/// The `TrustInit` decision from this voter's CA files and the join token beside the key.
fn init(setup: &TrustSetup, key: &std::path::Path) -> Result<DecisionKind, String> {
    let (root, key_der) = ca::root_from_files(&setup.ca_file, key).map_err(|e| e.to_string())?;
    let token_file = key.with_file_name(ca::JOIN_TOKEN_FILE);
    let tokens = match token_file.is_file() {
        true => vec![ca::token_from_file(&token_file, unix_ms()).map_err(|e| e.to_string())?],
        false => Vec::new(),
    };
    Ok(DecisionKind::TrustInit {
        root,
        key: key_der,
        tokens,
    })
}

/// A `CaRotate` decision: a new root cross-signed by the current one; the current one retires
/// once the longest leaf it may have signed has expired.
pub(super) fn rotation(setup: &TrustSetup, trust: &TrustState) -> Result<DecisionKind, String> {
    if !trust.has_ca() {
        return Err("the decision log holds no mesh CA key".into());
    }
    if let Some(old) = trust.roots.iter().find(|r| r.retire_at_ms.is_some()) {
        return Err(format!(
            "a rotation is in progress: root {} retires at unix ms {}",
            old.serial,
            old.retire_at_ms.unwrap_or_default()
        ));
    }
    let (root, key, cross_signed) = ca::next_root(
        trust,
        &setup.trust_domain,
        ROOT_LIFETIME,
        time::OffsetDateTime::now_utc(),
    )?;
    let lifetime = setup.pki.leaf_lifetime;
    let retire = lifetime + RETIRE_MARGIN.min(lifetime / 2);
    Ok(DecisionKind::CaRotate {
        root,
        key,
        cross_signed,
        retire_previous_at_ms: unix_ms() + retire.as_millis() as u64,
    })
}
