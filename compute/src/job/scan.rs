//! The tile scan: a `FileSource` whose "files" are the selected tiles (one `PartitionedFile` each,
//! its path naming the chunk). For a job it produces one row per tile with its masked bytes
//! ([`Layout::Encoded`]); for SQL, one row per valid cell inside the selection ([`Layout::Cells`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, Float32Array, Float64Array, RecordBatch, RecordBatchOptions, TimestampSecondArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileOpenFuture, FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::object_store::ObjectStore;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{PhysicalExpr, apply_expression_roots};
use futures::{FutureExt, StreamExt};

use super::{CacheScan, JobError};
use crate::dataset::{Dataset, Selection, Tile, TileData};
use tilegate_context::RunContext;

/// The encoded scan's columns: the tile laid out for the guest in two parts, `tile` (header,
/// times, latitudes, longitudes: `prelude::encode_tile_head`) and `values` (its `f32` values, the
/// decoded or cached buffer itself when the selection takes the whole tile).
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("tile", DataType::Binary, false),
        Field::new("values", DataType::Binary, false),
    ]))
}

/// The cells scan's columns: `time` (UTC), `lat`, `lon`, then one per variable (null where that
/// variable is missing in a cell another variable has).
pub(crate) fn cells_schema(variables: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
    ];
    fields.extend(variables.iter().map(|v| Field::new(v, DataType::Float32, true)));
    Arc::new(Schema::new(fields))
}

/// What a tile becomes in the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One row per tile, the bytes a guest maps (`schema()`); one variable.
    Encoded,
    /// One row per cell inside the selection where some variable is valid (`cells_schema`).
    Cells,
}

/// What every opener of one scan shares.
pub(crate) struct ScanContext {
    pub(crate) dataset: Arc<Dataset>,
    /// The variables read; `Encoded` reads the first.
    pub(crate) variables: Vec<String>,
    pub(crate) selection: Selection,
    pub(crate) cache: CacheScan,
    pub(crate) ctx: RunContext,
    pub(crate) layout: Layout,
}

impl ScanContext {
    fn schema(&self) -> SchemaRef {
        match self.layout {
            Layout::Encoded => schema(),
            Layout::Cells => cells_schema(&self.variables),
        }
    }
}

impl std::fmt::Debug for ScanContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tiles of {}/{}", self.dataset.name(), self.variables.join(","))
    }
}

/// The stock file scan over `tiles` (one partitioned file each) with `scan`'s layout, the files
/// dealt round-robin into `partitions` groups at once (so the planner need not regroup, and copy,
/// thousands of files; see [`TileSource::repartitioned`] for plans that ask for more).
pub(crate) fn plan(
    scan: Arc<ScanContext>,
    tiles: &[Tile],
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    partitions: usize,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    let source = Arc::new(TileSource::new(scan));
    let n = partitions.min(tiles.len()).max(1);
    let mut groups: Vec<Vec<PartitionedFile>> = (0..n).map(|_| Vec::with_capacity(tiles.len() / n + 1)).collect();
    for (i, tile) in tiles.iter().enumerate() {
        groups[i % n].push(file(tile));
    }
    let config = datafusion::datasource::physical_plan::FileScanConfigBuilder::new(
        datafusion::datasource::object_store::ObjectStoreUrl::local_filesystem(),
        source,
    )
    .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
    .with_projection_indices(projection.cloned())?
    .with_limit(limit)
    .build();
    Ok(datafusion::datasource::source::DataSourceExec::from_data_source(config))
}

/// One `PartitionedFile` per tile, its path `tiles/<t>/<y>/<x>` naming the chunk index: the path
/// is all a plan decoded elsewhere has of it. The size is nominal: tiles are never split into
/// byte ranges.
pub(crate) fn file(tile: &Tile) -> PartitionedFile {
    let [t, y, x] = tile.index;
    PartitionedFile::new(format!("tiles/{t}/{y}/{x}"), 1)
}

/// The chunk index a [`file`] names.
fn index_of(file: &PartitionedFile) -> Result<[u64; 3]> {
    let path = file.path().as_ref();
    let bad = || DataFusionError::Internal(format!("'{path}' names no tile"));
    let mut parts = path.strip_prefix("tiles/").ok_or_else(bad)?.split('/').map(str::parse::<u64>);
    let mut next = || parts.next().and_then(Result::ok).ok_or_else(bad);
    let index = [next()?, next()?, next()?];
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(index)
}

