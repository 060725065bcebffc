//! The NEXUS time series (cnt, min, max, cos-weighted mean, std per day) over the seed workshop's
//! bbox and first 16 days, on the dataset `sst`.
use prelude::*;

fn main() -> Rows {
    dataset("sst")
        .bbox(-150.0, 45.0, -120.0, 60.0)
        .time("2008-09-01", "2008-09-16")
        .map(|tile| tile.stats_by_time())
        .reduce_by_key(Stats::merge)
}

prelude::export_main!(main);
