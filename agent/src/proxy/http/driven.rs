//! HTTP/1.1 client connections driven by the task that uses them, not by a task of their own.
//!
//! hyper's usual client spawns a task per connection and hands requests and responses to it
//! through channels: two task wake-ups per exchange, which on a lightly loaded host often become
//! thread wake-ups (a context switch each). A [`DrivenConn`] is polled by whoever sends on it:
//! while a request waits for its answer, and then by the response body ([`DrivenBody`]) as the
//! proxy passes it on. When the body has been read to the end the connection goes back to its
//! owner's idle list; an idle connection is polled by nobody, so [`DrivenConn::usable`] looks at
//! it again before reuse (a peer that closed it meanwhile is noticed then).
//!
//! Upgrades (WebSocket and friends) do not use this: they take a connection for good.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::rt::{Read, Write};
use hyper::{Request, Response};

use super::body::{BoxError, ProxyBody};

/// What a connection runs on: a TCP connection, or a QUIC stream pair.
pub trait Io: Read + Write + Unpin + Send + 'static {}
impl<T: Read + Write + Unpin + Send + 'static> Io for T {}

/// Where a connection goes once its response body has been read to the end.
pub type GiveBack<T> = Box<dyn FnOnce(DrivenConn<T>) + Send + Sync>;

/// Why a request got no response.
pub enum SendError {
    /// The connection had closed before the request was written: it can go elsewhere.
    Unsent(Box<Request<ProxyBody>>),
    /// The exchange failed after the request was (perhaps partly) written.
    Failed(hyper::Error),
}

/// One HTTP/1.1 client connection and the state machine that runs it.
pub struct DrivenConn<T: Io> {
    sender: SendRequest<ProxyBody>,
    connection: Pin<Box<Connection<T, ProxyBody>>>,
    /// The connection future finished: the connection is closed.
    ended: bool,
    /// When it last went idle.
    pub idle_since: Instant,
}

impl<T: Io> DrivenConn<T> {
    /// Starts HTTP/1.1 on `io` (no I/O happens until the first request).
    pub async fn handshake(io: T) -> hyper::Result<Self> {
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        Ok(Self {
            sender,
            connection: Box::pin(connection),
            ended: false,
            idle_since: Instant::now(),
        })
    }

    /// Runs the connection's state machine once without waiting: it reads a close the peer sent
    /// while the connection sat idle and readies itself for the next request. Whether the
    /// connection can take a request now.
    pub fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx);
        !self.ended && !self.sender.is_closed() && self.sender.is_ready()
    }

    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.ended && self.connection.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
    }

    /// Sends `request` and waits for the response head, running the connection meanwhile. The
    /// response body keeps running it; once read to the end the connection is handed to
    /// `give_back` (dropped, and so closed, without one).
    pub fn send(self, request: Request<ProxyBody>, give_back: Option<GiveBack<T>>) -> Exchange<T> {
        Exchange {
            conn: Some(self),
            response: None,
            request: Some(request),
            give_back,
        }
    }
}

/// Idle connections by address, most recently used taken first.
pub struct IdleConns<T: Io> {
    idle: Mutex<HashMap<SocketAddr, Vec<DrivenConn<T>>>>,
    /// Kept per address at most.
    max_per_address: usize,
    /// A connection idle this long is closed instead of reused.
    max_idle: Duration,
}

/// How often idle lists are swept of connections closed or idle too long.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl<T: Io> IdleConns<T> {
    /// Inside a runtime, a task sweeps the lists every few seconds (it ends with the lists), so
    /// a connection the peer closed, or one idle too long, is closed even if its address is
    /// never asked for again.
    pub fn new(max_per_address: usize, max_idle: Duration) -> Arc<Self> {
        let idle = Arc::new(Self {
            idle: Mutex::default(),
            max_per_address,
            max_idle,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let lists = Arc::downgrade(&idle);
            runtime.spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    let Some(lists) = lists.upgrade() else { return };
                    lists.sweep();
                }
            });
        }
        idle
    }

    /// Drops connections closed by their peer or idle too long, outside the lock.
    pub fn sweep(&self) {
        let mut dropped = Vec::new();
        {
            let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for list in lists.values_mut() {
                let kept: Vec<DrivenConn<T>> = list
                    .drain(..)
                    .filter_map(|mut conn| {
                        let keep = conn.idle_since.elapsed() < self.max_idle && conn.usable();
                        if keep {
                            Some(conn)
                        } else {
                            dropped.push(conn);
                            None
                        }
                    })
                    .collect();
                *list = kept;
            }
            lists.retain(|_, list| !list.is_empty());
        }
        drop(dropped);
    }

    /// Where a connection to `address` goes once its answer has been read to the end.
    pub fn give_back(self: &Arc<Self>, address: SocketAddr) -> GiveBack<T> {
        let idle = self.clone();
        Box::new(move |mut conn| {
            conn.idle_since = Instant::now();
            let mut lists = idle.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = lists.entry(address).or_default();
            if list.len() < idle.max_per_address {
                list.push(conn);
            }
        })
    }

    /// The most recently used idle connection to `address` that can take a request; closed
    /// ones, and those idle too long, are dropped on the way.
    pub fn take(&self, address: SocketAddr) -> Option<DrivenConn<T>> {
        let mut dropped = Vec::new();
        let found = {
            let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = lists.get_mut(&address)?;
            // The oldest are at the front.
            let stale = list
                .iter()
                .take_while(|c| c.idle_since.elapsed() >= self.max_idle)
                .count();
            dropped.extend(list.drain(..stale));
            let mut found = None;
            while let Some(mut conn) = list.pop() {
                if conn.usable() {
                    found = Some(conn);
                    break;
                }
                dropped.push(conn);
            }
            found
        };
        // Closing happens outside the lock.
        drop(dropped);
        found
    }

    /// The number of idle connections kept for `address`.
    pub fn count(&self, address: SocketAddr) -> usize {
        let lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        lists.get(&address).map_or(0, Vec::len)
    }
}

