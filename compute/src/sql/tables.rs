//! The tables SQL sees: per dataset, its cells (`<name>`) and its tile index (`<name>_tiles`); and
//! the catalog of datasets (`datasets`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampSecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::{MemTable, TableType};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::Expr;

use super::filters;
use crate::dataset::{Dataset, Error as DatasetError, Tile};
use crate::job::TileCache;
use crate::job::scan::{self, Layout, ScanContext};
use tilegate_context::RunContext;

/// A dataset's cells: one row per valid cell, `time, lat, lon, <variables>`, read tile by tile
/// through the same scan as jobs, pruned through the tile index by the query's filters.
pub(crate) struct CellsTable {
    pub(crate) dataset: Arc<Dataset>,
    /// The variables that share the first one's tiling (those become columns).
    pub(crate) variables: Vec<String>,
    pub(crate) cache: Arc<TileCache>,
    pub(crate) ctx: RunContext,
    /// Tiles this table leaves out (the whole tiles an index-answered aggregate took from the index).
    pub(crate) skip: Arc<HashSet<[u64; 3]>>,
}

impl std::fmt::Debug for CellsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cells of {} ({})", self.dataset.name(), self.variables.join(", "))?;
        match self.skip.len() {
            0 => Ok(()),
            n => write!(f, " but {n} whole tiles"),
        }
    }
}

impl CellsTable {
    pub(crate) fn new(dataset: Arc<Dataset>, cache: Arc<TileCache>, ctx: RunContext) -> Self {
        let info = dataset.info();
        let first = info.variables.first().map(|v| v.tile_shape.clone()).unwrap_or_default();
        let variables = info.variables.iter().filter(|v| v.tile_shape == first).map(|v| v.name.clone()).collect();
        Self { dataset, variables, cache, ctx, skip: Arc::default() }
    }

    /// The same table without the `skip` tiles.
    pub(crate) fn skipping(&self, skip: HashSet<[u64; 3]>) -> Self {
        Self {
            dataset: self.dataset.clone(),
            variables: self.variables.clone(),
            cache: self.cache.clone(),
            ctx: self.ctx.clone(),
            skip: Arc::new(skip),
        }
    }
}

#[async_trait]
impl TableProvider for CellsTable {
    fn schema(&self) -> SchemaRef {
        scan::cells_schema(&self.variables)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter is used for pruning where it can be, and always applied again on the rows.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (selection, nothing) = filters::selection(filters);
        // Every tile where any variable has data (a cell is a row when any variable is valid).
        let mut tiles: BTreeMap<[u64; 3], Tile> = BTreeMap::new();
        for variable in self.variables.iter().filter(|_| !nothing) {
            match self.dataset.select(variable, &selection) {
                Ok(selected) => {
                    for tile in selected.into_iter().filter(|t| !self.skip.contains(&t.index)) {
                        tiles.entry(tile.index).or_insert(tile);
                    }
                }
                // A bbox off the grid or a time range outside the data selects no cell.
                Err(DatasetError::InvalidRequest(_)) => break,
                Err(e) => return Err(datafusion::common::DataFusionError::External(Box::new(e))),
            }
        }
        let tiles: Vec<Tile> = tiles.into_values().collect();
        let schema = self.schema();
        if tiles.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let context = ScanContext {
            dataset: self.dataset.clone(),
            variables: self.variables.clone(),
            selection,
            cache: self.cache.scan(),
            ctx: self.ctx.clone(),
            layout: Layout::Cells,
        };
        scan::plan(Arc::new(context), &tiles, projection, limit, state.config_options().execution.target_partitions)
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Second, None)
}

