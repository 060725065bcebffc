// NEXUS daily difference average (`/dailydifferenceaverage_spark`): per day, the statistics of
// each cell's difference from its climatology, over the bounding box.
//
// Two jobs in one statement. The first computes the climatology (each pixel's mean over the
// reference period; a climatology dataset would serve the same role) and keeps it in the session
// as `sst_climatology`, so later statements can reuse it. The second maps each tile to per-day
// statistics of `value - climatology(pixel)`; every worker reads the climatology from the
// session once (`thread_local!`) and keeps it for all the tiles it maps.
//
// Returns NEXUS's `dailydifferenceaverage_spark` shape (`nexus::daily_difference`), per day:
//   {"meta": {...}, "data": [[{"time": 1220227200, "mean": 2.89, "std": 0.24, "ds": 0}], ...], "stats": {}}
// `mean` is unweighted, as NEXUS's is, and `std` uses ddof = 0 throughout (NEXUS mixes ddof 0 per
// tile with a ddof 1 merge; Stats merges (n, mean, M2) exactly, so there is one ddof). `rows`
// itself also has `cnt`, `min` and `max` per day.
use std::collections::HashMap;

/// Pixel → climatological mean, from the session (pixels are keyed in thousandths of a degree).
fn climatology() -> HashMap<(i32, i32), f64> {
    let rows = session().get("sst_climatology").expect("the climatology job ran first");
    let key = |j: &Json| (j.as_f64().unwrap_or(f64::NAN) * 1000.0).round() as i32;
    rows.as_array()
        .unwrap_or_default()
        .iter()
        .map(|row| ((key(&row["key"][0]), key(&row["key"][1])), row["mean"].as_f64().unwrap_or(f64::NAN)))
        .collect()
}

fn anomalies(tile: &Tile) -> Vec<(Time, Stats)> {
    thread_local! { static CLIMATOLOGY: HashMap<(i32, i32), f64> = climatology(); }
    CLIMATOLOGY.with(|clim| {
        let nlon = tile.lons.len();
        let at = |i: usize| {
            let (lat, lon) = (f64::from(tile.lats[i / nlon]), f64::from(tile.lons[i % nlon]));
            clim.get(&((lat * 1000.0).round() as i32, (lon * 1000.0).round() as i32)).copied()
        };
        (0..tile.times.len())
            .map(|t| {
                let diffs = tile.at_time(t).iter().enumerate().filter_map(|(i, &v)| {
                    let clim = at(i)?;
                    (!v.is_nan()).then(|| ((f64::from(v) - clim) as f32, 1.0))
                });
                (Time(tile.times[t]), Stats::of(diffs))
            })
            .filter(|(_, s)| s.count > 0)
            .collect()
    })
}

fn pixels(tile: &Tile) -> Vec<((f32, f32), Stats)> {
    (0..tile.times.len()).flat_map(|t| tile.pixel_stats(t)).collect()
}

let climatology_rows = dataset("sst")
    .bbox(-150.0, 40.0, -130.0, 50.0)
    .time("2008-09-01", "2009-08-31")
    .map(pixels)
    .reduce_by_key(Stats::merge);
session().set("sst_climatology", climatology_rows);

let rows = dataset("sst")
    .bbox(-150.0, 40.0, -130.0, 50.0)
    .time("2008-09-01", "2008-09-10")
    .map(anomalies)
    .reduce_by_key(Stats::merge);
nexus::daily_difference(&rows)
