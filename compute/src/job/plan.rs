//! The job's DataFusion plan: tile table → map UDF → gather → unnest → reduce UDAF by key (then
//! `rows` makes its rows).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, ListArray, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, GroupsAccumulator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::prelude::{Expr, SessionConfig, SessionContext, col, ident};

use super::scan::{self, Layout, ScanContext, external};
use super::states::{GroupStates, NewStates, OneState, StateCalls, merge_in_calls, read_states};
use super::wire::{Reader, word_at};
use super::{JobError, TileCache, TileFunctions};
use crate::dataset::{Dataset, Selection, Tile};
use tilegate_context::RunContext;

pub(super) struct Job {
    pub(super) dataset: Arc<Dataset>,
    pub(super) variable: String,
    pub(super) selection: Selection,
    pub(super) tiles: Vec<Tile>,
    pub(super) functions: Arc<dyn TileFunctions>,
    pub(super) ctx: RunContext,
    pub(super) cache: Arc<TileCache>,
    pub(super) workers: usize,
    /// Memory the job's operators may hold (a pool without spilling).
    pub(super) memory_bytes: usize,
}

impl Job {
    pub(super) async fn run(self) -> Result<Vec<u8>, JobError> {
        if self.tiles.is_empty() {
            self.ctx.set_progress(1.0);
            return Ok(b"[]".to_vec());
        }
        let (plan, session) = self.physical_plan().await.map_err(job_error)?;
        // Every node charges the statement, whichever task polls it.
        let plan = crate::meter::meter_plan(plan, self.ctx.meter()).map_err(job_error)?;
        let batches = datafusion::physical_plan::collect(plan, session.task_ctx()).await.map_err(job_error)?;
        let json = super::rows::rows_json(self.functions.as_ref(), &batches, self.workers, self.ctx.meter())?;
        self.ctx.set_progress(1.0);
        Ok(json)
    }

    /// The job's physical plan (`workers` partitions) and the session it was planned in.
    pub(super) async fn physical_plan(&self) -> Result<(Arc<dyn ExecutionPlan>, SessionContext)> {
        let config = SessionConfig::new().with_target_partitions(self.workers);
        let session = SessionContext::new_with_config_rt(config, crate::sql::bounded_runtime(self.memory_bytes)?);
        let scan = Arc::new(ScanContext {
            dataset: self.dataset.clone(),
            variables: vec![self.variable.clone()],
            selection: self.selection,
            cache: self.cache.scan(),
            ctx: self.ctx.clone(),
            layout: Layout::Encoded,
        });
        let table = Arc::new(TileTable { scan, tiles: self.tiles.clone() });
        let map = map_udf(self.functions.clone(), self.ctx.clone(), self.dataset.name(), self.tiles.len());
        let reduce = reduce_udaf(self.functions.clone());
        let plan = session
            .read_table(table)?
            .select(vec![map.call(vec![col("tile"), col("values")]).alias("kv")])?
            // Every map output passes: the filter is there to gather them (see below).
            .filter(col("kv").is_not_null())?
            .unnest_columns(&["kv"])?
            .unnest_columns(&["kv"])?
            .aggregate(vec![ident("kv.key").alias("key")], vec![reduce.call(vec![ident("kv.value")]).alias("value")])?
            .create_physical_plan()
            .await?;
        Ok((gather_map_outputs(plan)?, session))
    }
}

/// Map outputs (a row per tile) gathered into one batch: unnesting and the partial aggregate cost
/// about 9 µs a batch, which a batch per tile paid per tile. The bound keeps the gathered pairs
/// small for maps with many keys (a per-pixel map: ~2.6 MB per 180 x 180 tile).
pub(super) const TILES_PER_BATCH: usize = 16;

/// Sets the map's `FilterExec`, a stock operator that gathers small batches (and encodes with the
/// plan), to gather [`TILES_PER_BATCH`] tiles' outputs.
fn gather_map_outputs(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let set = |node: Arc<dyn ExecutionPlan>| -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
        match node.downcast_ref::<FilterExec>() {
            Some(filter) => Ok(Transformed::yes(Arc::new(filter.with_batch_size(TILES_PER_BATCH)?))),
            None => Ok(Transformed::no(node)),
        }
    };
    Ok(plan.transform_up(set)?.data)
}

