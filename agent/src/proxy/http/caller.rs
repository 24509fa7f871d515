//! The app-facing side of an HTTP upstream: each request is balanced, timed, retried within
//! the budget, optionally hedged, and answered with a clear 503/504 when nothing can take it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::body::{Metered, ProxyBody, RequestBody, MAX_REPLAY_BODY};
use super::streams::{ExchangeError, PeerStreams};
use super::trace::{ExportedSpan, TraceContext, TRACEPARENT};
use super::{
    agent_answer, is_idempotent, is_upgrade, strip_hop_by_hop, to_wire, ERROR, OVERLOADED,
};
use crate::policy::Outcome;
use crate::proxy::route::{Route, DISCOVERY_WAIT};
use crate::telemetry::otlp::{SpanKind, SpanSink};
use crate::telemetry::{names, LoadBook, Telemetry};
use crate::transport::PeerPool;

mod handles;
mod hedge;

use handles::CallerMetrics;

/// Most of a policy refusal's body kept to repeat it.
const MAX_DENIAL_ANSWER: usize = 4096;
/// How long reading a policy refusal's body may take.
const DENIAL_READ: Duration = Duration::from_secs(2);

/// Whether a serving agent refused the call by access policy (403, `plexus-error:
/// policy_denied`).
fn is_policy_denied<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::FORBIDDEN
        && response
            .headers()
            .get(super::ERROR)
            .is_some_and(|v| v == "policy_denied")
}

/// Why an attempt produced no response.
#[derive(Debug)]
enum AttemptError {
    Exchange(ExchangeError),
    Timeout,
}

/// One attempt in flight; if dropped unfinished (a hedge won, the app left) the endpoint's
/// in-flight count is still given back.
struct InFlight<'a> {
    route: &'a Route,
    addr: SocketAddr,
    started: Instant,
    done: bool,
}

impl<'a> InFlight<'a> {
    /// Ends the attempt; returns its whole duration. The balancer's sample leaves out `setup`
    /// (dialing the peer and opening a stream): a newly joined endpoint's first request would
    /// otherwise carry a handshake into its latency estimate and starve it for seconds.
    fn finish(mut self, outcome: Outcome, setup: Duration) -> Duration {
        self.done = true;
        let rtt = self.started.elapsed();
        self.route
            .finish(self.addr, rtt.saturating_sub(setup), outcome);
        rtt
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.route
                .finish(self.addr, self.started.elapsed(), Outcome::Cancelled);
        }
    }
}

/// The request parts every attempt repeats.
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    fn request(&self, body: ProxyBody) -> Request<ProxyBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        to_wire(request)
    }
}

/// What an attempt came back with.
struct Tried {
    addr: SocketAddr,
    outcome: Outcome,
    response: Option<Response<ProxyBody>>,
}

/// The HTTP side of one `[[upstream]]`.
pub struct HttpCaller {
    route: Arc<Route>,
    streams: Arc<PeerStreams>,
    telemetry: Telemetry,
    metrics: CallerMetrics,
    load: LoadBook,
    spans: Option<SpanSink>,
}

impl HttpCaller {
    pub fn new(
        route: Arc<Route>,
        pool: Arc<PeerPool>,
        telemetry: Telemetry,
        load: LoadBook,
        spans: Option<SpanSink>,
    ) -> Self {
        let opened = telemetry.counter(
            names::HTTP_STREAMS_OPENED,
            &[("service", route.service().as_str())],
        );
        let streams = Arc::new(PeerStreams::new(
            pool,
            route.service().clone(),
            route.upstream().timeout,
            opened,
        ));
        let metrics = CallerMetrics::new(telemetry.clone(), route.service().as_str());
        Self {
            route,
            streams,
            telemetry,
            metrics,
            load,
            spans,
        }
    }

