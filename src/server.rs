//! Start-up and shutdown: `app(state)` builds the router (used by `main` and the
//! tests alike); [`start`] opens the store, bootstraps the admin, binds and serves.
//! Shutdown stops accepting, ends long-polls, finishes in-flight requests (up to
//! `limits.drain_timeout`), then lets the store commit every accepted write before
//! the process exits. The accept loop and the connection limits live in
//! `server/listener.rs` and `server/connection.rs`; `request_timeout` in
//! `server/timeout.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::error::error_body;
use crate::api::json_response;
use crate::api::{self, AppState};
use crate::auth::limiter::FailureLimiter;
use crate::auth::tokens::Tokens;
use crate::auth::{clients, Authenticator, Principal, SecretKey};
use crate::config::{Config, Limits};
use crate::domain::{ClientId, QueueService, StreamService, TaskService, Waiters};
use crate::routes::Route;
use crate::store::{self, Store};

mod canned;
mod connection;
mod listener;
mod timeout;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent `X-Request-Id` echoed; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// Whether a client's request id may be echoed and logged as it is: 1 to 128
/// visible ASCII characters, so it cannot bloat or forge log lines and headers.
fn acceptable_request_id(id: &HeaderValue) -> bool {
    let id = id.as_bytes();
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// Drops the request's `X-Request-Id` unless there is one and it is acceptable, so
/// that the next layer generates a fresh one.
fn keep_acceptable_request_id<B>(mut request: Request<B>) -> Request<B> {
    let mut ids = request.headers().get_all(&REQUEST_ID).iter();
    let acceptable = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => acceptable_request_id(id),
        (Some(_), Some(_)) => false,
    };
    if !acceptable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// The whole HTTP application over `state`, with the configured `routes` and
/// `limits.request_timeout`.
pub fn app(state: AppState, routes: &[Route], limits: &Limits) -> Router {
    let middleware = ServiceBuilder::new()
        .map_request(keep_acceptable_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(api::prometheus::TrackLayer)
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| -> Response {
            tracing::error!("a handler panicked");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body(StatusCode::INTERNAL_SERVER_ERROR, Some("unexpected failure")),
            )
        }))
        .layer(timeout::RequestTimeoutLayer::new(limits.request_timeout));
    let (api_router, mut description) = api::routes();
    crate::routes::describe(&mut description, routes);
    api::docs::finish(&mut description);
    let document = match description.to_json() {
        Ok(json) => json,
        Err(error) => {
            tracing::error!(%error, "cannot encode the API description");
            String::from("{}")
        }
    };
    api_router
        .merge(crate::routes::router(routes))
        .route_layer(tower::util::MapRequestLayer::new(
            api::prometheus::note_route,
        ))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::Extension(api::docs::Document(document.into())))
        .with_state(state)
        .layer(middleware)
}

/// A running server.
pub struct Server {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The store it serves from.
    pub store: Arc<dyn Store>,
    /// Its credential checks, for what a test or another edge verifies beside the
    /// API (a SigV4 request, say).
    pub auth: Arc<Authenticator>,
    shutdown: CancellationToken,
    serving: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Begins a graceful shutdown; [`Server::wait`] returns once it is complete.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped and every accepted write is committed.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.serving.await.context("the server task failed");
        self.store.close().await;
        served?
    }
}

