//! Applying and healing faults: process signals through the cluster, link faults through
//! the relay, behaviours of the harness's backends.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, GRACE};
use crate::backend::Backend;
use crate::cluster::{Cluster, Variant};
use crate::relay::{LinkFaults, RelayMesh};
use crate::scenario::{Direction, FaultKind, NetEffect};
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
) -> impl Iterator<Item = &'a Backend> {
    backends.iter().filter(move |b| {
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

pub(super) async fn apply(
    fault: &PlannedFault,
    cluster: &Mutex<Cluster>,
    relay: &RelayMesh,
    backends: &[Backend],
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
                // Graceful: SIGTERM, wait for the exit (bounded), start again.
                lock(cluster).terminate(target)?;
                let deadline = Instant::now() + GRACE;
                while !lock(cluster).has_exited(target) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut c = lock(cluster);
                c.kill(target)?;
                c.start(target, Variant::Good)?;
            }
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
            for (from, to) in links(fault, *direction) {
                relay.set(&from, &to, link_faults(*effect));
            }
        }
        FaultKind::Backend { effect, .. } => {
            for b in backends_of(fault, backends) {
                b.set(Some(*effect));
            }
        }
        _ => {}
    }
    Ok(())
}

pub(super) async fn heal(
    fault: &PlannedFault,
    cluster: &Mutex<Cluster>,
    relay: &RelayMesh,
    backends: &[Backend],
) -> Result<(), String> {
    match &fault.kind {
        FaultKind::Network { direction, .. } => {
            for (from, to) in links(fault, *direction) {
                relay.heal(&from, &to);
            }
        }
        FaultKind::Backend { .. } => {
            for b in backends_of(fault, backends) {
                b.set(None);
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
            _ => {}
        }
    }
    Ok(())
}
