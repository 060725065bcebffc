//! Map/reduce jobs over the tiles of a dataset, planned and run by Apache DataFusion.
//!
//! The plan is `scan → map → gather → unnest → group by key with reduce`:
//! - the scan is a stock `DataSourceExec` over a `FileScanConfig` with one `PartitionedFile` per
//!   selected tile, read by our [`scan::TileSource`] (so the same plan can run on Ballista, which
//!   only slices stock file scans correctly); each tile becomes one row holding the tile's bytes,
//!   cells outside the selection set to NaN;
//! - map is a scalar UDF returning the tile's `(key, value)` pairs as `List<Struct<key, value>>`,
//!   gathered 16 tiles a batch (`plan::TILES_PER_BATCH`) by a stock `FilterExec` that passes them all;
//! - reduce is an aggregate UDF merging the values of a key, in any grouping: the keys a batch
//!   touches in one [`TileFunctions::fold`] call (`states`);
//! - then each key's row comes from [`TileFunctions::rows`] calls of about 1 MB, run on the
//!   workers in parallel, and the rows are sorted by key (`rows`).
//!
//! What map, reduce and the final rows *do* comes from a [`TileFunctions`] the caller supplies
//! (the gateway's runs wasm in the sandbox); the engine only moves bytes. Work runs on the
//! engine's own runtime with `target_partitions` = workers, never on the HTTP runtime.

mod cache;
mod codec;
pub(crate) mod plan;
mod rows;
pub(crate) mod scan;
pub(crate) mod states;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Arc;

use crate::dataset::{Catalog, Selection};
pub use cache::{CacheScan, CacheStats, TileCache};
pub use codec::{JobCodec, ResolveFunctions};
use tilegate_context::MeteredFuture;
use tilegate_context::RunContext;
use wire::{Reader, put_field, read_fields};

/// What a job computes: the caller's map, reduce and row functions, over encoded bytes.
pub trait TileFunctions: Send + Sync + 'static {
    /// `(key, value)` pairs of one tile: `u32 n`, then per pair `u32 len, key, u32 len, value`.
    /// The tile comes in two parts: `tile`, its header, times, latitudes and longitudes
    /// (`prelude::encode_tile_head`), and `values`, its `f32` values (little-endian).
    ///
    /// # Errors
    /// The map failed on this tile.
    fn map(&self, tile: &[u8], values: &[u8]) -> Result<Vec<u8>, JobError>;
    /// Two values of one key merged into one.
    ///
    /// # Errors
    /// The reduce failed.
    fn reduce(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, JobError>;
    /// Many values reduced into many keys' values at once, in order: the input is a merge call's
    /// (`sandbox/ABI.md`: `u32 1, u32 groups`, their values or `FRESH`, `u32 n`, `n` times a group
    /// and a value), the output `u32 groups` and the values after. By default one [`reduce`] per
    /// value, [`fold_pairwise`].
    ///
    /// [`reduce`]: TileFunctions::reduce
    ///
    /// # Errors
    /// A reduce failed, or the input is malformed.
    fn fold(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        fold_pairwise(input, |a, b| self.reduce(a, b))
    }
    /// The result row of a key: the key's JSON, a newline, the row's JSON.
    ///
    /// # Errors
    /// The conversion failed.
    fn row(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, JobError>;
    /// The rows of many keys at once: input `u32 n`, then `n` times a key and its final value
    /// (`u32 len` and bytes each); output `n` times `u32 len` and what [`row`] returns. By default
    /// one [`row`] per key, [`rows_one_by_one`].
    ///
    /// [`row`]: TileFunctions::row
    ///
    /// # Errors
    /// A conversion failed, or the input is malformed.
    fn rows(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        rows_one_by_one(input, |k, v| self.row(k, v))
    }
    /// What these functions are, by content: the module's hash and the functions' places in it.
    /// It names the job's UDFs (`tile_map_<identity>`, `tile_reduce_<identity>`), so that a UDF is
    /// never known by a name alone and two modules never share one.
    fn identity(&self) -> String;
}

/// [`TileFunctions::fold`] with a `reduce` call per value: for functions without a batched reduce.
///
/// # Errors
/// A reduce failed, or the input is malformed (an `AbiError`).
pub fn fold_pairwise(
    input: &[u8],
    reduce: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>, JobError>,
) -> Result<Vec<u8>, JobError> {
    let bad = || JobError::abi(format!("a reduce batch of {} bytes is malformed", input.len()));
    let mut reader = Reader::new(input);
    if reader.word() != Some(states::MERGE) {
        return Err(bad());
    }
    let groups = reader.word().ok_or_else(bad)?;
    let mut values: Vec<Option<Vec<u8>>> = (0..groups)
        .map(|_| reader.state().map(|s| s.map(<[u8]>::to_vec)).ok_or_else(bad))
        .collect::<Result<_, JobError>>()?;
    for _ in 0..reader.word().ok_or_else(bad)? {
        let group = reader.word().ok_or_else(bad)? as usize;
        let (slot, value) = (values.get_mut(group).ok_or_else(bad)?, reader.state().ok_or_else(bad)?);
        if let Some(b) = value {
            *slot = Some(match slot.take() {
                None => b.to_vec(),
                Some(a) => reduce(&a, b)?,
            });
        }
    }
    let mut out = Vec::with_capacity(4 + values.iter().flatten().map(|v| 4 + v.len()).sum::<usize>());
    out.extend_from_slice(&groups.to_le_bytes());
    for v in &values {
        states::put_state(&mut out, v.as_deref());
    }
    Ok(out)
}

/// [`TileFunctions::rows`] with a `row` call per key: for functions without batched rows.
///
/// # Errors
/// A conversion failed, or the input is malformed (an `AbiError`).
pub fn rows_one_by_one(
    input: &[u8],
    row: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>, JobError>,
) -> Result<Vec<u8>, JobError> {
    let spans = read_fields(input, true, 2)
        .ok_or_else(|| JobError::abi(format!("a rows batch of {} bytes is malformed", input.len())))?;
    let mut out = Vec::new();
    for pair in spans.chunks_exact(2) {
        put_field(&mut out, &row(pair[0], pair[1])?);
    }
    Ok(out)
}

/// Why a job failed, as a statement's error output names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ename}: {message}")]
pub struct JobError {
    /// Kind, e.g. `JobError`, `Cancelled`, `Timeout`, `Panic`.
    pub ename: String,
    /// What happened, naming the dataset and tile where it applies.
    pub message: String,
}

impl JobError {
    /// An error of kind `ename`: for kinds named elsewhere (the sandbox's `Timeout`, `MemoryLimit`,
    /// ...); the job's own kinds have constructors.
    pub fn new(ename: &str, message: impl Into<String>) -> Self {
        Self { ename: ename.to_owned(), message: message.into() }
    }

    /// `JobError`: the job itself is wrong (its spec, its dataset, its plan).
    pub fn job(message: impl Into<String>) -> Self {
        Self::new("JobError", message)
    }

    /// `AbiError`: a guest function answered outside the ABI (malformed bytes, wrong lengths).
    pub fn abi(message: impl Into<String>) -> Self {
        Self::new("AbiError", message)
    }

    /// `Cancelled`: the statement was cancelled.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new("Cancelled", message)
    }

    /// `Panic`: a guest function panicked.
    pub fn panic(message: impl Into<String>) -> Self {
        Self::new("Panic", message)
    }

    /// `SqlError`: a query that cannot be planned or run.
    pub fn sql(message: impl Into<String>) -> Self {
        Self::new("SqlError", message)
    }
}

