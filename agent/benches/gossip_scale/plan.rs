//! Command line: configurations (`--modes`), sizes, intervals and budget of the run plan.

use std::time::Duration;

use chitchat::ProtocolVersion;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    Flat,
    Zoned,
}

#[derive(Clone)]
pub(crate) struct Mode {
    pub(crate) name: String,
    pub(crate) topology: Topology,
    pub(crate) protocol: ProtocolVersion,
    pub(crate) push: bool,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        let mut parts = s.split('-');
        let topology = match parts.next()? {
            "flat" => Topology::Flat,
            "zoned" => Topology::Zoned,
            _ => return None,
        };
        let protocol = match parts.next()? {
            "v0" => ProtocolVersion::V0,
            "v1" => ProtocolVersion::V1,
            _ => return None,
        };
        let push = match parts.next() {
            None => false,
            Some("push") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Mode {
            name: s.to_string(),
            topology,
            protocol,
            push,
        })
    }
}

pub(crate) struct Plan {
    pub(crate) sizes: Vec<usize>,
    pub(crate) modes: Vec<Mode>,
    /// Modes were named on the command line: run them whatever dilation they need.
    pub(crate) explicit_modes: bool,
    pub(crate) intervals: Vec<Duration>,
    pub(crate) zone_size: usize,
    pub(crate) budget: Duration,
    /// `--dilate D` forces the time dilation; otherwise it is chosen per run (see `Sim`).
    pub(crate) dilation: Option<u32>,
    /// Default plan: intervals after the first run only `SECONDARY_MODES`.
    pub(crate) secondary_modes_only: bool,
}

/// Configurations the default plan also runs at its second interval (1 s).
pub(crate) const SECONDARY_MODES: [&str; 2] = ["flat-v1", "zoned-v1-push"];

fn parse_list<T>(value: Option<&String>, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    value
        .map(|v| v.split(',').filter_map(|s| parse(s.trim())).collect())
        .unwrap_or_default()
}

pub(crate) fn parse_plan(args: &[String]) -> Plan {
    let mut plan = Plan {
        sizes: Vec::new(),
        modes: Vec::new(),
        explicit_modes: false,
        intervals: Vec::new(),
        zone_size: 40,
        budget: Duration::from_secs(330),
        dilation: None,
        secondary_modes_only: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        match arg.as_str() {
            "--modes" => {
                plan.modes = parse_list(args.get(i + 1), Mode::parse);
                plan.explicit_modes = !plan.modes.is_empty();
                i += 1;
            }
            "--dilate" => {
                plan.dilation = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .filter(|d| *d >= 1);
                i += 1;
            }
            "--intervals" => {
                plan.intervals = parse_list(args.get(i + 1), |s| {
                    s.parse().ok().map(Duration::from_millis)
                });
                i += 1;
            }
            "--zone-size" => {
                plan.zone_size = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(40)
                    .max(4);
                i += 1;
            }
            "--budget-secs" => {
                if let Some(secs) = args.get(i + 1).and_then(|s| s.parse().ok()) {
                    plan.budget = Duration::from_secs(secs);
                }
                i += 1;
            }
            _ => {
                if let Ok(n) = arg.parse::<usize>() {
                    if n >= 4 {
                        plan.sizes.push(n);
                    }
                }
                // Anything else (`--bench`, filters cargo passes) is ignored.
            }
        }
        i += 1;
    }
    if plan.sizes.is_empty() {
        plan.sizes = vec![100, 300, 1000];
    }
    if plan.modes.is_empty() {
        plan.modes = ["flat-v0", "flat-v1", "zoned-v1", "zoned-v1-push"]
            .iter()
            .filter_map(|s| Mode::parse(s))
            .collect();
    }
    if plan.intervals.is_empty() {
        plan.intervals = vec![Duration::from_millis(500), Duration::from_secs(1)];
        plan.secondary_modes_only = !plan.explicit_modes;
    }
    plan
}
