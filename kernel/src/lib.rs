//! The kernel sessions run their code on: `rust` statements are compiled to wasm, and they and
//! `wasm` statements run in the sandbox; `sql` statements run on the compute engine's DataFusion
//! over the datasets. Each session opens a [`SandboxSession`], which keeps what later statements
//! build on: earlier cells' items, named values, full `sql` results.
//!
//! - [`SandboxKernel`]: what every session shares (sandbox, compiler, jobs, limits, metrics).
//! - [`SandboxSession`]: one session's kernel; `values`: its named JSON values.
//! - `Workers`, `WasmFunctions`: a statement's wasm instances serving a job's map/reduce and SQL
//!   functions on the compute engine's threads.

mod values;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};
use tilegate_api::Language;
use tilegate_compiler::{Cell, Compiler, Request};
use tilegate_compute::dataset::{Selection, cf};
use tilegate_compute::job::{JobError, JobSpec, Jobs, TileFunctions, fold_pairwise, rows_one_by_one};
use tilegate_compute::sql::functions::{AGGREGATE_EXPORT_PREFIX, EXPORT_PREFIX, SqlFunction, SqlFunctions};
use tilegate_compute::sql::{SqlLimits, SqlResult};
use tilegate_sandbox::{Host, JobFailure, JobHandler, Limits, Program, Sandbox, SessionValues, Worker, decode_source};
use tilegate_sessions::metrics::Metrics;
use tilegate_sessions::{Data, Failure, Job, Kernel, KernelSession, Opening, Restored, RunContext, Store};

pub use values::{Budget, Values};

/// A session's snippet SQL functions and what runs them.
type SnippetFunctions = (Vec<SqlFunction>, Arc<dyn SqlFunctions>);

/// Full `sql` results kept per session for download, and the largest kept.
pub const FULL_RESULTS: usize = 4;
const FULL_RESULT_BYTES: usize = 256 << 20;

/// What every session's kernel shares: statements run in the wasm sandbox under `limits`; jobs
/// they start run on `jobs`; `rust` cells are compiled by `compiler`. Cheap to clone.
#[derive(Clone)]
pub struct SandboxKernel {
    shared: Arc<Shared>,
}

struct Shared {
    sandbox: Arc<Sandbox>,
    limits: Limits,
    jobs: Arc<Jobs>,
    compiler: Arc<Compiler>,
    /// Bounds of `sql` statements (their timeout is the statement's).
    sql: SqlLimits,
    metrics: Arc<Metrics>,
    /// Where sessions' named values are recorded.
    store: Arc<Store>,
    /// The memory every session's values share.
    values_budget: Arc<Budget>,
}

impl SandboxKernel {
    /// A kernel running every statement under `limits`; `sql` results show at most
    /// `sql_max_rows` rows and their operators hold at most `sql_memory_bytes`.
    pub fn new(
        sandbox: Arc<Sandbox>,
        limits: Limits,
        jobs: Arc<Jobs>,
        compiler: Arc<Compiler>,
        (sql_max_rows, sql_memory_bytes): (usize, usize),
        (metrics, store, values_budget): (Arc<Metrics>, Arc<Store>, Arc<Budget>),
    ) -> Self {
        let sql = SqlLimits {
            timeout: limits.deadline,
            memory_bytes: sql_memory_bytes,
            result_bytes: FULL_RESULT_BYTES,
            keep_rows: sql_max_rows,
        };
        let shared = Shared { sandbox, limits, jobs, compiler, sql, metrics, store, values_budget };
        Self { shared: Arc::new(shared) }
    }

    /// The compiler (for readiness).
    pub fn compiler(&self) -> &Compiler {
        &self.shared.compiler
    }

    /// The jobs (for tile cache counters).
    pub fn jobs(&self) -> &Jobs {
        &self.shared.jobs
    }

    /// The memory sessions' values share (for `/metrics`).
    pub fn values_budget(&self) -> &Budget {
        &self.shared.values_budget
    }

    /// The sandbox (for its module cache).
    pub fn sandbox(&self) -> &Sandbox {
        &self.shared.sandbox
    }
}

