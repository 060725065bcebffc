//! `sql` statements: Apache DataFusion over the shared datasets.
//!
//! # Layout
//! - `tables`: per dataset its cells table (`<name>`: `time, lat, lon, <variables>`, one row per
//!   valid cell, read by the jobs' tile scan and pruned through the tile index) and its tile
//!   index (`<name>_tiles`); the catalog (`datasets`).
//! - `index`: the optimizer rule that answers `COUNT`/`MIN`/`MAX`/`SUM`/`AVG` from the tile index
//!   for the tiles a query's filters cover whole, reading only the tiles they cut.
//! - `filters`: from a query's filters on `time`/`lat`/`lon` to the selection that prunes tiles.
//! - `output`: results as Livy's `sql` output (Spark type names) and a text table.
//! - [`functions`]: snippet functions (`sql_function!`, `sql_aggregate!`) as UDFs and UDAFs, run by
//!   the gateway's sandbox.
//! - `results`: a session's kept JSON values (earlier results, `session().set` values) as tables.
//!
//! Only queries run: DDL, DML (`COPY`, `INSERT`, `CREATE EXTERNAL TABLE`, ...) and `SET`-like
//! statements are refused, and no table reads files or URLs, so no SQL reaches the server's file
//! system or network.

mod filters;
pub mod functions;
mod index;
pub mod output;
mod results;
mod tables;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, TableReference};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::optimizer::Optimizer;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use self::functions::{SqlFunction, SqlFunctions};

use crate::job::{JobError, Jobs};
use tilegate_context::RunContext;

/// A query's result.
#[derive(Debug, Clone)]
pub struct SqlResult {
    /// Its columns.
    pub schema: SchemaRef,
    /// Its rows: all of them when `complete`, else the first [`SqlLimits::keep_rows`].
    pub batches: Vec<RecordBatch>,
    /// How many rows the query returned.
    pub total_rows: usize,
    /// Whether `batches` holds every row (the result fit in [`SqlLimits::result_bytes`]).
    pub complete: bool,
}

impl SqlResult {
    /// Number of rows the query returned (held or not).
    pub fn rows(&self) -> usize {
        self.total_rows
    }
}

/// The bounds of one query: time, the memory its operators may hold, and the memory its result
/// may hold.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    /// Wall clock; the query is stopped after it (`Timeout`).
    pub timeout: Duration,
    /// DataFusion's memory pool for the query's operators (sorts, joins, aggregates, ...): past
    /// it the query fails (`ResourcesExhausted`) rather than the gateway.
    pub memory_bytes: usize,
    /// Rows are held while they fit in this many bytes; past it the rest are counted, not kept.
    pub result_bytes: usize,
    /// Rows always held, even past `result_bytes` (what the statement's output shows).
    pub keep_rows: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(60), memory_bytes: 1 << 30, result_bytes: 256 << 20, keep_rows: 1000 }
    }
}

/// A runtime whose operators share a pool of `memory_bytes` and never spill to disk: past the
/// pool a query or job fails with `ResourcesExhausted` instead of growing until the gateway is
/// killed.
pub(crate) fn bounded_runtime(memory_bytes: usize) -> datafusion::common::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(memory_bytes)))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()
}

