//! The data plane's fast feedback loops as pure state machines: no sockets, no clocks of their
//! own, no tasks. The proxies feed them what happened (with the time it happened) and ask them
//! what to do; tests drive them with virtual time.
//!
//! - [`balance`]: power of two choices over peak-EWMA latency × in-flight ÷ weight.
//! - [`outlier`]: per-endpoint ejection (consecutive failures, success-rate outliers) with
//!   growing ejection times, a cap on the share ejected, and half-open probing.
//! - [`retry`]: the retry budget (a share of requests plus a floor per second).
//! - [`limit`]: the adaptive concurrency limit in front of each local service (gradient).
//! - [`route`]: one upstream's endpoints, combining balancing and ejection.

pub mod balance;
pub mod limit;
pub mod outlier;
pub mod retry;
pub mod route;

/// What became of one attempt to an endpoint, as the caller's agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// An answer that is not a server failure (1xx to 4xx, or a TCP stream that completed).
    Success,
    /// A 5xx answer (gateway errors included) or a stream that failed after it opened.
    Failure,
    /// The endpoint could not be reached: dial, handshake or stream open failed, or it reset.
    ConnectFailure,
    /// The serving agent shed the request (503 with `plexus-overloaded`): a signal to go
    /// elsewhere, not a fault of the endpoint.
    Overloaded,
    /// The caller stopped waiting (per-try timeout).
    Timeout,
    /// The caller no longer needed the answer (a hedge won, the app went away): says only that
    /// the endpoint took at least this long.
    Cancelled,
}

impl Outcome {
    /// Whether outlier detection counts this against the endpoint.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failure | Self::ConnectFailure | Self::Timeout)
    }

    /// A label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::ConnectFailure => "connect_failure",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}
