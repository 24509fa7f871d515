//! Simulated time (dilation) and the CPU and timer-lag probes that check the simulator kept up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chitchat::ProtocolVersion;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::plan::{Mode, Topology};

/// Simulated time. All N nodes share this machine's cores, while real nodes each have their
/// own, and chitchat's work grows with N (flat: every message carries an N-entry digest, so the
/// whole cluster costs O(N²) per round). To keep the simulator from being CPU-starved (which
/// would slow the gossip rounds down and make every timing meaningless), every chitchat duration
/// (gossip interval, failure-detector intervals, relay tick) is stretched `dilation` times, and
/// every measured duration is divided by it; rates are per simulated second. Protocol timing is
/// counted in rounds, so this is exact as long as message processing stays small against a
/// round: the diagnostics table shows simulator CPU and timer lag to check that it did.
#[derive(Clone, Copy)]
pub(crate) struct Sim {
    pub(crate) interval: Duration,
    pub(crate) dilation: u32,
}

impl Sim {
    pub(crate) fn real(&self, nominal: Duration) -> Duration {
        nominal * self.dilation
    }

    pub(crate) fn nominal(&self, real: Duration) -> Duration {
        real / self.dilation
    }
}

/// Simulator CPU (cores) that a configuration needs without dilation, fitted to runs on the
/// project's 2-vCPU VM at 500 ms: flat clusters cost about 2.5e-5 core × N² with V1 digests
/// (zstd) and 1.8e-5 × N² with V0; zoned ones about 2e-3 core × N. Only used to pick the
/// dilation; what was actually used is measured and printed.
pub(crate) fn estimated_cores(n: usize, mode: &Mode, interval: Duration) -> f64 {
    let per_round = match (mode.topology, mode.protocol) {
        (Topology::Flat, ProtocolVersion::V0) => 1.8e-5 * (n * n) as f64,
        (Topology::Flat, ProtocolVersion::V1) => 2.5e-5 * (n * n) as f64,
        (Topology::Zoned, _) => 2e-3 * n as f64,
    };
    per_round * 0.5 / interval.as_secs_f64()
}

/// Dilation that keeps the simulator at about a third of the machine's cores.
pub(crate) fn auto_dilation(n: usize, mode: &Mode, interval: Duration) -> u32 {
    let budget = 0.35 * cores() as f64;
    (estimated_cores(n, mode, interval) / budget)
        .ceil()
        .max(1.0) as u32
}

/// Above this, the default plan skips a configuration (it can still be named with `--modes`).
pub(crate) const MAX_AUTO_DILATION: u32 = 8;

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Measures how late a 10 ms tokio sleep wakes up, while it runs.
struct LagProbe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Histogram<u64>>,
}

impl LagProbe {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)
                .expect("valid histogram bounds");
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let late = start.elapsed().saturating_sub(Duration::from_millis(10));
                let _ = hist.record((late.as_micros() as u64).max(1));
            }
            hist
        });
        Self { stop, task }
    }

    async fn finish(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(hist) if !hist.is_empty() => (
                hist.value_at_quantile(0.99) as f64 / 1000.0,
                hist.max() as f64 / 1000.0,
            ),
            _ => (f64::NAN, f64::NAN),
        }
    }
}

pub(crate) struct PhaseStats {
    pub(crate) cpu_pct: f64,
    pub(crate) lag_p99_ms: f64,
}

/// Process CPU and tokio timer lag over one phase of a run.
pub(crate) struct PhaseMeter {
    cpu: f64,
    start: Instant,
    lag: LagProbe,
}

impl PhaseMeter {
    pub(crate) fn start() -> Self {
        Self {
            cpu: cpu_seconds(),
            start: Instant::now(),
            lag: LagProbe::start(),
        }
    }

    pub(crate) async fn finish(self, sim: &Sim) -> (PhaseStats, f64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let cpu = cpu_seconds() - self.cpu;
        let (p99, _max) = self.lag.finish().await;
        (
            PhaseStats {
                cpu_pct: 100.0 * cpu / secs,
                lag_p99_ms: p99 / sim.dilation as f64,
            },
            cpu,
        )
    }
}
