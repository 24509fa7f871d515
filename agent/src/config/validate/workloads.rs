//! `[[service]]` and `[[upstream]]` tables: what this node hosts and what its apps call.

use std::net::SocketAddr;
use std::time::Duration;

use plexus_protocol::{NodeId, ServiceName};

use super::Checker;
use crate::config::raw::{RawHealth, RawOutlier, RawService, RawUpstream};
use crate::config::{HealthCheck, HealthProbe, LocalService, Protocol, RequestPolicy, Upstream};
use crate::policy::limit::LimitConfig;
use crate::policy::outlier::OutlierConfig;
use crate::policy::retry::RetryBudgetConfig;

const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_RETRIES: u32 = 2;
const MAX_RETRIES: u32 = 10;
const DEFAULT_CAPACITY: u32 = 1024;

/// The calling service of upstreams that do not name one: the node's only hosted service, or
/// `node/ID` when it hosts none or several.
pub(super) fn default_caller(services: &[LocalService], node_id: &NodeId) -> String {
    match services {
        [only] => only.name.to_string(),
        _ => format!("node/{node_id}"),
    }
}

fn protocol(c: &mut Checker<'_>, key: String, value: Option<&str>) -> Option<Option<Protocol>> {
    match value {
        None => Some(None),
        Some("tcp") => Some(Some(Protocol::Tcp)),
        Some("http") => Some(Some(Protocol::Http)),
        Some(other) => {
            c.error(
                key,
                format!("unknown protocol {other:?}; use \"tcp\" or \"http\""),
            );
            None
        }
    }
}

fn health(c: &mut Checker<'_>, key: &dyn Fn(&str) -> String, h: &RawHealth) -> Option<HealthCheck> {
    let interval = c.duration(
        &key("health.interval"),
        h.interval.as_deref(),
        Duration::from_secs(1),
    );
    let probe = match (h.tcp, &h.http) {
        (Some(true), None) => HealthProbe::Tcp,
        (None | Some(false), Some(path)) if path.starts_with('/') && path.len() <= 1024 => {
            match path.parse::<hyper::Uri>() {
                Ok(_) => HealthProbe::Http { path: path.clone() },
                Err(e) => {
                    c.error(
                        key("health.http"),
                        format!("{path:?} is not a valid path ({e})"),
                    );
                    return None;
                }
            }
        }
        (None | Some(false), Some(path)) => {
            c.error(
                key("health.http"),
                format!("{path:?} must be a path starting with \"/\" (at most 1024 bytes)"),
            );
            return None;
        }
        (Some(true), Some(_)) => {
            c.error(
                key("health"),
                "choose one probe: tcp = true or http = \"/path\"",
            );
            return None;
        }
        (None | Some(false), None) => {
            c.error(
                key("health"),
                "no probe given: write health = { tcp = true } or health = { http = \"/healthz\" }",
            );
            return None;
        }
    };
    Some(HealthCheck { probe, interval })
}

pub(super) fn services(c: &mut Checker<'_>, raw: &[RawService]) -> Vec<LocalService> {
    let mut out: Vec<LocalService> = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let key = |field: &str| format!("service[{i}].{field}");
        let name = c.check(&key("name"), ServiceName::new(s.name.as_str()));
        if let Some(name) = &name {
            if out.iter().any(|o| &o.name == name) {
                c.error(key("name"), format!("service {name:?} is declared twice"));
            }
        }
        let address = c.address(&key("address"), &s.address);
        let protocol =
            protocol(c, key("protocol"), s.protocol.as_deref()).map(|p| p.unwrap_or(Protocol::Tcp));
        let capacity = match s.capacity {
            Some(0) => {
                c.error(key("capacity"), "must be at least 1");
                None
            }
            Some(n) => Some(n),
            None => Some(DEFAULT_CAPACITY),
        };
        if let Some(version) = &s.version {
            if version.len() > plexus_protocol::gossip::MAX_LABEL_LEN {
                c.error(key("version"), "longer than 64 bytes");
            }
        }
        let health = s.health.as_ref().and_then(|h| health(c, &key, h));
        if s.health.is_some() && health.is_none() {
            continue;
        }
        if let (
            Some(HealthCheck {
                probe: HealthProbe::Http { .. },
                ..
            }),
            Some(Protocol::Tcp),
        ) = (&health, protocol)
        {
            c.error(
                key("health.http"),
                "an HTTP probe needs protocol = \"http\"",
            );
        }
        if s.adaptive_limit == Some(true) && protocol == Some(Protocol::Tcp) {
            c.error(
                key("adaptive_limit"),
                "only HTTP services have an adaptive limit (a TCP connection has no request latency)",
            );
        }
        if let (Some(name), Some(address), Some(protocol), Some(capacity)) =
            (name, address, protocol, capacity)
        {
            let limit = (protocol == Protocol::Http && s.adaptive_limit != Some(false))
                .then(LimitConfig::default);
            out.push(LocalService {
                name,
                address,
                protocol,
                version: s.version.clone(),
                capacity,
                health,
                limit,
            });
        }
    }
    out
}

