//! Bodies the HTTP proxy hands around: boxed, buffered for retries, and metered.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors a proxied body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy produces.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Request bodies up to this size are kept so a request can be sent again.
pub const MAX_REPLAY_BODY: usize = 64 * 1024;

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Reads `body` to its end if it holds at most `limit` bytes (`None`: longer, or it failed).
pub async fn read_capped(mut body: ProxyBody, limit: usize) -> Option<Bytes> {
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if kept.len() + data.len() > limit {
                return None;
            }
            kept.extend_from_slice(&data);
        }
    }
    Some(kept.freeze())
}

/// A request body read for sending, perhaps more than once.
pub enum RequestBody {
    /// Read whole (at most [`MAX_REPLAY_BODY`]): every attempt gets a copy.
    Replayable(Bytes),
    /// Too long to keep: the first bytes read so far, then the rest as it comes. One attempt.
    Streaming(ProxyBody),
    /// A streaming body already given to an attempt.
    Sent,
}

impl RequestBody {
    /// Reads `body` until it ends or passes `limit` bytes. Trailers end a body as not
    /// replayable (they are kept in the streamed form).
    pub async fn read<B>(body: B, limit: usize) -> Result<Self, BoxError>
    where
        B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let mut body = body;
        if body.is_end_stream() {
            return Ok(Self::Replayable(Bytes::new()));
        }
        if body.size_hint().lower() > limit as u64 {
            return Ok(Self::Streaming(boxed(body)));
        }
        let mut kept = BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(Self::Replayable(kept.freeze())),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        kept.extend_from_slice(&data);
                        if kept.len() > limit {
                            return Ok(Self::Streaming(prefixed(kept.freeze(), None, body)));
                        }
                    }
                    Err(frame) => {
                        return Ok(Self::Streaming(prefixed(kept.freeze(), Some(frame), body)));
                    }
                },
            }
        }
    }

    pub fn replayable(&self) -> bool {
        matches!(self, Self::Replayable(_))
    }

    /// The body for one attempt; a streaming body can be taken once (later calls get `None`).
    pub fn attempt(&mut self) -> Option<ProxyBody> {
        match self {
            Self::Replayable(bytes) => Some(full(bytes.clone())),
            Self::Streaming(_) => match std::mem::replace(self, Self::Sent) {
                Self::Streaming(body) => Some(body),
                _ => None,
            },
            Self::Sent => None,
        }
    }
}

/// `head`, then `frame` (non-data, e.g. trailers) if any, then the rest of `rest`.
fn prefixed<B>(head: Bytes, frame: Option<Frame<Bytes>>, rest: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Prefixed {
        head: (!head.is_empty()).then_some(Frame::data(head)),
        frame,
        rest,
    }
    .boxed()
}

struct Prefixed<B> {
    head: Option<Frame<Bytes>>,
    frame: Option<Frame<Bytes>>,
    rest: B,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(head)));
        }
        if let Some(frame) = self.frame.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }
}

/// A body that counts its data bytes and holds `guard` until the body ends or is dropped;
/// `on_end(bytes, completed)` runs once at that moment.
pub struct Metered<G: FnOnce(u64, bool) + Send + Sync> {
    inner: ProxyBody,
    bytes: u64,
    on_end: Option<G>,
}

impl<G: FnOnce(u64, bool) + Send + Sync> Metered<G> {
    pub fn new(inner: ProxyBody, on_end: G) -> Self {
        let mut metered = Self {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        };
        if metered.inner.is_end_stream() {
            metered.end(true);
        }
        metered
    }

    fn end(&mut self, completed: bool) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes, completed);
        }
    }
}

impl<G: FnOnce(u64, bool) + Send + Sync> Drop for Metered<G> {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl<G: FnOnce(u64, bool) + Send + Sync + Unpin> Body for Metered<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.end(true);
                }
            }
            Poll::Ready(None) => self.end(true),
            Poll::Ready(Some(Err(_))) => self.end(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_bodies_are_kept_and_replayed() {
        let mut body = RequestBody::read(Full::new(Bytes::from_static(b"hello")), 16)
            .await
            .unwrap();
        assert!(body.replayable());
        for _ in 0..3 {
            let bytes = body.attempt().unwrap().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"hello");
        }
    }

    /// A body that yields the given chunks one poll at a time.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn long_bodies_stream_once_with_nothing_lost() {
        let chunks = Chunks((0..10).map(|i| Bytes::from(vec![i as u8; 10])).collect());
        let mut body = RequestBody::read(chunks, 25).await.unwrap();
        assert!(!body.replayable());
        let bytes = body.attempt().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 100);
        assert_eq!(bytes[35], 3);
        assert!(body.attempt().is_none(), "a streamed body is sent once");
    }

    #[tokio::test]
    async fn metered_counts_bytes_and_reports_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let body = Metered::new(full("abcdef"), move |bytes, done| {
            tx.send((bytes, done)).unwrap()
        });
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 6);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![(6, true)]);
    }
}
