//! Load benchmark against the real `tilegate` binary over loopback: 200 sessions at once, 10
//! statements each (WAT, Rust from the compile cache, SQL in turn), every session submitting its
//! next statement when the last is `available`, as notebook users do.
//!
//! Run with: `cargo bench --workspace --bench load` (`-- --quick`: 50 sessions × 4 statements).
//!
//! Baseline in the same run: one session alone running the same mix; the ratios say what
//! 200-fold concurrency costs each statement.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{LoadReport, Process, load, ms, quantile, temp_dir};

fn print(label: &str, report: &LoadReport, statements: usize) {
    println!(
        "{label:<28} {statements:>5} statements in {:>6.2} s = {:>6.0}/s | round trip p50 {:>7.2} ms p99 {:>7.2} ms | submit p50 {:>6.2} ms p99 {:>6.2} ms | errors {}",
        report.wall.as_secs_f64(),
        statements as f64 / report.wall.as_secs_f64(),
        ms(quantile(&report.round_trips, 0.5)),
        ms(quantile(&report.round_trips, 0.99)),
        ms(quantile(&report.submits, 0.5)),
        ms(quantile(&report.submits, 0.99)),
        report.errors.len(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sessions, statements) = if quick { (50, 4) } else { (200, 10) };
    let dir = temp_dir("load-bench");
    let gateway = Process::start(env!("CARGO_BIN_EXE_tilegate"), &dir, "demo_dataset = false\n", None);
    let warm = load(&gateway.url, 1, 3).await;
    assert!(warm.errors.is_empty(), "{:?}", warm.errors);

    let alone = load(&gateway.url, 1, 60).await;
    print("baseline: 1 session", &alone, 60);
    let report = load(&gateway.url, sessions, statements).await;
    print(&format!("{sessions} sessions x {statements}"), &report, sessions * statements);
    let ratio = |q: f64| ms(quantile(&report.round_trips, q)) / ms(quantile(&alone.round_trips, q));
    println!(
        "loaded / alone: round trip p50 {:.1}x, p99 {:.1}x; gateway RSS after: {} MiB",
        ratio(0.5),
        ratio(0.99),
        gateway.rss_kib() / 1024
    );
    for e in report.errors.iter().take(5) {
        println!("error: {e}");
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
