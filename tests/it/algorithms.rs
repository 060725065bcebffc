//! The NEXUS algorithms as documented `rust` snippets (`examples/snippets`): each runs as a
//! statement through the SDK over the demo dataset and answers in NEXUS's shape, whose numbers
//! match numpy's (`tests/tools/reference.py`) over the same selection, read from the snippet.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tilegate_sdk::{CreateSession, Language};

use crate::jobs::{gateway_with_sst, reference};
use crate::test_config;

/// A snippet, the reference command that computes its rows, the name of their key, how to read
/// rows in the reference's form out of the snippet's NEXUS-shaped answer, and the statistics
/// NEXUS's shape of it has (each must be there and agree with the reference).
struct Algorithm {
    name: &'static str,
    code: &'static str,
    reference: &'static str,
    key: &'static str,
    rows: fn(&Value) -> Vec<Value>,
    fields: &'static [&'static str],
}

macro_rules! snippet {
    ($name:literal, $reference:literal, $key:literal, $rows:expr, $fields:expr) => {
        Algorithm {
            name: $name,
            code: include_str!(concat!("../../examples/snippets/", $name, ".rs")),
            reference: $reference,
            key: $key,
            rows: $rows,
            fields: $fields,
        }
    };
}

/// Every statistic: NEXUS's time series and Hovmöller diagrams have them all.
const ALL: &[&str] = &["cnt", "min", "max", "mean", "std"];

const ALGORITHMS: [Algorithm; 6] = [
    snippet!("time_series", "timeseries", "time", per_day, ALL),
    snippet!("time_average_map", "timeavg", "key", |v| map_cells(v, "mean"), &["cnt", "mean"]),
    snippet!("climatology_map", "climatology", "key", |v| map_cells(v, "avg"), &["cnt", "mean"]),
    snippet!("latitude_hovmoller", "hovmoller-lat", "key", |v| hovmoller(v, "lats", "latitude"), ALL),
    snippet!("longitude_hovmoller", "hovmoller-lon", "key", |v| hovmoller(v, "lons", "longitude"), ALL),
    snippet!("daily_difference_average", "ddas", "time", per_day, &["mean", "std"]),
];

/// `data: [[{...}], ...]` (time series, daily difference): one object per day.
fn per_day(answer: &Value) -> Vec<Value> {
    data(answer).iter().map(|day| day[0].clone()).collect()
}

/// `data: [[{value, cnt, lat, lon}, ...], ...]` (maps): the pixels with data, keyed `[lat, lon]`.
fn map_cells(answer: &Value, value: &str) -> Vec<Value> {
    let cells = data(answer).iter().flat_map(|row| row.as_array().unwrap().iter());
    cells
        .filter(|c| c["cnt"].as_u64() != Some(0))
        .map(|c| json!({"key": [c["lat"], c["lon"]], "cnt": c["cnt"], "mean": c[value]}))
        .collect()
}

/// `data: [{time, <list>: [{<coordinate>, cnt, mean, std, max, min}]}]` (Hovmöller diagrams).
fn hovmoller(answer: &Value, list: &str, coordinate: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    for day in data(answer) {
        for e in day[list].as_array().unwrap() {
            let mut row = e.clone();
            row["key"] = json!([day["time"], e[coordinate]]);
            rows.push(row);
        }
    }
    rows
}

