// NEXUS time series (`/timeSeriesSpark`): per day, the statistics of every valid cell inside the
// bounding box.
//
// Each tile becomes one `(Time, Stats)` pair per time step with a valid cell (`stats_by_time`);
// `Stats::merge` combines the tiles of a day exactly (Chan et al.), so the split into tiles does
// not change the numbers.
//
// Returns NEXUS's `timeSeriesSpark` shape (`nexus::time_series`), one `data` entry per day, sorted:
//   {"meta": [{"shortName": "sst", "bounds": {...}, "time": {...}}],
//    "data": [[{"min": 9.17, "max": 16.03, "mean": 12.52, "cnt": 238, "std": 1.99,
//               "time": 1220227200, "iso_time": "2008-09-01T00:00:00+0000", "ds": 0}], ...],
//    "stats": {}}
// `mean` is cos(lat)-weighted, `min`/`max`/`cnt`/`std` are unweighted, `std` is the population
// standard deviation (ddof = 0), as NEXUS computes them. `rows` itself (without the last line)
// is the flat list `[{"time", "cnt", "min", "max", "mean", "std"}, ...]`.
let rows = dataset("sst")
    .bbox(-150.0, 45.0, -120.0, 60.0)
    .time("2008-09-01", "2008-09-16")
    .map(|tile| tile.stats_by_time())
    .reduce_by_key(Stats::merge);
nexus::time_series(&rows)
