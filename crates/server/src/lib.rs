//! `eshost serve`: the host as a long-running HTTP service (axum on tokio),
//! over the write side (`eshost`) and the read side (`eshost-read`). What it
//! answers is typed in `eshost-api`, which its client shares.
//!
//! - [`routes`]: the handlers, thin over [`Host`].
//! - [`connections`]: accepting connections, their bounds and timeouts.
//! - [`tls`]: HTTPS, from a certificate and key in PEM files.
//! - [`error`]: error kinds and statuses, as RFC 9457 problem details.
//! - [`auth`]: the bearer tokens and their scopes.
//! - [`same_origin`]: without a token, what a web page cannot send.
//! - [`observe`]: request ids, and metrics of requests, build and process.
//! - [`read_side`]: the log's horizon and the projections, as metrics,
//!   warnings and readiness.
//! - [`console`]: the operator console at `/console`, and [`history`],
//!   the last 15 minutes it charts.
//! - [`deploy`]: deploying a component over HTTP, rollback, history.
//! - [`projections`]: the projections' status, and rebuilding one.
//! - [`reload`]: what the host serves: the deployments in the store,
//!   seeded from the modules directory, reloaded as either changes.
//! - [`upgrade_check`]: the upgrade check before a version goes live.
//! - [`openapi`]: the OpenAPI document, generated from the handlers.
//!
//! [`serve`] takes a bound listener and a shutdown future (the caller owns
//! both, so tests bind port 0 and stop the server when they like). When the
//! shutdown future completes, the server stops accepting, answers every
//! request it accepted, then drains the host's queues (appends committed,
//! snapshots written), all within [`ServerConfig::shutdown_timeout`].

pub mod auth;
pub mod connections;
pub mod console;
pub mod deploy;
pub mod error;
pub mod history;
pub mod observe;
pub mod openapi;
pub mod projections;
pub mod reactors;
pub mod read_side;
pub mod reload;
pub mod routes;
pub mod same_origin;
pub mod subjects;
pub mod tls;
pub mod upgrade_check;

use axum::Router;
use axum::routing::{get, post, put};
use connections::{BodyLimits, ConnectionLimits};
use eshost::Host;
use eshost_api::{AggregateInfo, RefusedVersion};
use eshost_read::subscription::SharedSignal;
use eshost_wasm::Runtime;
use reload::Reloader;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Streams a reload replays with a new version before switching it in,
/// unless configured otherwise.
pub const DEFAULT_UPGRADE_SAMPLE: u64 = 100;

/// How long a read may take, unless configured otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Followers of the global log one server serves at once, unless
/// configured otherwise.
pub const DEFAULT_MAX_FOLLOWERS: usize = 64;

/// How the server behaves (the host's own settings live in [`Host`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a command may take before its caller is answered 504
    /// ("outcome unknown, resend with the same Idempotency-Key").
    pub command_timeout: Duration,
    /// How long a read (a `GET` but the event log's stream) may take
    /// before its caller is answered 504.
    pub read_timeout: Duration,
    /// The most a request body may hold, in bytes.
    pub max_body_bytes: usize,
    /// The most a component deployed over HTTP may hold, in bytes.
    pub max_component_bytes: usize,
    /// From the shutdown signal to exit: requests finish and queues drain
    /// within this.
    pub shutdown_timeout: Duration,
    /// The bearer tokens accepted, with their scopes (see [`auth`]). None:
    /// no auth, and the same-origin checks instead (see [`same_origin`]).
    pub tokens: auth::Tokens,
    /// With tokens: `/healthz`, `/readyz` and `/metrics` need the read
    /// scope too, where by default a probe needs no token.
    pub protect_probes: bool,
    /// Reload when a file in the modules directory changes (with a
    /// reloader, see [`App::with_reloader`]; it follows the store's live
    /// set all the same).
    pub watch: bool,
    /// Followers of `GET /v1/events` served at once; more are answered 429.
    pub max_followers: usize,
    /// Before a reload switches in a new or changed component, replay
    /// these streams with it (see [`eshost::upgrade`]); one that fails is
    /// not switched in. `None`: no check.
    pub upgrade_check: Option<eshost::upgrade::Selection>,
    /// How many connections, and how long a request may take to arrive
    /// (see [`connections`]).
    pub connections: ConnectionLimits,
    /// Serve HTTPS with this certificate; `None`: plain HTTP.
    pub tls: Option<tls::Tls>,
    /// How often to look at the read side: who holds the global log's
    /// horizon, where each projection stands (see [`read_side`]).
    pub read_side_check: Duration,
    /// `/readyz` answers 503 while the read side has a problem (a
    /// projection stopped, the horizon held), not only 200 with it listed.
    pub ready_requires_read_side: bool,
    /// Spans are exported (OpenTelemetry, set up by the binary): requests
    /// carry the HTTP attributes and continue a caller's `traceparent`.
    pub traces: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(30),
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_body_bytes: 64 << 10,
            max_component_bytes: deploy::DEFAULT_MAX_COMPONENT_BYTES,
            shutdown_timeout: Duration::from_secs(30),
            tokens: auth::Tokens::default(),
            protect_probes: false,
            watch: true,
            max_followers: DEFAULT_MAX_FOLLOWERS,
            upgrade_check: Some(eshost::upgrade::Selection::Sample(DEFAULT_UPGRADE_SAMPLE)),
            connections: ConnectionLimits::default(),
            tls: None,
            read_side_check: Duration::from_secs(5),
            ready_requires_read_side: false,
            traces: false,
        }
    }
}

