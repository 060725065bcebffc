//! Shared gridded datasets: Zarr stores of `(time, lat, lon)` variables, read exactly as xarray
//! writes them, each chunk a **tile** with summary statistics in a persisted tile index.
//!
//! - [`Catalog`]: the registered datasets (every `<data-dir>/datasets/<name>.zarr`, plus run-time registrations).
//! - [`Dataset`]: one store, its coordinates and variables; [`Dataset::select`] prunes tiles through the
//!   index, [`Dataset::read_tile`] decodes one.
//! - `cf`: CF time units, fill values, scale/offset;
//!   [`Stats`] is the prelude's (exact merge); `zarr`: metadata and chunk decoding; `index`: building and persisting the tile index;
//!   `demo`: the embedded demo dataset.

pub mod cf;
mod demo;
mod index;
mod zarr;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use datafusion::arrow::buffer::ScalarBuffer;
use tilegate_api::{Bbox, DatasetInfo, TileInfo, TimeRange, VariableInfo};
use zarrs::filesystem::FilesystemStore;

/// Tile statistics: the guest prelude's type, so host and guest merge them identically.
pub use prelude::Stats;
use zarr::ZArray;

/// Why a dataset could not be opened, found or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No dataset or variable of that name.
    #[error("{0}")]
    NotFound(String),
    /// A registration or selection request that cannot be honoured.
    #[error("{0}")]
    InvalidRequest(String),
    /// The store's metadata is missing or malformed.
    #[error("invalid Zarr metadata: {0}")]
    InvalidMetadata(String),
    /// A chunk could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The file system failed.
    #[error("I/O error: {0}")]
    Io(String),
}

/// Names xarray and CF use for the three dimensions.
const TIME_DIMS: &[&str] = &["time", "t"];
const LAT_DIMS: &[&str] = &["lat", "latitude", "y"];
const LON_DIMS: &[&str] = &["lon", "longitude", "x"];

/// A rectangle in degrees and a time interval in epoch seconds, both inclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Selection {
    /// West, south, east, north; `None` = the whole grid.
    pub bbox: Option<[f64; 4]>,
    /// First and last time, epoch seconds; `None` = all times.
    pub time: Option<(i64, i64)>,
}

/// One tile (chunk) of a variable, as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tile {
    /// Chunk index `[time, lat, lon]`.
    pub index: [u64; 3],
    /// First and last time, epoch seconds.
    pub time: (i64, i64),
    /// Smallest and largest cell-centre latitude.
    pub lat: (f64, f64),
    /// Smallest and largest cell-centre longitude (the dataset's convention).
    pub lon: (f64, f64),
    /// Statistics of the tile's valid cells.
    pub stats: Stats,
}

/// A decoded tile: coordinates and values (`[time][lat][lon]`, C order; NaN = missing).
#[derive(Debug, Clone, PartialEq)]
pub struct TileData {
    /// Epoch seconds of each time step.
    pub times: Vec<i64>,
    /// Cell-centre latitudes.
    pub lats: Vec<f32>,
    /// Cell-centre longitudes.
    pub lons: Vec<f32>,
    /// Values; `times.len() * lats.len() * lons.len()` of them. An Arrow buffer, so a job's scan
    /// hands them on (to the map, from the tile cache) without a copy.
    pub values: ScalarBuffer<f32>,
}

/// A gridded variable and its tile index.
pub struct Variable {
    z: ZArray,
    decoder: cf::Decoder,
    tiles: Vec<Tile>,
}

/// One registered store.
pub struct Dataset {
    name: String,
    path: PathBuf,
    format: u8,
    times: Vec<i64>,
    lats: Vec<f64>,
    lons: Vec<f64>,
    /// Longitudes run 0..360 rather than -180..180.
    lon_360: bool,
    variables: BTreeMap<String, Variable>,
}