/// A request on a [`DrivenConn`], waiting for the response head while running the connection.
pub struct Exchange<T: Io> {
    conn: Option<DrivenConn<T>>,
    request: Option<Request<ProxyBody>>,
    response: Option<ResponseFuture>,
    give_back: Option<GiveBack<T>>,
}

type ResponseFuture = Pin<
    Box<
        dyn Future<
                Output = Result<
                    Response<Incoming>,
                    hyper::client::conn::TrySendError<Request<ProxyBody>>,
                >,
            > + Send,
    >,
>;

impl<T: Io> Future for Exchange<T> {
    type Output = Result<Response<DrivenBody<T>>, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Pending;
        };
        if let Some(request) = this.request.take() {
            this.response = Some(Box::pin(conn.sender.try_send_request(request)));
        }
        conn.drive(cx);
        let Some(response) = this.response.as_mut() else {
            return Poll::Pending;
        };
        // Only the connection, run just above, answers: its wakers bring this task back. Asking
        // the answer with a waker of its own would have the connection wake this very task
        // (which makes the runtime hand the task on and wake another thread, for nothing).
        let mut quiet = Context::from_waker(Waker::noop());
        let waiting = if conn.ended { cx } else { &mut quiet };
        let result = std::task::ready!(response.as_mut().poll(waiting));
        this.response = None;
        Poll::Ready(match result {
            Ok(response) => {
                let (parts, inner) = response.into_parts();
                let body = DrivenBody {
                    inner,
                    conn: this.conn.take(),
                    give_back: this.give_back.take(),
                };
                Ok(Response::from_parts(parts, body))
            }
            Err(mut error) => match error.take_message() {
                Some(unsent) => Err(SendError::Unsent(Box::new(unsent))),
                None => Err(SendError::Failed(error.into_error())),
            },
        })
    }
}

/// A response body that runs its connection while it is read, and gives the connection back
/// once the body has been read to the end.
pub struct DrivenBody<T: Io> {
    inner: Incoming,
    conn: Option<DrivenConn<T>>,
    give_back: Option<GiveBack<T>>,
}

impl<T: Io> DrivenBody<T> {
    /// The body is complete: the connection goes back if it can take another request now. One
    /// that cannot (an early answer while the request body is still being sent, a close) is
    /// dropped: nobody would run it while it sat idle.
    fn finish(&mut self) {
        if let (Some(mut conn), Some(give_back)) = (self.conn.take(), self.give_back.take()) {
            if conn.usable() {
                give_back(conn);
            }
        }
    }
}

impl<T: Io> Drop for DrivenBody<T> {
    fn drop(&mut self) {
        // A server writing this body stops polling it once it reports its end.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl<T: Io> Body for DrivenBody<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match this.conn.as_mut() {
            Some(conn) if !conn.ended => {
                // As for the answer's head (see `Exchange::poll`): the connection, run here, is
                // what fills the body, so the body is asked without a waker of its own.
                let mut quiet = Context::from_waker(Waker::noop());
                match Pin::new(&mut this.inner).poll_frame(&mut quiet) {
                    Poll::Pending => {
                        conn.drive(cx);
                        let waiting = if conn.ended { cx } else { &mut quiet };
                        Pin::new(&mut this.inner).poll_frame(waiting)
                    }
                    ready => ready,
                }
            }
            _ => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            Poll::Ready(Some(Err(_))) => {
                this.conn = None;
            }
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
