//! Request spans exported over OTLP/HTTP JSON to a collector, when one is configured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use plexus_tests::http::{Backend, Client};
use plexus_tests::{agent_metric, eventually, Mesh};

/// A collector that keeps every JSON document POSTed to it.
async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let kept = kept.clone();
                async move {
                    let ok = req.uri().path() == "/v1/traces";
                    let body = req.into_body().collect().await?.to_bytes();
                    if let (true, Ok(value)) = (ok, serde_json::from_slice(&body)) {
                        kept.lock().unwrap().push(value);
                    }
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{}",
                    ))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    (addr, seen)
}

fn spans(documents: &[serde_json::Value]) -> Vec<serde_json::Value> {
    documents
        .iter()
        .flat_map(|d| d["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_agents_export_a_span_per_request_in_the_callers_trace() {
    let (collector, seen) = collector().await;
    let telemetry = format!("[telemetry]\notlp_endpoint = \"http://{collector}/v1/traces\"\n");
    let mesh = Mesh::new();
    let backend = Backend::start("b0").await;
    let server = mesh
        .agent(
            &mesh.node("srv"),
            &format!(
                "{telemetry}\n[[service]]\nname = \"api\"\naddress = \"{}\"\nprotocol = \"http\"\n",
                backend.addr
            ),
        )
        .await;
    let caller = mesh
        .agent(
            &mesh.node("caller"),
            &format!(
                "{telemetry}\n[[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nendpoints = [\"{}\"]\n",
                server.quic_addr
            ),
        )
        .await;
    let mut client = Client::h1(caller.upstream_addr("api").unwrap()).await;
    let req = Request::get("/traced")
        .header("host", "test")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(req).await.unwrap().status, 200);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    assert!(
        eventually(Duration::from_secs(5), async || {
            let all = spans(&seen.lock().unwrap());
            all.iter().filter(|s| s["traceId"] == trace).count() >= 2
        })
        .await,
        "spans seen: {:?}",
        seen.lock().unwrap()
    );
    let all = spans(&seen.lock().unwrap());
    let client_span = all
        .iter()
        .find(|s| s["traceId"] == trace && s["kind"] == 3)
        .unwrap();
    let server_span = all
        .iter()
        .find(|s| s["traceId"] == trace && s["kind"] == 2)
        .unwrap();
    assert_eq!(client_span["parentSpanId"], "b7ad6b7169203331");
    assert_eq!(
        server_span["parentSpanId"], client_span["spanId"],
        "the serving agent's span is the caller's child"
    );
    assert_eq!(client_span["name"], "plexus.request");
    // Counted once the collector's answer is back, a moment after it stored the spans.
    assert!(
        eventually(Duration::from_secs(5), async || {
            agent_metric(&caller, "plexus_spans_exported_total") >= 1.0
        })
        .await
    );
}