impl Kernel for SandboxKernel {
    /// A session's kernel, with its recorded values (a durable session's) and, after a restart,
    /// what its history rebuilds: the items of successful `rust` cells (not compiled now; the next
    /// cell compiles against them, usually from the module cache) and every `result_<id>`.
    fn open(&self, session: Opening, history: &mut dyn Iterator<Item = Restored>) -> Arc<dyn KernelSession> {
        let shared = &self.shared;
        let (store, budget) = (shared.store.clone(), shared.values_budget.clone());
        let values = match session {
            Opening { durable: false, .. } => Values::in_memory(budget),
            Opening { restored: false, .. } => Values::recorded(store, session.id, budget),
            Opening { restored: true, .. } => Values::restored(store, session.id, budget),
        };
        let mut kept = Kept { values: Arc::new(values), ..Kept::default() };
        for (job, json) in history {
            if job.language == Language::Rust {
                let cell = Arc::new(Cell::parse(&job.code));
                if cell.has_items() {
                    kept.cells.push((format!("statement-{}", job.statement_id), cell));
                }
            }
            if let Some(json) = json {
                kept.values.keep_result_text(job.statement_id, json.get().as_bytes());
            }
        }
        Arc::new(SandboxSession { shared: shared.clone(), session, kept: Mutex::new(kept) })
    }
}

/// One session's kernel: runs its statements and keeps what later ones build on.
pub struct SandboxSession {
    shared: Arc<Shared>,
    session: Opening,
    kept: Mutex<Kept>,
}

/// What a session keeps between its statements.
#[derive(Debug, Default)]
struct Kept {
    /// Earlier successful `rust` cells with items, oldest first: `(label, cell)`.
    cells: Vec<(String, Arc<Cell>)>,
    /// Named JSON values.
    values: Arc<Values>,
    /// The full results of the last `sql` statements, for download, oldest first.
    full: VecDeque<(u64, Arc<SqlResult>)>,
}

impl SandboxSession {
    /// The full result of `sql` statement `statement`, while it is kept.
    pub fn full_result(&self, statement: u64) -> Option<Arc<SqlResult>> {
        self.lock().full.iter().find(|(id, _)| *id == statement).map(|(_, r)| r.clone())
    }

