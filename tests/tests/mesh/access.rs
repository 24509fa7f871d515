//! Access policy with in-process agents: three voters of a decision-log cell (two of them
//! serving `payments` over HTTP, one serving `ledger` over TCP) and two callers, one hosting
//! `web` and one hosting `batch`. A call the committed policy refuses is answered clearly (403
//! `policy_denied`, or a reset TCP connection), counted, and final; a new committed policy
//! takes effect on every serving agent without a restart.

use std::net::SocketAddr;
use std::time::Duration;

use plexus_agent::RunningAgent;
use plexus_protocol::{
    AccessPolicy, Decision, DecisionKind, NodeId, PolicyAction, PolicyRule, ServiceName,
};
use plexus_tests::http::{Backend, Client};
use plexus_tests::{admin_get, echo_server, echoes_within, eventually, exchange, run_plexus, Mesh};
use serde_json::Value;

use crate::PATIENCE;

/// What the caller agents host and call.
fn caller_config(hosts: &str) -> String {
    format!(
        "[gossip]\ninterval = \"100ms\"\n\
         [[service]]\nname = \"{hosts}\"\naddress = \"127.0.0.1:9\"\n\
         [[upstream]]\nservice = \"payments\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
         [[upstream]]\nservice = \"ledger\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n"
    )
}

struct Cell {
    /// `v-0` hosts `payments` and `ledger`, `v-1` hosts `payments`, `v-2` hosts nothing.
    voters: Vec<RunningAgent>,
    /// The voters' configuration files, in `voters` order.
    configs: Vec<std::path::PathBuf>,
    payments: Vec<Backend>,
    web: RunningAgent,
    batch: RunningAgent,
    _mesh: Mesh,
}

impl Cell {
    /// The cell, with `policy` in every voter's configuration, once every agent routes to
    /// every endpoint.
    async fn start(policy: &str) -> Self {
        let mesh = Mesh::new();
        let ledger = echo_server().await;
        let mut payments = Vec::new();
        let mut voters: Vec<RunningAgent> = Vec::new();
        let mut configs = Vec::new();
        for i in 0..3 {
            let seeds = match voters.first() {
                Some(first) => format!("seeds = [\"{}\"]\n", first.quic_addr),
                None => String::new(),
            };
            let node = format!("v-{i}");
            let top = format!(
                "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{seeds}",
                mesh.path().join(format!("{node}-data")).display()
            );
            let mut hosted = String::new();
            if i < 2 {
                let backend = Backend::start(&node).await;
                hosted += &format!(
                    "[[service]]\nname = \"payments\"\naddress = \"{}\"\nprotocol = \"http\"\n",
                    backend.addr
                );
                payments.push(backend);
            }
            if i == 0 {
                hosted += &format!(
                    "[[service]]\nname = \"ledger\"\naddress = \"{ledger}\"\nprotocol = \"tcp\"\n"
                );
            }
            let config = format!(
                "[gossip]\ninterval = \"100ms\"\n[consensus]\nbootstrap_expect = 3\n\
                 {hosted}{policy}\n"
            );
            let path = mesh.config(&node, &mesh.node(&node), &top, &config);
            voters.push(plexus_tests::start(&path).await);
            configs.push(path);
        }
        let top = format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nseeds = [\"{}\"]\n",
            voters[0].quic_addr
        );
        let mut callers = Vec::new();
        for (node, hosts) in [("web-node", "web"), ("batch-node", "batch")] {
            let path = mesh.config(node, &mesh.node(node), &top, &caller_config(hosts));
            callers.push(plexus_tests::start(&path).await);
        }
        let batch = callers.pop().unwrap();
        let web = callers.pop().unwrap();
        let cell = Self {
            voters,
            configs,
            payments,
            web,
            batch,
            _mesh: mesh,
        };
        let formed = eventually(Duration::from_secs(20), async || {
            cell.voters
                .iter()
                .all(|v| v.consensus.status().role == "voter")
        })
        .await;
        assert!(formed, "the voters did not form a group");
        // Every caller routes to every endpoint, and the serving agents know what each
        // caller hosts.
        let routed = eventually(PATIENCE, async || {
            let endpoints = |agent: &RunningAgent, service: &str| {
                agent
                    .view()
                    .borrow()
                    .endpoints(&ServiceName::new(service).unwrap())
                    .len()
            };
            let hosts = |agent: &RunningAgent, node: &str, service: &str| {
                agent.view().borrow().members.iter().any(|m| {
                    m.node_id == node
                        && m.summary
                            .as_ref()
                            .is_some_and(|s| s.services.iter().any(|s| s.name.as_str() == service))
                })
            };
            [&cell.web, &cell.batch]
                .iter()
                .all(|c| endpoints(c, "payments") == 2 && endpoints(c, "ledger") == 1)
                && cell.voters[..2]
                    .iter()
                    .all(|v| hosts(v, "web-node", "web") && hosts(v, "batch-node", "batch"))
        })
        .await;
        assert!(routed, "the callers never routed to every endpoint");
        cell
    }

