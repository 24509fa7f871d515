//! The relay really drops, delays, duplicates, reorders and partitions, measured with two plain
//! UDP sockets standing in for agents `a` and `b`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use super::*;

/// How long a receiver waits for one more datagram before it concludes none is coming.
const QUIET: Duration = Duration::from_millis(250);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Agents `a` and `b` (plain sockets) behind a relay seeded with `seed`.
async fn pair(seed: u64) -> (RelayMesh, Arc<UdpSocket>, Arc<UdpSocket>) {
    let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
    let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
    let agents = [
        ("a".to_string(), a.local_addr().expect("a's address")),
        ("b".to_string(), b.local_addr().expect("b's address")),
    ];
    let mesh = RelayMesh::start(&agents, seed).await.expect("relay starts");
    (mesh, Arc::new(a), Arc::new(b))
}

fn front(mesh: &RelayMesh, node: &str) -> SocketAddr {
    mesh.front(node).expect("a known node")
}

/// Sends every datagram it receives back to where it came from, counting them.
struct Echo {
    task: JoinHandle<()>,
    echoed: Arc<AtomicU64>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn echo(socket: &Arc<UdpSocket>) -> Echo {
    let (socket, echoed) = (socket.clone(), Arc::new(AtomicU64::new(0)));
    let count = echoed.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            if socket.send_to(&buf[..len], from).await.is_ok() {
                count.fetch_add(1, Relaxed);
            }
        }
    });
    Echo { task, echoed }
}

/// A datagram of `size` bytes (at least 4) starting with its big-endian sequence number.
fn datagram(seq: u32, size: usize) -> Vec<u8> {
    let mut data = vec![0xab; size.max(4)];
    data[..4].copy_from_slice(&seq.to_be_bytes());
    data
}

/// Sends the numbered datagrams, pausing briefly every 20 so no socket buffer overflows.
async fn send(socket: &UdpSocket, to: SocketAddr, seqs: Range<u32>, size: usize) {
    for seq in seqs {
        socket
            .send_to(&datagram(seq, size), to)
            .await
            .expect("send");
        if seq % 20 == 19 {
            sleep(ms(1)).await;
        }
    }
}

struct Got {
    seq: u32,
    len: usize,
    from: SocketAddr,
    at: Instant,
}

/// Receives until `want` datagrams came, or none came for [`QUIET`], or 3 s passed.
async fn collect(socket: &UdpSocket, want: usize) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 65_536];
    let mut got = Vec::new();
    while got.len() < want {
        let wait = QUIET.min(deadline.saturating_duration_since(Instant::now()));
        let Ok(Ok((len, from))) = timeout(wait, socket.recv_from(&mut buf)).await else {
            break;
        };
        let seq = buf
            .get(..4)
            .map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        got.push(Got {
            seq,
            len,
            from,
            at: Instant::now(),
        });
    }
    got
}

/// Sends the numbered datagrams from `from` to `to` while `receiver` collects up to `want`
/// (receiving at the same time, so no socket buffer fills up).
async fn exchange(
    (from, to): (&UdpSocket, SocketAddr),
    seqs: Range<u32>,
    size: usize,
    receiver: &UdpSocket,
    want: usize,
) -> Vec<Got> {
    let ((), got) = tokio::join!(send(from, to, seqs, size), collect(receiver, want));
    got
}

/// Polls `check` every 10 ms for at most 2 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        sleep(ms(10)).await;
    }
    panic!("not within 2 s: {what}");
}

fn distinct(got: &[Got]) -> BTreeSet<u32> {
    got.iter().map(|g| g.seq).collect()
}

#[tokio::test]
async fn clean_link_carries_everything_and_replies_come_from_the_front() {
    let (mesh, a, b) = pair(1).await;
    let _echo = echo(&b);
    let mut got = exchange((&a, front(&mesh, "b")), 0..200, 100, &a, 200).await;
    a.send_to(&datagram(200, 65_507), front(&mesh, "b"))
        .await
        .expect("send the largest");
    got.extend(collect(&a, 1).await);
    assert_eq!(distinct(&got), (0..201).collect());
    assert!(got.iter().all(|g| g.from == front(&mesh, "b")));
    assert!(got.iter().any(|g| g.seq == 200 && g.len == 65_507));
    let there = mesh.stats("a", "b");
    assert_eq!((there.received, there.forwarded), (201, 201));
    assert_eq!(there.bytes, 200 * 100 + 65_507);
    assert_eq!(mesh.stats("b", "a").forwarded, 201);
    assert_eq!(mesh.unknown(), 0);
}