impl Dataset {
    /// Opens a store and loads its tile index from `index_dir`, building (and saving) it when
    /// missing or when the store changed since it was built.
    ///
    /// # Errors
    /// [`Error::InvalidMetadata`] when the store is not a Zarr store with `(time, lat, lon)`
    /// variables as xarray writes them; [`Error::Corrupt`] when a chunk cannot be decoded.
    pub fn open(name: &str, path: &Path, index_dir: &Path, workers: usize) -> Result<Self, Error> {
        let format = zarr::format_of(path).ok_or_else(|| {
            Error::InvalidMetadata(format!(
                "{} is not a Zarr store (no zarr.json, .zgroup or .zmetadata)",
                path.display()
            ))
        })?;
        let store = Arc::new(FilesystemStore::new(path).map_err(|e| Error::Io(e.to_string()))?);
        let mut gridded = Vec::new();
        for array in zarr::list_arrays(path, format)? {
            let z = zarr::open_array(&store, path, format, &array)?;
            let is = |i: usize, names: &[&str]| names.contains(&z.dims[i].to_ascii_lowercase().as_str());
            if z.dims.len() == 3 && is(0, TIME_DIMS) && is(1, LAT_DIMS) && is(2, LON_DIMS) {
                gridded.push(z);
            }
        }
        let first = gridded
            .first()
            .ok_or_else(|| Error::InvalidMetadata(format!("{} has no (time, lat, lon) variable", path.display())))?;
        let dims = first.dims.clone();
        gridded.retain(|z| {
            let same = z.dims == dims;
            if !same {
                tracing::warn!(dataset = name, variable = %z.name, "skipped: its dimensions differ from {dims:?}");
            }
            same
        });
        let coordinate = |dim: &str| -> Result<ZArray, Error> {
            zarr::open_array(&store, path, format, dim)
                .map_err(|e| Error::InvalidMetadata(format!("coordinate '{dim}' cannot be read: {e}")))
        };
        let time = coordinate(&dims[0])?;
        let units = time.attributes.get("units").and_then(|v| v.as_str()).unwrap_or("seconds since 1970-01-01");
        let calendar = time.attributes.get("calendar").and_then(|v| v.as_str());
        let time_units = cf::TimeUnits::parse(units, calendar).map_err(Error::InvalidMetadata)?;
        let times = time.read_all()?.into_iter().map(|t| time_units.to_epoch(t)).collect::<Vec<_>>();
        let lats = coordinate(&dims[1])?.read_all()?;
        let lons = coordinate(&dims[2])?.read_all()?;
        let lon_360 = lons.iter().any(|&l| l > 180.0);

        let mut dataset = Self {
            name: name.to_owned(),
            path: path.to_owned(),
            format,
            times,
            lats,
            lons,
            lon_360,
            variables: BTreeMap::new(),
        };
        for z in gridded {
            if z.shape != [dataset.times.len() as u64, dataset.lats.len() as u64, dataset.lons.len() as u64] {
                return Err(Error::InvalidMetadata(format!(
                    "variable '{}' does not match its coordinates' lengths",
                    z.name
                )));
            }
            let decoder = cf::Decoder::from_attributes(&z.attributes, z.v2_fill)
                .map_err(|e| Error::InvalidMetadata(format!("variable '{}': {e}", z.name)))?;
            dataset.variables.insert(z.name.clone(), Variable { z, decoder, tiles: Vec::new() });
        }
        index::load_or_build(&mut dataset, index_dir, workers)?;
        Ok(dataset)
    }

    /// The dataset's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cell-centre latitudes of the grid.
    pub(crate) fn lats(&self) -> &[f64] {
        &self.lats
    }

    /// Variable names.
    pub fn variable_names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    /// The variable a request names, or the dataset's first when it names none.
    pub fn variable_or_first(&self, name: Option<&str>) -> String {
        name.map_or_else(|| self.variable_names().next().unwrap_or_default().to_owned(), str::to_owned)
    }

