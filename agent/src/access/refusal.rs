//! A call the access policy refused, and how often refusals are logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use plexus_protocol::{NodeId, ServiceName};

/// How often one caller's refusals to one service are logged; the ones in between are
/// counted and reported with the next line.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Pairs remembered by the log limiter at most (a flood of new pairs forgets the oldest).
const MAX_REMEMBERED: usize = 1024;

/// A refused call: who called (by certificate), what it hosts, and the service it wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub caller: NodeId,
    pub caller_services: Vec<ServiceName>,
    pub service: ServiceName,
}

impl std::fmt::Display for Denied {
    /// One line for the calling app and the logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosting = if self.caller_services.is_empty() {
            "no service".to_owned()
        } else {
            self.caller_services
                .iter()
                .map(ServiceName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "the access policy does not let node {} (hosting {hosting}) call {}",
            self.caller, self.service
        )
    }
}

/// Rate limit of refusal logs, per (caller, service).
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: HashMap<(NodeId, ServiceName), (Instant, u64)>,
}

impl RefusalLog {
    /// Notes one refusal at `now`: `Some(n)` when it should be logged, `n` being the refusals
    /// of the pair not logged since the previous line; `None` to stay quiet.
    pub fn note(&mut self, caller: &NodeId, service: &ServiceName, now: Instant) -> Option<u64> {
        let key = (caller.clone(), service.clone());
        if let Some((at, quiet)) = self.last.get_mut(&key) {
            if now.saturating_duration_since(*at) < LOG_EVERY {
                *quiet += 1;
                return None;
            }
            let skipped = *quiet;
            *at = now;
            *quiet = 0;
            return Some(skipped);
        }
        if self.last.len() >= MAX_REMEMBERED {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < LOG_EVERY);
            if self.last.len() >= MAX_REMEMBERED {
                self.last.clear();
            }
        }
        self.last.insert(key, (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_reads_as_one_line() {
        let denied = Denied {
            caller: NodeId::new("node-batch").unwrap(),
            caller_services: vec![
                ServiceName::new("batch").unwrap(),
                ServiceName::new("report").unwrap(),
            ],
            service: ServiceName::new("payments").unwrap(),
        };
        assert_eq!(
            denied.to_string(),
            "the access policy does not let node node-batch (hosting batch, report) call payments"
        );
        let bare = Denied {
            caller_services: vec![],
            ..denied
        };
        assert!(bare.to_string().contains("(hosting no service)"));
    }

    #[test]
    fn refusals_are_logged_once_per_pair_and_interval_with_the_quiet_ones_counted() {
        let mut log = RefusalLog::default();
        let caller = NodeId::new("node-batch").unwrap();
        let other = NodeId::new("node-other").unwrap();
        let payments = ServiceName::new("payments").unwrap();
        let t0 = Instant::now();
        assert_eq!(log.note(&caller, &payments, t0), Some(0));
        for i in 1..=5 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(log.note(&caller, &payments, at), None);
        }
        assert_eq!(log.note(&other, &payments, t0), Some(0));
        assert_eq!(log.note(&caller, &payments, t0 + LOG_EVERY), Some(5));
        assert_eq!(log.note(&caller, &payments, t0 + LOG_EVERY), None);
    }

    #[test]
    fn the_limiter_forgets_pairs_rather_than_grow() {
        let mut log = RefusalLog::default();
        let payments = ServiceName::new("payments").unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_REMEMBERED * 2 {
            let caller = NodeId::new(format!("node-{i}")).unwrap();
            assert_eq!(log.note(&caller, &payments, t0), Some(0));
        }
        assert!(log.last.len() <= MAX_REMEMBERED);
    }
}
