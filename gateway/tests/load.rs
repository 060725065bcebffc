//! The load test: 200 sessions at once, 10 statements each (WAT, Rust, SQL in turn), against the
//! real binary over loopback. Zero errors allowed; the figures are printed, never asserted (the
//! `load` benchmark measures them in a release build).

mod support;

use support::{Process, load, ms, quantile, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_times_ten_statements_without_an_error() {
    let dir = temp_dir("load");
    let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, "demo_dataset = false\n", None);
    // Warm the Rust compile cache so every session's Rust cell is the same cache hit.
    let warm = load(&gateway.url, 1, 3).await;
    assert!(warm.errors.is_empty(), "{:?}", warm.errors);

    let report = load(&gateway.url, 200, 10).await;
    assert!(report.errors.is_empty(), "{} errors, first: {:?}", report.errors.len(), report.errors.first());
    assert_eq!(report.ok, 2000);
    eprintln!(
        "load (debug build): 2000 statements in {:.2} s = {:.0}/s; round trip p50 {:.1} ms p99 {:.1} ms; submit p50 {:.1} ms p99 {:.1} ms",
        report.wall.as_secs_f64(),
        2000.0 / report.wall.as_secs_f64(),
        ms(quantile(&report.round_trips, 0.5)),
        ms(quantile(&report.round_trips, 0.99)),
        ms(quantile(&report.submits, 0.5)),
        ms(quantile(&report.submits, 0.99)),
    );
    // Every session deleted itself: nothing is left behind.
    let list: serde_json::Value =
        reqwest::get(format!("{}/sessions", gateway.url)).await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 0, "{list}");
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
