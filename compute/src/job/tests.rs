//! A per-pixel job run natively (the prelude's code, as a sandbox worker runs it in wasm) over the
//! demo dataset: the batched reduce and rows and the one-at-a-time ones give the rows a direct pass
//! over the tiles gives, the batched ones in far fewer calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use prelude::{Stats, Tile, Time, Value, job_fold_bytes, job_rows_bytes, value_field_encode};

use super::*;

type Key = (f32, f32);

/// The time-average map's functions: per valid cell, `((lat, lon), Stats)`; reduce merges.
/// Batched, they fold and write rows for many keys per call, as the prelude's exports do;
/// otherwise one reduce per value and one row per key.
struct PerPixel {
    batched: bool,
    reduces: AtomicUsize,
    folds: AtomicUsize,
    row_calls: AtomicUsize,
    rows_calls: AtomicUsize,
}

impl PerPixel {
    fn new(batched: bool) -> Arc<Self> {
        let zero = || AtomicUsize::new(0);
        Arc::new(Self { batched, reduces: zero(), folds: zero(), row_calls: zero(), rows_calls: zero() })
    }
}

impl TileFunctions for PerPixel {
    fn map(&self, tile: &[u8], values: &[u8]) -> Result<Vec<u8>, JobError> {
        let tile = Tile::from_parts(tile, values);
        let pairs: Vec<_> = (0..tile.times.len()).flat_map(|t| tile.pixel_stats(t)).collect();
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in &pairs {
            value_field_encode(k, &mut out);
            value_field_encode(v, &mut out);
        }
        Ok(out)
    }