/// Which tiles a job reads.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Dataset name.
    pub dataset: String,
    /// Variable; `None` = the dataset's first.
    pub variable: Option<String>,
    /// Bbox and time range (inclusive).
    pub selection: Selection,
}

impl Drop for Jobs {
    /// The gateway drops this on its async runtime, where a blocking runtime shutdown would panic.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Stack of each worker thread.
const WORKER_STACK_BYTES: usize = 64 << 20;

/// [`Jobs::with_job_memory_limit`]'s default: 1 GiB.
pub const DEFAULT_JOB_MEMORY_BYTES: usize = 1 << 30;

/// Runs jobs: the worker runtime, the DataFusion settings and the decoded-tile cache.
pub struct Jobs {
    catalog: Arc<Catalog>,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    workers: usize,
    cache: Arc<TileCache>,
    /// Whether `sql` answers whole-tile aggregates from the tile index (`sql::index`).
    sql_index_aggregates: bool,
    /// Memory a job's operators may hold (its groups' reduce states above all).
    job_memory_bytes: usize,
}

impl Jobs {
    /// `workers` threads for tile work; a decoded-tile cache of `cache_bytes`.
    ///
    /// # Errors
    /// When the runtime's threads cannot be started.
    pub fn new(catalog: Arc<Catalog>, workers: usize, cache_bytes: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("tile-worker")
            // Planning a deeply nested query recurses; DataFusion grows its own stack where it
            // knows it does (`recursive_protection`), and this leaves room where it does not.
            .thread_stack_size(WORKER_STACK_BYTES)
            .enable_all()
            .build()?;
        Ok(Self {
            catalog,
            runtime: Some(runtime),
            workers,
            cache: Arc::new(TileCache::new(cache_bytes)),
            sql_index_aggregates: true,
            job_memory_bytes: DEFAULT_JOB_MEMORY_BYTES,
        })
    }

    /// The memory a job's operators may hold, above all its groups' reduce states (default
    /// [`DEFAULT_JOB_MEMORY_BYTES`]); past it the job fails with `MemoryLimit`.
    #[must_use]
    pub fn with_job_memory_limit(mut self, bytes: usize) -> Self {
        self.job_memory_bytes = bytes;
        self
    }

    /// Whether `sql` statements answer `COUNT`/`MIN`/`MAX`/`SUM`/`AVG` over whole tiles from the
    /// tile index (on by default; off reads every cell, as a baseline).
    #[must_use]
    pub fn with_sql_index_aggregates(mut self, on: bool) -> Self {
        self.sql_index_aggregates = on;
        self
    }

    pub(crate) fn sql_index_aggregates(&self) -> bool {
        self.sql_index_aggregates
    }

