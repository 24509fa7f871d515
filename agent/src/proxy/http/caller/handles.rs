//! The metric handles an upstream's requests touch, looked up once instead of by labels on
//! every request (a lookup builds and hashes a label set, with an allocation per label).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use hyper::StatusCode;
use metrics::{Counter, Histogram};

use crate::policy::Outcome;
use crate::telemetry::{names, Telemetry};

/// Status classes as labelled, `1xx` to `5xx`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Who made an answer: the service, or the agent itself (`plexus-error`).
const SOURCES: [&str; 2] = ["service", "agent"];

/// One attempt's counter and duration histogram.
#[derive(Clone)]
pub struct AttemptMetrics {
    pub attempts: Counter,
    pub duration: Histogram,
}

/// The handles of one `[[upstream]]`, labelled `direction = "outbound"` and its service. Each
/// is made on first use, so `/metrics` shows only series that have counted something, as a
/// lookup per request did.
pub struct CallerMetrics {
    telemetry: Telemetry,
    service: String,
    /// Requests as the app sees them, by status class and source.
    requests: [[OnceLock<Counter>; 2]; 5],
    response_bytes: OnceLock<Counter>,
    /// Attempts by endpoint and outcome: an entry per endpoint ever tried and outcome seen,
    /// as many as the registry itself keeps.
    attempts: Mutex<HashMap<(SocketAddr, Outcome), AttemptMetrics>>,
}

impl CallerMetrics {
    pub fn new(telemetry: Telemetry, service: &str) -> Self {
        Self {
            telemetry,
            service: service.to_owned(),
            requests: Default::default(),
            response_bytes: OnceLock::new(),
            attempts: Mutex::default(),
        }
    }

    /// The counter of answers to the app with `status`, made by the agent or the service.
    pub fn request(&self, status: StatusCode, agent_made: bool) -> &Counter {
        let class = status_class(status);
        let source = usize::from(agent_made);
        self.requests[class][source].get_or_init(|| {
            self.telemetry.counter(
                names::REQUESTS,
                &[
                    ("direction", "outbound"),
                    ("service", self.service.as_str()),
                    ("status_class", STATUS_CLASSES[class]),
                    ("source", SOURCES[source]),
                ],
            )
        })
    }

    pub fn response_bytes(&self) -> Counter {
        self.response_bytes
            .get_or_init(|| {
                self.telemetry.counter(
                    names::RESPONSE_BYTES,
                    &[
                        ("direction", "outbound"),
                        ("service", self.service.as_str()),
                    ],
                )
            })
            .clone()
    }

    /// The handles for an attempt to `endpoint` that ended with `outcome`.
    pub fn attempt(&self, endpoint: SocketAddr, outcome: Outcome) -> AttemptMetrics {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        attempts
            .entry((endpoint, outcome))
            .or_insert_with(|| {
                let endpoint = endpoint.to_string();
                let labels = [
                    ("direction", "outbound"),
                    ("service", self.service.as_str()),
                    ("endpoint", endpoint.as_str()),
                    ("outcome", outcome.label()),
                ];
                AttemptMetrics {
                    attempts: self.telemetry.counter(names::ATTEMPTS, &labels),
                    duration: self.telemetry.histogram(names::REQUEST_DURATION, &labels),
                }
            })
            .clone()
    }
}

/// Index of `status`'s class in [`STATUS_CLASSES`].
fn status_class(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_under_the_labels_of_a_lookup() {
        let telemetry = Telemetry::new();
        let metrics = CallerMetrics::new(telemetry.clone(), "payments");
        assert!(
            !telemetry.render().contains("payments"),
            "no series before anything is counted"
        );
        let endpoint: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        metrics.request(StatusCode::OK, false).increment(2);
        metrics.request(StatusCode::BAD_GATEWAY, true).increment(1);
        metrics.response_bytes().increment(100);
        metrics
            .attempt(endpoint, Outcome::Success)
            .attempts
            .increment(1);
        metrics
            .attempt(endpoint, Outcome::Success)
            .attempts
            .increment(1);
        metrics
            .attempt(endpoint, Outcome::Timeout)
            .attempts
            .increment(1);
        let text = telemetry.render();
        for line in [
            r#"direction="outbound",service="payments",status_class="2xx",source="service"} 2"#,
            r#"direction="outbound",service="payments",status_class="5xx",source="agent"} 1"#,
            r#"direction="outbound",service="payments",endpoint="127.0.0.1:7000",outcome="success"} 2"#,
            r#"direction="outbound",service="payments",endpoint="127.0.0.1:7000",outcome="timeout"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
