//! HTTP-aware proxying through real agents: ejection with retries, latency-aware balancing,
//! shedding, the retry budget, fast failure, HTTP semantics (keep-alive, long bodies, HTTP/2,
//! upgrades, trace context) and HTTP health checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use plexus_agent::RunningAgent;
use plexus_tests::http::{Backend, Client};
use plexus_tests::{admin_get, agent_metric, eventually, free_port, Mesh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A caller agent with an HTTP upstream `api` over `n` serving agents, each with its backend.
struct HttpMesh {
    caller: RunningAgent,
    servers: Vec<RunningAgent>,
    backends: Vec<Backend>,
    _mesh: Mesh,
}

impl HttpMesh {
    async fn start(n: usize, service_extra: &[&str], upstream_extra: &str) -> Self {
        let mesh = Mesh::new();
        let mut backends = Vec::new();
        let mut servers = Vec::new();
        for i in 0..n {
            let backend = Backend::start(&format!("b{i}")).await;
            let extra = service_extra.get(i).copied().unwrap_or("");
            let config = format!(
                "[[service]]\nname = \"api\"\naddress = \"{}\"\nprotocol = \"http\"\n{extra}\n",
                backend.addr
            );
            servers.push(mesh.agent(&mesh.node(&format!("srv-{i}")), &config).await);
            backends.push(backend);
        }
        let endpoints: Vec<String> = servers
            .iter()
            .map(|s| format!("\"{}\"", s.quic_addr))
            .collect();
        let upstream = format!(
            "[[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             endpoints = [{}]\ntimeout = \"500ms\"\n{upstream_extra}\n",
            endpoints.join(", ")
        );
        let caller = mesh.agent(&mesh.node("caller"), &upstream).await;
        Self {
            caller,
            servers,
            backends,
            _mesh: mesh,
        }
    }

    fn app(&self) -> SocketAddr {
        self.caller.upstream_addr("api").expect("upstream listener")
    }

    /// Sends `count` GETs over `clients` keep-alive connections; returns each answer's status
    /// and backend with the time it was sent (relative to the start).
    async fn load(&self, clients: usize, count: usize) -> Vec<(Duration, u16, Option<String>)> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let app = self.app();
            let share = count / clients + usize::from(c < count % clients);
            tasks.spawn(async move {
                let mut client = Client::h1(app).await;
                let mut out = Vec::new();
                for _ in 0..share {
                    let at = started.elapsed();
                    match client.get("/work").await {
                        Ok(a) => out.push((at, a.status.as_u16(), a.backend().map(str::to_owned))),
                        Err(_) => {
                            out.push((at, 0, None));
                            client = Client::h1(app).await;
                        }
                    }
                }
                out
            });
        }
        let mut all = Vec::new();
        while let Some(part) = tasks.join_next().await {
            all.extend(part.unwrap());
        }
        all.sort_by_key(|(at, _, _)| *at);
        all
    }
}