fn data(answer: &Value) -> &Vec<Value> {
    assert!(answer["meta"].is_object() || answer["meta"].is_array(), "no NEXUS meta: {answer}");
    answer["data"].as_array().unwrap_or_else(|| panic!("no NEXUS data list: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexus_algorithm_snippets_match_numpy() {
    let clock = Instant::now();
    let gw = gateway_with_sst(None, test_config()).await;
    eprintln!("gateway with the demo dataset: {:.2?}", clock.elapsed());
    let store = gw.data_dir.join("datasets/sst.zarr");
    let (mut timings, mut results) = (Vec::new(), Vec::new());
    for algorithm in &ALGORITHMS {
        let name = algorithm.name;
        // A session each: a cell's items (`fn rows`, ...) stay in its session for later cells.
        let session = gw.client.create_session(&CreateSession::default()).await.unwrap().id;
        let clock = Instant::now();
        let out = gw
            .client
            .run(session, Language::Rust, algorithm.code)
            .await
            .unwrap_or_else(|e| panic!("{name}.rs failed: {e}"));
        let took = clock.elapsed();
        let answer = out.json().cloned().unwrap_or_else(|| panic!("{name}.rs returned no JSON: {out:?}"));
        let rows = Value::Array((algorithm.rows)(&answer));
        let clock = Instant::now();
        let args = selection(algorithm.code);
        let want = reference(algorithm.reference, &store, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut want: Value = serde_json::from_str(&want).unwrap();
        if name == "climatology_map" {
            // The reference has every month; the snippet answers for January, as NEXUS does.
            let january = want.as_array().unwrap().iter().filter(|r| r["key"][0] == 1);
            want = january.map(|r| json!({"key": r["key"][1], "cnt": r["cnt"], "mean": r["mean"]})).collect();
        }
        eprintln!("{name}: numpy in {:.2?}", clock.elapsed());
        assert_same_rows(name, (algorithm.key, algorithm.fields), &rows, &want);
        eprintln!("{name}: first row {}", rows[0]);
        timings.push((name, took, rows.as_array().map_or(0, Vec::len)));
        results.push((name, rows));
    }
    for (name, took, rows) in &timings {
        eprintln!("{name}: {rows} rows in {took:.2?} (compile + job)");
    }
    let total: Duration = timings.iter().map(|t| t.1).sum();
    eprintln!("all snippets: {total:.2?}");

    // What each map is about, beyond agreeing with numpy.
    let rows = |name: &str| results.iter().find(|r| r.0 == name).unwrap().1.as_array().unwrap().clone();
    assert_eq!(rows("time_series").len(), 16, "one row per day");
    assert_eq!(rows("latitude_hovmoller").len(), 10 * 20, "10 days x 20 rows, each with ocean");
    assert!(rows("climatology_map").iter().all(|r| r["cnt"] == 31), "every day of January, once");
    assert_eq!(rows("daily_difference_average").len(), 10, "one row per day");
}

/// `.bbox(w, s, e, n)` and `.time("start", "end")` of a snippet's last job (the one whose rows
/// it returns), as reference.py's arguments.
fn selection(code: &str) -> Vec<String> {
    let call = |name: &str| {
        let at = code.rfind(&format!(".{name}(")).unwrap_or_else(|| panic!("no .{name}(..) in:\n{code}"));
        let args = &code[at + name.len() + 2..];
        args[..args.find(')').unwrap()].split(',').map(|a| a.trim().trim_matches('"').to_owned()).collect::<Vec<_>>()
    };
    let (bbox, time) = (call("bbox"), call("time"));
    assert_eq!((bbox.len(), time.len()), (4, 2), "{bbox:?} {time:?}");
    bbox.into_iter().chain(time).collect()
}

/// Same keys in the same order, and each of `fields` in every row of ours: `cnt` equal, the
/// floats within 1e-5 relative (absolute below 1). A field missing from ours fails.
fn assert_same_rows(name: &str, (key, fields): (&str, &[&str]), ours: &Value, numpy: &Value) {
    let (got, want) = (ours.as_array().unwrap(), numpy.as_array().unwrap());
    assert!(!want.is_empty(), "{name}: the reference selected nothing");
    assert_eq!(got.len(), want.len(), "{name}: rows, ours {} vs numpy {}", got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(same_key(&g[key], &w[key]), "{name}: key {} vs numpy {}", g[key], w[key]);
        for &f in fields {
            let b = w[f].as_f64().unwrap_or_else(|| panic!("{name}: the reference has no {f}: {w}"));
            let a = g[f].as_f64().unwrap_or_else(|| panic!("{name} {}: {f} is {} in {g}", w[key], g[f]));
            if f == "cnt" {
                assert_eq!(a, b, "{name} {}: cnt", w[key]);
            }
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{name} {}: {f} ours {a}, numpy {b}", w[key]);
        }
    }
}

/// Keys are numbers or arrays of them; coordinates are f32 in the tile and f64 in numpy.
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_key(p, q)),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * y.abs().max(1.0)
        }
        _ => false,
    }
}