    /// Whose share of the compile slots the job uses: its owner, or, without users, its session
    /// or batch (each has a share of its own).
    fn user_key(&self, job: &Job) -> String {
        let Opening { id, durable, .. } = self.session;
        let of = if durable { "session" } else { "batch" };
        job.owner.clone().unwrap_or_else(|| format!("{of}-{id}"))
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cells(&self) -> Vec<(String, Arc<Cell>)> {
        self.lock().cells.clone()
    }

    fn values(&self) -> Arc<Values> {
        self.lock().values.clone()
    }

    /// Compiles the cell against the session's earlier items, runs it, and remembers its items
    /// when it succeeded.
    fn run_rust(&self, job: &Job, ctx: &RunContext) -> Result<Data, Failure> {
        let cell = Arc::new(Cell::parse(&job.code));
        let earlier = self.cells();
        let started = Instant::now();
        let user = self.user_key(job);
        let request = Request { user: &user, cancel: ctx.cancel_flag(), cpu_ns: ctx.meter().cpu_ns() };
        let compiled = self.shared.compiler.compile_for(&earlier, &cell, request);
        ctx.set_compiled();
        let cache = match &compiled {
            Ok(c) if c.cached => "hit",
            Ok(_) => "miss",
            Err(_) => "error",
        };
        self.shared.metrics.observe(
            "tilegate_compile_seconds",
            tilegate_sessions::metrics::labels(&[("cache", cache)]),
            started.elapsed(),
        );
        let compiled = compiled.map_err(|e| Failure {
            ename: e.name().to_owned(),
            evalue: e.to_string(),
            traceback: e.traceback().to_vec(),
        })?;
        let data = self.run_module(&compiled.wasm, job, ctx).map_err(sandbox_failure)?;
        if cell.has_items() {
            self.lock().cells.push((format!("statement-{}", job.statement_id), cell));
        }
        Ok(data)
    }

    /// The session's snippet SQL functions (`sql_function!` and `sql_aggregate!` in earlier
    /// cells): those cells' items compiled into one module (cached like any cell) whose
    /// `sbx_sql__*` and `sbx_sqlagg__*` exports run in workers.
    fn sql_functions(&self, job: &Job, ctx: &RunContext) -> Result<Option<SnippetFunctions>, Failure> {
        let earlier = self.cells();
        let declares = |source: &str| source.contains("sql_function!") || source.contains("sql_aggregate!");
        if !earlier.iter().any(|(_, cell)| declares(cell.source())) {
            return Ok(None);
        }
        let user = self.user_key(job);
        let compiled = self
            .shared
            .compiler
            .compile_for(
                &earlier,
                &Cell::parse("()"),
                Request { user: &user, cancel: ctx.cancel_flag(), cpu_ns: ctx.meter().cpu_ns() },
            )
            .map_err(|e| Failure {
                ename: e.name().to_owned(),
                evalue: format!("the session's SQL functions did not compile: {e}"),
                traceback: e.traceback().to_vec(),
            })?;
        let program = self.compile_module(&compiled.wasm, ctx).map_err(sandbox_failure)?;
        let list: Vec<SqlFunction> = [EXPORT_PREFIX, AGGREGATE_EXPORT_PREFIX]
            .into_iter()
            .flat_map(|prefix| program.exports(prefix))
            .filter_map(|e| SqlFunction::from_export(&e))
            .collect();
        let workers = Workers::new(&self.shared, program, ctx, self.values());
        Ok(Some((list, Arc::new(workers))))
    }

    fn run_sql(&self, job: &Job, ctx: &RunContext) -> Result<Data, Failure> {
        let shared = &self.shared;
        let values = self.values().all();
        let functions = self.sql_functions(job, ctx)?;
        let result = shared
            .jobs
            .sql(&job.code, ctx, shared.sql, &values, functions)
            .map_err(|e| Failure::new(e.ename, e.message))?;
        let data = tilegate_compute::sql::output::livy_data(&result, shared.sql.keep_rows);
        check_output_size(&data, shared.limits.output_bytes)?;
        let size: usize = result.batches.iter().map(|b| b.get_array_memory_size()).sum();
        if result.complete && size <= FULL_RESULT_BYTES {
            let full = &mut self.lock().full;
            if full.len() >= FULL_RESULTS {
                full.pop_front();
            }
            full.push_back((job.statement_id, Arc::new(result)));
        }
        Ok(data)
    }

    fn run_wasm(&self, job: &Job, ctx: &RunContext) -> Result<Data, tilegate_sandbox::Error> {
        let bytes = decode_source(&job.code)?;
        self.run_module(&bytes, job, ctx)
    }

    /// Cranelift's compile of a module, within the statement's time limit and cancel.
    fn compile_module(&self, bytes: &[u8], ctx: &RunContext) -> Result<Arc<Program>, tilegate_sandbox::Error> {
        let deadline = Instant::now() + self.shared.limits.deadline;
        self.shared.sandbox.compile_within(bytes, deadline, (ctx.cancel_flag(), ctx.meter().cpu_ns()))
    }

    fn run_module(&self, bytes: &[u8], job: &Job, ctx: &RunContext) -> Result<Data, tilegate_sandbox::Error> {
        let program = self.compile_module(bytes, ctx)?;
        // What `sbx_main` receives: where it runs. Documented in sandbox/ABI.md.
        let input = json!({ "session": job.session_id, "statement": job.statement_id }).to_string();
        let values: Arc<dyn SessionValues> = self.values();
        let host = Host { jobs: Some(self.job_handler(&program, ctx, &values)), session: Some(values) };
        let shared = &self.shared;
        let out = shared.sandbox.run_with_host(&program, input.as_bytes(), &shared.limits, ctx.cancel_flag(), host)?;
        Ok(output_data(out.printed, out.result))
    }

    /// Answers `sbx.run_job` from a statement: the job's map and reduce run in worker instances
    /// of the same module, under the statement's limits and deadline, reading the session's values.
    fn job_handler(&self, program: &Arc<Program>, ctx: &RunContext, values: &Arc<dyn SessionValues>) -> JobHandler {
        let (shared, program, ctx, values) = (self.shared.clone(), program.clone(), ctx.clone(), values.clone());
        let deadline = Instant::now() + shared.limits.deadline;
        Arc::new(move |spec: &[u8]| {
            let request: JobRequest = serde_json::from_slice(spec)
                .map_err(|e| JobFailure { ename: "JobError".into(), message: format!("invalid job spec: {e}") })?;
            let spec = request.spec().map_err(|e| JobFailure { ename: e.ename.clone(), message: e.message })?;
            let mut workers = Workers::new(&shared, program.clone(), &ctx, values.clone());
            workers.deadline = deadline;
            let functions = WasmFunctions {
                workers,
                ids: [request.map, request.reduce, request.row],
                fold: request.fold,
                rows: request.rows,
                split_tile: request.split_tile,
            };
            shared
                .jobs
                .run(&spec, Arc::new(functions), &ctx)
                .map_err(|e| JobFailure { ename: e.ename, message: e.message })
        })
    }
}

impl KernelSession for SandboxSession {
    fn execute(&self, job: &Job, ctx: &RunContext) -> Result<Data, Failure> {
        let result = match job.language {
            Language::Wasm => self.run_wasm(job, ctx).map_err(sandbox_failure),
            Language::Rust => self.run_rust(job, ctx),
            Language::Sql => self.run_sql(job, ctx),
        };
        // Every result stays readable (and queryable in SQL) as `result_<id>` for a while.
        if let Ok(data) = &result
            && let Some(json) = data.get("application/json")
        {
            self.values().keep_result(job.statement_id, json);
        }
        result
    }

