//! Livy batches (`/batches`): a snippet run once, not in a session, as Apache Airflow's Livy
//! provider drives it: submit, poll `state` until `success`, `dead` or `killed`, read the `log`.
//! The code is a file of the jobs directory (`jobs_dir`, by name only) or inline; it runs through
//! the same kernel as statements, and the result's text ends its log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tilegate_api::{Batch, BatchList, CreateBatch, Language, Msg, SessionLog, SessionState, SessionStateInfo};
use tilegate_context::metered;
use tilegate_sessions::store::warn;
use tilegate_sessions::{Access, Job, Kernel, Opening, RunContext, Store, StoreError};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::location;

/// Log lines kept per batch.
const LOG_LINES: usize = 1000;

/// The batches of this gateway, recorded in the engine's store.
pub(crate) struct Batches {
    store: Arc<Store>,
    table: Mutex<BTreeMap<u64, Arc<BatchCell>>>,
}

#[derive(Debug)]
struct BatchCell {
    id: u64,
    owner: Option<String>,
    request: CreateBatch,
    app_id: String,
    ctx: RunContext,
    run: Mutex<(SessionState, Vec<String>)>,
}

/// A batch as stored.
#[derive(Debug, Serialize, Deserialize)]
struct BatchRow {
    #[serde(default)]
    owner: Option<String>,
    request: CreateBatch,
    app_id: String,
    state: SessionState,
    log: Vec<String>,
}

impl BatchCell {
    fn access(&self) -> Access {
        Access { id: self.id, owner: self.owner.clone(), proxy_user: self.request.proxy_user.clone() }
    }

    fn to_row(&self) -> BatchRow {
        let (state, log) = self.run.lock().unwrap_or_else(PoisonError::into_inner).clone();
        BatchRow { owner: self.owner.clone(), request: self.request.clone(), app_id: self.app_id.clone(), state, log }
    }

    fn to_api(&self) -> Batch {
        let (state, log) = self.run.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Batch {
            id: self.id,
            name: self.request.name.clone(),
            owner: self.owner.clone(),
            proxy_user: self.request.proxy_user.clone(),
            state,
            app_id: Some(self.app_id.clone()),
            app_info: BTreeMap::from([("driverLogUrl".into(), None), ("sparkUiUrl".into(), None)]),
            log: log.iter().rev().take(10).rev().cloned().collect(),
        }
    }

    fn log(&self, line: impl Into<String>) {
        let mut run = self.run.lock().unwrap_or_else(PoisonError::into_inner);
        if run.1.len() < LOG_LINES {
            run.1.push(line.into());
        }
    }

    /// Moves to `state` unless the batch already ended (a kill wins over a late finish).
    fn finish(&self, state: SessionState) {
        let mut run = self.run.lock().unwrap_or_else(PoisonError::into_inner);
        if run.0 == SessionState::Running || run.0 == SessionState::Starting {
            run.0 = state;
        }
    }
}

impl Batches {
    /// Stops every running batch (at shutdown, after the store is closed: they are recorded as
    /// interrupted by the restart, not as killed).
    pub(crate) fn cancel_all(&self) {
        for batch in self.table.lock().unwrap_or_else(PoisonError::into_inner).values() {
            batch.ctx.cancel_flag().store(true, Ordering::Relaxed);
        }
    }

    /// Batches running now: everyone's, and `owner`'s.
    pub(crate) fn running(&self, owner: Option<&str>) -> (usize, usize) {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let running = |b: &&Arc<BatchCell>| {
            let state = b.run.lock().unwrap_or_else(PoisonError::into_inner).0;
            matches!(state, SessionState::Running | SessionState::Starting)
        };
        table.values().filter(running).fold((0, 0), |(all, mine), b| {
            (all + 1, mine + usize::from(owner.is_some() && b.owner.as_deref() == owner))
        })
    }

    /// The batches `store` holds. One that was running when the gateway stopped is `dead` now,
    /// its log saying why.
    pub(crate) fn restore(store: Arc<Store>) -> Result<Self, StoreError> {
        let mut table = BTreeMap::new();
        for (id, row) in store.batches::<BatchRow>()? {
            let BatchRow { owner, request, app_id, mut state, mut log } = row;
            let interrupted = matches!(state, SessionState::Running | SessionState::Starting);
            if interrupted {
                state = SessionState::Dead;
                log.push("the gateway restarted while this batch ran; its work was lost: submit it again".into());
            }
            let run = Mutex::new((state, log));
            let cell = BatchCell { id, owner, request, app_id, ctx: RunContext::default(), run };
            if interrupted {
                warn(store.put_batch(id, &cell.to_row()));
            }
            table.insert(id, Arc::new(cell));
        }
        Ok(Self { store, table: Mutex::new(table) })
    }

    /// Who a batch belongs to; `None` when there is no such batch.
    pub(crate) fn access(&self, key: &str) -> Option<Access> {
        let batch = self.get(key).ok()?;
        Some(batch.access())
    }

    fn save(&self, cell: &BatchCell) {
        warn(self.store.put_batch(cell.id, &cell.to_row()));
    }

    fn get(&self, key: &str) -> Result<Arc<BatchCell>, ApiError> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        key.parse::<u64>()
            .ok()
            .and_then(|id| table.get(&id).cloned())
            .ok_or_else(|| ApiError::NotFound(format!("Batch '{key}' not found.")))
    }
}