/// What every handler sees. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub host: Host,
    pub config: Arc<ServerConfig>,
    /// Reloads the modules from their directory, if the host has one.
    pub reloader: Option<Arc<Reloader>>,
    /// Files the last reload could not load, one line each.
    load_errors: Arc<Mutex<Vec<String>>>,
    /// The versions the last reload refused to switch in, by aggregate.
    refused: Arc<Mutex<BTreeMap<String, RefusedVersion>>>,
    /// The followers of `GET /v1/events`: their places and their shared
    /// wake-up.
    pub(crate) followers: Arc<Followers>,
    /// Cancelled when shutdown begins: followers' streams end then.
    pub(crate) stopping: CancellationToken,
    /// The address served, once [`serve`] has its listener.
    pub(crate) listening: Option<std::net::SocketAddr>,
    /// The server's own metrics (beside the host's): the HTTP layer's
    /// and the read side's.
    pub(crate) metrics: Arc<prometheus_client::registry::Registry>,
    /// Requests by route and status, the build, the process.
    pub(crate) http_metrics: Arc<observe::HttpMetrics>,
    /// The log's horizon and the projections, as last checked.
    pub(crate) read_side: Arc<read_side::ReadSide>,
    /// The last 15 minutes, for the console.
    pub(crate) history: Arc<history::History>,
    /// The projections this server runs, if it runs them.
    pub(crate) projections: Option<Arc<projections::ProjectionsHere>>,
    /// The aggregate types each reactor this server runs subscribes to.
    reactor_reads: Arc<BTreeMap<String, Vec<String>>>,
}

/// What the followers of the global log share.
pub(crate) struct Followers {
    pub(crate) places: Arc<tokio::sync::Semaphore>,
    /// Started by the first follower.
    signal: tokio::sync::OnceCell<SharedSignal>,
}

impl Followers {
    /// The shared wake-up, started on first use.
    pub(crate) async fn signal(&self, store: &dyn eshost_store::EventStore) -> SharedSignal {
        self.signal
            .get_or_init(|| SharedSignal::start(store))
            .await
            .clone()
    }
}

impl App {
    pub fn new(host: Host, config: ServerConfig) -> Self {
        let mut metrics = prometheus_client::registry::Registry::default();
        let http_metrics = Arc::new(observe::HttpMetrics::new(&mut metrics));
        let read_side = Arc::new(read_side::ReadSide::new(&mut metrics));
        let followers = Arc::new(Followers {
            places: Arc::new(tokio::sync::Semaphore::new(config.max_followers)),
            signal: tokio::sync::OnceCell::new(),
        });
        Self {
            host,
            config: Arc::new(config),
            reloader: None,
            load_errors: Arc::default(),
            refused: Arc::default(),
            followers,
            stopping: CancellationToken::new(),
            listening: None,
            metrics: Arc::new(metrics),
            http_metrics,
            read_side,
            history: Arc::default(),
            projections: None,
            reactor_reads: Arc::default(),
        }
    }

