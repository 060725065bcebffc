// NEXUS latitude/time Hovmöller (`/latitudeTimeHofMoellerSpark`): per day and latitude row of the
// bounding box, the statistics of the row's valid cells across the box's longitudes.
//
// Each tile emits `((Time, lat), Stats)` for every time step and row with a valid cell
// (`row_stats`); a row that spans several tiles (here the box crosses 90°W) is merged exactly.
//
// Returns NEXUS's `latitudeTimeHofMoellerSpark` shape (`nexus::latitude_hovmoller`), per day:
//   {"meta": {...}, "data": [{"sequence": 0, "time": 1220227200, "iso_time": "2008-09-01T00:00:00Z",
//     "lats": [{"latitude": -9.5, "cnt": 32, "mean": 25.92, "std": 0.28, "max": 26.49, "min": 25.54}, ...]}, ...],
//    "stats": {}}
// A row's cells share one cos(lat), so `mean` is the plain mean, as in NEXUS; `std` has ddof = 0
// (NEXUS merges tiles with a ddof = 1 formula over ddof = 0 parts; `Stats::merge` is exact).
fn by_row(tile: &Tile) -> Vec<((Time, f32), Stats)> {
    let mut out = Vec::new();
    for t in 0..tile.times.len() {
        for (lat, stats) in tile.row_stats(t) {
            out.push(((Time(tile.times[t]), lat), stats));
        }
    }
    out
}

let rows = dataset("sst")
    .bbox(-110.0, -10.0, -70.0, 10.0)
    .time("2008-09-01", "2008-09-10")
    .map(by_row)
    .reduce_by_key(Stats::merge);
nexus::latitude_hovmoller(&rows)