impl Jobs {
    /// Runs one SQL query over the datasets to completion on the worker runtime. Blocks the
    /// calling thread (call it from a blocking thread); cancelling `ctx` stops the scan. `kept`
    /// are the session's named JSON values: those that are table-shaped are tables too (a
    /// dataset's table wins over a value of the same name). `functions` are the session's
    /// snippet functions and what runs them.
    ///
    /// # Errors
    /// `SqlError` for a query that does not parse or plan (unknown table or column, ...) or that
    /// would change anything; `Cancelled`; `JobError` for a tile that cannot be read.
    pub fn sql(
        &self,
        query: &str,
        ctx: &RunContext,
        limits: SqlLimits,
        kept: &[(String, Arc<[u8]>)],
        functions: Option<(Vec<SqlFunction>, Arc<dyn SqlFunctions>)>,
    ) -> Result<SqlResult, JobError> {
        let deadline = Instant::now() + limits.timeout;
        let session = self.sql_context(ctx, limits.memory_bytes).map_err(sql_error)?;
        for (function, runner) in functions.iter().flat_map(|(list, runner)| list.iter().map(move |f| (f, runner))) {
            function.register(&session, runner.clone());
        }
        let (query, kept, meter) = (query.to_owned(), kept.to_vec(), ctx.meter().clone());
        let work = async move {
            let state = session.state();
            let dialect = state.config().options().sql_parser.dialect;
            let statement = state.sql_to_statement(&query, &dialect).map_err(sql_error)?;
            check_size(&statement)?;
            // Only the values the query names become tables (each parsed from its JSON), not every
            // table-shaped value of the session for every query.
            for reference in state.resolve_table_references(&statement).map_err(sql_error)? {
                let Some((name, json)) = kept.iter().find(|(name, _)| reference.table() == name) else { continue };
                let bare = TableReference::bare(name.as_str());
                let taken = session.table_exist(bare.clone()).unwrap_or(true);
                if let (false, Some(table)) = (taken, results::table(json)) {
                    session.register_table(bare, Arc::new(table)).map_err(sql_error)?;
                }
            }
            let state = session.state();
            let plan = state.statement_to_plan(statement).await.map_err(sql_error)?;
            read_only().verify_plan(&plan).map_err(sql_error)?;
            let frame = session.execute_logical_plan(plan).await.map_err(sql_error)?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let task = frame.task_ctx();
            let plan = frame.create_physical_plan().await.map_err(job_or_sql_error)?;
            // Every node charges the statement, whichever task polls it.
            let plan = crate::meter::meter_plan(plan, &meter).map_err(job_or_sql_error)?;
            let mut stream = execute_stream(plan, Arc::new(task)).map_err(job_or_sql_error)?;
            let mut result = SqlResult { schema, batches: Vec::new(), total_rows: 0, complete: true };
            let (mut held_bytes, mut held_rows) = (0, 0);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(job_or_sql_error)?;
                result.total_rows += batch.num_rows();
                if result.complete && held_bytes + batch.get_array_memory_size() <= limits.result_bytes {
                    held_bytes += batch.get_array_memory_size();
                    held_rows += batch.num_rows();
                    result.batches.push(batch);
                    continue;
                }
                // Too large to hold whole: keep the rows the output shows, count the rest.
                result.complete = false;
                if held_rows < limits.keep_rows {
                    let take = batch.num_rows().min(limits.keep_rows - held_rows);
                    held_rows += take;
                    result.batches.push(batch.slice(0, take));
                }
            }
            if !result.complete {
                let mut rows = 0;
                result.batches.retain_mut(|b| {
                    let room = limits.keep_rows.saturating_sub(rows);
                    *b = b.slice(0, b.num_rows().min(room));
                    rows += b.num_rows();
                    b.num_rows() > 0
                });
            }
            Ok(result)
        };
        self.block_on_until(work, ctx, deadline, limits.timeout)
    }

    /// A DataFusion context with the datasets' tables, `information_schema` (for `SHOW TABLES`)
    /// and nothing that reads files or URLs.
    fn sql_context(&self, ctx: &RunContext, memory_bytes: usize) -> datafusion::common::Result<SessionContext> {
        let config = SessionConfig::new()
            .with_target_partitions(self.workers())
            .with_information_schema(true)
            .with_default_catalog_and_schema("tilegate", "public");
        let runtime = bounded_runtime(memory_bytes)?;
        let mut state =
            SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features();
        if self.sql_index_aggregates() {
            // After filters are pushed down, before common subexpressions are factored out of the
            // aggregates (which would hide their columns behind a projection).
            let mut rules = Optimizer::new().rules;
            let at = rules.iter().position(|r| r.name() == "common_sub_expression_eliminate").unwrap_or(rules.len());
            rules.insert(at, Arc::new(index::IndexAggregates));
            state = state.with_optimizer_rules(rules);
        }
        let state = state.build();
        let session = SessionContext::new_with_state(state);
        let datasets = self.catalog().list();
        session.register_table("datasets", Arc::new(tables::datasets_table(&datasets)?))?;
        for dataset in datasets {
            let name = dataset.name().to_owned();
            let tiles = TableReference::bare(format!("{name}_tiles"));
            session.register_table(tiles, Arc::new(tables::tiles_table(&dataset)?))?;
            let cells = tables::CellsTable::new(dataset, self.cache().clone(), ctx.clone());
            // Bare: a name is one identifier, never `schema.table` (quoted in queries if it must be).
            session.register_table(TableReference::bare(name), Arc::new(cells))?;
        }
        Ok(session)
    }
}

