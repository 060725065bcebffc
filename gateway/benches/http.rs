//! Gateway benchmark over real HTTP against the real `tilegate` binary.
//!
//! Run with: `cargo bench --workspace --bench http` (add `-- --quick` for a short run).
//!
//! Measures, in one run, against the baseline of a `GET /version` round trip:
//! session create → `idle` latency, a trivial cached `wasm` statement round trip (submit + poll until
//! `available`), the same as a `rust` statement whose compiled module is cached, statement throughput with concurrent sessions, and the gateway's RSS idle and with
//! 100 idle sessions.

use std::time::{Duration, Instant};

use tilegate_sdk::{Client, CreateSession, Language, SessionState};

const ANSWER: &str = r#"(module (func (export "main") (result i32) i32.const 42))"#;

#[path = "../tests/support/mod.rs"]
mod support;

use support::{Process, ms, quantile, temp_dir};

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(samples: Vec<Duration>) -> Stats {
    Stats { p50: quantile(&samples, 0.5), p99: quantile(&samples, 0.99) }
}

/// The real binary on the demo dataset, in a fresh data directory.
fn start() -> Process {
    Process::start(env!("CARGO_BIN_EXE_tilegate"), &temp_dir("bench"), "", None)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 200 } else { 2000 };
    // Memory: a fresh gateway, idle, then holding 100 idle sessions.
    let (rss_idle, rss_100) = {
        let fresh = start();
        let client = Client::new(&fresh.url).expect("client");
        client.version().await.expect("version");
        let idle = fresh.rss_kib();
        for _ in 0..100 {
            client.create_session(&CreateSession::default()).await.expect("create");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        (idle, fresh.rss_kib())
    };

    let server = start();
    let client = Client::new(&server.url).expect("client");

    // Baseline: the cheapest round trip the gateway serves.
    for _ in 0..100 {
        client.version().await.expect("version");
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.version().await.expect("version");
        samples.push(t.elapsed());
    }
    let base = stats(samples);

    // Session create → idle.
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n.min(500) {
        let t = Instant::now();
        let s = client.create_session(&CreateSession::default()).await.expect("create");
        let idle = s.state == SessionState::Idle
            || client.session_state(s.id).await.expect("state").state == SessionState::Idle;
        samples.push(t.elapsed());
        assert!(idle);
        client.delete_session(s.id).await.expect("delete");
    }
    let create = stats(samples);

    // Trivial cached wasm statement: submit, then poll until available.
    let session = client.create_session(&CreateSession::default()).await.expect("create");
    client.run(session.id, Language::Wasm, ANSWER).await.expect("warm the module cache");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = client.run(session.id, Language::Wasm, ANSWER).await.expect("run");
        samples.push(t.elapsed());
        assert_eq!(out.text(), Some("42"));
    }
    let statement = stats(samples);

    // The same through a `rust` statement: the first compiles it, the rest are cache hits
    // (parse, guard, key, lookup; no rustc) before the same sandbox run.
    client.run(session.id, Language::Rust, "6 * 7").await.expect("compile once");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = client.run(session.id, Language::Rust, "6 * 7").await.expect("run");
        samples.push(t.elapsed());
        assert_eq!(out.text(), Some("42"));
    }
    let rust = stats(samples);

    // Throughput: 16 sessions submitting concurrently.
    let sessions = 16;
    let per_session = n / 4;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let s = client.create_session(&CreateSession::default()).await.expect("create");
            for _ in 0..per_session {
                client.run(s.id, Language::Wasm, ANSWER).await.expect("run");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let throughput = (sessions * per_session) as f64 / t.elapsed().as_secs_f64();

    println!("tilegate gateway benchmark ({n} samples per latency; client and server share this machine)");
    println!("{:<44} {:>9} {:>9} {:>8}", "", "p50 ms", "p99 ms", "p50/base");
    let row = |name: &str, s: &Stats| {
        println!(
            "{name:<44} {:>9.3} {:>9.3} {:>8.2}",
            ms(s.p50),
            ms(s.p99),
            s.p50.as_secs_f64() / base.p50.as_secs_f64()
        );
    };
    row("baseline: GET /version", &base);
    row("session create -> idle (goal p50 < 5 ms)", &create);
    row("cached wasm statement round trip (goal < 2)", &statement);
    row("cached rust statement round trip (goal < 5)", &rust);
    println!("throughput, {sessions} sessions x {per_session} statements: {throughput:.0} statements/s (goal >= 2000)");
    println!(
        "gateway RSS idle: {:.1} MiB; with 100 idle sessions: {:.1} MiB ({:.1} KiB per session)",
        rss_idle as f64 / 1024.0,
        rss_100 as f64 / 1024.0,
        rss_100.saturating_sub(rss_idle) as f64 / 100.0
    );
}
