//! The Livy REST routes. Each handler parses, calls one engine method, and picks the status.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tilegate_api::{
    CreateSession, CreateStatement, LIVY_VERSION, Language, Msg, RawOutput, Session, SessionList, SessionLog,
    SessionStateInfo, Statement, StatementList, Version,
};
use tilegate_compute::sql::output::{self, Format};
use tilegate_sessions::Page;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};

/// The routes anyone may call, without authentication: `/version` (and `health::open_routes`).
pub(crate) fn open_routes() -> Router<AppState> {
    Router::new().route("/version", get(get_version))
}

/// The routes callers must be authenticated for, without middleware.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(get_openapi))
        .route("/usage", get(get_usage))
        .route("/sessions", get(list_sessions).post(create_session))
        .route("/sessions/{session}", get(get_session).delete(delete_session))
        .route("/sessions/{session}/state", get(get_session_state))
        .route("/sessions/{session}/log", get(get_session_log))
        .route("/sessions/{session}/statements", get(list_statements).post(create_statement))
        .route("/sessions/{session}/statements/{statement}", get(get_statement))
        .route("/sessions/{session}/statements/{statement}/cancel", post(cancel_statement))
        .route("/sessions/{session}/statements/{statement}/result", get(get_statement_result))
        .merge(crate::datasets::routes())
        .merge(crate::health::routes())
        .merge(crate::batches::routes())
        .fallback(|| async { ApiError::NotFound("No such route.".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

async fn get_version() -> ApiJson<Version> {
    ApiJson(Version {
        version: LIVY_VERSION.into(),
        user: String::new(),
        revision: String::new(),
        branch: String::new(),
        date: String::new(),
        url: "https://example.invalid/tilegate".into(),
        tilegate_version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The OpenAPI document of the whole API (`gateway/openapi.json`; schemathesis checks the gateway
/// against it in CI).
async fn get_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../openapi.json")).into_response()
}

#[derive(Debug, Deserialize)]
struct Paging {
    from: Option<u64>,
    size: Option<u64>,
}

async fn list_sessions(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<Paging>,
) -> ApiJson<SessionList> {
    ApiJson(app.engine.list_sessions_where(q.from.unwrap_or(0), q.size.unwrap_or(100), |a| caller.can_see(a)))
}

async fn create_session(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSession>,
) -> Result<(StatusCode, HeaderMap, ApiJson<Session>), ApiError> {
    caller.check_proxy_user(req.proxy_user.as_deref())?;
    check_quota(&app, &caller, Quota::Session)?;
    let session = app.engine.create_session_for(req, caller.name().map(str::to_owned))?;
    Ok((StatusCode::CREATED, location(&format!("/sessions/{}", session.id)), ApiJson(session)))
}

async fn get_session(State(app): State<AppState>, ApiPath(key): ApiPath<String>) -> Result<ApiJson<Session>, ApiError> {
    Ok(ApiJson(app.engine.session(&key)?))
}

async fn delete_session(State(app): State<AppState>, ApiPath(key): ApiPath<String>) -> Result<ApiJson<Msg>, ApiError> {
    app.engine.delete_session(&key)?;
    Ok(ApiJson(Msg::new("deleted")))
}

async fn get_session_state(
    State(app): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> Result<ApiJson<SessionStateInfo>, ApiError> {
    Ok(ApiJson(app.engine.session_state(&key)?))
}

#[derive(Debug, Deserialize)]
struct LogPaging {
    from: Option<u64>,
    size: Option<i64>,
}

async fn get_session_log(
    State(app): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogPaging>,
) -> Result<ApiJson<SessionLog>, ApiError> {
    Ok(ApiJson(app.engine.session_log(&key, q.from, q.size)?))
}

#[derive(Debug, Deserialize)]
struct StatementPaging {
    from: Option<u64>,
    size: Option<u64>,
    order: Option<String>,
}

async fn list_statements(
    State(app): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<StatementPaging>,
) -> Result<ApiJson<StatementList<RawOutput>>, ApiError> {
    let descending = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("Invalid order '{other}': use asc or desc."))),
    };
    let page = Page { from: q.from.unwrap_or(0), size: q.size, descending };
    // What is left to the state database is read off the reactor, only when there is some.
    Ok(ApiJson(app.engine.statements_read(&key, page).await?))
}

async fn create_statement(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(req): ApiJson<CreateStatement>,
) -> Result<(StatusCode, HeaderMap, ApiJson<Statement<RawOutput>>), ApiError> {
    let session = app.engine.session_state(&key)?.id;
    check_code_size(&app, &req.code)?;
    check_quota(&app, &caller, Quota::Statement(app.engine.statement_language(&key, &req)?))?;
    let statement = app.engine.submit(&session.to_string(), req)?;
    let url = format!("/sessions/{session}/statements/{}", statement.id);
    Ok((StatusCode::CREATED, location(&url), ApiJson(statement)))
}

/// The longest long poll `?wait=` may ask for, in seconds.
const MAX_WAIT_SECS: f64 = 60.0;

#[derive(Debug, Deserialize)]
struct StatementWait {
    /// Seconds to wait for the statement to become final before answering (a long poll).
    wait: Option<f64>,
}

async fn get_statement(
    State(app): State<AppState>,
    ApiPath((key, statement)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<StatementWait>,
) -> Result<ApiJson<Statement<RawOutput>>, ApiError> {
    let wait = match q.wait {
        // At once; what is left to the state database is read off the reactor, only when there is.
        None => Duration::ZERO,
        Some(w) if (0.0..=MAX_WAIT_SECS).contains(&w) => Duration::from_secs_f64(w),
        Some(w) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid wait '{w}': give the seconds to wait for the statement to finish, from 0 to {MAX_WAIT_SECS}."
            )));
        }
    };
    Ok(ApiJson(app.engine.statement_when_final(&key, &statement, wait).await?))
}

async fn cancel_statement(
    State(app): State<AppState>,
    ApiPath((key, statement)): ApiPath<(String, String)>,
) -> Result<ApiJson<Msg>, ApiError> {
    app.engine.cancel(&key, &statement)?;
    Ok(ApiJson(Msg::new("canceled")))
}

#[derive(Debug, Deserialize)]
struct ResultFormat {
    format: Option<String>,
}

/// Every row of an `sql` statement's result (its output shows at most `sql_max_rows`), as JSON
/// lines (default), CSV, an Arrow IPC stream or Parquet. Errors are JSON like everywhere else.
async fn get_statement_result(
    State(app): State<AppState>,
    ApiPath((key, statement)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ResultFormat>,
) -> Result<Response, ApiError> {
    let name = q.format.as_deref().unwrap_or("jsonl");
    let format = Format::parse(name)
        .ok_or_else(|| ApiError::BadRequest(format!("Invalid format '{name}': use jsonl, csv, arrow or parquet.")))?;
    let session = app.engine.session_state(&key)?.id;
    let statement = app.engine.statement_id(&key, &statement)?;
    let kept = app.engine.kernel_session(session).and_then(|k| {
        let any: std::sync::Arc<dyn std::any::Any + Send + Sync> = k;
        any.downcast::<tilegate_kernel::SandboxSession>().ok()?.full_result(statement)
    });
    let result = kept.ok_or_else(|| {
        ApiError::NotFound(format!(
            "Statement {statement} of session {session} has no result to download: only the last {} `sql` \
             statements that succeeded keep their full result.",
            tilegate_kernel::FULL_RESULTS
        ))
    })?;
    let bytes = tokio::task::spawn_blocking(move || output::write(&result, format))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(ApiError::BadRequest)?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}

/// A `Location` header for a created resource.
pub(crate) fn location(url: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // Ids and names reach here already validated: no control characters, so this cannot fail.
    if let Ok(value) = HeaderValue::from_str(url) {
        headers.insert(header::LOCATION, value);
    }
    headers
}

/// Livy's CSRF protection: a request whose method is not safe (anything but GET, HEAD, OPTIONS,
/// TRACE: every route that changes state) must carry `X-Requested-By`, as Livy's `CsrfFilter`
/// requires. Runs as a route layer, after routing: an unknown route stays 404, a method a route
/// lacks 405.
pub(crate) async fn require_csrf_header(req: Request, next: Next) -> Response {
    if !req.method().is_safe() && !req.headers().contains_key("x-requested-by") {
        return ApiError::MissingCsrfHeader.into_response();
    }
    next.run(req).await
}

/// 413 for code over `max_code_bytes` (a statement's code is kept with it, in memory and in the
/// state database, for the session's life).
pub(crate) fn check_code_size(app: &AppState, code: &str) -> Result<(), ApiError> {
    let limit = app.config.max_code_bytes;
    if code.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "The code is {} bytes, more than the gateway's `max_code_bytes` ({limit}): send a smaller module or \
             snippet.",
            code.len()
        )));
    }
    Ok(())
}

