// NEXUS time series (`/timeSeriesSpark`): per day, the statistics of every valid cell inside the
// bounding box.
//
// Each tile becomes one `(Time, Stats)` pair per time step with a valid cell (`stats_by_time`);
// `Stats::merge` combines the tiles of a day exactly (Chan et al.), so the split into tiles does
// not change the numbers.
//
// Returns one row per day, sorted by time (epoch seconds, UTC):
//   [{"time": 1220227200, "cnt": 238, "min": 9.17, "max": 16.03, "mean": 12.52, "std": 1.99}, ...]
// `mean` is cos(lat)-weighted, `min`/`max`/`cnt`/`std` are unweighted, `std` is the population
// standard deviation (ddof = 0): NEXUS's `cnt`, `min`, `max`, `mean`, `std` of its `data` list.
dataset("sst")
    .bbox(-150.0, 45.0, -120.0, 60.0)
    .time("2008-09-01", "2008-09-16")
    .map(|tile| tile.stats_by_time())
    .reduce_by_key(Stats::merge)
