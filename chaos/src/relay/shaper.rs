//! The relay's decisions for one ordered link, as a pure state machine: for each datagram that
//! arrives on the link, [`LinkShaper::admit`] says whether it is dropped (and why) or when it is
//! delivered (and when its duplicate is). No sockets, no clock: the caller passes the time of
//! arrival, and every random choice comes from a generator seeded from a `u64`, so the same seed
//! and the same arrivals give the same decisions.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Delays and jitters are capped at this, so no delivery time can overflow.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// A reordered datagram is held back by this much plus twice the jitter: every datagram that
/// arrives on the link within this time after it overtakes it.
pub const REORDER_HOLD: Duration = Duration::from_millis(10);
/// A bandwidth-capped link queues at most one second's worth of bytes, and never more than this.
pub const MAX_BACKLOG_BYTES: u64 = 1 << 20;

/// The faults of one ordered link (from one node to another). The default is a clean link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkFaults {
    /// Every datagram is dropped.
    pub partitioned: bool,
    /// Share of datagrams dropped at random (0..=1).
    pub loss: f64,
    /// Added one-way latency.
    pub delay: Duration,
    /// Each datagram's latency is uniform in `delay ± jitter`, clamped at zero.
    pub jitter: Duration,
    /// Share of datagrams held back by an extra [`REORDER_HOLD`] + 2 × jitter, so later ones
    /// overtake them.
    pub reorder: f64,
    /// Share of datagrams delivered twice (the copy gets its own latency).
    pub duplicate: f64,
    /// Bytes per second; datagrams queue behind each other, and those that find more than one
    /// second's worth (at most [`MAX_BACKLOG_BYTES`]) already queued are dropped.
    pub bandwidth: Option<u64>,
}

impl LinkFaults {
    /// A link that drops everything.
    pub fn partition() -> Self {
        LinkFaults {
            partitioned: true,
            ..LinkFaults::default()
        }
    }

    /// Whether the link is clean (no fault at all).
    pub fn is_clean(&self) -> bool {
        *self == LinkFaults::default()
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    Partition,
    Loss,
    /// The bandwidth cap's queue was full (or the cap is zero).
    Bandwidth,
}

/// When a datagram that was let through is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// When the datagram is delivered (the arrival time when there is nothing to wait for).
    pub at: Instant,
    /// When its duplicate is delivered, if it was duplicated.
    pub copy: Option<Instant>,
    /// Whether it was held back to be reordered.
    pub held: bool,
}

impl Delivery {
    /// Every delivery time: the datagram's, then its copy's.
    pub fn times(&self) -> impl Iterator<Item = Instant> {
        std::iter::once(self.at).chain(self.copy)
    }
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Drop(DropReason),
    Deliver(Delivery),
}

/// The random numbers one datagram may need, drawn for every datagram whatever the faults, so a
/// fault's decisions do not depend on which other faults are set.
struct Draws {
    loss: f64,
    reorder: f64,
    duplicate: f64,
    latency: f64,
    copy_latency: f64,
}

/// The state of one ordered link: its random generator and its bandwidth clock.
#[derive(Debug, Clone)]
pub struct LinkShaper {
    rng: SmallRng,
    /// When the bandwidth-capped link finishes sending what it already accepted.
    free_at: Option<Instant>,
}

impl LinkShaper {
    pub fn new(seed: u64) -> Self {
        LinkShaper {
            rng: SmallRng::seed_from_u64(seed),
            free_at: None,
        }
    }

    /// Decides the fate of a datagram of `len` bytes arriving at `now` on a link with `faults`.
    /// Order: partition, loss, bandwidth (the time its last byte leaves), then latency, reorder
    /// hold and duplication. The duplicate does not use bandwidth.
    pub fn admit(&mut self, faults: &LinkFaults, now: Instant, len: usize) -> Admission {
        let draws = Draws {
            loss: self.rng.random(),
            reorder: self.rng.random(),
            duplicate: self.rng.random(),
            latency: self.rng.random(),
            copy_latency: self.rng.random(),
        };
        if faults.partitioned {
            return Admission::Drop(DropReason::Partition);
        }
        if draws.loss < faults.loss {
            return Admission::Drop(DropReason::Loss);
        }
        let departs = match faults.bandwidth {
            None => now,
            Some(rate) => match self.transmit(rate, now, len) {
                Some(done) => done,
                None => return Admission::Drop(DropReason::Bandwidth),
            },
        };
        let held = draws.reorder < faults.reorder;
        let mut at = departs + latency(faults, draws.latency);
        if held {
            at += REORDER_HOLD + 2 * faults.jitter.min(MAX_DELAY);
        }
        let copy = (draws.duplicate < faults.duplicate)
            .then(|| departs + latency(faults, draws.copy_latency));
        Admission::Deliver(Delivery { at, copy, held })
    }

    /// Queues `len` bytes behind what the link already accepted; returns when the last byte
    /// leaves, or `None` when the queue is full.
    fn transmit(&mut self, rate: u64, now: Instant, len: usize) -> Option<Instant> {
        if rate == 0 {
            return None;
        }
        let start = self.free_at.filter(|free| *free > now).unwrap_or(now);
        let queued = bytes_in(start - now, rate);
        let bound = rate.min(MAX_BACKLOG_BYTES);
        // An empty queue always takes one datagram, however slow the link.
        if queued > 0 && queued.saturating_add(len as u64) > bound {
            return None;
        }
        let nanos = (len as u128 * 1_000_000_000) / u128::from(rate);
        let done = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.free_at = Some(done);
        Some(done)
    }
}

/// How many bytes a link of `rate` bytes per second sends in `time`.
fn bytes_in(time: Duration, rate: u64) -> u64 {
    let bytes = time.as_nanos() * u128::from(rate) / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// `delay ± jitter` at the point `u` (in 0..1) of the window, clamped at zero.
fn latency(faults: &LinkFaults, u: f64) -> Duration {
    let delay = faults.delay.min(MAX_DELAY);
    let jitter = faults.jitter.min(MAX_DELAY);
    let offset = (2 * jitter).mul_f64(u.clamp(0.0, 1.0));
    if offset >= jitter {
        delay + (offset - jitter)
    } else {
        delay.saturating_sub(jitter - offset)
    }
}

#[cfg(test)]
mod tests;
