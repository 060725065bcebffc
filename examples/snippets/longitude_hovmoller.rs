// NEXUS longitude/time Hovmöller (`/longitudeTimeHofMoellerSpark`): per day and longitude column
// of the bounding box, the statistics of the column's valid cells across the box's latitudes.
//
// Each tile emits `((Time, lon), Stats)` for every time step and column with a valid cell
// (`column_stats`); a column that spans several tiles (here the box crosses the equator) is
// merged exactly.
//
// Returns one row per (day, longitude), sorted by time, then longitude:
//   [{"key": [1220227200, -109.5], "cnt": 20, "min": 26.41, "max": 28.52, "mean": 27.71, "std": 0.66}, ...]
// `mean` is cos(lat)-weighted, as NEXUS weights it for this map; `cnt`/`min`/`max`/`std` are
// unweighted, `std` with ddof = 0. NEXUS nests the same numbers per day: `[{"time", "iso_time",
// "lons": [{"longitude", "cnt", "mean", "std", "max", "min"}, ...]}, ...]`.
fn columns(tile: &Tile) -> Vec<((Time, f32), Stats)> {
    let mut out = Vec::new();
    for t in 0..tile.times.len() {
        for (lon, stats) in tile.column_stats(t) {
            out.push(((Time(tile.times[t]), lon), stats));
        }
    }
    out
}

dataset("sst")
    .bbox(-110.0, -10.0, -70.0, 10.0)
    .time("2008-09-01", "2008-09-10")
    .map(columns)
    .reduce_by_key(Stats::merge)