/// The map UDF over `functions`, which reports progress out of `total` tiles to `ctx`.
pub(super) fn map_udf(functions: Arc<dyn TileFunctions>, ctx: RunContext, dataset: &str, total: usize) -> ScalarUDF {
    ScalarUDF::from(MapUdf {
        name: format!("tile_map_{}", functions.identity()),
        signature: Signature::exact(vec![DataType::Binary, DataType::Binary], Volatility::Volatile),
        functions,
        ctx,
        dataset: dataset.to_owned(),
        done: Arc::new(AtomicUsize::new(0)),
        total,
    })
}

/// The reduce UDAF over `functions`.
pub(super) fn reduce_udaf(functions: Arc<dyn TileFunctions>) -> AggregateUDF {
    AggregateUDF::from(ReduceUdaf {
        name: format!("tile_reduce_{}", functions.identity()),
        signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        calls: Arc::new(Folds { functions }),
    })
}

/// The job's error from DataFusion's: ours when a tile or function failed, else a plan error.
pub(crate) fn job_error(e: DataFusionError) -> JobError {
    match e.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<JobError>() {
            Some(job) => job.clone(),
            None => JobError::job(inner.to_string()),
        },
        DataFusionError::ResourcesExhausted(why) => JobError::new(
            "MemoryLimit",
            format!(
                "the job's groups need more memory than the gateway's `job_memory_limit_mib` allows ({why}): \
                 use fewer or smaller keys or values, e.g. a coarser key, a smaller bbox or time range"
            ),
        ),
        other => JobError::job(other.to_string()),
    }
}

/// The selected tiles as a table: `scan` builds the stock file scan over them.
#[derive(Debug)]
struct TileTable {
    scan: Arc<ScanContext>,
    tiles: Vec<Tile>,
}

#[async_trait]
impl TableProvider for TileTable {
    fn schema(&self) -> SchemaRef {
        scan::schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = state.config_options().execution.target_partitions;
        scan::plan(self.scan.clone(), &self.tiles, projection, limit, partitions)
    }
}

/// The map's pair struct, `{key, value}`: built once (Arrow's fields are shared `Arc`s, and the map
/// builds a list of them per tile).
fn pair_fields() -> Fields {
    static FIELDS: std::sync::LazyLock<Fields> = std::sync::LazyLock::new(|| {
        Fields::from(vec![Field::new("key", DataType::Binary, false), Field::new("value", DataType::Binary, false)])
    });
    FIELDS.clone()
}

/// The map's list item: a pair struct (see [`pair_fields`]).
fn pair_item() -> FieldRef {
    static ITEM: std::sync::LazyLock<FieldRef> =
        std::sync::LazyLock::new(|| Arc::new(Field::new("item", DataType::Struct(pair_fields()), true)));
    ITEM.clone()
}

/// The map: one tile in, its `(key, value)` pairs out.
pub(super) struct MapUdf {
    /// `tile_map_<module hash and function places>`: its identity.
    name: String,
    signature: Signature,
    pub(super) functions: Arc<dyn TileFunctions>,
    ctx: RunContext,
    pub(super) dataset: String,
    done: Arc<AtomicUsize>,
    /// Tiles selected: progress is tiles mapped out of these.
    pub(super) total: usize,
}

impl std::fmt::Debug for MapUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for MapUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for MapUdf {}