    /// The leader's handle, once one is elected.
    async fn leader(&self) -> &RunningAgent {
        let mut leader = None;
        let elected = eventually(PATIENCE, async || {
            leader = self.voters.iter().find(|v| v.consensus.status().is_leader);
            leader.is_some()
        })
        .await;
        assert!(elected, "no leader");
        leader.unwrap()
    }

    /// Commits `policy` through the leader, as a leader with it configured would.
    async fn commit(&self, policy: AccessPolicy) {
        let decision = Decision {
            kind: DecisionKind::Policy {
                policy: policy.clone(),
            },
            reason: "test: the operator changes the access policy".into(),
            evidence: vec![],
            proposer: NodeId::new("test").unwrap(),
            proposed_at_ms: 0,
        };
        let committed = eventually(PATIENCE, async || {
            let leader = self.leader().await;
            let _ = leader.consensus.propose(decision.clone());
            // Wait a little for the commit before proposing again.
            eventually(Duration::from_secs(2), async || {
                self.voters
                    .iter()
                    .all(|v| v.consensus.state().trust.policy == policy)
            })
            .await
        })
        .await;
        assert!(committed, "the policy was not committed on every voter");
    }
}

fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn allow(from: &str, to: &str) -> PolicyRule {
    PolicyRule {
        from: Some(svc(from)),
        to: Some(svc(to)),
        action: PolicyAction::Allow,
    }
}

