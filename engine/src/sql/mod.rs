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

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::optimizer::Optimizer;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use self::functions::{SqlFunction, SqlFunctions};

use crate::RunContext;
use crate::job::{JobError, Jobs};

/// A query's result.
#[derive(Debug, Clone)]
pub struct SqlResult {
    /// Its columns.
    pub schema: SchemaRef,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
}

impl SqlResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
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
        kept: &[(String, Arc<[u8]>)],
        functions: Option<(Vec<SqlFunction>, Arc<dyn SqlFunctions>)>,
    ) -> Result<SqlResult, JobError> {
        let session = self.sql_context(ctx).map_err(sql_error)?;
        for (function, runner) in functions.iter().flat_map(|(list, runner)| list.iter().map(move |f| (f, runner))) {
            function.register(&session, runner.clone());
        }
        for (name, json) in kept {
            let taken = session.table_exist(name.as_str()).unwrap_or(true);
            if let (false, Some(table)) = (taken, results::table(json)) {
                session.register_table(name.as_str(), Arc::new(table)).map_err(sql_error)?;
            }
        }
        let query = query.to_owned();
        self.block_on(async move {
            let frame = session.sql_with_options(&query, read_only()).await.map_err(sql_error)?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await.map_err(job_or_sql_error)?;
            Ok(SqlResult { schema, batches })
        })
    }

    /// A DataFusion context with the datasets' tables, `information_schema` (for `SHOW TABLES`)
    /// and nothing that reads files or URLs.
    fn sql_context(&self, ctx: &RunContext) -> datafusion::common::Result<SessionContext> {
        let config = SessionConfig::new()
            .with_target_partitions(self.workers())
            .with_information_schema(true)
            .with_default_catalog_and_schema("tilegate", "public");
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
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
            session.register_table(format!("{name}_tiles").as_str(), Arc::new(tables::tiles_table(&dataset)?))?;
            let cells = tables::CellsTable::new(dataset, self.cache().clone(), ctx.clone());
            session.register_table(name.as_str(), Arc::new(cells))?;
        }
        Ok(session)
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
    JobError::new("SqlError", message)
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
