//! Livy batches (`/batches`): a snippet run once, not in a session, as Apache Airflow's Livy
//! provider drives it: submit, poll `state` until `success`, `dead` or `killed`, read the `log`.
//! The code is a file of the jobs directory (`jobs_dir`, by name only) or inline. A batch is a
//! one-shot session (`tilegate_sessions`' `batch`); these are its routes.

use std::path::Path;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::Deserialize;
use tilegate_api::{Batch, BatchList, CreateBatch, Language, Msg, SessionLog, SessionStateInfo};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::location;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/batches", get(list_batches).post(create_batch))
        .route("/batches/{batch}", get(get_batch).delete(delete_batch))
        .route("/batches/{batch}/state", get(get_batch_state))
        .route("/batches/{batch}/log", get(get_batch_log))
}

#[derive(Debug, Deserialize)]
struct Paging {
    from: Option<u64>,
    size: Option<u64>,
}

async fn list_batches(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<Paging>,
) -> ApiJson<BatchList> {
    let (from, size) = (q.from.unwrap_or(0), q.size.unwrap_or(100));
    ApiJson(app.engine.list_batches_where(from, size, |access| caller.can_see(access)))
}

async fn create_batch(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateBatch>,
) -> Result<(StatusCode, HeaderMap, ApiJson<Batch>), ApiError> {
    caller.check_proxy_user(request.proxy_user.as_deref())?;
    if let Some(name) = &request.name
        && (name.chars().count() > 256 || name.chars().any(tilegate_sessions::hidden_char))
    {
        return Err(ApiError::BadRequest(format!(
            "Invalid batch name {name:?}: at most 256 characters, none of them control, invisible or text-reordering."
        )));
    }
    let (language, code) = code_of(&request, &app.config.jobs_dir())?;
    crate::routes::check_code_size(&app, &code)?;
    crate::routes::check_quota(&app, &caller, crate::routes::Quota::Batch(language))?;
    let batch = app.engine.create_batch(request, (language, code), caller.name().map(str::to_owned))?;
    Ok((StatusCode::CREATED, location(&format!("/batches/{}", batch.id)), ApiJson(batch)))
}

/// The language and code of a request: inline `code`, or a file of the jobs directory.
fn code_of(request: &CreateBatch, jobs_dir: &Path) -> Result<(Language, String), ApiError> {
    let kind = |default: Language| -> Result<Language, ApiError> {
        match &request.kind {
            None => Ok(default),
            Some(k) => k
                .parse::<Language>()
                .map_err(|_| ApiError::BadRequest(format!("Invalid kind '{k}': use rust, wasm or sql."))),
        }
    };
    match (&request.file, &request.code) {
        (Some(_), Some(_)) | (None, None) => {
            Err(ApiError::BadRequest("Give either 'file' (a file of the jobs directory) or inline 'code'.".into()))
        }
        (None, Some(code)) => Ok((kind(Language::Rust)?, code.clone())),
        (Some(file), None) => {
            let plain = !file.is_empty()
                && !file.starts_with('.')
                && file.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !plain {
                return Err(ApiError::BadRequest(format!(
                    "Invalid file '{file}': name a file of the jobs directory (letters, digits, '.', '_', '-'), not a path."
                )));
            }
            let default = match Path::new(file).extension().and_then(|e| e.to_str()) {
                Some("wat" | "wasm") => Language::Wasm,
                Some("sql") => Language::Sql,
                _ => Language::Rust,
            };
            let path = jobs_dir.join(file);
            let code = match default {
                Language::Wasm if file.ends_with(".wasm") => std::fs::read(&path).map(|b| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(b)
                }),
                _ => std::fs::read_to_string(&path),
            }
            .map_err(|_| ApiError::BadRequest(format!("No file '{file}' in the jobs directory.")))?;
            Ok((kind(default)?, code))
        }
    }
}

async fn get_batch(State(app): State<AppState>, ApiPath(key): ApiPath<String>) -> Result<ApiJson<Batch>, ApiError> {
    Ok(ApiJson(app.engine.batch(&key)?))
}

async fn get_batch_state(
    State(app): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> Result<ApiJson<SessionStateInfo>, ApiError> {
    Ok(ApiJson(app.engine.batch_state(&key)?))
}

#[derive(Debug, Deserialize)]
struct LogPaging {
    from: Option<u64>,
    /// Negative: all lines (as for session logs).
    size: Option<i64>,
}

async fn get_batch_log(
    State(app): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogPaging>,
) -> Result<ApiJson<SessionLog>, ApiError> {
    Ok(ApiJson(app.engine.batch_log(&key, q.from, q.size)?))
}

/// Kills the batch if it runs, and forgets it.
async fn delete_batch(State(app): State<AppState>, ApiPath(key): ApiPath<String>) -> Result<ApiJson<Msg>, ApiError> {
    app.engine.delete_batch(&key)?;
    Ok(ApiJson(Msg::new("deleted")))
}
