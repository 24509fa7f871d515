//! Open-loop traffic on a fixed timetable through the source nodes' upstream listeners.
//! Latency runs from each request's scheduled time, so a stalled mesh cannot hide its stall
//! by slowing the generator down (no coordinated omission).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend::NODE_HEADER;
use crate::record::{Outcome, Sample};
use crate::scenario::{Protocol, Workload};

const MAX_ANSWER: usize = 64 * 1024;
/// The header an agent's refusal names its reason in (`policy_denied` for the access policy).
const POLICY_ERROR_HEADER: &str = "plexus-error";

/// Samples recorded so far, shared with the runner's live checks.
pub type Samples = Arc<Mutex<Vec<Sample>>>;

/// Sends `workload` to `listeners` (one per source node, named, in turn) from `started` until
/// `length` has passed or `stop` turns true; every request's outcome goes into `samples`.
/// Requests still out when it ends are given up to the workload's timeout.
pub async fn drive(
    workload: Workload,
    listeners: Vec<(Arc<str>, SocketAddr)>,
    started: Instant,
    length: Duration,
    mut stop: watch::Receiver<bool>,
    samples: Samples,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(workload.timeout));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let interval = Duration::from_secs_f64(1.0 / f64::from(workload.rate.max(1)));
    let total = (length.as_secs_f64() * f64::from(workload.rate)) as u64;
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        while tasks.try_join_next().is_some() {}
        let at = due.saturating_duration_since(started);
        if listeners.is_empty()
            || in_flight.load(std::sync::atomic::Ordering::Relaxed) >= workload.max_in_flight
        {
            push(
                &samples,
                Sample {
                    at,
                    latency: Duration::ZERO,
                    outcome: Outcome::Failed("overflow"),
                    served_by: None,
                    from: listeners
                        .get((i as usize) % listeners.len().max(1))
                        .map(|(name, _)| name.clone()),
                },
            );
            continue;
        }
        let (from, listener) = listeners[(i as usize) % listeners.len()].clone();
        let (client, workload, samples, in_flight) = (
            client.clone(),
            workload.clone(),
            samples.clone(),
            in_flight.clone(),
        );
        in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tasks.spawn(async move {
            let attempt = async {
                match workload.protocol {
                    Protocol::Http => http(&client, &workload, listener, i).await,
                    Protocol::Tcp => tcp(listener, i).await,
                }
            };
            let (outcome, served_by) =
                match tokio::time::timeout_at(due + workload.timeout, attempt).await {
                    Ok(result) => result,
                    Err(_) => (Outcome::Failed("timeout"), None),
                };
            in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            push(
                &samples,
                Sample {
                    at,
                    latency: due.elapsed(),
                    outcome,
                    served_by,
                    from: Some(from),
                },
            );
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn push(samples: &Samples, sample: Sample) {
    samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(sample);
}

async fn http(
    client: &Client<HttpConnector, Full<Bytes>>,
    workload: &Workload,
    listener: SocketAddr,
    i: u64,
) -> (Outcome, Option<String>) {
    let body = match workload.method.as_str() {
        "GET" | "HEAD" | "DELETE" => Bytes::new(),
        _ => Bytes::from(format!("request {i}\n")),
    };
    let request = hyper::Request::builder()
        .method(workload.method.as_str())
        .uri(format!("http://{listener}/chaos/{i}"))
        .body(Full::new(body));
    let Ok(request) = request else {
        return (Outcome::Failed("io"), None);
    };
    let response = match client.request(request).await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return (Outcome::Failed("connect"), None),
        Err(_) => return (Outcome::Failed("reset"), None),
    };
    let status = response.status();
    let served_by = response
        .headers()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let policy_denied = response
        .headers()
        .get(POLICY_ERROR_HEADER)
        .is_some_and(|v| v.as_bytes() == b"policy_denied");
    if Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .is_err()
    {
        return (Outcome::Failed("reset"), served_by);
    }
    if status.is_success() {
        (Outcome::Ok, served_by)
    } else if status == hyper::StatusCode::FORBIDDEN && policy_denied {
        (Outcome::Denied, served_by)
    } else {
        (Outcome::Status(status.as_u16()), served_by)
    }
}

/// One exchange: `NODE\n` then the echo of what was sent.
async fn tcp(listener: SocketAddr, i: u64) -> (Outcome, Option<String>) {
    let Ok(mut stream) = TcpStream::connect(listener).await else {
        return (Outcome::Failed("connect"), None);
    };
    let _ = stream.set_nodelay(true);
    let message = format!("exchange {i}\n");
    if stream.write_all(message.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return (Outcome::Failed("reset"), None);
    }
    let mut reply = Vec::new();
    if (&mut stream)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut reply)
        .await
        .is_err()
    {
        return (Outcome::Failed("reset"), None);
    }
    let text = String::from_utf8_lossy(&reply);
    match text.split_once('\n') {
        Some((node, echo)) if echo == message => (Outcome::Ok, Some(node.to_owned())),
        _ => (Outcome::Failed("short"), None),
    }
}
