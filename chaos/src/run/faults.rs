//! Applying and healing faults: process signals through the cluster, link faults through
//! the relay, behaviours of the harness's backends.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, GRACE};
use crate::backend::Backend;
use crate::cluster::{Cluster, Variant};
use crate::relay::{LinkFaults, RelayMesh};
use crate::scenario::{BackendEffect, Direction, FaultKind, NetEffect};
use crate::schedule::PlannedFault;

fn link_faults(effect: NetEffect) -> LinkFaults {
    let mut f = LinkFaults::default();
    match effect {
        NetEffect::Partition => f.partitioned = true,
        NetEffect::Loss { rate } => f.loss = rate,
        NetEffect::Latency { delay, jitter } => {
            f.delay = delay;
            f.jitter = jitter;
        }
        // The relay holds a reordered datagram back by a fixed extra delay (see relay::shaper).
        NetEffect::Reorder { rate } => f.reorder = rate,
        NetEffect::Duplicate { rate } => f.duplicate = rate,
        NetEffect::Bandwidth { bytes_per_sec } => f.bandwidth = Some(bytes_per_sec),
    }
    f
}

/// The ordered links a network fault touches.
fn links(fault: &PlannedFault, direction: Direction) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in &fault.targets {
        for p in &fault.peers {
            if matches!(direction, Direction::Both | Direction::Outbound) {
                out.push((t.clone(), p.clone()));
            }
            if matches!(direction, Direction::Both | Direction::Inbound) {
                out.push((p.clone(), t.clone()));
            }
        }
    }
    out
}

fn backends_of<'a>(
    fault: &'a PlannedFault,
    backends: &'a [Backend],
) -> impl Iterator<Item = (usize, &'a Backend)> {
    backends.iter().enumerate().filter(move |(_, b)| {
        let FaultKind::Backend {
            service, version, ..
        } = &fault.kind
        else {
            return false;
        };
        fault.targets.contains(&b.node)
            && service.as_ref().is_none_or(|s| s == &b.service)
            && version.as_ref().is_none_or(|v| v == &b.version)
    })
}

/// The network and backend faults in force, so overlapping ones combine (a reorder and a
/// duplication on the same links) and a heal removes only its own effect.
#[derive(Debug, Default)]
pub(super) struct Active {
    links: BTreeMap<(String, String), Vec<(usize, NetEffect)>>,
    /// Per backend (index into the backends): the effects in force, the latest one applies.
    backends: BTreeMap<usize, Vec<(usize, BackendEffect)>>,
}

impl Active {
    fn set_link(
        &mut self,
        relay: &RelayMesh,
        link: (String, String),
        change: impl FnOnce(&mut Vec<(usize, NetEffect)>),
    ) {
        let effects = self.links.entry(link.clone()).or_default();
        change(effects);
        if effects.is_empty() {
            relay.heal(&link.0, &link.1);
        } else {
            relay.set(&link.0, &link.1, combine(effects));
        }
    }

    fn set_backend(
        &mut self,
        backend: (usize, &Backend),
        change: impl FnOnce(&mut Vec<(usize, BackendEffect)>),
    ) {
        let effects = self.backends.entry(backend.0).or_default();
        change(effects);
        backend.1.set(effects.last().map(|(_, e)| *e));
    }
}