    fn variable(&self, name: &str) -> Result<&Variable, Error> {
        self.variables.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.variable_names().collect();
            Error::NotFound(format!("dataset '{}' has no variable '{name}' (it has {})", self.name, known.join(", ")))
        })
    }

    /// The tiles of `variable` that hold valid data inside `selection`, pruned through the index.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown variable, [`Error::InvalidRequest`] for an inverted bbox
    /// or time range, or a bbox entirely off the grid.
    pub fn select(&self, variable: &str, selection: &Selection) -> Result<Vec<Tile>, Error> {
        let v = self.variable(variable)?;
        if let Some((start, end)) = selection.time
            && start > end
        {
            return Err(Error::InvalidRequest(format!(
                "time range is inverted: start {} is after end {}",
                cf::iso(start),
                cf::iso(end)
            )));
        }
        let lon_ranges = match selection.bbox {
            Some([w, s, e, n]) => {
                if s > n || !(-90.0..=90.0).contains(&s) || !(-90.0..=90.0).contains(&n) {
                    return Err(Error::InvalidRequest(format!(
                        "bbox south {s} and north {n} must lie in -90..90 with south <= north"
                    )));
                }
                if w > e {
                    return Err(Error::InvalidRequest(format!(
                        "bbox west {w} is east of east {e}; give W,S,E,N with W <= E (e.g. 170,-10,190,10 across the dateline)"
                    )));
                }
                let ranges = self.lon_ranges(w, e);
                let span =
                    |v: &[f64]| v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
                let ((lat_lo, lat_hi), (lon_lo, lon_hi)) = (span(&self.lats), span(&self.lons));
                let lon_hit = ranges.iter().any(|&(a, b)| b >= lon_lo && a <= lon_hi);
                if n < lat_lo || s > lat_hi || !lon_hit {
                    return Err(Error::InvalidRequest(format!(
                        "bbox {w},{s},{e},{n} lies outside the grid of dataset '{}' (lat {lat_lo}..{lat_hi}, lon {lon_lo}..{lon_hi})",
                        self.name
                    )));
                }
                Some(ranges)
            }
            None => None,
        };
        if let Some((start, end)) = selection.time
            && !self.times.iter().any(|t| (start..=end).contains(t))
        {
            let coverage = time_range(&self.times);
            return Err(Error::InvalidRequest(format!(
                "time range {} .. {} selects no time step of dataset '{}' (it covers {} .. {})",
                cf::iso(start.max(-1 << 40)),
                cf::iso(end.min(1 << 40)),
                self.name,
                coverage.iso_start,
                coverage.iso_stop
            )));
        }
        let inside = |t: &Tile| {
            let time_ok = selection.time.is_none_or(|(start, end)| t.time.1 >= start && t.time.0 <= end);
            let space_ok = match (&lon_ranges, selection.bbox) {
                (Some(ranges), Some([_, s, _, n])) => {
                    t.lat.1 >= s && t.lat.0 <= n && ranges.iter().any(|&(a, b)| t.lon.1 >= a && t.lon.0 <= b)
                }
                _ => true,
            };
            time_ok && space_ok
        };
        Ok(v.tiles.iter().filter(|t| inside(t)).copied().collect())
    }

    /// Longitude intervals, in the dataset's convention, covering `west..=east` (degrees east).
    pub fn lon_ranges(&self, west: f64, east: f64) -> Vec<(f64, f64)> {
        if east - west >= 360.0 {
            return vec![(f64::NEG_INFINITY, f64::INFINITY)];
        }
        let low = if self.lon_360 { 0.0 } else { -180.0 };
        let wrap = |x: f64| low + (x - low).rem_euclid(360.0);
        let (w, e) = (wrap(west), wrap(east));
        if w <= e { vec![(w, e)] } else { vec![(w, low + 360.0), (low, e)] }
    }

    /// Decodes one tile.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the dataset and tile when its chunk cannot be decoded.
    pub fn read_tile(&self, variable: &str, tile: &Tile) -> Result<TileData, Error> {
        self.read_chunk(variable, tile.index)
    }

    /// Decodes the tile at chunk index `at` (all fill when its chunk was never written).
    ///
    /// # Errors
    /// As [`Dataset::read_tile`]; also an index outside the grid.
    pub fn read_chunk(&self, variable: &str, at: [u64; 3]) -> Result<TileData, Error> {
        let v = self.variable(variable)?;
        if at.iter().zip(&v.z.shape).zip(&v.z.chunks).any(|((&i, &n), &c)| i >= n.div_ceil(c)) {
            return Err(self.tile_error(variable, at, Error::Corrupt("outside the grid".into())));
        }
        let [t, y, x] = index::ranges(&v.z, at);
        let decoder = v.decoder;
        let raw = v.z.read_chunk(&at, &decoder).map_err(|e| self.tile_error(variable, at, e))?;
        let (cy, cx) = (v.z.chunks[1] as usize, v.z.chunks[2] as usize);
        let cells = t.len() * y.len() * x.len();
        let mut values = Vec::new();
        match raw {
            None => values.resize(cells, f32::NAN),
            // A chunk inside the grid has no padding: its values are the tile's as they are.
            Some(raw) if raw.len() == cells => values = raw,
            Some(raw) => {
                values.reserve_exact(cells);
                for ti in 0..t.len() {
                    for yi in 0..y.len() {
                        let row = (ti * cy + yi) * cx;
                        values.extend_from_slice(&raw[row..row + x.len()]);
                    }
                }
            }
        }
        Ok(TileData {
            times: self.times[t].to_vec(),
            lats: self.lats[y].iter().map(|&l| l as f32).collect(),
            lons: self.lons[x].iter().map(|&l| l as f32).collect(),
            values: values.into(),
        })
    }

    fn tile_error(&self, variable: &str, at: [u64; 3], e: Error) -> Error {
        let detail = e.to_string();
        Error::Corrupt(format!("dataset '{}', variable '{variable}', tile {at:?}: {detail}", self.name))
    }

    /// The REST description.
    pub fn info(&self) -> DatasetInfo {
        let bbox = |lats: &[f64], lons: &[f64]| Bbox {
            west: lons.iter().copied().fold(f64::INFINITY, f64::min),
            south: lats.iter().copied().fold(f64::INFINITY, f64::min),
            east: lons.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            north: lats.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        let variables = self
            .variables
            .values()
            .map(|v| {
                let total = v.tiles.iter().fold(Stats::default(), |acc, t| acc.merge(t.stats));
                let text = |key: &str| v.z.attributes.get(key).and_then(|a| a.as_str()).map(str::to_owned);
                VariableInfo {
                    name: v.z.name.clone(),
                    dims: v.z.dims.clone(),
                    shape: v.z.shape.clone(),
                    tile_shape: v.z.chunks.clone(),
                    dtype: v.z.dtype.name().to_owned(),
                    units: text("units"),
                    long_name: text("long_name"),
                    standard_name: text("standard_name"),
                    tiles: v.z.shape.iter().zip(&v.z.chunks).map(|(s, c)| s.div_ceil(*c)).product(),
                    tiles_with_data: v.tiles.len() as u64,
                    valid_cells: total.count,
                    min: (total.count > 0).then_some(total.min),
                    max: (total.count > 0).then_some(total.max),
                }
            })
            .collect();
        DatasetInfo {
            name: self.name.clone(),
            path: Some(self.path.display().to_string()),
            zarr_format: self.format,
            bbox: bbox(&self.lats, &self.lons),
            time: time_range(&self.times),
            lon_convention: if self.lon_360 { "0..360" } else { "-180..180" }.into(),
            lat_ascending: self.lats.first() <= self.lats.last(),
            variables,
        }
    }
}

