//! `sql` statements on DataFusion over the datasets: golden files (`tests/sql/*.slt`, in the
//! style of sqllogictest), the NEXUS time series as one `GROUP BY time` query against the
//! map/reduce statement and numpy, Livy's output shape with a row cap, and a real Livy client
//! (pylivy's `download_sql`).
//!
//! A golden file is a list of records separated by blank lines; `#` starts a comment:
//!
//! ```text
//! query
//! SELECT ...
//! ----
//! value<TAB>value      (one line per row; NULL; floats with 6 significant digits)
//!
//! statement error <text the error must contain>
//! SELECT ...
//! ```
//!
//! `TILEGATE_UPDATE_GOLDEN=1 cargo test --workspace --test it sql::` rewrites the expected rows.

use std::path::Path;

use serde_json::{Value, json};
use tilegate_gateway::Config;
use tilegate_sdk::{CreateSession, Error, Language};

use crate::jobs::{SEED_BOX, STATS, assert_rows_match, gateway_with_sst, reference};
use crate::{Gateway, python, test_config};

/// The NEXUS time series (the seed workshop's box and days) as one query.
const TIME_SERIES: &str = "SELECT time, COUNT(sst) AS cnt, MIN(sst) AS min, MAX(sst) AS max,
       SUM(sst * cos(radians(lat))) / SUM(cos(radians(lat))) AS mean, STDDEV_POP(sst) AS std
FROM sst
WHERE lat BETWEEN 45 AND 60 AND lon BETWEEN -150 AND -120 AND time BETWEEN '2008-09-01' AND '2008-09-16'
GROUP BY time ORDER BY time";

async fn sql_session(gw: &Gateway) -> u64 {
    gw.client.create_session(&CreateSession { kind: Some("sql".into()), ..Default::default() }).await.unwrap().id
}

