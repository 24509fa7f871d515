//! The Plexus mesh agent.
//!
//! See `ARCHITECTURE.md` at the repository root for how the modules fit together. In short:
//! [`config`] validates the TOML file, [`pki`] makes and checks certificates, [`transport`] owns
//! the mTLS QUIC endpoint and peer connections, [`proxy`] carries service bytes between local
//! TCP sockets and QUIC streams, [`decide`] holds the pure policies behind the slow decisions
//! the Raft leader proposes (weights, canary steps, scaling hints), [`admin`] serves health,
//! metrics and status over HTTP, and [`agent`] wires them together into a running node.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod agent;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod ctl;
pub mod decide;
pub mod demo;
pub mod gossip;
pub mod health;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod quarantine;
pub mod systemd;
pub mod telemetry;
pub mod transport;
pub mod trust;
pub mod worker;

pub use agent::{start, RunningAgent, StartError};
pub use config::AgentConfig;