#[derive(Clone)]
pub(crate) struct TileSource {
    table_schema: TableSchema,
    projection: SplitProjection,
    metrics: ExecutionPlanMetricsSet,
    scan: Arc<ScanContext>,
}

impl TileSource {
    pub(crate) fn scan(&self) -> &Arc<ScanContext> {
        &self.scan
    }

    pub(crate) fn new(scan: Arc<ScanContext>) -> Self {
        let table_schema = TableSchema::from(scan.schema());
        Self {
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
            scan,
        }
    }
}

impl FileSource for TileSource {
    fn create_file_opener(
        &self,
        _store: Arc<dyn ObjectStore>,
        _config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        // The opener returns the file columns the projection reads; `ProjectionOpener` does the rest.
        let columns = self.projection.file_indices.clone();
        let inner: Arc<dyn FileOpener> = Arc::new(TileOpener { scan: self.scan.clone(), columns });
        ProjectionOpener::try_new(self.projection.clone(), inner, self.table_schema.file_schema())
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, _batch_size: usize) -> Arc<dyn FileSource> {
        // One batch per tile: batch size does not apply.
        Arc::new(self.clone())
    }

    fn try_pushdown_projection(&self, projection: &ProjectionExprs) -> Result<Option<Arc<dyn FileSource>>> {
        let mut source = self.clone();
        let merged = self.projection.source.try_merge(projection)?;
        source.projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(source)))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "zarr_tile"
    }

    /// Spreads whole tiles over the partitions; a tile is never cut into byte ranges.
    fn repartitioned(
        &self,
        target_partitions: usize,
        _repartition_file_min_size: usize,
        output_ordering: Option<LexOrdering>,
        config: &FileScanConfig,
    ) -> Result<Option<FileScanConfig>> {
        if output_ordering.is_some() {
            return Ok(None);
        }
        let files: Vec<PartitionedFile> = config.file_groups.iter().flat_map(|g| g.iter().cloned()).collect();
        let n = target_partitions.min(files.len()).max(1);
        if n <= config.file_groups.len() {
            return Ok(None);
        }
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
        for (i, f) in files.into_iter().enumerate() {
            groups[i % n].push(f);
        }
        let mut config = config.clone();
        config.file_groups = groups.into_iter().map(FileGroup::new).collect();
        Ok(Some(config))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.projection.source.iter(), f)
    }
}

struct TileOpener {
    scan: Arc<ScanContext>,
    columns: Vec<usize>,
}

impl FileOpener for TileOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let tile = index_of(&file)?;
        self.scan.ctx.meter().add_tiles(1);
        let (scan, columns) = (self.scan.clone(), self.columns.clone());
        Ok(async move {
            let batch = match scan.layout {
                Layout::Encoded => {
                    // Both parts become their arrays' buffers as they are: no copy.
                    let (head, values) = read(&scan, tile)?;
                    let one = |bytes: Buffer| -> ArrayRef {
                        Arc::new(BinaryArray::new(OffsetBuffer::from_lengths([bytes.len()]), bytes, None))
                    };
                    RecordBatch::try_new(schema(), vec![one(Buffer::from_vec(head)), one(values)])?.project(&columns)?
                }
                Layout::Cells => read_cells(&scan, tile, &columns)?,
            };
            Ok(futures::stream::iter([Ok(batch)]).boxed())
        }
        .boxed())
    }
}

/// Decodes (or takes from the cache) one variable's tile.
fn load(scan: &ScanContext, variable: &str, tile: [u64; 3]) -> Result<Arc<TileData>> {
    if scan.ctx.is_cancelled() {
        return Err(external(JobError::cancelled("the job was cancelled")));
    }
    let key = (scan.dataset.name(), variable, tile);
    scan.cache
        .get_or_load(key, || scan.dataset.read_chunk(variable, tile))
        .map_err(|e| external(JobError::job(e.to_string())))
}

