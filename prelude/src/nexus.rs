//! Apache SDAP NEXUS's response shapes, so code written against NEXUS (plots, notebooks) reads the
//! shipped algorithms' results unchanged. Each function takes a job's [`Rows`] and returns NEXUS's
//! envelope `{"meta": ..., "data": ..., "stats": {}}` as [`Json`] (a statement's result as is).
//!
//! `meta` is `{"shortName": dataset, "bounds": {"east", "west", "north", "south"},
//! "time": {"start", "stop", "iso_start", "iso_stop"}}` from the job's selection.

use crate::job::Rows;
use crate::json::Json;

/// Time series rows (keyed by time, with `Stats` fields) as NEXUS `timeSeriesSpark`:
/// `data = [[{"min", "max", "mean", "cnt", "std", "time", "iso_time", "ds": 0}], ...]`.
pub fn time_series(rows: &Rows) -> Json {
    let data = each_row(rows)
        .map(|row| {
            let time = row["time"].as_i64().unwrap_or(0);
            let mut fields = pick(&row, &["min", "max", "mean", "cnt", "std", "time"]);
            fields.push(("iso_time".into(), Json::String(iso(time, "+0000"))));
            fields.push(("ds".into(), Json::Number(0.0)));
            Json::Array(vec![Json::Object(fields)])
        })
        .collect();
    envelope(Json::Array(vec![meta(rows)]), Json::Array(data))
}

/// Per-pixel rows (keyed by `[lat, lon]`, with `cnt` and `mean`) as a NEXUS map
/// (`timeAvgMapSpark` with `value = "mean"`, `climMapSpark` with `"avg"`): `data` is a 2-D list
/// `[lat][lon]`, both ascending, of `{value, "cnt", "lat", "lon"}` over the rows and columns that
/// have a valid pixel; a pixel without data has `cnt` 0 and `value` -9999.0 (0.0 for `"avg"`).
pub fn map(rows: &Rows, value: &str) -> Json {
    let mut pixels: Vec<(f64, f64, Json)> =
        each_row(rows).filter_map(|row| Some((row["key"][0].as_f64()?, row["key"][1].as_f64()?, row))).collect();
    // Sorted by (lat, lon), so each grid cell is a binary search (a scan per cell was quadratic:
    // seconds for a 240 x 160 box).
    let order = |a: &(f64, f64, Json), lat: f64, lon: f64| a.0.total_cmp(&lat).then(a.1.total_cmp(&lon));
    pixels.sort_by(|a, b| order(a, b.0, b.1));
    let mut lats: Vec<f64> = pixels.iter().map(|p| p.0).collect();
    let mut lons: Vec<f64> = pixels.iter().map(|p| p.1).collect();
    for axis in [&mut lats, &mut lons] {
        axis.sort_by(f64::total_cmp);
        axis.dedup();
    }
    let empty = if value == "avg" { 0.0 } else { -9999.0 };
    let data = lats
        .iter()
        .map(|&lat| {
            let cells = lons
                .iter()
                .map(|&lon| {
                    let found = pixels.binary_search_by(|p| order(p, lat, lon)).ok().map(|i| &pixels[i].2);
                    let (v, cnt) = found.map_or((Json::Number(empty), Json::Number(0.0)), |row| {
                        (row["mean"].clone(), row["cnt"].clone())
                    });
                    Json::Object(vec![
                        (value.to_owned(), v),
                        ("cnt".into(), cnt),
                        ("lat".into(), Json::Number(lat)),
                        ("lon".into(), Json::Number(lon)),
                    ])
                })
                .collect();
            Json::Array(cells)
        })
        .collect();
    envelope(meta(rows), Json::Array(data))
}

/// Rows keyed by `[time, lat]` as NEXUS `latitudeTimeHofMoellerSpark`:
/// `data = [{"sequence", "time", "iso_time", "lats": [{"latitude", "cnt", "mean", "std", "max", "min"}]}]`.
pub fn latitude_hovmoller(rows: &Rows) -> Json {
    hovmoller(rows, "lats", "latitude")
}

/// Rows keyed by `[time, lon]` as NEXUS `longitudeTimeHofMoellerSpark` (`"lons"`, `"longitude"`).
pub fn longitude_hovmoller(rows: &Rows) -> Json {
    hovmoller(rows, "lons", "longitude")
}

fn hovmoller(rows: &Rows, list: &str, coordinate: &str) -> Json {
    let mut days: Vec<(i64, Vec<Json>)> = Vec::new();
    for row in each_row(rows) {
        let time = row["key"][0].as_i64().unwrap_or(0);
        let mut fields = vec![(coordinate.to_owned(), row["key"][1].clone())];
        fields.extend(pick(&row, &["cnt", "mean", "std", "max", "min"]));
        match days.last_mut() {
            Some((t, entries)) if *t == time => entries.push(Json::Object(fields)),
            _ => days.push((time, vec![Json::Object(fields)])),
        }
    }
    let data = days
        .into_iter()
        .enumerate()
        .map(|(sequence, (time, entries))| {
            Json::Object(vec![
                ("sequence".into(), Json::Number(sequence as f64)),
                ("time".into(), Json::Number(time as f64)),
                ("iso_time".into(), Json::String(iso(time, "Z"))),
                (list.to_owned(), Json::Array(entries)),
            ])
        })
        .collect();
    envelope(meta(rows), Json::Array(data))
}

/// Rows keyed by time (with `mean`, `std`) as NEXUS `dailydifferenceaverage_spark`:
/// `data = [[{"time", "mean", "std", "ds": 0}], ...]`.
pub fn daily_difference(rows: &Rows) -> Json {
    let data = each_row(rows)
        .map(|row| {
            let mut fields = pick(&row, &["time", "mean", "std"]);
            fields.push(("ds".into(), Json::Number(0.0)));
            Json::Array(vec![Json::Object(fields)])
        })
        .collect();
    envelope(meta(rows), Json::Array(data))
}