    /// Lets the server serve what is deployed in its store, seeded from
    /// the modules directory `dir` if it has one (see [`reload`]): on
    /// demand, when the store's live set changes, and when a file in `dir`
    /// changes if [`ServerConfig::watch`] is set.
    pub fn with_reloader(mut self, runtime: Runtime, dir: impl Into<Option<PathBuf>>) -> Self {
        self.reloader = Some(Arc::new(Reloader::new(runtime, dir.into())));
        self
    }

    /// Reloads now (see [`reload`]): serves what the store has deployed,
    /// seeded from the modules directory. Without a reloader, nothing
    /// changes.
    pub async fn reload(&self) -> eshost_core::ReloadReport {
        match &self.reloader {
            Some(reloader) => reloader.reload(self).await,
            None => eshost_core::ReloadReport::default(),
        }
    }

    /// Tells the server which projections run in its process (as their
    /// supervisor wants them): it counts their lag and can rebuild them
    /// (see [`projections`]).
    pub fn with_projections(mut self, running: eshost_read::supervisor::Running) -> Self {
        self.projections = Some(Arc::new(projections::ProjectionsHere::new(running)));
        self
    }

    /// Runs these reactors (`eshost serve --run-reactors`): the aggregate
    /// types each subscribes to, by name, for their lag.
    pub fn with_reactor_reads(mut self, reads: BTreeMap<String, Vec<String>>) -> Self {
        self.reactor_reads = Arc::new(reads);
        self
    }

    pub(crate) fn reactor_reads(&self) -> Arc<BTreeMap<String, Vec<String>>> {
        self.reactor_reads.clone()
    }

    /// The aggregate types each projection running here reads, by name.
    pub(crate) fn projection_reads(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.projections
            .as_ref()
            .map(|here| here.reads())
            .unwrap_or_default()
    }

    pub fn load_errors(&self) -> Vec<String> {
        self.load_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_load_errors(&self, errors: Vec<String>) {
        *self.load_errors.lock().unwrap_or_else(|p| p.into_inner()) = errors;
    }

    /// The loaded aggregates, each with the version the last reload
    /// refused for it, if any.
    pub fn aggregates(&self) -> Vec<AggregateInfo> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let mut loaded = self.host.modules().describe();
        for info in &mut loaded {
            info.refused = refused.get(&info.name).cloned();
        }
        loaded
    }

    pub(crate) fn set_refused(&self, refused: BTreeMap<String, RefusedVersion>) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = refused;
    }
}

/// The API's routes.
pub fn router(app: App) -> Router {
    let body_limits = BodyLimits {
        max_bytes: app.config.max_body_bytes,
        max_component_bytes: app.config.max_component_bytes,
        timeout: app.config.connections.body_timeout,
    };
    // Reads answer within the read deadline; commands have their own, and
    // the log's stream lasts as long as its follower.
    let reads = Router::new()
        .route(
            "/v1/aggregates",
            get(routes::aggregates).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/aggregates/{aggregate}/{id}",
            get(routes::state).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/aggregates/{aggregate}/{id}/events",
            get(routes::events).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/views/{projection}/{key}",
            get(routes::view_document).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/modules/{name}/history",
            get(deploy::history).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/projections",
            get(projections::list).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/projections/{name}/history",
            get(projections::history).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/reactors",
            get(reactors::list).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/reactors/{name}/parked",
            get(reactors::parked).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/reactors/{name}/history",
            get(reactors::history).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/stats",
            get(console::stats).fallback(routes::method_not_allowed),
        )
        .route(
            "/console",
            get(console::page).fallback(routes::method_not_allowed),
        )
        .route(
            "/console/{file}",
            get(console::asset).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/openapi.json",
            get(openapi::openapi_json).fallback(routes::method_not_allowed),
        )
        .route(
            "/metrics",
            get(routes::metrics).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/problems/{kind}",
            get(routes::problem).fallback(routes::method_not_allowed),
        )
        .route(
            "/healthz",
            get(routes::healthz).fallback(routes::method_not_allowed),
        )
        .route(
            "/readyz",
            get(routes::readyz).fallback(routes::method_not_allowed),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            app.config.read_timeout,
            read_deadline,
        ));
    let router = Router::new()
        .route(
            "/v1/aggregates/{aggregate}/{id}/commands/{command}",
            post(routes::command).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/events",
            get(routes::follow_events).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/admin/reload",
            post(routes::reload).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/admin/forget",
            post(subjects::forget).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/modules/{name}",
            put(deploy::deploy).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/projections/{name}/rebuild",
            post(projections::rebuild).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/modules/{name}/rollback",
            post(deploy::rollback).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/projections/{name}",
            put(projections::deploy).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/projections/{name}/rollback",
            post(projections::rollback).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/reactors/{name}",
            put(reactors::deploy).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/reactors/{name}/rollback",
            post(reactors::rollback).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/reactors/{name}/retry",
            post(reactors::retry).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/reactors/{name}/policy",
            put(reactors::policy).fallback(routes::method_not_allowed),
        )
        .merge(reads)
        .fallback(routes::fallback)
        .layer(axum::middleware::from_fn_with_state(
            body_limits,
            connections::read_body,
        ));
    // A token to check, or, without one, the origin.
    let router = if !app.config.tokens.is_empty() {
        router.layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ))
    } else {
        router.layer(axum::middleware::from_fn_with_state(
            app.clone(),
            same_origin::require_same_origin,
        ))
    };
    // Outermost, so refusals are counted and logged too: every answer has
    // an id, and every log line of the request names it.
    let router = router.layer(axum::middleware::from_fn_with_state(
        observe::Observe {
            metrics: app.http_metrics.clone(),
            history: app.history.clone(),
            traces: app.config.traces,
        },
        observe::observe,
    ));
    router.with_state(app)
}

