//! The tilegate gateway: Apache Livy's REST API over HTTP. Sessions are `tilegate_sessions`,
//! their code runs on `tilegate_kernel`'s sandbox-backed kernel, datasets are `tilegate_compute`'s;
//! this crate is HTTP only.
//!
//! # Layout
//! - [`config`]: settings from defaults, a TOML file, flags and environment.
//! - `routes`: the Livy session and statement routes, thin calls into the session table.
//! - `batches`: the routes of Livy batches (one-shot sessions of the engine).
//! - `datasets`: the `/datasets` routes (catalog, tile index).
//! - `auth`: who is calling and what they may see, one middleware before every route.
//! - `error`: [`ApiError`] (status + JSON `{"msg"}`) and the extractors that answer bad input with it.
//! - `health`: `/health`, `/ready`, `/metrics`.
//! - [`router`] builds the app, [`serve`] runs it until a shutdown signal.

mod auth;
mod batches;
pub mod config;
mod error;
mod health;
mod routes;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use tilegate_compiler::Compiler;
use tilegate_compute::dataset::Catalog;
use tilegate_compute::job::Jobs;
use tilegate_sandbox::{Limits, Sandbox};
use tilegate_sessions::metrics::Metrics;
use tilegate_sessions::{Engine, Store};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use auth::{hash_password, hash_token};
pub use config::{Cli, Command, Config, ConfigError, UserConfig};
mod datasets;
pub use error::{ApiError, ApiJson};
use tilegate_kernel::{Budget, SandboxKernel};

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Sessions and statements.
    pub engine: Engine,
    /// The shared datasets.
    pub catalog: Arc<Catalog>,
    /// The settings the gateway runs with.
    pub config: Arc<Config>,
    /// The kernel, for what it keeps beyond Livy's output (full `sql` results).
    pub(crate) kernel: SandboxKernel,
    /// The configured users (none: authentication off).
    pub(crate) users: Arc<auth::Users>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The wasm engine could not be set up.
    #[error("sandbox: {0}")]
    Sandbox(#[from] tilegate_sandbox::Error),
    /// The data directory or its datasets could not be opened.
    #[error("datasets: {0}")]
    Datasets(#[from] tilegate_compute::dataset::Error),
    /// The worker threads could not be started.
    #[error("workers: {0}")]
    Workers(String),
    /// The `[[users]]` of the configuration are unusable.
    #[error("users: {0}")]
    Users(String),
    /// The state database could not be opened or read.
    #[error("{0}")]
    State(#[from] tilegate_sessions::StoreError),
}

impl AppState {
    /// Builds the sandbox, the dataset catalog (writing the demo dataset and building tile indexes
    /// as needed: this blocks) and the engine. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the wasm engine cannot be set up or the data directory cannot be used.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let catalog = Arc::new(Catalog::open(&config.data_dir, config.demo_dataset, config.worker_count())?);
        let sandbox = Sandbox::new(config.sandbox())?;
        let limits = Limits {
            deadline: config.statement_timeout(),
            memory_bytes: config.memory_limit_mib << 20,
            output_bytes: config.output_limit_bytes,
        };
        let jobs = Jobs::new(catalog.clone(), config.worker_count(), config.tile_cache_mib << 20)
            .map_err(|e| StartError::Workers(e.to_string()))?
            .with_sql_index_aggregates(config.sql_index_aggregates)
            .with_job_memory_limit(config.job_memory_limit_mib << 20);
        if config.compile_isolation == config::CompileIsolation::None {
            tracing::warn!(
                "compile_isolation = \"none\": rustc runs without OS isolation; a snippet may read what the \
                 gateway's user can read. Use it only where every user is trusted."
            );
        }
        let compiler = Arc::new(Compiler::new(config.compiler()));
        // Build the guest prelude now, so the first `rust` statement compiles at full speed.
        let preparing = compiler.clone();
        std::thread::spawn(move || {
            if let Err(e) = preparing.prepare() {
                tracing::warn!("{e}");
            }
        });
        let metrics = Arc::new(Metrics::default());
        let store = Arc::new(Store::open(&config.state_db())?);
        let kernel = SandboxKernel::new(
            Arc::new(sandbox),
            limits,
            Arc::new(jobs),
            compiler,
            (config.sql_max_rows, config.sql_memory_limit_mib << 20),
            (metrics.clone(), store.clone(), Budget::new(config.session_values_memory_mib << 20)),
        );
        let engine = Engine::open(config.engine(), Arc::new(kernel.clone()), metrics, store)?;
        let users = Arc::new(auth::Users::new(&config.users).map_err(StartError::Users)?);
        Ok(Self { engine, catalog, config: Arc::new(config), kernel, users })
    }
}

/// The HTTP application with its middleware.
pub fn router(state: AppState) -> Router {
    let mut routes = routes::routes();
    if state.config.csrf_protection {
        // Only matched routes: an unknown route is 404 and a wrong method 405, header or not.
        routes = routes.route_layer(axum::middleware::from_fn(routes::require_csrf_header));
    }
    // Authentication wraps the routes (a fallback service under it) rather than being their layer:
    // it may rewrite `/sessions/{name}` to the caller's session id, which must happen before routing.
    let authenticated = Router::new()
        .fallback_service(routes.with_state(state.clone()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    // The open routes are matched first and never reach authentication; everything else does.
    Router::new()
        .merge(routes::open_routes())
        .merge(health::open_routes())
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback_service(authenticated)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::Internal.into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span every log line of a request carries: its `x-request-id` (the caller's, or a new UUID,
/// returned in the response either way), method and path, and the session id once known.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        session = tracing::field::Empty,
    )
}

/// Serves until `shutdown` completes, then cancels running statements and finishes in-flight requests.
///
/// Each connection is HTTP/1.1 with a deadline for its request head ([`HEADER_READ_TIMEOUT`]: a
/// client that sends half a request, or keeps an idle connection, is dropped after it), and at
/// most `max_connections` are open at once (more wait in the listen backlog), so idle or slow
/// sockets cannot take the file descriptors `/health` and everyone else need.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    raise_open_files_limit();
    let engine = state.engine.clone();
    let connections = Arc::new(tokio::sync::Semaphore::new(state.config.max_connections));
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait a little.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            app.clone().map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection: {e}");
            }
            drop(permit);
        });
    }
    tracing::info!("shutting down: cancelling running statements");
    engine.shut_down();
    graceful.shutdown().await;
    Ok(())
}

/// How long a client may take to send a request head, and how long an idle kept-alive
/// connection stays open.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Raises the soft limit of open files to the hard one, so `max_connections` sockets, the
/// datasets and the state database fit.
#[allow(unsafe_code)]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
