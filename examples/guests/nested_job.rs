//! A map that tries to start a job itself: refused.
use prelude::*;

fn nested(_tile: &Tile) -> Vec<(Time, u64)> {
    let inner = dataset("sst").map(|t| vec![(Time(t.times[0]), 1u64)]).reduce_by_key(|a, b| a + b);
    vec![(Time(0), inner.json().len() as u64)]
}

fn main() -> Rows {
    dataset("sst").time("2008-09-01", "2008-09-01").map(nested).reduce_by_key(|a, b| a + b)
}

prelude::export_main!(main);