/// Answers a read 504 `timeout` once it has taken `deadline`: a store
/// that does not answer holds no caller longer than that. Only the read
/// routes have this layer (see [`router`]); commands have their own
/// deadline ([`ServerConfig::command_timeout`]).
async fn read_deadline(
    axum::extract::State(deadline): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => error::ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer within {} ms (--read-timeout-ms); a read changes nothing: ask again",
                deadline.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Why the server stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("shutting down: {0}")]
    Drain(#[from] eshost::dispatch::ShutdownTimedOut),
}

/// Serves `host` on `listener` until `shutdown` completes, then drains (see
/// the module doc).
pub async fn serve(
    listener: TcpListener,
    mut app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    app.listening = listener.local_addr().ok();
    let shutdown_timeout = app.config.shutdown_timeout;
    let host = app.host.clone();
    let stopping = app.stopping.clone();
    // Watching the directory ends when the watcher is dropped, at the end
    // of this function; the store's, when shutdown begins.
    let _watcher = match &app.reloader {
        Some(reloader) => reloader.watch(app.clone(), app.config.watch),
        None => None,
    };
    tokio::spawn(app.history.clone().run(host.clone(), app.stopping.clone()));
    // Only a store with a master key holds anything a forget erases.
    if host.store().keeps_personal_data() {
        tokio::spawn(subjects::follow_erasures(
            host.clone(),
            app.stopping.clone(),
        ));
    }
    tokio::spawn(read_side::watch(
        app.clone(),
        app.config.read_side_check,
        app.stopping.clone(),
    ));
    let mut limits = app.config.connections;
    let open_files = connections::open_file_limit();
    let bound = connections::effective_max_connections(limits.max_connections, open_files);
    if bound < limits.max_connections {
        warn!(
            configured = limits.max_connections,
            serving = bound,
            open_file_limit = open_files,
            "the open-file limit holds fewer connections than configured; raise it (LimitNOFILE) to serve more"
        );
        limits.max_connections = bound;
    }
    // When the signal came: the whole drain counts from then.
    let (signalled_tx, mut signalled) = tokio::sync::watch::channel(None);
    let stop_accepting = CancellationToken::new();
    let stop = stop_accepting.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: no new connections; finishing the requests being answered");
        let _ = signalled_tx.send(Some(Instant::now()));
        stop.cancel();
        // Followers' streams never end on their own.
        stopping.cancel();
    });
    let tls = app.config.tls.clone();
    let server = connections::serve(listener, router(app), limits, tls, stop_accepting);
    let overdue = async {
        let _ = signalled.wait_for(Option::is_some).await;
        tokio::time::sleep(shutdown_timeout).await;
    };
    tokio::select! {
        () = server => {}
        () = overdue => warn!(?shutdown_timeout, "requests still open at the shutdown deadline; closing them"),
    }
    let since_signal = signalled.borrow().map_or(Duration::ZERO, |at| at.elapsed());
    let left = shutdown_timeout.saturating_sub(since_signal);
    host.shutdown(left.max(Duration::from_millis(100))).await?;
    info!("shut down: every accepted command answered, queues drained");
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
