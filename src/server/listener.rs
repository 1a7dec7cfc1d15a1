//! The accept loop: a permit per open connection (`max_connections`), so at the cap
//! the server keeps serving the connections it has while new ones wait in the
//! listen backlog; hyper's HTTP/1 server on each, over [`GuardedIo`]; and a graceful
//! shutdown that lets in-flight requests finish, up to `drain_timeout`.
//!
//! It must never accept past the cap, nor spin on a failing `accept`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::connection::{ConnectionLimits, ConnectionService, Exchanges, GuardedIo};
use crate::config::{Limits, MAX_CONNECTIONS_LIMIT};

/// File descriptors kept for everything but client connections: the store's files
/// and pool (SQLite: 9 connections of 3 files; PostgreSQL: a pool of 32), the
/// runtime's own, the listener and standard streams.
const RESERVED_FILES: u64 = 64;

/// hyper's own default read buffer limit, kept as the floor so that only large
/// `max_header_bytes` change how much of a body hyper reads ahead.
const HYPER_DEFAULT_BUFFER: usize = 8192 + 4096 * 100;

/// How long to wait after an `accept` that failed for want of resources.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection cap when none is configured: three quarters of the open-file limit
/// left after [`RESERVED_FILES`], since each upstream call (forward routes,
/// deliveries) takes a descriptor too. Raises the soft limit to the hard one first.
pub fn default_max_connections() -> usize {
    let files = raise_open_files_limit().unwrap_or(1024);
    let connections = files.saturating_sub(RESERVED_FILES) / 4 * 3;
    usize::try_from(connections)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS_LIMIT)
}

/// The soft limit on open files, raised to the hard limit when allowed.
#[cfg(unix)]
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed. It fails (macOS with an
        // unlimited hard limit) without changing anything; the soft limit then stands.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    // rlim_t is u64 on Linux and macOS, not on every unix.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_open_files_limit() -> Option<u64> {
    None
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets every
/// connection finish its request (long-polls end at the same signal), and returns
/// once all are closed, closing those still open after `drain_timeout`.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let max_connections = limits
        .max_connections
        .unwrap_or_else(default_max_connections);
    tracing::info!(max_connections, "accepting connections");
    let permits = Arc::new(Semaphore::new(max_connections));
    let connection_limits = ConnectionLimits {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        max_header_bytes: limits.max_header_bytes,
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        // hyper's clock for this starts when it begins to wait for a head, idle time
        // included, and takes a timer per request: GuardedIo keeps both deadlines.
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(
            limits
                .max_header_bytes
                .saturating_add(8192)
                .max(HYPER_DEFAULT_BUFFER),
        );
    let graceful = GracefulShutdown::new();
    let force_close = CancellationToken::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // E.g. EMFILE: the descriptors are gone, waiting frees some.
                tracing::error!(%error, "accept failed; retrying shortly");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // Answers leave at once: with Nagle's algorithm a response written in parts
        // waits for the client's delayed ACK (40 ms on Linux).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let exchanges = Arc::new(Exchanges::default());
        let io = TokioIo::new(GuardedIo::new(stream, exchanges.clone(), connection_limits));
        let connection = graceful.watch(
            builder.serve_connection(io, ConnectionService::new(app.clone(), exchanges, peer)),
        );
        let force_close = force_close.clone();
        tokio::spawn(async move {
            tokio::select! {
                served = connection => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                _ = force_close.cancelled() => {}
            }
            drop(permit);
        });
    }
    // Closed now, so connection attempts are refused rather than left in a backlog
    // nobody accepts from.
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        let open = max_connections - permits.available_permits();
        tracing::warn!(
            open,
            "drain_timeout passed with requests in flight: closing their connections"
        );
        force_close.cancel();
    }
    // Every connection task gives its permit back when it ends.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Errors of one connection attempt, not of the listener: accept the next at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
