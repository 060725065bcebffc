//! A deliberately slow map (each tile's stats computed 40,000 times: about half a minute over the
//! demo dataset's 480 tiles on two workers), to watch progress, cancel it or pass a deadline; the
//! tests never let it finish.
use prelude::*;

fn slow(tile: &Tile) -> Vec<(Time, Stats)> {
    let mut out = tile.stats_by_time();
    for _ in 0..40_000 {
        out = core::hint::black_box(tile.stats_by_time());
    }
    out
}

fn main() -> Rows {
    dataset("sst").time("2008-09-01", "2008-10-30").map(slow).reduce_by_key(Stats::merge)
}

prelude::export_main!(main);
