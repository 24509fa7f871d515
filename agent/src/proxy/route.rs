//! The live state of one upstream: its endpoints with their balancing and ejection state, and
//! its retry budget. The pure policies live in [`crate::policy`]; this wraps them behind a lock,
//! feeds them the clock, follows gossip's endpoint list and turns transitions into logs and
//! metrics. Shared by the TCP and HTTP paths and read by `/v1/routes`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use plexus_protocol::{AccessPolicy, AppProtocol, NodeId, ServiceName};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Upstream;
use crate::gossip::MeshView;
use committed::CommittedRouting;
use plexus_protocol::CommittedState;

pub mod committed;
mod reading;

use crate::policy::balance::BalanceConfig;
use crate::policy::outlier::Transition;
use crate::policy::retry::RetryBudget;
use crate::policy::route::EndpointSet;
use crate::policy::Outcome;
use crate::quarantine::{PeerEvent, PeerObserver};
use crate::telemetry::{names, Telemetry};
pub use reading::{BudgetJson, EndpointJson, RouteReading};

struct RouteState {
    endpoints: EndpointSet,
    /// The decision log's committed state, once the agent follows it.
    committed: Option<watch::Receiver<Arc<CommittedState>>>,
    routing: CommittedRouting,
    budget: RetryBudget,
    rng: SmallRng,
    view: watch::Receiver<Arc<MeshView>>,
    /// Latency of successful attempts (µs), for the hedging delay; reset every minute.
    latency: Histogram<u64>,
    latency_since: Instant,
    /// Where each attempt's outcome is reported about its endpoint's node (quarantine).
    observer: Option<PeerObserver>,
    /// The node behind each endpoint address, from gossip.
    nodes: HashMap<SocketAddr, NodeId>,
    /// The last access-policy refusal, repeated locally while it holds.
    denial: Option<Denial>,
}

/// A serving agent refused this node the service under the committed `policy`: every endpoint
/// enforces the same policy, so until it changes (or [`DENIAL_TTL`] passes, in case the
/// services this node hosts changed) the caller's agent answers its app itself. The serving
/// agents then see one refusal per policy, not one per app request: a correct caller is no
/// anomaly, one that keeps calling against a refusal is.
#[derive(Debug, Clone)]
struct Denial {
    policy: AccessPolicy,
    at: Instant,
    /// The serving agent's answer (HTTP), repeated word for word.
    answer: bytes::Bytes,
}

/// How long a refusal is repeated locally under an unchanged committed policy.
pub const DENIAL_TTL: Duration = Duration::from_secs(30);

/// One upstream's routing state.
pub struct Route {
    upstream: Upstream,
    telemetry: Telemetry,
    state: Mutex<RouteState>,
    /// Requests waiting for discovery now.
    waiting: AtomicUsize,
}

const LATENCY_RESET: Duration = Duration::from_secs(60);
/// How long a request waits for discovery when the upstream has no endpoint at all (an agent
/// that has just started, before gossip has told it anything), before it is answered
/// `no_endpoint`; Linkerd's balancer waits for endpoints in the same way before failing fast.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(3);
/// Requests that may wait for discovery at once, per upstream (each holds its buffered body).
pub const MAX_DISCOVERY_WAITERS: usize = 256;

