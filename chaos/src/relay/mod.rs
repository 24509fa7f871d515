//! The UDP fault relay: network faults between agents without netem or root.
//!
//! Each agent X binds its QUIC socket at `real[X]` but advertises the relay's `front[X]`, so
//! every other agent sends to `front[X]`. A datagram arriving at `front[X]` from `real[S]` is on
//! the ordered link S→X; the relay keeps one *association* per such source (all bound at start):
//! an upstream socket that carries S's datagrams to `real[X]`, and whose replies from X (link
//! X→S) go back to S from `front[X]`, so S only ever sees `front[X]`. Datagrams from unknown
//! addresses are dropped and counted.
//!
//! Every datagram is judged by its link's [`shaper::LinkShaper`] under the link's current
//! [`LinkFaults`] (read per datagram, so a change applies to the next one). Datagrams to deliver
//! later wait in one bounded queue per link, sent by one task per link; every task ends on
//! [`RelayMesh::shutdown`] or when the last handle is dropped.

mod link;
pub mod shaper;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use link::{lock, Link};
pub use link::{LinkStats, MAX_QUEUED};
pub use shaper::{Admission, Delivery, DropReason, LinkFaults, LinkShaper};

/// Room for the largest UDP datagram.
const RECV_BUFFER: usize = 65_536;

/// The relay between a fixed set of agents. Cheap to clone; every clone is the same relay.
#[derive(Clone)]
pub struct RelayMesh {
    owner: Arc<Owner>,
}

/// Stops the relay's tasks when the last handle goes (the tasks only hold `Inner`).
struct Owner {
    inner: Arc<Inner>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

struct Inner {
    names: Vec<String>,
    real: Vec<SocketAddr>,
    by_real: HashMap<SocketAddr, usize>,
    fronts: Vec<Front>,
    /// `links[from * n + to]`.
    links: Vec<Arc<Link>>,
    unknown: AtomicU64,
    tasks: Mutex<Tasks>,
}

/// The address a node advertises, and its associations, one per source node.
struct Front {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    upstream: Mutex<Vec<Option<Arc<UdpSocket>>>>,
}

struct Tasks {
    set: JoinSet<()>,
    closed: bool,
}

impl RelayMesh {
    /// Binds one front socket per node and one association per ordered pair of nodes; `agents`
    /// = (node name, the agent's real QUIC address). `seed` fixes every random choice (each
    /// link's generator is seeded from it and the two names). Names and real addresses must be distinct; an unspecified real address
    /// (`0.0.0.0:port`) stands for the loopback one, where the agent's datagrams come from.
    pub async fn start(agents: &[(String, SocketAddr)], seed: u64) -> io::Result<Self> {
        let n = agents.len();
        let real: Vec<SocketAddr> = agents.iter().map(|(_, real)| reachable(real)).collect();
        let mut by_real = HashMap::new();
        let mut fronts = Vec::with_capacity(n);
        for (i, ((name, _), real)) in agents.iter().zip(&real).enumerate() {
            let taken = agents[..i].iter().any(|(other, _)| other == name);
            if taken || by_real.insert(*real, i).is_some() {
                let why = format!("relay: node {name} or its address {real} is given twice");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
            let socket = UdpSocket::bind(SocketAddr::new(loopback(real), 0)).await?;
            fronts.push(Front {
                addr: socket.local_addr()?,
                socket: Arc::new(socket),
                upstream: Mutex::new(vec![None; n]),
            });
        }
        let links = agents
            .iter()
            .flat_map(|(from, _)| agents.iter().map(move |(to, _)| (from, to)))
            .map(|(from, to)| Arc::new(Link::new(link_seed(seed, from, to))))
            .collect();
        let inner = Arc::new(Inner {
            names: agents.iter().map(|(name, _)| name.clone()).collect(),
            real,
            by_real,
            fronts,
            links,
            unknown: AtomicU64::new(0),
            tasks: Mutex::new(Tasks {
                set: JoinSet::new(),
                closed: false,
            }),
        });
        // Every association is bound now, while the caller still holds the agents' ports: one
        // bound later, as the first datagram arrives, takes an ephemeral port that may be an
        // agent's port released a moment before for the agent to bind (a start-up once failed
        // with `Address already in use` that way).
        for x in 0..n {
            for s in (0..n).filter(|&s| s != x) {
                if let Err(error) = inner.association(x, s) {
                    // The reply tasks already spawned hold `inner`: end them with it.
                    inner.shutdown();
                    return Err(error);
                }
            }
        }
        for x in 0..n {
            inner.spawn(serve_front(inner.clone(), x));
        }
        for link in &inner.links {
            inner.spawn(link.clone().deliver());
        }
        Ok(RelayMesh {
            owner: Arc::new(Owner { inner }),
        })
    }

    /// The address `node` advertises to its peers.
    pub fn front(&self, node: &str) -> Option<SocketAddr> {
        let inner = &self.owner.inner;
        inner.index(node).map(|x| inner.fronts[x].addr)
    }

    /// Replaces the faults of the link `from`→`to`; false (and nothing changes) when either
    /// node is unknown.
    pub fn set(&self, from: &str, to: &str, faults: LinkFaults) -> bool {
        let Some(link) = self.owner.inner.link(from, to) else {
            return false;
        };
        link.set(faults);
        true
    }

    /// Makes the link `from`→`to` clean again; false when either node is unknown.
    pub fn heal(&self, from: &str, to: &str) -> bool {
        self.set(from, to, LinkFaults::default())
    }

    /// Makes every link clean again.
    pub fn heal_all(&self) {
        for link in &self.owner.inner.links {
            link.set(LinkFaults::default());
        }
    }

    /// The faults currently on the link `from`→`to`.
    pub fn faults(&self, from: &str, to: &str) -> Option<LinkFaults> {
        self.owner.inner.link(from, to).map(|link| link.faults())
    }

    /// The counters of the link `from`→`to` (all zero when either node is unknown).
    pub fn stats(&self, from: &str, to: &str) -> LinkStats {
        let link = self.owner.inner.link(from, to);
        link.map(|link| link.stats()).unwrap_or_default()
    }

    /// The counters of every link between two different nodes, as (from, to, counters).
    pub fn all_stats(&self) -> Vec<(String, String, LinkStats)> {
        let inner = &self.owner.inner;
        let names = &inner.names;
        let pairs = names
            .iter()
            .flat_map(|from| names.iter().map(move |to| (from, to)));
        (pairs.zip(&inner.links))
            .filter(|((from, to), _)| from != to)
            .map(|((from, to), link)| (from.clone(), to.clone(), link.stats()))
            .collect()
    }

    /// Datagrams dropped because they came from an address that is no agent's.
    pub fn unknown(&self) -> u64 {
        self.owner.inner.unknown.load(Relaxed)
    }

    /// Stops every task of the relay: nothing is forwarded or delivered afterwards.
    pub fn shutdown(&self) {
        self.owner.inner.shutdown();
    }
}

impl Inner {
    fn index(&self, node: &str) -> Option<usize> {
        self.names.iter().position(|name| name == node)
    }