fn envelope(meta: Json, data: Json) -> Json {
    Json::Object(vec![("meta".into(), meta), ("data".into(), data), ("stats".into(), Json::Object(Vec::new()))])
}

fn each_row(rows: &Rows) -> impl Iterator<Item = Json> {
    let parsed = Json::parse(rows.json()).unwrap_or_default();
    match parsed {
        Json::Array(items) => items.into_iter(),
        _ => Vec::new().into_iter(),
    }
}

fn pick(row: &Json, names: &[&str]) -> Vec<(String, Json)> {
    names.iter().map(|n| ((*n).to_owned(), row[*n].clone())).collect()
}

fn meta(rows: &Rows) -> Json {
    let Some(job) = rows.job() else { return Json::Object(Vec::new()) };
    let mut fields = vec![("shortName".into(), Json::String(job.dataset.clone()))];
    if let Some([west, south, east, north]) = job.bbox {
        let bounds = [("east", east), ("west", west), ("north", north), ("south", south)];
        fields.push(("bounds".into(), Json::Object(bounds.map(|(k, v)| (k.to_owned(), Json::Number(v))).to_vec())));
    }
    if let Some((start, stop)) = &job.time {
        let (start, stop) = (epoch_seconds(start).unwrap_or(0), epoch_seconds(stop).unwrap_or(0));
        fields.push((
            "time".into(),
            Json::Object(vec![
                ("start".into(), Json::Number(start as f64)),
                ("stop".into(), Json::Number(stop as f64)),
                ("iso_start".into(), Json::String(iso(start, "+0000"))),
                ("iso_stop".into(), Json::String(iso(stop, "+0000"))),
            ]),
        ));
    }
    Json::Object(fields)
}

/// `YYYY-MM-DDTHH:MM:SS` followed by `zone` (`+0000` or `Z`, as NEXUS writes them).
pub fn iso(seconds: i64, zone: &str) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{zone}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Epoch seconds of `YYYY-MM-DD[THH:MM[:SS]][Z]` (UTC).
pub fn epoch_seconds(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) =
        (t.next().flatten().unwrap_or(0), t.next().flatten().unwrap_or(0), t.next().flatten().unwrap_or(0));
    Some(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of days since 1970-01-01 (`civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::dataset;

    fn rows(json: &str) -> Rows {
        Rows::new(
            json.to_owned(),
            Some(dataset("sst").bbox(-150.0, 45.0, -120.0, 60.0).time("2008-09-01", "2008-09-16")),
        )
    }

    fn text(json: &Json) -> String {
        let mut out = String::new();
        crate::Value::to_json(json, &mut out);
        out
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(epoch_seconds("2008-09-01"), Some(1_220_227_200));
        assert_eq!(epoch_seconds("2008-09-01T06:30:00Z"), Some(1_220_250_600));
        assert_eq!(iso(1_220_227_200, "+0000"), "2008-09-01T00:00:00+0000");
        assert_eq!(iso(951_782_400, "Z"), "2000-02-29T00:00:00Z");
        assert_eq!(epoch_seconds("nonsense"), None);
    }

    #[test]
    fn time_series_is_nested_per_day_with_meta() {
        let r = rows(r#"[{"time":1220227200,"cnt":2,"min":1.0,"max":3.0,"mean":2.0,"std":1.0}]"#);
        assert_eq!(
            text(&time_series(&r)),
            r#"{"meta":[{"shortName":"sst","bounds":{"east":-120,"west":-150,"north":60,"south":45},"time":{"start":1220227200,"stop":1221523200,"iso_start":"2008-09-01T00:00:00+0000","iso_stop":"2008-09-16T00:00:00+0000"}}],"data":[[{"min":1,"max":3,"mean":2,"cnt":2,"std":1,"time":1220227200,"iso_time":"2008-09-01T00:00:00+0000","ds":0}]],"stats":{}}"#
        );
    }

    #[test]
    fn maps_fill_the_grid_of_present_rows_and_columns() {
        let r = rows(r#"[{"key":[0.5,1.5],"cnt":3,"mean":2.5},{"key":[1.5,0.5],"cnt":1,"mean":7.0}]"#);
        let m = map(&r, "mean");
        assert_eq!(m["data"][0][0]["cnt"].as_u64(), Some(0));
        assert_eq!(m["data"][0][0]["mean"].as_f64(), Some(-9999.0));
        assert_eq!(m["data"][0][1]["mean"].as_f64(), Some(2.5));
        assert_eq!(m["data"][1][0]["lat"].as_f64(), Some(1.5));
        assert_eq!(map(&r, "avg")["data"][1][1]["avg"].as_f64(), Some(0.0));
    }

    #[test]
    fn hovmollers_group_by_day() {
        let r = rows(
            r#"[{"key":[10,-1.5],"cnt":1,"mean":1.0,"std":0.0,"max":1.0,"min":1.0},{"key":[10,0.5],"cnt":2,"mean":2.0,"std":0.5,"max":2.5,"min":1.5},{"key":[20,0.5],"cnt":1,"mean":3.0,"std":0.0,"max":3.0,"min":3.0}]"#,
        );
        let h = latitude_hovmoller(&r);
        assert_eq!(h["data"].as_array().map(<[Json]>::len), Some(2));
        assert_eq!(h["data"][0]["lats"][1]["latitude"].as_f64(), Some(0.5));
        assert_eq!(h["data"][1]["sequence"].as_u64(), Some(1));
        assert_eq!(longitude_hovmoller(&r)["data"][0]["lons"][0]["longitude"].as_f64(), Some(-1.5));
    }
}