/// One GET through `agent`'s `payments` upstream: (status, `plexus-error`, body).
async fn call_payments(agent: &RunningAgent) -> (u16, String, String) {
    let mut client = Client::h1(agent.upstream_addr("payments").unwrap()).await;
    let answer = client.get("/pay").await.expect("an answer");
    let error = answer
        .headers
        .get("plexus-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    (answer.status.as_u16(), error, body)
}

/// The sum of every series of `agent`'s metrics that starts with `prefix`.
fn total(agent: &RunningAgent, prefix: &str) -> f64 {
    agent
        .telemetry
        .render()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether an exchange through `addr` is refused (the connection reset or closed without the
/// echo).
async fn refused(addr: SocketAddr) -> bool {
    let reply = tokio::time::timeout(Duration::from_secs(5), exchange(addr, b"ping")).await;
    !matches!(reply, Ok(Ok(r)) if r == b"ping")
}

const WEB_ONLY: &str = "[access]\ndefault = \"deny\"\n\
                        [[policy]]\nallow = { from = \"web\", to = \"payments\" }\n\
                        [[policy]]\nallow = { from = \"web\", to = \"ledger\" }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_against_policy_is_refused_clearly_counted_and_final() {
    let cell = Cell::start(WEB_ONLY).await;
    // The leader commits its configured policy; every agent applies it.
    let configured = AccessPolicy {
        default: PolicyAction::Deny,
        rules: vec![allow("web", "ledger"), allow("web", "payments")],
    };
    let committed = eventually(PATIENCE, async || {
        cell.voters
            .iter()
            .chain([&cell.web, &cell.batch])
            .all(|a| a.consensus.state().trust.policy == configured)
    })
    .await;
    assert!(
        committed,
        "the configured policy was not committed everywhere"
    );

    // web may call payments (HTTP) and ledger (TCP).
    let (status, _, _) = call_payments(&cell.web).await;
    assert_eq!(status, 200);
    let ledger_from_web = cell.web.upstream_addr("ledger").unwrap();
    assert!(echoes_within(ledger_from_web, b"ping", PATIENCE).await);

    // batch may not: a clear 403, final (one attempt, no retry, nothing reached a backend).
    let hits_before: u64 = cell.payments.iter().map(|b| b.behaviour.hits()).sum();
    for _ in 0..5 {
        let (status, error, body) = call_payments(&cell.batch).await;
        assert_eq!((status, error.as_str()), (403, "policy_denied"), "{body}");
        assert_eq!(body.lines().count(), 1, "{body}");
        assert!(
            body.contains("node batch-node (hosting batch) call payments"),
            "{body}"
        );
    }
    let hits_after: u64 = cell.payments.iter().map(|b| b.behaviour.hits()).sum();
    assert_eq!(hits_after, hits_before, "a refused call reached a backend");
    // One attempt in all: the caller's agent answers the next four itself, repeating the
    // serving agent's refusal while the committed policy stands.
    let attempts = "plexus_request_attempts_total{direction=\"outbound\",service=\"payments\"";
    assert_eq!(total(&cell.batch, attempts), 1.0, "one attempt in all");
    let cached = "plexus_policy_refusals_cached_total{service=\"payments\"}";
    assert_eq!(total(&cell.batch, cached), 4.0);
    assert_eq!(total(&cell.batch, "plexus_retries_total"), 0.0);
    let (_, routes) = admin_get(cell.batch.admin_addr, "/v1/routes").await;
    let routes: Value = serde_json::from_str(&routes).unwrap();
    for endpoint in routes["upstreams"][0]["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["ejections"], 0, "{routes:#}");
    }
    // Counted by the serving agents, by service and caller.
    let series = "plexus_policy_refusals_total{service=\"payments\",caller=\"batch-node\"}";
    let counted: f64 = cell.voters.iter().map(|v| total(v, series)).sum();
    assert_eq!(counted, 1.0, "a correct caller is refused once per policy");
    assert_eq!(
        total(
            &cell.voters[0],
            "plexus_policy_refusals_total{service=\"payments\",caller=\"web-node\"}"
        ),
        0.0
    );

    // TCP: the serving agent refuses the stream; the caller resets the app's connection.
    assert!(refused(cell.batch.upstream_addr("ledger").unwrap()).await);
    let series = "plexus_policy_refusals_total{service=\"ledger\",caller=\"batch-node\"}";
    assert_eq!(total(&cell.voters[0], series), 1.0);
    let outbound =
        "plexus_streams_refused_total{direction=\"outbound\",service=\"ledger\",reason=\"policy_denied\"}";
    assert_eq!(
        total(&cell.batch, outbound),
        1.0,
        "tried once, not elsewhere"
    );
    // Again: refused by the caller's agent, without asking.
    assert!(refused(cell.batch.upstream_addr("ledger").unwrap()).await);
    assert_eq!(total(&cell.voters[0], series), 1.0);
    let cached = "plexus_policy_refusals_cached_total{service=\"ledger\"}";
    assert_eq!(total(&cell.batch, cached), 1.0);

    // The decision says why; `plexus ctl policy` lists the rules in precedence order.
    let leader = cell.leader().await;
    let (_, log) = admin_get(leader.admin_addr, "/v1/decisions").await;
    let log: Value = serde_json::from_str(&log).unwrap();
    let decision = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "policy")
        .unwrap_or_else(|| panic!("no policy decision in {log:#}"));
    let reason = decision["decision"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("adds allow web -> ledger, allow web -> payments"),
        "{reason}"
    );
    let admin = cell.web.admin_addr.to_string();
    let (code, out, err) = run_plexus(&["ctl", "--admin", &admin, "policy"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("default deny"), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| w.first().is_some_and(|n| n.parse::<u32>().is_ok()))
        .collect();
    assert_eq!(
        rows,
        [
            ["1", "allow", "web", "ledger"],
            ["2", "allow", "web", "payments"]
        ],
        "{out}"
    );
    let (code, out, _) = run_plexus(&["ctl", "--admin", &admin, "--json", "policy"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["default"], "deny");
    assert!(doc["applied_index"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_takes_effect_without_restart() {
    // No voter configures a policy: they never propose one, so the committed one stands.
    let cell = Cell::start("").await;
    assert_eq!(
        call_payments(&cell.batch).await.0,
        200,
        "allowed by default"
    );

    cell.commit(AccessPolicy {
        default: PolicyAction::Deny,
        rules: vec![allow("web", "payments")],
    })
    .await;
    let denied = eventually(PATIENCE, async || call_payments(&cell.batch).await.0 == 403).await;
    assert!(denied, "the new policy never refused batch");
    assert_eq!(call_payments(&cell.web).await.0, 200);
    assert!(refused(cell.batch.upstream_addr("ledger").unwrap()).await);

    cell.commit(AccessPolicy {
        default: PolicyAction::Deny,
        rules: vec![allow("web", "payments"), allow("batch", "payments")],
    })
    .await;
    let allowed = eventually(PATIENCE, async || call_payments(&cell.batch).await.0 == 200).await;
    assert!(allowed, "the changed policy never let batch through");
    assert!(refused(cell.batch.upstream_addr("ledger").unwrap()).await);
    let (_, doc) = admin_get(cell.voters[1].admin_addr, "/v1/policy").await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["rules"].as_array().unwrap().len(), 2, "{doc:#}");

    // The operator writes a policy into every voter's file and reloads (what SIGHUP does):
    // the leader proposes it, and batch is refused again.
    for (voter, path) in cell.voters.iter().zip(&cell.configs) {
        let text = std::fs::read_to_string(path).unwrap();
        let policy = "[access]\ndefault = \"deny\"\n\
                      [[policy]]\nallow = { from = \"web\", to = \"payments\" }\n";
        std::fs::write(path, format!("{text}\n{policy}")).unwrap();
        let config = plexus_agent::config::AgentConfig::load(path).unwrap();
        assert!(voter.reload(&config).contains("1 rules"));
    }
    let denied = eventually(PATIENCE, async || call_payments(&cell.batch).await.0 == 403).await;
    assert!(denied, "the reloaded policy was never committed");
    assert_eq!(call_payments(&cell.web).await.0, 200);
    let decisions = cell.voters[0].consensus.state();
    assert_eq!(decisions.trust.policy.rules.len(), 1);
}
