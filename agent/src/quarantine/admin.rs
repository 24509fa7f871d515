//! `/v1/quarantine`: the committed deny list with each verdict's evidence, this agent's own
//! current reports, and (on the leader) the nodes under suspicion.
//!
//! ```json
//! {"enabled": true, "leader": true,
//!  "settings": {"min_observers": null, "window_ms": 30000, "probation_ms": 60000, "max_share": 0.33},
//!  "quarantined": [{"node": "node-5", "since_ms": 1700000000000, "index": 42,
//!                   "reason": "node-5: error_rate reported by 3 distinct observers ...",
//!                   "observers": ["node-1", "node-2", "node-3"], "serials": ["7f3a..."],
//!                   "evidence": [{"observer": "node-1", "subject": "node-5",
//!                                 "signal": "error_rate", "value": 1.0, "reference": 0.0}]}],
//!  "reports": [{"subject": "node-5", "signal": "error_rate", "value": 1.0, "reference": 0.0,
//!               "since_ms": 1700000000000}],
//!  "suspicions": [{"node": "node-4", "observers": ["node-1"], "reports": [...],
//!                  "needed": 2, "talking": 3, "held": null}]}
//! ```
//!
//! A verdict's evidence lists one report per observer, in the order of `observers`.

use plexus_protocol::{CommittedState, PeerReport};
use serde_json::json;

use super::{PeerObserver, QuarantineSettings};

/// The `/v1/quarantine` document.
pub fn quarantine_json(
    state: &CommittedState,
    observer: &PeerObserver,
    settings: &QuarantineSettings,
    is_leader: bool,
) -> serde_json::Value {
    let quarantined: Vec<serde_json::Value> = state
        .trust
        .quarantined
        .iter()
        .map(|(node, record)| {
            let evidence: Vec<serde_json::Value> = record
                .evidence
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    json!({
                        "observer": record.observers.get(i),
                        "subject": e.subject,
                        "signal": e.signal,
                        "value": e.value,
                        "reference": e.reference,
                    })
                })
                .collect();
            json!({
                "node": node,
                "since_ms": record.since_ms,
                "index": record.index,
                "reason": record.reason,
                "observers": record.observers,
                "serials": record.serials,
                "evidence": evidence,
            })
        })
        .collect();
    json!({
        "enabled": settings.enabled,
        "leader": is_leader,
        "settings": {
            "min_observers": settings.min_observers,
            "window_ms": settings.window.as_millis() as u64,
            "probation_ms": settings.probation.as_millis() as u64,
            "max_share": settings.max_share,
        },
        "quarantined": quarantined,
        "reports": observer.reports().iter().map(report_json).collect::<Vec<_>>(),
        "suspicions": observer.suspicions().iter().map(|s| json!({
            "node": s.node,
            "observers": s.observers,
            "reports": s.reports.iter().map(report_json).collect::<Vec<_>>(),
            "needed": s.needed,
            "talking": s.talking,
            "held": s.held,
        })).collect::<Vec<_>>(),
    })
}

/// A report with its signal's label (`error_rate`), as evidence names it.
fn report_json(report: &PeerReport) -> serde_json::Value {
    json!({
        "subject": report.subject,
        "signal": report.signal.label(),
        "value": report.value,
        "reference": report.reference,
        "since_ms": report.since_ms,
    })
}
