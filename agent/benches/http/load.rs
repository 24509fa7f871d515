//! The open-loop load generator: a fixed timetable of GETs spread over a pool of keep-alive
//! HTTP/1.1 connections, one blocking thread per connection, each connection carrying one
//! request at a time. Latency is taken from each request's *scheduled* send time, so a stall
//! anywhere (including a connection still busy with its previous request) is charged to the
//! requests it delays instead of being omitted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Length of the backend's answer body; a 200 with any other length counts as an error.
pub const BODY_LEN: usize = 100;
const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: api\r\nUser-Agent: plexus-bench\r\n\r\n";
/// Longest any read, write or connect may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;
/// How long after the end of its timetable a round may still run before it gives up.
const OVERRUN: Duration = Duration::from_secs(10);

/// One keep-alive HTTP/1.1 connection, (re)connected when needed.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The `plexus-error` header of the last answer, if it had one.
    pub plexus_error: Option<String>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
            plexus_error: None,
        }
    }

    /// One GET: the status code, or why it failed (the connection is then dropped).
    pub fn get(&mut self) -> Result<u16, String> {
        let result = self.exchange();
        if result.is_err() {
            self.stream = None;
            self.buf.clear();
        }
        result
    }

    fn exchange(&mut self) -> Result<u16, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
                .map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            stream
                .set_write_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().ok_or("not connected")?;
        stream
            .write_all(REQUEST)
            .map_err(|e| format!("write: {e}"))?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err("response head too long".into());
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| "non-UTF-8 head")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        self.plexus_error = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().to_ascii_lowercase();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                "plexus-error" => self.plexus_error = Some(value),
                _ => {}
            }
        }
        self.buf.drain(..head_end);
        let body = if chunked {
            self.chunked_body()?
        } else if let Some(n) = length.filter(|n| *n <= MAX_BODY) {
            self.fill_to(n)?;
            self.buf.drain(..n);
            n
        } else {
            return Err(format!("status {status} without a usable length"));
        };
        if close {
            self.stream = None;
            self.buf.clear();
        }
        if status == 200 && body != BODY_LEN {
            return Err(format!("200 with a {body}-byte body"));
        }
        Ok(status)
    }

    fn chunked_body(&mut self) -> Result<usize, String> {
        let mut total = 0;
        for _ in 0..10_000 {
            let end = self.line()?;
            let text = std::str::from_utf8(&self.buf[..end - 2]).map_err(|_| "bad chunk size")?;
            let size = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {text:?}"))?;
            self.buf.drain(..end);
            if size == 0 {
                for _ in 0..100 {
                    let end = self.line()?;
                    self.buf.drain(..end);
                    if end == 2 {
                        return Ok(total);
                    }
                }
                return Err("too many trailers".into());
            }
            total += size;
            if total > MAX_BODY {
                return Err("body too long".into());
            }
            self.fill_to(size + 2)?;
            self.buf.drain(..size + 2);
        }
        Err("too many chunks".into())
    }

    /// The length of the first line in the buffer, CRLF included, reading as needed.
    fn line(&mut self) -> Result<usize, String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(i + 2);
            }
            if self.buf.len() > MAX_HEAD {
                return Err("line too long".into());
            }
            self.fill()?;
        }
    }

    fn fill_to(&mut self, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<(), String> {
        let stream = self.stream.as_mut().ok_or("not connected")?;
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => Err("connection closed by peer".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What one round (or several, merged) saw.
pub struct Outcome {
    /// Scheduled send time to complete answer, ns, requests scheduled in the window only.
    pub latency: Histogram<u64>,
    /// Scheduled send time to actual send time, ns: the generator's own lateness.
    pub lag: Histogram<u64>,
    /// Actual send time to complete answer, ns (not corrected for coordinated omission: a
    /// diagnostic that leaves the generator's lateness out).
    pub service: Histogram<u64>,
    /// Answers other than 200, by status and `plexus-error` reason, over the whole round
    /// (lead-in included).
    pub non_200: BTreeMap<String, u64>,
    /// Failed exchanges plus requests never sent, over the whole round.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
            lag: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
            service: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
            non_200: BTreeMap::new(),
            errors: 0,
            first_error: None,
        }
    }

    pub fn merge(&mut self, other: &Outcome) {
        self.latency.add(&other.latency).unwrap();
        self.lag.add(&other.lag).unwrap();
        self.service.add(&other.service).unwrap();
        for (status, n) in &other.non_200 {
            *self.non_200.entry(status.clone()).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Requests that failed or were answered with anything but 200.
    pub fn bad(&self) -> u64 {
        self.errors + self.non_200.values().sum::<u64>()
    }

    fn error(&mut self, n: u64, why: String) {
        self.errors += n;
        self.first_error.get_or_insert(why);
    }
}

/// Sends `rate` requests per second for `lead_in + window` over `conns`, recording the requests
/// scheduled in the window. `sample` is called on this thread at the window's start and end.
pub fn run(
    conns: &mut [Conn],
    rate: u64,
    lead_in: Duration,
    window: Duration,
    mut sample: impl FnMut(),
) -> Outcome {
    let total = (lead_in + window).as_nanos() as u64 * rate / 1_000_000_000;
    let pool = conns.len() as u64;
    let t0 = Instant::now() + Duration::from_millis(20);
    let window_start = t0 + lead_in;
    let window_end = window_start + window;
    let deadline = window_end + OVERRUN;
    let mut outcome = Outcome::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = conns
            .iter_mut()
            .enumerate()
            .map(|(k, conn)| {
                s.spawn(move || {
                    let mut out = Outcome::new();
                    for idx in (k as u64..total).step_by(pool as usize) {
                        let scheduled = t0 + Duration::from_nanos(idx * 1_000_000_000 / rate);
                        let now = Instant::now();
                        if now > deadline {
                            let unsent = (total - idx).div_ceil(pool);
                            out.error(unsent, format!("{unsent} requests not sent in time"));
                            break;
                        }
                        if scheduled > now {
                            std::thread::sleep(scheduled - now);
                        }
                        let sent = Instant::now();
                        let result = conn.get();
                        let done = Instant::now();
                        match result {
                            Ok(200) => {}
                            Ok(status) => {
                                let why = conn.plexus_error.as_deref().unwrap_or("-");
                                *out.non_200.entry(format!("{status} {why}")).or_default() += 1;
                            }
                            Err(why) => out.error(1, why),
                        }
                        if scheduled >= window_start {
                            let ns = |d: Duration| d.as_nanos() as u64;
                            out.latency.saturating_record(ns(done - scheduled));
                            out.lag
                                .saturating_record(ns(sent.saturating_duration_since(scheduled)));
                            out.service.saturating_record(ns(done - sent));
                        }
                    }
                    out
                })
            })
            .collect();
        sleep_until(window_start);
        sample();
        sleep_until(window_end);
        sample();
        for worker in workers {
            outcome.merge(&worker.join().expect("load thread panicked"));
        }
    });
    outcome
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}
