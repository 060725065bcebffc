//! A custom map: per day, how many cells of the tropical Pacific are warmer than 28 °C.
use prelude::*;

fn warm(tile: &Tile) -> Vec<(Time, u64)> {
    (0..tile.times.len())
        .map(|t| (Time(tile.times[t]), tile.at_time(t).iter().filter(|&&v| v > 28.0).count() as u64))
        .collect()
}

fn main() -> Rows {
    dataset("sst")
        .bbox(-180.0, -10.0, -90.0, 10.0)
        .time("2008-09-01", "2008-09-08")
        .map(warm)
        .reduce_by_key(|a, b| a + b)
}

prelude::export_main!(main);
