// NEXUS time-average map (`/timeAvgMapSpark`): per pixel (grid cell) of the bounding box, the
// statistics of its values over the time range.
//
// Each tile emits one `((lat, lon), Stats)` pair per valid cell and time step (`pixel_stats`);
// the reduce merges the days of each pixel. Pixels that are never valid (land) have no row.
//
// Returns NEXUS's `timeAvgMapSpark` shape (`nexus::map(&rows, "mean")`): `data` is a 2-D list
// `[lat][lon]`, both ascending, of `{"mean", "cnt", "lat", "lon"}`; a pixel without data (land)
// has `"cnt": 0, "mean": -9999.0`:
//   {"meta": {...}, "data": [[{"mean": 17.28, "cnt": 30, "lat": 40.5, "lon": -149.5}, ...], ...], "stats": {}}
// `rows` itself is one row per valid pixel, `{"key": [lat, lon], "cnt", "min", "max", "mean", "std"}`
// (`std` over time, ddof = 0).
fn pixels(tile: &Tile) -> Vec<((f32, f32), Stats)> {
    (0..tile.times.len()).flat_map(|t| tile.pixel_stats(t)).collect()
}

let rows = dataset("sst")
    .bbox(-150.0, 40.0, -130.0, 50.0)
    .time("2008-09-01", "2008-09-30")
    .map(pixels)
    .reduce_by_key(Stats::merge);
nexus::map(&rows, "mean")