    /// Serves one app connection, HTTP/1.1 or HTTP/2 (prior knowledge), upgrades included.
    /// Serves one app connection; when the agent drains, the connection is told to finish
    /// (HTTP/1.1 closes after the request in flight, HTTP/2 sends GOAWAY), so keep-alive apps
    /// take their next requests elsewhere instead of holding the drain open.
    pub async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        from: SocketAddr,
        mut draining: tokio::sync::watch::Receiver<bool>,
    ) {
        let service = hyper::service::service_fn(move |request| {
            let caller = self.clone();
            async move { Ok::<_, Infallible>(caller.handle(request).await) }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = crate::agent::stopping(&mut draining) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%from, %error, "app connection ended with an error");
        }
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        let trace = TraceContext::continue_from(request.headers());
        let span = tracing::info_span!(
            "request",
            service = %self.route.service(),
            method = %request.method(),
            path = %request.uri().path(),
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
            parent_id = %trace.parent_id_hex(),
        );
        let exported = ExportedSpan::begin(
            self.spans.as_ref(),
            trace,
            "plexus.request",
            SpanKind::Client,
            &request,
        );
        let response = self.forward(request, trace).instrument(span).await;
        if let Some(exported) = exported {
            let service = self.route.service().to_string();
            exported.end(response.status(), &[("plexus.service", service)]);
        }
        response
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        trace: TraceContext,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        if let Some(answer) = self.route.denied() {
            // A serving agent refused this node the service under the committed policy.
            return self.answered(started, super::policy_denied_text(answer));
        }
        let policy = &self.route.upstream().requests;
        let upgrade = is_upgrade(request.headers()) && request.version() == Version::HTTP_11;
        let app_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (parts, incoming) = request.into_parts();
        let mut template = Template {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        };
        template.headers.insert(TRACEPARENT, trace.header());
        let mut body = if upgrade {
            RequestBody::Replayable(Bytes::new())
        } else {
            match RequestBody::read(incoming, MAX_REPLAY_BODY).await {
                Ok(body) => body,
                Err(error) => {
                    tracing::info!(%error, "reading the request body from the app failed");
                    let answer = agent_answer(StatusCode::BAD_REQUEST, "request_body_failed");
                    return self.answered(started, answer);
                }
            }
        };
        let retryable = body.replayable()
            && !upgrade
            && (is_idempotent(&template.method) || policy.retry_non_idempotent);
        let hedge = policy.hedge && retryable && is_idempotent(&template.method);
        self.route.request();
        let deadline = tokio::time::Instant::now() + policy.request_timeout;
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut retries = 0;
        let mut last: Option<Response<ProxyBody>> = None;
        let mut reason = "no_endpoint";
        self.route
            .discovered(DISCOVERY_WAIT.min(policy.request_timeout))
            .await;
        while let Some(addr) = self.route.pick(&tried) {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.route.finish(addr, Duration::ZERO, Outcome::Cancelled);
                reason = "timeout";
                break;
            }
            let budget = policy.try_timeout.min(deadline - now);
            let Some(attempt_body) = body.attempt() else {
                self.route.finish(addr, Duration::ZERO, Outcome::Cancelled);
                break;
            };
            let tried_now = if hedge {
                self.hedged(addr, &template, &mut body, attempt_body, budget)
                    .await
            } else {
                let flight = InFlight {
                    route: &self.route,
                    addr,
                    started: Instant::now(),
                    done: false,
                };
                self.attempt(flight, template.request(attempt_body), budget)
                    .await
            };
            tried.push(tried_now.addr);
            match tried_now.outcome {
                Outcome::Success | Outcome::Cancelled => {
                    let response = tried_now
                        .response
                        .expect("a successful attempt has a response");
                    if is_policy_denied(&response) {
                        return self.denied_by_peer(started, response).await;
                    }
                    return self.respond(started, response, app_upgrade);
                }
                Outcome::Overloaded => {
                    // The endpoint protects itself: go elsewhere, without spending the budget.
                    reason = "overloaded";
                    last = tried_now.response;
                    if !body.replayable() {
                        break;
                    }
                }
                outcome => {
                    reason = match outcome {
                        Outcome::Timeout => "timeout",
                        Outcome::ConnectFailure => "unavailable",
                        _ => "failed",
                    };
                    last = tried_now.response;
                    if !retryable || retries >= policy.retries {
                        break;
                    }
                    if !self.route.try_retry() {
                        self.count(names::RETRY_BUDGET_EXHAUSTED, &[]);
                        tracing::info!("retry budget exhausted");
                        break;
                    }
                    retries += 1;
                    self.count(names::RETRIES, &[("reason", outcome.label())]);
                    if tried.len() >= self.route_len() {
                        // Every endpoint was tried: the retry may go to any of them again.
                        tried.retain(|_| false);
                    }
                }
            }
        }
        let answer = last.unwrap_or_else(|| match reason {
            "timeout" => agent_answer(StatusCode::GATEWAY_TIMEOUT, "timeout"),
            "overloaded" => super::overloaded_answer(),
            "no_endpoint" => agent_answer(StatusCode::SERVICE_UNAVAILABLE, "no_endpoint"),
            "unavailable" => agent_answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => agent_answer(StatusCode::BAD_GATEWAY, "failed"),
        });
        self.answered(started, answer)
    }

    fn route_len(&self) -> usize {
        self.route.endpoint_count()
    }

    /// One attempt, timed out after `budget`.
    async fn attempt(
        &self,
        flight: InFlight<'_>,
        request: Request<ProxyBody>,
        budget: Duration,
    ) -> Tried {
        let addr = flight.addr;
        // An upgrade takes its stream for good; everything else may reuse one.
        let reusable = !is_upgrade(request.headers());
        let exchange = self.streams.exchange(addr, request, reusable);
        let result = tokio::time::timeout(budget, exchange)
            .await
            .map_err(|_| AttemptError::Timeout)
            .and_then(|r| r.map_err(AttemptError::Exchange));
        let mut setup = Duration::ZERO;
        let (outcome, response) = match result {
            Ok((response, opened_in)) => {
                setup = opened_in;
                (classify(&response), Some(response))
            }
            Err(AttemptError::Timeout) => (Outcome::Timeout, None),
            Err(AttemptError::Exchange(ExchangeError::Connect(error))) => {
                tracing::info!(endpoint = %addr, %error, "endpoint unreachable");
                (Outcome::ConnectFailure, None)
            }
            Err(AttemptError::Exchange(ExchangeError::Exchange(error))) => {
                tracing::info!(endpoint = %addr, %error, "exchange with endpoint failed");
                (Outcome::Failure, None)
            }
        };
        let rtt = flight.finish(outcome, setup);
        let metrics = self.metrics.attempt(addr, outcome);
        metrics.attempts.increment(1);
        metrics.duration.record(rtt.as_secs_f64());
        Tried {
            addr,
            outcome,
            response,
        }
    }

    /// Hands the endpoint's response to the app, metering its body; completes an upgrade.
    fn respond(
        &self,
        started: Instant,
        mut response: Response<ProxyBody>,
        app_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        if let (Some(app), StatusCode::SWITCHING_PROTOCOLS) = (app_upgrade, response.status()) {
            let peer = hyper::upgrade::on(&mut response);
            let service = self.route.service().clone();
            tokio::spawn(async move {
                match tokio::try_join!(app, peer) {
                    Ok((app, peer)) => {
                        let (mut app, mut peer) = (TokioIo::new(app), TokioIo::new(peer));
                        let _ = tokio::io::copy_bidirectional(&mut app, &mut peer).await;
                    }
                    Err(error) => tracing::info!(%service, %error, "upgrade failed"),
                }
            });
        }
        self.answered(started, response)
    }

    /// Counts the request as the app sees it and meters the answer's body.
    /// A serving agent's policy refusal: remembered (so the next calls are answered here, see
    /// [`Route::denied`]) and passed on to the app.
    async fn denied_by_peer(
        &self,
        started: Instant,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let read = super::body::read_capped(response.into_body(), MAX_DENIAL_ANSWER);
        let text = match tokio::time::timeout(DENIAL_READ, read).await {
            Ok(Some(text)) => text,
            _ => Bytes::from_static(b"plexus: policy_denied\n"),
        };
        self.route.remember_denial(text.clone());
        self.answered(started, super::policy_denied_text(text))
    }

    fn answered(&self, started: Instant, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let status = parts.status;
        let latency = started.elapsed();
        let ok = !status.is_server_error();
        let agent_made = parts.headers.contains_key(ERROR);
        self.metrics.request(status, agent_made).increment(1);
        self.load.record_edge(
            &self.route.upstream().caller,
            self.route.service(),
            latency,
            ok,
        );
        let bytes = self.metrics.response_bytes();
        let body = Metered::new(body, move |n, _| bytes.increment(n));
        Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
    }

    fn count(&self, name: &'static str, extra: &[(&'static str, &str)]) {
        let mut labels = vec![("service", self.route.service().as_str())];
        labels.extend_from_slice(extra);
        self.telemetry.counter(name, &labels).increment(1);
    }
}

/// How an endpoint's answer counts for balancing, ejection and retries.
fn classify<B>(response: &Response<B>) -> Outcome {
    let status = response.status();
    if status == StatusCode::SERVICE_UNAVAILABLE && response.headers().contains_key(OVERLOADED) {
        Outcome::Overloaded
    } else if status.is_server_error() && response.headers().contains_key(ERROR) {
        // The serving agent could not reach its service (or does not host it).
        Outcome::ConnectFailure
    } else if status.is_server_error() {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}
