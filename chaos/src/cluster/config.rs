//! The agents' configuration files: the good one, and one per bad certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use plexus_agent::pki::{self, Validity};
use plexus_protocol::{NodeId, TrustDomain};

use super::{options, Hosted, NodeProc, Wiring, LEAF_LIFETIME, OTHER_TRUST_DOMAIN, TRUST_DOMAIN};
use crate::scenario::{CertFlaw, PolicySpec, Protocol, Scenario};

/// The agent's configuration, with the scenario's extra `[[service]]` and `[[upstream]]` keys,
/// `[consensus]` and `[[canary]]` tables.
#[allow(clippy::too_many_arguments)]
pub(super) fn config_text(
    scenario: &Scenario,
    zone: Option<&str>,
    name: &str,
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: Option<SocketAddr>,
    wiring: &Wiring<'_>,
) -> String {
    use toml::{Table, Value};
    let s = |v: &str| Value::String(v.to_owned());
    let mut top = Table::new();
    top.insert("node_id".into(), s(name));
    if let Some(zone) = zone {
        top.insert("zone".into(), s(zone));
    }
    top.insert(
        "data_dir".into(),
        s(&dir.join("data").display().to_string()),
    );
    top.insert("listen".into(), s(&listen.to_string()));
    top.insert("advertise".into(), s(&(wiring.advertise)(name).to_string()));
    let seeds: Vec<Value> = scenario
        .topology
        .nodes
        .iter()
        .filter(|n| n.name != name)
        .map(|n| s(&(wiring.advertise)(&n.name).to_string()))
        .collect();
    top.insert("seeds".into(), Value::Array(seeds));
    top.insert("admin".into(), s(&admin.to_string()));
    let mut tls = Table::new();
    let certs = dir.join("certs");
    tls.insert("ca".into(), s(&certs.join("ca.pem").display().to_string()));
    tls.insert(
        "cert".into(),
        s(&certs.join("node.pem").display().to_string()),
    );
    tls.insert(
        "key".into(),
        s(&certs.join("node.key").display().to_string()),
    );
    if scenario.trust.ca_in_log {
        // The harness's CA key: the agents bring it into their decision log.
        let key = dir.parent().unwrap_or(dir).join("ca").join("ca.key");
        tls.insert("ca_key".into(), s(&key.display().to_string()));
        if let Some(lifetime) = scenario.trust.leaf_lifetime {
            tls.insert(
                "leaf_lifetime".into(),
                s(&format!("{}ms", lifetime.as_millis())),
            );
        }
    }
    top.insert("tls".into(), Value::Table(tls));
    let mut gossip = Table::new();
    if let Some(interval) = scenario.agent.gossip_interval {
        gossip.insert("interval".into(), s(&format!("{}ms", interval.as_millis())));
    }
    if let Some(phi) = scenario.agent.phi_threshold {
        gossip.insert("phi_threshold".into(), Value::Float(phi));
    }
    if !gossip.is_empty() {
        top.insert("gossip".into(), Value::Table(gossip));
    }
    let ms = |d: std::time::Duration| s(&format!("{}ms", d.as_millis()));
    if let Some(c) = &scenario.consensus {
        let mut t = Table::new();
        t.insert(
            "bootstrap_expect".into(),
            Value::Integer(c.bootstrap_expect as i64),
        );
        for (key, value) in [
            ("election_timeout", c.election_timeout),
            ("dead_voter_after", c.dead_voter_after),
            ("weights_window", c.weights_window),
        ] {
            if let Some(d) = value {
                t.insert(key.into(), ms(d));
            }
        }
        top.insert("consensus".into(), Value::Table(t));
    }
    let canaries: Vec<Value> = scenario
        .canaries
        .iter()
        .map(|c| {
            let mut t = Table::new();
            t.insert("service".into(), s(&c.service));
            t.insert("baseline".into(), s(&c.baseline));
            t.insert("canary".into(), s(&c.canary));
            if let Some(step) = c.step_percent {
                t.insert("step_percent".into(), Value::Integer(i64::from(step)));
            }
            if let Some(interval) = c.interval {
                t.insert("interval".into(), ms(interval));
            }
            if let Some(e) = c.max_error_rate_increase {
                t.insert("max_error_rate_increase".into(), Value::Float(e));
            }
            if let Some(l) = c.max_latency_ratio {
                t.insert("max_latency_ratio".into(), Value::Float(l));
            }
            Value::Table(t)
        })
        .collect();
    if !canaries.is_empty() {
        top.insert("canary".into(), Value::Array(canaries));
    }
    if let Some(q) = &scenario.quarantine {
        let mut t = Table::new();
        if let Some(enabled) = q.enabled {
            t.insert("enabled".into(), Value::Boolean(enabled));
        }
        if let Some(n) = q.min_observers {
            t.insert("min_observers".into(), Value::Integer(i64::from(n)));
        }
        for (key, value) in [("window", q.window), ("probation", q.probation)] {
            if let Some(d) = value {
                t.insert(key.into(), ms(d));
            }
        }
        if let Some(share) = q.max_share {
            t.insert("max_share".into(), Value::Float(share));
        }
        top.insert("quarantine".into(), Value::Table(t));
    }
    if let Some(policy) = &scenario.policy {
        insert_policy(&mut top, policy);
    }
    let health_interval = format!("{}ms", scenario.agent.health_interval.as_millis());
    let services: Vec<Value> = (wiring.services)(name)
        .into_iter()
        .map(
            |Hosted {
                 service,
                 protocol,
                 version,
                 address,
             }| {
                let mut t = Table::new();
                t.insert("name".into(), s(&service));
                t.insert("address".into(), s(&address.to_string()));
                t.insert("protocol".into(), s(protocol.as_str()));
                t.insert("version".into(), s(&version));
                let mut health = Table::new();
                match protocol {
                    Protocol::Http => health.insert("http".into(), s("/healthz")),
                    Protocol::Tcp => health.insert("tcp".into(), Value::Boolean(true)),
                };
                health.insert("interval".into(), s(&health_interval));
                t.insert("health".into(), Value::Table(health));
                t.extend(scenario.agent.service.clone());
                Value::Table(t)
            },
        )
        .collect();
    if !services.is_empty() {
        top.insert("service".into(), Value::Array(services));
    }
    if let Some(listen) = upstream {
        let mut t = Table::new();
        t.insert("service".into(), s(&scenario.workload.service));
        t.insert("listen".into(), s(&listen.to_string()));
        t.insert("protocol".into(), s(scenario.workload.protocol.as_str()));
        t.insert("timeout".into(), s("1s"));
        t.extend(scenario.agent.upstream.clone());
        top.insert("upstream".into(), Value::Array(vec![Value::Table(t)]));
    }
    format!(
        "# written by plexus-chaos for scenario `{}`\n{}",
        scenario.name,
        toml::to_string(&top).unwrap_or_default()
    )
}

