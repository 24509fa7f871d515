//! The decisions a quarantine verdict proposes: a quarantine with its evidence, and an
//! operator's release.

use plexus_protocol::trust::MAX_OBSERVERS;
use plexus_protocol::{CommittedState, Decision, DecisionKind, Evidence, NodeId};

use super::Suspicion;
use crate::decide::Proposer;
use crate::gossip::view::Member;
use crate::quarantine::serial_hex;

pub(super) fn quarantine_decision(
    suspicion: &Suspicion,
    member: &Member,
    proposer: &Proposer,
) -> Decision {
    let node = &suspicion.node;
    let mut signals: Vec<&str> = suspicion.reports.iter().map(|r| r.signal.label()).collect();
    signals.sort_unstable();
    signals.dedup();
    let observers: Vec<NodeId> = suspicion
        .observers
        .iter()
        .take(MAX_OBSERVERS)
        .cloned()
        .collect();
    let reason = format!(
        "{node}: {} reported by {} distinct observers ({}); {} needed of {} peers that talk to it",
        signals.join(", "),
        suspicion.observers.len(),
        observers
            .iter()
            .map(NodeId::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        suspicion.needed,
        suspicion.talking,
    );
    // One piece of evidence per listed observer, in the same order: what it reported.
    let evidence = suspicion
        .reports
        .iter()
        .take(observers.len())
        .map(|r| Evidence {
            subject: r.subject.to_string(),
            signal: r.signal.label().to_owned(),
            value: f64::from(r.value),
            reference: Some(f64::from(r.reference)),
        })
        .collect();
    let serials = member
        .summary
        .as_ref()
        .filter(|s| !s.cert_serial.is_empty())
        .map(|s| vec![serial_hex(&s.cert_serial)])
        .unwrap_or_default();
    proposer.decision(
        DecisionKind::Quarantine {
            node: node.clone(),
            serials,
            observers,
        },
        reason,
        evidence,
    )
}

/// The operator's release of `node`: refused when it is not quarantined.
pub fn release_decision(
    state: &CommittedState,
    node: &NodeId,
    proposer: NodeId,
    now_ms: u64,
) -> Result<Decision, String> {
    let Some(record) = state.trust.quarantined.get(node) else {
        return Err(format!("{node} is not quarantined"));
    };
    let proposer = Proposer {
        node: proposer,
        now_ms,
    };
    Ok(proposer.decision(
        DecisionKind::Release { node: node.clone() },
        format!(
            "{node}: released by the operator (quarantined at log index {})",
            record.index
        ),
        Vec::new(),
    ))
}
