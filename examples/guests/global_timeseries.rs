//! The NEXUS time series over the whole globe and every time step of the dataset `sst`.
use prelude::*;

fn main() -> Rows {
    dataset("sst").map(|tile| tile.stats_by_time()).reduce_by_key(Stats::merge)
}

prelude::export_main!(main);
