//! Map/reduce jobs from `wasm` statements: guests built in Rust against the prelude
//! (`examples/guests`, compiled by `tests/build.rs`), run over the demo dataset and over stores
//! written by xarray, checked against numpy; failures, progress, cancel and deadlines.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tilegate_gateway::Config;
use tilegate_sdk::{CreateSession, Error, Language, Output, SessionState, StatementState};

use crate::{Gateway, run_tool, test_config};

macro_rules! guest {
    ($name:literal) => {
        base64::engine::general_purpose::STANDARD.encode(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/guests/",
            $name,
            ".wasm"
        )))
    };
}

pub(crate) const SEED_BOX: [&str; 6] = ["-150", "45", "-120", "60", "2008-09-01", "2008-09-16"];
const WHOLE: [&str; 6] = ["all", "all", "all", "all", "all", "all"];

/// A gateway whose only dataset, `sst`, is the demo (no store given) or a generated store.
pub(crate) async fn gateway_with_sst(format: Option<&str>, config: Config) -> Gateway {
    let datasets = config.data_dir.join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    let demo = match format {
        Some(format) => {
            let out = datasets.join("sst.zarr");
            let args = [
                "--out",
                out.to_str().unwrap(),
                "--days",
                "8",
                "--res",
                "2.0",
                "--chunks",
                "1,45,45",
                "--zarr-format",
                format,
            ];
            run_tool("make_sst_zarr.py", &args);
            false
        }
        None => true,
    };
    Gateway::start_with(Config { demo_dataset: demo, ..config }).await
}

async fn run_json(gw: &Gateway, code: &str) -> Value {
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let out = gw.client.run(s.id, Language::Wasm, code).await.unwrap_or_else(|e| panic!("job failed: {e}"));
    out.json().cloned().unwrap_or(Value::Null)
}

/// Rows equal numpy's: same days, `cnt` exact, the rest within 1e-5 relative.
pub(crate) fn assert_rows_match(ours: &Value, reference: &str, fields: &[&str]) {
    let want: Vec<Value> = serde_json::from_str(reference).unwrap();
    let got = ours.as_array().unwrap_or_else(|| panic!("rows are not an array: {ours}"));
    assert!(!want.is_empty(), "the reference selected nothing");
    assert_eq!(got.len(), want.len(), "days: ours {} vs numpy {}", got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["time"], w["time"]);
        for &f in fields {
            let (a, b) = (g[f].as_f64().unwrap(), w[f].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "day {} {f}: ours {a}, numpy {b}", w["time"]);
        }
    }
}

pub(crate) fn reference(command: &str, store: &Path, args: &[&str]) -> String {
    let mut all = vec![command, store.to_str().unwrap(), "sst"];
    all.extend_from_slice(args);
    run_tool("reference.py", &all)
}