/// `[access]` and `[[policy]]` for `policy`, replacing any already in `top`.
fn insert_policy(top: &mut toml::Table, policy: &PolicySpec) {
    use toml::{Table, Value};
    let mut access = Table::new();
    access.insert(
        "default".into(),
        Value::String(policy.default.as_str().into()),
    );
    top.insert("access".into(), Value::Table(access));
    let rules: Vec<Value> = policy
        .rules
        .iter()
        .map(|r| {
            let mut ends = Table::new();
            for (key, end) in [("from", &r.from), ("to", &r.to)] {
                ends.insert(
                    key.into(),
                    Value::String(end.as_deref().unwrap_or("*").into()),
                );
            }
            let mut entry = Table::new();
            entry.insert(r.action.as_str().into(), Value::Table(ends));
            Value::Table(entry)
        })
        .collect();
    top.remove("policy");
    if !rules.is_empty() {
        top.insert("policy".into(), Value::Array(rules));
    }
}

/// A configuration file's text with its access policy replaced by `policy` (the rest as is).
pub(super) fn with_policy(text: &str, policy: &PolicySpec) -> Result<String, String> {
    let mut top: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot read the configuration written before: {e}"))?;
    insert_policy(&mut top, policy);
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(format!(
        "{header}{}",
        toml::to_string(&top).map_err(|e| e.to_string())?
    ))
}

