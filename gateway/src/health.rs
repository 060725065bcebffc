//! Operations routes: liveness (`/health`), readiness (`/ready`) and Prometheus metrics (`/metrics`).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tilegate_sessions::metrics::{labels, sample};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiJson;

/// Liveness and readiness: anyone may ask (load balancers, orchestrators).
pub(crate) fn open_routes() -> Router<AppState> {
    Router::new().route("/health", get(get_health)).route("/ready", get(get_ready))
}

/// Metrics: authenticated callers (a user sees their own accounts, an admin everyone's).
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(get_metrics))
}

/// The process answers.
async fn get_health() -> ApiJson<serde_json::Value> {
    ApiJson(json!({"status": "ok"}))
}

/// Datasets are open (they are before the server listens) and the Rust toolchain is prepared
/// (found, its wasm32 target installed if it was missing, the guest prelude built): 200 with what
/// works; 503 saying which of those steps is running until then.
async fn get_ready(State(app): State<AppState>) -> Response {
    let datasets = app.catalog.list().len();
    let compiler = app.kernel.compiler();
    match compiler.status() {
        None => (StatusCode::SERVICE_UNAVAILABLE, ApiJson(json!({"msg": format!("starting: {}", compiler.phase())})))
            .into_response(),
        Some(rust) => {
            let rust = rust.map_or_else(|e| e.to_string(), |()| "ready".to_owned());
            ApiJson(json!({"status": "ready", "datasets": datasets, "rust": rust})).into_response()
        }
    }
}

const HELP: &[(&str, &str)] = &[
    ("tilegate_statement_seconds", "Statement run time by language and outcome (ok, error, cancelled)."),
    ("tilegate_compile_seconds", "Rust snippet compile time by cache outcome (hit, miss, error)."),
];

/// Prometheus text format.
async fn get_metrics(State(app): State<AppState>, caller: Caller) -> Response {
    let mut out = String::new();
    out.push_str("# HELP tilegate_sessions Sessions by state.\n# TYPE tilegate_sessions gauge\n");
    for (state, n) in app.engine.sessions_by_state() {
        sample(&mut out, "tilegate_sessions", &labels(&[("state", &state)]), n);
    }
    let cache = app.kernel.jobs().cache_stats();
    out.push_str(
        "# HELP tilegate_tiles_read_total Tiles decoded from the stores.\n# TYPE tilegate_tiles_read_total counter\n",
    );
    sample(&mut out, "tilegate_tiles_read_total", "", cache.misses);
    out.push_str("# HELP tilegate_tile_cache_hits_total Tiles served from the decoded-tile cache.\n");
    out.push_str("# TYPE tilegate_tile_cache_hits_total counter\n");
    sample(&mut out, "tilegate_tile_cache_hits_total", "", cache.hits);
    out.push_str("# HELP tilegate_tile_cache_bytes Bytes held by the decoded-tile cache.\n# TYPE tilegate_tile_cache_bytes gauge\n");
    sample(&mut out, "tilegate_tile_cache_bytes", "", cache.bytes);
    out.push_str("# HELP tilegate_compiled_modules Compiled wasm modules held in memory.\n# TYPE tilegate_compiled_modules gauge\n");
    sample(&mut out, "tilegate_compiled_modules", "", app.kernel.sandbox().cached_modules());
    out.push_str("# HELP tilegate_session_values_bytes Bytes every session's named values hold in memory (bounded by session_values_memory_mib).\n# TYPE tilegate_session_values_bytes gauge\n");
    sample(&mut out, "tilegate_session_values_bytes", "", app.kernel.values_budget().used());
    out.push_str("# HELP tilegate_datasets Registered datasets.\n# TYPE tilegate_datasets gauge\n");
    sample(&mut out, "tilegate_datasets", "", app.catalog.list().len());
    app.engine.metrics().render(&mut out, HELP);
    // Admins (and everyone without authentication) see every user's compute; a user their own.
    app.engine.accounts().render(&mut out, if caller.is_admin() { None } else { caller.name() });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
