//! The load this agent sees: per hosted service (requests, errors, latency, in-flight, capacity,
//! readiness) and per dependency edge (caller service to callee service). Gossip publishes
//! readings of it; the proxies write it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_protocol::ServiceName;

use super::window::{RequestWindow, WindowReading};
use crate::policy::limit::{ConcurrencyLimit, LimitConfig, Permit};

/// How long one bucket of a load window lasts; readings cover one to two of them.
pub const LOAD_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct HostedLoad {
    window: Mutex<RequestWindow>,
    in_flight: AtomicU32,
    capacity: u32,
    ready: AtomicBool,
    /// The adaptive limit (HTTP services), under `capacity`.
    limit: Option<Mutex<ConcurrencyLimit>>,
    shed: AtomicU64,
    /// `(when, shed total then, rate)` of the last rate reading.
    shed_mark: Mutex<(Instant, u64, f32)>,
}

/// Load counters shared by the proxies (writers) and the gossip publisher (reader).
#[derive(Debug, Clone)]
pub struct LoadBook {
    hosted: Arc<HashMap<ServiceName, HostedLoad>>,
    /// By caller, then callee: found per request without building an owned key.
    edges: Arc<Mutex<HashMap<String, HashMap<ServiceName, RequestWindow>>>>,
}

/// One hosted service's load, read.
#[derive(Debug, Clone, PartialEq)]
pub struct HostedReading {
    pub service: ServiceName,
    pub window: WindowReading,
    pub in_flight: u32,
    pub capacity: u32,
    pub ready: bool,
    /// The adaptive concurrency limit now (`capacity` when the service has none).
    pub concurrency_limit: u32,
    pub shed_total: u64,
    pub shed_per_sec: f32,
}

/// One dependency edge's traffic, read.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeReading {
    pub caller: String,
    pub callee: ServiceName,
    pub window: WindowReading,
}

/// A request admitted to a hosted service; dropping it ends it.
#[derive(Debug)]
pub struct Admitted {
    book: LoadBook,
    service: ServiceName,
    started: Instant,
    latency: Option<Duration>,
    ok: bool,
    permit: Option<Permit>,
}

impl Admitted {
    /// Marks the request failed (it is recorded when dropped).
    pub fn failed(&mut self) {
        self.ok = false;
    }