/// Issues the bad certificate and writes a configuration that uses it.
pub(super) fn bad_config(node: &NodeProc, ca: &Path, flaw: CertFlaw) -> Result<PathBuf, String> {
    let dir = node.dir.join(flaw.name());
    let id = NodeId::new(&node.name).map_err(|e| e.to_string())?;
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let issue = |ca_dir: &Path, validity: Validity| {
        pki::issue_node(ca_dir, &id, &dir, options(validity))
            .map_err(|e| format!("{}: {}: {e}", node.name, flaw.name()))
    };
    let other_ca = |domain: &str| -> Result<PathBuf, String> {
        let ca_dir = dir.join("other-ca");
        let domain = TrustDomain::new(domain).map_err(|e| e.to_string())?;
        pki::init_ca(
            &domain,
            &ca_dir,
            options(Validity::starting_now(LEAF_LIFETIME)),
        )
        .map_err(|e| format!("{}: other CA: {e}", node.name))?;
        Ok(ca_dir)
    };
    match flaw {
        CertFlaw::Expired => issue(
            ca,
            Validity {
                not_before: now - day * 2,
                not_after: now - day,
            },
        )?,
        CertFlaw::NotYetValid => issue(
            ca,
            Validity {
                not_before: now + day,
                not_after: now + day * 2,
            },
        )?,
        CertFlaw::WrongTrustDomain => issue(
            &other_ca(OTHER_TRUST_DOMAIN)?,
            Validity::starting_now(LEAF_LIFETIME),
        )?,
        CertFlaw::Untrusted => issue(
            &other_ca(TRUST_DOMAIN)?,
            Validity::starting_now(LEAF_LIFETIME),
        )?,
    };
    let good = std::fs::read_to_string(node.dir.join("plexus.toml")).map_err(|e| e.to_string())?;
    let certs = node.dir.join("certs").display().to_string();
    let text = good.replace(&certs, &dir.display().to_string());
    let path = dir.join("plexus.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use plexus_agent::config::AgentConfig;

    use super::super::{Cluster, Hosted, Wiring};
    use crate::scenario::{FaultKind, Protocol, Scenario};

    /// The scenario's agents' files in a fresh directory: listen ports from `first_port` on,
    /// every agent advertised at 127.0.0.1:9, hosting what `services` says.
    fn prepared(
        scenario: &Scenario,
        first_port: u16,
        services: &dyn Fn(&str) -> Vec<Hosted>,
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let listen: Vec<(String, SocketAddr)> = scenario
            .topology
            .names()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, SocketAddr::from(([127, 0, 0, 1], first_port + i as u16))))
            .collect();
        let advertise = |_: &str| SocketAddr::from(([127, 0, 0, 1], 9));
        let wiring = Wiring {
            advertise: &advertise,
            services,
        };
        Cluster::prepare(scenario, dir.path(), Path::new("plexus"), &listen, &wiring).unwrap();
        dir
    }

    #[test]
    fn the_agent_accepts_the_consensus_and_canary_tables_written_for_it() {
        let scenario = Scenario::from_toml(
            Path::new("t.toml"),
            r#"name = "t"
purpose = "test"
[topology]
nodes = 3
services = [{ name = "echo", versions = { "node-3" = "v2" } }]
[consensus]
bootstrap_expect = 3
election_timeout = "500ms"
dead_voter_after = "3s"
weights_window = "2s"
[[canary]]
service = "echo"
baseline = "v1"
canary = "v2"
step_percent = 25
interval = "2s"
max_latency_ratio = 2.0
[workload]
rate = 10
service = "echo"
[[phase]]
name = "steady"
duration = "1s"
[[check]]
kind = "success-rate"
min = 0.9
"#,
        )
        .unwrap();
        let services = |node: &str| {
            vec![Hosted {
                service: "echo".into(),
                protocol: Protocol::Http,
                version: if node == "node-3" { "v2" } else { "v1" }.into(),
                address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            }]
        };
        let dir = prepared(&scenario, 20_000, &services);
        let config = AgentConfig::load(&dir.path().join("node-1/plexus.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.consensus.bootstrap_expect, Some(3));
        assert_eq!(config.consensus.dead_voter_after, Duration::from_secs(3));
        assert_eq!(config.consensus.weights_window, Duration::from_secs(2));
        let (service, policy) = &config.canaries[0];
        assert_eq!(service.as_str(), "echo");
        assert_eq!(
            (policy.baseline.as_str(), policy.canary.as_str()),
            ("v1", "v2")
        );
        assert_eq!((policy.step_percent, policy.interval_ms), (25, 2000));
        assert_eq!(policy.max_latency_ratio, 2.0);
    }

    #[test]
    fn the_agent_accepts_the_trust_quarantine_and_policy_tables_and_a_changed_policy() {
        let scenario = Scenario::from_toml(
            Path::new("t.toml"),
            r#"name = "t"
purpose = "test"
[topology]
nodes = 3
services = [{ name = "echo", on = ["node-2", "node-3"] }, { name = "web", on = "node-1" }]
[consensus]
bootstrap_expect = 3
[trust]
ca = "decision-log"
leaf_lifetime = "20s"
[quarantine]
enabled = false
min_observers = 3
window = "10s"
[access]
default = "deny"
[[policy]]
allow = { from = "web", to = "echo" }
[workload]
rate = 10
from = "node-1"
service = "echo"
[[phase]]
name = "steady"
duration = "1s"
faults = [{ kind = "policy-change", target = "all", policy = [{ deny = { from = "web", to = "*" } }] }]
[[check]]
kind = "success-rate"
min = 0.9
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = prepared(&scenario, 21_000, &|_: &str| Vec::new());
        let path = dir.path().join("node-1/plexus.toml");
        let config = AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.pki.ca_key, Some(dir.path().join("ca/ca.key")));
        assert_eq!(config.pki.leaf_lifetime, Duration::from_secs(20));
        assert!(!config.quarantine.enabled);
        assert_eq!(config.quarantine.min_observers, Some(3));
        assert_eq!(config.quarantine.window, Duration::from_secs(10));
        let policy = config.access.expect("the policy");
        assert_eq!(policy.default, plexus_protocol::PolicyAction::Deny);
        assert_eq!(policy.rules.len(), 1);
        // The policy change rewrites the file; the rest of it stays, and the agent accepts it.
        let FaultKind::PolicyChange(changed) = &scenario.phases[0].faults[0].kind else {
            panic!("not a policy change");
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let rewritten = super::with_policy(&text, changed).unwrap();
        assert!(
            rewritten.starts_with("# written by plexus-chaos"),
            "{rewritten}"
        );
        std::fs::write(&path, rewritten).unwrap();
        let config = AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let policy = config.access.expect("the new policy");
        assert_eq!(policy.default, plexus_protocol::PolicyAction::Allow);
        assert_eq!(policy.rules.len(), 1);
        assert_eq!(policy.rules[0].action, plexus_protocol::PolicyAction::Deny);
        assert_eq!(policy.rules[0].to, None);
        assert_eq!(config.pki.leaf_lifetime, Duration::from_secs(20));
    }
}
