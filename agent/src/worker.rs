//! Keeping the worker thread free for requests.
//!
//! An agent runs one tokio worker by default (`worker_threads`): the data plane's latency is
//! lowest that way, but anything slow on that thread holds up every request behind it. Slow
//! work that has to happen anyway leaves the worker: async code hands it to
//! `tokio::task::spawn_blocking` (the gossip host sample, checking new gossip seals), and
//! synchronous code that must wait for it (the decision log's fsync, inside raft-rs's storage
//! calls) runs through [`off_the_worker`]. Handing the worker's core to another thread costs a
//! thread wake-up or two, so short work (a few hundred µs) is better sent to `spawn_blocking`.

/// Runs `work`, which may take a while (an fsync, a few hundred microseconds of CPU). On a
/// multi-threaded runtime the worker first hands its other tasks to another thread
/// (`block_in_place`), so requests in flight go on meanwhile. Elsewhere (tests on a
/// current-thread runtime, code outside a runtime) it runs as is.
pub fn off_the_worker<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
