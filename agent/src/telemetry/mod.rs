//! Counters and gauges of one agent, exported as Prometheus text.
//!
//! Each agent owns its own recorder instead of installing a process-global one: several agents
//! can then run in one process (tests, `plexus demo`, benchmarks) and still report their own
//! numbers. Code registers a handle once (a `metrics::Counter`) and bumps it on the hot path,
//! which is a single atomic add.

mod host;
mod load;
pub mod otlp;
mod window;

pub use host::{HostSampler, HostUsage};
pub use load::{Admitted, EdgeReading, HostedReading, LoadBook, LOAD_WINDOW};
pub use window::{RequestWindow, WindowReading};

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Metric names, kept together so the exported surface is easy to review.
pub mod names {
    pub const HANDSHAKE_FAILURES: &str = "plexus_handshake_failures_total";
    pub const CONNECTIONS: &str = "plexus_connections_total";
    pub const CONNECTIONS_OPEN: &str = "plexus_connections_open";
    pub const STREAMS: &str = "plexus_streams_total";
    pub const STREAMS_REFUSED: &str = "plexus_streams_refused_total";
    pub const STREAMS_OPEN: &str = "plexus_streams_open";
    pub const BYTES: &str = "plexus_proxy_bytes_total";
    pub const DIAL_FAILURES: &str = "plexus_dial_failures_total";
    pub const GOSSIP_LIVE_PEERS: &str = "plexus_gossip_live_peers";
    pub const GOSSIP_BYTES: &str = "plexus_gossip_bytes_total";
    pub const GOSSIP_MESSAGES: &str = "plexus_gossip_messages_total";
    pub const GOSSIP_REJECTED: &str = "plexus_gossip_rejected_total";
    pub const GOSSIP_SUMMARY_BYTES: &str = "plexus_gossip_summary_bytes";
    pub const GOSSIP_TRANSITIONS: &str = "plexus_gossip_member_transitions_total";
    pub const SERVICE_READY: &str = "plexus_service_ready";
    pub const REQUESTS: &str = "plexus_requests_total";
    pub const REQUEST_DURATION: &str = "plexus_request_duration_seconds";
    pub const ATTEMPTS: &str = "plexus_request_attempts_total";
    pub const RESPONSE_BYTES: &str = "plexus_response_bytes_total";
    pub const RETRIES: &str = "plexus_retries_total";
    pub const RETRY_BUDGET_EXHAUSTED: &str = "plexus_retry_budget_exhausted_total";
    pub const HEDGES: &str = "plexus_hedges_total";
    pub const EJECTIONS: &str = "plexus_ejections_total";
    pub const ENDPOINT_EJECTED: &str = "plexus_endpoint_ejected";
    pub const CONCURRENCY_LIMIT: &str = "plexus_concurrency_limit";
    pub const SHED: &str = "plexus_shed_total";
    pub const HTTP_STREAMS_OPENED: &str = "plexus_http_streams_opened_total";
    pub const SPANS_EXPORTED: &str = "plexus_spans_exported_total";
    pub const SPANS_DROPPED: &str = "plexus_spans_dropped_total";
    pub const RAFT_TERM: &str = "plexus_raft_term";
    pub const RAFT_IS_LEADER: &str = "plexus_raft_is_leader";
    pub const RAFT_COMMIT_INDEX: &str = "plexus_raft_commit_index";
    pub const RAFT_APPLIED_INDEX: &str = "plexus_raft_applied_index";
    pub const RAFT_VOTERS: &str = "plexus_raft_voters";
    pub const RAFT_MESSAGES_DROPPED: &str = "plexus_raft_messages_dropped_total";
    pub const PROPOSALS: &str = "plexus_decision_proposals_total";
    pub const DECISIONS_APPLIED: &str = "plexus_decisions_applied_total";
    pub const COMMITTED_WEIGHT: &str = "plexus_committed_weight";
    pub const SCALING_HINT: &str = "plexus_scaling_desired_replicas";
    pub const CANARY_SHARE: &str = "plexus_canary_share_percent";
    pub const QUARANTINED_NODES: &str = "plexus_quarantined_nodes";
    pub const QUARANTINE_REPORTS: &str = "plexus_quarantine_reports";
    pub const QUARANTINE_VERDICTS: &str = "plexus_quarantine_verdicts_total";
    pub const POLICY_REFUSALS: &str = "plexus_policy_refusals_total";
    /// Calls the caller's agent refused itself, repeating a serving agent's refusal.
    pub const POLICY_REFUSALS_CACHED: &str = "plexus_policy_refusals_cached_total";
    pub const CERT_EXPIRY: &str = "plexus_certificate_expiry_timestamp_seconds";
    pub const CERT_RENEWALS: &str = "plexus_certificate_renewals_total";
    pub const TRUSTED_ROOTS: &str = "plexus_trusted_roots";
    pub const LEADER_REQUESTS: &str = "plexus_leader_requests_total";
}

