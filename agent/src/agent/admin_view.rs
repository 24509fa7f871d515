//! The running agent as the admin API sees it.

use serde_json::json;

use super::AgentState;
use crate::admin::AdminView;

/// How many committed entries `/v1/decisions` shows.
const DECISIONS_SHOWN: usize = 256;

impl AdminView for AgentState {
    fn certs(&self) -> serde_json::Value {
        crate::trust::admin::certs(
            &self.credentials,
            &self.live_trust,
            &self.consensus.state().trust,
            &self.pki,
        )
    }

    fn tokens(&self) -> serde_json::Value {
        crate::trust::admin::tokens(&self.consensus.state().trust)
    }

    fn admin_token(&self) -> Option<String> {
        self.admin_token.clone()
    }

    fn operate(&self, action: plexus_protocol::OperatorAction) -> crate::admin::Operation {
        let service = self.trust_service.clone();
        Box::pin(async move { service.relay(action).await })
    }

    fn readiness(&self) -> Result<(), String> {
        if !self.ready() {
            return Err("starting".into());
        }
        let unready: Vec<String> = self
            .load
            .hosted(std::time::Instant::now())
            .into_iter()
            .filter(|s| !s.ready)
            .map(|s| s.service.to_string())
            .collect();
        if unready.is_empty() {
            Ok(())
        } else {
            Err(format!("failing health checks: {}", unready.join(", ")))
        }
    }

    fn routes(&self) -> serde_json::Value {
        let upstreams: Vec<_> = self.routes.iter().map(|r| r.reading()).collect();
        let services: Vec<serde_json::Value> = self
            .services
            .iter()
            .map(|s| {
                let limit = self.load.limit(&s.name);
                json!({
                    "service": s.name,
                    "protocol": s.protocol,
                    "capacity": s.capacity,
                    "concurrency_limit": limit.map(|l| l.limit),
                    "in_flight": limit.map(|l| l.in_flight),
                    "shed_total": limit.map(|l| l.shed),
                    "baseline_ms": limit.and_then(|l| l.baseline).map(|b| b.as_secs_f64() * 1e3),
                })
            })
            .collect();
        json!({ "upstreams": upstreams, "services": services })
    }

    fn decisions(&self) -> serde_json::Value {
        json!({
            "status": self.consensus.status(),
            "state": self.consensus.state().without_keys(),
            "entries": self.consensus.decisions(DECISIONS_SHOWN),
        })
    }

    fn policy(&self) -> serde_json::Value {
        crate::access::policy_json(&self.consensus.state())
    }

    fn quarantine(&self) -> serde_json::Value {
        crate::quarantine::admin::quarantine_json(
            &self.consensus.state(),
            &self.observer,
            &self.quarantine,
            self.consensus.status().is_leader,
        )
    }

    fn metrics(&self) -> String {
        self.telemetry.render()
    }

    fn status(&self) -> serde_json::Value {
        let mut peers: Vec<serde_json::Value> = self
            .pool
            .connected()
            .into_iter()
            .map(|(addr, peer)| json!({"node_id": peer.node_id, "address": addr, "direction": "outbound"}))
            .collect();
        let inbound = self.inbound.lock().expect("inbound peers lock poisoned");
        peers.extend(
            inbound.values().map(
                |p| json!({"node_id": p.node_id, "address": p.address, "direction": "inbound"}),
            ),
        );
        let upstreams: Vec<serde_json::Value> = self
            .upstreams
            .iter()
            .map(|(u, bound)| {
                let (endpoints, source) = if u.endpoints.is_empty() {
                    (self.view.borrow().endpoints(&u.service), "gossip")
                } else {
                    (u.endpoints.clone(), "static")
                };
                json!({"service": u.service, "listen": bound, "endpoints": endpoints,
                       "endpoint_source": source, "caller": u.caller,
                       "timeout": humantime::format_duration(u.timeout).to_string()})
            })
            .collect();
        json!({
            "node_id": self.node_id,
            "spiffe_id": self.spiffe_id,
            "trust_domain": self.trust_domain,
            "zone": self.zone,
            "version": env!("CARGO_PKG_VERSION"),
            "config": self.config_file,
            "ready": self.ready(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "listen": self.quic_addr,
            "advertise": self.advertise,
            "admin": self.admin_addr,
            "certificate": self.certificate,
            "peers": peers,
            "services": self.services,
            "upstreams": upstreams,
            "live_peers": self.view.borrow().live_peers(),
            "consensus": self.consensus.status(),
        })
    }

    fn peers(&self) -> serde_json::Value {
        let view = self.view.borrow().clone();
        json!({ "members": view.members })
    }

    fn services(&self) -> serde_json::Value {
        let view = self.view.borrow().clone();
        let services: serde_json::Map<String, serde_json::Value> = view
            .services()
            .into_iter()
            .map(|(name, endpoints)| (name.to_string(), json!(endpoints)))
            .collect();
        // What the decision log committed per service: weights, canary, scaling hint.
        let committed = self.consensus.state();
        let decided: serde_json::Map<String, serde_json::Value> = committed
            .services
            .iter()
            .map(|(name, d)| (name.to_string(), json!(d)))
            .collect();
        json!({ "services": services, "decisions": decided })
    }

    fn graph(&self) -> serde_json::Value {
        let view = self.view.borrow().clone();
        json!({ "edges": view.graph() })
    }
}
