//! Turning a [`RawConfig`] into an [`AgentConfig`], collecting every mistake on the way.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_protocol::NodeId;

use super::raw::RawConfig;
use super::{AgentConfig, ConfigError, ConfigErrors, TransportSettings};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:4433";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// One thread: at light load every extra worker adds thread wake-ups to each request (see
/// BENCHMARKS.md, "one worker thread"); busy nodes raise it.
pub const DEFAULT_WORKER_THREADS: usize = 1;
const MAX_WORKER_THREADS: i64 = 256;
const DEFAULT_DATA_DIR: &str = "/var/lib/plexus";
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Longest timeout or interval any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses TOML, naming the key path of a type error or unknown key.
pub fn parse(path: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    let one = |key: String, reason: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            key,
            reason,
        }])
    };
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| one(line_of(text, e.span()), e.message().to_owned()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = match e.path().to_string() {
            p if p == "." => line_of(text, e.inner().span()),
            p => p,
        };
        one(key, e.inner().message().to_owned())
    })
}

/// `line N` for a TOML error's span (what error messages name when no key path is known).
pub fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "(syntax)".into(),
    }
}

/// Collects mistakes while validating.
struct Checker<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn check<T, E: std::fmt::Display>(&mut self, key: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.error(key, e.to_string())).ok()
    }

    fn address(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        self.check(key, resolve(value))
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value) {
            Ok(d) if d.is_zero() => {
                self.error(key, "must be longer than zero");
                default
            }
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    key,
                    format!("{value:?} is longer than the maximum of 1 day"),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(
                    key,
                    format!("invalid duration {value:?} ({e}); write e.g. \"2s\""),
                );
                default
            }
        }
    }

    /// A file the agent must read: resolved against the config's directory, and readable.
    fn readable_file(&mut self, key: &str, value: Option<&PathBuf>) -> Option<PathBuf> {
        let Some(value) = value else {
            self.error(key, "is required");
            return None;
        };
        let path = self.file.parent().unwrap_or(Path::new(".")).join(value);
        match std::fs::File::open(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                self.error(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}

/// Accepts `IP:PORT`, or `HOST:PORT` resolved once now.
fn resolve(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let bad =
        |why: String| format!("invalid address {value:?}: {why}; expected IP:PORT or HOST:PORT");
    value
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("name resolves to no address".into()))
}

/// Two TCP listeners collide when they share a port and one address covers the other.
fn collides(a: SocketAddr, b: SocketAddr) -> bool {
    // 0.0.0.0 covers every IPv4 address; [::] covers every address of both families (Linux
    // binds it dual-stack by default). IPv4-mapped IPv6 addresses are compared as IPv4.
    let canonical = |addr: SocketAddr| addr.ip().to_canonical();
    let covers = |wide: SocketAddr, other: SocketAddr| {
        let wide_ip = canonical(wide);
        wide_ip.is_unspecified() && (wide.is_ipv6() || canonical(other).is_ipv4())
    };
    a.port() == b.port()
        && a.port() != 0
        && (canonical(a) == canonical(b) || covers(a, b) || covers(b, a))
}

pub fn validate(file: &Path, raw: RawConfig) -> Result<AgentConfig, ConfigErrors> {
    let mut c = Checker {
        file,
        errors: Vec::new(),
    };

    let listen = c.address("listen", raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN));
    let advertise = match &raw.advertise {
        Some(value) => c.address("advertise", value),
        None => listen,
    };
    if let Some(addr) = advertise.filter(|a| a.ip().is_unspecified() && raw.advertise.is_some()) {
        c.error(
            "advertise",
            format!("{addr} is not an address peers can reach"),
        );
    }
    let admin = c.address("admin", raw.admin.as_deref().unwrap_or(DEFAULT_ADMIN));
    let worker_threads = match raw.worker_threads {
        None => DEFAULT_WORKER_THREADS,
        Some(n @ 1..=MAX_WORKER_THREADS) => n as usize,
        Some(n) => {
            c.error(
                "worker_threads",
                format!("{n} is not 1 to {MAX_WORKER_THREADS}"),
            );
            DEFAULT_WORKER_THREADS
        }
    };
    let seeds: Vec<SocketAddr> = raw
        .seeds
        .iter()
        .enumerate()
        .filter_map(|(i, s)| c.address(&format!("seeds[{i}]"), s))
        .collect();

    let transport = TransportSettings {
        idle_timeout: c.duration(
            "transport.idle_timeout",
            raw.transport.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        ),
        keep_alive: c.duration(
            "transport.keep_alive",
            raw.transport.keep_alive.as_deref(),
            DEFAULT_KEEP_ALIVE,
        ),
    };
    if transport.keep_alive >= transport.idle_timeout
        && c.errors.iter().all(|e| !e.key.starts_with("transport."))
    {
        // Blame the key the user wrote; if both were written, the keep-alive.
        let key = if raw.transport.keep_alive.is_none() {
            "transport.idle_timeout"
        } else {
            "transport.keep_alive"
        };
        c.error(
            key,
            format!(
                "keep_alive ({}) must be shorter than idle_timeout ({})",
                humantime::format_duration(transport.keep_alive),
                humantime::format_duration(transport.idle_timeout)
            ),
        );
    }

    let defaults = crate::gossip::GossipSettings::default();
    let otlp_endpoint = raw.telemetry.otlp_endpoint.as_deref().and_then(|e| {
        let uri = match e.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => uri,
            _ => {
                c.error(
                    "telemetry.otlp_endpoint",
                    format!("{e:?} is not an http:// URL; write e.g. \"http://127.0.0.1:4318/v1/traces\""),
                );
                return None;
            }
        };
        Some(uri)
    });
    let gossip = crate::gossip::GossipSettings {
        interval: c.duration(
            "gossip.interval",
            raw.gossip.interval.as_deref(),
            defaults.interval,
        ),
        phi_threshold: match raw.gossip.phi_threshold {
            None => defaults.phi_threshold,
            Some(phi) if phi.is_finite() && (1.0..=100.0).contains(&phi) => phi,
            Some(phi) => {
                c.error(
                    "gossip.phi_threshold",
                    format!("{phi} is outside 1 to 100 (8 is a good default)"),
                );
                defaults.phi_threshold
            }
        },
    };
    if gossip.interval < Duration::from_millis(50) || gossip.interval > Duration::from_secs(60) {
        c.error(
            "gossip.interval",
            "must be between 50ms and 60s (500ms is the default)",
        );
    }

    let consensus = consensus::settings(&mut c, &raw.consensus);
    let canaries = consensus::canaries(&mut c, &raw.canary);
    let scaling = consensus::scaling(&mut c, &raw.scaling);
    let quarantine = quarantine::settings(&mut c, &raw.quarantine);
    let access = access::policy(
        &mut c,
        raw.access.as_ref(),
        &raw.policy,
        raw.consensus.bootstrap_expect.is_some(),
    );
    let services = services(&mut c, &raw.service);
    let mut upstreams = upstreams(&mut c, &raw.upstream);

    let mut listeners: Vec<(String, SocketAddr)> =
        admin.map(|a| ("admin".into(), a)).into_iter().collect();
    for (i, upstream) in upstreams.iter().enumerate() {
        let key = format!("upstream[{i}].listen");
        if let Some((other, _)) = listeners
            .iter()
            .find(|(_, a)| collides(*a, upstream.listen))
        {
            c.error(
                &key,
                format!("{} is already used by {other}", upstream.listen),
            );
        }
        listeners.push((key, upstream.listen));
    }

    // Relative paths resolve against the config file's directory, data_dir's too.
    let data_dir = raw
        .data_dir
        .as_ref()
        .map(|d| file.parent().unwrap_or(Path::new(".")).join(d));
    let state_dir = (data_dir.is_some() || consensus.bootstrap_expect.is_some())
        .then(|| data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
    let tls = tls::tls(
        &mut c,
        raw.tls.as_ref(),
        state_dir.as_deref(),
        consensus.bootstrap_expect.is_some(),
    );
    let credentials = tls.as_ref().map(|t| t.credentials.duplicate());
    let node_id = match (&raw.node_id, &credentials) {
        (Some(id), creds) => {
            let id = c.check("node_id", NodeId::new(id.as_str()));
            if let (Some(id), Some(creds)) = (&id, creds) {
                if id != creds.spiffe_id.node_id() {
                    c.error(
                        "node_id",
                        format!(
                            "is {id:?} but the certificate in tls.cert is for {}",
                            creds.spiffe_id
                        ),
                    );
                }
            }
            id
        }
        (None, Some(creds)) => Some(creds.spiffe_id.node_id().clone()),
        (None, None) => None,
    };

    match (node_id, listen, advertise, admin, tls) {
        (Some(node_id), Some(listen), Some(advertise), Some(admin), Some(tls))
            if c.errors.is_empty() =>
        {
            let caller = default_caller(&services, &node_id);
            for upstream in upstreams.iter_mut().filter(|u| u.caller.is_empty()) {
                upstream.caller = caller.clone();
            }
            Ok(AgentConfig {
                source: file.to_owned(),
                node_id,
                zone: raw.zone,
                data_dir_set: data_dir.is_some(),
                data_dir: data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
                listen,
                advertise,
                seeds,
                worker_threads,
                admin,
                transport,
                gossip,
                consensus,
                canaries,
                scaling,
                access,
                quarantine,
                otlp_endpoint,
                services,
                upstreams,
                trust: tls.trust,
                credentials: tls.credentials,
                tls_files: tls.files,
                pki: tls.pki,
            })
        }
        _ => Err(ConfigErrors(c.errors)),
    }
}

mod access;
mod consensus;
mod quarantine;
pub(crate) mod tls;
mod workloads;
use workloads::{default_caller, services, upstreams};

#[cfg(test)]
mod tests;