/// An agent's metric registry and its Prometheus renderer.
#[derive(Clone)]
pub struct Telemetry {
    recorder: std::sync::Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

/// Histogram buckets (seconds) for request latency.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 30.0,
];

static METADATA: Metadata<'static> = Metadata::new("plexus", Level::INFO, Some(module_path!()));

impl Telemetry {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let telemetry = Self {
            recorder: std::sync::Arc::new(recorder),
            handle,
        };
        telemetry.describe();
        telemetry
    }

    fn describe(&self) {
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            self.recorder
                .describe_counter(name.into(), unit, SharedString::const_str(help));
        };
        describe(
            names::HANDSHAKE_FAILURES,
            None,
            "TLS/QUIC handshakes refused, by direction and reason",
        );
        describe(
            names::CONNECTIONS,
            None,
            "QUIC connections established, by direction",
        );
        describe(
            names::STREAMS,
            None,
            "proxied streams, by direction, service and outcome",
        );
        describe(
            names::STREAMS_REFUSED,
            None,
            "proxied streams refused, by service and reason",
        );
        describe(
            names::BYTES,
            Some(Unit::Bytes),
            "bytes proxied, by service and direction",
        );
        describe(
            names::DIAL_FAILURES,
            None,
            "failed dials to peers, by peer address",
        );
        describe(
            names::GOSSIP_BYTES,
            Some(Unit::Bytes),
            "gossip bytes sent and received (frames included), by direction",
        );
        describe(
            names::GOSSIP_MESSAGES,
            None,
            "gossip messages sent and received, by direction",
        );
        describe(
            names::GOSSIP_REJECTED,
            None,
            "gossip input refused or dropped, by reason",
        );
        describe(
            names::GOSSIP_TRANSITIONS,
            None,
            "membership state changes seen by this agent, by new state",
        );
        for (name, help) in [
            (
                names::GOSSIP_LIVE_PEERS,
                "peers this agent sees alive (itself excluded)",
            ),
            (
                names::GOSSIP_SUMMARY_BYTES,
                "size of this node's published gossip values, by key",
            ),
            (
                names::SERVICE_READY,
                "1 when a hosted service passes its readiness probe",
            ),
        ] {
            self.recorder
                .describe_gauge(name.into(), None, SharedString::const_str(help));
        }
        self.recorder.describe_gauge(
            names::CONNECTIONS_OPEN.into(),
            None,
            "QUIC connections currently open, by direction".into(),
        );
        self.recorder.describe_gauge(
            names::STREAMS_OPEN.into(),
            None,
            "proxied streams currently open, by direction".into(),
        );
    }

    /// A counter handle for `name` with `labels`; keep it if it is bumped often.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// A histogram handle for `name` with `labels` (seconds; buckets from 100 µs to 30 s).
    pub fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
    ) -> metrics::Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// A gauge handle for `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// Counts one handshake refused for `reason`, in `direction` (`inbound` or `outbound`).
    pub fn handshake_failed(&self, direction: &'static str, reason: &str) {
        self.counter(
            names::HANDSHAKE_FAILURES,
            &[("direction", direction), ("reason", reason)],
        )
        .increment(1);
    }

    /// Folds recorded histogram samples into their buckets. The exporter keeps raw samples
    /// until then, so without a scrape they would pile up: the agent runs this every few
    /// seconds ([`Telemetry::keep_up`]).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs [`Telemetry::upkeep`] every `every` until the future is dropped.
    pub async fn keep_up(self, every: std::time::Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.upkeep();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

/// A gauge raised while a value of this type lives: counts open connections and streams.
pub struct OpenGuard(Gauge);

impl OpenGuard {
    pub fn new(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_keep_separate_counts() {
        let a = Telemetry::new();
        let b = Telemetry::new();
        a.handshake_failed("inbound", "unknown_ca");
        a.handshake_failed("inbound", "unknown_ca");
        let text = a.render();
        assert!(text.contains(
            "plexus_handshake_failures_total{direction=\"inbound\",reason=\"unknown_ca\"} 2"
        ));
        assert!(!b.render().contains("unknown_ca"));
    }

    #[test]
    fn open_guard_tracks_lifetimes() {
        let t = Telemetry::new();
        let g1 = OpenGuard::new(t.gauge(names::STREAMS_OPEN, &[("direction", "inbound")]));
        let _g2 = OpenGuard::new(t.gauge(names::STREAMS_OPEN, &[("direction", "inbound")]));
        drop(g1);
        assert!(t
            .render()
            .contains("plexus_streams_open{direction=\"inbound\"} 1"));
    }
}
