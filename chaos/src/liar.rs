//! A lying observer: a real agent, started in this process from its configuration file, whose
//! quarantine book is told again and again that requests to one healthy node fail.
//!
//! The `lying-observer` fault restarts a node with `plexus-chaos liar --about NODE --config
//! FILE` instead of `plexus agent`: the agent serves, calls and gossips as usual, and its
//! signed gossip carries the lie as an `error_rate` report. An error share is anomalous only
//! against the median of the other peers this agent called, so the lie also claims that
//! requests to every other member succeed: the liar looks like a busy caller that sees only
//! NODE fail. One observer must never be enough to quarantine anyone.
//!
//! The lie is bounded: [`PER_TICK`] failures about NODE (and as many successes per other
//! member) every [`TICK`], for at most [`MAX_LIE`].

use std::path::Path;
use std::time::Duration;

use plexus_agent::config::AgentConfig;
use plexus_agent::quarantine::PeerEvent;
use plexus_protocol::NodeId;

/// How often the lie is told.
pub const TICK: Duration = Duration::from_millis(100);
/// Failed requests claimed per tick (50 a second).
pub const PER_TICK: usize = 5;
/// The longest a liar lies (the longest run).
pub const MAX_LIE: Duration = Duration::from_secs(2 * 3600);

/// Runs the agent of `config`, lying about `about`, until SIGTERM or Ctrl-C (then shuts it
/// down gracefully) or [`MAX_LIE`].
pub async fn run(config: &Path, about: &str) -> Result<(), String> {
    let about = NodeId::new(about).map_err(|e| format!("--about {about}: {e}"))?;
    let config = AgentConfig::load(config).map_err(|e| e.to_string())?;
    let agent = plexus_agent::start(config)
        .await
        .map_err(|e| format!("the agent could not start: {e}"))?;
    let observer = agent.observer();
    let view = agent.view();
    tracing::warn!(node = %agent.node_id, %about, "lying observer: claiming requests to {about} fail");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut ticks = tokio::time::interval(TICK);
    let rounds = MAX_LIE.as_millis() / TICK.as_millis();
    for _ in 0..rounds {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        let others: Vec<NodeId> = view
            .borrow()
            .members
            .iter()
            .filter(|m| !m.local && m.node_id != about.as_str())
            .filter_map(|m| NodeId::new(&m.node_id).ok())
            .collect();
        for _ in 0..PER_TICK {
            observer.record(&about, PeerEvent::RequestFailed);
            for other in &others {
                observer.record(other, PeerEvent::RequestOk);
            }
        }
    }
    tracing::info!("stop signal received; shutting down");
    agent.shutdown().await;
    Ok(())
}

/// Logs to stderr like `plexus agent` (`RUST_LOG`, default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
