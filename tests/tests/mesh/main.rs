//! Multi-node tests of Plexus with real agents, real sockets (127.0.0.1 only) and real TLS.
//! One test binary; each module covers one concern.

mod access;
mod chaos;
mod cli;
mod config_errors;
mod consensus;
mod dashboard;
mod decisions;
mod failures;
mod gossip;
mod http;
mod otlp;
mod proxy;
mod quarantine;
mod restart;
mod tls;
mod trust;

use std::time::Duration;

/// Bound on waiting for anything that happens over loopback.
pub const PATIENCE: Duration = Duration::from_secs(15);
