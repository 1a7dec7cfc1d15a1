//! One accepted connection: the socket wrapped so that hyper's reads and writes
//! obey the connection-level limits, and the service that counts its requests.
//!
//! - [`ConnectionService`] counts each request from the moment hyper dispatches it
//!   until hyper drops its response body ([`Exchanges`]); the socket wrapper reads
//!   those counts to know whether a request is being served.
//! - [`GuardedIo`] closes a connection whose next request head does not come: after
//!   `idle_timeout` with no byte since the last response, or `header_timeout` after
//!   the head's first byte (a fresh connection counts as started). While a request
//!   is served, its time is the business of `request_timeout`, not of this module.
//! - It also replaces hyper's bare error heads with JSON answers ([`super::canned`]).
//!   A write is taken for one only when no request was dispatched since the last
//!   flush that found every request finished: hyper writes response bytes only for a
//!   dispatched request, and it flushes the whole of a response before it reads the
//!   next head, so such a write can hold no byte of any response.
//!
//! This module must never buffer what hyper writes (beyond the one replacement) nor
//! decide anything from the content of a response.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower::Service;

/// Bytes read and dropped, at most, after a replaced error head: the rest of the
/// refused head would otherwise make the close a reset, which can cost the client
/// the answer.
const DISCARD_AFTER_ERROR: usize = 256 * 1024;

/// The connection-level limits, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    /// From the first byte of a head (or the accept) to its end.
    pub header: Duration,
    /// From the end of a response to the first byte of the next head.
    pub idle: Duration,
    /// Said in the 431's detail.
    pub max_header_bytes: usize,
}

/// Requests dispatched and finished on one connection. Both counters move on the
/// connection's own task only (hyper polls the service, the body and the socket
/// there), so relaxed ordering suffices.
#[derive(Debug, Default)]
pub(super) struct Exchanges {
    dispatched: AtomicU64,
    finished: AtomicU64,
}

impl Exchanges {
    fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Whether a request is between its dispatch and the end of its response body.
    fn serving(&self) -> bool {
        self.finished.load(Ordering::Relaxed) != self.dispatched()
    }
}

/// One request counted as dispatched until dropped (with its response body, or
/// with its future when the connection goes first).
struct ExchangeGuard(Arc<Exchanges>);

impl ExchangeGuard {
    fn new(exchanges: &Arc<Exchanges>) -> Self {
        exchanges.dispatched.fetch_add(1, Ordering::Relaxed);
        ExchangeGuard(exchanges.clone())
    }
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// The application as hyper calls it on one connection.
#[derive(Clone)]
pub(super) struct ConnectionService {
    app: Router,
    exchanges: Arc<Exchanges>,
    peer: SocketAddr,
}

impl ConnectionService {
    /// Serves `app` to the client at `peer`, counting requests in `exchanges`
    /// (shared with the [`GuardedIo`]).
    pub(super) fn new(app: Router, exchanges: Arc<Exchanges>, peer: SocketAddr) -> Self {
        ConnectionService {
            app,
            exchanges,
            peer,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = Exchange;

    fn call(&self, request: Request<Incoming>) -> Exchange {
        let guard = ExchangeGuard::new(&self.exchanges);
        // A Router is always ready; its clone is a reference count.
        let mut request = request.map(Body::new);
        // The brute-force limits count failures per source address.
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let response = self.app.clone().call(request);
        Exchange {
            response,
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; its guard moves into the response body.
    pub(super) struct Exchange {
        #[pin]
        response: RouteFuture<Infallible>,
        guard: Option<ExchangeGuard>,
    }
}

impl Future for Exchange {
    type Output = Result<Response<GuardedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.response.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| GuardedBody {
            body,
            _guard: guard,
        })))
    }
}

/// A response body that keeps its request counted until hyper drops it.
pub(super) struct GuardedBody {
    body: Body,
    _guard: Option<ExchangeGuard>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    // hyper sets Content-Length from the exact hint: it must come through.
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What the connection waits for when no request is being served.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No byte since the last response; closed at `until`.
    Idle { until: Instant },
    /// A head has begun (or the connection is new); closed at `until` unless it ends.
    Head { until: Instant },
    /// A request is being served.
    Serving,
}

/// A replacement answer being written in place of hyper's error head.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
}

/// The socket of one connection, with its idle and header deadlines and the
/// rewrite of hyper's error heads.
pub(super) struct GuardedIo {
    stream: TcpStream,
    exchanges: Arc<Exchanges>,
    limits: ConnectionLimits,
    phase: Phase,
    /// Armed at `armed_for`, never later than the deadline it serves: moving a timer
    /// later is done lazily when it fires, so a busy connection never touches it.
    timer: Pin<Box<Sleep>>,
    armed_for: Instant,
    /// No request dispatched since a flush that found every request finished.
    quiet: bool,
    /// `Exchanges::dispatched` when `quiet` was last set or cleared.
    quiet_since: u64,
    replacement: Option<Replacement>,
}

