//! Raft IDs: raft-rs names nodes by `u64`; Plexus derives each node's from its node ID, so every
//! agent computes every peer's without asking and a certificate proves which ID a peer may use.

use ring::digest;

/// The Raft ID of a node: the first 8 bytes of SHA-256 over its node ID, never 0.
pub fn raft_id(node_id: &str) -> u64 {
    let hash = digest::digest(&digest::SHA256, node_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_never_zero() {
        assert_eq!(raft_id("node-a"), raft_id("node-a"));
        assert_ne!(raft_id("node-a"), raft_id("node-b"));
        assert_ne!(raft_id(""), 0);
    }
}