    /// Forgets the recorded values (what it kept in memory goes with the session, its owner).
    fn close(&self) {
        // Nothing can read them now (a closed session runs nothing more). After a graceful
        // shutdown the store is closed first, so live sessions keep theirs for the restart.
        if self.session.durable
            && let Err(e) = self.shared.store.delete_values(self.session.id)
        {
            tracing::error!(session = self.session.id, "could not forget session values: {e}");
        }
    }
}

/// The job spec a guest sends with `sbx.run_job` (written by the prelude; see sandbox/ABI.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    dataset: String,
    variable: Option<String>,
    bbox: Option<[f64; 4]>,
    time: Option<(String, String)>,
    /// `[trampoline, function]` table indices.
    map: [u32; 2],
    reduce: [u32; 2],
    /// The reduce over many keys at once (modules without it are reduced a pair per call).
    #[serde(default)]
    fold: Option<[u32; 2]>,
    row: [u32; 2],
    /// The rows of many keys at once (modules without it are asked a key per call).
    #[serde(default)]
    rows: Option<[u32; 2]>,
    /// The map takes a tile's values apart, as `b` (modules without it get the tile whole in `a`).
    #[serde(default)]
    split_tile: bool,
}

impl JobRequest {
    fn spec(&self) -> Result<JobSpec, JobError> {
        let time = match &self.time {
            None => None,
            Some((a, b)) => {
                let parse = |s: &str| cf::parse_datetime(s).map_err(JobError::job);
                Some((parse(a)?, parse(b)?))
            }
        };
        Ok(JobSpec {
            dataset: self.dataset.clone(),
            variable: self.variable.clone(),
            selection: Selection { bbox: self.bbox, time },
        })
    }
}

/// Instances of one module for a statement's calls (a job's map and reduce, SQL functions): one
/// per worker thread at a time, reused across calls, dropped after any failure. A thread gets back
/// the instance it last used when that one is idle: its memory (the last tile copied in, the
/// guest's heap) is still in that core's cache, where another thread would have to pull it over.
struct Workers {
    sandbox: Arc<Sandbox>,
    program: Arc<Program>,
    limits: Limits,
    ctx: RunContext,
    deadline: Instant,
    values: Arc<dyn SessionValues>,
    idle: Idle<Worker>,
}

/// Idle items, each with the thread that last used it: a thread takes back its own when it is
/// idle, else any.
struct Idle<T>(Mutex<Vec<(std::thread::ThreadId, T)>>);

impl<T> Idle<T> {
    fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    fn take(&self) -> Option<T> {
        let thread = std::thread::current().id();
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let own = idle.iter().rposition(|(last, _)| *last == thread);
        own.map(|i| idle.swap_remove(i)).or_else(|| idle.pop()).map(|(_, item)| item)
    }

    fn put(&self, item: T) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((std::thread::current().id(), item));
    }
}

impl Workers {
    /// Instances of `program` for a statement: its limits, cancel flag and deadline (from now),
    /// reading the session's `values`.
    fn new(shared: &Shared, program: Arc<Program>, ctx: &RunContext, values: Arc<dyn SessionValues>) -> Self {
        Self {
            sandbox: shared.sandbox.clone(),
            program,
            limits: shared.limits,
            ctx: ctx.clone(),
            deadline: Instant::now() + shared.limits.deadline,
            values,
            idle: Idle::new(),
        }
    }

    /// Runs `call` on an idle worker (or a new one) and gives the worker back when it succeeded.
    fn with(
        &self,
        call: impl FnOnce(&mut Worker) -> Result<Vec<u8>, tilegate_sandbox::Error>,
    ) -> Result<Vec<u8>, JobError> {
        let failed = |e: tilegate_sandbox::Error| JobError::new(e.name(), e.to_string());
        let mut worker = match self.idle.take() {
            Some(w) => w,
            None => self
                .sandbox
                .worker(&self.program, &self.limits, self.ctx.cancel_flag(), self.deadline, Some(self.values.clone()))
                .map_err(failed)?,
        };
        let out = call(&mut worker).map_err(failed)?;
        self.idle.put(worker);
        Ok(out)
    }
}

