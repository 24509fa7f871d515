//! HTTP-aware proxying (`protocol = "http"`).
//!
//! The caller's agent speaks HTTP/1.1 or HTTP/2 (prior knowledge) with the local app, and
//! carries each request on its own QUIC stream to a serving agent as HTTP/1.1 after a
//! [`plexus_protocol::StreamHeader`]. That gives it, per request, a choice of endpoint, a
//! latency, a status and byte counts: what balancing, ejection, retries and the dependency map
//! feed on. The serving agent admits the request under the service's adaptive concurrency limit
//! and forwards it over a keep-alive connection pool to the local service.
//!
//! - [`caller`]: the app-facing side (balancing, retries, hedging, timeouts).
//! - [`serve`]: the service-facing side (admission, shedding, the local pool).
//! - [`streams`]: keep-alive HTTP/1.1 connections to serving agents, one per QUIC stream.
//! - [`local`]: the serving agent's keep-alive connections to its local services.
//! - [`driven`]: HTTP/1.1 client connections run by the request using them, not a task.
//! - [`body`]: body buffering for retries and metering; [`trace`]: W3C `traceparent`.

pub mod body;
pub mod caller;
pub mod driven;
pub mod local;
pub mod serve;
pub mod streams;
pub mod trace;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use body::{full, ProxyBody};

/// Set by a serving agent on the 503 it answers when the service's concurrency limit (or its
/// capacity) is reached: callers try another endpoint instead of retrying this one.
pub const OVERLOADED: HeaderName = HeaderName::from_static("plexus-overloaded");
/// Set on answers the agents make themselves instead of the service; its value says why
/// (`unknown_service`, `local_connect_refused`, `no_endpoint`, `timeout`, ...).
pub const ERROR: HeaderName = HeaderName::from_static("plexus-error");

/// Hop-by-hop headers (RFC 9110 §7.6.1), which each connection has its own of. Names, not
/// strings: every request passes here twice on each agent, and a string name is parsed on
/// every lookup.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether a request asks to switch protocols (WebSocket and friends): HTTP/1.1 with
/// `Connection: upgrade` and an `Upgrade` header.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names. An upgrade keeps
/// `Connection: upgrade` and `Upgrade`, which must reach the other end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names finds that without a lookup per name.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(name) || name == header::UPGRADE)
    {
        return;
    }
    let upgrade = is_upgrade(headers);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Methods a retry cannot make worse (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// An answer the agent makes itself, marked with [`ERROR`].
pub fn agent_answer(status: StatusCode, reason: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(format!("plexus: {reason}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(ERROR, HeaderValue::from_static(reason));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The 403 a serving agent answers a call the access policy refuses, naming the caller node,
/// the services it hosts and the service it called. Final for the caller's agent: not a 5xx,
/// so it is neither retried nor held against the endpoint.
pub fn policy_denied_answer(denied: &crate::access::Denied) -> Response<ProxyBody> {
    policy_denied_text(Bytes::from(format!("plexus: policy_denied: {denied}\n")))
}

/// A policy refusal with `text` as its body (a serving agent's, repeated by the caller's).
pub fn policy_denied_text(text: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    headers.insert(ERROR, HeaderValue::from_static("policy_denied"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The 503 a serving agent sheds with.
pub fn overloaded_answer() -> Response<ProxyBody> {
    let mut response = agent_answer(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    response
        .headers_mut()
        .insert(OVERLOADED, HeaderValue::from_static("1"));
    response
}

/// `uri` as an origin-form target (path and query only), `Ok(None)` when it already is one: most
/// requests' targets are, and parsing one again would cost on every request.
pub fn origin_form(uri: &hyper::Uri) -> Result<Option<hyper::Uri>, hyper::http::uri::InvalidUri> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(None);
    }
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    target.parse().map(Some)
}

/// Rewrites a request from the app into the form sent between agents: HTTP/1.1, origin-form
/// target, `Host` from the authority (HTTP/2 has none), hop-by-hop headers removed.
pub fn to_wire<B>(request: Request<B>) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
    }
    if let Ok(Some(uri)) = origin_form(&parts.uri) {
        parts.uri = uri;
    }
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn h2_requests_become_origin_form_http11_with_a_host() {
        let request = Request::builder()
            .version(hyper::Version::HTTP_2)
            .uri("http://payments.local:8080/pay?x=1")
            .body(())
            .unwrap();
        let wire = to_wire(request);
        assert_eq!(wire.version(), hyper::Version::HTTP_11);
        assert_eq!(wire.uri(), "/pay?x=1");
        assert_eq!(wire.headers()["host"], "payments.local:8080");
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_as_they_are() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("payments"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // An `Upgrade` without `Connection: upgrade` is no upgrade: it goes.
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn targets_are_made_origin_form_only_when_they_are_not() {
        let absolute: hyper::Uri = "http://payments.local/pay?x=1".parse().unwrap();
        assert_eq!(origin_form(&absolute).unwrap().unwrap(), "/pay?x=1");
        let authority: hyper::Uri = "payments.local:80".parse().unwrap();
        assert_eq!(origin_form(&authority).unwrap().unwrap(), "/");
        let origin: hyper::Uri = "/pay?x=1".parse().unwrap();
        assert!(origin_form(&origin).unwrap().is_none());
        assert!(origin_form(&"*".parse().unwrap()).unwrap().is_none());
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