/// Counts a request waiting for discovery while it lives.
struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Route {
    pub fn new(
        upstream: Upstream,
        telemetry: Telemetry,
        view: watch::Receiver<Arc<MeshView>>,
    ) -> Self {
        let now = Instant::now();
        let mut endpoints = EndpointSet::new(BalanceConfig::default(), upstream.outlier, now);
        let initial = endpoint_list(&upstream, &view.borrow());
        endpoints.sync(&initial, now);
        let nodes = node_map(&view.borrow());
        let seed = rand::rng().random();
        let state = RouteState {
            endpoints,
            committed: None,
            routing: CommittedRouting::default(),
            budget: RetryBudget::new(upstream.requests.retry_budget, now),
            rng: SmallRng::seed_from_u64(seed),
            view,
            latency: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds"),
            latency_since: now,
            observer: None,
            nodes,
            denial: None,
        };
        Self {
            upstream,
            telemetry,
            state: Mutex::new(state),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Follows the decision log: committed weights scale the balancer, a canary's share splits
    /// attempts between versions.
    /// Quarantined nodes leave the endpoint set.
    pub fn follow_decisions(&self, committed: watch::Receiver<Arc<CommittedState>>) {
        let mut state = self.lock();
        state.committed = Some(committed);
        self.resync(&mut state, Instant::now());
    }

    /// Reports each attempt's outcome about its endpoint's node to quarantine's observer.
    pub fn observe_peers(&self, observer: PeerObserver) {
        self.lock().observer = Some(observer);
    }

    /// Takes gossip's endpoint list (minus quarantined nodes) and the committed routing anew.
    fn resync(&self, state: &mut RouteState, now: Instant) {
        let view = state.view.borrow_and_update().clone();
        let mut list = endpoint_list(&self.upstream, &view);
        if let Some(committed) = &state.committed {
            let denied = committed::quarantined_addresses(&view, &committed.borrow());
            list.retain(|addr| !denied.contains(addr));
        }
        state.endpoints.sync(&list, now);
        state.nodes = node_map(&view);
        // A re-synced endpoint set starts at full weight: reapply what is committed.
        state.routing = CommittedRouting::default();
        self.apply_committed(state, &view);
    }

    fn apply_committed(&self, state: &mut RouteState, view: &MeshView) {
        let Some(committed) = state.committed.as_mut() else {
            return;
        };
        let decided = committed.borrow_and_update().clone();
        let routing = committed::plan(&self.upstream.service, view, &decided);
        if routing == state.routing {
            return;
        }
        for (addr, weight) in &routing.weights {
            state.endpoints.set_weight(*addr, *weight);
            self.telemetry
                .gauge(
                    names::COMMITTED_WEIGHT,
                    &[
                        ("service", self.upstream.service.as_str()),
                        ("endpoint", &addr.to_string()),
                    ],
                )
                .set(*weight);
        }
        state.routing = routing;
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub fn service(&self) -> &ServiceName {
        &self.upstream.service
    }

    fn lock(&self) -> MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How to carry a new app connection: as configured, else as gossip says the service
    /// speaks, else TCP.
    pub fn protocol(&self) -> AppProtocol {
        match self.upstream.protocol {
            Some(p) => p.wire(),
            None => self
                .lock()
                .view
                .borrow()
                .protocol(&self.upstream.service)
                .unwrap_or(AppProtocol::Tcp),
        }
    }

    /// Waits, at most `limit`, until the upstream has at least one endpoint (static ones, or
    /// routable ones from gossip); returns at once when it has. Returns whether it has.
    ///
    /// The common case costs one lock: the endpoint set is not empty. At most
    /// [`MAX_DISCOVERY_WAITERS`] requests wait at once; the rest are answered at once.
    pub async fn discovered(&self, limit: Duration) -> bool {
        let mut view = {
            let mut state = self.lock();
            self.refresh(&mut state, Instant::now());
            if !state.endpoints.is_empty() {
                return true;
            }
            state.view.clone()
        };
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiter = Waiter(&self.waiting);
        if waiting >= MAX_DISCOVERY_WAITERS {
            return false;
        }
        let has = |view: &MeshView| !endpoint_list(&self.upstream, view).is_empty();
        tokio::time::timeout(limit, view.wait_for(|v| has(v)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Chooses an endpoint for an attempt, avoiding `exclude`; `None` when none may take it.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        self.refresh(state, now);
        let rng = &mut state.rng;
        if let Some(split) = &state.routing.split {
            let draw: u8 = rng.random_range(0..100);
            let mut avoid = exclude.to_vec();
            avoid.extend_from_slice(split.exclude(draw));
            if let Some(addr) = state
                .endpoints
                .pick(now, |n| rng.random_range(0..n), &avoid)
            {
                return Some(addr);
            }
        }
        state
            .endpoints
            .pick(now, |n| rng.random_range(0..n), exclude)
    }

    /// Records how an attempt to `addr` ended.
    pub fn finish(&self, addr: SocketAddr, rtt: Duration, outcome: Outcome) {
        let now = Instant::now();
        let mut state = self.lock();
        if outcome == Outcome::Success {
            let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            if now.saturating_duration_since(state.latency_since) >= LATENCY_RESET {
                state.latency.reset();
                state.latency_since = now;
            }
            let _ = state.latency.record(micros.min(60_000_000));
        }
        if let (Some(observer), Some(event)) = (&state.observer, peer_event(outcome)) {
            if let Some(node) = state.nodes.get(&addr) {
                observer.record(node, event);
            }
        }
        if let Some(transition) = state.endpoints.finish(addr, now, rtt, outcome) {
            let peer = peer_of(&state, addr);
            drop(state);
            self.transition(addr, transition, peer);
        }
    }

    /// Remembers that a serving agent refused this node the service (its `answer`, for HTTP).
    pub fn remember_denial(&self, answer: bytes::Bytes) {
        let mut state = self.lock();
        let policy = committed_policy(&state);
        state.denial = Some(Denial {
            policy,
            at: Instant::now(),
            answer,
        });
    }

    /// The refusal to repeat now, while the committed policy is the one it was given under
    /// and it is younger than [`DENIAL_TTL`]; counted as `plexus_policy_refusals_cached_total`.
    pub fn denied(&self) -> Option<bytes::Bytes> {
        let mut state = self.lock();
        let denial = state.denial.as_ref()?;
        if denial.at.elapsed() >= DENIAL_TTL || denial.policy != committed_policy(&state) {
            state.denial = None;
            return None;
        }
        let answer = denial.answer.clone();
        drop(state);
        self.telemetry
            .counter(
                names::POLICY_REFUSALS_CACHED,
                &[("service", self.upstream.service.as_str())],
            )
            .increment(1);
        Some(answer)
    }

    /// How many endpoints the upstream has now.
    pub fn endpoint_count(&self) -> usize {
        self.lock().endpoints.len()
    }

    /// An original request (not a retry) starts: it adds to the retry budget.
    pub fn request(&self) {
        self.lock().budget.request(Instant::now());
    }

    /// Spends one retry if the budget allows.
    pub fn try_retry(&self) -> bool {
        self.lock().budget.try_retry(Instant::now())
    }

    /// The p95 of recent successful attempts, once there are enough of them.
    pub fn p95(&self) -> Option<Duration> {
        let state = self.lock();
        (state.latency.len() >= 20)
            .then(|| Duration::from_micros(state.latency.value_at_quantile(0.95)))
    }

    /// Logs and counts an endpoint's transition; an ejection is also an observation about its
    /// node (`peer`), for quarantine: a node ejected again after its probe keeps failing.
    fn transition(
        &self,
        addr: SocketAddr,
        transition: Transition,
        peer: Option<(NodeId, PeerObserver)>,
    ) {
        let service = self.upstream.service.as_str();
        let endpoint = addr.to_string();
        match transition {
            Transition::Ejected(reason) => {
                if let Some((node, observer)) = peer {
                    observer.record(&node, PeerEvent::Ejected);
                }
                tracing::warn!(%service, %endpoint, reason = reason.label(), "endpoint ejected");
                self.telemetry
                    .counter(
                        names::EJECTIONS,
                        &[
                            ("service", service),
                            ("endpoint", &endpoint),
                            ("reason", reason.label()),
                        ],
                    )
                    .increment(1);
            }
            Transition::Probing => {
                tracing::info!(%service, %endpoint, "ejection over; probing endpoint");
            }
            Transition::Returned => {
                tracing::info!(%service, %endpoint, "endpoint returned after a successful probe");
            }
        }
        let ejected = !matches!(transition, Transition::Returned);
        self.telemetry
            .gauge(
                names::ENDPOINT_EJECTED,
                &[("service", service), ("endpoint", &endpoint)],
            )
            .set(if ejected { 1.0 } else { 0.0 });
    }

    /// This upstream as `/v1/routes` shows it.
    /// Follows gossip's endpoint list (when it changed) and lets ejections run out.
    fn refresh(&self, state: &mut RouteState, now: Instant) {
        let view_changed = state.view.has_changed().unwrap_or(false);
        let committed_changed = state
            .committed
            .as_ref()
            .is_some_and(|c| c.has_changed().unwrap_or(false));
        if view_changed || committed_changed {
            self.resync(state, now);
        }
        for (addr, transition) in state.endpoints.tick(now) {
            let peer = peer_of(state, addr);
            self.transition(addr, transition, peer);
        }
    }
}

/// The access policy this agent has applied (the default before any is committed).
fn committed_policy(state: &RouteState) -> AccessPolicy {
    state
        .committed
        .as_ref()
        .map(|c| c.borrow().trust.policy.clone())
        .unwrap_or_default()
}

/// The node behind `addr` and the observer to tell about it, when both are known.
fn peer_of(state: &RouteState, addr: SocketAddr) -> Option<(NodeId, PeerObserver)> {
    Some((state.nodes.get(&addr)?.clone(), state.observer.clone()?))
}

/// What an attempt's outcome says about the endpoint's node, for quarantine: answers and
/// failures count, sheds and cancellations say nothing about it.
fn peer_event(outcome: Outcome) -> Option<PeerEvent> {
    match outcome {
        Outcome::Success => Some(PeerEvent::RequestOk),
        Outcome::Failure | Outcome::Timeout => Some(PeerEvent::RequestFailed),
        Outcome::ConnectFailure => Some(PeerEvent::Reset),
        Outcome::Overloaded | Outcome::Cancelled => None,
    }
}

fn node_map(view: &MeshView) -> HashMap<SocketAddr, NodeId> {
    view.members
        .iter()
        .filter_map(|m| Some((m.address, NodeId::new(m.node_id.as_str()).ok()?)))
        .collect()
}

/// The static override, or the agents gossip says serve the service (live, not leaving,
/// ready), sorted by node ID.
fn endpoint_list(upstream: &Upstream, view: &MeshView) -> Vec<SocketAddr> {
    if upstream.endpoints.is_empty() {
        view.endpoints(&upstream.service)
    } else {
        upstream.endpoints.clone()
    }
}