/// Per axis, which time steps, rows and columns of `data` are inside the selection.
fn masks(scan: &ScanContext, data: &TileData) -> [Vec<bool>; 3] {
    let keep_time: Vec<bool> =
        data.times.iter().map(|&t| scan.selection.time.is_none_or(|(a, b)| (a..=b).contains(&t))).collect();
    let (keep_lat, keep_lon): (Vec<bool>, Vec<bool>) = match scan.selection.bbox {
        Some([w, s, e, n]) => {
            let ranges = scan.dataset.lon_ranges(w, e);
            (
                data.lats.iter().map(|&l| (s..=n).contains(&f64::from(l))).collect(),
                data.lons.iter().map(|&l| ranges.iter().any(|&(a, b)| (a..=b).contains(&f64::from(l)))).collect(),
            )
        }
        None => (vec![true; data.lats.len()], vec![true; data.lons.len()]),
    };
    [keep_time, keep_lat, keep_lon]
}

/// One tile's valid cells inside the selection as rows of the file columns `columns` (indices into
/// `time, lat, lon, variables...`); only those columns are built.
fn read_cells(scan: &ScanContext, tile: [u64; 3], columns: &[usize]) -> Result<RecordBatch> {
    let data: Vec<Arc<TileData>> = scan.variables.iter().map(|v| load(scan, v, tile)).collect::<Result<_>>()?;
    let first = &data[0];
    let [keep_time, keep_lat, keep_lon] = masks(scan, first);
    let (nlat, nlon) = (first.lats.len(), first.lons.len());
    // The cells to emit, as flat indices `[t][y][x]` into the tile.
    let mut cells: Vec<usize> = Vec::new();
    for t in (0..first.times.len()).filter(|&t| keep_time[t]) {
        for y in (0..nlat).filter(|&y| keep_lat[y]) {
            let row = (t * nlat + y) * nlon;
            for i in (0..nlon).filter(|&x| keep_lon[x]).map(|x| row + x) {
                if data.iter().any(|d| d.values.get(i).is_some_and(|v| !v.is_nan())) {
                    cells.push(i);
                }
            }
        }
    }
    let built: Vec<ArrayRef> = columns
        .iter()
        .map(|&c| -> ArrayRef {
            match c {
                0 => Arc::new(TimestampSecondArray::from_iter_values(
                    cells.iter().map(|&i| first.times[i / (nlat * nlon)]),
                )),
                1 => Arc::new(Float64Array::from_iter_values(
                    cells.iter().map(|&i| f64::from(first.lats[i / nlon % nlat])),
                )),
                2 => Arc::new(Float64Array::from_iter_values(cells.iter().map(|&i| f64::from(first.lons[i % nlon])))),
                v => {
                    let values = &data[v - 3].values;
                    Arc::new(Float32Array::from_iter(cells.iter().map(|&i| Some(values[i]).filter(|v| !v.is_nan()))))
                }
            }
        })
        .collect();
    let schema = Arc::new(scan.schema().project(columns)?);
    let options = RecordBatchOptions::new().with_row_count(Some(cells.len()));
    Ok(RecordBatch::try_new_with_options(schema, built, &options)?)
}

/// A tile for the map: its head (header and coordinates) and its values, as they are (no copy)
/// when the selection takes the whole tile, or with the cells outside it set to NaN.
fn read(scan: &ScanContext, tile: [u64; 3]) -> Result<(Vec<u8>, Buffer)> {
    let data = load(scan, &scan.variables[0], tile)?;
    let [keep_time, keep_lat, keep_lon] = masks(scan, &data);
    let all = keep_time.iter().chain(&keep_lat).chain(&keep_lon).all(|&k| k);
    let mut head = Vec::new();
    prelude::encode_tile_head(&mut head, tile.map(|i| i as u32), &data.times, &data.lats, &data.lons);
    let values = if all {
        data.values.inner().clone()
    } else {
        let keep = [&keep_time[..], &keep_lat, &keep_lon];
        Buffer::from_vec(prelude::select_cells(&data.values, data.lats.len(), data.lons.len(), keep))
    };
    Ok((head, values))
}

pub(crate) fn external(e: JobError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_file_names_its_chunk_and_nothing_else_passes() {
        let tile =
            Tile { index: [7, 0, 12], time: (0, 0), lat: (0.0, 1.0), lon: (0.0, 1.0), stats: Default::default() };
        assert_eq!(index_of(&file(&tile)).unwrap(), [7, 0, 12]);
        for bad in ["tiles/1/2", "tiles/1/2/3/4", "chunks/1/2/3", "tiles/1/-2/3", "tiles/a/2/3", "tiles//2/3"] {
            let e = index_of(&PartitionedFile::new(bad, 1)).unwrap_err().to_string();
            assert!(e.contains("names no tile"), "{bad}: {e}");
        }
    }
}
