//! Start-up and shutdown: `app(state)` builds the router (used by `main` and the
//! tests alike); [`start`] opens the store, bootstraps the admin, binds and serves.
//! Shutdown stops accepting, ends long-polls, finishes in-flight requests, then
//! lets the store commit every accepted write before the process exits.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
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
use crate::auth::{clients, Authenticator};
use crate::config::Config;
use crate::domain::{ClientId, QueueService, StreamService, TaskService};
use crate::routes::Route;
use crate::store::{self, Store};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application over `state`, with the configured `routes`.
pub fn app(state: AppState, routes: &[Route]) -> Router {
    let middleware = ServiceBuilder::new()
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
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| -> Response {
            tracing::error!("a handler panicked");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body(StatusCode::INTERNAL_SERVER_ERROR, Some("unexpected failure")),
            )
        }));
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
    bootstrap_admin(store.as_ref(), config.admin_secret.clone()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let auth = Arc::new(Authenticator::new(store.clone()));
    // Deletions on other nodes (PostgreSQL) reach this node's credential cache here.
    tokio::spawn(
        auth.clone()
            .follow_revocations(store.wakeups().revocations()),
    );
    let state = AppState {
        queues: QueueService::new(
            store.clone(),
            config.queue_defaults.clone(),
            shutdown.clone(),
        ),
        streams: StreamService::new(store.clone(), shutdown.clone()),
        tasks: TaskService::new(
            store.clone(),
            config.queue_defaults.clone(),
            config.tasks.clone(),
            shutdown.clone(),
        ),
        auth,
        store: store.clone(),
        max_body_bytes: config.max_body_bytes,
        http: reqwest::Client::new(),
        deliveries: Arc::default(),
    };
    for (queue, patch) in &config.queues {
        state
            .queues
            .configure(queue, patch)
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
    let stop = shutdown.clone();
    // Answers leave at once: with Nagle's algorithm a response written in parts waits
    // for the client's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let serving = tokio::spawn(async move {
        axum::serve(listener, app(state, &config.routes))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .into_future()
            .await
            .context("the HTTP server failed")
    });
    tracing::info!(%addr, store = store.backend(), "hopper is serving");
    Ok(Server {
        addr,
        store,
        shutdown,
        serving,
    })
}

async fn bootstrap_admin(store: &dyn Store, secret: Option<String>) -> anyhow::Result<()> {
    if !store.list_clients().await?.is_empty() {
        return Ok(());
    }
    let generated = secret.is_none();
    let id = ClientId::parse("admin").expect("admin is a valid client id");
    let created = match clients::create(store, id, secret, &["admin".to_owned()]).await {
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

/// Drops messages past retention and expired idempotency keys, every `interval`.
async fn sweep(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.sweep().await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "dropped what outlived its retention"),
            Err(error) => tracing::warn!(%error, "retention sweep failed"),
        }
    }
}
