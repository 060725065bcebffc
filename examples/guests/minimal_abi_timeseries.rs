//! The seed time series of `timeseries.rs` from a module that announces only the calls every module
//! must have (map, reduce, row), as one written without the prelude may: the gateway sends each tile
//! whole, reduces one pair of values per call and asks for one row per key.
use prelude::*;

fn main() -> Rows {
    dataset("sst")
        .bbox(-150.0, 45.0, -120.0, 60.0)
        .time("2008-09-01", "2008-09-16")
        .map(|tile| tile.stats_by_time())
        .reduce_by_key_minimal_abi(Stats::merge)
}

prelude::export_main!(main);