/// How deep a query may nest expressions (`1+1+...`, `a AND b AND ...`) or set operations
/// (`... UNION ALL ...`). DataFusion names every level of an expression after its whole subtree,
/// so planning grows with the square of the depth: 1,000 levels plan in about a second, 10,000 in
/// minutes of a worker that a deadline cannot interrupt.
pub const MAX_QUERY_DEPTH: usize = 1000;

/// How many expressions a query may hold.
pub const MAX_QUERY_EXPRESSIONS: usize = 20_000;

/// Refuses a query too deep or too large to plan in bounded time, before planning it.
fn check_size(statement: &datafusion::sql::parser::Statement) -> Result<(), JobError> {
    use datafusion::sql::parser::Statement;
    use datafusion::sql::sqlparser::ast::Visit;
    let statement = match statement {
        Statement::Explain(explain) => return check_size(&explain.statement),
        Statement::Statement(statement) => statement,
        _ => return Ok(()),
    };
    let mut size = QuerySize::default();
    let _ = statement.visit(&mut size);
    if size.deepest > MAX_QUERY_DEPTH {
        return Err(JobError::new(
            "SqlError",
            format!(
                "the query nests expressions or set operations more than {MAX_QUERY_DEPTH} deep: split it, or use \
                 IN (...) lists and aggregates instead of long chains"
            ),
        ));
    }
    if size.expressions > MAX_QUERY_EXPRESSIONS {
        return Err(JobError::new(
            "SqlError",
            format!("the query has more than {MAX_QUERY_EXPRESSIONS} expressions: split it"),
        ));
    }
    Ok(())
}

/// What [`check_size`] measures while it walks a query.
#[derive(Default)]
struct QuerySize {
    depth: usize,
    deepest: usize,
    expressions: usize,
}

impl datafusion::sql::sqlparser::ast::Visitor for QuerySize {
    type Break = ();

    fn pre_visit_query(&mut self, query: &datafusion::sql::sqlparser::ast::Query) -> std::ops::ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::SetExpr;
        // A chain of set operations is one query whose body nests to the left.
        let (mut body, mut chain) = (query.body.as_ref(), 0);
        while let SetExpr::SetOperation { left, .. } = body {
            chain += 1;
            body = left;
        }
        self.deepest = self.deepest.max(self.depth + chain);
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _: &datafusion::sql::sqlparser::ast::Expr) -> std::ops::ControlFlow<()> {
        self.depth += 1;
        self.expressions += 1;
        self.deepest = self.deepest.max(self.depth);
        if self.deepest > MAX_QUERY_DEPTH || self.expressions > MAX_QUERY_EXPRESSIONS {
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &datafusion::sql::sqlparser::ast::Expr) -> std::ops::ControlFlow<()> {
        self.depth -= 1;
        std::ops::ControlFlow::Continue(())
    }
}

/// Queries only: no DDL, no DML, no `SET`/transactions.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

fn sql_error(e: DataFusionError) -> JobError {
    let message = match e.find_root() {
        DataFusionError::SQL(parse, _) => format!("syntax error: {parse}"),
        DataFusionError::Plan(m) if m.contains("not supported") || m.contains("Unsupported") => {
            format!("{m} (tilegate runs queries only; the datasets are read-only)")
        }
        other => other.to_string(),
    };
    JobError::sql(message)
}

/// Our own errors (a tile that cannot be read, cancel, a snippet function) as they are;
/// DataFusion's as `SqlError`.
fn job_or_sql_error(e: DataFusionError) -> JobError {
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(ours) = inner.downcast_ref::<JobError>()
    {
        return ours.clone();
    }
    sql_error(e)
}
