// NEXUS longitude/time Hovmöller (`/longitudeTimeHofMoellerSpark`): per day and longitude column
// of the bounding box, the statistics of the column's valid cells across the box's latitudes.
//
// Each tile emits `((Time, lon), Stats)` for every time step and column with a valid cell
// (`column_stats`); a column that spans several tiles (here the box crosses the equator) is
// merged exactly.
//
// Returns NEXUS's `longitudeTimeHofMoellerSpark` shape (`nexus::longitude_hovmoller`), per day:
//   {"meta": {...}, "data": [{"sequence": 0, "time": 1220227200, "iso_time": "2008-09-01T00:00:00Z",
//     "lons": [{"longitude": -109.5, "cnt": 20, "mean": 27.71, "std": 0.66, "max": 28.52, "min": 26.41}, ...]}, ...],
//    "stats": {}}
// `mean` is cos(lat)-weighted, as NEXUS weights it for this map; `cnt`/`min`/`max`/`std` are
// unweighted, `std` with ddof = 0.
fn columns(tile: &Tile) -> Vec<((Time, f32), Stats)> {
    let mut out = Vec::new();
    for t in 0..tile.times.len() {
        for (lon, stats) in tile.column_stats(t) {
            out.push(((Time(tile.times[t]), lon), stats));
        }
    }
    out
}

let rows = dataset("sst")
    .bbox(-110.0, -10.0, -70.0, 10.0)
    .time("2008-09-01", "2008-09-10")
    .map(columns)
    .reduce_by_key(Stats::merge);
nexus::longitude_hovmoller(&rows)