pub(crate) const STATS: [&str; 5] = ["cnt", "min", "max", "mean", "std"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexus_time_series_over_the_demo_dataset_matches_numpy() {
    let gw = gateway_with_sst(None, test_config()).await;
    let store = gw.data_dir.join("datasets/sst.zarr");
    let rows = run_json(&gw, &guest!("timeseries")).await;
    assert_eq!(rows.as_array().unwrap().len(), 16);
    assert_eq!(rows[0]["time"], 1_220_227_200, "sorted by time, from 2008-09-01");
    assert_rows_match(&rows, &reference("timeseries", &store, &SEED_BOX), &STATS);
    // The same from a module without the optional calls: whole tiles, a reduce per value, a row per key.
    let minimal = run_json(&gw, &guest!("minimal_abi_timeseries")).await;
    assert_eq!(minimal.as_array().unwrap().len(), 16);
    assert_rows_match(&minimal, &reference("timeseries", &store, &SEED_BOX), &STATS);
    // A custom map with its own key and value types.
    let warm = run_json(&gw, &guest!("warm_days")).await;
    let args = ["-180", "-10", "-90", "10", "2008-09-01", "2008-09-08", "28"];
    assert_rows_match(&warm, &reference("warm", &store, &args), &["value"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexus_time_series_over_xarray_stores_matches_numpy() {
    for format in ["2", "3"] {
        let gw = gateway_with_sst(Some(format), test_config()).await;
        let store = gw.data_dir.join("datasets/sst.zarr");
        let seed = run_json(&gw, &guest!("timeseries")).await;
        assert_eq!(seed.as_array().unwrap().len(), 8, "v{format}: the store has 8 days");
        assert_rows_match(&seed, &reference("timeseries", &store, &SEED_BOX), &STATS);
        let global = run_json(&gw, &guest!("global_timeseries")).await;
        assert_rows_match(&global, &reference("timeseries", &store, &WHOLE), &STATS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexus_time_series_over_a_sharded_store_matches_numpy() {
    let config = test_config();
    let datasets = config.data_dir.join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    let plain = config.data_dir.join("plain.zarr");
    let args =
        ["--out", plain.to_str().unwrap(), "--days", "8", "--res", "2.0", "--chunks", "1,45,45", "--zarr-format", "3"];
    run_tool("make_sst_zarr.py", &args);
    let store = datasets.join("sst.zarr");
    run_tool("reference.py", &["shard", plain.to_str().unwrap(), store.to_str().unwrap()]);
    let gw = Gateway::start_with(config).await;
    // A tile is an inner chunk (1 day x 45 x 45, 8 x 2 x 4 of them), read alone from its shard
    // (2 days x 90 x 90) through the shard index.
    let (_, info) = gw.raw(reqwest::Method::GET, "/datasets/sst", None).await;
    assert_eq!(info["variables"][0]["tile_shape"], serde_json::json!([1, 45, 45]), "{info}");
    assert_eq!(info["variables"][0]["tiles"], 64, "{info}");
    let global = run_json(&gw, &guest!("global_timeseries")).await;
    assert_rows_match(&global, &reference("timeseries", &store, &WHOLE), &STATS);
    let seed = run_json(&gw, &guest!("timeseries")).await;
    assert_rows_match(&seed, &reference("timeseries", &store, &SEED_BOX), &STATS);
}

async fn job_error(gw: &Gateway, code: &str) -> (String, String) {
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let err = gw.client.run(s.id, Language::Wasm, code).await.unwrap_err();
    // The session survives and runs the next job.
    assert_eq!(gw.client.session(s.id).await.unwrap().state, SessionState::Idle);
    let again = gw.client.run(s.id, Language::Wasm, &guest!("timeseries")).await.unwrap();
    assert!(matches!(again, Output::Ok { .. }));
    match err {
        Error::Statement { ename, evalue, .. } => (ename, evalue),
        other => panic!("expected an error output, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_say_what_and_where() {
    let gw = gateway_with_sst(None, test_config()).await;
    let (ename, evalue) = job_error(&gw, &guest!("failing_map")).await;
    assert_eq!(ename, "Panic");
    assert!(evalue.contains("tile [2, 0, 1]") && evalue.contains("'sst'"), "{evalue}");
    assert!(evalue.contains("cannot handle tile [2, 0, 1]"), "the guest's message: {evalue}");
    let (ename, evalue) = job_error(&gw, &guest!("unknown_dataset")).await;
    assert_eq!(ename, "JobError");
    assert!(evalue.contains("'chlorophyll' not found"), "{evalue}");
    let (ename, evalue) = job_error(&gw, &guest!("nested_job")).await;
    assert_eq!(ename, "JobError");
    assert!(evalue.contains("cannot be started from inside a map"), "{evalue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_visible_and_cancel_stops_the_job() {
    let gw = gateway_with_sst(None, test_config()).await;
    let s = gw.client.create_session(&CreateSession::default()).await.unwrap();
    let st = gw.client.submit(s.id, Some(Language::Wasm), &guest!("slow_map")).await.unwrap();
    let mut seen = 0.0;
    let clock = Instant::now();
    while clock.elapsed() < Duration::from_secs(60) {
        let now = gw.client.statement(s.id, st.id).await.unwrap();
        assert!(now.state != StatementState::Available, "the slow job finished before progress was seen");
        if now.progress > 0.0 && now.progress < 1.0 {
            seen = now.progress;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen > 0.0, "no progress between 0 and 1 was reported");
    let cancelled_at = Instant::now();
    gw.client.cancel(s.id, st.id).await.unwrap();
    let done = gw.client.wait(s.id, st.id).await.unwrap();
    assert_eq!((done.state, done.output), (StatementState::Cancelled, None));
    assert!(cancelled_at.elapsed() < Duration::from_secs(10), "cancel took {:?}", cancelled_at.elapsed());
    assert_eq!(gw.client.session(s.id).await.unwrap().state, SessionState::Idle);
    let next = gw.client.run(s.id, Language::Wasm, &guest!("timeseries")).await.unwrap();
    assert!(matches!(next, Output::Ok { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_the_statement_deadline_times_out() {
    let gw = gateway_with_sst(None, Config { statement_timeout_secs: 0.5, ..test_config() }).await;
    let (ename, _) = job_error(&gw, &guest!("slow_map")).await;
    assert_eq!(ename, "Timeout");
}