/// The REST description of a tile.
pub fn tile_info(variable: &str, tile: &Tile) -> TileInfo {
    let s = tile.stats;
    TileInfo {
        variable: variable.to_owned(),
        index: tile.index,
        bbox: Bbox { west: tile.lon.0, south: tile.lat.0, east: tile.lon.1, north: tile.lat.1 },
        time_start: tile.time.0,
        time_end: tile.time.1,
        count: s.count,
        min: s.min,
        max: s.max,
        mean: s.mean(),
        std: s.std(),
        sum: s.sum,
        wsum: s.wsum,
        weight: s.weight,
        m2: s.m2,
    }
}

fn time_range(times: &[i64]) -> TimeRange {
    let (start, stop) = (times.iter().copied().min().unwrap_or(0), times.iter().copied().max().unwrap_or(0));
    TimeRange { start, stop, iso_start: cf::iso(start), iso_stop: cf::iso(stop), steps: times.len() as u64 }
}

/// The registered datasets, shared read-only by all sessions.
pub struct Catalog {
    data_dir: PathBuf,
    workers: usize,
    datasets: RwLock<BTreeMap<String, Arc<Dataset>>>,
}

/// The one grammar of dataset names: 1 to 128 ASCII letters, digits, `_` or `-`, starting with a
/// letter or `_`. A name is a directory (`<name>.zarr`), a URL path segment and an SQL table.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