    /// The decoded-tile cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Runs a job to completion and returns its rows as a JSON array, sorted by key. Progress
    /// (tiles mapped / tiles selected) goes to `ctx`; cancelling `ctx` stops it promptly. Blocks
    /// the calling thread (call it from a blocking thread, not an async task).
    ///
    /// # Errors
    /// Unknown dataset or variable, a bad selection, a tile that cannot be read, a failing
    /// function, cancellation.
    pub fn run(
        &self,
        spec: &JobSpec,
        functions: Arc<dyn TileFunctions>,
        ctx: &RunContext,
    ) -> Result<Vec<u8>, JobError> {
        let job = self.job(spec, functions, ctx)?;
        self.block_on(MeteredFuture::new(job.run(), ctx.meter().clone()))
    }

    /// The physical plan of the job `spec` asks for, as datafusion-proto bytes through `codec`: what
    /// a distributed engine ships to its executors.
    ///
    /// # Errors
    /// As [`Jobs::run`] for the spec; a plan part `codec` cannot encode.
    pub fn encode_plan(
        &self,
        spec: &JobSpec,
        functions: Arc<dyn TileFunctions>,
        codec: Arc<JobCodec>,
    ) -> Result<Vec<u8>, JobError> {
        let job = self.job(spec, functions, &RunContext::default())?;
        self.block_on(async move {
            let (plan, _) = job.physical_plan().await.map_err(plan::job_error)?;
            let bytes = datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, codec.as_ref());
            Ok(bytes.map_err(plan::job_error)?.to_vec())
        })
    }

    /// Decodes a plan from [`Jobs::encode_plan`] through `codec`, runs it on the worker runtime and
    /// returns its rows as [`Jobs::run`] does, the last step through `functions`.
    ///
    /// # Errors
    /// A plan `codec` cannot decode (unknown dataset or functions); then as [`Jobs::run`].
    pub fn run_encoded(
        &self,
        bytes: &[u8],
        functions: Arc<dyn TileFunctions>,
        codec: Arc<JobCodec>,
    ) -> Result<Vec<u8>, JobError> {
        let (bytes, workers) = (bytes.to_vec(), self.workers);
        self.block_on(async move {
            let session = datafusion::prelude::SessionContext::new();
            let decode = datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec;
            let plan = decode(&bytes, &session.task_ctx(), codec.as_ref()).map_err(plan::job_error)?;
            let batches =
                datafusion::physical_plan::collect(plan, session.task_ctx()).await.map_err(plan::job_error)?;
            rows::rows_json(functions.as_ref(), &batches, workers, &tilegate_context::Meter::default())
        })
    }

    /// The job `spec` asks for: its dataset, variable and tiles found.
    fn job(&self, spec: &JobSpec, functions: Arc<dyn TileFunctions>, ctx: &RunContext) -> Result<plan::Job, JobError> {
        let dataset = self.catalog.get(&spec.dataset).map_err(|e| JobError::job(e.to_string()))?;
        let variable = dataset.variable_or_first(spec.variable.as_deref());
        let tiles = dataset.select(&variable, &spec.selection).map_err(|e| JobError::job(e.to_string()))?;
        Ok(plan::Job {
            dataset,
            variable,
            selection: spec.selection,
            tiles,
            functions,
            ctx: ctx.clone(),
            cache: self.cache.clone(),
            workers: self.workers,
            memory_bytes: self.job_memory_bytes,
        })
    }

    /// Runs `work` on the worker runtime and waits for it (from a blocking thread).
    pub(crate) fn block_on<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, JobError>> + Send + 'static,
    ) -> Result<T, JobError> {
        let Some(runtime) = &self.runtime else {
            return Err(JobError::job("the gateway is shutting down"));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().unwrap_or_else(|_| Err(JobError::job("the job's worker stopped unexpectedly")))
    }

    /// [`Jobs::block_on`], given up when `ctx` is cancelled or at `deadline` (the work is
    /// dropped on the worker runtime, which stops a DataFusion plan at its next batch).
    pub(crate) fn block_on_until<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, JobError>> + Send + 'static,
        ctx: &RunContext,
        deadline: std::time::Instant,
        timeout: std::time::Duration,
    ) -> Result<T, JobError> {
        let Some(runtime) = &self.runtime else {
            return Err(JobError::job("the gateway is shutting down"));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let work = MeteredFuture::new(work, ctx.meter().clone());
        let task = runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(10)) {
                Ok(result) => return result,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(JobError::job("the job's worker stopped unexpectedly"));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if ctx.is_cancelled() {
                task.abort();
                return Err(JobError::cancelled("the statement was cancelled"));
            }
            if std::time::Instant::now() >= deadline {
                task.abort();
                let secs = timeout.as_secs_f64();
                return Err(JobError::new(
                    "Timeout",
                    format!("time limit of {secs} s exceeded (the gateway's `statement_timeout_secs`)"),
                ));
            }
        }
    }

    pub(crate) fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub(crate) fn cache(&self) -> &Arc<TileCache> {
        &self.cache
    }

    pub(crate) fn workers(&self) -> usize {
        self.workers
    }
}