fn outlier(
    c: &mut Checker<'_>,
    key: &dyn Fn(&str) -> String,
    raw: Option<&RawOutlier>,
) -> OutlierConfig {
    let d = OutlierConfig::default();
    let Some(raw) = raw else { return d };
    let consecutive_failures = match raw.consecutive_failures {
        Some(0) => {
            c.error(key("outlier.consecutive_failures"), "must be at least 1");
            d.consecutive_failures
        }
        Some(n) => n,
        None => d.consecutive_failures,
    };
    let max_ejected_percent = match raw.max_ejected_percent {
        Some(p) if p > 100 => {
            c.error(key("outlier.max_ejected_percent"), "must be at most 100");
            d.max_ejected_percent
        }
        Some(p) => p,
        None => d.max_ejected_percent,
    };
    let base_ejection = c.duration(
        &key("outlier.base_ejection"),
        raw.base_ejection.as_deref(),
        d.base_ejection,
    );
    let max_ejection = c.duration(
        &key("outlier.max_ejection"),
        raw.max_ejection.as_deref(),
        d.max_ejection,
    );
    if max_ejection < base_ejection {
        c.error(
            key("outlier.max_ejection"),
            "is shorter than outlier.base_ejection",
        );
    }
    OutlierConfig {
        consecutive_failures,
        interval: c.duration(
            &key("outlier.interval"),
            raw.interval.as_deref(),
            d.interval,
        ),
        base_ejection,
        max_ejection,
        max_ejected_percent,
        ..d
    }
}

fn requests(c: &mut Checker<'_>, key: &dyn Fn(&str) -> String, u: &RawUpstream) -> RequestPolicy {
    let request_timeout = c.duration(
        &key("request_timeout"),
        u.request_timeout.as_deref(),
        DEFAULT_REQUEST_TIMEOUT,
    );
    let try_timeout = c.duration(
        &key("try_timeout"),
        u.try_timeout.as_deref(),
        request_timeout,
    );
    if try_timeout > request_timeout {
        c.error(key("try_timeout"), "is longer than request_timeout");
    }
    let retries = match u.retries {
        Some(n) if n > MAX_RETRIES => {
            c.error(key("retries"), format!("at most {MAX_RETRIES}"));
            DEFAULT_RETRIES
        }
        Some(n) => n,
        None => DEFAULT_RETRIES,
    };
    let d = RetryBudgetConfig::default();
    let budget = u.retry_budget.as_ref();
    let ratio = match budget.and_then(|b| b.ratio) {
        Some(r) if !(0.0..=1.0).contains(&r) => {
            c.error(key("retry_budget.ratio"), "must be between 0 and 1");
            d.ratio
        }
        Some(r) => r,
        None => d.ratio,
    };
    RequestPolicy {
        request_timeout,
        try_timeout,
        retries,
        retry_non_idempotent: u.retry_non_idempotent.unwrap_or(false),
        retry_budget: RetryBudgetConfig {
            ratio,
            min_per_second: budget
                .and_then(|b| b.min_per_second)
                .unwrap_or(d.min_per_second),
        },
        hedge: u.hedge.unwrap_or(false),
    }
}

/// Upstreams; a caller left out is empty here and filled in by [`default_caller`].
pub(super) fn upstreams(c: &mut Checker<'_>, raw: &[RawUpstream]) -> Vec<Upstream> {
    let mut out = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let key = |field: &str| format!("upstream[{i}].{field}");
        let service = c.check(&key("service"), ServiceName::new(u.service.as_str()));
        let listen = c.address(&key("listen"), &u.listen);
        let endpoints: Vec<SocketAddr> = u
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(j, e)| c.address(&format!("upstream[{i}].endpoints[{j}]"), e))
            .collect();
        let timeout = c.duration(
            &key("timeout"),
            u.timeout.as_deref(),
            DEFAULT_UPSTREAM_TIMEOUT,
        );
        let caller = match &u.caller {
            Some(caller) => c
                .check(&key("caller"), ServiceName::new(caller.as_str()))
                .map(|name| name.to_string()),
            None => Some(String::new()),
        };
        let protocol = protocol(c, key("protocol"), u.protocol.as_deref());
        let requests = requests(c, &key, u);
        let outlier = outlier(c, &key, u.outlier.as_ref());
        if let (Some(service), Some(listen), Some(caller), Some(protocol)) =
            (service, listen, caller, protocol)
        {
            out.push(Upstream {
                service,
                listen,
                endpoints,
                caller,
                timeout,
                protocol,
                requests,
                outlier,
            });
        }
    }
    out
}
