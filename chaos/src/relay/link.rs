//! One ordered link of the relay: its faults and shaper, its counters, and its delay queue with
//! the one task that sends queued datagrams when their time comes.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::shaper::{Admission, DropReason, LinkFaults, LinkShaper};

/// Datagrams waiting for their delivery time, per link; more are dropped (`dropped_overflow`).
pub const MAX_QUEUED: usize = 10_000;

/// The counters of one ordered link, from one node to another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Datagrams that arrived on the link.
    pub received: u64,
    /// Datagrams sent on to the destination, duplicates included.
    pub forwarded: u64,
    /// Bytes of the forwarded datagrams.
    pub bytes: u64,
    pub dropped_partition: u64,
    pub dropped_loss: u64,
    pub dropped_bandwidth: u64,
    /// Dropped because the link's delay queue was full.
    pub dropped_overflow: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Datagrams delivered later than they arrived.
    pub delayed: u64,
    /// Datagrams held back so later ones overtake them.
    pub reordered: u64,
    /// Datagrams the relay failed to send (socket errors).
    pub send_failed: u64,
}

/// One ordered link: its faults, its shaper, its counters and its delay queue.
pub(super) struct Link {
    state: Mutex<(LinkFaults, LinkShaper)>,
    counters: Counters,
    queue: Mutex<Queue>,
    /// Wakes the delivery task when a datagram becomes the earliest in the queue.
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Pending>,
    next_seq: u64,
}

/// A datagram waiting for its delivery time; the heap's top is the earliest (then the oldest).
struct Pending {
    at: Instant,
    seq: u64,
    out: Arc<UdpSocket>,
    to: SocketAddr,
    data: Bytes,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl Link {
    pub(super) fn new(seed: u64) -> Self {
        Link {
            state: Mutex::new((LinkFaults::default(), LinkShaper::new(seed))),
            counters: Counters::default(),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        }
    }

    pub(super) fn faults(&self) -> LinkFaults {
        lock(&self.state).0
    }

    pub(super) fn set(&self, faults: LinkFaults) {
        lock(&self.state).0 = faults;
    }

    pub(super) fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }

    /// Counts a datagram the relay could not even pick up for this link.
    pub(super) fn failed(&self) {
        self.counters.send_failed.fetch_add(1, Relaxed);
    }

    /// Judges one datagram under the link's current faults and sends it from `out` to `dest`
    /// now, later (through the queue), twice or never.
    pub(super) async fn pass(&self, out: &Arc<UdpSocket>, dest: SocketAddr, data: &[u8]) {
        let c = &self.counters;
        c.received.fetch_add(1, Relaxed);
        let now = Instant::now();
        let admission = {
            let mut state = lock(&self.state);
            let faults = state.0;
            state.1.admit(&faults, now, data.len())
        };
        let delivery = match admission {
            Admission::Deliver(delivery) => delivery,
            Admission::Drop(reason) => {
                let counter = match reason {
                    DropReason::Partition => &c.dropped_partition,
                    DropReason::Loss => &c.dropped_loss,
                    DropReason::Bandwidth => &c.dropped_bandwidth,
                };
                counter.fetch_add(1, Relaxed);
                return;
            }
        };
        for (yes, counter) in [
            (delivery.held, &c.reordered),
            (delivery.at > now, &c.delayed),
            (delivery.copy.is_some(), &c.duplicated),
        ] {
            if yes {
                counter.fetch_add(1, Relaxed);
            }
        }
        let mut owned: Option<Bytes> = None;
        for at in delivery.times() {
            if at <= now {
                self.send(out, dest, data).await;
                continue;
            }
            let data = owned
                .get_or_insert_with(|| Bytes::copy_from_slice(data))
                .clone();
            let (to, out) = (dest, out.clone());
            let mut queue = lock(&self.queue);
            if queue.heap.len() >= MAX_QUEUED {
                c.dropped_overflow.fetch_add(1, Relaxed);
                continue;
            }
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.heap.push(Pending {
                at,
                seq,
                out,
                to,
                data,
            });
            if queue.heap.peek().is_some_and(|top| top.seq == seq) {
                self.wake.notify_one();
            }
        }
    }

    /// The link's delivery task: sends queued datagrams as their delivery times come.
    pub(super) async fn deliver(self: Arc<Self>) {
        let mut due = Vec::new();
        loop {
            let next = {
                let mut queue = lock(&self.queue);
                let now = Instant::now();
                while queue.heap.peek().is_some_and(|top| top.at <= now) {
                    due.extend(queue.heap.pop());
                }
                queue.heap.peek().map(|top| top.at)
            };
            for pending in due.drain(..) {
                self.send(&pending.out, pending.to, &pending.data).await;
            }
            match next {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = self.wake.notified() => {}
                },
                None => self.wake.notified().await,
            }
        }
    }

    async fn send(&self, out: &UdpSocket, to: SocketAddr, data: &[u8]) {
        let c = &self.counters;
        match out.send_to(data, to).await {
            Ok(_) => {
                c.forwarded.fetch_add(1, Relaxed);
                c.bytes.fetch_add(data.len() as u64, Relaxed);
            }
            Err(_) => {
                c.send_failed.fetch_add(1, Relaxed);
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    bytes: AtomicU64,
    dropped_partition: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_bandwidth: AtomicU64,
    dropped_overflow: AtomicU64,
    duplicated: AtomicU64,
    delayed: AtomicU64,
    reordered: AtomicU64,
    send_failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> LinkStats {
        LinkStats {
            received: self.received.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            dropped_partition: self.dropped_partition.load(Relaxed),
            dropped_loss: self.dropped_loss.load(Relaxed),
            dropped_bandwidth: self.dropped_bandwidth.load(Relaxed),
            dropped_overflow: self.dropped_overflow.load(Relaxed),
            duplicated: self.duplicated.load(Relaxed),
            delayed: self.delayed.load(Relaxed),
            reordered: self.reordered.load(Relaxed),
            send_failed: self.send_failed.load(Relaxed),
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
