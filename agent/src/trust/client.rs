//! Asking the Raft leader: find it, send one [`LeaderRequest`] on its own stream, follow a
//! `NotLeader` hint once, and read the [`LeaderReply`].

use std::net::SocketAddr;
use std::time::Duration;

use plexus_protocol::{FrameType, LeaderReply, LeaderRequest};

use super::TrustSetup;
use crate::transport::{read_message, write_message};

/// Where the leader (as this agent knows it) and, after it, the voters can be reached.
pub fn leader_candidates(setup: &TrustSetup) -> Vec<SocketAddr> {
    let status = setup.consensus.status();
    let view = setup.view.borrow().clone();
    let address_of = |node: &str| {
        view.members
            .iter()
            .find(|m| m.node_id == node && !m.local)
            .map(|m| m.address)
    };
    let mut candidates: Vec<SocketAddr> = Vec::new();
    if status.is_leader {
        return candidates;
    }
    if let Some(leader) = status.leader.as_deref().and_then(address_of) {
        candidates.push(leader);
    }
    let committed = setup.consensus.state();
    let voters = status
        .voters
        .iter()
        .cloned()
        .chain(committed.voters.iter().map(|v| v.to_string()));
    for voter in voters {
        if let Some(addr) = address_of(&voter) {
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
    }
    candidates
}

/// Sends `request` to the leader: the first candidate that leads answers; a `NotLeader` with
/// an address is followed. Returns the leader's reply, or why none came.
pub async fn ask_leader(
    setup: &TrustSetup,
    request: &LeaderRequest,
) -> Result<LeaderReply, String> {
    let candidates = leader_candidates(setup);
    if candidates.is_empty() {
        return Err("no leader known yet".into());
    }
    let mut last = String::from("no candidate answered");
    let mut tried = Vec::new();
    let mut queue = candidates;
    while let Some(addr) = queue.first().copied() {
        queue.remove(0);
        if tried.contains(&addr) || tried.len() >= 8 {
            continue;
        }
        tried.push(addr);
        match ask(setup, addr, request).await {
            Ok(LeaderReply::NotLeader {
                address: Some(hint),
                ..
            }) => queue.insert(0, hint),
            Ok(LeaderReply::NotLeader { leader, .. }) => {
                last = format!("{addr} does not lead (leader: {leader:?})");
            }
            Ok(reply) => return Ok(reply),
            Err(error) => last = format!("{addr}: {error}"),
        }
    }
    Err(last)
}

/// One request to `addr` over the pooled mTLS connection.
pub async fn ask(
    setup: &TrustSetup,
    addr: SocketAddr,
    request: &LeaderRequest,
) -> Result<LeaderReply, String> {
    let timeout = super::LEADER_REQUEST_TIMEOUT;
    let peer = setup
        .pool
        .connection(addr, Duration::from_secs(3))
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, exchange(&peer.connection, request))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Sends `request` on a new bidirectional stream of `connection` and reads the reply.
pub async fn exchange(
    connection: &quinn::Connection,
    request: &LeaderRequest,
) -> Result<LeaderReply, String> {
    debug_assert_eq!(
        <LeaderRequest as plexus_protocol::frame::FrameMessage>::FRAME_TYPE,
        FrameType::Leader
    );
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    write_message(&mut send, request)
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    read_message::<LeaderReply>(&mut recv)
        .await
        .map_err(|e| e.to_string())
}