/// A job's functions, run in workers.
struct WasmFunctions {
    workers: Workers,
    /// `[trampoline, function]` of map, reduce and row.
    ids: [[u32; 2]; 3],
    /// `[trampoline, function]` of the batched reduce, when the module has one.
    fold: Option<[u32; 2]>,
    /// `[trampoline, 0]` of the batched rows, when the module has them.
    rows: Option<[u32; 2]>,
    /// Whether the map takes the tile's values apart (else they are copied behind its head).
    split_tile: bool,
}

impl WasmFunctions {
    fn call(&self, which: usize, a: &[u8], b: &[u8]) -> Result<Vec<u8>, JobError> {
        let [tramp, func] = self.ids[which];
        self.workers.with(|w| w.invoke(tramp, func, a, b))
    }
}

impl SqlFunctions for Workers {
    fn call(&self, export: &str, input: &[u8]) -> Result<Vec<u8>, JobError> {
        self.with(|w| w.call(export, input))
    }
}

impl TileFunctions for WasmFunctions {
    fn map(&self, tile: &[u8], values: &[u8]) -> Result<Vec<u8>, JobError> {
        if self.split_tile {
            return self.call(0, tile, values);
        }
        self.call(0, &[tile, values].concat(), &[])
    }

    fn reduce(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, JobError> {
        self.call(1, a, b)
    }

    fn fold(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        match self.fold {
            Some([tramp, func]) => self.workers.with(|w| w.invoke(tramp, func, input, &[])),
            None => fold_pairwise(input, |a, b| self.reduce(a, b)),
        }
    }

    fn row(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, JobError> {
        self.call(2, key, value)
    }

    fn rows(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        match self.rows {
            Some([tramp, func]) => self.workers.with(|w| w.invoke(tramp, func, input, &[])),
            None => rows_one_by_one(input, |k, v| self.row(k, v)),
        }
    }

    /// `<module sha256>_<trampoline>_<function>` of map, reduce, row, then fold and rows (if any).
    fn identity(&self) -> String {
        let batched = self.fold.iter().chain(&self.rows);
        let places: Vec<String> = self.ids.iter().chain(batched).flatten().map(u32::to_string).collect();
        format!("{}_{}", self.workers.program.hash(), places.join("_"))
    }
}

fn sandbox_failure(e: tilegate_sandbox::Error) -> Failure {
    Failure { ename: e.name().to_owned(), evalue: e.to_string(), traceback: e.backtrace().to_vec() }
}

/// Livy output data: `text/plain` is what was printed followed by the result's text;
/// `application/json` is the result, when there is one.
fn output_data(printed: String, result: Value) -> Data {
    let mut text = printed;
    let rendered = match &result {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    if let Some(rendered) = rendered {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&rendered);
    }
    let mut data = Data::from([("text/plain".to_owned(), Value::String(text))]);
    if !result.is_null() {
        data.insert("application/json".to_owned(), result);
    }
    data
}

/// An `sql` output (the rows it shows, as JSON and as text) must fit in the statement's output
/// limit, as a snippet's result must.
fn check_output_size(data: &Data, limit: usize) -> Result<(), Failure> {
    let json = data.get("application/json").map_or(0, |v| serde_json::to_vec(v).map_or(0, |b| b.len()));
    let text = data.get("text/plain").and_then(serde_json::Value::as_str).map_or(0, str::len);
    if json.max(text) <= limit {
        return Ok(());
    }
    Err(Failure::new(
        "OutputLimit",
        format!(
            "the query's output is {} bytes, over the limit of {limit} bytes (the gateway's `output_limit_bytes`): \
             select fewer or shorter values, or aggregate",
            json.max(text)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_takes_back_the_instance_it_last_used() {
        let idle = Arc::new(Idle::new());
        idle.put("main's");
        let other = idle.clone();
        std::thread::spawn(move || other.put("other's")).join().unwrap();
        // The other thread's item went in last; this thread still gets its own first.
        assert_eq!(idle.take(), Some("main's"));
        // With none of its own idle, any idle one.
        assert_eq!(idle.take(), Some("other's"));
        assert_eq!(idle.take(), None);
    }

    #[test]
    fn text_joins_printed_and_result() {
        let data = output_data("hello\n".into(), json!(42));
        assert_eq!(data["text/plain"], "hello\n42");
        assert_eq!(data["application/json"], 42);
        let data = output_data("only printed".into(), Value::Null);
        assert_eq!(data["text/plain"], "only printed");
        assert!(!data.contains_key("application/json"));
    }
}