    /// Takes the request's latency now; it stays in flight until dropped.
    pub fn mark_connected(&mut self) {
        self.latency = Some(self.started.elapsed());
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(load) = self.book.hosted.get(&self.service) {
            let latency = self.latency.unwrap_or_else(|| self.started.elapsed());
            if let Ok(mut window) = load.window.lock() {
                window.record(Instant::now(), latency, self.ok);
            }
            if let (Some(limit), Some(permit)) = (&load.limit, self.permit.take()) {
                if let Ok(mut limit) = limit.lock() {
                    limit.release(permit, tokio::time::Instant::now(), latency, self.ok);
                }
            }
            load.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl LoadBook {
    /// A book for the hosted services `(name, capacity, adaptive limit)`; all start not ready
    /// until probed. The limit's `max` is capped at the capacity.
    pub fn new(hosted: impl IntoIterator<Item = (ServiceName, u32, Option<LimitConfig>)>) -> Self {
        let now = Instant::now();
        let hosted = hosted
            .into_iter()
            .map(|(name, capacity, limit)| {
                let limit = limit.map(|config| {
                    let config = LimitConfig {
                        max: config.max.min(capacity),
                        ..config
                    };
                    Mutex::new(ConcurrencyLimit::new(config, tokio::time::Instant::now()))
                });
                (
                    name,
                    HostedLoad {
                        window: Mutex::new(RequestWindow::new(LOAD_WINDOW, now)),
                        in_flight: AtomicU32::new(0),
                        capacity,
                        ready: AtomicBool::new(false),
                        limit,
                        shed: AtomicU64::new(0),
                        shed_mark: Mutex::new((now, 0, 0.0)),
                    },
                )
            })
            .collect();
        Self {
            hosted: Arc::new(hosted),
            edges: Arc::default(),
        }
    }

    /// Admits a request to `service` unless it already has `capacity` in flight or its
    /// adaptive limit is reached; a refusal is counted as shed.
    pub fn admit(&self, service: &ServiceName) -> Option<Admitted> {
        let load = self.hosted.get(service)?;
        let permit = match &load.limit {
            None => None,
            Some(limit) => match limit.lock().ok().and_then(|mut l| l.try_acquire()) {
                Some(permit) => Some(permit),
                None => {
                    load.shed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            },
        };
        let admitted = load
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < load.capacity).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            load.shed.fetch_add(1, Ordering::Relaxed);
            if let (Some(limit), Some(permit)) = (&load.limit, permit) {
                if let Ok(mut limit) = limit.lock() {
                    limit.release(permit, tokio::time::Instant::now(), Duration::ZERO, false);
                }
            }
            return None;
        }
        Some(Admitted {
            book: self.clone(),
            service: service.clone(),
            started: Instant::now(),
            latency: None,
            ok: true,
            permit,
        })
    }

    /// The adaptive limit of `service`, read (`None` for services without one).
    pub fn limit(&self, service: &ServiceName) -> Option<crate::policy::limit::LimitReading> {
        let load = self.hosted.get(service)?;
        load.limit.as_ref()?.lock().ok().map(|l| l.reading())
    }

    /// Records a request that was refused before it was admitted (counts as an error).
    pub fn refused(&self, service: &ServiceName) {
        if let Some(load) = self.hosted.get(service) {
            if let Ok(mut window) = load.window.lock() {
                window.record(Instant::now(), Duration::ZERO, false);
            }
        }
    }

    /// Sets whether `service` is ready for traffic; returns whether that changed it.
    pub fn set_ready(&self, service: &ServiceName, ready: bool) -> bool {
        self.hosted
            .get(service)
            .map(|load| load.ready.swap(ready, Ordering::AcqRel) != ready)
            .unwrap_or(false)
    }

    /// Records one request from `caller` to `callee` as the caller's agent saw it.
    pub fn record_edge(&self, caller: &str, callee: &ServiceName, latency: Duration, ok: bool) {
        let now = Instant::now();
        let mut edges = self.edges.lock().expect("edge load lock poisoned");
        if let Some(window) = edges.get_mut(caller).and_then(|c| c.get_mut(callee)) {
            window.record(now, latency, ok);
            return;
        }
        edges
            .entry(caller.to_owned())
            .or_default()
            .entry(callee.clone())
            .or_insert_with(|| RequestWindow::new(LOAD_WINDOW, now))
            .record(now, latency, ok);
    }

    /// Every hosted service's load now, sorted by name.
    pub fn hosted(&self, now: Instant) -> Vec<HostedReading> {
        let mut out: Vec<HostedReading> = self
            .hosted
            .iter()
            .map(|(service, load)| HostedReading {
                service: service.clone(),
                window: load
                    .window
                    .lock()
                    .map(|mut w| w.read(now))
                    .unwrap_or_default(),
                in_flight: load.in_flight.load(Ordering::Acquire),
                capacity: load.capacity,
                ready: load.ready.load(Ordering::Acquire),
                concurrency_limit: load
                    .limit
                    .as_ref()
                    .and_then(|l| l.lock().ok().map(|l| l.limit()))
                    .unwrap_or(load.capacity),
                shed_total: load.shed.load(Ordering::Relaxed),
                shed_per_sec: shed_rate(load, now),
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }

    /// Every edge with traffic in the window, busiest first. Idle edges are forgotten.
    pub fn edges(&self, now: Instant) -> Vec<EdgeReading> {
        let mut edges = self.edges.lock().expect("edge load lock poisoned");
        let mut out = Vec::new();
        edges.retain(|caller, callees| {
            callees.retain(|callee, window| {
                let reading = window.read(now);
                let active = reading.requests_per_sec > 0.0;
                if active {
                    out.push(EdgeReading {
                        caller: caller.clone(),
                        callee: callee.clone(),
                        window: reading,
                    });
                }
                active
            });
            !callees.is_empty()
        });
        out.sort_by(|a, b| {
            b.window
                .requests_per_sec
                .total_cmp(&a.window.requests_per_sec)
                .then_with(|| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)))
        });
        out
    }
}

/// Shed requests per second since the previous reading (at least a second apart; in between,
/// the previous rate stands).
fn shed_rate(load: &HostedLoad, now: Instant) -> f32 {
    let total = load.shed.load(Ordering::Relaxed);
    let Ok(mut mark) = load.shed_mark.lock() else {
        return 0.0;
    };
    let elapsed = now.saturating_duration_since(mark.0);
    if elapsed >= Duration::from_secs(1) {
        let rate = total.saturating_sub(mark.1) as f64 / elapsed.as_secs_f64();
        *mark = (now, total, rate as f32);
    }
    mark.2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    #[test]
    fn capacity_bounds_admission_and_drops_release_it() {
        let book = LoadBook::new([(name("api"), 2, None)]);
        let a = book.admit(&name("api")).unwrap();
        let mut b = book.admit(&name("api")).unwrap();
        assert!(book.admit(&name("api")).is_none());
        b.failed();
        drop(b);
        let reading = &book.hosted(Instant::now())[0];
        assert_eq!(reading.in_flight, 1);
        assert!(reading.window.errors_per_sec > 0.0);
        drop(a);
        assert_eq!(book.hosted(Instant::now())[0].in_flight, 0);
        assert!(book.admit(&name("other")).is_none());
    }

    #[test]
    fn readiness_changes_are_reported_once() {
        let book = LoadBook::new([(name("api"), 2, None)]);
        assert!(!book.hosted(Instant::now())[0].ready);
        assert!(book.set_ready(&name("api"), true));
        assert!(!book.set_ready(&name("api"), true));
        assert!(book.hosted(Instant::now())[0].ready);
    }

    #[test]
    fn edges_are_sorted_busiest_first() {
        let book = LoadBook::new([]);
        book.record_edge("web", &name("db"), Duration::from_millis(1), true);
        for _ in 0..3 {
            book.record_edge("web", &name("payments"), Duration::from_millis(1), false);
        }
        let edges = book.edges(Instant::now());
        assert_eq!(edges[0].callee, name("payments"));
        assert!(edges[0].window.errors_per_sec > 0.0);
        assert_eq!(edges.len(), 2);
    }

    #[test]
    fn idle_edges_are_forgotten() {
        let book = LoadBook::new([]);
        let then = Instant::now();
        book.record_edge("web", &name("db"), Duration::from_millis(1), true);
        assert_eq!(book.edges(then).len(), 1);
        let later = then + LOAD_WINDOW * 3;
        assert!(book.edges(later).is_empty());
        assert!(
            book.edges.lock().unwrap().is_empty(),
            "nothing kept for web"
        );
    }
}