/// `GET /usage`: the caller's compute today.
#[derive(Debug, Serialize)]
struct UsageToday {
    user: String,
    day: String,
    #[serde(flatten)]
    spent: tilegate_sessions::accounts::Spent,
    cpu_seconds_per_day: Option<u64>,
}

async fn get_usage(State(app): State<AppState>, caller: Caller) -> ApiJson<UsageToday> {
    let user = caller.name().unwrap_or(tilegate_sessions::accounts::ANONYMOUS).to_owned();
    let quota =
        caller.user.as_ref().map_or(0, |u| u.cpu_seconds_per_day.unwrap_or(app.config.cpu_seconds_per_day_per_user));
    let day = tilegate_sessions::accounts::today();
    let date = tilegate_compute::dataset::cf::iso(day * 86_400).chars().take(10).collect();
    ApiJson(UsageToday {
        spent: app.engine.accounts().today(&user),
        user,
        day: date,
        cpu_seconds_per_day: (quota > 0).then_some(quota),
    })
}

/// What a request is about to start, for [`check_quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    /// A session: counts against `max_sessions_per_user`.
    Session,
    /// A statement in a language: counts against `max_active_statements_per_user`, and
    /// `max_waiting_compiles_per_user` for `rust`; needs CPU time left today.
    Statement(Language),
    /// A batch: like a session and a statement at once while it runs.
    Batch(Language),
}

