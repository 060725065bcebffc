//! A map that panics on one tile: the statement must fail naming the tile, and nothing else break.
use prelude::*;

fn main() -> Rows {
    dataset("sst")
        .time("2008-09-01", "2008-09-04")
        .map(|tile| {
            if tile.index == [2, 0, 1] {
                panic!("cannot handle tile {:?}", tile.index);
            }
            tile.stats_by_time()
        })
        .reduce_by_key(Stats::merge)
}

prelude::export_main!(main);