impl GuardedIo {
    /// `stream`, just accepted, whose requests `exchanges` counts.
    pub(super) fn new(
        stream: TcpStream,
        exchanges: Arc<Exchanges>,
        limits: ConnectionLimits,
    ) -> Self {
        let until = Instant::now() + limits.header;
        GuardedIo {
            stream,
            exchanges,
            limits,
            phase: Phase::Head { until },
            timer: Box::pin(tokio::time::sleep_until(until)),
            armed_for: until,
            quiet: true,
            quiet_since: 0,
            replacement: None,
        }
    }

    /// Brings `phase` up to date with the request counts.
    fn update_phase(&mut self) {
        if self.exchanges.serving() {
            self.phase = Phase::Serving;
        } else if let Phase::Serving = self.phase {
            self.phase = Phase::Idle {
                until: Instant::now() + self.limits.idle,
            };
        }
    }

    /// Pending (with the timer's wake-up registered), or an error once the current
    /// deadline has passed. Called when the socket is pending and when a response
    /// has just been flushed, the moments after which hyper waits for a wake-up.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let (until, what) = match self.phase {
            Phase::Idle { until } => (until, "idle connection closed after idle_timeout"),
            Phase::Head { until } => (until, "request head not received within header_timeout"),
            Phase::Serving => return Poll::Pending,
        };
        loop {
            if self.armed_for > until {
                self.timer.as_mut().reset(until);
                self.armed_for = until;
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= until {
                tracing::debug!("{what}");
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
            }
            self.timer.as_mut().reset(until);
            self.armed_for = until;
        }
    }

    /// Whether hyper is writing one of its own error heads now (see the module doc).
    fn writes_error_head(&mut self) -> bool {
        if self.replacement.is_some() {
            return true;
        }
        let dispatched = self.exchanges.dispatched();
        if self.quiet && dispatched == self.quiet_since {
            return true;
        }
        self.quiet = false;
        self.quiet_since = dispatched;
        false
    }

    /// Writes the JSON answer for hyper's error head `head` (the first of `len`
    /// bytes hyper wants written), then reports those `len` bytes as written.
    fn poll_write_replacement(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if self.replacement.is_none() {
            match super::canned::replacement(head, self.limits.max_header_bytes) {
                Some(bytes) => self.replacement = Some(Replacement { bytes, written: 0 }),
                None => {
                    self.quiet = false;
                    return Pin::new(&mut self.stream).poll_write(cx, head);
                }
            }
        }
        let Some(replacement) = self.replacement.as_mut() else {
            return Poll::Ready(Ok(len));
        };
        let complete = replacement.written == replacement.bytes.len();
        while replacement.written < replacement.bytes.len() {
            match Pin::new(&mut self.stream)
                .poll_write(cx, &replacement.bytes[replacement.written..])
            {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => replacement.written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return self.poll_deadline(cx).map(Err),
            }
        }
        if !complete {
            self.discard_unread();
        }
        Poll::Ready(Ok(len))
    }

    /// Drops what the client has sent and nobody will read, so the close that follows
    /// an error answer is a FIN rather than a reset.
    fn discard_unread(&mut self) {
        let mut scratch = [0u8; 8192];
        let mut discarded = 0;
        while discarded < DISCARD_AFTER_ERROR {
            match self.stream.try_read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.update_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Phase::Idle { .. } = this.phase {
                    if buf.filled().len() > before {
                        this.phase = Phase::Head {
                            until: Instant::now() + this.limits.header,
                        };
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.writes_error_head() {
            return this.poll_write_replacement(cx, buf, buf.len());
        }
        this.update_phase();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            written => written,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.writes_error_head() {
            let len = bufs.iter().map(|buf| buf.len()).sum();
            let head = bufs
                .iter()
                .find(|buf| !buf.is_empty())
                .map_or(&[][..], |buf| &buf[..]);
            return this.poll_write_replacement(cx, head, len);
        }
        this.update_phase();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            written => written,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        // hyper flushes its own buffer before the socket's: nothing of any response is
        // left to write once every dispatched request is finished.
        if !this.exchanges.serving() {
            this.quiet = true;
            this.quiet_since = this.exchanges.dispatched();
        }
        // A response just ended, and hyper waits for the next head on the read
        // interest it registered while the request was served, without reading
        // again: the idle deadline must be on the clock from here.
        this.update_phase();
        match this.poll_deadline(cx) {
            Poll::Ready(error) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