/// Several effects on one link at once: partitions win, losses compound, delays add, the
/// narrowest bandwidth applies.
fn combine(effects: &[(usize, NetEffect)]) -> LinkFaults {
    let mut f = LinkFaults::default();
    for (_, effect) in effects {
        let one = link_faults(*effect);
        f.partitioned |= one.partitioned;
        f.loss = 1.0 - (1.0 - f.loss) * (1.0 - one.loss);
        f.delay += one.delay;
        f.jitter = f.jitter.max(one.jitter);
        f.reorder = f.reorder.max(one.reorder);
        f.duplicate = f.duplicate.max(one.duplicate);
        f.bandwidth = match (f.bandwidth, one.bandwidth) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    f
}

pub(super) async fn apply(
    id: usize,
    fault: &PlannedFault,
    cluster: &Mutex<Cluster>,
    relay: &RelayMesh,
    backends: &[Backend],
    active: &mut Active,
) -> Result<(), String> {
    for target in &fault.targets {
        match &fault.kind {
            FaultKind::Kill => lock(cluster).kill(target)?,
            FaultKind::Stop => lock(cluster).pause(target, true)?,
            FaultKind::Restart => {
                let mut c = lock(cluster);
                c.kill(target)?;
                c.start(target, Variant::Good)?;
            }
            FaultKind::RollingRestart { .. } => {
                graceful_restart(cluster, target, Variant::Good).await?;
            }
            FaultKind::LyingObserver { about } => {
                graceful_restart(cluster, target, Variant::Liar(about.clone())).await?;
            }
            FaultKind::PolicyChange(policy) => lock(cluster).set_policy(target, policy)?,
            // Asked once below: a rotation is one decision.
            FaultKind::CaRotate => {}
            FaultKind::Network { .. } | FaultKind::Backend { .. } => {}
            FaultKind::Certificate(flaw) => {
                let mut c = lock(cluster);
                c.kill(target)?;
                c.start(target, Variant::BadCert(*flaw))?;
            }
            FaultKind::ClockSkew { offset_secs } => {
                let mut c = lock(cluster);
                c.kill(target)?;
                c.start(target, Variant::Skewed(*offset_secs))?;
            }
        }
    }
    match &fault.kind {
        FaultKind::Network {
            effect, direction, ..
        } => {
            for link in links(fault, *direction) {
                active.set_link(relay, link, |e| e.push((id, *effect)));
            }
        }
        FaultKind::Backend { effect, .. } => {
            for b in backends_of(fault, backends) {
                active.set_backend(b, |e| e.push((id, *effect)));
            }
        }
        FaultKind::CaRotate => {
            // One rotation: asked of the first target that takes it.
            let mut refused = Vec::new();
            for target in &fault.targets {
                match rotate_ca(cluster, target).await {
                    Ok(()) => return Ok(()),
                    Err(e) => refused.push(e),
                }
            }
            return Err(match refused.is_empty() {
                true => "no node to ask".into(),
                false => refused.join("; "),
            });
        }
        _ => {}
    }
    Ok(())
}

/// SIGTERM (the agent drains and leaves), wait for the exit (bounded), start as `variant`.
async fn graceful_restart(
    cluster: &Mutex<Cluster>,
    target: &str,
    variant: Variant,
) -> Result<(), String> {
    lock(cluster).terminate(target)?;
    let deadline = Instant::now() + GRACE;
    while !lock(cluster).has_exited(target) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = lock(cluster);
    c.kill(target)?;
    c.start(target, variant)
}

/// `POST /v1/ca/rotate` to `target`'s agent with its admin token (it relays to the leader).
async fn rotate_ca(cluster: &Mutex<Cluster>, target: &str) -> Result<(), String> {
    let (admin, token) = {
        let c = lock(cluster);
        let node = c
            .node(target)
            .ok_or_else(|| format!("no node `{target}`"))?;
        (node.admin, c.admin_token(target).ok_or("no admin token")?)
    };
    let asked = plexus_agent::ctl::post(admin, "/v1/ca/rotate", serde_json::json!({}), &token);
    match asked.await? {
        (200, _) => Ok(()),
        (status, body) => Err(format!(
            "POST /v1/ca/rotate to {target}: {status} {}",
            body.trim()
        )),
    }
}

pub(super) async fn heal(
    id: usize,
    fault: &PlannedFault,
    cluster: &Mutex<Cluster>,
    relay: &RelayMesh,
    backends: &[Backend],
    active: &mut Active,
) -> Result<(), String> {
    match &fault.kind {
        FaultKind::Network { direction, .. } => {
            for link in links(fault, *direction) {
                active.set_link(relay, link, |e| e.retain(|(i, _)| *i != id));
            }
        }
        FaultKind::Backend { .. } => {
            for b in backends_of(fault, backends) {
                active.set_backend(b, |e| e.retain(|(i, _)| *i != id));
            }
        }
        _ => {}
    }
    for target in &fault.targets {
        let mut c = lock(cluster);
        match &fault.kind {
            FaultKind::Kill => c.start(target, Variant::Good)?,
            FaultKind::Stop => c.pause(target, false)?,
            FaultKind::Certificate(_) | FaultKind::ClockSkew { .. } => {
                c.kill(target)?;
                c.start(target, Variant::Good)?;
            }
            FaultKind::LyingObserver { .. } => {
                drop(c);
                graceful_restart(cluster, target, Variant::Good).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_link_effects_combine() {
        let effects = [
            (0, NetEffect::Reorder { rate: 0.2 }),
            (1, NetEffect::Duplicate { rate: 0.1 }),
            (2, NetEffect::Loss { rate: 0.5 }),
            (3, NetEffect::Loss { rate: 0.5 }),
            (
                4,
                NetEffect::Bandwidth {
                    bytes_per_sec: 2048,
                },
            ),
            (
                5,
                NetEffect::Bandwidth {
                    bytes_per_sec: 1024,
                },
            ),
        ];
        let f = combine(&effects);
        assert_eq!((f.reorder, f.duplicate, f.loss), (0.2, 0.1, 0.75));
        assert_eq!(f.bandwidth, Some(1024));
        assert!(!f.partitioned);
    }
}