    fn link(&self, from: &str, to: &str) -> Option<&Link> {
        let (from, to) = (self.index(from)?, self.index(to)?);
        self.links
            .get(from * self.names.len() + to)
            .map(|link| &**link)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        if !tasks.closed {
            tasks.set.spawn(task);
        }
    }

    fn shutdown(&self) {
        let mut tasks = lock(&self.tasks);
        tasks.closed = true;
        tasks.set.abort_all();
    }

    /// The upstream socket carrying `s`'s datagrams to `x`, made (with its reply task) when the
    /// relay starts (see [`RelayMesh::start`]). Associations are never dropped: there is at
    /// most one per pair of nodes, and keeping its port keeps the source address that `x` sees
    /// stable.
    fn association(self: &Arc<Self>, x: usize, s: usize) -> io::Result<Arc<UdpSocket>> {
        let mut upstream = lock(&self.fronts[x].upstream);
        if let Some(socket) = &upstream[s] {
            return Ok(socket.clone());
        }
        let std = std::net::UdpSocket::bind(SocketAddr::new(loopback(&self.real[x]), 0))?;
        std.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std)?);
        self.spawn(serve_replies(self.clone(), x, s, socket.clone()));
        upstream[s] = Some(socket.clone());
        Ok(socket)
    }

    /// The ordered link `from`→`to`, by index.
    fn link_at(&self, from: usize, to: usize) -> &Link {
        &self.links[from * self.names.len() + to]
    }
}

/// Receives at `front[x]`: each datagram from `real[s]` goes to `real[x]` on link s→x.
async fn serve_front(inner: Arc<Inner>, x: usize) {
    let socket = inner.fronts[x].socket.clone();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let Some((len, src)) = receive(&socket, &mut buf).await else {
            continue;
        };
        let Some(&s) = inner.by_real.get(&src) else {
            inner.unknown.fetch_add(1, Relaxed);
            continue;
        };
        let link = inner.link_at(s, x);
        match inner.association(x, s) {
            Ok(up) => link.pass(&up, inner.real[x], &buf[..len]).await,
            Err(_) => link.failed(),
        }
    }
}

/// Receives on the association of `s` at `front[x]`: `x`'s replies go back to `real[s]` from
/// `front[x]`, on link x→s.
async fn serve_replies(inner: Arc<Inner>, x: usize, s: usize, socket: Arc<UdpSocket>) {
    let front = inner.fronts[x].socket.clone();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let Some((len, src)) = receive(&socket, &mut buf).await else {
            continue;
        };
        if src != inner.real[x] {
            inner.unknown.fetch_add(1, Relaxed);
            continue;
        }
        inner
            .link_at(x, s)
            .pass(&front, inner.real[s], &buf[..len])
            .await;
    }
}

/// One datagram, or `None` after a receive error (after a short pause, so errors cannot spin).
async fn receive(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match socket.recv_from(buf).await {
        Ok(got) => Some(got),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(1)).await;
            None
        }
    }
}

/// The loopback address of the agent's address family (the relay only serves one host).
fn loopback(real: &SocketAddr) -> IpAddr {
    match real {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// Where datagrams to an agent bound at `real` go, and where its datagrams come from.
fn reachable(real: &SocketAddr) -> SocketAddr {
    if real.ip().is_unspecified() {
        SocketAddr::new(loopback(real), real.port())
    } else {
        *real
    }
}

/// A link's seed: FNV-1a over the run's seed and the two names, then a SplitMix64 finish.
fn link_seed(seed: u64, from: &str, to: &str) -> u64 {
    let bytes = seed
        .to_le_bytes()
        .into_iter()
        .chain(from.bytes())
        .chain([0xff])
        .chain(to.bytes());
    let mut h = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests;