#[tokio::test]
async fn loss_drops_the_share_set() {
    let (mesh, a, b) = pair(2).await;
    mesh.set(
        "a",
        "b",
        LinkFaults {
            loss: 0.3,
            ..LinkFaults::default()
        },
    );
    let got = exchange((&a, front(&mesh, "b")), 0..1000, 50, &b, 1000).await;
    let got = distinct(&got).len() as f64 / 1000.0;
    assert!((got - 0.7).abs() <= 0.05, "b received {got} of what a sent");
    let stats = mesh.stats("a", "b");
    assert_eq!(stats.received, stats.dropped_loss + stats.forwarded);
    assert!(stats.received >= 950, "{stats:?}");
}

#[tokio::test]
async fn delay_holds_every_round_trip_in_both_directions() {
    let (mesh, a, b) = pair(3).await;
    let _echo = echo(&b);
    mesh.set(
        "a",
        "b",
        LinkFaults {
            delay: ms(50),
            ..LinkFaults::default()
        },
    );
    mesh.set(
        "b",
        "a",
        LinkFaults {
            delay: ms(30),
            ..LinkFaults::default()
        },
    );
    let mut sent = Vec::new();
    for seq in 0..20 {
        sent.push(Instant::now());
        a.send_to(&datagram(seq, 32), front(&mesh, "b"))
            .await
            .expect("send");
        sleep(ms(2)).await;
    }
    let got = collect(&a, 20).await;
    assert_eq!(distinct(&got), (0..20).collect());
    for g in &got {
        let rtt = g.at - sent[g.seq as usize];
        assert!(rtt >= ms(80), "datagram {} came back after {rtt:?}", g.seq);
    }
    assert_eq!(
        (mesh.stats("a", "b").delayed, mesh.stats("b", "a").delayed),
        (20, 20)
    );
}

#[tokio::test]
async fn one_way_partition_stops_one_direction_only() {
    let (mesh, a, b) = pair(4).await;
    mesh.set("a", "b", LinkFaults::partition());
    send(&a, front(&mesh, "b"), 0..20, 64).await;
    assert!(
        collect(&b, 1).await.is_empty(),
        "a reached b through the partition"
    );
    // b→a still delivers when b starts; a's replies are on a→b and are dropped.
    let echo_a = echo(&a);
    send(&b, front(&mesh, "a"), 0..20, 64).await;
    eventually("a receives all of b's datagrams", || {
        echo_a.echoed.load(Relaxed) == 20
    })
    .await;
    assert!(
        collect(&b, 1).await.is_empty(),
        "a's replies crossed the partition"
    );
    assert_eq!(mesh.stats("b", "a").forwarded, 20);
    assert_eq!(mesh.stats("a", "b").dropped_partition, 40);
    assert_eq!(mesh.stats("a", "b").forwarded, 0);
}

#[tokio::test]
async fn duplication_delivers_extra_copies() {
    let (mesh, a, b) = pair(5).await;
    mesh.set(
        "a",
        "b",
        LinkFaults {
            duplicate: 0.5,
            ..LinkFaults::default()
        },
    );
    let got = exchange((&a, front(&mesh, "b")), 0..400, 64, &b, 800).await;
    assert_eq!(distinct(&got), (0..400).collect());
    let extra = (got.len() - 400) as f64 / 400.0;
    assert!((extra - 0.5).abs() <= 0.08, "extra copies: {extra}");
    let stats = mesh.stats("a", "b");
    assert_eq!(
        (stats.forwarded, stats.duplicated),
        (got.len() as u64, got.len() as u64 - 400)
    );
}

#[tokio::test]
async fn reorder_lets_later_datagrams_overtake() {
    let (mesh, a, b) = pair(6).await;
    mesh.set(
        "a",
        "b",
        LinkFaults {
            reorder: 0.3,
            ..LinkFaults::default()
        },
    );
    let got = exchange((&a, front(&mesh, "b")), 0..200, 64, &b, 200).await;
    assert_eq!(distinct(&got), (0..200).collect());
    let overtaken = got.windows(2).filter(|w| w[1].seq < w[0].seq).count();
    let held = mesh.stats("a", "b").reordered;
    assert!(
        overtaken > 0 && (30..=90).contains(&held),
        "{overtaken} inversions, {held} held"
    );
}