impl Hash for MapUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for MapUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(pair_item()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tiles = args.args[0].to_array(args.number_rows)?;
        let cells = args.args[1].to_array(args.number_rows)?;
        let (tiles, cells) = (tiles.as_binary::<i32>(), cells.as_binary::<i32>());
        let mut keys = BinaryBuilder::new();
        let mut values = BinaryBuilder::new();
        let mut lengths = Vec::with_capacity(tiles.len());
        for (tile, cells) in tiles.iter().zip(cells.iter()) {
            let (tile, cells) = (tile.unwrap_or_default(), cells.unwrap_or_default());
            if self.ctx.is_cancelled() {
                return Err(external(JobError::cancelled("the job was cancelled")));
            }
            let pairs = self.functions.map(tile, cells).map_err(|e| external(self.on_tile(e, tile)))?;
            lengths.push(
                decode_pairs(&pairs, &mut keys, &mut values)
                    .map_err(|m| external(self.on_tile(JobError::abi(m), tile)))?,
            );
            let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
            self.ctx.set_progress(done as f64 / self.total as f64);
        }
        let pairs = StructArray::try_new(
            pair_fields(),
            vec![Arc::new(keys.finish()) as ArrayRef, Arc::new(values.finish()) as ArrayRef],
            None,
        )?;
        let list = ListArray::try_new(pair_item(), OffsetBuffer::<i32>::from_lengths(lengths), Arc::new(pairs), None)?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

impl MapUdf {
    /// Names the dataset and tile a map failure happened on (the index is in the tile's header).
    fn on_tile(&self, e: JobError, tile: &[u8]) -> JobError {
        let word = |i: usize| word_at(tile, 4 * i).unwrap_or(0);
        let index = [word(5), word(6), word(7)];
        JobError {
            ename: e.ename,
            message: format!("map failed on tile {index:?} of dataset '{}': {}", self.dataset, e.message),
        }
    }
}

/// Appends the pairs of one map output to the builders; returns how many there were.
fn decode_pairs(bytes: &[u8], keys: &mut BinaryBuilder, values: &mut BinaryBuilder) -> Result<usize, String> {
    let bad = || format!("map output of {} bytes is not a list of (key, value) pairs", bytes.len());
    let mut reader = Reader::new(bytes);
    let n = reader.word().ok_or_else(bad)? as usize;
    for _ in 0..n {
        keys.append_value(reader.field().ok_or_else(bad)?);
        values.append_value(reader.field().ok_or_else(bad)?);
    }
    Ok(n)
}

/// The reduce: merges a key's values, in any grouping.
pub(super) struct ReduceUdaf {
    /// `tile_reduce_<module hash and function places>`: its identity.
    name: String,
    signature: Signature,
    calls: Arc<Folds>,
}

impl std::fmt::Debug for ReduceUdaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for ReduceUdaf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ReduceUdaf {}

impl Hash for ReduceUdaf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ReduceUdaf {
    pub(super) fn identity(&self) -> String {
        self.calls.functions.identity()
    }
}

impl AggregateUDFImpl for ReduceUdaf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneState::new(self.calls.clone())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "value"), DataType::Binary, true))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    /// Every key's value in one buffer, and one fold call per batch for all the keys it touches
    /// (a per-pixel map has tens of thousands of keys per tile).
    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(GroupStates::new(self.calls.clone())))
    }
}

/// The reduce's steps: a value is its own state, so update and merge both fold values into the
/// keys' values, and finishing is handing the values over.
struct Folds {
    functions: Arc<dyn TileFunctions>,
}

impl StateCalls for Folds {
    fn name(&self) -> &str {
        "reduce"
    }

    fn update(
        &self,
        states: &[Option<&[u8]>],
        columns: &[ArrayRef],
        _rows: usize,
        pick: &[u32],
        groups: Option<&[u32]>,
    ) -> Result<NewStates> {
        let values = columns[0].as_binary::<i32>();
        let group = |i: usize| groups.map_or(0, |groups| groups[i]);
        self.merge(states, pick.iter().enumerate().map(|(i, &row)| (group(i), values.value(row as usize))))
    }

    fn merge<'a>(&self, states: &[Option<&[u8]>], others: impl Iterator<Item = (u32, &'a [u8])>) -> Result<NewStates> {
        merge_in_calls(states, others, |input| {
            let output = self.functions.fold(&input).map_err(external)?;
            read_states(output, states.len())
                .map_err(|why| external(JobError::abi(format!("reduce: its output {why}"))))
        })
    }

    fn finish(&self, states: &[Option<&[u8]>]) -> Result<ArrayRef> {
        Ok(Arc::new(states.iter().copied().collect::<BinaryArray>()))
    }
}
