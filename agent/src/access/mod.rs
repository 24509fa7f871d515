//! Access policy: which services may call which, committed through the decision log and
//! enforced by every serving agent from the caller's certificate.
//!
//! ```text
//! [[policy]] + [access] ─ config ─▶ leader: PolicyProposer ─▶ DecisionKind::Policy ─▶ log
//! committed policy + gossip view (what each node hosts) ─▶ AccessTable (per caller node)
//! peer stream (node ID from its certificate) ─▶ AccessGate::check ─▶ allowed │ Denied
//!   Denied: TCP OpenReply::Refused(PolicyDenied) │ HTTP 403 `plexus-error: policy_denied`,
//!           plexus_policy_refusals_total{service,caller}, PeerEvent::PolicyRefusal, a log line
//! ```
//!
//! - [`rules`]: precedence order and one-line texts of rules.
//! - [`propose`]: the leader's side, pure: propose the configured policy when the committed one
//!   differs; agents without policy configuration propose nothing.
//! - [`table`]: the serving side's precomputed decisions per caller node, rebuilt off the
//!   request path when the committed policy or a node's hosted services change.
//! - [`refusal`]: a refused call as one line, and the per-pair log rate limit.
//!
//! **Why decide by the services a node hosts.** Certificates name nodes, policies name
//! services. A node's services are the ones its signed gossip summary lists: the node's own
//! statement, signed with the key of the certificate the stream was verified with. A node
//! that hosts nothing matches only rules with any source (`from = "*"` or omitted); one that
//! the view does not know yet is judged the same way.

pub mod propose;
pub mod refusal;
pub mod rules;
pub mod table;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use plexus_protocol::{CommittedState, NodeId, PolicyAction, ServiceName};
use serde_json::json;
use tokio::sync::watch;

pub use propose::PolicyProposer;
pub use refusal::Denied;

use crate::config::AgentConfig;
use crate::consensus::Consensus;
use crate::gossip::MeshView;
use crate::quarantine::{PeerEvent, PeerObserver};
use crate::telemetry::{names, Telemetry};
use refusal::RefusalLog;
use table::{caller_services, AccessTable, CallerServices};

/// The serving agent's access check: cheap on the request path (a read lock and a hash
/// lookup), with refusals counted, logged (rate limited) and reported to quarantine.
pub struct AccessGate {
    table: RwLock<AccessTable>,
    hosted: Vec<ServiceName>,
    observer: PeerObserver,
    telemetry: Telemetry,
    log: Mutex<RefusalLog>,
}

impl AccessGate {
    /// The gate of an agent hosting the services of `config`, and the task that keeps it
    /// current with the committed state and the view (until `shutdown`).
    pub fn start(
        config: &AgentConfig,
        observer: PeerObserver,
        telemetry: &Telemetry,
        consensus: &Consensus,
        view: watch::Receiver<Arc<MeshView>>,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let committed = consensus.watch_state();
        let gate = Arc::new(Self::new(
            config.services.iter().map(|s| s.name.clone()).collect(),
            observer,
            telemetry.clone(),
            &committed.borrow(),
            caller_services(&view.borrow()),
        ));
        let follow = gate.clone().follow(committed, view, shutdown);
        (gate, follow)
    }

    /// A gate for the services this agent `hosted`, enforcing `committed`'s policy on
    /// `callers` (what each node hosts, from the view: [`table::caller_services`]).
    pub fn new(
        hosted: Vec<ServiceName>,
        observer: PeerObserver,
        telemetry: Telemetry,
        committed: &CommittedState,
        callers: CallerServices,
    ) -> Self {
        let table = AccessTable::build(
            &committed.trust.policy,
            committed.applied_index,
            callers,
            &hosted,
        );
        Self {
            table: RwLock::new(table),
            hosted,
            observer,
            telemetry,
            log: Mutex::default(),
        }
    }

    /// Whether `caller` (the node its certificate names) may call the local `service`.
    pub fn check(&self, caller: &NodeId, service: &ServiceName) -> Result<(), Denied> {
        // Every call from a peer passes here: its traffic, for quarantine's surge detection.
        self.observer.record(caller, PeerEvent::Served);
        let denied = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            match table.decide(caller, service) {
                (PolicyAction::Allow, _) => return Ok(()),
                (PolicyAction::Deny, services) => Denied {
                    caller: caller.clone(),
                    caller_services: services.to_vec(),
                    service: service.clone(),
                },
            }
        };
        self.refused(&denied);
        Err(denied)
    }

    fn refused(&self, denied: &Denied) {
        self.telemetry
            .counter(
                names::POLICY_REFUSALS,
                &[
                    ("service", denied.service.as_str()),
                    ("caller", denied.caller.as_str()),
                ],
            )
            .increment(1);
        self.observer
            .record(&denied.caller, PeerEvent::PolicyRefusal);
        let noted = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(&denied.caller, &denied.service, Instant::now());
        if let Some(unlogged) = noted {
            tracing::info!(
                caller = %denied.caller,
                service = %denied.service,
                unlogged_since_last = unlogged,
                "call refused: {denied}"
            );
        }
    }

    /// Rebuilds the table when the committed policy or the callers' services changed.
    pub fn refresh(&self, committed: &CommittedState, callers: CallerServices) {
        let policy = &committed.trust.policy;
        let new_policy = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            if table.built_from(policy, &callers) {
                return;
            }
            table.policy() != policy
        };
        if new_policy {
            tracing::info!(
                default = policy.default.label(),
                rules = policy.rules.len(),
                applied_index = committed.applied_index,
                "enforcing the committed access policy"
            );
        }
        let table = AccessTable::build(policy, committed.applied_index, callers, &self.hosted);
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
    }

    /// Keeps the table current until `shutdown` (or either watch ends).
    pub async fn follow(
        self: Arc<Self>,
        mut committed: watch::Receiver<Arc<CommittedState>>,
        mut view: watch::Receiver<Arc<MeshView>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let state = committed.borrow_and_update().clone();
            let callers = caller_services(&view.borrow_and_update());
            self.refresh(&state, callers);
            tokio::select! {
                changed = committed.changed() => if changed.is_err() { return },
                changed = view.changed() => if changed.is_err() { return },
                _ = crate::agent::stopping(&mut shutdown) => return,
            }
        }
    }
}

/// `/v1/policy`: the committed policy (`default`, then `rules` in precedence order with `*`
/// for "any") and the applied index of the committed state it was read from.
pub fn policy_json(committed: &CommittedState) -> serde_json::Value {
    let policy = &committed.trust.policy;
    let rules: Vec<serde_json::Value> = rules::in_precedence_order(&policy.rules)
        .iter()
        .map(|r| {
            json!({
                "action": r.action.label(),
                "from": rules::name_or_any(r.from.as_ref()),
                "to": rules::name_or_any(r.to.as_ref()),
            })
        })
        .collect();
    json!({
        "default": policy.default.label(),
        "rules": rules,
        "applied_index": committed.applied_index,
    })
}

#[cfg(test)]
mod tests;