#[tokio::test]
async fn bandwidth_cap_spreads_a_burst_over_time() {
    let (mesh, a, b) = pair(7).await;
    mesh.set(
        "a",
        "b",
        LinkFaults {
            bandwidth: Some(100_000),
            ..LinkFaults::default()
        },
    );
    let start = Instant::now();
    let got = exchange((&a, front(&mesh, "b")), 0..50, 1000, &b, 50).await;
    assert_eq!(distinct(&got), (0..50).collect());
    // 50 000 bytes at 100 000 B/s: the last one leaves half a second after the first arrived.
    let last = got.iter().map(|g| g.at).max().map(|t| t - start);
    assert!(last >= Some(ms(490)), "all arrived within {last:?}");
    assert_eq!(mesh.stats("a", "b").dropped_bandwidth, 0);
}

#[tokio::test]
async fn heal_restores_delivery() {
    let (mesh, a, b) = pair(8).await;
    mesh.set("a", "b", LinkFaults::partition());
    mesh.set("b", "a", LinkFaults::partition());
    send(&a, front(&mesh, "b"), 0..20, 64).await;
    assert!(collect(&b, 1).await.is_empty());
    mesh.heal("a", "b");
    assert_eq!(mesh.faults("a", "b"), Some(LinkFaults::default()));
    assert_eq!(mesh.faults("b", "a"), Some(LinkFaults::partition()));
    mesh.heal_all();
    let _echo = echo(&b);
    assert_eq!(
        distinct(&exchange((&a, front(&mesh, "b")), 20..40, 64, &a, 20).await),
        (20..40).collect()
    );
}

#[tokio::test]
async fn strangers_are_dropped_and_counted() {
    let (mesh, _a, b) = pair(9).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    send(&stranger, front(&mesh, "b"), 0..5, 64).await;
    eventually("five unknown datagrams", || mesh.unknown() == 5).await;
    assert!(collect(&b, 1).await.is_empty());
    assert_eq!(
        mesh.all_stats()
            .iter()
            .map(|(_, _, s)| s.received)
            .sum::<u64>(),
        0
    );
}

#[tokio::test]
async fn shutdown_stops_forwarding() {
    let (mesh, a, b) = pair(10).await;
    send(&a, front(&mesh, "b"), 0..1, 64).await;
    assert_eq!(collect(&b, 1).await.len(), 1);
    mesh.clone().shutdown();
    send(&a, front(&mesh, "b"), 1..2, 64).await;
    assert!(collect(&b, 1).await.is_empty());
    assert_eq!(mesh.stats("a", "b").received, 1);
}

#[tokio::test]
async fn dropping_the_last_handle_ends_every_task() {
    let (mesh, a, b) = pair(12).await;
    let _echo = echo(&b);
    mesh.set(
        "a",
        "b",
        LinkFaults {
            delay: ms(20),
            ..LinkFaults::default()
        },
    );
    let got = exchange((&a, front(&mesh, "b")), 0..5, 64, &a, 5).await;
    assert_eq!(got.len(), 5);
    // Every task holds the relay's state or one of its links: once all are gone, so are they.
    let state = Arc::downgrade(&mesh.owner.inner);
    let links: Vec<_> = mesh.owner.inner.links.iter().map(Arc::downgrade).collect();
    drop(mesh.clone());
    assert!(state.upgrade().is_some(), "a clone is not the last handle");
    drop(mesh);
    eventually("the relay's tasks end", || {
        state.upgrade().is_none() && links.iter().all(|link| link.upgrade().is_none())
    })
    .await;
}

#[tokio::test]
async fn names_and_addresses_must_be_distinct() {
    let addr: SocketAddr = "127.0.0.1:4000".parse().expect("an address");
    let other: SocketAddr = "127.0.0.1:4001".parse().expect("an address");
    let twice = [("a".to_string(), addr), ("a".to_string(), other)];
    assert!(RelayMesh::start(&twice, 1).await.is_err());
    let shared = [("a".to_string(), addr), ("b".to_string(), addr)];
    assert!(RelayMesh::start(&shared, 1).await.is_err());
    // An agent bound to 0.0.0.0:4000 sends from 127.0.0.1:4000: the same agent address.
    let any: SocketAddr = "0.0.0.0:4000".parse().expect("an address");
    let same = [("a".to_string(), addr), ("b".to_string(), any)];
    assert!(RelayMesh::start(&same, 1).await.is_err());
    let (mesh, _a, _b) = pair(11).await;
    assert!(!mesh.set("a", "nobody", LinkFaults::partition()));
    assert_eq!(mesh.front("nobody"), None);
    assert_eq!(mesh.stats("nobody", "a"), LinkStats::default());
}
