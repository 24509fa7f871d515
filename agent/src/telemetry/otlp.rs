//! Optional export of the proxied-request spans to an OpenTelemetry collector, over OTLP/HTTP
//! with the JSON encoding (`[telemetry] otlp_endpoint = "http://127.0.0.1:4318/v1/traces"`).
//! The mesh never needs a collector: without the key nothing is exported, and with it spans
//! are dropped (and counted) rather than queued without bound when the collector is slow or
//! away.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{names, Telemetry};

/// Spans waiting for export at most; more are dropped.
const QUEUE: usize = 4096;
/// Spans per export request at most.
const BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// OTLP span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub name: &'static str,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    pub error: bool,
}

/// Where spans go: a bounded queue to the exporter task.
#[derive(Clone)]
pub struct SpanSink {
    queue: mpsc::Sender<SpanRecord>,
    dropped: metrics::Counter,
}

impl SpanSink {
    /// Queues a span; drops it when the queue is full.
    pub fn record(&self, span: SpanRecord) {
        if self.queue.try_send(span).is_err() {
            self.dropped.increment(1);
        }
    }
}

/// Starts the exporter task; it ends when every sink is dropped, after a last flush.
pub fn start(endpoint: Uri, node_id: String, telemetry: &Telemetry) -> SpanSink {
    let (queue, spans) = mpsc::channel(QUEUE);
    let sink = SpanSink {
        queue,
        dropped: telemetry.counter(names::SPANS_DROPPED, &[]),
    };
    tokio::spawn(export(endpoint, node_id, spans, telemetry.clone()));
    sink
}

async fn export(
    endpoint: Uri,
    node_id: String,
    mut spans: mpsc::Receiver<SpanRecord>,
    telemetry: Telemetry,
) {
    let exported = telemetry.counter(names::SPANS_EXPORTED, &[]);
    let failed = telemetry.counter(names::SPANS_DROPPED, &[]);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let room = BATCH - batch.len();
        let open = tokio::select! {
            received = spans.recv_many(&mut batch, room) => received > 0,
            () = tokio::time::sleep(FLUSH_EVERY), if !batch.is_empty() => true,
        };
        if !batch.is_empty() && (batch.len() >= BATCH || !open || spans.is_empty()) {
            let body = encode(&node_id, &batch);
            let count = batch.len() as u64;
            batch.clear();
            match tokio::time::timeout(EXPORT_TIMEOUT, post(&endpoint, body)).await {
                Ok(Ok(())) => exported.increment(count),
                Ok(Err(error)) => {
                    failed.increment(count);
                    tracing::debug!(%endpoint, %error, "span export failed");
                }
                Err(_) => {
                    failed.increment(count);
                    tracing::debug!(%endpoint, "span export timed out");
                }
            }
        }
        if !open {
            return;
        }
    }
}

async fn post(endpoint: &Uri, body: Vec<u8>) -> Result<(), String> {
    let authority = endpoint.authority().ok_or("endpoint has no host")?;
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::post(
        endpoint
            .path_and_query()
            .map_or("/v1/traces", |p| p.as_str()),
    )
    .header(hyper::header::HOST, authority.as_str())
    .header(hyper::header::CONTENT_TYPE, "application/json")
    .body(Full::new(Bytes::from(body)))
    .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    driver.abort();
    let status = response?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("collector answered {status}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans` (IDs in hex, times as strings).
pub fn encode(node_id: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s
                .attributes
                .iter()
                .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
                .collect();
            json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "parentSpanId": s.parent_id.map(|p| hex(&p)).unwrap_or_default(),
                "name": s.name,
                "kind": s.kind as u8,
                "startTimeUnixNano": unix_nanos(s.start),
                "endTimeUnixNano": unix_nanos(s.end),
                "attributes": attributes,
                "status": {"code": if s.error { 2 } else { 1 }},
            })
        })
        .collect();
    let request = json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "plexus"}},
                {"key": "service.instance.id", "value": {"stringValue": node_id}},
                {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
            ]},
            "scopeSpans": [{"scope": {"name": "plexus"}, "spans": spans}],
        }]
    });
    serde_json::to_vec(&request).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_encode_as_otlp_json() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let span = SpanRecord {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            parent_id: Some([2; 8]),
            name: "request",
            kind: SpanKind::Client,
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![("http.request.method", "GET".into())],
            error: false,
        };
        let value: Value = serde_json::from_slice(&encode("n1", &[span])).unwrap();
        let s = &value["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "abababababababababababababababab");
        assert_eq!(s["spanId"], "0101010101010101");
        assert_eq!(s["parentSpanId"], "0202020202020202");
        assert_eq!(s["kind"], 3);
        assert_eq!(s["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000003000000");
        assert_eq!(s["attributes"][0]["value"]["stringValue"], "GET");
    }
}
