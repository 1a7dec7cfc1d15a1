//! `request_timeout`: a request still unanswered past the limit is dropped and
//! answered 503 with `Retry-After`, through [`ApiError`] like every other error. A
//! request that waits on purpose (a long-poll, a task wait, a forward call) is granted
//! its wait on top, through [`waiters::allow`]; the handler's body read runs inside,
//! so a stalled upload is cut too.
//!
//! Unlike tower-http's `TimeoutLayer`, this answers in the API's format and lets the
//! limit grow while the request runs. It bounds the wait for the response head only:
//! Hopper's bodies are complete when the head is, and the connection layer bounds
//! what comes after.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use tokio::task::futures::TaskLocalFuture;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::api::ApiError;
use crate::domain::waiters;

/// Applies [`RequestTimeout`] with the configured limit.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeoutLayer {
    limit: Duration,
}

impl RequestTimeoutLayer {
    /// Requests get `limit`, plus what their waits are granted.
    pub fn new(limit: Duration) -> Self {
        RequestTimeoutLayer { limit }
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> RequestTimeout<S> {
        RequestTimeout {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`RequestTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, R> Service<R> for RequestTimeout<S>
where
    S: Service<R, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<std::cell::Cell<Duration>, Timed<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        waiters::scope(Timed {
            response: self.inner.call(request),
            limit: self.limit,
            due: None,
            timer: None,
        })
    }
}

pin_project_lite::pin_project! {
    /// A response racing its deadline.
    pub struct Timed<F> {
        #[pin]
        response: F,
        limit: Duration,
        // When `limit` runs out; set with the timer.
        due: Option<Instant>,
        // Made at the first pending poll: a request answered at once costs no timer.
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F, E> Future for Timed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(response) = this.response.poll(cx) {
            return Poll::Ready(response);
        }
        let due = *this.due.get_or_insert_with(|| Instant::now() + *this.limit);
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until(due)));
        }
        let Some(mut timer) = this.timer.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        loop {
            ready!(timer.as_mut().poll(cx));
            let allowed = due + waiters::allowance();
            if Instant::now() >= allowed {
                return Poll::Ready(Ok(
                    ApiError::Overloaded("request timed out".into()).into_response()
                ));
            }
            timer.as_mut().reset(allowed);
        }
    }
}
