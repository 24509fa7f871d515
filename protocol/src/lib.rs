//! Plexus wire types and codecs.
//!
//! Everything that crosses the network between two agents is defined here and nowhere else:
//! the [`frame`] format that every QUIC stream speaks, the [`stream`] header that opens a proxied
//! stream, the [`gossip`] frames and the summaries agents publish about themselves, the
//! [`consensus`] envelope that carries Raft messages, the [`decision`] log's typed commands and
//! the state they build, and the mesh [`identity`] names carried in certificates.
//!
//! This crate does no I/O. Every decoder is total: any byte string, however truncated, oversized
//! or hostile, decodes to a value or to a typed error, never to a panic, and never allocates more
//! than [`frame::MAX_FRAME_PAYLOAD`] bytes.
#![forbid(unsafe_code)]

pub mod consensus;
pub mod decision;
pub mod frame;
pub mod gossip;
pub mod identity;
pub mod stream;
pub mod trust;

pub use consensus::{
    RaftConfState, RaftEntry, RaftEntryKind, RaftEnvelope, RaftMessage, RaftMessageKind,
    RaftSnapshot,
};
pub use decision::{
    CanaryPhase, CanaryPolicy, CanaryState, CommittedState, ConsensusSummary, Decision,
    DecisionKind, EndpointWeight, Evidence, MembershipChange, MembershipStep, ScalingState,
    ServiceDecisions, FULL_WEIGHT, MIN_WEIGHT,
};
pub use frame::{Frame, FrameError, FrameHeader, FrameType, FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD};
pub use gossip::{
    AnomalySignal, DependencyEdge, DependencyEdges, GossipLeave, GossipMessage, NodeSummary,
    PeerObservations, PeerReport, SealedValue, ServiceSummary,
};
pub use identity::{IdentityError, NodeId, ServiceName, SpiffeId, TrustDomain};
pub use stream::{AppProtocol, OpenReply, Refusal, StreamHeader};
pub use trust::{
    AccessPolicy, CaKey, JoinToken, LeaderReply, LeaderRequest, OperatorAction, PolicyAction,
    PolicyRule, QuarantineRecord, TrustState, TrustedRoot,
};
