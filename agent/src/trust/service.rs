//! The leader's side of [`LeaderRequest`]s: leaves for members renewing, first leaves for nodes
//! joining with a token, and operators' actions, each answered on the stream it came on.
//!
//! Only the leader answers; any other agent says `NotLeader` with the leader's address when it
//! knows it. A renewal is for the certificate's own node, never another; a join is refused
//! for a node ID a live member holds, and for a quarantined one; an operator's action is taken
//! only when a voter relays it.

use std::time::Duration;

use plexus_protocol::{
    DecisionKind, FrameHeader, LeaderReply, LeaderRequest, NodeId, OperatorAction,
};
use quinn::{RecvStream, SendStream};

use super::{commit, decision, unix_ms, TrustSetup};
use crate::pki::ca;
use crate::telemetry::names;
use crate::transport::{read_payload, write_message};

/// How long a peer may take to send its request once the stream is open.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operator's action may wait for its commit.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Answers peers' requests to the leader.
#[derive(Clone)]
pub struct TrustService {
    setup: TrustSetup,
}

impl TrustService {
    pub(super) fn new(setup: TrustSetup) -> Self {
        Self { setup }
    }

    /// Serves one stream whose first frame header (`first`, of type `Leader`) was read already.
    /// `peer` is the certificate's node, `None` on a connection without a client certificate.
    pub async fn serve(
        &self,
        peer: Option<NodeId>,
        first: FrameHeader,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let request = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            read_payload::<LeaderRequest>(&mut recv, first),
        )
        .await
        {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                tracing::warn!(?peer, %error, "malformed request to the leader");
                let _ = send.reset(1u32.into());
                return;
            }
            Err(_) => {
                let _ = send.reset(1u32.into());
                return;
            }
        };
        let kind = label(&request);
        let reply = self.answer(peer.clone(), request).await;
        let outcome = match &reply {
            LeaderReply::Issued { .. } | LeaderReply::Done { .. } => "ok",
            LeaderReply::NotLeader { .. } => "not_leader",
            LeaderReply::Refused { reason } => {
                tracing::warn!(?peer, kind, %reason, "request to the leader refused");
                "refused"
            }
        };
        self.setup
            .telemetry
            .counter(
                names::LEADER_REQUESTS,
                &[("kind", kind), ("outcome", outcome)],
            )
            .increment(1);
        if write_message(&mut send, &reply).await.is_ok() {
            let _ = send.finish();
        }
    }

    /// The answer to one request.
    pub async fn answer(&self, peer: Option<NodeId>, request: LeaderRequest) -> LeaderReply {
        let status = self.setup.consensus.status();
        if !status.is_leader {
            let view = self.setup.view.borrow().clone();
            let address = status.leader.as_deref().and_then(|leader| {
                view.members
                    .iter()
                    .find(|m| m.node_id == leader)
                    .map(|m| m.address)
            });
            return LeaderReply::NotLeader {
                leader: status.leader.and_then(|l| NodeId::new(l).ok()),
                address,
            };
        }
        // A leader just elected may not know yet what its predecessor committed, or may not
        // have applied it (the mesh CA and its join tokens among it): a join then is answered
        // "not yet", which the joiner retries, rather than refused for a token it will know in
        // a moment.
        if matches!(request, LeaderRequest::Join { .. })
            && (!status.leader_caught_up
                || status.applied < status.commit
                || !self.setup.consensus.state().trust.has_ca())
        {
            return LeaderReply::NotLeader {
                leader: None,
                address: None,
            };
        }
        let refused = |reason: String| LeaderReply::Refused { reason };
        match (peer, request) {
            (Some(node), LeaderRequest::Renew { csr }) => {
                self.issue(&node, &csr).unwrap_or_else(refused)
            }
            (None, LeaderRequest::Join { token, node, csr }) => {
                self.join(&token, &node, &csr).await.unwrap_or_else(refused)
            }
            // Operator actions mint tokens and release quarantines: only a voter's admin API
            // (which checked its local admin token) may relay them, not any certified member.
            (Some(node), LeaderRequest::Operator { .. })
                if !status.voters.iter().any(|v| v == node.as_str()) =>
            {
                refused(format!(
                    "{node} is not a voter: operator actions are taken through a voter's admin API"
                ))
            }
            (Some(node), LeaderRequest::Operator { action }) => self
                .operator(&node, action)
                .await
                .map(|detail| LeaderReply::Done { detail })
                .unwrap_or_else(refused),
            (Some(_), LeaderRequest::Join { .. }) => {
                refused("this node has a certificate already; it renews instead".into())
            }
            (None, _) => refused("a connection without a certificate may only join".into()),
        }
    }

    /// A leaf for `node` from its request, with the committed roots.
    fn issue(&self, node: &NodeId, csr: &[u8]) -> Result<LeaderReply, String> {
        let state = self.setup.consensus.state();
        if state.trust.quarantined.contains_key(node) {
            return Err(format!("{node} is quarantined"));
        }
        let leaf = ca::sign_request(
            &state.trust,
            &self.setup.trust_domain,
            node,
            csr,
            self.setup.pki.leaf_lifetime,
            time::OffsetDateTime::now_utc(),
        )?;
        tracing::info!(%node, "leaf issued");
        Ok(LeaderReply::Issued {
            leaf,
            roots: state.trust.roots.iter().map(|r| r.der.clone()).collect(),
        })
    }

    async fn join(&self, token: &str, node: &NodeId, csr: &[u8]) -> Result<LeaderReply, String> {
        let state = self.setup.consensus.state();
        let id = ca::check_token(&state.trust, token, unix_ms())?;
        // A token must not take over an identity the mesh knows, alive or not (a voter that is
        // down keeps its seat, and its Raft ID comes from its node ID).
        let view = self.setup.view.borrow().clone();
        if let Some(member) = view.members.iter().find(|m| m.node_id == node.as_str()) {
            return Err(format!(
                "node ID {node} belongs to a member ({:?}); join with a new node ID",
                member.state
            ));
        }
        if node == &self.setup.node_id || state.voters.contains(node) {
            return Err(format!(
                "node ID {node} belongs to a voter; join with a new node ID"
            ));
        }
        let reply = self.issue(node, csr)?;
        // The join is recorded (who joined with which token); the leaf does not wait for it.
        let joined = decision(
            &self.setup.node_id,
            DecisionKind::Joined {
                token: id.clone(),
                node: node.clone(),
            },
            format!("{node} joined with token {id}"),
        );
        if let Err(error) = self.setup.consensus.propose(joined) {
            tracing::warn!(%error, %node, "join not recorded in the log");
        }
        tracing::info!(%node, token = %id, "node joined with a token");
        Ok(reply)
    }

    /// Carries out an operator's action from this agent's admin API: here when this agent
    /// leads, else through the leader.
    pub async fn relay(&self, action: OperatorAction) -> Result<String, String> {
        if self.setup.consensus.status().is_leader {
            return self.operator(&self.setup.node_id, action).await;
        }
        let request = LeaderRequest::Operator { action };
        match super::client::ask_leader(&self.setup, &request).await? {
            LeaderReply::Done { detail } => Ok(detail),
            LeaderReply::Refused { reason } => Err(reason),
            other => Err(format!("unexpected answer from the leader: {other:?}")),
        }
    }

    /// Carries out an operator's action relayed by `via`; returns a line for the operator.
    pub async fn operator(&self, via: &NodeId, action: OperatorAction) -> Result<String, String> {
        let setup = &self.setup;
        let state = setup.consensus.state();
        let me = &setup.node_id;
        match action {
            OperatorAction::CreateToken { ttl_ms } => {
                let ttl = ttl_ms.map(Duration::from_millis);
                let token = ca::new_token(&format!("ctl via {via}"), unix_ms(), ttl)?;
                let id = token.id.clone();
                let kind = DecisionKind::TokenCreate {
                    id: id.clone(),
                    token: token.record,
                };
                let reason = format!("operator made join token {id} (via {via})");
                commit(
                    &setup.consensus,
                    decision(me, kind, reason),
                    |s| s.trust.tokens.contains_key(&id),
                    COMMIT_WAIT,
                )
                .await?;
                Ok(token.text)
            }
            OperatorAction::RevokeToken { id } => {
                if !state.trust.tokens.contains_key(&id) {
                    return Err(format!("no join token {id}"));
                }
                let reason = format!("operator revoked join token {id} (via {via})");
                let kind = DecisionKind::TokenRevoke { id: id.clone() };
                commit(
                    &setup.consensus,
                    decision(me, kind, reason),
                    |s| s.trust.tokens.get(&id).is_some_and(|t| t.revoked),
                    COMMIT_WAIT,
                )
                .await?;
                Ok(format!("join token {id} revoked"))
            }
            OperatorAction::RotateCa => {
                let kind = super::duties::rotation(setup, &state.trust)?;
                let DecisionKind::CaRotate { root, .. } = &kind else {
                    unreachable!("rotation() returns a CaRotate")
                };
                let serial = root.serial.clone();
                let reason = format!("operator rotated the mesh CA (via {via})");
                commit(
                    &setup.consensus,
                    decision(me, kind, reason),
                    |s| s.trust.issuer().is_some_and(|r| r.serial == serial),
                    COMMIT_WAIT,
                )
                .await?;
                Ok(format!(
                    "new root {serial} committed; leaves are being reissued"
                ))
            }
            OperatorAction::Release { node } => {
                if !state.trust.quarantined.contains_key(&node) {
                    return Err(format!("{node} is not quarantined"));
                }
                let reason = format!("operator released {node} (via {via})");
                let kind = DecisionKind::Release { node: node.clone() };
                commit(
                    &setup.consensus,
                    decision(me, kind, reason),
                    |s| !s.trust.quarantined.contains_key(&node),
                    COMMIT_WAIT,
                )
                .await?;
                Ok(format!("{node} released"))
            }
        }
    }
}

fn label(request: &LeaderRequest) -> &'static str {
    match request {
        LeaderRequest::Renew { .. } => "renew",
        LeaderRequest::Join { .. } => "join",
        LeaderRequest::Operator { .. } => "operator",
    }
}
