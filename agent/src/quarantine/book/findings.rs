//! The anomaly signals of [`super::ObservationBook`]: each compares one peer's window with the
//! other peers' (or with its own history) and finds at most one anomaly.

use plexus_protocol::{AnomalySignal, NodeId};

use crate::decide::median;

use super::{
    Counts, PeerRecord, MIN_ATTEMPTS, MIN_EJECTIONS, MIN_FAILURES, MIN_REFUSALS, MIN_SHARE,
    MIN_VIOLATIONS, OBSERVE_WINDOW, RATE_FACTOR, RATE_MARGIN, SURGE_FACTOR, SURGE_FLOOR,
    SURGE_HISTORY_FLOOR, SURGE_RECENT,
};

/// One anomaly found, before it becomes a report.
pub(super) struct Finding {
    pub(super) subject: NodeId,
    pub(super) signal: AnomalySignal,
    pub(super) value: f64,
    pub(super) reference: f64,
}

impl Finding {
    /// How far above its reference the value is, for choosing what to publish.
    pub(super) fn severity(&self) -> f64 {
        self.value / self.reference.max(0.01)
    }
}

fn share(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// Which count of a window a signal reads.
type Part = fn(&Counts) -> u32;

/// Error and reset shares far above the other peers' median.
pub(super) fn share_findings<'a, I: Iterator<Item = &'a Counts>>(
    peer: &NodeId,
    counts: &Counts,
    others: impl Fn() -> I,
) -> Vec<Finding> {
    let attempts = counts.attempts();
    if attempts < MIN_ATTEMPTS {
        return Vec::new();
    }
    let mut out = Vec::new();
    let pick: [(AnomalySignal, Part); 2] = [
        (AnomalySignal::ErrorRate, |c| c.failed),
        (AnomalySignal::ResetRate, |c| c.reset),
    ];
    for (signal, part) in pick {
        let failures = part(counts);
        if failures < MIN_FAILURES {
            continue;
        }
        let reference = median(
            others()
                .filter(|c| c.attempts() >= MIN_ATTEMPTS)
                .map(|c| share(part(c), c.attempts())),
        );
        let Some(reference) = reference else {
            continue;
        };
        let value = share(failures, attempts);
        if value >= MIN_SHARE
            && value >= reference * RATE_FACTOR
            && value - reference >= RATE_MARGIN
        {
            out.push(Finding {
                subject: peer.clone(),
                signal,
                value,
                reference,
            });
        }
    }
    out
}

/// Ejected at least [`MIN_EJECTIONS`] times in the window (so its half-open probe failed too),
/// while the other peers this agent calls (at least one, with [`MIN_ATTEMPTS`] attempts) were
/// ejected far less. Outlier ejection stops a peer's failures after a handful, so a peer that
/// turns bad after serving well never reaches an anomalous error share: its earlier successes
/// outweigh the few failures in the window. Its repeated ejection is the evidence instead.
pub(super) fn ejection_finding<'a, I: Iterator<Item = &'a Counts>>(
    peer: &NodeId,
    counts: &Counts,
    others: impl Fn() -> I,
) -> Option<Finding> {
    if counts.ejected < MIN_EJECTIONS {
        return None;
    }
    let reference = median(
        others()
            .filter(|c| c.attempts() >= MIN_ATTEMPTS)
            .map(|c| f64::from(c.ejected)),
    )?;
    let value = f64::from(counts.ejected);
    (value >= reference * RATE_FACTOR && value - reference >= 1.0).then(|| Finding {
        subject: peer.clone(),
        signal: AnomalySignal::RepeatedEjection,
        value,
        reference,
    })
}

/// Violations and refusals, as rates per second over the window, far above the other peers'.
pub(super) fn count_findings<'a, I: Iterator<Item = &'a Counts>>(
    peer: &NodeId,
    counts: &Counts,
    others: impl Fn() -> I,
) -> Vec<Finding> {
    let window = OBSERVE_WINDOW.as_secs_f64();
    let mut out = Vec::new();
    let pick: [(AnomalySignal, u32, Part); 3] = [
        (AnomalySignal::HandshakeViolation, MIN_VIOLATIONS, |c| {
            c.handshake
        }),
        (AnomalySignal::ProtocolViolation, MIN_VIOLATIONS, |c| {
            c.protocol
        }),
        (AnomalySignal::PolicyRefusals, MIN_REFUSALS, |c| c.policy),
    ];
    for (signal, minimum, part) in pick {
        let count = part(counts);
        if count < minimum {
            continue;
        }
        let value = f64::from(count) / window;
        let reference = median(others().map(|c| f64::from(part(c)) / window)).unwrap_or(0.0);
        if value >= reference * RATE_FACTOR {
            out.push(Finding {
                subject: peer.clone(),
                signal,
                value,
                reference,
            });
        }
    }
    out
}

/// Recent traffic far above the peer's own history.
pub(super) fn surge_finding(peer: &NodeId, record: &PeerRecord, index: u64) -> Option<Finding> {
    let history = record.history.rate()?;
    if history < SURGE_HISTORY_FLOOR {
        return None;
    }
    let recent = f64::from(record.recent_served(index)) / SURGE_RECENT.as_secs_f64();
    (recent >= SURGE_FLOOR && recent >= history * SURGE_FACTOR).then(|| Finding {
        subject: peer.clone(),
        signal: AnomalySignal::TrafficSurge,
        value: recent,
        reference: history,
    })
}
