//! CPU and memory use of the host and of this agent process, read from /proc.
//!
//! CPU use is a rate, so the sampler keeps the previous reading and reports use since then.
//! Off Linux (no /proc) every figure reads as zero rather than failing.

use std::time::Instant;

/// CPU and memory use, as published in the node summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostUsage {
    /// Host CPU busy since the previous sample, per mille of all CPUs.
    pub host_cpu_permille: u16,
    /// Host memory in use (total minus available), per mille.
    pub host_memory_permille: u16,
    /// CPU this process used since the previous sample, per mille of one CPU.
    pub agent_cpu_permille: u16,
    /// Resident memory of this process, KiB.
    pub agent_rss_kib: u32,
}

/// Reads /proc and turns cumulative CPU counters into recent use.
#[derive(Debug)]
pub struct HostSampler {
    previous_host: Option<(u64, u64)>,
    previous_agent: Option<(u64, Instant)>,
    ticks_per_sec: u64,
}

impl Default for HostSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSampler {
    pub fn new() -> Self {
        Self {
            previous_host: None,
            previous_agent: None,
            // USER_HZ is 100 on every Linux architecture Plexus targets.
            ticks_per_sec: 100,
        }
    }

    /// Takes a sample; CPU figures are use since the previous call (zero on the first).
    pub fn sample(&mut self) -> HostUsage {
        let now = Instant::now();
        let mut usage = HostUsage::default();
        if let Some((busy, total)) = read("/proc/stat").as_deref().and_then(host_cpu_ticks) {
            if let Some((prev_busy, prev_total)) = self.previous_host {
                usage.host_cpu_permille = permille(
                    busy.saturating_sub(prev_busy),
                    total.saturating_sub(prev_total),
                );
            }
            self.previous_host = Some((busy, total));
        }
        if let Some(ticks) = read("/proc/self/stat")
            .as_deref()
            .and_then(process_cpu_ticks)
        {
            if let Some((prev_ticks, at)) = self.previous_agent {
                let elapsed_ticks =
                    (now.duration_since(at).as_secs_f64() * self.ticks_per_sec as f64) as u64;
                usage.agent_cpu_permille =
                    permille(ticks.saturating_sub(prev_ticks), elapsed_ticks);
            }
            self.previous_agent = Some((ticks, now));
        }
        if let Some(meminfo) = read("/proc/meminfo") {
            usage.host_memory_permille = memory_permille(&meminfo);
        }
        if let Some(status) = read("/proc/self/status") {
            usage.agent_rss_kib = field_kib(&status, "VmRSS:").unwrap_or(0) as u32;
        }
        usage
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn permille(part: u64, whole: u64) -> u16 {
    if whole == 0 {
        return 0;
    }
    (part.saturating_mul(1000) / whole).min(u64::from(u16::MAX)) as u16
}

/// (busy, total) jiffies from the aggregate `cpu` line of /proc/stat.
fn host_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// utime + stime of /proc/self/stat (fields 14 and 15; the command name may hold spaces).
fn process_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

fn memory_permille(meminfo: &str) -> u16 {
    let total = field_kib(meminfo, "MemTotal:").unwrap_or(0);
    let available = field_kib(meminfo, "MemAvailable:").unwrap_or(total);
    permille(total.saturating_sub(available), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_formats_parse() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(host_cpu_ticks(stat), Some((200, 1000)));
        let own = "42 (plexus agent) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4";
        assert_eq!(process_cpu_ticks(own), Some(300));
        let meminfo = "MemTotal:       1000 kB\nMemFree: 10 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory_permille(meminfo), 750);
    }

    #[test]
    fn sampling_this_host_gives_plausible_figures() {
        let mut sampler = HostSampler::new();
        let _ = sampler.sample();
        let usage = sampler.sample();
        assert!(usage.host_cpu_permille <= 1000);
        assert!(usage.host_memory_permille <= 1000);
        if cfg!(target_os = "linux") {
            assert!(usage.agent_rss_kib > 0);
            assert!(usage.host_memory_permille > 0);
        }
    }
}