/// The statement's `application/json`, or its error as `Err((ename, evalue))`.
async fn query(gw: &Gateway, session: u64, sql: &str) -> Result<Value, (String, String)> {
    match gw.client.run(session, Language::Sql, sql).await {
        Ok(out) => Ok(out.json().cloned().unwrap_or_else(|| panic!("{sql}: no application/json in {out:?}"))),
        Err(Error::Statement { ename, evalue, .. }) => Err((ename, evalue)),
        Err(other) => panic!("{sql}: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = sql_session(&gw).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let update = std::env::var_os("TILEGATE_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "slt")) {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rewritten = Vec::new();
        for record in text.split("\n\n").filter(|r| !r.trim().is_empty()) {
            let lines: Vec<&str> = record.lines().collect();
            let header = lines.iter().position(|l| !l.starts_with('#')).unwrap_or_else(|| panic!("empty record"));
            let (comments, kind, body) = (&lines[..header], lines[header], &lines[header + 1..]);
            let name = format!("{}: {}", file.file_name().unwrap().to_string_lossy(), body.first().unwrap_or(&""));
            if let Some(expected) = kind.strip_prefix("statement error") {
                let sql = body.join("\n");
                match query(&gw, s, &sql).await {
                    Ok(v) => failures.push(format!("{name}: expected an error, got {v}")),
                    Err((_, evalue)) if evalue.contains(expected.trim()) => {}
                    Err((ename, evalue)) => {
                        failures.push(format!("{name}: expected '{}', got {ename}: {evalue}", expected.trim()))
                    }
                }
                rewritten.push(record.to_owned());
                continue;
            }
            assert_eq!(kind, "query", "{name}: a record starts with `query` or `statement error`");
            let split = body.iter().position(|l| *l == "----").unwrap_or(body.len());
            let sql = body[..split].join("\n");
            let want: Vec<&str> = body.get(split + 1..).unwrap_or_default().to_vec();
            let got = match query(&gw, s, &sql).await {
                Ok(v) => render(&v),
                Err((ename, evalue)) => vec![format!("error {ename}: {evalue}")],
            };
            if got != want {
                failures.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
            }
            let mut out: Vec<String> = comments.iter().map(|l| (*l).to_owned()).collect();
            out.push("query".into());
            out.extend(body[..split].iter().map(|l| (*l).to_owned()));
            out.push("----".into());
            out.extend(got);
            rewritten.push(out.join("\n"));
        }
        if update {
            std::fs::write(file, rewritten.join("\n\n") + "\n").unwrap();
        }
    }
    assert!(update || failures.is_empty(), "{} golden mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// The golden files' rows were written by the code under test; these are pinned against what
/// xarray reads from the same store (the demo dataset), cell by cell: a golden file that drifted
/// with a bug would fail here, not only in review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_rows_agree_with_xarray() {
    let gw = gateway_with_sst(None, test_config()).await;
    let store = gw.data_dir.join("datasets/sst.zarr");
    let reference: Value =
        serde_json::from_str(&crate::run_tool("reference.py", &["golden", store.to_str().unwrap()])).unwrap();
    let golden = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/cells.slt")).unwrap();
    let pinned = [
        (
            "equator",
            "SELECT * FROM sst WHERE time = '2008-09-01' AND lat = 0.5 AND lon BETWEEN -160 AND -158 ORDER BY lon",
        ),
        (
            "day_count",
            "SELECT COUNT(*), COUNT(sst), SUM(CASE WHEN isnan(sst) THEN 1 ELSE 0 END) FROM sst WHERE time = '2008-09-01'",
        ),
        (
            "box_count",
            "SELECT COUNT(*) FROM sst WHERE lat > 45 AND lat < 60 AND lon > -150 AND lon < -120 AND time >= '2008-09-01' AND time < '2008-09-03'",
        ),
        (
            "months",
            "SELECT date_trunc('month', time) AS month, COUNT(*) AS cells, ROUND(AVG(sst), 3) AS mean FROM sst WHERE lat BETWEEN 40 AND 41 AND lon BETWEEN -140 AND -139 GROUP BY 1 ORDER BY 1 LIMIT 4",
        ),
        (
            "new_year",
            "SELECT extract(doy FROM time) AS day, MAX(sst) FROM sst WHERE time BETWEEN '2008-12-30' AND '2009-01-02' AND lat = 0.5 AND lon = -150.5 GROUP BY 1 ORDER BY 1",
        ),
    ];
    for (name, sql) in pinned {
        let record = golden
            .split("\n\n")
            .find(|r| r.lines().any(|l| l == sql))
            .unwrap_or_else(|| panic!("cells.slt has no record for {sql}"));
        let want: Vec<Vec<&str>> =
            record.split("\n----\n").nth(1).unwrap().lines().map(|l| l.split('\t').collect()).collect();
        let reference = reference[name].as_array().unwrap();
        assert_eq!(want.len(), reference.len(), "{name}: golden {want:?}, xarray {reference:?}");
        for (golden_row, xarray_row) in want.iter().zip(reference) {
            let xarray_row = xarray_row.as_array().unwrap();
            assert_eq!(golden_row.len(), xarray_row.len(), "{name}");
            for (g, x) in golden_row.iter().zip(xarray_row) {
                match x {
                    Value::String(x) => assert_eq!(g, x, "{name}"),
                    x => {
                        let (g, x) = (g.parse::<f64>().unwrap(), x.as_f64().unwrap());
                        assert!((g - x).abs() <= 1e-5 * x.abs().max(1.0), "{name}: golden {g}, xarray {x}");
                    }
                }
            }
        }
    }
}

/// Rows as golden lines: tab-separated, `NULL`, floats with 6 significant digits.
fn render(answer: &Value) -> Vec<String> {
    let cell = |v: &Value| match v {
        Value::Null => "NULL".to_owned(),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            if x == 0.0 { "0".into() } else { format!("{}", format!("{x:.*e}", 5).parse::<f64>().unwrap()) }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(cell).collect::<Vec<_>>().join("\t"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_series_query_agrees_with_map_reduce_and_numpy() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = sql_session(&gw).await;
    let answer = query(&gw, s, TIME_SERIES).await.unwrap();
    let names: Vec<&str> =
        answer["schema"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    let types: Vec<&str> =
        answer["schema"]["fields"].as_array().unwrap().iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(names, ["time", "cnt", "min", "max", "mean", "std"]);
    assert_eq!(types, ["timestamp", "long", "float", "float", "double", "double"]);
    // Rows as objects with epoch-second times, to compare with the other two.
    let rows: Vec<Value> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let time = tilegate_compute::dataset::cf::parse_datetime(r[0].as_str().unwrap()).unwrap();
            json!({"time": time, "cnt": r[1], "min": r[2], "max": r[3], "mean": r[4], "std": r[5]})
        })
        .collect();
    let rows = Value::Array(rows);
    let store = gw.data_dir.join("datasets/sst.zarr");
    assert_rows_match(&rows, &reference("timeseries", &store, &SEED_BOX), &STATS);
    let rust = gw.client.create_session(&CreateSession::default()).await.unwrap().id;
    let code = "dataset(\"sst\").bbox(-150.0, 45.0, -120.0, 60.0).time(\"2008-09-01\", \"2008-09-16\")\n    \
                .map(|tile| tile.stats_by_time())\n    .reduce_by_key(Stats::merge)";
    let mapped = gw.client.run(rust, Language::Rust, code).await.unwrap().json().cloned().unwrap();
    assert_eq!(mapped.as_array().unwrap().len(), 16);
    for (q, m) in rows.as_array().unwrap().iter().zip(mapped.as_array().unwrap()) {
        assert_eq!((&q["time"], &q["cnt"]), (&m["time"], &m["cnt"]));
        for f in ["min", "max", "mean", "std"] {
            let (a, b) = (q[f].as_f64().unwrap(), m[f].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{f}: sql {a}, map/reduce {b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_capped_and_say_so() {
    let gw = gateway_with_sst(None, Config { sql_max_rows: 5, ..test_config() }).await;
    let s = sql_session(&gw).await;
    let out =
        gw.client.run(s, Language::Sql, "SELECT * FROM sst WHERE time = '2008-09-01' AND lat = 0.5").await.unwrap();
    let answer = out.json().unwrap();
    assert_eq!(answer["data"].as_array().unwrap().len(), 5);
    assert_eq!(answer["truncated"], true);
    assert!(answer["totalRows"].as_u64().unwrap() > 5, "{answer}");
    assert!(out.text().unwrap().ends_with(&format!("showing 5 of {} rows", answer["totalRows"])), "{out:?}");
    // The SDK's typed rows are complete past the cap (it downloads them), and progress is seen.
    #[derive(serde::Deserialize)]
    struct Cell {
        lat: f64,
        sst: Option<f64>,
    }
    let cells: Vec<Cell> =
        gw.client.sql(s, "SELECT lat, sst FROM sst WHERE time = '2008-09-01' AND lat = 0.5").await.unwrap();
    assert_eq!(cells.len() as u64, answer["totalRows"].as_u64().unwrap());
    assert!(cells.iter().all(|c| c.lat == 0.5 && c.sst.is_some()));
    let mut seen = Vec::new();
    gw.client.run_with_progress(s, Language::Sql, "SELECT 1", |p| seen.push(p)).await.unwrap();
    assert_eq!(seen.last(), Some(&1.0));
    // The whole result downloads from the result endpoint.
    let total = answer["totalRows"].as_u64().unwrap() as usize;
    let download = |format: &str| {
        let url = format!("{}/sessions/{s}/statements/0/result?format={format}", gw.url);
        let http = gw.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
            (response.status().as_u16(), kind, response.bytes().await.unwrap().to_vec())
        }
    };
    let (status, kind, csv) = download("csv").await;
    let via_sdk = gw.client.download(s, 0, "csv").await.unwrap();
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    assert_eq!(via_sdk, csv);
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count(), total + 1, "a header and every row");
    assert!(csv.starts_with("time,lat,lon,sst\n"), "{csv}");
    let (status, _, jsonl) = download("jsonl").await;
    let rows: Vec<Value> =
        String::from_utf8(jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((status, rows.len()), (200, total));
    assert_eq!(rows[0]["lat"], 0.5);
    let (status, kind, arrow) = download("arrow").await;
    assert_eq!((status, kind.as_str()), (200, "application/vnd.apache.arrow.stream"));
    assert!(arrow.starts_with(&[0xff, 0xff, 0xff, 0xff]), "an Arrow IPC stream starts with a continuation marker");
    let (status, kind, parquet) = download("parquet").await;
    assert_eq!((status, kind.as_str()), (200, "application/vnd.apache.parquet"));
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"), "a Parquet file");
    // pyarrow and pandas read both binary formats: the same rows, columns and values as JSON lines.
    let script = "import io, json, sys, requests, pandas, pyarrow, pyarrow.parquet\n\
        url = sys.argv[1]\n\
        get = lambda f: requests.get(url + '?format=' + f, timeout=30).content\n\
        table = pyarrow.parquet.read_table(io.BytesIO(get('parquet')))\n\
        stream = pyarrow.ipc.open_stream(get('arrow')).read_all()\n\
        assert stream.cast(table.schema).equals(table), (stream.schema, table.schema)\n\
        frame = pandas.read_parquet(io.BytesIO(get('parquet')))\n\
        print(json.dumps({'rows': table.num_rows, 'columns': table.column_names,\n\
            'types': [str(t) for t in table.schema.types], 'sum': float(frame['sst'].sum()),\n\
            'codec': pyarrow.parquet.ParquetFile(io.BytesIO(get('parquet'))).metadata.row_group(0).column(0).compression}))";
    let url = format!("{}/sessions/{s}/statements/0/result", gw.url);
    let read: Value = serde_json::from_str(&crate::run_script(crate::python(), script, &[&url]).await).unwrap();
    assert_eq!(read["rows"], total);
    assert_eq!(read["columns"], json!(["time", "lat", "lon", "sst"]));
    // Parquet has no seconds unit: times are milliseconds there.
    assert_eq!(read["types"], json!(["timestamp[ms]", "double", "double", "float"]));
    assert_eq!(read["codec"], "ZSTD");
    let sum: f64 = rows.iter().map(|r| r["sst"].as_f64().unwrap()).sum();
    assert!((read["sum"].as_f64().unwrap() - sum).abs() < 1e-6 * sum.abs(), "{read} vs {sum}");
    let (status, body) =
        gw.raw(reqwest::Method::GET, &format!("/sessions/{s}/statements/0/result?format=xml"), None).await;
    assert_eq!(status, 400);
    assert!(body["msg"].as_str().unwrap().contains("jsonl, csv, arrow or parquet"), "{body}");
    let (status, _) = gw.raw(reqwest::Method::GET, &format!("/sessions/{s}/statements/9/result"), None).await;
    assert_eq!(status, 404);
    let small = query(&gw, s, "SELECT 1 AS one").await.unwrap();
    assert_eq!(
        small,
        json!({"schema": {"type": "struct", "fields": [{"name": "one", "type": "long", "nullable": false, "metadata": {}}]}, "data": [[1]]})
    );
}

/// pylivy (from PyPI) opens an `sql` session and downloads a query as a pandas DataFrame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pylivy_download_sql_reads_the_output() {
    let gw = gateway_with_sst(None, test_config()).await;
    let script = r#"
import sys
from livy import LivySession, SessionKind
with LivySession.create(sys.argv[1], kind=SessionKind.SQL) as session:
    frame = session.download_sql(sys.argv[2])
    print(list(frame.columns))
    print(len(frame), int(frame["cnt"].sum()), round(float(frame["mean"].iloc[0]), 4))
"#;
    let python = python().to_owned();
    let (url, sql) = (gw.url.clone(), TIME_SERIES.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).args(["-c", script, &url, &sql]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pylivy failed:\n{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "['time', 'cnt', 'min', 'max', 'mean', 'std']");
    assert_eq!(lines[1], "16 3808 12.522", "16 days of 238 cells");
}

/// Results of earlier statements (rust or sql) and values a snippet kept are tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_results_and_kept_values_are_tables() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap().id;
    let code = "dataset(\"sst\").bbox(-150.0, 45.0, -120.0, 60.0).time(\"2008-09-01\", \"2008-09-16\")\n    \
                .map(|tile| tile.stats_by_time())\n    .reduce_by_key(Stats::merge)";
    gw.client.run(s, Language::Rust, code).await.unwrap(); // statement 0
    gw.client.run(s, Language::Rust, "session().set(\"limits\", vec![(\"warm\".to_string(), 28.0)]);").await.unwrap();
    let answer =
        query(&gw, s, "SELECT COUNT(*) AS days, MIN(cnt), MAX(time) - MIN(time) AS span FROM result_0").await.unwrap();
    assert_eq!(answer["data"], json!([[16, 238, 15 * 86_400]]), "{answer}");
    // An sql result (statement 2) is a table too, with its own types.
    let again = query(&gw, s, "SELECT days * 2 AS twice FROM result_2").await.unwrap();
    assert_eq!(again["data"], json!([[32]]));
    // Not every value is table-shaped: a list of pairs is not.
    let (ename, evalue) = query(&gw, s, "SELECT * FROM limits").await.unwrap_err();
    assert_eq!(ename, "SqlError");
    assert!(evalue.contains("not found"), "{evalue}");
    // Another session sees none of it.
    let other = sql_session(&gw).await;
    assert!(query(&gw, other, "SELECT * FROM result_0").await.is_err());
}

/// A store with two variables on one grid: both are columns; a cell is a row when either is
/// valid, the other null; counts agree with numpy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_variable_datasets_are_one_table() {
    let config = test_config();
    let datasets = config.data_dir.join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    let counts = crate::run_tool("reference.py", &["two-vars", datasets.join("ocean.zarr").to_str().unwrap()]);
    let counts: Value = serde_json::from_str(&counts).unwrap();
    let gw = Gateway::start_with(config).await;
    let s = sql_session(&gw).await;
    let answer = query(&gw, s, "DESCRIBE ocean").await.unwrap();
    let columns: Vec<&str> = answer["data"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(columns, ["time", "lat", "lon", "sst", "wind"]);
    let answer =
        query(&gw, s, "SELECT COUNT(*), COUNT(sst), COUNT(wind) FROM ocean GROUP BY time ORDER BY time").await.unwrap();
    assert_eq!(answer["data"], counts);
    let both = query(&gw, s, "SELECT COUNT(*) FROM ocean WHERE sst IS NOT NULL AND wind IS NOT NULL").await.unwrap();
    assert!(both["data"][0][0].as_u64().unwrap() > 0);
    // Whole-table counts come from the tile index (per variable), and agree with numpy too.
    let totals = query(&gw, s, "SELECT COUNT(sst), COUNT(wind) FROM ocean").await.unwrap();
    let sum = |i: usize| counts.as_array().unwrap().iter().map(|d| d[i].as_u64().unwrap()).sum::<u64>();
    assert_eq!(totals["data"], json!([[sum(1), sum(2)]]));
    let plan = query(&gw, s, "EXPLAIN SELECT COUNT(sst), COUNT(wind) FROM ocean").await.unwrap();
    assert!(plan.to_string().contains("tile_index(ocean)"), "{plan}");
}

/// Every plan runs with each node wrapped to charge the statement's CPU: recursive queries (whose
/// work table reaches its reader through the wrapper) still answer, and `EXPLAIN ANALYZE` shows
/// DataFusion's own operators and their metrics, not the wrappers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_plans_answer_recursive_queries_and_explain_as_before() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = sql_session(&gw).await;
    let sum = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100) SELECT SUM(n) FROM r";
    let answer = query(&gw, s, sum).await.unwrap();
    assert_eq!(answer["data"], json!([[100 * 101 / 2]]));
    let sql = "EXPLAIN ANALYZE SELECT lat, AVG(sst) FROM sst WHERE time <= '2008-09-02' GROUP BY lat";
    let plan = query(&gw, s, sql).await.unwrap()["data"].to_string();
    assert!(plan.contains("AggregateExec") && plan.contains("output_rows="), "{plan}");
    assert!(!plan.contains("Metered"), "{plan}");
}

/// Filters on time, lat and lon prune tiles before any is read: the plan lists only the tiles
/// the seed box and two days reach (one tile per day and 90° box in the demo dataset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_prune_tiles_through_the_index() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = sql_session(&gw).await;
    let sql = "EXPLAIN SELECT COUNT(*) FROM sst WHERE lat BETWEEN 45 AND 60 AND lon BETWEEN -150 AND -120 \
               AND time BETWEEN '2008-09-01' AND '2008-09-02'";
    let answer = query(&gw, s, sql).await.unwrap();
    let plan = answer["data"].to_string();
    let tiles: std::collections::BTreeSet<&str> = plan
        .match_indices("tiles/")
        .map(|(at, _)| plan[at..].split(|c: char| !(c.is_ascii_alphanumeric() || c == '/')).next().unwrap())
        .collect();
    assert_eq!(tiles.into_iter().collect::<Vec<_>>(), ["tiles/0/1/0", "tiles/1/1/0"], "{plan}");
}

/// Functions a `rust` cell declares with `sql_function!` run sandboxed from the session's SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_functions_are_callable_from_sql() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap().id;
    let cell = "fn kelvin(c: f64) -> f64 { c + 273.15 }\nsql_function!(kelvin(f64) -> f64);\n\
                fn warmer(t: f64, than: f64) -> bool { t > than }\nsql_function!(warmer(f64, f64) -> bool);\n\
                fn fails(x: f64) -> f64 { if x > 28.5 { panic!(\"too hot: {x}\") } x }\nsql_function!(fails(f64) -> f64);";
    gw.client.run(s, Language::Rust, cell).await.unwrap();
    let sql = "SELECT COUNT(*) AS n, MAX(ABS(kelvin(sst) - (CAST(sst AS DOUBLE) + 273.15))) AS err, \
               SUM(CASE WHEN warmer(sst, 28) THEN 1 ELSE 0 END) AS warm, SUM(CASE WHEN sst > 28 THEN 1 ELSE 0 END) AS want \
               FROM sst WHERE time = '2008-09-01'";
    let answer = query(&gw, s, sql).await.unwrap();
    let row = &answer["data"][0];
    assert_eq!(row[0], 44_337, "{answer}");
    assert!(row[1].as_f64().unwrap() < 1e-9, "{answer}");
    assert_eq!(row[2], row[3], "{answer}");
    // A panic in the function fails the statement with its message; the session goes on.
    let (ename, evalue) = query(&gw, s, "SELECT MAX(fails(sst)) FROM sst WHERE time = '2008-09-01'").await.unwrap_err();
    assert_eq!(ename, "Panic", "{evalue}");
    assert!(evalue.contains("too hot") && evalue.contains("fails"), "{evalue}");
    // Redeclared in a later cell: the new definition wins.
    gw.client
        .run(s, Language::Rust, "fn kelvin(c: f64) -> f64 { c + 273.0 }\nsql_function!(kelvin(f64) -> f64);")
        .await
        .unwrap();
    let answer = query(&gw, s, "SELECT kelvin(1.0)").await.unwrap();
    assert_eq!(answer["data"], json!([[274.0]]));
    // Another session has none of them.
    let other = sql_session(&gw).await;
    let (_, evalue) = query(&gw, other, "SELECT kelvin(1.0)").await.unwrap_err();
    assert!(evalue.contains("kelvin"), "{evalue}");
}

/// Aggregates a `rust` cell declares with `sql_aggregate!` run sandboxed from the session's SQL,
/// with and without `GROUP BY`, and agree with the same numbers computed by built-in SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_aggregates_are_callable_from_sql() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap().id;
    let cell = r#"
record! { #[derive(Default)] struct GeoMean { n: u64, logs: f64 } }
impl SqlAggregate<f64> for GeoMean {
    type Output = f64;
    fn update(&mut self, x: f64) { if x > 0.0 { self.n += 1; self.logs += x.ln(); } }
    fn merge(&mut self, other: Self) { self.n += other.n; self.logs += other.logs; }
    fn finish(self) -> Option<f64> { (self.n > 0).then(|| (self.logs / self.n as f64).exp()) }
}
sql_aggregate!(geomean(f64) -> f64 = GeoMean);

record! { #[derive(Default)] struct WeightedMean { sum: f64, weight: f64 } }
impl SqlAggregate<(f64, f64)> for WeightedMean {
    type Output = f64;
    fn update(&mut self, (x, w): (f64, f64)) { self.sum += x * w; self.weight += w; }
    fn merge(&mut self, other: Self) { self.sum += other.sum; self.weight += other.weight; }
    fn finish(self) -> Option<f64> { (self.weight != 0.0).then(|| self.sum / self.weight) }
}
sql_aggregate!(wmean(f64, f64) -> f64 = WeightedMean);

record! { #[derive(Default)] struct Fails { n: u64 } }
impl SqlAggregate<f64> for Fails {
    type Output = i64;
    fn update(&mut self, x: f64) { if x > 28.5 { panic!("too hot: {x}") } self.n += 1; }
    fn merge(&mut self, other: Self) { self.n += other.n; }
    fn finish(self) -> Option<i64> { Some(self.n as i64) }
}
sql_aggregate!(fails(f64) -> i64 = Fails);
"#;
    gw.client.run(s, Language::Rust, cell).await.unwrap();
    // Ours next to built-in SQL's: the geometric mean of the positive values, the cos(lat)-weighted
    // mean, and the same over the northern hemisphere only (a null weight skips the row).
    let columns = "geomean(x), exp(avg(CASE WHEN x > 0 THEN ln(x) END)), \
                   wmean(x, w), sum(x * w) / sum(w), \
                   wmean(x, CASE WHEN lat > 0 THEN w END), sum(CASE WHEN lat > 0 THEN x * w END) / sum(CASE WHEN lat > 0 THEN w END)";
    let cells =
        "(SELECT time, lat, lon, CAST(sst AS DOUBLE) AS x, cos(radians(CAST(lat AS DOUBLE))) AS w FROM sst) AS c";
    let agree = |row: &Value| {
        for pair in [0, 2, 4] {
            let (ours, theirs) = (row[pair].as_f64(), row[pair + 1].as_f64());
            let (Some(ours), Some(theirs)) = (ours, theirs) else { panic!("{row}") };
            assert!(
                (ours - theirs).abs() <= 1e-9 * theirs.abs(),
                "column {pair}: ours {ours}, built-in {theirs} in {row}"
            );
        }
    };
    let by_day =
        query(&gw, s, &format!("SELECT {columns}, time FROM {cells} GROUP BY time ORDER BY time")).await.unwrap();
    let days = by_day["data"].as_array().unwrap();
    let count = query(&gw, s, "SELECT COUNT(DISTINCT time) FROM sst").await.unwrap();
    assert_eq!(json!(days.len()), count["data"][0][0]);
    days.iter().for_each(agree);
    let all = query(&gw, s, &format!("SELECT {columns} FROM {cells}")).await.unwrap();
    agree(&all["data"][0]);
    // One group per grid cell (tens of thousands of groups) of the degrees above 25 °C: the
    // groups agree, including the NULL of cells never that warm.
    let sql = format!(
        "SELECT COUNT(*), SUM(CASE WHEN ours IS NULL AND theirs IS NULL OR abs(ours - theirs) <= 1e-9 * abs(theirs) \
         THEN 1 ELSE 0 END), COUNT(ours) FROM (SELECT geomean(x - 25) AS ours, \
         exp(avg(CASE WHEN x > 25 THEN ln(x - 25) END)) AS theirs FROM {cells} GROUP BY lat, lon)"
    );
    let cells_agree = query(&gw, s, &sql).await.unwrap();
    let row = &cells_agree["data"][0];
    assert!(row[0].as_u64().unwrap() > 40_000 && row[0] == row[1], "{cells_agree}");
    assert!((1..row[0].as_u64().unwrap()).contains(&row[2].as_u64().unwrap()), "{cells_agree}");
    // No rows, or only nulls: NULL.
    let empty =
        query(&gw, s, "SELECT geomean(x), wmean(x, x) FROM (VALUES (CAST(NULL AS DOUBLE))) AS v(x)").await.unwrap();
    assert_eq!(empty["data"], json!([[null, null]]));

    // A panic fails the statement with its message and the aggregate's name; the session goes on.
    for sql in ["SELECT fails(sst) FROM sst", "SELECT time, fails(sst) FROM sst GROUP BY time"] {
        let (ename, evalue) = query(&gw, s, sql).await.unwrap_err();
        assert_eq!(ename, "Panic", "{evalue}");
        assert!(evalue.contains("too hot") && evalue.contains("SQL aggregate fails"), "{evalue}");
    }
    let counted =
        query(&gw, s, "SELECT fails(sst), COUNT(sst) FROM sst WHERE time = '2008-09-01' AND sst < 20").await.unwrap();
    assert_eq!(counted["data"][0][0], counted["data"][0][1], "{counted}");
    // Wrong arguments are planning errors naming the function.
    for sql in ["SELECT wmean(sst) FROM sst", "SELECT geomean('warm')"] {
        let (ename, evalue) = query(&gw, s, sql).await.unwrap_err();
        assert_eq!(ename, "SqlError", "{evalue}");
        assert!(evalue.contains("geomean") || evalue.contains("wmean"), "{evalue}");
    }
    // Redeclared in a later cell: the new definition wins (here a count, with another type).
    let later = "record! { #[derive(Default)] struct Count { n: i64 } }\n\
                 impl SqlAggregate<f64> for Count { type Output = i64; fn update(&mut self, _: f64) { self.n += 1; } \
                 fn merge(&mut self, o: Self) { self.n += o.n; } fn finish(self) -> Option<i64> { Some(self.n) } }\n\
                 sql_aggregate!(geomean(f64) -> i64 = Count);";
    gw.client.run(s, Language::Rust, later).await.unwrap();
    let answer = query(&gw, s, "SELECT geomean(x) FROM (VALUES (1.0), (2.0), (NULL), (-4.0)) AS v(x)").await.unwrap();
    assert_eq!(answer["data"], json!([[3]]));
    // Another session has none of them.
    let other = sql_session(&gw).await;
    let (_, evalue) = query(&gw, other, "SELECT wmean(1.0, 1.0)").await.unwrap_err();
    assert!(evalue.contains("wmean"), "{evalue}");
}