impl Catalog {
    /// Registers every `<data_dir>/datasets/<name>.zarr` (a directory or a symlink). When there is
    /// none and `demo` is set, first writes the demo dataset `sst`. A store that fails to open is
    /// logged and skipped, so one bad store does not keep the gateway down.
    ///
    /// # Errors
    /// [`Error::Io`] when the data directory cannot be created or listed, or the demo cannot be written.
    pub fn open(data_dir: &Path, demo: bool, workers: usize) -> Result<Self, Error> {
        let dir = data_dir.join("datasets");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        let catalog = Self { data_dir: data_dir.to_owned(), workers: workers.max(1), datasets: RwLock::default() };
        let mut stores = catalog.stores()?;
        if stores.is_empty() && demo {
            let path = dir.join("sst.zarr");
            let clock = std::time::Instant::now();
            demo::write(&path, catalog.workers)?;
            tracing::info!("wrote the demo dataset 'sst' to {} in {:.1?}", path.display(), clock.elapsed());
            stores = catalog.stores()?;
        }
        for (name, path) in stores {
            if let Err(e) = catalog.register(&name, &path) {
                tracing::error!(dataset = %name, "not registered: {e}");
            }
        }
        Ok(catalog)
    }

    fn stores(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        let dir = self.data_dir.join("datasets");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        let mut stores: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let file = e.file_name().to_str()?.to_owned();
                Some((file.strip_suffix(".zarr")?.to_owned(), e.path()))
            })
            .collect();
        stores.sort();
        Ok(stores)
    }

    /// Opens a store and registers it under `name`, replacing nothing.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a bad or taken name or a missing path; otherwise as [`Dataset::open`].
    pub fn register(&self, name: &str, path: &Path) -> Result<Arc<Dataset>, Error> {
        if !valid_name(name) {
            return Err(Error::InvalidRequest(format!(
                "invalid dataset name '{name}': use 1 to 128 ASCII letters, digits, '_' or '-', starting with a letter \
                 or '_' (a name is one SQL table: '.' would make it schema.table)"
            )));
        }
        if self.get(name).is_ok() {
            return Err(Error::InvalidRequest(format!("a dataset named '{name}' is already registered")));
        }
        if !path.is_dir() {
            return Err(Error::InvalidRequest(format!("{} is not a directory", path.display())));
        }
        let clock = std::time::Instant::now();
        let dataset = Arc::new(Dataset::open(name, path, &self.data_dir.join("index"), self.workers)?);
        tracing::info!(dataset = name, "registered {} in {:.1?}", path.display(), clock.elapsed());
        let mut datasets = self.datasets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match datasets.entry(name.to_owned()) {
            // Registered concurrently while this one was opening: the first one stays.
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(Error::InvalidRequest(format!("a dataset named '{name}' is already registered")))
            }
            std::collections::btree_map::Entry::Vacant(slot) => Ok(slot.insert(dataset).clone()),
        }
    }

    /// A dataset by name.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get(&self, name: &str) -> Result<Arc<Dataset>, Error> {
        let datasets = self.datasets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        datasets.get(name).cloned().ok_or_else(|| Error::NotFound(format!("Dataset '{name}' not found.")))
    }

    /// All datasets, by name.
    pub fn list(&self) -> Vec<Arc<Dataset>> {
        let datasets = self.datasets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        datasets.values().cloned().collect()
    }
}
