//! A deliberately slow map (each tile's stats computed 400 times), to watch progress and cancel.
use prelude::*;

fn slow(tile: &Tile) -> Vec<(Time, Stats)> {
    let mut out = tile.stats_by_time();
    for _ in 0..400 {
        out = core::hint::black_box(tile.stats_by_time());
    }
    out
}

fn main() -> Rows {
    dataset("sst").time("2008-09-01", "2008-10-30").map(slow).reduce_by_key(Stats::merge)
}

prelude::export_main!(main);
