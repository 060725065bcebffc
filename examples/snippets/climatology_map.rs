// NEXUS climatology map (`/climMapSpark`): per calendar month (1 = January) and pixel of the
// bounding box, the statistics of its values in that month over all the years of the time range.
//
// The month comes from the time step's epoch seconds with Howard Hinnant's `civil_from_days`
// (proleptic Gregorian, UTC), so the snippet needs no date library.
//
// Returns NEXUS's `climMapSpark` shape for one month (`MONTH`, as NEXUS answers one month per
// request) (`nexus::map(&rows, "avg")`): a 2-D list `[lat][lon]`, both ascending, of
// `{"avg", "cnt", "lat", "lon"}`; a pixel without data has `"cnt": 0, "avg": 0.0`:
//   {"meta": {...}, "data": [[{"avg": 12.75, "cnt": 31, "lat": 40.5, "lon": -135.5}, ...], ...], "stats": {}}
// The demo dataset holds one year (2008-09-01 to 2009-08-31), so there a month's climatology
// covers that month's days once. `rows` itself also has `min`, `max` and `std` (ddof = 0).
const MONTH: u32 = 1;

/// The month (1..=12) of `seconds` since 1970-01-01T00:00:00Z.
fn month_of(seconds: i64) -> u32 {
    let z = seconds.div_euclid(86_400) + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // day of the 400-year era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of the era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    (if mp < 10 { mp + 3 } else { mp - 9 }) as u32
}

fn in_month(tile: &Tile) -> Vec<((f32, f32), Stats)> {
    (0..tile.times.len()).filter(|&t| month_of(tile.times[t]) == MONTH).flat_map(|t| tile.pixel_stats(t)).collect()
}

let rows = dataset("sst")
    .bbox(-136.0, 40.0, -131.0, 43.0)
    .time("2008-09-01", "2009-08-31")
    .map(in_month)
    .reduce_by_key(Stats::merge);
nexus::map(&rows, "avg")