/// Bytes of a batch's result text its log keeps.
const LOG_RESULT_BYTES: usize = 256 << 10;

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
    let table = app.batches.table.lock().unwrap_or_else(PoisonError::into_inner);
    let visible: Vec<&Arc<BatchCell>> = table.values().filter(|b| caller.can_see(&b.access())).collect();
    let from = q.from.unwrap_or(0);
    let sessions =
        visible.iter().skip(from as usize).take(q.size.unwrap_or(100) as usize).map(|b| b.to_api()).collect();
    ApiJson(BatchList { from, total: visible.len() as u64, sessions })
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
    let id = app.batches.store.next_batch_id().map_err(|e| {
        tracing::error!("could not record a batch: {e}");
        ApiError::Engine(tilegate_sessions::Error::Unavailable(
            "the gateway could not record the batch; try again".into(),
        ))
    })?;
    let cell = Arc::new(BatchCell {
        id,
        owner: caller.name().map(str::to_owned),
        request,
        app_id: format!("batch-{id}"),
        ctx: RunContext::default(),
        run: Mutex::new((SessionState::Running, vec![format!("batch {id} started: {language}")])),
    });
    app.batches.save(&cell);
    app.batches.table.lock().unwrap_or_else(PoisonError::into_inner).insert(id, cell.clone());
    // A kernel session of its own, keeping nothing beyond the run.
    let kernel = app.kernel.open(Opening { id, durable: false, restored: false }, &mut std::iter::empty());
    let (batches, accounts) = (app.batches.clone(), app.engine.accounts().clone());
    let job = Job { session_id: id, statement_id: 0, language, code, owner: cell.owner.clone() };
    let running = cell.clone();
    tokio::spawn(async move {
        let clock = Instant::now();
        let (kernel_job, ctx, owner) = (job.clone(), running.ctx.clone(), running.owner.clone());
        let result = tokio::task::spawn_blocking(move || {
            let result = metered(ctx.meter(), || kernel.execute(&kernel_job, &ctx));
            kernel.close();
            // Charged on the blocking thread: the account is written to the store.
            accounts.charge(owner.as_deref(), ctx.meter().usage());
            result
        })
        .await;
        let took = clock.elapsed();
        let usage = running.ctx.meter().usage();
        let cost = format!("{:.3} CPU seconds, {} tiles read", usage.cpu_seconds, usage.tiles_read);
        match result {
            _ if running.ctx.is_cancelled() => running.finish(SessionState::Killed),
            Ok(Ok(data)) => {
                let text = data.get("text/plain").and_then(|t| t.as_str()).unwrap_or_default();
                // A batch's log lives as long as the batch: its result's text is logged up to a bound.
                let mut logged = 0;
                for line in text.lines() {
                    if logged + line.len() > LOG_RESULT_BYTES {
                        running.log(format!(
                            "... {} more bytes of the result are not logged",
                            text.len().saturating_sub(logged)
                        ));
                        break;
                    }
                    logged += line.len() + 1;
                    running.log(line);
                }
                running.log(format!("batch {} succeeded in {took:.1?} ({cost})", running.id));
                running.finish(SessionState::Success);
            }
            Ok(Err(failure)) => {
                running.log(format!("{}: {}", failure.ename, failure.evalue));
                failure.traceback.iter().for_each(|l| running.log(l.trim_end()));
                running.log(format!("batch {} failed in {took:.1?} ({cost})", running.id));
                running.finish(SessionState::Dead);
            }
            Err(_) => {
                running.log("the gateway failed while running this batch; it has been logged");
                running.finish(SessionState::Dead);
            }
        }
        // A deleted batch stays deleted.
        if batches.table.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&running.id) {
            batches.save(&running);
        }
    });
    Ok((StatusCode::CREATED, location(&format!("/batches/{id}")), ApiJson(cell.to_api())))
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
    Ok(ApiJson(app.batches.get(&key)?.to_api()))
}

async fn get_batch_state(
    State(app): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> Result<ApiJson<SessionStateInfo>, ApiError> {
    let batch = app.batches.get(&key)?.to_api();
    Ok(ApiJson(SessionStateInfo { id: batch.id, state: batch.state }))
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
    let batch = app.batches.get(&key)?;
    let log = batch.run.lock().unwrap_or_else(PoisonError::into_inner).1.clone();
    let total = log.len() as u64;
    let size = match q.size {
        Some(s) if s < 0 => total,
        Some(s) => s as u64,
        None => 100,
    };
    let from = q.from.unwrap_or_else(|| total.saturating_sub(size)).min(total);
    let lines = log.into_iter().skip(from as usize).take(size as usize).collect();
    Ok(ApiJson(SessionLog { id: batch.id, from, total, log: lines }))
}

/// Kills the batch if it runs, and forgets it.
async fn delete_batch(State(app): State<AppState>, ApiPath(key): ApiPath<String>) -> Result<ApiJson<Msg>, ApiError> {
    let batch = app.batches.get(&key)?;
    batch.ctx.cancel_flag().store(true, Ordering::Relaxed);
    batch.finish(SessionState::Killed);
    app.batches.table.lock().unwrap_or_else(PoisonError::into_inner).remove(&batch.id);
    warn(app.batches.store.delete_batch(batch.id));
    Ok(ApiJson(Msg::new("deleted")))
}