fn success_rate(answers: &[(Duration, u16, Option<String>)]) -> f64 {
    answers.iter().filter(|(_, s, _)| *s == 200).count() as f64 / answers.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_after_a_handful_and_retries_hide_it() {
    let m = HttpMesh::start(3, &[], "").await;
    m.backends[2].behaviour.set_status(503);
    let bad = m.servers[2].quic_addr.to_string();
    let ejected_series = format!(
        "plexus_ejections_total{{service=\"api\",endpoint=\"{bad}\",reason=\"consecutive_failures\"}}"
    );
    // Traffic in batches until the failing endpoint is ejected (bounded: 10 s or 60 000
    // requests). The balancer sends it little (each failure doubles its bias), so ejection
    // takes as long as the next few tries come, not a number of requests overall: a fast
    // machine went through 10 000 in 1.3 s.
    let started = Instant::now();
    let mut answers = Vec::new();
    while agent_metric(&m.caller, &ejected_series) == 0.0
        && started.elapsed() < Duration::from_secs(10)
        && answers.len() < 60_000
    {
        answers.extend(m.load(4, 200).await);
    }
    answers.extend(m.load(4, 400).await);
    let rate = success_rate(&answers);
    assert!(
        rate >= 0.999,
        "success rate {rate} over {} requests",
        answers.len()
    );
    let to_bad = m.backends[2].behaviour.hits();
    assert!(
        to_bad <= 10,
        "{to_bad} requests reached the failing backend"
    );
    let (_, routes) = admin_get(m.caller.admin_addr, "/v1/routes").await;
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let endpoints = routes["upstreams"][0]["endpoints"].as_array().unwrap();
    let state = endpoints
        .iter()
        .find(|e| e["address"] == bad.as_str())
        .unwrap();
    assert_eq!(state["state"], "ejected", "{routes:#}");
    assert!(
        routes["upstreams"][0]["retry_budget"]["retries"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(agent_metric(&m.caller, &ejected_series), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_times_slower_endpoint_loses_its_share_within_two_seconds() {
    let m = HttpMesh::start(3, &[], "").await;
    for b in &m.backends {
        b.behaviour.set_delay(Duration::from_millis(3));
    }
    let warm = m.load(3, 300).await;
    let warm_share = warm.iter().filter(|a| a.2.as_deref() == Some("b2")).count() as f64 / 300.0;
    assert!(warm_share > 0.15, "share before slowing down: {warm_share}");
    m.backends[2].behaviour.set_delay(Duration::from_millis(30));
    // Keep sending for a bounded while: 3 clients, at most 3 000 requests or about 4 s.
    let mut answers = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) && answers.len() < 3000 {
        let batch = m.load(3, 60).await;
        let offset = started
            .elapsed()
            .saturating_sub(batch.last().map(|a| a.0).unwrap_or_default());
        answers.extend(batch.into_iter().map(|(at, s, b)| (at + offset, s, b)));
    }
    let late: Vec<_> = answers
        .iter()
        .filter(|a| a.0 >= Duration::from_secs(2))
        .collect();
    assert!(
        late.len() >= 30,
        "too few requests after 2 s: {}",
        late.len()
    );
    let share =
        late.iter().filter(|a| a.2.as_deref() == Some("b2")).count() as f64 / late.len() as f64;
    assert!(share < 0.10, "slow endpoint's share after 2 s: {share}");
    assert_eq!(success_rate(&answers), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_endpoint_sheds_and_callers_route_around_it() {
    // srv-2 admits two requests at once; every backend takes 20 ms.
    let m = HttpMesh::start(3, &["", "", "capacity = 2"], "retries = 0").await;
    for b in &m.backends {
        b.behaviour.set_delay(Duration::from_millis(20));
    }
    let answers = m.load(12, 600).await;
    assert_eq!(
        success_rate(&answers),
        1.0,
        "no request failed although retries are off"
    );
    let shed = agent_metric(&m.servers[2], "plexus_shed_total{service=\"api\"}");
    assert!(shed >= 1.0, "srv-2 shed nothing");
    let endpoint = m.servers[2].quic_addr;
    let overloaded = agent_metric(
        &m.caller,
        &format!(
            "plexus_request_attempts_total{{direction=\"outbound\",service=\"api\",endpoint=\"{endpoint}\",outcome=\"overloaded\"}}"
        ),
    );
    assert_eq!(
        overloaded, shed,
        "every shed request was seen as overload by the caller"
    );
    assert_eq!(
        agent_metric(
            &m.caller,
            "plexus_retries_total{service=\"api\",reason=\"overloaded\"}"
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_never_exceed_the_budget_under_a_total_outage() {
    let m = HttpMesh::start(3, &[], "retries = 3").await;
    for b in &m.backends {
        b.behaviour.set_status(500);
    }
    let requests = 600;
    let started = Instant::now();
    let answers = m.load(2, requests).await;
    let elapsed = started.elapsed();
    assert!(
        answers.iter().all(|a| a.1 == 500),
        "the service's own 500 is passed on"
    );
    let hits: u64 = m.backends.iter().map(|b| b.behaviour.hits()).sum();
    let retries = hits - requests as u64;
    // 20 % of the requests plus 10 per second of the 10 s window.
    let budget = requests as u64 / 5 + 100;
    assert!(
        retries <= budget,
        "{retries} retries for {requests} requests in {elapsed:?}"
    );
    assert!(retries >= 100, "the budget's floor is usable: {retries}");
    let exhausted = agent_metric(
        &m.caller,
        "plexus_retry_budget_exhausted_total{service=\"api\"}",
    );
    assert!(exhausted > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_fails_the_app_gets_a_clear_503_quickly() {
    // Serving agents whose service is not listening.
    let m = HttpMesh::start(3, &[], "").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    drop(m); // the backends are dropped with the mesh below; start a new one on closed ports
    let mesh = Mesh::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        let config =
            format!("[[service]]\nname = \"api\"\naddress = \"{closed}\"\nprotocol = \"http\"\n");
        servers.push(mesh.agent(&mesh.node(&format!("srv-{i}")), &config).await);
    }
    // And one endpoint where no agent runs at all.
    let nobody: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
    let mut endpoints: Vec<String> = servers
        .iter()
        .map(|s| format!("\"{}\"", s.quic_addr))
        .collect();
    endpoints.push(format!("\"{nobody}\""));
    let caller = mesh
        .agent(
            &mesh.node("caller"),
            &format!(
                "[[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
                 endpoints = [{}]\ntimeout = \"300ms\"\n",
                endpoints.join(", ")
            ),
        )
        .await;
    let mut client = Client::h1(caller.upstream_addr("api").unwrap()).await;
    for _ in 0..5 {
        let started = Instant::now();
        let answer = client.get("/x").await.unwrap();
        let took = started.elapsed();
        assert!(answer.status.is_server_error(), "{answer:?}");
        assert!(answer.headers.contains_key("plexus-error"), "{answer:?}");
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_semantics_pass_through() {
    let m = HttpMesh::start(1, &[], "").await;
    let app = m.app();
    // Keep-alive: several requests on one connection, and on one stream between the agents.
    let mut client = Client::h1(app).await;
    for _ in 0..3 {
        assert_eq!(client.get("/a").await.unwrap().status, 200);
    }
    let opened = "plexus_http_streams_opened_total{service=\"api\"}";
    assert_eq!(
        agent_metric(&m.caller, opened),
        1.0,
        "one stream carried all three"
    );
    // A body past the 64 KiB replay buffer streams through intact.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let req = Request::post("/echo")
        .header("host", "test")
        .body(Full::new(Bytes::from(big.clone())))
        .unwrap();
    let answer = client.send(req).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), big.len());
    assert!(answer.body == big);
    // Trace context: the app's trace continues, with the agents' spans in between.
    let req = Request::get("/t")
        .header("host", "test")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = client.send(req).await.unwrap();
    let seen = answer.headers["x-traceparent"].to_str().unwrap();
    assert!(
        seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{seen}"
    );
    assert!(
        !seen.contains("00f067aa0ba902b7"),
        "each agent adds its own span: {seen}"
    );
    // HTTP/2 with prior knowledge from the app.
    let mut h2 = Client::h2(app).await;
    let answer = h2.get("http://api.local/h2").await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.backend(), Some("b0"));
    // An upgrade becomes a byte pipe end to end.
    let mut tcp = tokio::net::TcpStream::connect(app).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(b"ping over the upgraded pipe").await.unwrap();
    let mut echoed = [0u8; 27];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping over the upgraded pipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_http_health_check_makes_the_service_unready() {
    let m = HttpMesh::start(
        1,
        &["health = { http = \"/healthz\", interval = \"100ms\" }"],
        "",
    )
    .await;
    let admin = m.servers[0].admin_addr;
    assert!(
        eventually(Duration::from_secs(5), async || admin_get(admin, "/readyz")
            .await
            .0
            == 200)
        .await
    );
    m.backends[0].behaviour.set_status(503);
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (status, body) = admin_get(admin, "/readyz").await;
            status == 503 && body.contains("api")
        })
        .await
    );
    assert_eq!(
        agent_metric(&m.servers[0], "plexus_service_ready{service=\"api\"}"),
        0.0
    );
    m.backends[0].behaviour.set_status(200);
    assert!(
        eventually(Duration::from_secs(5), async || admin_get(admin, "/readyz")
            .await
            .0
            == 200)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_requests_hide_a_stalled_endpoint() {
    let m = HttpMesh::start(3, &[], "hedge = true").await;
    for b in &m.backends {
        b.behaviour.set_delay(Duration::from_millis(2));
    }
    m.load(1, 100).await; // the upstream learns its p95
    m.backends[2].behaviour.set_delay(Duration::from_secs(2));
    let mut client = Client::h1(m.app()).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let answer = client.get("/hedge").await.unwrap();
        assert_eq!(answer.status, 200);
        assert_ne!(answer.backend(), Some("b2"));
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(1000),
        "slowest answer took {slowest:?}"
    );
    assert!(
        m.backends[2].behaviour.hits() >= 1,
        "the stalled endpoint was tried"
    );
    assert!(agent_metric(&m.caller, "plexus_hedges_total{service=\"api\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_routes_shows_endpoints_and_limits() {
    let m = HttpMesh::start(2, &["", "adaptive_limit = false"], "").await;
    m.load(1, 20).await;
    // The balancer may keep to one endpoint for a while (the other is unmeasured): load until
    // both served, so each hosted service has admitted requests.
    for _ in 0..10 {
        if m.backends.iter().all(|b| b.behaviour.hits() > 0) {
            break;
        }
        m.load(1, 20).await;
    }
    assert!(
        m.backends.iter().all(|b| b.behaviour.hits() > 0),
        "both services served"
    );
    let admin = m.caller.admin_addr.to_string();
    let (code, out, err) = plexus_tests::run_plexus(&["ctl", "--admin", &admin, "routes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("api (http, static endpoints"), "{out}");
    for server in &m.servers {
        assert!(out.contains(&server.quic_addr.to_string()), "{out}");
    }
    let admin = m.servers[0].admin_addr.to_string();
    let (code, out, _) = plexus_tests::run_plexus(&["ctl", "--admin", &admin, "routes", "--json"]);
    assert_eq!(code, 0);
    let routes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(routes["services"][0]["service"], "api");
    assert!(routes["services"][0]["concurrency_limit"].as_u64().unwrap() >= 4);
    // The limit is exported where there is one, and only there (not as a limit of 0).
    let limit = "plexus_concurrency_limit{service=\"api\"}";
    assert!(agent_metric(&m.servers[0], limit) >= 4.0);
    let unlimited = m.servers[1].telemetry.render();
    assert!(
        !unlimited.contains("plexus_concurrency_limit{"),
        "{unlimited}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_and_request_timeouts_bound_a_hanging_service() {
    let m = HttpMesh::start(
        2,
        &[],
        "try_timeout = \"200ms\"\nrequest_timeout = \"500ms\"\nretries = 5",
    )
    .await;
    for b in &m.backends {
        b.behaviour.set_delay(Duration::from_secs(5));
    }
    let mut client = Client::h1(m.app()).await;
    let started = Instant::now();
    let answer = client.get("/hang").await.unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status, 504, "{answer:?}");
    assert_eq!(answer.headers["plexus-error"], "timeout");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    // Two tries of 200 ms fit, the third is cut at the request deadline.
    let tries = agent_metric(
        &m.caller,
        "plexus_retries_total{service=\"api\",reason=\"timeout\"}",
    );
    assert!(tries >= 1.0, "per-try timeouts were retried");
}
