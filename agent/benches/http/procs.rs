//! The processes under test (two `plexus agent`s, two `haproxy`s), what /proc says about them,
//! and the in-process HTTP/1.1 backend.

use crate::ports::free_port;
use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::load::BODY_LEN;

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped; its stderr goes to `log`.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        crate::agent_binary::stop(&mut self.child);
    }
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Self {
        let stderr = fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// None while it runs, else how it ended.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(e.to_string()),
        }
    }

    /// The lines it wrote to stderr.
    pub fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// User plus system CPU time of all of `pid`'s threads, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Context switches (voluntary and not) of all of `pid`'s live threads.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("status")).ok())
        .take(10_000)
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Lets this thread's sleeps (and those of threads it starts later) end on time instead of up
/// to 50 µs late: the generator sleeps until each request's scheduled time.
pub fn tighten_timer_slack() {
    if let Err(e) = fs::write("/proc/self/timerslack_ns", "1") {
        eprintln!("note: cannot lower the timer slack ({e}); sends may be up to 50 µs late");
    }
}

/// Starts `plexus agent` for `node` (whose credentials are in `dir/node`) and waits until
/// its admin API reports ready: the agent and its admin API's address.
pub async fn spawn_agent(
    dir: &Path,
    node: &'static str,
    quic: u16,
    extra: &str,
) -> (Proc, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let config = dir.join(format!("{node}.toml"));
    // Diagnostic variant: `HTTP_BENCH_WORKERS=N` runs each agent on N runtime workers.
    let workers = std::env::var("HTTP_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(String::new(), |n| format!("worker_threads = {n}\n"));
    fs::write(
        &config,
        format!(
            "{workers}listen = \"127.0.0.1:{quic}\"\nadmin = \"{admin}\"\n[tls]\nca = \"{node}/ca.pem\"\ncert = \"{node}/node.pem\"\nkey = \"{node}/node.key\"\n{extra}"
        ),
    )
    .unwrap();
    let mut command = Command::new(crate::agent_binary::plexus_binary());
    command
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn");
    let agent = Proc::spawn(node, command, dir.join(format!("{node}.log")));
    for _ in 0..200 {
        if let Ok((200, _)) = plexus_agent::ctl::get(admin, "/readyz").await {
            return (agent, admin);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "agent {node} did not become ready:\n{}",
        agent.log_lines().join("\n")
    );
}

/// The installed haproxy's version line, if there is one.
pub fn haproxy_version() -> Result<String, String> {
    let out = Command::new("haproxy")
        .arg("-v")
        .output()
        .map_err(|e| format!("haproxy not runnable: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("haproxy").trim().to_owned())
}

/// Issues from the mesh CA in `ca_dir` a leaf for `name` (DNS SAN), for TLS server or client
/// use; returns certificate and key in one PEM, as haproxy's `crt` wants.
pub fn haproxy_pem(ca_dir: &Path, name: &str, server: bool) -> String {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_pem = fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    let ca_key = KeyPair::from_pem(&fs::read_to_string(ca_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(2);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// Starts `haproxy -db -f <dir/name.cfg>` with `config` and waits until `listen` accepts.
pub fn spawn_haproxy(
    dir: &Path,
    name: &'static str,
    config: &str,
    listen: SocketAddr,
) -> Result<Proc, String> {
    let path = dir.join(format!("{name}.cfg"));
    fs::write(&path, config).unwrap();
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&path);
    let mut proc = Proc::spawn(name, command, dir.join(format!("{name}.log")));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if let Some(how) = proc.exited() {
            return Err(format!(
                "{name} exited ({how}):\n{}",
                proc.log_lines().join("\n")
            ));
        }
        if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(100)).is_ok() {
            return Ok(proc);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{name} did not listen on {listen} within 5 s"))
}

/// An HTTP/1.1 keep-alive server on 127.0.0.1 answering every request with 200 and a fixed
/// `BODY_LEN`-byte body, on its own thread (one-thread runtime), for at most 100 000
/// connections.
pub fn start_backend() -> SocketAddr {
    static BODY: [u8; BODY_LEN] = [b'x'; BODY_LEN];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::Builder::new()
        .name("backend".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                for _ in 0..100_000 {
                    let Ok((tcp, _)) = listener.accept().await else {
                        break;
                    };
                    let _ = tcp.set_nodelay(true);
                    let service = hyper::service::service_fn(|_req: Request<_>| async {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from_static(&BODY)))
                                .unwrap(),
                        )
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(tcp), service),
                    );
                }
            });
        })
        .unwrap();
    addr
}

/// CPU ticks (user + system) of every process on the machine but `excluded`, by PID, kernel
/// threads included. Unlike /proc/stat's tick-sampled totals, which count a CPU that wakes
/// for short bursts as busier than it is, a process's total is its precise runtime.
pub fn other_process_ticks(excluded: &[u32]) -> HashMap<u32, u64> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !excluded.contains(pid))
        .take(100_000)
        .map(|pid| (pid, cpu_ticks(pid)))
        .collect()
}

/// UDP datagrams the kernel dropped for want of receive-buffer room, machine-wide.
pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Spins one CPU for at most `seconds` (the helper process of [`Spinners`]).
pub fn spin(seconds: u64) {
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        for _ in 0..10_000 {
            std::hint::spin_loop();
        }
    }
}

/// One lowest-priority spinner process per CPU (this bench binary with `--spin`), keeping the
/// CPUs from halting, until dropped or `seconds` pass.
pub struct Spinners(Vec<Child>);

impl Spinners {
    pub fn start(seconds: u64) -> Self {
        let exe = std::env::current_exe().unwrap();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self(
            (0..cpus)
                .map(|_| {
                    Command::new("nice")
                        .args(["-n", "19"])
                        .arg(&exe)
                        .args(["--spin", &seconds.to_string()])
                        .spawn()
                        .expect("start a spinner (needs `nice`)")
                })
                .collect(),
        )
    }
}

impl Spinners {
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
