//! `GET /metrics` in the Prometheus text format, and the middleware that counts
//! and times every request by its matched route.
//!
//! Gauges read from the store (queue depths, task counts, stream offsets) are
//! computed at scrape time and kept for [`GAUGES_KEPT_FOR`], so scrapers at any
//! rate cost the store at most one set of reads per period and never touch the
//! hot path.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::telemetry::{self, Exposition};

/// How long gauges read from the store are reused between scrapes.
const GAUGES_KEPT_FOR: Duration = Duration::from_secs(2);
/// How long a scrape waits for the store before reporting it down.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// Streams whose consumers are read at a scrape; past it, only their last event ids.
const STREAMS_WITH_CONSUMERS: usize = 1000;
/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`'s settings and its cached gauges.
pub struct Metrics {
    require_auth: bool,
    gauges: tokio::sync::Mutex<Option<(Instant, Arc<str>)>>,
}

impl Metrics {
    /// Scrapes open to anyone, or only to admins when `require_auth`.
    pub fn new(require_auth: bool) -> Self {
        telemetry::handle();
        Metrics {
            require_auth,
            gauges: tokio::sync::Mutex::new(None),
        }
    }
}

/// The metrics route, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// `GET /metrics` → the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    summary = "Metrics in the Prometheus text format (admins only with metrics.require_auth)",
    security((), ("basic" = []), ("token" = []), ("bearer" = [], "api_client_id" = [])),
    responses((status = 200, description = "Every metric family", content_type = "text/plain", body = String))
)]
pub async fn metrics(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    if state.metrics.require_auth {
        let (mut parts, _) = request.into_parts();
        let caller = Principal::from_request_parts(&mut parts, &state).await?;
        caller.require_admin()?;
    }
    let gauges = gauges(&state).await;
    let mut text = telemetry::handle().render();
    text.push_str(&gauges);
    let mut response = (StatusCode::OK, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}

/// The gauges, from the cache when it is recent enough.
async fn gauges(state: &AppState) -> Arc<str> {
    let mut cached = state.metrics.gauges.lock().await;
    if let Some((at, text)) = cached.as_ref() {
        if at.elapsed() < GAUGES_KEPT_FOR {
            return text.clone();
        }
    }
    let text: Arc<str> = read_gauges(state).await.into();
    *cached = Some((Instant::now(), text.clone()));
    text
}

async fn read_gauges(state: &AppState) -> String {
    let node = Principal::node();
    let mut out = Exposition::default();
    out.family(
        "hopper_build_info",
        "gauge",
        "The running version and store backend (always 1).",
    );
    out.sample(
        "hopper_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("store", state.store.backend()),
        ],
        1.0,
    );
    let up = matches!(
        tokio::time::timeout(STORE_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    out.family(
        "hopper_store_up",
        "gauge",
        "Whether the store answered this scrape (1) or not (0).",
    );
    out.sample("hopper_store_up", &[], if up { 1.0 } else { 0.0 });
    if up {
        queue_gauges(state, &node, &mut out).await;
        stream_gauges(state, &node, &mut out).await;
    }
    delivery_metrics(state, &mut out);
    out.finish()
}

async fn queue_gauges(state: &AppState, node: &Principal, out: &mut Exposition) {
    let queues = match tokio::time::timeout(STORE_TIMEOUT, state.queues.list(node)).await {
        Ok(Ok(queues)) => queues,
        Ok(Err(error)) => return tracing::warn!(%error, "metrics: cannot list the queues"),
        Err(_) => return tracing::warn!("metrics: the queue listing timed out"),
    };
    out.family(
        "hopper_queue_messages",
        "gauge",
        "Messages of each queue by state: ready, leased, delayed or dead.",
    );
    for queue in &queues {
        let counts = &queue.counts;
        for (label, value) in [
            ("ready", counts.ready),
            ("leased", counts.leased),
            ("delayed", counts.delayed),
            ("dead", counts.dead),
        ] {
            out.sample(
                "hopper_queue_messages",
                &[("queue", queue.name.as_str()), ("state", label)],
                value as f64,
            );
        }
    }
    out.family(
        "hopper_tasks",
        "gauge",
        "Tasks of each queue by status, finished ones until the retention drops them.",
    );
    for queue in &queues {
        let tasks = &queue.tasks;
        for (label, value) in [
            ("pending", tasks.pending),
            ("running", tasks.running),
            ("succeeded", tasks.succeeded),
            ("failed", tasks.failed),
            ("expired", tasks.expired),
        ] {
            out.sample(
                "hopper_tasks",
                &[("queue", queue.name.as_str()), ("status", label)],
                value as f64,
            );
        }
    }
}

async fn stream_gauges(state: &AppState, node: &Principal, out: &mut Exposition) {
    let streams = match tokio::time::timeout(STORE_TIMEOUT, state.streams.list(node)).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(error)) => return tracing::warn!(%error, "metrics: cannot list the streams"),
        Err(_) => return tracing::warn!("metrics: the stream listing timed out"),
    };
    out.family(
        "hopper_stream_last_event_id",
        "gauge",
        "The id of each stream's newest event (0 when empty).",
    );
    for stream in &streams {
        out.sample(
            "hopper_stream_last_event_id",
            &[("stream", stream.name.as_str())],
            stream.last_event.unwrap_or(0) as f64,
        );
    }
    out.family(
        "hopper_stream_consumer_lag",
        "gauge",
        "Events of a name after a consumer's committed offset.",
    );
    for stream in streams.iter().take(STREAMS_WITH_CONSUMERS) {
        let info = match state.streams.info(node, &stream.name).await {
            Ok(info) => info,
            // Deleted since the listing: nothing to show.
            Err(_) => continue,
        };
        for consumer in &info.consumers {
            out.sample(
                "hopper_stream_consumer_lag",
                &[
                    ("stream", stream.name.as_str()),
                    ("consumer", &consumer.consumer),
                    ("event", &consumer.event_name),
                ],
                consumer.lag as f64,
            );
        }
    }
}

fn delivery_metrics(state: &AppState, out: &mut Exposition) {
    let queues = state.deliveries.views();
    out.family(
        "hopper_delivery_attempts_total",
        "counter",
        "Delivery attempts by this node since it started, by queue and outcome (delivered or failed).",
    );
    for (queue, view) in &queues {
        for (outcome, value) in [
            ("delivered", view.delivered),
            ("failed", view.failed_attempts),
        ] {
            out.sample(
                "hopper_delivery_attempts_total",
                &[("queue", queue), ("outcome", outcome)],
                value as f64,
            );
        }
    }
    out.family(
        "hopper_delivery_in_flight",
        "gauge",
        "Calls to the upstream waiting for an answer now, by queue.",
    );
    for (queue, view) in &queues {
        out.sample(
            "hopper_delivery_in_flight",
            &[("queue", queue)],
            view.in_flight as f64,
        );
    }
    out.family(
        "hopper_delivery_breaker_open",
        "gauge",
        "Whether the circuit breaker of an upstream host:port is open (1) or not (0).",
    );
    for (upstream, state) in state.deliveries.breaker_states() {
        out.sample(
            "hopper_delivery_breaker_open",
            &[("upstream", &upstream)],
            if state == "open" { 1.0 } else { 0.0 },
        );
    }
}

/// Where the router writes the matched route for [`Track`], which sits outside it.
#[derive(Clone, Default)]
struct MatchedRoute(Arc<OnceLock<MatchedPath>>);

/// Counts and times every request by method, matched route and status ([`Track`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

/// The service of [`TrackLayer`]. Outside the router (and the request timeout), so
/// timeouts and panics are counted too; the route comes from [`note_route`] inside.
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S, B, RB> Service<axum::http::Request<B>> for Track<S>
where
    S: Service<axum::http::Request<B>, Response = axum::http::Response<RB>>,
{
    type Response = axum::http::Response<RB>;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        let matched = MatchedRoute::default();
        let method = method_label(request.method());
        request.extensions_mut().insert(matched.clone());
        Tracked {
            response: self.inner.call(request),
            started: Instant::now(),
            method,
            matched,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response being counted once it is ready.
    pub struct Tracked<F> {
        #[pin]
        response: F,
        started: Instant,
        method: &'static str,
        matched: MatchedRoute,
    }
}

impl<F, RB, E> Future for Tracked<F>
where
    F: Future<Output = Result<axum::http::Response<RB>, E>>,
{
    type Output = Result<axum::http::Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.response.poll(cx));
        if let Ok(response) = &response {
            let route = this
                .matched
                .0
                .get()
                .map_or("unmatched", MatchedPath::as_str);
            count_request(
                this.method,
                route,
                response.status(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(response)
    }
}

/// The series of one route: a count per method and status, a latency per method.
#[derive(Default)]
struct RouteSeries {
    requests: Vec<(&'static str, u16, metrics::Counter)>,
    durations: Vec<(&'static str, metrics::Histogram)>,
}

/// The handles of every route's series. Building a metric's key and finding it in
/// the registry cost several times what the count itself does, on every request;
/// the handles stay valid, so each series is looked up there once.
static SERIES: std::sync::LazyLock<std::sync::RwLock<HashMap<Box<str>, RouteSeries>>> =
    std::sync::LazyLock::new(Default::default);

/// Counts a request of `method` on `route` answered with `status` after `elapsed`.
fn count_request(method: &'static str, route: &str, status: StatusCode, elapsed: Duration) {
    let code = status.as_u16();
    {
        let series = SERIES.read().unwrap_or_else(|e| e.into_inner());
        if let Some(route_series) = series.get(route) {
            let counter = route_series
                .requests
                .iter()
                .find(|(m, c, _)| *m == method && *c == code);
            let histogram = route_series.durations.iter().find(|(m, _)| *m == method);
            if let (Some((_, _, counter)), Some((_, histogram))) = (counter, histogram) {
                counter.increment(1);
                histogram.record(elapsed.as_secs_f64());
                return;
            }
        }
    }
    let mut series = SERIES.write().unwrap_or_else(|e| e.into_inner());
    let route_series = series.entry(route.into()).or_default();
    let labels = |with_status: bool| {
        let mut labels = vec![
            metrics::Label::new("method", method),
            metrics::Label::new("route", route.to_owned()),
        ];
        if with_status {
            labels.push(metrics::Label::new("status", code.to_string()));
        }
        labels
    };
    if !route_series
        .requests
        .iter()
        .any(|(m, c, _)| *m == method && *c == code)
    {
        let counter = metrics::counter!(telemetry::HTTP_REQUESTS, labels(true));
        route_series.requests.push((method, code, counter));
    }
    if !route_series.durations.iter().any(|(m, _)| *m == method) {
        let histogram = metrics::histogram!(telemetry::HTTP_DURATION, labels(false));
        route_series.durations.push((method, histogram));
    }
    for (m, c, counter) in &route_series.requests {
        if *m == method && *c == code {
            counter.increment(1);
        }
    }
    for (m, histogram) in &route_series.durations {
        if *m == method {
            histogram.record(elapsed.as_secs_f64());
        }
    }
}

/// Tells [`Track`] which route matched: runs inside the router, where it is known.
pub fn note_route<B>(request: axum::http::Request<B>) -> axum::http::Request<B> {
    if let (Some(path), Some(matched)) = (
        request.extensions().get::<MatchedPath>(),
        request.extensions().get::<MatchedRoute>(),
    ) {
        let _ = matched.0.set(path.clone());
    }
    request
}

/// The method as a label: a client may send any token as a method, and each would
/// be a new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
