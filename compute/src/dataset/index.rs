//! The tile index: per chunk, its extent and [`Stats`], built in parallel and persisted in the data
//! directory with a fingerprint of the store, so re-opening does not rescan and a changed store is rescanned.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::zarr::ZArray;
use super::{Dataset, Error, Stats, Tile};

/// Bump when the index format or its statistics change: old files are then rebuilt.
const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    fingerprint: String,
    /// Per variable: `[t, y, x]` chunk index and its stats, for chunks with valid data.
    variables: BTreeMap<String, Vec<([u64; 3], SavedStats)>>,
}

/// [`Stats`] on disk: `(count, min, max, sum, wsum, weight, m2)`.
type SavedStats = (u64, f64, f64, f64, f64, f64, f64);

fn save(s: Stats) -> SavedStats {
    (s.count, s.min, s.max, s.sum, s.wsum, s.weight, s.m2)
}

fn load((count, min, max, sum, wsum, weight, m2): SavedStats) -> Stats {
    Stats { count, min, max, sum, wsum, weight, m2 }
}

/// Element ranges `[time, lat, lon]` of a chunk, clipped to the array (edge chunks are smaller).
pub(crate) fn ranges(z: &ZArray, index: [u64; 3]) -> [Range<usize>; 3] {
    std::array::from_fn(|d| {
        let start = index[d] * z.chunks[d];
        let end = (start + z.chunks[d]).min(z.shape[d]);
        start as usize..end as usize
    })
}

pub(crate) fn load_or_build(dataset: &mut Dataset, index_dir: &Path, workers: usize) -> Result<(), Error> {
    let file = index_dir.join(format!("{}.json", dataset.name));
    let fingerprint = fingerprint(&dataset.path)?;
    let saved = std::fs::read(&file).ok().and_then(|bytes| serde_json::from_slice::<IndexFile>(&bytes).ok());
    let index = match saved {
        Some(saved) if saved.version == VERSION && saved.fingerprint == fingerprint => {
            tracing::debug!(dataset = %dataset.name, "tile index loaded from {}", file.display());
            saved
        }
        _ => {
            let clock = std::time::Instant::now();
            let mut variables = BTreeMap::new();
            for (name, v) in &dataset.variables {
                variables.insert(name.clone(), build(dataset, &v.z, v.decoder, workers)?);
            }
            let index = IndexFile { version: VERSION, fingerprint, variables };
            std::fs::create_dir_all(index_dir).map_err(|e| Error::Io(format!("{}: {e}", index_dir.display())))?;
            let bytes = serde_json::to_vec(&index).map_err(|e| Error::Io(e.to_string()))?;
            // Write then rename, so a crash never leaves a half-written index behind.
            let tmp = file.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, &file))
                .map_err(|e| Error::Io(format!("{}: {e}", file.display())))?;
            tracing::info!(dataset = %dataset.name, "tile index built in {:.1?}", clock.elapsed());
            index
        }
    };
    for (name, entries) in index.variables {
        let tiles: Vec<Tile> = entries.iter().map(|&(i, stats)| tile(dataset, name.as_str(), i, load(stats))).collect();
        if let Some(v) = dataset.variables.get_mut(&name) {
            v.tiles = tiles;
        }
    }
    Ok(())
}

fn tile(dataset: &Dataset, variable: &str, index: [u64; 3], stats: Stats) -> Tile {
    let z = &dataset.variables[variable].z;
    let [t, y, x] = ranges(z, index);
    let span =
        |values: &[f64]| values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let times = &dataset.times[t];
    Tile {
        index,
        time: (times.iter().copied().min().unwrap_or(0), times.iter().copied().max().unwrap_or(0)),
        lat: span(&dataset.lats[y]),
        lon: span(&dataset.lons[x]),
        stats,
    }
}

/// Reads every chunk once, on `workers` threads; keeps those with at least one valid cell.
fn build(
    dataset: &Dataset,
    z: &ZArray,
    decoder: super::cf::Decoder,
    workers: usize,
) -> Result<Vec<([u64; 3], SavedStats)>, Error> {
    let grid: Vec<u64> = z.shape.iter().zip(&z.chunks).map(|(s, c)| s.div_ceil(*c)).collect();
    let total = (grid[0] * grid[1] * grid[2]) as usize;
    let cos_lat: Vec<f64> = dataset.lats.iter().map(|l| l.to_radians().cos()).collect();
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let failure = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(total.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let index = [i as u64 / (grid[1] * grid[2]), i as u64 / grid[2] % grid[1], i as u64 % grid[2]];
                    match chunk_stats(z, index, decoder, &cos_lat) {
                        Ok(Some(stats)) => found.lock().unwrap_or_else(|p| p.into_inner()).push((index, save(stats))),
                        Ok(None) => {}
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            next.store(total, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(Error::Corrupt(format!("dataset '{}': {e}", dataset.name)));
    }
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by_key(|(i, _)| *i);
    Ok(found)
}

fn chunk_stats(
    z: &ZArray,
    index: [u64; 3],
    decoder: super::cf::Decoder,
    cos_lat: &[f64],
) -> Result<Option<Stats>, Error> {
    let Some(raw) = z.read_chunk(&index, &decoder)? else { return Ok(None) };
    let [t, y, x] = ranges(z, index);
    let (cy, cx) = (z.chunks[1] as usize, z.chunks[2] as usize);
    let weights = &cos_lat[y.clone()];
    // Per time step, the rows inside the grid through the vector kernel (an edge chunk's padding
    // columns cut off first), merged exactly.
    let mut plane = Vec::new();
    let mut stats = Stats::default();
    for ti in 0..t.len() {
        let rows = &raw[ti * cy * cx..(ti * cy + y.len()) * cx];
        let step = if x.len() == cx {
            Stats::of_rows(rows, cx, weights)
        } else {
            plane.clear();
            plane.extend(rows.chunks(cx).flat_map(|row| &row[..x.len()]));
            Stats::of_rows(&plane, x.len(), weights)
        };
        stats = stats.merge(step);
    }
    Ok((stats.count > 0).then_some(stats))
}

/// SHA-256 over every file's relative path, size and modification time: changes when the store does.
fn fingerprint(root: &Path) -> Result<String, Error> {
    let mut entries = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let listing = std::fs::read_dir(&dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        for entry in listing.filter_map(Result::ok) {
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                let mtime = meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok());
                let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
                entries.push(format!("{rel}\t{}\t{}", meta.len(), mtime.map_or(0, |d| d.as_nanos())));
            }
        }
    }
    entries.sort();
    let mut hash = Sha256::new();
    for e in entries {
        hash.update(e.as_bytes());
        hash.update(b"\n");
    }
    Ok(hex::encode(hash.finalize()))
}
