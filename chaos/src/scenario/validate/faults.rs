//! Validating one `[[phase]] faults` entry.

use std::time::Duration;

use super::super::raw::RawFault;
use super::{used_keys, Names, Validator, NODE_TARGETS};
use crate::scenario::*;

impl Validator<'_> {
    pub(super) fn fault(
        &mut self,
        key: &str,
        raw: &RawFault,
        phase: Duration,
        names: &Names,
        services: &[ServiceSpec],
    ) -> Option<Fault> {
        let (kind, allowed): (Option<FaultKind>, &[&str]) = match raw.kind.as_str() {
            "kill" => (Some(FaultKind::Kill), &[]),
            "stop" => (Some(FaultKind::Stop), &[]),
            "restart" => (Some(FaultKind::Restart), &[]),
            "rolling-restart" => {
                let interval = self.opt_duration(
                    &format!("{key}.interval"),
                    raw.interval.as_deref(),
                    Duration::from_secs(5),
                    phase,
                );
                (Some(FaultKind::RollingRestart { interval }), &["interval"])
            }
            "partition" | "loss" | "latency" | "reorder" | "duplicate" | "bandwidth" => {
                let effect = self.net_effect(key, raw);
                let peer = match raw.peer.as_deref() {
                    None => Some(Target::Rest),
                    Some(p) => {
                        let mut allow = NODE_TARGETS.to_vec();
                        allow.push("rest");
                        self.target(&format!("{key}.peer"), p, names, &allow)
                    }
                };
                let direction = match raw.direction.as_deref() {
                    None | Some("both") => Some(Direction::Both),
                    Some("outbound") => Some(Direction::Outbound),
                    Some("inbound") => Some(Direction::Inbound),
                    Some(other) => {
                        self.error(
                            format!("{key}.direction"),
                            format!("`{other}`: use \"both\", \"outbound\" (from the target) or \"inbound\" (to it)"),
                        );
                        None
                    }
                };
                let kind = match (effect, peer, direction) {
                    (Some(effect), Some(peer), Some(direction)) => Some(FaultKind::Network {
                        effect,
                        peer,
                        direction,
                    }),
                    _ => None,
                };
                let allowed: &[&str] = match raw.kind.as_str() {
                    "partition" => &["peer", "direction"],
                    "loss" | "duplicate" => &["peer", "direction", "rate"],
                    "latency" => &["peer", "direction", "delay", "jitter"],
                    "reorder" => &["peer", "direction", "rate"],
                    _ => &["peer", "direction", "bandwidth"],
                };
                (kind, allowed)
            }
            "backend-errors" | "backend-latency" | "backend-hang" | "backend-reset" => {
                let effect = self.backend_effect(key, raw);
                if let Some(service) = &raw.service {
                    if !services.iter().any(|s| &s.name == service) {
                        self.error(
                            format!("{key}.service"),
                            format!("`{service}` is not a service of the topology"),
                        );
                    }
                }
                if let Some(version) = &raw.version {
                    let known = services
                        .iter()
                        .any(|s| s.versions.values().any(|v| v == version));
                    if !known {
                        self.error(
                            format!("{key}.version"),
                            format!("no service runs version `{version}`"),
                        );
                    }
                }
                let kind = effect.map(|effect| FaultKind::Backend {
                    effect,
                    service: raw.service.clone(),
                    version: raw.version.clone(),
                });
                let allowed: &[&str] = match raw.kind.as_str() {
                    "backend-errors" => &["service", "version", "rate", "status"],
                    "backend-latency" => &["service", "version", "delay", "jitter"],
                    "backend-reset" => &["service", "version", "rate"],
                    _ => &["service", "version"],
                };
                (kind, allowed)
            }
            "cert-expired" => (Some(FaultKind::Certificate(CertFlaw::Expired)), &[]),
            "cert-not-yet-valid" => (Some(FaultKind::Certificate(CertFlaw::NotYetValid)), &[]),
            "cert-wrong-trust-domain" => (
                Some(FaultKind::Certificate(CertFlaw::WrongTrustDomain)),
                &[],
            ),
            "cert-untrusted" => (Some(FaultKind::Certificate(CertFlaw::Untrusted)), &[]),
            "cert-revoked" => {
                self.error(
                    format!("{key}.kind"),
                    "`cert-revoked` needs the committed deny list of the trust issue, which the agent does not have yet",
                );
                return None;
            }
            "clock-skew" => {
                let offset = self.clock_offset(&format!("{key}.offset"), raw.offset.as_deref());
                (
                    offset.map(|offset_secs| FaultKind::ClockSkew { offset_secs }),
                    &["offset"],
                )
            }
            "ca-rotate" => {
                if !self.ca_in_log {
                    self.error(
                        format!("{key}.kind"),
                        "`ca-rotate` needs [trust] ca = \"decision-log\": only a CA in the decision log rotates",
                    );
                }
                (Some(FaultKind::CaRotate), &[])
            }
            "lying-observer" => (self.lying_observer(key, raw, names), &["about"]),
            "policy-change" => {
                if !self.consensus {
                    self.error(
                        format!("{key}.kind"),
                        "`policy-change` needs [consensus]: the leader proposes the access policy",
                    );
                }
                if raw.default.is_none() && raw.policy.is_none() {
                    self.error(
                        format!("{key}.policy"),
                        "missing: the new policy, e.g. policy = [{ deny = { from = \"batch\", to = \"echo\" } }] (and `default`)",
                    );
                }
                let policy = self.policy(
                    (&format!("{key}.default"), raw.default.as_deref()),
                    (
                        &format!("{key}.policy"),
                        raw.policy.as_deref().unwrap_or(&[]),
                    ),
                    services,
                );
                (policy.map(FaultKind::PolicyChange), &["default", "policy"])
            }
            other => {
                self.error(
                    format!("{key}.kind"),
                    format!(
                        "`{other}` is not a fault; use kill, stop, restart, rolling-restart, partition, loss, latency, \
                         reorder, duplicate, bandwidth, backend-errors, backend-latency, backend-hang, backend-reset, \
                         cert-expired, cert-not-yet-valid, cert-wrong-trust-domain, cert-untrusted, clock-skew, \
                         ca-rotate, lying-observer or policy-change"
                    ),
                );
                return None;
            }
        };
        for used in used_keys(raw) {
            if !allowed.contains(&used) {
                self.error(
                    format!("{key}.{used}"),
                    format!("does not apply to `{}`", raw.kind),
                );
            }
        }
        let target = match raw.target.as_deref() {
            Some(t) => self.target(&format!("{key}.target"), t, names, NODE_TARGETS),
            None => {
                self.error(format!("{key}.target"), "missing: one, minority, majority, all, leader, voter, non-voter, voter-minority, voter-majority, node:NAME or zone:NAME");
                None
            }
        };
        if let (Some(FaultKind::LyingObserver { about }), Some(Target::Node(liar))) =
            (&kind, &target)
        {
            if about == liar {
                self.error(
                    format!("{key}.about"),
                    "a node lying about itself says nothing about the mesh: name another node",
                );
            }
        }
        let instant = kind.as_ref().is_some_and(FaultKind::is_instant)
            && !matches!(
                kind,
                Some(FaultKind::Restart | FaultKind::RollingRestart { .. })
            );
        if instant && raw.lasts.is_some() {
            self.error(
                format!("{key}.for"),
                format!(
                    "`{}` happens at one instant: nothing lasts or heals",
                    raw.kind
                ),
            );
        }
        let rolling = matches!(kind, Some(FaultKind::RollingRestart { .. }));
        if rolling
            && target
                .as_ref()
                .is_some_and(|t| t.asks_agents(self.consensus))
        {
            self.error(
                format!("{key}.target"),
                "a rolling restart is planned node by node before the run; a role the agents \
                 decide (leader, voters) is only known when a fault starts: name the nodes",
            );
        }
        let at = self.opt_duration(
            &format!("{key}.at"),
            raw.at.as_deref(),
            Duration::ZERO,
            phase,
        );
        let lasts = raw
            .lasts
            .as_deref()
            .and_then(|v| self.duration(&format!("{key}.for"), v, Duration::from_millis(1), phase));
        if at + lasts.unwrap_or_default() > phase {
            self.error(format!("{key}.for"), "the fault would outlast its phase");
        }
        Some(Fault {
            kind: kind?,
            target: target?,
            at,
            lasts,
        })
    }

    fn lying_observer(&mut self, key: &str, raw: &RawFault, names: &Names) -> Option<FaultKind> {
        if !self.consensus {
            self.error(
                format!("{key}.kind"),
                "`lying-observer` needs [consensus]: quarantine verdicts are the leader's",
            );
        }
        let about = match raw.about.as_deref() {
            None => {
                self.error(
                    format!("{key}.about"),
                    "missing: the node the observer lies about, e.g. \"node:node-5\"",
                );
                None
            }
            Some(v) if !v.starts_with("node:") => {
                self.error(
                    format!("{key}.about"),
                    format!("`{v}`: name one node, e.g. \"node:node-5\""),
                );
                None
            }
            Some(v) => match self.target(&format!("{key}.about"), v, names, &["node:"]) {
                Some(Target::Node(n)) => Some(n),
                _ => None,
            },
        };
        about.map(|about| FaultKind::LyingObserver { about })
    }

    fn net_effect(&mut self, key: &str, raw: &RawFault) -> Option<NetEffect> {
        let second = Duration::from_secs(60);
        Some(match raw.kind.as_str() {
            "partition" => NetEffect::Partition,
            "loss" => NetEffect::Loss {
                rate: self.ratio(&format!("{key}.rate"), raw.rate)?,
            },
            "duplicate" => NetEffect::Duplicate {
                rate: self.ratio(&format!("{key}.rate"), raw.rate)?,
            },
            "latency" => {
                let Some(delay) = raw.delay.as_deref() else {
                    self.error(format!("{key}.delay"), "missing, e.g. \"100ms\"");
                    return None;
                };
                let delay =
                    self.duration(&format!("{key}.delay"), delay, Duration::ZERO, second)?;
                let jitter = self.opt_duration(
                    &format!("{key}.jitter"),
                    raw.jitter.as_deref(),
                    Duration::ZERO,
                    second,
                );
                NetEffect::Latency { delay, jitter }
            }
            "reorder" => NetEffect::Reorder {
                rate: self.ratio(&format!("{key}.rate"), raw.rate)?,
            },
            _ => {
                let Some(text) = raw.bandwidth.as_deref() else {
                    self.error(format!("{key}.bandwidth"), "missing, e.g. \"64KiB/s\"");
                    return None;
                };
                match bytes_per_second(text) {
                    Some(b) if b >= 1024 => NetEffect::Bandwidth { bytes_per_sec: b },
                    _ => {
                        self.error(format!("{key}.bandwidth"), format!("`{text}`: write bytes per second of at least 1KiB/s, e.g. \"64KiB/s\", \"1MB/s\""));
                        return None;
                    }
                }
            }
        })
    }

    fn backend_effect(&mut self, key: &str, raw: &RawFault) -> Option<BackendEffect> {
        let minute = Duration::from_secs(60);
        Some(match raw.kind.as_str() {
            "backend-errors" => {
                let status = raw.status.unwrap_or(503);
                if !(400..=599).contains(&status) {
                    self.error(
                        format!("{key}.status"),
                        format!("{status}: an error status is 400 to 599"),
                    );
                    return None;
                }
                BackendEffect::Errors {
                    rate: raw
                        .rate
                        .map_or(Some(1.0), |r| self.ratio(&format!("{key}.rate"), Some(r)))?,
                    status: u16::try_from(status).ok()?,
                }
            }
            "backend-latency" => {
                let Some(delay) = raw.delay.as_deref() else {
                    self.error(format!("{key}.delay"), "missing, e.g. \"200ms\"");
                    return None;
                };
                BackendEffect::Latency {
                    delay: self.duration(&format!("{key}.delay"), delay, Duration::ZERO, minute)?,
                    jitter: self.opt_duration(
                        &format!("{key}.jitter"),
                        raw.jitter.as_deref(),
                        Duration::ZERO,
                        minute,
                    ),
                }
            }
            "backend-reset" => BackendEffect::Reset {
                rate: raw
                    .rate
                    .map_or(Some(1.0), |r| self.ratio(&format!("{key}.rate"), Some(r)))?,
            },
            _ => BackendEffect::Hang,
        })
    }

    fn clock_offset(&mut self, key: &str, value: Option<&str>) -> Option<i64> {
        let Some(text) = value else {
            self.error(key, "missing, e.g. \"+2h\" or \"-30m\"");
            return None;
        };
        let (sign, rest) = match text.as_bytes().first() {
            Some(b'+') => (1, &text[1..]),
            Some(b'-') => (-1, &text[1..]),
            _ => {
                self.error(key, format!("`{text}`: start with + or -, e.g. \"+2h\""));
                return None;
            }
        };
        let d = self.duration(
            key,
            rest,
            Duration::from_secs(1),
            Duration::from_secs(10 * 365 * 86400),
        )?;
        Some(sign * i64::try_from(d.as_secs()).ok()?)
    }
}

/// `64KiB/s`, `1MB/s`, `500000` (bytes per second).
pub(crate) fn bytes_per_second(text: &str) -> Option<u64> {
    let t = text.trim().trim_end_matches("/s").trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let value = number * scale;
    (0.0..1e12).contains(&value).then_some(value as u64)
}
