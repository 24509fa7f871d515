//! Node names, addresses and the synthetic JSON summary each node publishes, with a small RNG.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

const SUMMARY_LEN: usize = 600;

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub(crate) fn node_name(idx: usize) -> String {
    format!("node-{idx:04}")
}

pub(crate) fn zone_name(zone: usize) -> String {
    format!("zone-{zone:02}")
}

pub(crate) fn node_ip(idx: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (idx / 250) as u8, (idx % 250 + 1) as u8)
}

/// A ~600-byte JSON summary of the kind a Plexus node would publish about itself.
pub(crate) fn summary(idx: usize, zone: usize, rev: u64) -> String {
    let mut rng = Rng((idx as u64) << 20 | rev);
    let services = ["checkout", "payments", "inventory", "search"];
    let mut out = String::with_capacity(SUMMARY_LEN + 64);
    let _ = write!(
        out,
        r#"{{"node":"{}","zone":"{}","rev":{rev},"addr":"{}:7946","spiffe":"spiffe://prod.plexus/node/{}","services":["#,
        node_name(idx),
        zone_name(zone),
        node_ip(idx),
        node_name(idx)
    );
    for (i, name) in services.iter().enumerate() {
        let _ = write!(
            out,
            r#"{}{{"name":"{name}","port":{},"proto":"http","weight":{},"ver":"1.{}.{}"}}"#,
            if i == 0 { "" } else { "," },
            8080 + i,
            rng.below(100) + 1,
            rng.below(50),
            rng.below(10)
        );
    }
    let _ = write!(
        out,
        r#"],"load":{{"cpu":0.{:02},"conns":{}}},"cert_sha256":"{:016x}{:016x}{:016x}{:016x}","pad":""#,
        rng.below(100),
        rng.below(5000),
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    );
    while out.len() < SUMMARY_LEN - 2 {
        let _ = write!(out, "{:x}", rng.next() & 0xf);
    }
    out.push_str("\"}");
    out
}

fn summary_rev(value: &str) -> u64 {
    value
        .split_once("\"rev\":")
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

pub(crate) fn summary_entry(node: &str, value: &str) -> String {
    format!("{node}={}:{:08x};", summary_rev(value), fnv32(value))
}
