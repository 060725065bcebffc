// NEXUS time-average map (`/timeAvgMapSpark`): per pixel (grid cell) of the bounding box, the
// statistics of its values over the time range.
//
// Each tile emits one `((lat, lon), Stats)` pair per valid cell and time step (`pixel_stats`);
// the reduce merges the days of each pixel. Pixels that are never valid (land) have no row.
//
// Returns one row per pixel, sorted by latitude, then longitude (cell centres, degrees):
//   [{"key": [40.5, -149.5], "cnt": 30, "min": 16.82, "max": 17.83, "mean": 17.28, "std": 0.28}, ...]
// `std` is over time (ddof = 0). NEXUS returns the same numbers (`mean`, `cnt`, plus `lat`, `lon`)
// as a 2-D list `[lat][lon]` that includes the empty pixels; here the grid is sparse.
fn pixels(tile: &Tile) -> Vec<((f32, f32), Stats)> {
    (0..tile.times.len()).flat_map(|t| tile.pixel_stats(t)).collect()
}

dataset("sst")
    .bbox(-150.0, 40.0, -130.0, 50.0)
    .time("2008-09-01", "2008-09-30")
    .map(pixels)
    .reduce_by_key(Stats::merge)