    fn reduce(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, JobError> {
        self.reduces.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        Stats::decode(a).merge(Stats::decode(b)).encode(&mut out);
        Ok(out)
    }

    fn fold(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        self.folds.fetch_add(1, Ordering::Relaxed);
        if self.batched {
            Ok(job_fold_bytes::<Stats>(Stats::merge, input))
        } else {
            fold_pairwise(input, |a, b| self.reduce(a, b))
        }
    }

    fn row(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, JobError> {
        self.row_calls.fetch_add(1, Ordering::Relaxed);
        let mut input = 1u32.to_le_bytes().to_vec();
        for field in [key, value] {
            input.extend_from_slice(&(field.len() as u32).to_le_bytes());
            input.extend_from_slice(field);
        }
        Ok(job_rows_bytes::<Key, Stats>(&input)[4..].to_vec())
    }

    fn rows(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        self.rows_calls.fetch_add(1, Ordering::Relaxed);
        if self.batched {
            Ok(job_rows_bytes::<Key, Stats>(input))
        } else {
            rows_one_by_one(input, |k, v| self.row(k, v))
        }
    }

    fn identity(&self) -> String {
        format!("per_pixel_{}", self.batched)
    }
}

/// `(lat, lon) -> (count, sum)` from a job's rows (`{"key": [lat, lon], "cnt", "mean", ...}`).
fn pixels(json: &[u8]) -> BTreeMap<(i64, i64), (u64, f64)> {
    let rows: Vec<serde_json::Value> = serde_json::from_slice(json).unwrap();
    let pixel = |row: &serde_json::Value| {
        let (lat, lon) = (row["key"][0].as_f64().unwrap(), row["key"][1].as_f64().unwrap());
        let (n, mean) = (row["cnt"].as_u64().unwrap(), row["mean"].as_f64().unwrap());
        (((lat * 100.0) as i64, (lon * 100.0) as i64), (n, mean * n as f64))
    };
    rows.iter().map(pixel).collect()
}

/// West, south, east, north of the jobs below.
const BOX: (f64, f64, f64, f64) = (-150.0, 40.0, -130.0, 50.0);

fn box_spec() -> JobSpec {
    let (west, south, east, north) = BOX;
    JobSpec {
        dataset: "sst".into(),
        variable: None,
        selection: Selection { bbox: Some([west, south, east, north]), time: None },
    }
}

/// A data directory of its own with the demo dataset, its catalog, and jobs on 2 workers.
fn demo(name: &str) -> (std::path::PathBuf, Arc<Catalog>, Jobs) {
    let dir = std::env::temp_dir().join(format!("tilegate-compute-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = Arc::new(Catalog::open(&dir, true, 2).unwrap());
    let jobs = Jobs::new(catalog.clone(), 2, 64 << 20).unwrap();
    (dir, catalog, jobs)
}

#[test]
fn batched_and_pairwise_reduces_match_a_direct_pass() {
    let (dir, catalog, jobs) = demo("per-pixel");
    let (west, south, east, north) = BOX;
    let spec = box_spec();
    let selection = spec.selection;

    // Directly: every valid cell of the selected tiles inside the box, inclusive.
    let dataset = catalog.get("sst").unwrap();
    let variable = dataset.variable_or_first(None);
    let mut want = BTreeMap::new();
    let tiles = dataset.select(&variable, &selection).unwrap();
    for tile in &tiles {
        let data = dataset.read_tile(&variable, tile).unwrap();
        let (nlat, nlon) = (data.lats.len(), data.lons.len());
        for (i, &v) in data.values.iter().enumerate() {
            let (lat, lon) = (data.lats[i / nlon % nlat], data.lons[i % nlon]);
            let inside = (south..=north).contains(&f64::from(lat)) && (west..=east).contains(&f64::from(lon));
            if inside && !v.is_nan() {
                let e = want.entry(((lat * 100.0) as i64, (lon * 100.0) as i64)).or_insert((0u64, 0.0f64));
                *e = (e.0 + 1, e.1 + f64::from(v));
            }
        }
    }
    assert!(want.len() > 100, "{} pixels", want.len());

    for batched in [true, false] {
        let functions = PerPixel::new(batched);
        let rows = jobs.run(&spec, functions.clone(), &RunContext::default()).unwrap();
        let got = pixels(&rows);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "batched: {batched}");
        for (pixel, &(n, sum)) in &want {
            let (got_n, got_sum) = got[pixel];
            assert_eq!(got_n, n, "{pixel:?}");
            assert!((got_sum - sum).abs() <= 1e-9 * sum.abs(), "{pixel:?}: {got_sum} vs {sum}");
        }
        let (folds, reduces) = (functions.folds.load(Ordering::Relaxed), functions.reduces.load(Ordering::Relaxed));
        let (row_calls, rows_calls) =
            (functions.row_calls.load(Ordering::Relaxed), functions.rows_calls.load(Ordering::Relaxed));
        let values: u64 = want.values().map(|v| v.0).sum();
        if batched {
            // A call per batch of keys (a tile's pairs, a partition's states), not per value.
            assert!(reduces == 0 && folds <= tiles.len() + 8, "{folds} folds for {} tiles", tiles.len());
            // A call per output batch of keys.
            assert!(row_calls == 0 && rows_calls <= 8, "{rows_calls} rows calls");
        } else {
            // Each merges two live values into one: from one per value down to one per pixel.
            assert_eq!(reduces as u64, values - want.len() as u64);
            assert_eq!(row_calls, want.len());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key per pixel over the whole globe: the rows come from several `rows` calls (which the
/// workers take in turn), every valid pixel once, sorted by `[lat, lon]` as numbers.
#[test]
fn a_globe_of_keys_comes_back_from_several_rows_calls_complete_and_sorted() {
    let (dir, catalog, jobs) = demo("globe-rows");
    let dataset = catalog.get("sst").unwrap();
    let variable = dataset.variable_or_first(None);
    let first = dataset.select(&variable, &Selection::default()).unwrap().iter().map(|t| t.time.0).min().unwrap();
    let selection = Selection { bbox: None, time: Some((first, first + 86_400)) };
    let mut want = std::collections::BTreeSet::new();
    for tile in dataset.select(&variable, &selection).unwrap() {
        let data = dataset.read_tile(&variable, &tile).unwrap();
        let (nlat, nlon) = (data.lats.len(), data.lons.len());
        for (i, &v) in data.values.iter().enumerate() {
            let time = data.times[i / (nlat * nlon)];
            if !v.is_nan() && (first..=first + 86_400).contains(&time) {
                want.insert((data.lats[i / nlon % nlat].to_bits(), data.lons[i % nlon].to_bits()));
            }
        }
    }
    let functions = PerPixel::new(true);
    let spec = JobSpec { dataset: "sst".into(), variable: None, selection };
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&jobs.run(&spec, functions.clone(), &RunContext::default()).unwrap()).unwrap();
    let keys: Vec<(f64, f64)> =
        rows.iter().map(|r| (r["key"][0].as_f64().unwrap(), r["key"][1].as_f64().unwrap())).collect();
    assert_eq!(keys.len(), want.len());
    assert!(keys.windows(2).all(|w| w[0].0 < w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1)), "not sorted");
    let calls = functions.rows_calls.load(Ordering::Relaxed);
    assert!(calls >= 2, "{} keys in {calls} rows call(s)", keys.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_batches_are_abi_errors() {
    let fields = [2u32.to_le_bytes().to_vec(), vec![1, 0, 0, 0, 7, 0, 0, 0, 0]].concat();
    let two: Option<Vec<&[u8]>> = Some(vec![&[7], &[]]);
    assert_eq!(read_fields(&fields, true, 1), two);
    assert_eq!(read_fields(&fields[4..], false, 2), two);
    // Two pairs promised, one there; a field cut short.
    assert_eq!(read_fields(&fields, true, 2), None);
    assert_eq!(read_fields(&fields[4..fields.len() - 1], false, 1), None);
    let never = |_: &[u8], _: &[u8]| -> Result<Vec<u8>, JobError> { unreachable!() };
    for bad in [&fields[..5], &[1, 0, 0, 0, 1, 0, 0, 0, 7][..]] {
        assert_eq!(rows_one_by_one(bad, never).unwrap_err().ename, "AbiError");
        assert_eq!(fold_pairwise(bad, never).unwrap_err().ename, "AbiError");
    }
}

/// The per-pixel functions with a fold or rows call whose output is not what was asked.
struct Broken {
    inner: Arc<PerPixel>,
    fold: bool,
}

impl TileFunctions for Broken {
    fn map(&self, tile: &[u8], values: &[u8]) -> Result<Vec<u8>, JobError> {
        self.inner.map(tile, values)
    }

    fn reduce(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, JobError> {
        self.inner.reduce(a, b)
    }

    fn fold(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        let out = self.inner.fold(input)?;
        // One state fewer than the groups sent.
        Ok(if self.fold { [&1u32.to_le_bytes()[..], &out[4..]].concat() } else { out })
    }

    fn row(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, JobError> {
        self.inner.row(key, value)
    }

    fn rows(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        let out = self.inner.rows(input)?;
        // A row cut short.
        Ok(if self.fold { out } else { out[..out.len() - 1].to_vec() })
    }

    fn identity(&self) -> String {
        format!("broken_{}", self.fold)
    }
}

#[test]
fn malformed_fold_and_rows_outputs_fail_the_job_as_abi_errors() {
    let (dir, _, jobs) = demo("broken");
    for (fold, says) in [(true, "reduce: its output has 1 states for"), (false, "the rows of")] {
        let functions = Arc::new(Broken { inner: PerPixel::new(true), fold });
        let err = jobs.run(&box_spec(), functions, &RunContext::default()).unwrap_err();
        assert!(err.ename == "AbiError" && err.message.contains(says), "{err:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The job's physical plan through protobuf (datafusion-proto with [`JobCodec`], as Ballista ships
/// plans), decoded in a fresh context that has no UDF registered: it runs and gives the rows the
/// job gives. A codec that does not know the module, or the dataset, refuses it by name.
#[test]
fn a_job_plan_through_protobuf_gives_the_same_rows() {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec;

    let (dir, catalog, jobs) = demo("codec");
    let spec = box_spec();
    let functions = PerPixel::new(true);
    let direct = jobs.run(&spec, functions.clone(), &RunContext::default()).unwrap();

    let known = functions.clone();
    let resolve: Arc<ResolveFunctions> =
        Arc::new(move |id: &str| (id == known.identity()).then(|| known.clone() as Arc<dyn TileFunctions>));
    let codec = |catalog: &Arc<Catalog>, resolve: Arc<ResolveFunctions>| {
        Arc::new(JobCodec::new(catalog.clone(), Arc::new(TileCache::new(0)), RunContext::default(), resolve))
    };
    let ours = codec(&catalog, resolve.clone());
    let bytes = jobs.encode_plan(&spec, functions.clone(), ours.clone()).unwrap();
    assert!(bytes.windows(8).any(|w| w == b"\xfftilegt\x01"), "the scan went through our codec");

    // Decoded in a fresh context, the plan is the job's plan...
    let job = jobs.job(&spec, functions.clone(), &RunContext::default()).unwrap();
    let show = |plan: &dyn datafusion::physical_plan::ExecutionPlan| displayable(plan).indent(true).to_string();
    let shown = jobs
        .block_on(
            async move { job.physical_plan().await.map(|(plan, _)| show(plan.as_ref())).map_err(plan::job_error) },
        )
        .unwrap();
    assert!(shown.contains("DataSourceExec") && shown.contains("tile_map_per_pixel_true"), "{shown}");
    let fresh = SessionContext::new();
    let plan = physical_plan_from_bytes_with_extension_codec(&bytes, &fresh.task_ctx(), ours.as_ref()).unwrap();
    assert_eq!(show(plan.as_ref()), shown, "the same plan");
    let mut gathers = Vec::new();
    plan.apply(|node| {
        if let Some(filter) = node.downcast_ref::<datafusion::physical_plan::filter::FilterExec>() {
            gathers.push(filter.batch_size());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .unwrap();
    assert_eq!(gathers, [plan::TILES_PER_BATCH], "map outputs are gathered as bounded there as here");
    // ...and gives the job's rows, up to the last bits of sums merged in another order (as two
    // direct runs are).
    let decoded = jobs.run_encoded(&bytes, functions.clone(), ours).unwrap();
    let (got, want) = (pixels(&decoded), pixels(&direct));
    assert!(want.len() > 100, "{} pixels", want.len());
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (pixel, &(n, sum)) in &want {
        assert_eq!(got[pixel].0, n, "{pixel:?}");
        assert!((got[pixel].1 - sum).abs() <= 1e-9 * sum.abs(), "{pixel:?}: {} vs {sum}", got[pixel].1);
    }

    let stranger = codec(&catalog, Arc::new(|_: &str| None));
    let e = jobs.run_encoded(&bytes, functions.clone(), stranger).unwrap_err().message;
    assert!(e.contains("per_pixel_true") && e.contains("not known here"), "{e}");
    // A decoded plan names tiles by chunk index only: one outside the grid is an error, not a read.
    let sst = catalog.get("sst").unwrap();
    let e = sst.read_chunk(&sst.variable_or_first(None), [9999, 0, 0]).unwrap_err().to_string();
    assert!(e.contains("outside the grid") && e.contains("[9999, 0, 0]"), "{e}");
    let elsewhere = scratch_catalog("codec-elsewhere");
    let e = jobs.run_encoded(&bytes, functions, codec(&elsewhere.1, resolve)).unwrap_err().message;
    assert!(e.contains("sst"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&elsewhere.0);
}

/// NEXUS's time series map (a key per tile and day), counting the batched reduce's calls.
#[derive(Default)]
struct PerDay {
    folds: AtomicUsize,
    maps: AtomicUsize,
}

impl TileFunctions for PerDay {
    fn map(&self, tile: &[u8], values: &[u8]) -> Result<Vec<u8>, JobError> {
        self.maps.fetch_add(1, Ordering::Relaxed);
        let pairs = Tile::from_parts(tile, values).stats_by_time();
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in &pairs {
            value_field_encode(k, &mut out);
            value_field_encode(v, &mut out);
        }
        Ok(out)
    }
    fn reduce(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, JobError> {
        let mut out = Vec::new();
        Stats::decode(a).merge(Stats::decode(b)).encode(&mut out);
        Ok(out)
    }
    fn fold(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        self.folds.fetch_add(1, Ordering::Relaxed);
        Ok(job_fold_bytes::<Stats>(Stats::merge, input))
    }
    fn row(&self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, JobError> {
        Err(JobError::job("rows come batched"))
    }
    fn rows(&self, input: &[u8]) -> Result<Vec<u8>, JobError> {
        Ok(job_rows_bytes::<Time, Stats>(input))
    }
    fn identity(&self) -> String {
        "per_day".into()
    }
}

#[test]
fn map_outputs_reach_the_reduce_gathered_over_tiles() {
    // One pair per tile: were each tile's output its own batch, the partial aggregate would fold
    // once per tile; gathered, once per `TILES_PER_BATCH` tiles of each partition, no fewer (the
    // bound keeps a per-pixel map's gathered pairs small).
    let (dir, _catalog, jobs) = demo("gathered");
    let functions = Arc::new(PerDay::default());
    let spec = JobSpec { dataset: "sst".into(), variable: None, selection: Selection::default() };
    let rows = jobs.run(&spec, functions.clone(), &RunContext::default()).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&rows).unwrap();
    let (tiles, folds) = (functions.maps.load(Ordering::Relaxed), functions.folds.load(Ordering::Relaxed));
    assert!(rows.len() >= 365 && tiles >= 4 * rows.len(), "{} days from {tiles} tiles", rows.len());
    assert!(rows.iter().all(|r| r["cnt"].as_u64().unwrap() > 0), "every day has cells");
    // At most: a part batch more per partition (2), and the final stage's merges (2 x 2).
    let (least, most) = (tiles / plan::TILES_PER_BATCH, tiles.div_ceil(plan::TILES_PER_BATCH) + 6);
    assert!((least..=most).contains(&folds), "{folds} fold calls for {tiles} tiles ({least} to {most})");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An empty data directory's catalog (no demo dataset).
fn scratch_catalog(name: &str) -> (std::path::PathBuf, Arc<Catalog>) {
    let dir = std::env::temp_dir().join(format!("tilegate-compute-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (dir.clone(), Arc::new(Catalog::open(&dir, false, 1).unwrap()))
}

/// The scan in its SQL layout (a row per valid cell) through protobuf reads the same cells.
#[test]
fn a_cells_scan_through_protobuf_reads_the_same_cells() {
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::Float32Type;
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };

    let (dir, catalog, jobs) = demo("codec-cells");
    let dataset = catalog.get("sst").unwrap();
    let variable = dataset.variable_or_first(None);
    let selection = box_spec().selection;
    let tiles = dataset.select(&variable, &selection).unwrap();
    let scan = Arc::new(scan::ScanContext {
        dataset,
        variables: vec![variable],
        selection,
        cache: jobs.cache().scan(),
        ctx: RunContext::default(),
        layout: scan::Layout::Cells,
    });
    let plan = scan::plan(scan, &tiles, None, None, 2).unwrap();
    let codec = JobCodec::new(catalog.clone(), jobs.cache().clone(), RunContext::default(), Arc::new(|_: &str| None));
    let bytes = physical_plan_to_bytes_with_extension_codec(plan.clone(), &codec).unwrap();
    let ctx = SessionContext::new().task_ctx();
    let decoded = physical_plan_from_bytes_with_extension_codec(&bytes, &ctx, &codec).unwrap();
    // Rows and the sum of the variable's column: partitions may come back in another order.
    let cells = |plan: Arc<dyn ExecutionPlan>| {
        let ctx = ctx.clone();
        let batches: Vec<RecordBatch> =
            jobs.block_on(async move { collect(plan, ctx).await.map_err(plan::job_error) }).unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let sum: f64 = batches
            .iter()
            .flat_map(|b| b.column(3).as_primitive::<Float32Type>().iter().flatten().map(f64::from).collect::<Vec<_>>())
            .sum();
        (rows, sum)
    };
    let ((rows, sum), (got_rows, got_sum)) = (cells(plan), cells(decoded));
    assert!(rows > 1000, "{rows} cells");
    assert_eq!(got_rows, rows);
    assert!((got_sum - sum).abs() <= 1e-9 * sum.abs(), "{got_sum} vs {sum}");
    let _ = std::fs::remove_dir_all(&dir);
}