/// Opens the store, creates the bootstrap admin if the store has no clients, binds
/// `config.listen` and serves until [`Server::shutdown`].
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let store = store::open(&config.store).await?;
    // After the store: on SQLite, the key file goes beside the database, whose
    // directory the store made.
    let secret_key = SecretKey::for_store(config.auth.secret_key.clone(), &config.store)?;
    bootstrap_admin(store.as_ref(), config.admin_secret.clone()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    // One count for every kind of wait, so `max_waiters` bounds them together.
    let waiters = Waiters::with_max_poll(config.limits.max_waiters, config.limits.max_poll);
    let auth = Arc::new(
        Authenticator::new(
            store.clone(),
            Tokens::new(
                &signing_key(&config, store.as_ref()).await?,
                config.auth.token_ttl,
            ),
            FailureLimiter::new(config.auth.max_failures, config.auth.failure_window),
        )
        .with_secret_key(secret_key),
    );
    // Deletions on other nodes (PostgreSQL) reach this node's credential cache here.
    tokio::spawn(
        auth.clone()
            .follow_revocations(store.wakeups().revocations()),
    );
    let state = AppState::new(api::Shared {
        queues: QueueService::new(
            store.clone(),
            config.queue_defaults.clone(),
            shutdown.clone(),
        )
        .with_waiters(waiters.clone()),
        streams: StreamService::new(store.clone(), shutdown.clone()).with_waiters(waiters.clone()),
        tasks: TaskService::new(
            store.clone(),
            config.queue_defaults.clone(),
            config.tasks.clone(),
            shutdown.clone(),
        )
        .with_waiters(waiters),
        auth: auth.clone(),
        store: store.clone(),
        max_body_bytes: config.max_body_bytes,
        http: reqwest::Client::new(),
        deliveries: Arc::default(),
        metrics: Arc::new(api::prometheus::Metrics::new(config.metrics_require_auth)),
        durable_streams: config.durable_streams.clone(),
    });
    for (queue, patch) in &config.queues {
        state
            .queues
            .configure(&Principal::node(), queue, patch)
            .await
            .with_context(|| format!("cannot apply [queues.{queue}] of the configuration"))?;
    }
    tokio::spawn(crate::delivery::run(
        store.clone(),
        state.queues.clone(),
        state.http.clone(),
        state.deliveries.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(sweep(
        store.clone(),
        config.sweep_interval,
        shutdown.clone(),
    ));
    tokio::spawn(move_dead_letters(store.clone(), shutdown.clone()));
    let stop = shutdown.clone();
    let app = app(state, &config.routes, &config.limits);
    let serving = tokio::spawn(async move {
        listener::serve(listener, app, &config.limits, stop).await;
        Ok(())
    });
    tracing::info!(%addr, store = store.backend(), "hopper is serving");
    Ok(Server {
        addr,
        store,
        auth,
        shutdown,
        serving,
    })
}

/// The key login tokens are signed with: `auth.jwt_secret`, or the store's, made
/// here from 256 random bits on the first start of any node.
async fn signing_key(config: &Config, store: &dyn Store) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let mut candidate = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut candidate);
    store
        .signing_key(&candidate)
        .await
        .context("cannot read or store the token signing key")
}

async fn bootstrap_admin(store: &dyn Store, secret: Option<String>) -> anyhow::Result<()> {
    if !store.list_clients().await?.is_empty() {
        return Ok(());
    }
    let generated = secret.is_none();
    let id = ClientId::parse("admin").expect("admin is a valid client id");
    let created =
        match clients::create(&Principal::node(), store, id, secret, &["admin".to_owned()]).await {
            Ok(created) => created,
            // Another node sharing the store bootstrapped it first.
            Err(crate::domain::DomainError::Conflict(_)) => return Ok(()),
            Err(error) => anyhow::bail!("cannot create the bootstrap admin: {error}"),
        };
    if generated {
        // Printed once, outside the log stream, so it does not linger in log storage.
        eprintln!(
            "hopper: created client \"admin\" with secret {}\nhopper: it is shown only now; set HOPPER_ADMIN_SECRET to choose it",
            created.secret
        );
    }
    tracing::info!("created the bootstrap client admin");
    Ok(())
}

/// How often dead letters move to their queues' dead-letter queues.
const DEAD_LETTER_MOVE_INTERVAL: Duration = Duration::from_secs(1);

/// Moves dead letters to dead-letter queues, every [`DEAD_LETTER_MOVE_INTERVAL`].
async fn move_dead_letters(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(DEAD_LETTER_MOVE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match crate::domain::queues::move_dead_letters(store.as_ref()).await {
            Ok(0) => {}
            Ok(moved) => tracing::debug!(moved, "moved dead letters to their dead-letter queues"),
            Err(error) => tracing::warn!(%error, "moving dead letters failed"),
        }
    }
}

/// Drops messages past retention and expired idempotency keys, every `interval`.
async fn sweep(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let (dropped, error) = crate::domain::storage::sweep(store.as_ref()).await;
        if dropped > 0 {
            tracing::info!(dropped, "dropped what outlived its retention");
        }
        if let Some(error) = error {
            tracing::warn!(%error, "retention sweep failed");
        }
    }
}
