//! A job over a dataset that does not exist.
use prelude::*;

fn main() -> Rows {
    dataset("chlorophyll").map(|tile| tile.stats_by_time()).reduce_by_key(Stats::merge)
}

prelude::export_main!(main);
