//! Carrying service bytes: local TCP sockets on one side, QUIC streams to peers on the other.
//!
//! - [`outbound`]: an `[[upstream]]` listener accepts an app's connection, opens a stream to an
//!   agent that hosts the service, waits for its [`plexus_protocol::OpenReply`] and splices.
//! - [`inbound`]: a peer's stream names a service; the agent connects to the local address and
//!   splices, or answers with the reason it cannot.
//! - [`http`]: HTTP-aware carrying for `protocol = "http"` (one request per stream).
//! - [`route`]: one upstream's endpoints with balancing, ejection and the retry budget.
//! - [`splice`]: the byte pump both use, with half-close in both directions and an abortive
//!   close (RST) of the TCP side when the QUIC side fails, so apps see failures as failures.

pub mod http;
pub mod inbound;
pub mod outbound;
pub mod route;
pub mod splice;

pub use inbound::InboundProxy;
pub use outbound::UpstreamProxy;