/// 429 when `caller` is at a per-user limit. A running batch counts as one of its owner's
/// sessions and one of their active statements; running batches together count against
/// `max_sessions`, like sessions.
pub(crate) fn check_quota(app: &AppState, caller: &Caller, quota: Quota) -> Result<(), ApiError> {
    let (running, batches) = app.engine.running_batches(caller.name());
    if matches!(quota, Quota::Batch(_)) && running >= app.config.max_sessions {
        return Err(ApiError::OverLimit(format!(
            "{running} batches are running, the most allowed (`max_sessions`): try again when one has finished."
        )));
    }
    let Some(user) = &caller.user else { return Ok(()) };
    let usage = app.engine.holdings(&user.name);
    if !matches!(quota, Quota::Statement(_)) {
        let limit = user.max_sessions.unwrap_or(app.config.max_sessions_per_user);
        if limit > 0 && usage.sessions + batches >= limit {
            return Err(ApiError::OverLimit(format!(
                "User '{}' has {limit} live sessions and running batches, the most allowed \
                 (`max_sessions_per_user`): delete a session or wait for a batch first.",
                user.name
            )));
        }
    }
    let (Quota::Statement(language) | Quota::Batch(language)) = quota else { return Ok(()) };
    let limit = user.max_active_statements.unwrap_or(app.config.max_active_statements_per_user);
    if limit > 0 && usage.active_statements + batches >= limit {
        return Err(ApiError::OverLimit(format!(
            "User '{}' has {limit} statements waiting or running (batches included), the most allowed \
             (`max_active_statements_per_user`): wait for one to finish.",
            user.name
        )));
    }
    let limit = app.config.max_waiting_compiles_per_user;
    if language == Language::Rust && limit > 0 && usage.compiles_waiting >= limit {
        return Err(ApiError::OverLimit(format!(
            "User '{}' has {limit} `rust` statements waiting for their compile, the most allowed \
             (`max_waiting_compiles_per_user`): wait for one to compile.",
            user.name
        )));
    }
    let limit = user.cpu_seconds_per_day.unwrap_or(app.config.cpu_seconds_per_day_per_user);
    let spent = app.engine.accounts().today(&user.name).cpu_seconds;
    if limit > 0 && spent >= limit as f64 {
        return Err(ApiError::OverLimit(format!(
            "User '{}' has used {spent:.1} CPU seconds today (UTC), the most allowed (`cpu_seconds_per_day_per_user`: \
             {limit}): the quota starts again at midnight UTC.",
            user.name
        )));
    }
    Ok(())
}
