//! Dial backoff toward a peer is earned by the process that failed: when gossip says the peer
//! is back (routable again, or restarted with a new generation), the pool forgets it. Without
//! this, an agent that came back after a refused certificate or a crash could sit out up to
//! the maximum backoff while callers' requests to it failed at once and got it ejected (found
//! by the chaos harness's `bad-certificates` scenario).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use super::PeerPool;
use crate::gossip::MeshView;

/// Remembers which peer addresses were routable, and with which generation.
#[derive(Debug, Default)]
pub struct Returning {
    known: HashMap<SocketAddr, u64>,
}

impl Returning {
    /// The addresses of remote members that became routable, or came back with a new
    /// generation, since the last view.
    pub fn update(&mut self, view: &MeshView) -> Vec<SocketAddr> {
        let now: HashMap<SocketAddr, u64> = view
            .members
            .iter()
            .filter(|m| !m.local && m.state.routable())
            .map(|m| (m.address, m.generation))
            .collect();
        let back = now
            .iter()
            .filter(|(addr, generation)| self.known.get(addr) != Some(generation))
            .map(|(addr, _)| *addr)
            .collect();
        self.known = now;
        back
    }
}

/// Follows the mesh view until `shutdown`, resetting the pool's backoff for returning peers.
pub async fn forgive_returning_peers(
    mut view: watch::Receiver<Arc<MeshView>>,
    pool: Arc<PeerPool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut returning = Returning::default();
    returning.update(&view.borrow_and_update());
    loop {
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let back = returning.update(&view.borrow_and_update());
        for addr in back {
            pool.forgive(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gossip::{Member, MemberState};

    fn member(id: &str, port: u16, generation: u64, state: MemberState) -> Member {
        Member {
            node_id: id.into(),
            generation,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            state,
            local: false,
            heartbeat_age: Duration::ZERO,
            summary: None,
            edges: Vec::new(),
            consensus: None,
            observations: Vec::new(),
        }
    }

    #[test]
    fn peers_that_come_back_or_restart_are_returned_once() {
        let mut r = Returning::default();
        let view = |members| MeshView { members };
        let a = |g, s| member("a", 1, g, s);
        assert_eq!(r.update(&view(vec![a(1, MemberState::Alive)])).len(), 1);
        assert!(r
            .update(&view(vec![a(1, MemberState::Suspected)]))
            .is_empty());
        assert!(r.update(&view(vec![a(1, MemberState::Dead)])).is_empty());
        assert_eq!(
            r.update(&view(vec![a(1, MemberState::Alive)])).len(),
            1,
            "back from dead"
        );
        assert_eq!(
            r.update(&view(vec![a(2, MemberState::Alive)])).len(),
            1,
            "restarted"
        );
        assert!(r.update(&view(vec![a(2, MemberState::Alive)])).is_empty());
    }
}
