//! W3C Trace Context (`traceparent`): the caller's agent continues the app's trace or starts
//! one, opens a span per proxied request under it, and passes its own span on, so the serving
//! agent's span and the service's own spans join the same trace.

use std::time::SystemTime;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

use crate::telemetry::otlp::{SpanKind, SpanRecord, SpanSink};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// One hop of a trace: the trace, this hop's span, and the span it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
}

impl TraceContext {
    /// A new span continuing the `traceparent` in `headers`, or a new trace when there is
    /// none or it is malformed (a malformed one is ignored, as the spec says).
    pub fn continue_from(headers: &HeaderMap) -> Self {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse);
        let mut rng = rand::rng();
        let span_id = nonzero(|| rng.random());
        match parent {
            Some((trace_id, parent_id, sampled)) => Self {
                trace_id,
                span_id,
                parent_id: Some(parent_id),
                sampled,
            },
            None => Self {
                trace_id: nonzero(|| rand::rng().random()),
                span_id,
                parent_id: None,
                sampled: true,
            },
        }
    }

    /// `traceparent` naming this span as the parent of the next hop.
    pub fn header(&self) -> HeaderValue {
        // `00-<trace id>-<span id>-<flags>`, written in place: this runs on every request.
        let mut value = [0u8; 55];
        value[..3].copy_from_slice(b"00-");
        write_hex(&mut value[3..35], &self.trace_id);
        value[35] = b'-';
        write_hex(&mut value[36..52], &self.span_id);
        value[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&value).expect("hex is a valid header value")
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    pub fn parent_id_hex(&self) -> String {
        self.parent_id.map(|p| hex(&p)).unwrap_or_default()
    }
}

/// A proxied request's span on its way to the OTLP exporter: begun before the request is
/// forwarded (only when export is on), ended with the answer's status.
pub struct ExportedSpan {
    sink: SpanSink,
    trace: TraceContext,
    name: &'static str,
    kind: SpanKind,
    started: SystemTime,
    attributes: Vec<(&'static str, String)>,
}

impl ExportedSpan {
    pub fn begin<B>(
        sink: Option<&SpanSink>,
        trace: TraceContext,
        name: &'static str,
        kind: SpanKind,
        request: &hyper::Request<B>,
    ) -> Option<Self> {
        Some(Self {
            sink: sink?.clone(),
            trace,
            name,
            kind,
            started: SystemTime::now(),
            attributes: vec![
                ("http.request.method", request.method().to_string()),
                ("url.path", request.uri().path().to_owned()),
            ],
        })
    }

    /// Queues the span with the answer's status and `extra` attributes.
    pub fn end(mut self, status: hyper::StatusCode, extra: &[(&'static str, String)]) {
        self.attributes
            .push(("http.response.status_code", status.as_u16().to_string()));
        self.attributes.extend_from_slice(extra);
        self.sink.record(SpanRecord {
            trace_id: self.trace.trace_id,
            span_id: self.trace.span_id,
            parent_id: self.trace.parent_id,
            name: self.name,
            kind: self.kind,
            start: self.started,
            end: SystemTime::now(),
            attributes: self.attributes,
            error: status.is_server_error(),
        });
    }
}

fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let id = draw();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    write_hex(&mut out, bytes);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `version-traceid-parentid-flags`, lowercase hex; all-zero IDs and version `ff` are invalid.
/// Versions above 00 may carry more fields after the flags.
fn parse(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let version = unhex::<1>(version)?[0];
    if version == 0xff {
        return None;
    }
    let trace_id = unhex::<16>(parts.next()?)?;
    let parent_id = unhex::<8>(parts.next()?)?;
    let flags = unhex::<1>(parts.next()?)?[0];
    if version == 0 && parts.next().is_some() {
        return None;
    }
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::continue_from(&headers(incoming));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id_hex(), "00f067aa0ba902b7");
        assert_ne!(ctx.span_id_hex(), "00f067aa0ba902b7");
        assert!(ctx.sampled);
        let next = ctx.header();
        let next = next.to_str().unwrap();
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(next.ends_with("-01"));
        assert_eq!(parse(next).unwrap().1, ctx.span_id);
        assert_eq!(
            next,
            format!("00-{}-{}-01", ctx.trace_id_hex(), ctx.span_id_hex())
        );
        // Not sampled upstream: the flag is passed on.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let ctx = TraceContext::continue_from(&headers(unsampled));
        assert!(ctx.header().to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            let ctx = TraceContext::continue_from(&headers(bad));
            assert_eq!(ctx.parent_id, None, "{bad:?}");
            assert_ne!(ctx.trace_id, [0; 16]);
        }
        // A future version may add fields.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more").is_some());
    }
}