/// A dataset's tile index: one row per tile with data, per variable.
pub(crate) fn tiles_table(dataset: &Dataset) -> Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("variable", DataType::Utf8, false),
        Field::new("t", DataType::Int64, false),
        Field::new("y", DataType::Int64, false),
        Field::new("x", DataType::Int64, false),
        Field::new("time_start", timestamp(), false),
        Field::new("time_end", timestamp(), false),
        Field::new("lat_min", DataType::Float64, false),
        Field::new("lat_max", DataType::Float64, false),
        Field::new("lon_min", DataType::Float64, false),
        Field::new("lon_max", DataType::Float64, false),
        Field::new("cnt", DataType::Int64, false),
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
        Field::new("mean", DataType::Float64, false),
        Field::new("std", DataType::Float64, false),
    ]));
    let mut rows = Vec::new();
    for variable in dataset.variable_names() {
        let tiles = dataset.select(variable, &Default::default()).unwrap_or_default();
        rows.extend(tiles.into_iter().map(|t| (variable.to_owned(), t)));
    }
    let f = |g: &dyn Fn(&crate::dataset::Tile) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|(_, t)| g(t))))
    };
    let i = |g: &dyn Fn(&crate::dataset::Tile) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, t)| g(t))))
    };
    let ts = |g: &dyn Fn(&crate::dataset::Tile) -> i64| -> ArrayRef {
        Arc::new(TimestampSecondArray::from_iter_values(rows.iter().map(|(_, t)| g(t))))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(v, _)| v.as_str()))),
        i(&|t| t.index[0] as i64),
        i(&|t| t.index[1] as i64),
        i(&|t| t.index[2] as i64),
        ts(&|t| t.time.0),
        ts(&|t| t.time.1),
        f(&|t| t.lat.0),
        f(&|t| t.lat.1),
        f(&|t| t.lon.0),
        f(&|t| t.lon.1),
        i(&|t| t.stats.count as i64),
        f(&|t| t.stats.min),
        f(&|t| t.stats.max),
        f(&|t| t.stats.mean()),
        f(&|t| t.stats.std()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    MemTable::try_new(schema, vec![vec![batch]])
}

/// The catalog: one row per dataset variable.
pub(crate) fn datasets_table(datasets: &[Arc<Dataset>]) -> Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("variable", DataType::Utf8, false),
        Field::new("units", DataType::Utf8, true),
        Field::new("long_name", DataType::Utf8, true),
        Field::new("time_start", timestamp(), false),
        Field::new("time_end", timestamp(), false),
        Field::new("time_steps", DataType::Int64, false),
        Field::new("west", DataType::Float64, false),
        Field::new("south", DataType::Float64, false),
        Field::new("east", DataType::Float64, false),
        Field::new("north", DataType::Float64, false),
        Field::new("tiles_with_data", DataType::Int64, false),
        Field::new("valid_cells", DataType::Int64, false),
    ]));
    let infos: Vec<_> = datasets.iter().map(|d| d.info()).collect();
    let rows: Vec<_> = infos.iter().flat_map(|d| d.variables.iter().map(move |v| (d, v))).collect();
    let text =
        |g: &dyn Fn(usize) -> Option<String>| -> ArrayRef { Arc::new(StringArray::from_iter((0..rows.len()).map(g))) };
    let f = |g: &dyn Fn(usize) -> f64| -> ArrayRef { Arc::new(Float64Array::from_iter_values((0..rows.len()).map(g))) };
    let i = |g: &dyn Fn(usize) -> i64| -> ArrayRef { Arc::new(Int64Array::from_iter_values((0..rows.len()).map(g))) };
    let columns: Vec<ArrayRef> = vec![
        text(&|r| Some(rows[r].0.name.clone())),
        text(&|r| Some(rows[r].1.name.clone())),
        text(&|r| rows[r].1.units.clone()),
        text(&|r| rows[r].1.long_name.clone()),
        Arc::new(TimestampSecondArray::from_iter_values(rows.iter().map(|(d, _)| d.time.start))),
        Arc::new(TimestampSecondArray::from_iter_values(rows.iter().map(|(d, _)| d.time.stop))),
        i(&|r| rows[r].0.time.steps as i64),
        f(&|r| rows[r].0.bbox.west),
        f(&|r| rows[r].0.bbox.south),
        f(&|r| rows[r].0.bbox.east),
        f(&|r| rows[r].0.bbox.north),
        i(&|r| rows[r].1.tiles_with_data as i64),
        i(&|r| rows[r].1.valid_cells as i64),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    MemTable::try_new(schema, vec![vec![batch]])
}
