//! What a running agent offers its owner: its addresses and views, a reload of the parts that
//! can change without a restart, and a clean shutdown (drain, leave, close).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::{RunningAgent, CLOSE_GRACE, DRAIN_DEADLINE, DRAIN_POLL, HAND_OVER_GRACE, LEAVE_GRACE};
use crate::config::AgentConfig;
use crate::gossip::MeshView;

impl RunningAgent {
    /// The bound listener of the first upstream for `service`.
    pub fn upstream_addr(&self, service: &str) -> Option<SocketAddr> {
        self.upstream_addrs
            .iter()
            .find(|(s, _)| s.as_str() == service)
            .map(|(_, a)| *a)
    }

    /// The mesh as this agent sees it, updated live.
    pub fn view(&self) -> watch::Receiver<Arc<MeshView>> {
        self.gossip.view()
    }

    /// Where this agent's data plane reports peer events (quarantine's evidence).
    pub fn observer(&self) -> crate::quarantine::PeerObserver {
        self.observer.clone()
    }

    /// Applies what a reloaded configuration may change while running: the `[[policy]]` and
    /// `[access]` this agent proposes when it leads, its certificate (a new leaf for the same
    /// key, served from the next handshake on) and, while the decision log holds no roots, the
    /// roots of `tls.ca`. Established connections stay. Everything else needs a restart.
    /// Returns a line saying what changed, for the log.
    pub fn reload(&self, config: &AgentConfig) -> String {
        let mut applied = Vec::new();
        let changed = self.access_config.send_if_modified(|current| {
            let modified = *current != config.access;
            *current = config.access.clone();
            modified
        });
        applied.push(match (changed, &config.access) {
            (false, _) => "access policy unchanged".to_owned(),
            (true, None) => "no access policy configured: this agent proposes none".to_owned(),
            (true, Some(policy)) => format!(
                "access policy reloaded ({} rules, default {}); proposed when this agent leads",
                policy.rules.len(),
                policy.default.label()
            ),
        });
        let serving = self.state.credentials.info();
        if config.node_id != self.node_id {
            applied.push(format!(
                "certificate not reloaded: node_id {} differs from the running {} (restart)",
                config.node_id, self.node_id
            ));
        } else if config.credentials.info.serial != serving.serial
            && config.credentials.info.not_after <= serving.not_after
        {
            applied.push(format!(
                "certificate not reloaded: the configured leaf ({}) expires before the one \
                 served ({}, renewed)",
                config.credentials.info.serial, serving.serial
            ));
        } else if config.credentials.info.serial != serving.serial {
            applied.push(
                match self
                    .state
                    .credentials
                    .replace(config.credentials.chain.clone())
                {
                    Ok(info) => format!(
                        "certificate reloaded (serial {}, expires at unix {})",
                        info.serial, info.not_after
                    ),
                    Err(error) => {
                        format!("certificate not reloaded: {error} (a new key needs a restart)")
                    }
                },
            );
        }
        if self.consensus.state().trust.roots.is_empty() {
            match self.state.live_trust.configure(config.trust.certificates()) {
                Ok(true) => applied.push(format!(
                    "trust bundle reloaded from tls.ca ({} roots)",
                    config.trust.certificates().len()
                )),
                Ok(false) => {}
                Err(error) => applied.push(format!("trust bundle not reloaded: {error}")),
            }
        }
        applied.join("; ")
    }

    /// Requests and TCP connections in flight through this agent: served for peers (admitted
    /// to a local service) and carried for local apps.
    pub fn in_flight(&self) -> u64 {
        let served: u64 = self
            .state
            .load
            .hosted(Instant::now())
            .iter()
            .map(|h| u64::from(h.in_flight))
            .sum();
        let carried: u64 = self
            .state
            .routes
            .iter()
            .flat_map(|r| r.reading().endpoints)
            .map(|e| u64::from(e.in_flight))
            .sum();
        served + carried
    }

    /// Stops gracefully, the way SIGTERM does: hands leadership of the decision log over (when
    /// leading), announces a graceful leave to peers (they stop sending new work), turns
    /// `/readyz` to 503, stops accepting app connections, lets what is in flight finish within
    /// [`DRAIN_DEADLINE`], then closes peer connections (telling peers) and ends every task.
    pub async fn shutdown(mut self) {
        self.state.ready.store(false, Ordering::Release);
        self.consensus.hand_over(HAND_OVER_GRACE).await;
        self.gossip.leave(LEAVE_GRACE).await;
        let _ = self.draining.send(true);
        let deadline = Instant::now() + DRAIN_DEADLINE;
        let mut left = self.in_flight();
        while left > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
            left = self.in_flight();
        }
        if left > 0 {
            tracing::warn!(node = %self.node_id, in_flight = left, deadline = ?DRAIN_DEADLINE, "drain deadline passed; closing what is still in flight");
        }
        let _ = self.shutdown.send(true);
        self.gossip.shutdown().await;
        self.endpoint.close(0u32.into(), b"agent shutting down");
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(node = %self.node_id, "agent stopped");
    }
}
