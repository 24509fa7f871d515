//! The decision log: a Raft group (raft-rs) among the agents of a cell.
pub mod ids;
mod logger;
pub mod membership;
pub mod store;
pub mod wire;
